"""The TensorFlow / Keras 3 backend of the training loop (clip.train.loop), `clip train --backend tf`.
Import it through clip.train.tf, which sets TensorFlow's log level first (when the user has not).

Replicas come from a `tf.distribute` strategy: MultiWorkerMirroredStrategy when TF_CONFIG names a
cluster, MirroredStrategy over the local GPUs (or over several logical CPU devices configured before
TensorFlow starts), else the default strategy. Each replica encodes its slice of the global batch,
gathers every replica's features with `ReplicaContext.all_gather` (whose gradient hands each replica
the summed gradient of its own slice) and takes the loss of its own rows against the global batch
(`local_clip_loss`). The replicas' gradients are summed in cross-replica context, where
keras.optimizers.AdamW clips them by global norm and applies them once to the mirrored variables;
logit_scale is then clamped to [0, ln 100].

Data: tf.data over optimizer steps, each element the step's micro-batches read and preprocessed by
the shared numpy code (common.BatchReader) in `tf.numpy_function`, mapped in parallel (AUTOTUNE)
in deterministic order and prefetched.

The loop and the framework-neutral parts (schedule, decay rule, data order, checkpoint layout,
metrics, progress) are clip.train.loop and clip.train.common; this file holds the model, the
optimizer, the strategy and the state I/O.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from clip.common import params
from clip.common.io import read_safetensors, write_safetensors
from clip.tf import loading
from clip.train import common
from clip.train.inputs import BatchReader, EncodeFn
from clip.train.options import LockSettings, TrainOptions
from clip.train.tf_step import (  # noqa: F401 - the step's pieces stay importable from here
    LossScaleState,
    clamp_logit_scale,
    local_clip_loss,
    make_gradient_fn,
    make_train_step,
    objective,
    replica_gradients,
)

KEYS = ("input_ids", "attention_mask", "pixel_values")


def configure_devices(threads: int = 0) -> None:
    """Before TensorFlow initializes its devices: intra-op threads (0: TensorFlow's choice)."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)


def make_strategy() -> tuple[tf.distribute.Strategy, int, int]:
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

    def __init__(self, values: Sequence[float]) -> None:
        self.values = [float(v) for v in values]
        self._table = tf.constant(self.values, tf.float32)

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        index = tf.minimum(tf.cast(step, tf.int32), len(self.values) - 1)
        return tf.gather(self._table, index)

    def get_config(self) -> dict[str, Any]:
        return {"values": self.values}


def build_optimizer(
    model: keras.Model,
    steps: int,
    base_lr: float,
    warmup: int,
    weight_decay: float,
    grad_clip: float,
    min_lr_ratio: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    lock: LockSettings | None = None,
) -> tuple[keras.optimizers.AdamW, list[tf.Variable]]:
    """keras AdamW with common.learning_rate per step, decay on matrix weights only, global-norm clipping;
    returns it and the variables it trains (all but those --lock-image freezes: common.is_frozen).

    Build it under the strategy's scope (its slots are mirrored like the model's variables).
    """
    schedule = TableSchedule(
        [common.learning_rate(s, base_lr, warmup, steps, min_lr_ratio) for s in range(max(1, steps))]
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_1=betas[0],
        beta_2=betas[1],
        epsilon=eps,
        global_clipnorm=grad_clip if grad_clip and grad_clip > 0 else None,
    )
    layers = model.config.vision_config.num_hidden_layers
    rows = params.parameter_table(model.config, model.canonical_class)
    canonical = {n: v for n, v in model.canonical_variables().items() if not common.is_frozen(n, lock, layers, rows)}
    optimizer.exclude_from_weight_decay(
        var_list=[v for name, (v, _) in canonical.items() if not common.applies_weight_decay(name, rows)]
    )
    variables = [v for v, _ in canonical.values()]
    optimizer.build(variables)
    return optimizer, variables


# -- data ---------------------------------------------------------------------------------------------
def make_dataset(
    reader: BatchReader, order: common.DataOrder, start: int, stop: int, accum: int, parallel: int = 0
) -> tf.data.Dataset:
    """tf.data over optimizer steps start..stop-1: each element {key: (A, b, ...)} of this worker's slices."""
    probe = reader(order.local_indices(0))
    dtypes = [tf.as_dtype(probe[k].dtype) for k in KEYS]
    shapes = [(accum, *probe[k].shape) for k in KEYS]

    def load(step: np.int64) -> tuple[np.ndarray, ...]:
        stacked = reader.step(order, int(step), accum)
        return tuple(stacked[k] for k in KEYS)

    def to_dict(*arrays: tf.Tensor) -> dict[str, tf.Tensor]:
        return {k: tf.ensure_shape(a, s) for k, a, s in zip(KEYS, arrays, shapes)}

    ds = tf.data.Dataset.range(start, stop)
    ds = ds.map(
        lambda s: tf.numpy_function(load, [s], dtypes, stateful=False),
        num_parallel_calls=parallel or tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.map(to_dict).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # DataOrder shards
    return ds.with_options(options)


def distribute(strategy: tf.distribute.Strategy, batches: dict[str, tf.Tensor]) -> Any:
    """This worker's (A, b, ...) batches -> per-replica (A, b / local replicas, ...) slices, in replica order."""
    if strategy.num_replicas_in_sync == 1:
        return batches

    def slice_for(ctx: tf.distribute.experimental.ValueContext) -> dict[str, tf.Tensor]:
        local = ctx.num_replicas_in_sync // _workers(strategy)
        index = ctx.replica_id_in_sync_group % local
        rows = batches["input_ids"].shape[1] // local
        return {k: v[:, index * rows : (index + 1) * rows] for k, v in batches.items()}

    return strategy.experimental_distribute_values_from_function(slice_for)


def _workers(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return 1
    return resolver.cluster_spec().num_tasks(resolver.task_type or "worker")


# -- checkpoints --------------------------------------------------------------------------------------
OPTIMIZER_FILE = "optimizer.tf"  # safetensors: optimizer.variables in order ("00000", ...), iterations first
RNG_FILE = "rng.tf"  # safetensors: the model's non-trainable variables (dropout seed states), by path


def _rng_variables(model: keras.Model) -> dict[str, tf.Variable]:
    return {v.path: v for v in model.non_trainable_variables}


def write_checkpoint(directory: str, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """Canonical float32 weights, the optimizer's variables and the dropout seed states into a staged checkpoint."""
    write_safetensors(loading.canonical_state(model), os.path.join(directory, common.MODEL_FILE))
    common.write_array_list([np.array(v.numpy()) for v in optimizer.variables], os.path.join(directory, OPTIMIZER_FILE))
    write_safetensors(
        {p: np.array(v.numpy()) for p, v in _rng_variables(model).items()}, os.path.join(directory, RNG_FILE)
    )


def load_checkpoint(directory: str, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict[str, Any]:
    """Restore the model's and the optimizer's variables exactly; returns the trainer state dict.

    Every file is read and checked before anything is assigned, so a damaged checkpoint raises
    (naming its file) without changing the model, and the caller can fall back to an older one.
    """
    state = common.read_trainer_state(directory)
    tensors = common.read_model_state(directory, dict.fromkeys(model.canonical_variables()))
    saved = common.read_array_list(
        os.path.join(directory, OPTIMIZER_FILE), [tuple(v.shape) for v in optimizer.variables]
    )
    rng = read_safetensors(os.path.join(directory, RNG_FILE))
    loading.assign_canonical(model, tensors)
    for variable, value in zip(optimizer.variables, saved):
        variable.assign(value)
    for path, variable in _rng_variables(model).items():
        if path in rng:
            variable.assign(np.array(rng[path]))
    common.set_python_numpy_rng_state(state["rng"])
    return state


def save_model(model: keras.Model, processor: Any, out: str, dtype: type[np.floating] | None = None) -> None:
    """The loadable model: config.json + model.safetensors (canonical) + processor files in `out`."""
    model.save_pretrained(out)
    if dtype is not None:
        state = {n: a.astype(dtype) for n, a in loading.canonical_state(model).items()}
        write_safetensors(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    processor.save_pretrained(out)


# -- the backend of clip.train.loop ------------------------------------------------------------------
class Trainer:
    """TensorFlow's model, optimizer, distributed step and state I/O for clip.train.loop.run (see its docstring)."""

    def __init__(self, options: TrainOptions) -> None:
        from clip.tf import TFCLIPModel

        self.options = options
        configure_devices(options.threads)
        keras.utils.set_random_seed(options.seed)  # python, numpy and TensorFlow: the initial weights
        self.strategy, self.rank, self.world = make_strategy()
        policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}.get(
            options.precision, "float32"
        )  # variables stay float32
        with self.strategy.scope():
            self.model, self.processor = common.build_model_and_processor(
                options,
                lambda path: TFCLIPModel.from_pretrained(path, dtype=policy),
                lambda config: TFCLIPModel(config, dtype=policy),
            )
        if options.grad_checkpointing:
            self.model.gradient_checkpointing_enable()
        replicas = self.strategy.num_replicas_in_sync
        if options.batch_size % replicas:
            raise ValueError(
                f"--batch-size {options.batch_size} must be divisible by the {replicas} TensorFlow replicas"
            )
        self.loss_scale: LossScaleState | None = None

    def build_optimizer(self, steps: int, warmup: int) -> None:
        o = self.options
        with self.strategy.scope():
            self.optimizer, self.variables = build_optimizer(
                self.model,
                steps,
                o.lr,
                warmup,
                o.weight_decay,
                o.grad_clip,
                o.min_lr_ratio,
                lock=common.lock_settings(o),
            )

    def load_checkpoint(self, directory: str) -> dict[str, Any]:
        return load_checkpoint(directory, self.model, self.optimizer)

    def start(self, loss_scale: common.DynamicLossScale | None) -> None:
        if loss_scale is not None:
            with self.strategy.scope():
                self.loss_scale = LossScaleState(loss_scale.scale, loss_scale.good_steps)
        self.step_fn = make_train_step(
            self.strategy,
            self.model,
            self.optimizer,
            self.variables,
            local=self.options.local_loss,
            jit_compile=self.options.compile,
            loss_scale=self.loss_scale,
        )

    def batches(self, reader: BatchReader, order: common.DataOrder, start: int, stop: int) -> Iterator[Any]:
        return iter(make_dataset(reader, order, start, stop, self.options.accum_steps, self.options.workers))

    def step(self, inputs: dict[str, tf.Tensor], lr: float) -> float:
        return float(self.step_fn(distribute(self.strategy, inputs)))

    def scalars(self) -> dict[str, float]:
        scale = {"loss_scale": self.loss_scale.state()["scale"]} if self.loss_scale is not None else {}
        return {"temperature": float(np.exp(self.model.logit_scale.numpy())), **scale}

    def loss_scale_state(self) -> dict[str, float] | None:
        return self.loss_scale.state() if self.loss_scale is not None else None

    @contextlib.contextmanager
    def encoders(self) -> Iterator[tuple[EncodeFn, EncodeFn]]:
        model = self.model
        image_fn = tf.function(lambda x: tf.cast(model.get_image_features(x), tf.float32), reduce_retracing=True)
        text_fn = tf.function(lambda i, m: tf.cast(model.get_text_features(i, m), tf.float32), reduce_retracing=True)
        yield common.chunked_encoders(
            self.processor,
            model.config.text_config.max_position_embeddings,
            lambda pixels: image_fn(tf.constant(pixels)).numpy(),
            lambda ids, mask: text_fn(tf.constant(ids), tf.constant(mask)).numpy(),
        )

    def write_checkpoint(self, directory: str) -> None:
        write_checkpoint(directory, self.model, self.optimizer)

    def save_model(self, out: str, float16: bool = False) -> None:
        save_model(self.model, self.processor, out, dtype=np.float16 if float16 else None)

    def describe(self) -> str:
        return f"{sum(int(np.prod(v.shape)) for v in self.variables) / 1e6:.2f}M parameters"

    def placement(self) -> str:
        replicas = self.strategy.num_replicas_in_sync
        return f"on {self.world} worker(s) x {replicas // self.world} replica(s)"
