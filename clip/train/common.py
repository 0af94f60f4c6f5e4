"""Framework-neutral training pieces that every backend's trainer shares.

- `learning_rate(step, ...)`: linear warmup then cosine decay, a pure function of the step, so
  resuming needs no scheduler state.
- `applies_weight_decay(name)`: the decay rule by canonical parameter name.
- `LOGIT_SCALE_MAX`: logit_scale is clamped to [0, ln 100] after every step (CLIP paper).
- `retrieval_metrics` and `zero_shot_accuracy`: evaluation in numpy.
- `DataOrder`: which dataset indices each rank reads at each micro-step (seeded per epoch).
- Checkpoint layout (`checkpoint_dir`, `write_trainer_state`, `latest_checkpoint`, ...).
- `Progress`: a tqdm bar when tqdm is installed, plain lines otherwise.
- `SIZES` / `build_config`: named small model sizes for training from scratch.

A backend trainer (train/pt.py, train/tf.py, train/flax.py) owns only the model,
the optimizer, the step and the saving of its own optimizer state.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time

import numpy as np

from clip.common.io import atomic_write_json, read_json_object

LOGIT_SCALE_MAX = math.log(100.0)  # CLIP clamps the learned temperature at 100

# -- model sizes -----------------------------------------------------------------------------------
# Small sizes for training from scratch with the real CLIP vocabulary (49,408 tokens: the token
# embedding dominates the parameter count at these widths). "vit-b-32" is the paper's base model.
SIZES = {
    "tiny": {
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16},
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        "projection_dim": 32,
    },
    "small": {
        "text": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 24},
        "vision": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 3, "num_attention_heads": 4, "image_size": 48, "patch_size": 8},
        "projection_dim": 64,
    },
    # the embedded default model (clip/models/default): "small" with 16 text positions (the synthetic
    # captions need at most 13 tokens), which cuts the text tower's work by a third
    "shapes": {
        "text": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 16},
        "vision": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 3, "num_attention_heads": 4, "image_size": 48, "patch_size": 8},
        "projection_dim": 64,
    },
    "base": {
        "text": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4, "max_position_embeddings": 32},
        "vision": {"hidden_size": 192, "intermediate_size": 768, "num_hidden_layers": 6, "num_attention_heads": 6, "image_size": 96, "patch_size": 8},
        "projection_dim": 128,
    },
    "vit-b-32": {"text": {}, "vision": {}, "projection_dim": 512},
}


def build_config_dict(size_or_path: str) -> dict:
    """A CLIPConfig dict from a name in SIZES or a JSON file (a full config.json or the same layout)."""
    if size_or_path in SIZES:
        spec = SIZES[size_or_path]
        return {"text_config": dict(spec["text"]), "vision_config": dict(spec["vision"]), "projection_dim": spec["projection_dim"]}
    if not os.path.isfile(size_or_path):
        raise ValueError(f"--config {size_or_path!r} is neither a size ({', '.join(SIZES)}) nor a JSON file")
    return read_json_object(size_or_path)


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
_NO_DECAY_MODULES = ("token_embedding", "position_embedding")


def applies_weight_decay(name: str) -> bool:
    """Whether canonical parameter `name` gets weight decay: only matrix weights of linear and
    convolution layers do. Biases, LayerNorm gains, embeddings (token, position, class) and
    logit_scale do not, as in CLIP and open_clip's recipes.
    """
    parts = name.split(".")
    leaf = parts[-1]
    module = parts[-2] if len(parts) > 1 else ""
    if leaf == "bias" or name == "logit_scale" or leaf == "class_embedding":
        return False
    if module in _NO_DECAY_MODULES or "layer_norm" in module or module in ("pre_layrnorm", "post_layernorm"):
        return False
    return True


def split_weight_decay(names) -> tuple[list[str], list[str]]:
    """(names with decay, names without), each in the order given."""
    names = list(names)
    return [n for n in names if applies_weight_decay(n)], [n for n in names if not applies_weight_decay(n)]


# -- metrics ---------------------------------------------------------------------------------------
def _normalize(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def recall_at_k(similarity, ks=(1, 5, 10)) -> dict[int, float]:
    """Recall@K for a square query x candidate similarity matrix where query i matches candidate i.

    A query counts as found at K when fewer than K candidates score strictly higher than its match
    (ties resolved in the query's favour).
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"recall_at_k needs a square similarity matrix, got shape {sim.shape}")
    correct = np.diag(sim)[:, None]
    rank = (sim > correct).sum(axis=1)  # 0 = best
    return {k: float((rank < k).mean()) for k in ks}


