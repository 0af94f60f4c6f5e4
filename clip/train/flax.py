"""The JAX backend of the training loop (clip.train.loop), `clip train --backend flax`.

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

The loop and the framework-neutral parts (schedule, decay rule, data order, checkpoint layout,
metrics, progress) are clip.train.loop and clip.train.common; this file holds the params, the
optimizer, the step's placement and the state I/O.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import random
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from clip.common import params, weights
from clip.common.io import write_safetensors
from clip.train import common
from clip.train.inputs import BatchReader, EncodeFn
from clip.train.options import LockSettings, TrainOptions

if TYPE_CHECKING:
    from clip.common.config import CLIPConfig
from clip.train.flax_step import clamp_logit_scale, contrastive_loss, make_train_step, step_gradients  # noqa: F401 - public here


def init_distributed() -> tuple[int, int]:
    """(process index, process count): jax.distributed.initialize when a coordinator is configured."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") and not _initialized():
        kwargs: dict[str, int] = {}
        if os.environ.get("JAX_NUM_PROCESSES"):
            kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
        if os.environ.get("JAX_PROCESS_ID"):
            kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
        jax.distributed.initialize(**kwargs)
    return jax.process_index(), jax.process_count()


def _initialized() -> bool:
    from jax._src import distributed

    return distributed.global_state.client is not None


# -- parameters by canonical name --------------------------------------------------------------------
def param_paths(config: CLIPConfig, model_class: str = "CLIPModel") -> dict[str, tuple[str, ...]]:
    """{canonical name: path of its leaf in the params tree} (LEAF_RULES' "flax" names)."""
    return {
        name: tuple(weights.backend_name(name, kind, "flax").split("."))
        for name, (_, kind) in weights.expected_parameters(config, model_class).items()
    }


def tree_from_names(paths: Mapping[str, tuple[str, ...]], values: Mapping[str, Any]) -> dict[str, Any]:
    """{canonical name: value} -> a nested dict shaped like the params tree."""
    tree: dict[str, Any] = {}
    for name, path in paths.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = values[name]
    return tree


def by_name(tree: Mapping[str, Any], paths: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """The params tree (or a gradient of it) -> {canonical name: leaf} (Flax layout)."""
    out: dict[str, Any] = {}
    for name, path in paths.items():
        node: Any = tree
        for part in path:
            node = node[part]
        out[name] = node
    return out


def decay_mask(config: CLIPConfig) -> dict[str, Any]:
    """The params tree of bools: True where AdamW decays (common.applies_weight_decay)."""
    paths = param_paths(config)
    table = params.parameter_table(config, "CLIPModel")
    return tree_from_names(paths, {name: common.applies_weight_decay(name, table) for name in paths})


def build_optimizer(
    config,  # a CLIPConfig: untyped while CLIPVisionConfig's num_hidden_layers is undeclared
    steps: int,
    base_lr: float,
    warmup: int,
    weight_decay: float,
    grad_clip: float,
    min_lr_ratio: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    lock: LockSettings | None = None,
) -> optax.GradientTransformation:
    """Global-norm clipping, then optax.adamw with common.learning_rate per step and decay on matrices only.

    The schedule is tabulated from common.learning_rate (the same numbers as pt) and indexed by
    adam's step count, which lives in the optimizer state: resuming restores it with the rest.
    """
    table = jnp.asarray(
        [common.learning_rate(s, base_lr, warmup, steps, min_lr_ratio) for s in range(max(1, steps))], jnp.float32
    )
    schedule = lambda count: table[jnp.minimum(count, table.shape[0] - 1)]  # noqa: E731
    adamw = optax.adamw(schedule, b1=betas[0], b2=betas[1], eps=eps, weight_decay=weight_decay, mask=decay_mask(config))
    tx = optax.chain(optax.clip_by_global_norm(grad_clip), adamw) if grad_clip and grad_clip > 0 else adamw
    if lock is None:
        return tx
    # --lock-image: the frozen leaves get no update at all (not even weight decay); their zero
    # gradients still count in the clipping norm, as the other backends' (absent) ones do
    paths, layers = param_paths(config), config.vision_config.num_hidden_layers
    rows = params.parameter_table(config, "CLIPModel")
    labels = tree_from_names(
        paths, {n: "frozen" if common.is_frozen(n, lock, layers, rows) else "train" for n in paths}
    )
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


# -- devices ------------------------------------------------------------------------------------------
class Placement:
    """Where arrays live: replicated parameters, batches sharded on the batch axis over all devices."""

    def __init__(self, local_batch: int) -> None:
        devices = jax.devices()
        self.mesh = Mesh(np.array(devices), ("data",))
        if (local_batch * jax.process_count()) % len(devices):
            raise ValueError(
                f"--batch-size {local_batch * jax.process_count()} must be divisible by the {len(devices)} JAX devices"
            )
        self.replicated = NamedSharding(self.mesh, P())
        self.batch = NamedSharding(self.mesh, P(None, "data"))  # (A, B, ...): micro-steps, then pairs

    def params(self, tree: Any) -> Any:
        return jax.device_put(tree, self.replicated)

    def batches(self, local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's (A, b, ...) numpy slices -> global (A, B, ...) arrays sharded over the mesh."""
        return {k: jax.make_array_from_process_local_data(self.batch, v) for k, v in local.items()}


def to_host(tree: Any) -> Any:
    """A (replicated) tree -> numpy, on any process (reads the first local replica)."""
    return jax.tree.map(
        lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x), tree
    )


# -- data ---------------------------------------------------------------------------------------------
class Prefetcher:
    """Optimizer steps start..stop-1 as stacked numpy micro-batches (A, b, ...), read ahead by a
    background thread into a bounded queue (decoding on `workers` threads when workers > 0)."""

    _DONE = object()

    def __init__(
        self,
        reader: BatchReader,
        order: common.DataOrder,
        start: int,
        stop: int,
        accum: int,
        workers: int = 0,
        depth: int = 4,
    ) -> None:
        self.reader, self.order, self.accum = reader, order, accum
        self.queue: queue.Queue[object] = queue.Queue(maxsize=max(2, depth))  # batches, then _DONE
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(start, stop, workers, depth), daemon=True)
        self.thread.start()

    def _load(self, step: int) -> dict[str, np.ndarray]:
        return self.reader.step(self.order, step, self.accum)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, start: int, stop: int, workers: int, depth: int) -> None:
        try:
            if workers > 0:
                with ThreadPoolExecutor(workers) as pool:
                    pending: collections.deque[Future[dict[str, np.ndarray]]] = collections.deque()
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

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        item = self.queue.get()
        if item is self._DONE:
            if self.error is not None:
                raise self.error
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()


