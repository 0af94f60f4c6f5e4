"""The JAX trainer behind `clip train --backend flax`.

Data parallel over a `jax.sharding.Mesh` of every device (one axis, "data"): the parameters and
the optimizer state are replicated, each micro-batch is sharded along its batch axis, and one
jitted step takes the contrastive loss over the global batch (XLA inserts the gathers and the
gradient reductions). Several hosts: `jax.distributed.initialize` (called when
JAX_COORDINATOR_ADDRESS is set; JAX_NUM_PROCESSES and JAX_PROCESS_ID give the rest), each
process loading its slice of the global batch (common.DataOrder with world = process count).
On one CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N gives N devices to test with.

The step is one jit: a `lax.scan` over the optimizer step's micro-batches (gradient
accumulation), global-norm clipping and AdamW (optax; decay masked by the canonical-name rule of
common.applies_weight_decay, lr from common.learning_rate tabulated per step), then logit_scale
clamped to [0, ln 100]. Dropout keys are `fold_in(seed, micro_step)`, so a resumed run needs no
RNG state and continues bit for bit.

The framework-neutral parts (schedule, decay rule, data order, checkpoint layout, metrics,
progress) come from clip.train.common; this file holds the params, optimizer and step.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from clip.common import params, weights
from clip.common.io import read_safetensors, write_safetensors
from clip.train import common
from clip.train.flax_step import clamp_logit_scale, contrastive_loss, make_train_step, step_gradients  # noqa: F401 - public here


def init_distributed():
    """(process index, process count): jax.distributed.initialize when a coordinator is configured."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") and not _initialized():
        kwargs = {}
        if os.environ.get("JAX_NUM_PROCESSES"):
            kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
        if os.environ.get("JAX_PROCESS_ID"):
            kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
        jax.distributed.initialize(**kwargs)
    return jax.process_index(), jax.process_count()


def _initialized():
    from jax._src import distributed

    return distributed.global_state.client is not None




# -- parameters by canonical name --------------------------------------------------------------------
def param_paths(config, model_class: str = "CLIPModel") -> dict[str, tuple[str, ...]]:
    """{canonical name: path of its leaf in the params tree} (LEAF_RULES' "flax" names)."""
    return {name: tuple(weights.backend_name(name, kind, "flax").split("."))
            for name, (_, kind) in weights.expected_parameters(config, model_class).items()}


def tree_from_names(paths: dict, values: dict) -> dict:
    """{canonical name: value} -> a nested dict shaped like the params tree."""
    tree = {}
    for name, path in paths.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = values[name]
    return tree


def by_name(tree: dict, paths: dict) -> dict:
    """The params tree (or a gradient of it) -> {canonical name: leaf} (Flax layout)."""
    out = {}
    for name, path in paths.items():
        node = tree
        for part in path:
            node = node[part]
        out[name] = node
    return out


def decay_mask(config) -> dict:
    """The params tree of bools: True where AdamW decays (common.applies_weight_decay)."""
    paths = param_paths(config)
    table = params.parameter_table(config, "CLIPModel")
    return tree_from_names(paths, {name: common.applies_weight_decay(name, table) for name in paths})


def build_optimizer(config, steps: int, base_lr: float, warmup: int, weight_decay: float, grad_clip: float,
                    min_lr_ratio: float = 0.0, betas=(0.9, 0.98), eps=1e-6, lock=None):
    """Global-norm clipping, then optax.adamw with common.learning_rate per step and decay on matrices only.

    The schedule is tabulated from common.learning_rate (the same numbers as pt) and indexed by
    adam's step count, which lives in the optimizer state: resuming restores it with the rest.
    """
    table = jnp.asarray([common.learning_rate(s, base_lr, warmup, steps, min_lr_ratio) for s in range(max(1, steps))], jnp.float32)
    schedule = lambda count: table[jnp.minimum(count, table.shape[0] - 1)]  # noqa: E731
    adamw = optax.adamw(schedule, b1=betas[0], b2=betas[1], eps=eps, weight_decay=weight_decay, mask=decay_mask(config))
    tx = optax.chain(optax.clip_by_global_norm(grad_clip), adamw) if grad_clip and grad_clip > 0 else adamw
    if lock is None:
        return tx
    # --lock-image: the frozen leaves get no update at all (not even weight decay); their zero
    # gradients still count in the clipping norm, as the other backends' (absent) ones do
    paths, layers = param_paths(config), config.vision_config.num_hidden_layers
    labels = tree_from_names(paths, {n: "frozen" if common.is_frozen(n, lock, layers) else "train" for n in paths})
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