def retrieval_metrics(image_embeds, text_embeds, ks=(1, 5, 10)) -> dict[str, float]:
    """Image->text and text->image Recall@K for paired embeddings (row i of each is a pair)."""
    sim = _normalize(image_embeds) @ _normalize(text_embeds).T  # I,T
    out = {}
    for k, v in recall_at_k(sim, ks).items():
        out[f"image_to_text_R@{k}"] = v
    for k, v in recall_at_k(sim.T, ks).items():
        out[f"text_to_image_R@{k}"] = v
    return out


def zero_shot_accuracy(image_embeds, label_embeds, targets) -> float:
    """Top-1 accuracy of classifying each image as its most similar label."""
    sim = _normalize(image_embeds) @ _normalize(label_embeds).T
    return float((sim.argmax(axis=1) == np.asarray(targets)).mean())


# -- data order ------------------------------------------------------------------------------------
class DataOrder:
    """Dataset indices per micro-step: a seeded permutation per epoch, cut into global batches.

    Micro-step m reads the global batch m % batches_per_epoch of epoch m // batches_per_epoch; rank r
    of `world` takes the r-th contiguous slice of it. A run resumed at micro-step m reads exactly
    what an uninterrupted run would, whatever the number of loader workers.
    """

    def __init__(self, dataset_size: int, global_batch: int, seed: int, world: int = 1, rank: int = 0):
        if global_batch % world:
            raise ValueError(f"--batch-size {global_batch} must be divisible by the number of processes ({world})")
        if dataset_size < global_batch:
            raise ValueError(f"the training set has {dataset_size} items, fewer than one batch ({global_batch})")
        self.size, self.batch, self.seed, self.world, self.rank = dataset_size, global_batch, seed, world, rank
        self.batches_per_epoch = dataset_size // global_batch  # the last partial batch is dropped
        self._epoch, self._perm = None, None

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return self._perm

    def global_indices(self, micro_step: int) -> np.ndarray:
        epoch, position = divmod(micro_step, self.batches_per_epoch)
        return self.permutation(epoch)[position * self.batch : (position + 1) * self.batch]

    def local_indices(self, micro_step: int) -> list[int]:
        per_rank = self.batch // self.world
        return self.global_indices(micro_step)[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()

    def batches(self, start: int, stop: int):
        """Local index lists for micro-steps start..stop-1."""
        for m in range(start, stop):
            yield self.local_indices(m)


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


# -- checkpoints -----------------------------------------------------------------------------------
# OUT/
#   config.json, model.safetensors, preprocessor_config.json, tokenizer files  <- the model, loadable
#   metrics.json                                                               <- evaluation results
#   checkpoints/step-00000100/                                                 <- resumable state
#     model.safetensors        canonical names, float32 (exact)
#     optimizer.<backend>      the backend's optimizer state in its own format
#     rng.<backend>            the backend's RNG states
#     trainer_state.json       step, micro_step, args, rng of numpy/python, loss history
#   checkpoints/latest         name of the newest complete checkpoint (written last, atomically)
CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.json"


def checkpoint_dir(out: str, step: int) -> str:
    return os.path.join(out, CHECKPOINTS, f"step-{step:08d}")


def staging_dir(out: str, step: int) -> str:
    """Where a checkpoint is written before `commit_checkpoint` renames it into place."""
    return os.path.join(out, CHECKPOINTS, f".step-{step:08d}.partial")


def commit_checkpoint(out: str, step: int, keep: int = 2) -> str:
    """Rename the staged checkpoint into place, point `latest` at it, and prune old ones.

    A crash before the pointer is written leaves the previous checkpoint as `latest`.
    """
    staged, final = staging_dir(out, step), checkpoint_dir(out, step)
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.replace(staged, final)
    with open(os.path.join(out, CHECKPOINTS, ".latest.tmp"), "w", encoding="utf-8") as f:
        f.write(os.path.basename(final) + "\n")
    os.replace(os.path.join(out, CHECKPOINTS, ".latest.tmp"), os.path.join(out, CHECKPOINTS, LATEST))
    existing = sorted(d for d in os.listdir(os.path.join(out, CHECKPOINTS)) if d.startswith("step-"))
    for old in existing[: max(0, len(existing) - keep)]:
        shutil.rmtree(os.path.join(out, CHECKPOINTS, old), ignore_errors=True)
    return final


def latest_checkpoint(out: str) -> str | None:
    pointer = os.path.join(out, CHECKPOINTS, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding="utf-8") as f:
        path = os.path.join(out, CHECKPOINTS, f.read().strip())
    return path if os.path.isdir(path) else None


def write_trainer_state(directory: str, state: dict):
    atomic_write_json(os.path.join(directory, TRAINER_STATE), state)


def read_trainer_state(directory: str) -> dict:
    return read_json_object(os.path.join(directory, TRAINER_STATE))


# Arguments that must match for --resume to continue the same run bit for bit.
RESUME_KEYS = ("batch_size", "accum_steps", "lr", "warmup_steps", "weight_decay", "grad_clip", "precision", "seed",
               "total_steps", "dataset_size", "world_size")


def check_resume_compatible(saved: dict, current: dict):
    changed = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in RESUME_KEYS if saved.get(k) != current.get(k)]
    if changed:
        raise ValueError("--resume: the run's settings differ from the checkpoint's, so it cannot continue it exactly:\n  " + "\n  ".join(changed))


