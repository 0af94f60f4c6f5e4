"""Zero-shot classification accuracy on labelled images, as CLIP_benchmark measures it.

    from clip.tasks import load_encoder
    from clip.tasks.eval_zero_shot import evaluate_zero_shot
    result = evaluate_zero_shot(load_encoder(), "val/", templates="imagenet")
    result.metrics           # {"acc1", "acc5", "mean_per_class_recall"}, fractions
    result.to_benchmark_json()   # CLIP_benchmark's result shape

Each class is embedded from its prompts (clip.tasks.zero_shot's ensembling); each image is
classified by the highest cosine. Class embeddings are cached per model (keyed by the weights'
fingerprint, the templates and the class names) so repeated runs embed only the images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from clip.tasks.backends import TaskError
from clip.tasks.eval_zero_shot_data import LabelledImages, open_labelled
from clip.tasks.templates import fill, get_templates
from clip.tasks.zero_shot import ensemble_embeddings

if TYPE_CHECKING:
    from clip.tasks.backends import Encoder

TASK = "zeroshot_classification"
CHUNK = 512  # images decoded and embedded per step of a streamed dataset


@dataclasses.dataclass
class ZeroShotEvaluation:
    """metrics: acc1, acc5, mean_per_class_recall (fractions); per_class: [{class, support,
    recall}] in class order; confusion[true, predicted] counts; skipped: [{source, reason}]."""

    dataset: str
    model: str
    classnames: list
    metrics: dict
    per_class: list
    confusion: np.ndarray
    count: int
    skipped: list = dataclasses.field(default_factory=list)

    def to_benchmark_json(self, language: str = "en") -> dict:
        """CLIP_benchmark's result file: dataset, model, pretrained, task, metrics, language."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "pretrained": self.model,
            "task": TASK,
            "metrics": dict(self.metrics),
            "language": language,
        }

    def to_json(self) -> dict:
        return {
            **self.to_benchmark_json(),
            "count": self.count,
            "per_class": self.per_class,
            "confusion": self.confusion.tolist(),
            "classnames": self.classnames,
            "skipped": self.skipped,
        }


def classification_metrics(scores: ArrayLike, targets: ArrayLike, num_classes: int | None = None, k: int = 5) -> dict:
    """acc1, acc5 (top-k, k capped at the class count), mean per-class recall (over the classes
    that occur in `targets`, as sklearn's balanced accuracy), per-class recall and the confusion matrix."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets, np.int64)
    classes = scores.shape[1] if num_classes is None else num_classes
    if len(targets) == 0:
        raise TaskError("no images to evaluate")
    ranked = np.argsort(-scores, axis=1, kind="stable")
    top1 = ranked[:, 0]
    hits = (ranked[:, : min(k, classes)] == targets[:, None]).any(axis=1)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (targets, top1), 1)
    support = confusion.sum(axis=1)
    recall = np.divide(np.diag(confusion), support, out=np.zeros(classes), where=support > 0)
    return {
        "acc1": float((top1 == targets).mean()),
        f"acc{k}": float(hits.mean()),
        "mean_per_class_recall": float(recall[support > 0].mean()),
        "recall": recall,
        "support": support,
        "confusion": confusion,
    }


def cache_dir() -> str:
    """Where class embeddings are cached: $CLIP_CACHE/zero_shot, else ~/.cache/clip/zero_shot (XDG)."""
    if os.environ.get("CLIP_CACHE"):
        return os.path.join(os.environ["CLIP_CACHE"], "zero_shot")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "clip", "zero_shot")


def class_embeddings(
    encoder: Encoder, classnames: Sequence[str], templates: Sequence[str] | str | None, cache: str | None = None
) -> np.ndarray:
    """(classes, D) unit vectors, each the ensemble of its prompts; read from / written to `cache`
    (a directory; None: no cache) under a key of the weights' fingerprint, templates and names."""
    from clip.common.io import read_safetensors, write_safetensors

    templates = get_templates(templates)
    path = None
    if cache is not None and encoder.fingerprint:
        key = hashlib.sha256(
            "\x00".join([encoder.fingerprint, str(encoder.max_text_length), *templates, "\x01", *classnames]).encode(
                "utf-8"
            )
        ).hexdigest()[:32]
        path = os.path.join(cache, f"{key}.safetensors")
        if os.path.isfile(path):
            try:
                cached = read_safetensors(path, mmap=False).get("class_embeddings")
                if cached is not None and cached.shape == (len(classnames), encoder.dim):
                    return np.asarray(cached, np.float32)
            except (OSError, ValueError):  # a damaged cache file is recomputed and replaced
                pass
    prompts = [fill(template, name) for name in classnames for template in templates]
    embeds = ensemble_embeddings(encoder.embed_texts(prompts).reshape(len(classnames), len(templates), -1))
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)  # the cache directory
        write_safetensors({"class_embeddings": embeds}, path, metadata={"fingerprint": encoder.fingerprint})
    return embeds