# -- devices ------------------------------------------------------------------------------------------
class Placement:
    """Where arrays live: replicated parameters, batches sharded on the batch axis over all devices."""

    def __init__(self, local_batch: int):
        devices = jax.devices()
        self.mesh = Mesh(np.array(devices), ("data",))
        if (local_batch * jax.process_count()) % len(devices):
            raise ValueError(f"--batch-size {local_batch * jax.process_count()} must be divisible by the {len(devices)} JAX devices")
        self.replicated = NamedSharding(self.mesh, P())
        self.batch = NamedSharding(self.mesh, P(None, "data"))  # (A, B, ...): micro-steps, then pairs

    def params(self, tree):
        return jax.device_put(tree, self.replicated)

    def batches(self, local: dict):
        """This process's (A, b, ...) numpy slices -> global (A, B, ...) arrays sharded over the mesh."""
        return {k: jax.make_array_from_process_local_data(self.batch, v) for k, v in local.items()}


def to_host(tree):
    """A (replicated) tree -> numpy, on any process (reads the first local replica)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x), tree)


# -- data ---------------------------------------------------------------------------------------------
class Prefetcher:
    """Optimizer steps start..stop-1 as stacked numpy micro-batches (A, b, ...), read ahead by a
    background thread into a bounded queue (decoding on `workers` threads when workers > 0)."""

    _DONE = object()

    def __init__(self, reader, order, start: int, stop: int, accum: int, workers: int = 0, depth: int = 4):
        self.reader, self.order, self.accum = reader, order, accum
        self.queue = queue.Queue(maxsize=max(2, depth))
        self.error = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(start, stop, workers, depth), daemon=True)
        self.thread.start()

    def _load(self, step):
        micro = [self.reader(self.order.local_indices(step * self.accum + a)) for a in range(self.accum)]
        return {k: np.stack([m[k] for m in micro]) for k in micro[0]}

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, start, stop, workers, depth):
        try:
            if workers > 0:
                with ThreadPoolExecutor(workers) as pool:
                    pending = collections.deque()
                    for step in range(start, stop):
                        pending.append(pool.submit(self._load, step))
                        if len(pending) >= depth and not self._put(pending.popleft().result()):
                            return
                    while pending:
                        if not self._put(pending.popleft().result()):
                            return
            else:
                for step in range(start, stop):
                    if not self._put(self._load(step)):
                        return
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self.error = err
        self._put(self._DONE)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.queue.get()
        if item is self._DONE:
            if self.error is not None:
                raise self.error
            raise StopIteration
        return item

    def close(self):
        self._stop.set()


# -- evaluation ---------------------------------------------------------------------------------------
def _padded(array, rows):
    """`array` with its first axis zero-padded to `rows`: one compiled shape per chunk size."""
    return np.concatenate([array, np.zeros((rows - len(array), *array.shape[1:]), array.dtype)]) if len(array) < rows else array


def make_encoders(model, params, processor, max_length, batch_size=256):
    """(images -> (n, E) numpy, texts -> (n, E) numpy) on the first local device, in chunks padded to
    a power of two (at most batch_size) so that each encoder compiles once or twice."""
    device = jax.local_devices()[0]
    params = jax.device_put(to_host(params), device)
    image_fn = jax.jit(lambda p, x: model.get_image_features(x, params=p).astype(jnp.float32))
    text_fn = jax.jit(lambda p, i, m: model.get_text_features(i, m, params=p).astype(jnp.float32))

    def chunks(items):
        rows = min(batch_size, 1 << max(0, len(items) - 1).bit_length())
        for i in range(0, len(items), rows):
            yield list(items[i : i + rows]), rows

    def images(items):
        out = []
        for chunk, rows in chunks(items):
            pixels = np.asarray(processor.image_processor(chunk, return_tensors="np")["pixel_values"], np.float32)
            out.append(np.asarray(image_fn(params, jax.device_put(_padded(pixels, rows), device)))[: len(chunk)])
        return np.concatenate(out)

    def texts(items):
        out = []
        for chunk, rows in chunks(items):
            tok = processor.tokenizer(chunk, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
            ids, mask = (jax.device_put(_padded(np.asarray(tok[k], np.int32), rows), device) for k in ("input_ids", "attention_mask"))
            out.append(np.asarray(text_fn(params, ids, mask))[: len(chunk)])
        return np.concatenate(out)

    return images, texts


def evaluate(model, params, processor, val, tasks, max_length, max_items=2000) -> dict:
    images, texts = make_encoders(model, params, processor, max_length)
    return common.evaluate_with(images, texts, val, tasks, max_items)


# -- checkpoints --------------------------------------------------------------------------------------
OPTIMIZER_FILE = "optimizer.flax"  # safetensors: the optax state's leaves in tree order ("00000", ...)


def save_checkpoint(out, step, micro_step, model, params, opt_state, run_info, history, extra=None):
    """Write checkpoints/step-N atomically: canonical float32 weights, the optax state's leaves, trainer state."""
    from clip.flax import loading

    staged = common.staging_dir(out, step)
    os.makedirs(staged, exist_ok=True)
    expected = loading.expected_parameters(model)
    state = {n: np.array(a, order="C") for n, a in loading.from_params(to_host(params), expected).items()}  # (ascontiguousarray makes 0-d 1-d)
    write_safetensors(state, os.path.join(staged, "model.safetensors"))
    leaves = [np.asarray(x) for x in jax.tree.leaves(to_host(opt_state))]
    write_safetensors({f"{i:05d}": leaf for i, leaf in enumerate(leaves)}, os.path.join(staged, OPTIMIZER_FILE))
    common.write_trainer_state(staged, {"step": step, "micro_step": micro_step, "run": run_info, "history": history,
                                        "rng": common.python_numpy_rng_state(), "backend": "flax", **(extra or {})})
    return common.commit_checkpoint(out, step)