# -- checkpoints --------------------------------------------------------------------------------------
OPTIMIZER_FILE = "optimizer.flax"  # safetensors: the optax state's leaves in tree order ("00000", ...)


def write_checkpoint(directory: str, model: Any, params: Any, opt_state: Any) -> None:
    """Canonical float32 weights and the optax state's leaves (in tree order) into a staged checkpoint."""
    from clip.flax import loading

    expected = loading.expected_parameters(model)
    state = {
        n: np.array(a, order="C") for n, a in loading.from_params(to_host(params), expected).items()
    }  # (ascontiguousarray makes 0-d 1-d)
    write_safetensors(state, os.path.join(directory, common.MODEL_FILE))
    common.write_array_list(
        [np.asarray(x) for x in jax.tree.leaves(to_host(opt_state))], os.path.join(directory, OPTIMIZER_FILE)
    )


def load_checkpoint(directory: str, model: Any, opt_state_template: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(params tree, optax state, trainer state) from a checkpoint written by write_checkpoint."""
    from clip.flax import loading

    state = common.read_trainer_state(directory)
    expected = loading.expected_parameters(model)
    params = loading.to_params(common.read_model_state(directory, dict.fromkeys(expected)), expected)
    template, treedef = jax.tree.flatten(opt_state_template)
    saved = common.read_array_list(os.path.join(directory, OPTIMIZER_FILE), [np.shape(t) for t in template])
    leaves = [array.astype(np.asarray(t).dtype) for array, t in zip(saved, template)]
    common.set_python_numpy_rng_state(state["rng"])
    return params, jax.tree.unflatten(treedef, leaves), state


def save_model(model: Any, params: Any, processor: Any, out: str, dtype: type[np.floating] | None = None) -> None:
    """The loadable model: config.json + model.safetensors (canonical) + processor files in `out`."""
    host = to_host(params)
    if dtype is not None:
        host = jax.tree.map(lambda x: x.astype(dtype), host)
    model.save_pretrained(out, params=host)
    processor.save_pretrained(out)


# -- the backend of clip.train.loop ------------------------------------------------------------------
class Trainer:
    """JAX's params, optimizer, jitted step and state I/O for clip.train.loop.run (see its docstring)."""

    def __init__(self, options: TrainOptions) -> None:
        from clip.flax import FlaxCLIPModel

        self.options = options
        self.rank, self.world = init_distributed()
        np.random.seed(options.seed % 2**32)
        random.seed(options.seed)
        dtype = {"bf16": jnp.bfloat16, "fp16": jnp.float16}.get(
            options.precision, jnp.float32
        )  # compute dtype; params stay float32
        self.model, self.processor = common.build_model_and_processor(
            options,
            lambda path: FlaxCLIPModel.from_pretrained(path, dtype=dtype),
            lambda config: FlaxCLIPModel(config, seed=options.seed, dtype=dtype),
        )
        self.loss_scale: common.DynamicLossScale | None = None

    def build_optimizer(self, steps: int, warmup: int) -> None:
        o, config = self.options, self.model.config
        self.tx = build_optimizer(
            config, steps, o.lr, warmup, o.weight_decay, o.grad_clip, o.min_lr_ratio, lock=common.lock_settings(o)
        )
        self.params = jax.tree.map(lambda x: np.asarray(x, np.float32), self.model.params)
        self.opt_state = jax.jit(self.tx.init)(self.params)  # one compilation, not one per leaf shape
        if o.grad_checkpointing:
            self.model.gradient_checkpointing_enable()

    def load_checkpoint(self, directory: str) -> dict[str, Any]:
        self.params, self.opt_state, state = load_checkpoint(directory, self.model, self.opt_state)
        return state

    def start(self, loss_scale: common.DynamicLossScale | None) -> None:
        self.loss_scale = loss_scale
        self.place = Placement(self.options.batch_size // self.world)
        self.params, self.opt_state = self.place.params(self.params), self.place.params(self.opt_state)
        config = self.model.config
        dropout = any(c.attention_dropout > 0 for c in (config.text_config, config.vision_config))
        self.step_fn = make_train_step(
            self.model, self.tx, self.options.seed, dropout, loss_scaling=loss_scale is not None
        )

    def batches(self, reader: BatchReader, order: common.DataOrder, start: int, stop: int) -> Prefetcher:
        self.next_step = start
        return Prefetcher(reader, order, start, stop, self.options.accum_steps, workers=self.options.workers)

    def step(self, inputs: dict[str, np.ndarray], lr: float) -> float:
        inputs, micro = self.place.batches(inputs), self.next_step * self.options.accum_steps
        if self.loss_scale is None:
            self.params, self.opt_state, loss = self.step_fn(self.params, self.opt_state, inputs, micro)
        else:
            state = (jnp.float32(self.loss_scale.scale), jnp.int32(self.loss_scale.good_steps))
            self.params, self.opt_state, loss, (scale, good) = self.step_fn(
                self.params, self.opt_state, inputs, micro, state
            )
            self.loss_scale = common.DynamicLossScale(float(scale), int(good))
        self.next_step += 1
        return float(loss)

    def scalars(self) -> dict[str, float]:
        scale = {"loss_scale": self.loss_scale.scale} if self.loss_scale is not None else {}
        return {"temperature": float(np.exp(to_host(self.params["logit_scale"]))), **scale}

    def loss_scale_state(self) -> dict[str, float] | None:
        return self.loss_scale.state() if self.loss_scale is not None else None

    @contextlib.contextmanager
    def encoders(self, batch_size: int = 256) -> Iterator[tuple[EncodeFn, EncodeFn]]:
        """On the first local device, in chunks padded to a power of two (each encoder compiles once or twice)."""
        model, device = self.model, jax.local_devices()[0]
        params = jax.device_put(to_host(self.params), device)
        image_fn = jax.jit(lambda p, x: model.get_image_features(x, params=p).astype(jnp.float32))
        text_fn = jax.jit(lambda p, i, m: model.get_text_features(i, m, params=p).astype(jnp.float32))
        yield common.chunked_encoders(
            self.processor,
            model.config.text_config.max_position_embeddings,
            lambda pixels: image_fn(params, jax.device_put(pixels, device)),
            lambda ids, mask: text_fn(params, jax.device_put(ids, device), jax.device_put(mask, device)),
            batch_size,
            pad=True,
        )

    def write_checkpoint(self, directory: str) -> None:
        write_checkpoint(directory, self.model, self.params, self.opt_state)

    def save_model(self, out: str, float16: bool = False) -> None:
        save_model(self.model, self.params, self.processor, out, dtype=np.float16 if float16 else None)

    def describe(self) -> str:
        return f"{sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params)) / 1e6:.2f}M parameters"

    def placement(self) -> str:
        return f"on {self.world} process(es), {len(jax.devices())} {jax.default_backend()} device(s)"
