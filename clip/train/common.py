"""Framework-neutral training pieces that every backend's trainer shares.

- `learning_rate(step, ...)`: linear warmup then cosine decay, a pure function of the step, so
  resuming needs no scheduler state.
- `applies_weight_decay(name, table)`: the decay flag of a parameter's row in the parameter table.
- `LOGIT_SCALE_MAX`: logit_scale is clamped to [0, ln 100] after every step (CLIP paper).
- `retrieval_metrics` (clip.tasks.retrieval's, under flat keys) and `zero_shot_accuracy`: evaluation in numpy.
- `DataOrder`: which dataset indices each rank reads at each micro-step (seeded per epoch).
- Checkpoint layout and resuming (clip.train.checkpoints, re-exported here).
- `Progress`: a tqdm bar when tqdm is installed, plain lines otherwise.
- `SIZES` / `build_config_dict`: named small model sizes for training from scratch (clip.train.sizes,
  re-exported here).
- `is_frozen`: which image-tower parameters --lock-image keeps fixed (LiT), by their parameter-table
  rows (clip.train.locked_image, re-exported here).
- Datasets, the batch reader and the chunked evaluation encoders (clip.train.inputs, re-exported here).

The loop that uses them is clip.train.loop; a backend (train/pt.py, train/tf.py, train/flax.py)
owns only the model, the optimizer, the step and the I/O of its own state.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO

import numpy as np
from numpy.typing import ArrayLike

from clip.common.params import Param
from clip.common.vectors import l2_normalize
from clip.train.checkpoints import (  # noqa: F401 - re-exported: the trainers use common.<name>
    CHECKPOINTS,
    LATEST,
    MODEL_FILE,
    RESUME_KEYS,
    TRAINER_STATE,
    check_resume_compatible,
    checkpoint_dir,
    commit_checkpoint,
    latest_checkpoint,
    python_numpy_rng_state,
    read_array_list,
    read_model_state,
    read_trainer_state,
    resume_from_checkpoints,
    set_python_numpy_rng_state,
    staging_dir,
    write_array_list,
    write_trainer_state,
)
from clip.train.inputs import BatchReader, build_datasets, build_model_and_processor, build_processor, chunked_encoders  # noqa: F401 - re-exported
from clip.train.locked_image import image_group, image_tower_groups, is_frozen  # noqa: F401 - re-exported
from clip.train.logs import RunLogs, reporter  # noqa: F401 - re-exported
from clip.train.options import TrainOptions, lock_settings
from clip.train.sizes import SIZES, build_config_dict  # noqa: F401 - re-exported

LOGIT_SCALE_MAX = math.log(100.0)  # CLIP clamps the learned temperature at 100


# -- schedule --------------------------------------------------------------------------------------
def learning_rate(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """The learning rate for optimizer step `step` (0-based): linear warmup, then cosine decay.

    Warmup: base_lr * (step + 1) / warmup_steps for step < warmup_steps (the first step is not
    wasted at lr 0). Then cosine from base_lr down to base_lr * min_lr_ratio at total_steps.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    floor = base_lr * min_lr_ratio
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# -- weight decay ----------------------------------------------------------------------------------
def applies_weight_decay(name: str, table: Mapping[str, Param]) -> bool:
    """Whether canonical parameter `name` gets weight decay: the decay flag of its row in `table`
    (clip.common.params.parameter_table). Only matrix weights of linear and convolution layers
    decay; biases, LayerNorm gains, embeddings (token, position, class) and logit_scale do not, as
    in CLIP and open_clip's recipes.
    """
    return table[name].decay


def split_weight_decay(names: Iterable[str], table: Mapping[str, Param]) -> tuple[list[str], list[str]]:
    """(names with decay, names without), each in the order given."""
    listed = list(names)
    return [n for n in listed if applies_weight_decay(n, table)], [
        n for n in listed if not applies_weight_decay(n, table)
    ]