def load_checkpoint(directory, model, opt_state_template):
    """(params tree, optax state, trainer state) from a checkpoint written by save_checkpoint."""
    from clip.flax import loading

    state = common.read_trainer_state(directory)
    path = os.path.join(directory, "model.safetensors")
    tensors = read_safetensors(path)
    expected = loading.expected_parameters(model)
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of the model's tensors are missing ({', '.join(missing[:3])}, ...)")
    params = loading.to_params({n: np.array(tensors[n]) for n in expected}, expected)
    optimizer_path = os.path.join(directory, OPTIMIZER_FILE)
    saved = read_safetensors(optimizer_path)
    template, treedef = jax.tree.flatten(opt_state_template)
    if sorted(saved) != [f"{i:05d}" for i in range(len(template))]:
        raise ValueError(f"{optimizer_path}: {len(saved)} optimizer arrays, this optimizer has {len(template)}")
    for i, t in enumerate(template):
        if tuple(saved[f"{i:05d}"].shape) != tuple(np.shape(t)):
            raise ValueError(f"{optimizer_path}: array {i} has shape {tuple(saved[f'{i:05d}'].shape)}, expected {tuple(np.shape(t))}")
    leaves = [np.array(saved[f"{i:05d}"]).astype(np.asarray(t).dtype) for i, t in enumerate(template)]
    common.set_python_numpy_rng_state(state["rng"])
    return params, jax.tree.unflatten(treedef, leaves), state


def save_model(model, params, processor, out, dtype=None):
    """The loadable model: config.json + model.safetensors (canonical) + processor files in `out`."""
    host = to_host(params)
    if dtype is not None:
        host = jax.tree.map(lambda x: x.astype(dtype), host)
    model.save_pretrained(out, params=host)
    processor.save_pretrained(out)


# -- the run ------------------------------------------------------------------------------------------
def build_model_and_processor(args):
    from clip.common.config import CLIPConfig
    from clip.common.processor import CLIPProcessor
    from clip.flax import FlaxCLIPModel

    dtype = {"bf16": jnp.bfloat16, "fp16": jnp.float16}.get(args.precision, jnp.float32)  # compute dtype; params stay float32
    if args.init:
        return FlaxCLIPModel.from_pretrained(args.init, dtype=dtype), CLIPProcessor.from_pretrained(args.init)
    config = CLIPConfig.from_dict(common.build_config_dict(args.config or "small"))
    return FlaxCLIPModel(config, seed=args.seed, dtype=dtype), common.build_processor(config)


