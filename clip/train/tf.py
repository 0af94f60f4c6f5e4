"""The TensorFlow / Keras 3 trainer behind `clip train --backend tf`.

Replicas come from a `tf.distribute` strategy: MultiWorkerMirroredStrategy when TF_CONFIG names a
cluster, MirroredStrategy over the local GPUs (or over several logical CPU devices, e.g. from
CLIP_TF_CPU_DEVICES=N for tests), else the default strategy. Each replica encodes its slice of the
global batch, gathers every replica's features with `ReplicaContext.all_gather` (whose gradient
hands each replica the summed gradient of its own slice) and takes the loss of its own rows
against the global batch (`local_clip_loss`). The replicas' gradients are summed in cross-replica
context, where keras.optimizers.AdamW clips them by global norm and applies them once to the
mirrored variables; logit_scale is then clamped to [0, ln 100].

Data: tf.data over optimizer steps, each element the step's micro-batches read and preprocessed by
the shared numpy code (common.BatchReader) in `tf.numpy_function`, mapped in parallel (AUTOTUNE)
in deterministic order and prefetched.

The framework-neutral parts (schedule, decay rule, data order, checkpoint layout, metrics,
progress) come from clip.train.common; this file holds the model, optimizer and step.
"""

from __future__ import annotations

import os
import time

import numpy as np

from clip.common import params
from clip.common.io import read_safetensors, write_safetensors
from clip.train import common

CPU_DEVICES_ENV = "CLIP_TF_CPU_DEVICES"  # split the CPU into N logical devices (MirroredStrategy tests)
KEYS = ("input_ids", "attention_mask", "pixel_values")


def configure_devices(threads: int = 0):
    """Before TensorFlow starts: logical CPU devices from CLIP_TF_CPU_DEVICES, intra-op threads."""
    import tensorflow as tf

    count = int(os.environ.get(CPU_DEVICES_ENV, "0") or 0)
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        if tf.config.get_logical_device_configuration(cpu) is None:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from clip.tf import loading  # noqa: E402
from clip.train.tf_step import (  # noqa: E402,F401 - the step's pieces stay importable from here
    LossScaleState, clamp_logit_scale, local_clip_loss, make_gradient_fn, make_train_step, objective, replica_gradients)


def make_strategy():
    """(strategy, worker index, worker count)."""
    if os.environ.get("TF_CONFIG"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        return strategy, int(resolver.task_id or 0), resolver.cluster_spec().num_tasks(resolver.task_type or "worker")
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), 0, 1
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus]), 0, 1
    return tf.distribute.get_strategy(), 0, 1


# -- optimizer ----------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="clip")
class TableSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """common.learning_rate tabulated per optimizer step, indexed by the optimizer's iterations."""

    def __init__(self, values):
        self.values = [float(v) for v in values]
        self._table = tf.constant(self.values, tf.float32)

    def __call__(self, step):
        index = tf.minimum(tf.cast(step, tf.int32), len(self.values) - 1)
        return tf.gather(self._table, index)

    def get_config(self):
        return {"values": self.values}


def build_optimizer(model, steps: int, base_lr: float, warmup: int, weight_decay: float, grad_clip: float,
                    min_lr_ratio: float = 0.0, betas=(0.9, 0.98), eps=1e-6, lock=None):
    """keras AdamW with common.learning_rate per step, decay on matrix weights only, global-norm clipping;
    returns it and the variables it trains (all but those --lock-image freezes: common.is_frozen).

    Build it under the strategy's scope (its slots are mirrored like the model's variables).
    """
    table = TableSchedule([common.learning_rate(s, base_lr, warmup, steps, min_lr_ratio) for s in range(max(1, steps))])
    optimizer = keras.optimizers.AdamW(learning_rate=table, weight_decay=weight_decay, beta_1=betas[0], beta_2=betas[1],
                                       epsilon=eps, global_clipnorm=grad_clip if grad_clip and grad_clip > 0 else None)
    layers = model.config.vision_config.num_hidden_layers
    canonical = {n: v for n, v in model.canonical_variables().items() if not common.is_frozen(n, lock, layers)}
    table = params.parameter_table(model.config, model.canonical_class)
    optimizer.exclude_from_weight_decay(var_list=[v for name, (v, _) in canonical.items() if not common.applies_weight_decay(name, table)])
    variables = [v for v, _ in canonical.values()]
    optimizer.build(variables)
    return optimizer, variables