# -- float16 loss scaling --------------------------------------------------------------------------
class DynamicLossScale:
    """float16's dynamic loss scale, the rule every backend follows (as torch's GradScaler and Keras'
    LossScaleOptimizer): the loss is multiplied by `scale` before differentiation and the gradients
    divided by it; a step whose gradients are not finite is skipped and the scale halved; after
    GROWTH_INTERVAL finite steps in a row it doubles. Its state goes into trainer_state.json."""

    INITIAL = 2.0**15
    GROWTH_INTERVAL = 2000
    FACTOR = 2.0

    def __init__(self, scale: float = INITIAL, good_steps: int = 0) -> None:
        self.scale, self.good_steps = float(scale), int(good_steps)

    def update(self, finite: bool) -> bool:
        """Record one step's gradients; True when the optimizer should apply them."""
        if not finite:
            self.scale, self.good_steps = max(self.scale / self.FACTOR, 1.0), 0
            return False
        self.good_steps += 1
        if self.good_steps >= self.GROWTH_INTERVAL:
            self.scale, self.good_steps = self.scale * self.FACTOR, 0
        return True

    def state(self) -> dict[str, float]:
        return {"scale": self.scale, "good_steps": self.good_steps}

    @classmethod
    def from_state(cls, state: object) -> DynamicLossScale:
        if not isinstance(state, dict):
            return cls()  # a checkpoint written before float16 was used
        return cls(state.get("scale", cls.INITIAL), state.get("good_steps", 0))