def python_numpy_rng_state() -> dict:
    import random

    state = random.getstate()
    return {"python": [state[0], list(state[1]), state[2]], "numpy": _numpy_state()}


def _numpy_state():
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]


def set_python_numpy_rng_state(state: dict):
    import random

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, g = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, g))


# -- progress --------------------------------------------------------------------------------------
class Progress:
    """Step progress with loss, lr and throughput: a tqdm bar on a terminal when tqdm is installed,
    else one plain line every `every` steps (and at the end)."""

    def __init__(self, total: int, start: int = 0, every: int = 10, enabled: bool = True, stream=None):
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

    def update(self, step: int, loss: float, lr: float, pairs: int):
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
            print(f"step {step}/{self.total}  " + "  ".join(f"{k} {v}" for k, v in fields.items()), file=self.stream, flush=True)
        self.step = step

    def log(self, message: str):
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()


# -- data ------------------------------------------------------------------------------------------
def build_datasets(args, image_size: int) -> tuple:
    """(train set, held-out set or None, zero-shot tasks) from the parsed `clip train` arguments.

    Zero-shot tasks: {name: (images, label texts, target label index per image)} evaluated with the
    retrieval metrics; the synthetic set measures colour x shape labels on combinations seen in
    training and on the held-out ones, the digits set its ten digit labels.
    """
    from clip import data

    tasks = {}
    sources = [bool(args.train), bool(args.synthetic), bool(args.digits)]
    if sum(sources) != 1:
        raise ValueError("give exactly one data source: --train FILE_OR_DIR, --synthetic N or --digits")
    if args.synthetic:
        # held-out images come from their own seed: no image is shared with the training set
        train = data.SyntheticShapes(args.synthetic, seed=args.seed, image_size=image_size)
        n_val = int(round(args.synthetic * args.val_fraction))
        val = data.SyntheticShapes(n_val, seed=args.seed + 1_000_003, image_size=image_size) if n_val else None
        seen = [c for c in data.zero_shot_labels()[1] if c not in data.HELD_OUT_COMBOS]
        tasks["zero_shot_seen_combos"] = data.zero_shot_set(10 * len(seen), seed=args.seed + 2_000_003, image_size=image_size, combos=seen)
        tasks["zero_shot_held_out_combos"] = data.zero_shot_set(
            40 * len(data.HELD_OUT_COMBOS), seed=args.seed + 3_000_003, image_size=image_size, combos=data.HELD_OUT_COMBOS)
        return train, val, tasks
    full = data.DigitsDataset(image_size=image_size) if args.digits else data.load_captions(args.train)
    train_idx, val_idx = data.split_indices(len(full), args.val_fraction, args.seed)
    val = data.Subset(full, val_idx) if len(val_idx) else None
    if args.digits and val is not None:
        images = [val[i][0] for i in range(len(val))]
        tasks["zero_shot_digits"] = (images, full.zero_shot_labels(), full.labels[val_idx])
    return data.Subset(full, train_idx), val, tasks


