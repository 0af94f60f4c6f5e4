"""The training loop, written once for every backend, and `fit`, the Python API that `clip train` calls.

The loop owns everything that is not framework-specific: the data (datasets, the seeded order, the
batch reader that skips unreadable items), the run's settings, resuming from the newest loadable
checkpoint, the step loop, progress lines, TensorBoard / W&B logs, periodic and final evaluation, the
checkpoint cadence and layout, callbacks, the final model and metrics.json.

A backend (clip.train.pt.Trainer, clip.train.tf.Trainer, clip.train.flax.Trainer) supplies only its
model, its optimizer and step, and the I/O of its state, as these members:

    rank, world                      this process and the number of data-loading processes
    model, processor                 the model (its .config) and its processor
    build_optimizer(steps, warmup)   AdamW with common.learning_rate, decay by common.applies_weight_decay
    load_checkpoint(directory)       restore model, optimizer and RNG state; returns trainer_state.json's dict
    start(loss_scale)                build the step (float16: a common.DynamicLossScale to continue from)
    batches(reader, order, start, stop)  optimizer steps start..stop-1 as the step's inputs (an iterator)
    step(inputs, lr) -> float        one optimizer step over the step's micro-batches; the loss
    scalars() -> dict                the temperature (and the float16 loss scale) after a step
    loss_scale_state() -> dict|None  the float16 loss scale for trainer_state.json
    encoders()                       a context giving (images -> (n, E) array, texts -> (n, E) array)
    write_checkpoint(directory)      model.safetensors (canonical float32), optimizer and RNG files
    save_model(out, float16)         the loadable model and processor
    describe() -> str                parameters and placement, for the first progress line
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from clip.common.io import atomic_write_json
from clip.train import common
from clip.train.inputs import EncodeFn
from clip.train.options import TrainOptions, check

REQUIREMENTS = {"pt": "PyTorch", "tf": "TensorFlow and Keras 3", "flax": "JAX, Flax and optax"}


class Backend(Protocol):
    """What `run` uses of a backend's Trainer (the members of the module docstring)."""

    rank: int
    world: int
    model: Any
    processor: Any

    def build_optimizer(self, steps: int, warmup: int) -> None: ...
    def load_checkpoint(self, directory: str) -> dict[str, Any]: ...
    def start(self, loss_scale: common.DynamicLossScale | None) -> None: ...
    def batches(self, reader: common.BatchReader, order: common.DataOrder, start: int, stop: int) -> Iterator[Any]: ...
    def step(self, inputs: Any, lr: float) -> float: ...
    def scalars(self) -> dict[str, float]: ...
    def loss_scale_state(self) -> dict[str, float] | None: ...
    def encoders(self) -> AbstractContextManager[tuple[EncodeFn, EncodeFn]]: ...
    def write_checkpoint(self, directory: str) -> None: ...
    def save_model(self, out: str, float16: bool = False) -> None: ...
    def describe(self) -> str: ...
    def placement(self) -> str: ...


@dataclass
class StepInfo:
    """What a callback sees after each optimizer step (after that step's checkpoint and evaluation)."""

    step: int
    """Optimizer steps done (1-based)."""
    total_steps: int
    loss: float
    """The contrastive loss of this step's batch (over all its micro-batches)."""
    lr: float
    metrics: dict = field(default_factory=dict)
    """The evaluation metrics when this step evaluated (eval_every), else empty."""
    checkpoint: str | None = None
    """The checkpoint directory this step wrote, if any."""


Callback = Callable[[StepInfo], object]
"""Called after every optimizer step, on every process (so that all stop together); a true return value
stops the run there, as an interruption would: the step's checkpoint is written (when it was not
already) and fit returns {} without the final evaluation and model, so that a later fit with
resume=True continues the run exactly. Returned after the last step, it changes nothing."""