# -- metrics ---------------------------------------------------------------------------------------
def recall_at_k(similarity: ArrayLike, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Recall@K for a square query x candidate similarity matrix where query i matches candidate i,
    from the ranks of clip.tasks.retrieval (a tie with the match counts in the query's favour)."""
    from clip.tasks.retrieval import ranks_of_targets

    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"recall_at_k needs a square similarity matrix, got shape {sim.shape}")
    ranks = ranks_of_targets(sim, np.arange(len(sim)))
    return {k: float((ranks <= k).mean()) for k in ks}


def retrieval_metrics(
    image_embeds: ArrayLike, text_embeds: ArrayLike, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Image->text and text->image Recall@K and MRR of paired embeddings (row i of each is a pair), by
    clip.tasks.retrieval.retrieval_metrics (what `clip eval-retrieval` reports), under flat keys
    ("image_to_text_R@1", ..., "text_to_image_MRR")."""
    from clip.tasks.retrieval import flat_metrics
    from clip.tasks.retrieval import retrieval_metrics as paired_metrics

    # float64 and no floor under the norm, as these metrics have always been computed
    images = l2_normalize(image_embeds, eps=0.0, dtype=np.float64)
    texts = l2_normalize(text_embeds, eps=0.0, dtype=np.float64)
    return flat_metrics(paired_metrics(images, texts, np.arange(len(texts)), ks))


def zero_shot_accuracy(image_embeds: ArrayLike, label_embeds: ArrayLike, targets: ArrayLike) -> float:
    """Top-1 accuracy of classifying each image as its most similar label."""
    sim = (
        l2_normalize(image_embeds, eps=0.0, dtype=np.float64) @ l2_normalize(label_embeds, eps=0.0, dtype=np.float64).T
    )
    return float((sim.argmax(axis=1) == np.asarray(targets)).mean())


# -- data order ------------------------------------------------------------------------------------
class DataOrder:
    """Dataset indices per micro-step: a seeded permutation per epoch, cut into global batches.

    Micro-step m reads the global batch m % batches_per_epoch of epoch m // batches_per_epoch; rank r
    of `world` takes the r-th contiguous slice of it. A run resumed at micro-step m reads exactly
    what an uninterrupted run would, whatever the number of loader workers.
    """

    def __init__(self, dataset_size: int, global_batch: int, seed: int, world: int = 1, rank: int = 0) -> None:
        if global_batch % world:
            raise ValueError(f"--batch-size {global_batch} must be divisible by the number of processes ({world})")
        if dataset_size < global_batch:
            raise ValueError(f"the training set has {dataset_size} items, fewer than one batch ({global_batch})")
        self.size, self.batch, self.seed, self.world, self.rank = dataset_size, global_batch, seed, world, rank
        self.batches_per_epoch = dataset_size // global_batch  # the last partial batch is dropped
        self._epoch: int | None = None
        self._perm: np.ndarray | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return self._perm

    def global_indices(self, micro_step: int) -> np.ndarray:
        epoch, position = divmod(micro_step, self.batches_per_epoch)
        return self.permutation(epoch)[position * self.batch : (position + 1) * self.batch]

    def local_indices(self, micro_step: int) -> list[int]:
        per_rank = self.batch // self.world
        return self.global_indices(micro_step)[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()

    def batches(self, start: int, stop: int) -> Iterator[list[int]]:
        """Local index lists for micro-steps start..stop-1."""
        for m in range(start, stop):
            yield self.local_indices(m)


def make_order(dataset: Any, global_batch: int, seed: int, world: int = 1, rank: int = 0) -> DataOrder:
    """The data order of a training set: DataOrder's seeded epochs, or a stream's own order (shards.StreamOrder)."""
    if getattr(dataset, "unbounded", False):
        from clip.train.shards import StreamOrder

        return StreamOrder(len(dataset), global_batch, world, rank)
    return DataOrder(len(dataset), global_batch, seed, world, rank)


def total_steps(steps: int | None, epochs: float | None, dataset_size: int, global_batch: int, accum_steps: int) -> int:
    """Optimizer steps from --steps, or from --epochs over a dataset."""
    if steps is not None:
        if steps <= 0:
            raise ValueError(f"--steps must be positive, got {steps}")
        return int(steps)
    if epochs is None or epochs <= 0:
        raise ValueError("give --steps or a positive --epochs")
    per_epoch = dataset_size // global_batch / accum_steps
    return max(1, int(math.ceil(epochs * per_epoch)))


# -- progress --------------------------------------------------------------------------------------
class Progress:
    """Step progress with loss, lr and throughput: a tqdm bar on a terminal when tqdm is installed,
    else one plain line every `every` steps (and at the end)."""

    def __init__(
        self, total: int, start: int = 0, every: int = 10, enabled: bool = True, stream: TextIO | None = None
    ) -> None:
        self.total, self.step, self.every, self.enabled = total, start, max(1, every), enabled
        self.stream = stream or sys.stderr
        self._bar = None
        self._t0, self._pairs = time.perf_counter(), 0
        if enabled and self.stream.isatty():
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, initial=start, file=self.stream, dynamic_ncols=True, unit="step")
            except ImportError:
                pass

    def update(self, step: int, loss: float, lr: float, pairs: int) -> None:
        """Record optimizer step `step` (1-based count done) that consumed `pairs` image-text pairs."""
        self._pairs += pairs
        elapsed = max(1e-9, time.perf_counter() - self._t0)
        fields = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "pairs/s": f"{self._pairs / elapsed:.1f}"}
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(step - self.step)
            self._bar.set_postfix(fields, refresh=False)
        elif step % self.every == 0 or step == self.total:
            print(
                f"step {step}/{self.total}  " + "  ".join(f"{k} {v}" for k, v in fields.items()),
                file=self.stream,
                flush=True,
            )
        self.step = step

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_settings(args: TrainOptions, steps: int, warmup: int, dataset_size: int, world: int) -> dict[str, Any]:
    """The settings stored in checkpoints and compared by check_resume_compatible.

    "accumulation" and "lock_image" appear only when used, so the checkpoints of earlier versions
    (which accumulated each micro-batch as its own contrastive batch) resume when --accum-steps is 1
    and are refused with the reason otherwise.
    """
    settings: dict[str, Any] = {
        "batch_size": args.batch_size,
        "accum_steps": args.accum_steps,
        "lr": args.lr,
        "warmup_steps": warmup,
        "weight_decay": args.weight_decay,
        "grad_clip": args.grad_clip,
        "precision": args.precision,
        "seed": args.seed,
        "total_steps": steps,
        "dataset_size": dataset_size,
        "world_size": world,
    }
    if args.accum_steps > 1:
        settings["accumulation"] = "whole-batch"  # the loss over all accum_steps x batch_size pairs (GradCache)
    if lock_settings(args) is not None:
        settings["lock_image"] = lock_settings(args)
    return settings


def data_settings(train_set: Any) -> dict[str, Any]:
    """What a resume must find unchanged about the training data beyond its size: a stream's shards."""
    return {"shards": train_set.fingerprint()} if hasattr(train_set, "fingerprint") else {}