def evaluate_zero_shot(
    encoder: Encoder,
    source: str | LabelledImages,
    templates: Sequence[str] | str | None = None,
    layout: str = "auto",
    classnames: str | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
    cache: str | None = "default",
    dataset_name: str | None = None,
) -> ZeroShotEvaluation:
    """Evaluate `encoder` on labelled images (`source`: a path, see clip.tasks.eval_zero_shot_data,
    or a LabelledImages). cache: a directory for class embeddings ("default": cache_dir(); None: off)."""
    data = (
        source
        if isinstance(source, LabelledImages)
        else open_labelled(source, layout, classnames, image_key, label_key)
    )
    classes = class_embeddings(encoder, data.classnames, templates, cache_dir() if cache == "default" else cache)
    vectors, targets, skipped = _embed_labelled(encoder, data, batch_size, workers, progress)
    skipped = [{"source": p.split(": ", 1)[0], "reason": p.split(": ", 1)[-1]} for p in data.problems] + skipped
    if not len(targets):
        raise TaskError(
            f"{data.name}: no readable labelled image" + (f"; first problem: {skipped[0]['reason']}" if skipped else "")
        )
    found = classification_metrics(vectors @ classes.T, targets, len(data.classnames))
    per_class = [
        {"class": name, "support": int(n), "recall": float(r)}
        for name, n, r in zip(data.classnames, found["support"], found["recall"])
    ]
    metrics = {key: found[key] for key in ("acc1", "acc5", "mean_per_class_recall")}
    model = encoder.model if encoder.model is not None else "default"
    return ZeroShotEvaluation(
        dataset_name or data.name,
        str(model),
        list(data.classnames),
        metrics,
        per_class,
        found["confusion"],
        len(targets),
        skipped,
    )


def _embed_labelled(encoder, data, batch_size, workers, progress):
    """(vectors (N, D), targets (N,), skipped) over the dataset's samples, a chunk at a time."""
    from clip.tasks.embed import embed_images, progress_bar

    vectors, targets, skipped = [], [], []
    chunk = []

    def flush():
        names, images, labels = zip(*chunk)
        # named by position, so that the kept rows map back to their labels even where names repeat
        found = embed_images(
            encoder, list(images), batch_size=batch_size, workers=workers, names=[str(i) for i in range(len(chunk))]
        )
        vectors.append(found.vectors)
        targets.extend(labels[int(i)] for i in found.sources)
        skipped.extend({"source": names[int(e["source"])], "reason": e["reason"]} for e in found.skipped)
        bar.update(len(chunk))
        chunk.clear()

    with progress_bar(data.count, progress, "zero-shot evaluation") as bar:
        for name, image, target in data.samples():
            if image is None:  # a sample the reader could not use: target holds the reason
                skipped.append({"source": name, "reason": target})
                bar.update(1)
                continue
            chunk.append((name, image, target))
            if len(chunk) >= CHUNK:
                flush()
        if chunk:
            flush()
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), np.float32)
    return stacked, np.asarray(targets, np.int64), skipped


def plot_confusion(evaluation: ZeroShotEvaluation, out: str) -> str:
    """The confusion matrix (rows: true class, columns: predicted; each row as fractions of its
    support) as a PNG at `out`."""
    from matplotlib.figure import Figure

    from clip.common.io import atomic_path

    counts = evaluation.confusion
    support = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    n = len(evaluation.classnames)
    side = min(24.0, max(4.0, 0.35 * n + 2.5))
    figure = Figure(figsize=(side + 1.2, side), dpi=100)
    axes = figure.add_axes((0.25, 0.25, 0.6, 0.65))
    shown = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    font = max(4, min(10, int(200 / max(n, 1))))
    axes.set_xticks(range(n), [c[:24] for c in evaluation.classnames], rotation=90, fontsize=font)
    axes.set_yticks(range(n), [c[:24] for c in evaluation.classnames], fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if n <= 30:  # the counts fit in the cells
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    axes.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=font,
                        color="white" if rates[i, j] > 0.5 else "black",
                    )
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    axes.set_title(f"{evaluation.dataset}: top-1 {evaluation.metrics['acc1']:.1%}", fontsize=10)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png")
    return out