def fit(options: TrainOptions | None = None, /, *, callbacks: Iterable[Callback] = (), **fields: Any) -> dict[str, Any]:
    """Train CLIP as `clip train` does: `fit(TrainOptions(out=..., synthetic=1000, steps=100))` or
    `fit(out=..., synthetic=1000, steps=100)`. Returns the final metrics (those of metrics.json) on
    the first process, {} on the others and when a callback stopped the run."""
    if options is None:
        options = TrainOptions(**fields)
    elif fields:
        options = options.replace(**fields)
    options = check(options)
    earlier = [
        name for name in (common.CHECKPOINTS, "model.safetensors") if os.path.exists(os.path.join(options.out, name))
    ]
    if earlier and not (options.resume or options.overwrite):
        # a fresh run would replace the trained model at its end and leave the old checkpoints beside its own
        raise ValueError(
            f"{options.out} holds an earlier run ({', '.join(earlier)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    if options.overwrite:
        shutil.rmtree(os.path.join(options.out, common.CHECKPOINTS), ignore_errors=True)
    return run(options, _trainer_class(options.backend)(options), list(callbacks))


def _trainer_class(backend: str) -> Callable[[TrainOptions], Backend]:
    """The backend's Trainer class; importing it starts the framework (TensorFlow: after its log level is set)."""
    import importlib

    try:
        if backend == "tf":
            from clip.train.tf import start_tensorflow

            start_tensorflow()
        return importlib.import_module(f"clip.train.{backend}").Trainer
    except ImportError as err:
        raise ImportError(f"clip train: the {backend} backend needs {REQUIREMENTS[backend]} ({err})") from None


def run(options: TrainOptions, trainer: Backend, callbacks: Sequence[Callback]) -> dict[str, Any]:
    """The loop over `trainer` (a backend's Trainer built from the same options)."""
    rank, config = trainer.rank, trainer.model.config
    first = rank == 0
    max_length = config.text_config.max_position_embeddings
    train_set, val_set, tasks = common.build_datasets(options, config.vision_config.image_size)
    order = common.make_order(train_set, options.batch_size, options.seed, trainer.world, rank)
    steps = common.total_steps(options.steps, options.epochs, len(train_set), options.batch_size, options.accum_steps)
    warmup = min(options.warmup_steps, steps)
    run_info = common.run_settings(options, steps, warmup, len(train_set), trainer.world) | common.data_settings(
        train_set
    )
    trainer.build_optimizer(steps, warmup)

    start = 0
    history: list[list[float]] = []  # [step, loss] per optimizer step
    saved: dict[str, Any] = {}  # trainer_state.json of the checkpoint resumed from
    if options.resume:
        _, saved = common.resume_from_checkpoints(options.out, trainer.load_checkpoint, common.reporter(rank))
        common.check_resume_compatible(saved["run"], run_info)
        start, history = saved["step"], saved["history"]
    fp16 = options.precision == "fp16"
    trainer.start(common.DynamicLossScale.from_state(saved.get("loss_scale")) if fp16 else None)

    progress = common.Progress(steps, start, every=options.log_every, enabled=first and not options.quiet)
    reader = common.BatchReader(
        train_set, trainer.processor, max_length, report=progress.log if first else (lambda m: None)
    )
    batches = trainer.batches(reader, order, start, steps)
    logs = common.RunLogs(options, enabled=first)
    pairs = options.batch_size * options.accum_steps
    if first and not options.quiet:
        progress.log(
            f"clip train: {trainer.describe()}, {len(train_set)} training pairs, {steps} steps of "
            f"{options.batch_size} x {options.accum_steps} pairs {trainer.placement()}, {options.precision}"
        )

    def save_checkpoint(at: int) -> str:
        staged = common.staging_dir(options.out, at)
        os.makedirs(staged, exist_ok=True)
        trainer.write_checkpoint(staged)
        scale = trainer.loss_scale_state()
        common.write_trainer_state(
            staged,
            {
                "step": at,
                "micro_step": at * options.accum_steps,
                "run": run_info,
                "history": history,
                "rng": common.python_numpy_rng_state(),
                "backend": options.backend,
                **({"loss_scale": scale} if scale is not None else {}),
            },
        )
        return common.commit_checkpoint(options.out, at)

    def evaluate(at: int) -> dict[str, Any]:
        with trainer.encoders() as (images, texts):
            metrics = evaluate_with(images, texts, val_set, tasks, options.eval_max)
        logs.metrics(at, metrics)
        return metrics

    step, stopped, t_start = start, False, time.perf_counter()
    try:
        while step < steps:
            lr = common.learning_rate(step, options.lr, warmup, steps, options.min_lr_ratio)
            loss = trainer.step(next(batches), lr)
            step += 1
            history.append([step, round(loss, 6)])
            progress.update(step, loss, lr, pairs)
            logs.step(step, {"loss": loss, "lr": lr, **trainer.scalars()}, pairs)
            last = step == steps
            info = StepInfo(step, steps, loss, lr)
            if options.save_every and (step % options.save_every == 0 or last) and first:
                info.checkpoint = save_checkpoint(step)
            if options.eval_every and step % options.eval_every == 0 and not last and first:
                info.metrics = evaluate(step)
                progress.log(
                    f"step {step}: "
                    + "  ".join(f"{k} {v:.4f}" for k, v in info.metrics.items() if isinstance(v, float))
                )
            stop = [bool(callback(info)) for callback in callbacks]  # every callback sees every step
            if any(stop) and not last:
                if info.checkpoint is None and first:
                    save_checkpoint(step)
                stopped = True
                break
    finally:
        getattr(batches, "close", lambda: None)()
        progress.close()
    elapsed = time.perf_counter() - t_start

    result: dict[str, Any] = {}
    if first and not stopped:
        metrics = evaluate(step)
        trainer.save_model(options.out, float16=options.save_dtype == "float16")
        result = finish_run(options, metrics, history, steps, start, step, elapsed, run_info)
    logs.close()
    getattr(trainer, "close", lambda: None)()
    return result


def evaluate_with(
    encode_images: EncodeFn, encode_texts: EncodeFn, val: Any, tasks: Mapping[str, tuple], max_items: int = 2000
) -> dict[str, Any]:
    """Retrieval Recall@1/5/10 and MRR on (up to max_items of) the held-out set plus zero-shot accuracies,
    given a backend's encoders: list of images -> (n, E) array, list of texts -> (n, E) array."""
    metrics: dict[str, Any] = {}
    if val is not None and len(val):
        items = [val[i] for i in range(min(len(val), max_items))]
        metrics.update(
            common.retrieval_metrics(encode_images([im for im, _ in items]), encode_texts([c for _, c in items]))
        )
        metrics["val_pairs"] = len(items)
    for name, (images, labels, targets) in tasks.items():
        metrics[name] = common.zero_shot_accuracy(encode_images(list(images)), encode_texts(list(labels)), targets)
    return metrics


def finish_run(
    options: TrainOptions,
    out_metrics: Mapping[str, Any],
    history: Sequence[Sequence[float]],
    steps: int,
    start: int,
    step: int,
    elapsed: float,
    run_info: Mapping[str, Any],
) -> dict[str, Any]:
    """metrics.json and the printed summary at the end of a run."""
    result = {
        "steps": steps,
        "final_loss": history[-1][1] if history else None,
        "train_seconds_this_run": round(elapsed, 1),
        "pairs_per_second": round((step - start) * options.batch_size * options.accum_steps / max(elapsed, 1e-9), 1),
        **out_metrics,
        "run": run_info,
    }
    atomic_write_json(os.path.join(options.out, "metrics.json"), result)
    if not options.quiet:
        print(json.dumps({k: v for k, v in result.items() if k != "run"}, indent=2))
    return result