def train(args) -> dict:
    """Run `clip train --backend flax`; returns the final metrics (process 0) or {}."""
    import random

    rank, world = init_distributed()
    np.random.seed(args.seed % 2**32)
    random.seed(args.seed)

    model, processor = build_model_and_processor(args)
    config = model.config
    image_size, max_length = config.vision_config.image_size, config.text_config.max_position_embeddings
    train_set, val_set, tasks = common.build_datasets(args, image_size)

    order = common.make_order(train_set, args.batch_size, args.seed, world, rank)
    steps = common.total_steps(args.steps, args.epochs, len(train_set), args.batch_size, args.accum_steps)
    warmup = min(args.warmup_steps, steps)
    run_info = common.run_settings(args, steps, warmup, len(train_set), world) | common.data_settings(train_set)
    tx = build_optimizer(config, steps, args.lr, warmup, args.weight_decay, args.grad_clip, args.min_lr_ratio,
                         lock=common.lock_settings(args))
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), model.params)
    opt_state = jax.jit(tx.init)(params)  # one compilation, not one per leaf shape
    if args.grad_checkpointing:
        model.gradient_checkpointing_enable()
    loss_scale = common.DynamicLossScale() if args.precision == "fp16" else None

    start, history = 0, []
    if args.resume:
        _, (params, opt_state, state) = common.resume_from_checkpoints(
            args.out, lambda d: load_checkpoint(d, model, opt_state), common.reporter(rank))
        common.check_resume_compatible(state["run"], run_info)
        start, history = state["step"], state["history"]
        if loss_scale is not None:
            loss_scale = common.DynamicLossScale.from_state(state.get("loss_scale"))

    place = Placement(args.batch_size // world)
    params, opt_state = place.params(params), place.params(opt_state)
    dropout = any(c.attention_dropout > 0 for c in (config.text_config, config.vision_config))
    step_fn = make_train_step(model, tx, args.seed, dropout, loss_scaling=loss_scale is not None)
    logs = common.RunLogs(args, enabled=rank == 0)
    progress = common.Progress(steps, start, every=args.log_every, enabled=rank == 0 and not args.quiet)
    reader = common.BatchReader(train_set, processor, max_length, report=progress.log if rank == 0 else (lambda m: None))
    batches = Prefetcher(reader, order, start, steps, args.accum_steps, workers=args.workers)
    if rank == 0 and not args.quiet:
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
        progress.log(f"clip train: {n_params / 1e6:.2f}M parameters, {len(train_set)} training pairs, {steps} steps of "
                     f"{args.batch_size} x {args.accum_steps} pairs on {world} process(es), {len(jax.devices())} "
                     f"{jax.default_backend()} device(s), {args.precision}")

    step, t_start = start, time.perf_counter()
    try:
        while step < steps:
            lr = common.learning_rate(step, args.lr, warmup, steps, args.min_lr_ratio)
            inputs = place.batches(next(batches))
            if loss_scale is None:
                params, opt_state, loss = step_fn(params, opt_state, inputs, step * args.accum_steps)
            else:
                params, opt_state, loss, (scale, good) = step_fn(params, opt_state, inputs, step * args.accum_steps,
                                                                 (jnp.float32(loss_scale.scale), jnp.int32(loss_scale.good_steps)))
                loss_scale = common.DynamicLossScale(float(scale), int(good))
            step += 1
            total = float(loss)
            history.append([step, round(total, 6)])
            progress.update(step, total, lr, args.batch_size * args.accum_steps)
            logs.step(step, {"loss": total, "lr": lr, "temperature": float(np.exp(to_host(params["logit_scale"]))),
                             **({"loss_scale": loss_scale.scale} if loss_scale is not None else {})}, args.batch_size * args.accum_steps)

            last = step == steps
            if args.save_every and (step % args.save_every == 0 or last) and rank == 0:
                save_checkpoint(args.out, step, step * args.accum_steps, model, params, opt_state, run_info, history,
                                extra={"loss_scale": loss_scale.state()} if loss_scale is not None else None)
            if args.eval_every and step % args.eval_every == 0 and not last and rank == 0:
                metrics = evaluate(model, params, processor, val_set, tasks, max_length, args.eval_max)
                logs.metrics(step, metrics)
                progress.log(f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
            if args.stop_after and step >= args.stop_after and not last:
                break  # simulated interruption (tests): leave the checkpoint, skip the final save
    finally:
        batches.close()
        progress.close()
    elapsed = time.perf_counter() - t_start

    result = {}
    if rank == 0 and step == steps:
        metrics = evaluate(model, params, processor, val_set, tasks, max_length, args.eval_max)
        logs.metrics(step, metrics)
        save_model(model, params, processor, args.out, dtype=np.float16 if args.save_dtype == "float16" else None)
        result = common.finish_run(args, metrics, history, steps, start, step, elapsed, run_info)
    logs.close()
    return result