# -- shared by the tf and flax trainers ------------------------------------------------------------
def build_processor(config):
    """The processor of a model trained from scratch: images at the config's size, CLIP's tokenizer."""
    from clip.common.image_processor import CLIPImageProcessor
    from clip.common.processor import CLIPProcessor
    from clip.common.tokenizer import CLIPTokenizerFast

    size = config.vision_config.image_size
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return CLIPProcessor(image_processor, CLIPTokenizerFast(model_max_length=config.text_config.max_position_embeddings))


class BatchReader:
    """Dataset indices -> a numpy batch {"input_ids", "attention_mask" (int32), "pixel_values" (float32 NCHW)}.

    An item that cannot be read (a file gone or corrupted since the dataset was listed) is reported
    once and replaced by the next readable item, deterministically, so that a run goes on and a
    resumed run reads exactly what an uninterrupted one did. Safe to call from several threads.
    """

    def __init__(self, dataset, processor, max_length: int, report=None):
        import threading
        import warnings

        self.dataset, self.processor, self.max_length = dataset, processor, max_length
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not reentrant across threads
        self.report = report or (lambda message: warnings.warn(message, stacklevel=2))
        self.problems: dict[int, str] = {}

    def item(self, index: int):
        size = len(self.dataset)
        for offset in range(size):
            j = (index + offset) % size
            try:
                return self.dataset[j]
            except Exception as err:  # noqa: BLE001 - any unreadable row is skipped, whatever the reason
                if j not in self.problems:
                    self.problems[j] = f"{type(err).__name__}: {err}"
                    self.report(f"clip train: item {j} is unreadable ({self.problems[j]}); using the next readable item")
        raise ValueError("clip train: no item of the training set can be read")

    def __call__(self, indices) -> dict:
        images, captions = zip(*(self.item(int(i)) for i in indices))
        return self.encode(list(images), list(captions))

    def encode(self, images, captions) -> dict:
        pixels = self.processor.image_processor(images, return_tensors="np")["pixel_values"]
        with self._tokenizer_lock:
            text = self.processor.tokenizer(captions, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="np")
        return {
            "input_ids": np.asarray(text["input_ids"], dtype=np.int32),
            "attention_mask": np.asarray(text["attention_mask"], dtype=np.int32),
            "pixel_values": np.ascontiguousarray(pixels, dtype=np.float32),
        }


def run_settings(args, steps: int, warmup: int, dataset_size: int, world: int) -> dict:
    """The settings stored in checkpoints and compared by check_resume_compatible (pt's run_info)."""
    return {"batch_size": args.batch_size, "accum_steps": args.accum_steps, "lr": args.lr, "warmup_steps": warmup,
            "weight_decay": args.weight_decay, "grad_clip": args.grad_clip, "precision": args.precision,
            "seed": args.seed, "total_steps": steps, "dataset_size": dataset_size, "world_size": world}


def evaluate_with(encode_images, encode_texts, val, tasks, max_items: int = 2000) -> dict:
    """Retrieval Recall@1/5/10 on (up to max_items of) the held-out set plus zero-shot accuracies,
    given a backend's encoders: list of images -> (n, E) array, list of texts -> (n, E) array."""
    metrics = {}
    if val is not None and len(val):
        items = [val[i] for i in range(min(len(val), max_items))]
        metrics.update(retrieval_metrics(encode_images([im for im, _ in items]), encode_texts([c for _, c in items])))
        metrics["val_pairs"] = len(items)
    for name, (images, labels, targets) in tasks.items():
        metrics[name] = zero_shot_accuracy(encode_images(list(images)), encode_texts(list(labels)), targets)
    return metrics


def finish_run(args, out_metrics: dict, history, steps: int, start: int, step: int, elapsed: float, run_info: dict) -> dict:
    """metrics.json and the printed summary at the end of a run, as the pt trainer writes them."""
    from clip.common.io import atomic_write_json

    result = {"steps": steps, "final_loss": history[-1][1] if history else None, "train_seconds_this_run": round(elapsed, 1),
              "pairs_per_second": round((step - start) * args.batch_size * args.accum_steps / max(elapsed, 1e-9), 1),
              **out_metrics, "run": run_info}
    atomic_write_json(os.path.join(args.out, "metrics.json"), result)
    if not args.quiet:
        print(json.dumps({k: v for k, v in result.items() if k != "run"}, indent=2))
    return result
