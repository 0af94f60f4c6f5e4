"""The options of a training run: one typed dataclass that `clip.train.fit` takes and `clip train` builds
from its arguments (the defaults are the command's). Importing this module imports no framework."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

BACKENDS = ("pt", "tf", "flax")


@dataclass(kw_only=True)
class TrainOptions:
    """What to train, on what, for how long and where to write it. Every field is a `clip train` flag
    of the same name (underscores for dashes); `clip train --help` says the same at more length."""

    out: str
    """The run's directory: the final model (loadable with from_pretrained), checkpoints/, metrics.json."""
    backend: Literal["pt", "tf", "flax"] = "pt"
    """PyTorch (DDP under torchrun), TensorFlow / Keras 3 (tf.distribute) or JAX (a mesh of every device)."""
    # -- model: from scratch (config) or from a checkpoint (init), not both
    config: str | None = None
    """A named size (tiny, small, shapes, base, vit-b-32) or a config JSON file; "small" when neither is given."""
    init: str | None = None
    """A model directory or hub id to start from (with its processor)."""
    # -- data: exactly one source
    train: str | None = None
    """A CSV/JSONL of (image, caption) rows or a folder of images with .txt captions."""
    train_shards: str | None = None
    """webdataset tar shards (a folder, a glob or 'shards-{000..099}.tar'), streamed and resampled with `seed`."""
    synthetic: int | None = None
    """This many generated captioned shape images."""
    digits: bool = False
    """scikit-learn's handwritten digits."""
    val_fraction: float = 0.05
    """Held-out share of the data for evaluation."""
    workers: int = 0
    """Data loading workers: DataLoader processes (pt), decoding threads (flax), tf.data calls (tf; 0: AUTOTUNE)."""
    # -- optimization
    batch_size: int = 128
    """The global contrastive batch of one micro-step, over all processes."""
    accum_steps: int = 1
    """Micro-batches per optimizer step; the loss is over all their pairs together (GradCache)."""
    lr: float = 5e-4
    """Peak learning rate (linear warmup, then cosine decay)."""
    min_lr_ratio: float = 0.0
    """The final learning rate as a fraction of `lr`."""
    warmup_steps: int = 100
    """Linear warmup steps."""
    steps: int | None = None
    """Optimizer steps; or give `epochs` (one epoch when neither is given)."""
    epochs: float | None = None
    """Passes over the training set."""
    weight_decay: float = 0.1
    """AdamW decay of matrix weights."""
    grad_clip: float = 1.0
    """Largest global gradient norm, 0 for no clipping."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Mixed precision compute (weights and loss stay float32); fp16 with dynamic loss scaling."""
    local_loss: bool = True
    """pt/tf with several replicas: each takes its own rows against all gathered columns (the same gradients)."""
    compile: bool = False
    """Compile the step: torch.compile (pt), tf.function(jit_compile=True) (tf); flax's step is always jitted."""
    grad_checkpointing: bool = False
    """Recompute each encoder layer in backward instead of keeping its activations."""
    fused_adamw: bool = False
    """pt: torch's fused AdamW kernel (the same update, faster on CPU for a large token embedding)."""
    # -- locked image tower (LiT)
    lock_image: bool = False
    """Keep the image tower's weights fixed (train the text tower)."""
    lock_image_unlocked_groups: int = 0
    """With lock_image: train the last N groups of the image tower (embeddings, each layer, the head)."""
    lock_image_freeze_norm: bool = False
    """With lock_image: freeze the locked layers' LayerNorms too."""
    seed: int = 0
    """Seeds the initial weights, the data order and the stream of shards."""
    # -- output
    save_every: int = 500
    """A checkpoint every N steps (and at the end); 0 for only the final model."""
    save_dtype: Literal["float32", "float16"] = "float32"
    """The dtype of the saved model (checkpoints stay float32)."""
    resume: bool = False
    """Continue the run in `out` from its latest checkpoint, bit for bit."""
    overwrite: bool = False
    """Start afresh in an `out` that holds an earlier run (its checkpoints are deleted)."""
    eval_every: int = 0
    """Evaluate every N steps (always at the end)."""
    eval_max: int = 2000
    """At most this many held-out pairs for the retrieval metrics."""
    log_every: int = 10
    """A plain progress line every N steps (without tqdm)."""
    tensorboard: bool = False
    """TensorBoard event files in OUT/logs."""
    log_dir: str | None = None
    """TensorBoard event files here instead (implies tensorboard)."""
    wandb: bool = False
    """Also log to Weights & Biases."""
    wandb_project: str = "clip-train"
    """The Weights & Biases project."""
    zero_shot_eval: str | None = None
    """Labelled images (as `clip eval-zero-shot` reads them): zero-shot top-1 at every evaluation."""
    threads: int = 0
    """CPU threads of the framework (0: its own choice)."""
    quiet: bool = False
    """No progress output."""

    def replace(self, **changes: Any) -> TrainOptions:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check(options: TrainOptions) -> TrainOptions:
    """The options made complete (one epoch when neither steps nor epochs is given), or a ValueError
    naming the option that is wrong."""
    if options.backend not in BACKENDS:
        raise ValueError(f"backend {options.backend!r} is not one of {', '.join(BACKENDS)}")
    if not options.out:
        raise ValueError("out: give the run's output directory")
    if options.config is not None and options.init is not None:
        raise ValueError("give config (from scratch) or init (from a checkpoint), not both")
    if options.steps is not None and options.epochs is not None:
        raise ValueError("give steps or epochs, not both")
    if options.steps is None and options.epochs is None:
        options = options.replace(epochs=1.0)
    for name in ("batch_size", "accum_steps"):
        if getattr(options, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if options.lock_image_unlocked_groups < 0:
        raise ValueError(f"--lock-image-unlocked-groups must be 0 or more, got {options.lock_image_unlocked_groups}")
    if (options.lock_image_unlocked_groups or options.lock_image_freeze_norm) and not options.lock_image:
        raise ValueError("--lock-image-unlocked-groups and --lock-image-freeze-norm need --lock-image")
    if options.zero_shot_eval is not None and not os.path.isdir(options.zero_shot_eval):
        raise ValueError(f"--zero-shot-eval {options.zero_shot_eval}: not a folder of class sub-folders")
    if options.synthetic is not None and options.synthetic < 1:
        raise ValueError("--synthetic needs a positive number of images")
    if options.resume and not os.path.isdir(options.out):
        raise ValueError(f"--resume: {options.out} does not exist")
    if options.resume and options.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it; pass one")
    return options


class LockSettings(TypedDict):
    """--lock-image as the run's settings hold it (clip.train.locked_image.is_frozen reads it)."""

    unlocked_groups: int
    freeze_norm: bool


def lock_settings(options: TrainOptions) -> LockSettings | None:
    """The lock_image options as stored in the run's settings (None: nothing locked)."""
    if not getattr(options, "lock_image", False):
        return None
    return {
        "unlocked_groups": int(options.lock_image_unlocked_groups),
        "freeze_norm": bool(options.lock_image_freeze_norm),
    }