# -- data ---------------------------------------------------------------------------------------------
def make_dataset(reader, order, start: int, stop: int, accum: int, parallel: int = 0):
    """tf.data over optimizer steps start..stop-1: each element {key: (A, b, ...)} of this worker's slices."""
    probe = reader(order.local_indices(0))
    dtypes = [tf.as_dtype(probe[k].dtype) for k in KEYS]
    shapes = [(accum, *probe[k].shape) for k in KEYS]

    def load(step):
        micro = [reader(order.local_indices(int(step) * accum + a)) for a in range(accum)]
        return tuple(np.stack([m[k] for m in micro]) for k in KEYS)

    def to_dict(*arrays):
        return {k: tf.ensure_shape(a, s) for k, a, s in zip(KEYS, arrays, shapes)}

    ds = tf.data.Dataset.range(start, stop)
    ds = ds.map(lambda s: tf.numpy_function(load, [s], dtypes, stateful=False),
                num_parallel_calls=parallel or tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(to_dict).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # DataOrder shards
    return ds.with_options(options)


def distribute(strategy, batches: dict):
    """This worker's (A, b, ...) batches -> per-replica (A, b / local replicas, ...) slices, in replica order."""
    if strategy.num_replicas_in_sync == 1:
        return batches

    def slice_for(ctx):
        local = ctx.num_replicas_in_sync // _workers(strategy)
        index = ctx.replica_id_in_sync_group % local
        rows = batches["input_ids"].shape[1] // local
        return {k: v[:, index * rows : (index + 1) * rows] for k, v in batches.items()}

    return strategy.experimental_distribute_values_from_function(slice_for)


def _workers(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 1
    return resolver.cluster_spec().num_tasks(resolver.task_type or "worker")


# -- evaluation ---------------------------------------------------------------------------------------
def evaluate(model, processor, val, tasks, max_length, max_items=2000, batch_size=256) -> dict:
    image_fn = tf.function(lambda x: tf.cast(model.get_image_features(x), tf.float32), reduce_retracing=True)
    text_fn = tf.function(lambda i, m: tf.cast(model.get_text_features(i, m), tf.float32), reduce_retracing=True)

    def images(items):
        out = []
        for i in range(0, len(items), batch_size):
            pixels = processor.image_processor(list(items[i : i + batch_size]), return_tensors="np")["pixel_values"]
            out.append(image_fn(tf.constant(np.asarray(pixels, np.float32))).numpy())
        return np.concatenate(out)

    def texts(items):
        out = []
        for i in range(0, len(items), batch_size):
            tok = processor.tokenizer(list(items[i : i + batch_size]), padding="max_length", truncation=True,
                                      max_length=max_length, return_tensors="np")
            out.append(text_fn(tf.constant(np.asarray(tok["input_ids"], np.int32)),
                               tf.constant(np.asarray(tok["attention_mask"], np.int32))).numpy())
        return np.concatenate(out)

    return common.evaluate_with(images, texts, val, tasks, max_items)


# -- checkpoints --------------------------------------------------------------------------------------
OPTIMIZER_FILE = "optimizer.tf"  # safetensors: optimizer.variables in order ("00000", ...), iterations first
RNG_FILE = "rng.tf"  # safetensors: the model's non-trainable variables (dropout seed states), by path


def _rng_variables(model):
    return {v.path: v for v in model.non_trainable_variables}


def save_checkpoint(out, step, micro_step, model, optimizer, run_info, history, extra=None):
    staged = common.staging_dir(out, step)
    os.makedirs(staged, exist_ok=True)
    write_safetensors(loading.canonical_state(model), os.path.join(staged, "model.safetensors"))
    write_safetensors({f"{i:05d}": np.array(v.numpy()) for i, v in enumerate(optimizer.variables)}, os.path.join(staged, OPTIMIZER_FILE))
    write_safetensors({p: np.array(v.numpy()) for p, v in _rng_variables(model).items()}, os.path.join(staged, RNG_FILE))
    common.write_trainer_state(staged, {"step": step, "micro_step": micro_step, "run": run_info, "history": history,
                                        "rng": common.python_numpy_rng_state(), "backend": "tf", **(extra or {})})
    return common.commit_checkpoint(out, step)


def load_checkpoint(directory, model, optimizer):
    """Restore the model's and the optimizer's variables exactly; returns the trainer state dict.

    Every file is read and checked before anything is assigned, so a damaged checkpoint raises
    (naming its file) without changing the model, and the caller can fall back to an older one.
    """
    state = common.read_trainer_state(directory)
    path = os.path.join(directory, "model.safetensors")
    tensors = read_safetensors(path)
    missing = [n for n in model.canonical_variables() if n not in tensors]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of the model's tensors are missing ({', '.join(missing[:3])}, ...)")
    optimizer_path = os.path.join(directory, OPTIMIZER_FILE)
    saved = read_safetensors(optimizer_path)
    if sorted(saved) != [f"{i:05d}" for i in range(len(optimizer.variables))]:
        raise ValueError(f"{optimizer_path}: {len(saved)} optimizer variables, this optimizer has {len(optimizer.variables)}")
    for i, variable in enumerate(optimizer.variables):
        if tuple(saved[f"{i:05d}"].shape) != tuple(variable.shape):
            raise ValueError(f"{optimizer_path}: variable {i} has shape {tuple(saved[f'{i:05d}'].shape)}, expected {tuple(variable.shape)}")
    rng = read_safetensors(os.path.join(directory, RNG_FILE))
    loading.assign_canonical(model, {n: np.array(tensors[n]) for n in model.canonical_variables()})
    for i, variable in enumerate(optimizer.variables):
        variable.assign(np.array(saved[f"{i:05d}"]))
    for path, variable in _rng_variables(model).items():
        if path in rng:
            variable.assign(np.array(rng[path]))
    common.set_python_numpy_rng_state(state["rng"])
    return state


def save_model(model, processor, out, dtype=None):
    """The loadable model: config.json + model.safetensors (canonical) + processor files in `out`."""
    model.save_pretrained(out)
    if dtype is not None:
        state = {n: a.astype(dtype) for n, a in loading.canonical_state(model).items()}
        write_safetensors(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    processor.save_pretrained(out)


# -- the run ------------------------------------------------------------------------------------------
def build_model_and_processor(args):
    from clip.common.config import CLIPConfig
    from clip.common.processor import CLIPProcessor
    from clip.tf import TFCLIPModel

    policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}.get(args.precision, "float32")  # variables stay float32
    if args.init:
        return TFCLIPModel.from_pretrained(args.init, dtype=policy), CLIPProcessor.from_pretrained(args.init)
    config = CLIPConfig.from_dict(common.build_config_dict(args.config or "small"))
    return TFCLIPModel(config, dtype=policy), common.build_processor(config)


def train(args) -> dict:
    """Run `clip train --backend tf`; returns the final metrics (worker 0) or {}."""
    configure_devices(args.threads)
    keras.utils.set_random_seed(args.seed)  # python, numpy and TensorFlow: the initial weights
    strategy, rank, world = make_strategy()

    with strategy.scope():
        model, processor = build_model_and_processor(args)
    if args.grad_checkpointing:
        model.gradient_checkpointing_enable()
    config = model.config
    image_size, max_length = config.vision_config.image_size, config.text_config.max_position_embeddings
    train_set, val_set, tasks = common.build_datasets(args, image_size)
    replicas = strategy.num_replicas_in_sync
    if args.batch_size % replicas:
        raise ValueError(f"--batch-size {args.batch_size} must be divisible by the {replicas} TensorFlow replicas")

    order = common.make_order(train_set, args.batch_size, args.seed, world, rank)
    steps = common.total_steps(args.steps, args.epochs, len(train_set), args.batch_size, args.accum_steps)
    warmup = min(args.warmup_steps, steps)
    run_info = common.run_settings(args, steps, warmup, len(train_set), world) | common.data_settings(train_set)
    with strategy.scope():
        optimizer, variables = build_optimizer(model, steps, args.lr, warmup, args.weight_decay, args.grad_clip,
                                               args.min_lr_ratio, lock=common.lock_settings(args))

    start, history = 0, []
    if args.resume:
        _, state = common.resume_from_checkpoints(args.out, lambda d: load_checkpoint(d, model, optimizer), common.reporter(rank))
        common.check_resume_compatible(state["run"], run_info)
        start, history = state["step"], state["history"]

    progress = common.Progress(steps, start, every=args.log_every, enabled=rank == 0 and not args.quiet)
    reader = common.BatchReader(train_set, processor, max_length, report=progress.log if rank == 0 else (lambda m: None))
    dataset = make_dataset(reader, order, start, steps, args.accum_steps, args.workers)
    loss_scale = None
    if args.precision == "fp16":
        with strategy.scope():
            saved = common.DynamicLossScale.from_state(state.get("loss_scale") if args.resume else None)
            loss_scale = LossScaleState(saved.scale, saved.good_steps)
    step_fn = make_train_step(strategy, model, optimizer, variables, local=args.local_loss, jit_compile=args.compile, loss_scale=loss_scale)
    logs = common.RunLogs(args, enabled=rank == 0)
    if rank == 0 and not args.quiet:
        n_params = sum(int(np.prod(v.shape)) for v in variables)
        progress.log(f"clip train: {n_params / 1e6:.2f}M parameters, {len(train_set)} training pairs, {steps} steps of "
                     f"{args.batch_size} x {args.accum_steps} pairs on {world} worker(s) x {replicas // world} replica(s), "
                     f"{args.precision}")

    step, t_start = start, time.perf_counter()
    try:
        for batches in dataset:
            lr = common.learning_rate(step, args.lr, warmup, steps, args.min_lr_ratio)
            total = float(step_fn(distribute(strategy, batches)))
            step += 1
            history.append([step, round(total, 6)])
            progress.update(step, total, lr, args.batch_size * args.accum_steps)
            logs.step(step, {"loss": total, "lr": lr, "temperature": float(np.exp(model.logit_scale.numpy()))},
                      args.batch_size * args.accum_steps)

            last = step == steps
            if args.save_every and (step % args.save_every == 0 or last) and rank == 0:
                save_checkpoint(args.out, step, step * args.accum_steps, model, optimizer, run_info, history,
                                extra={"loss_scale": loss_scale.state()} if loss_scale is not None else None)
            if args.eval_every and step % args.eval_every == 0 and not last and rank == 0:
                metrics = evaluate(model, processor, val_set, tasks, max_length, args.eval_max)
                logs.metrics(step, metrics)
                progress.log(f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
            if last or (args.stop_after and step >= args.stop_after):
                break  # --stop-after: simulated interruption (tests), leaving the checkpoint
    finally:
        progress.close()
    elapsed = time.perf_counter() - t_start

    result = {}
    if rank == 0 and step == steps:
        metrics = evaluate(model, processor, val_set, tasks, max_length, args.eval_max)
        logs.metrics(step, metrics)
        save_model(model, processor, args.out, dtype=np.float16 if args.save_dtype == "float16" else None)
        result = common.finish_run(args, metrics, history, steps, start, step, elapsed, run_info)
    logs.close()
    return result

