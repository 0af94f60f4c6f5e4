"""Zero-shot image classification with prompt ensembling, as in the CLIP paper.

    classifier = ZeroShotClassifier(load_encoder(), ["cat", "dog"], templates="imagenet")
    result = classifier.classify(["a.jpg", "b.jpg"])
    result.probs            # (images, labels), rows sum to 1
    result.top(3)           # per image: [(label, probability), ...] best first

Each label's embedding is the ensemble of its prompts: every template filled with the label is
embedded and L2-normalized, the unit vectors are averaged, and the mean is normalized again
(Radford et al. 2021, section 3.1.4). Probabilities are softmax(exp(logit_scale) * cosine).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from clip.tasks.backends import Encoder, TaskError, l2_normalize, load_encoder
from clip.tasks.templates import fill, get_templates


def ensemble_embeddings(prompt_embeds: np.ndarray) -> np.ndarray:
    """(labels, templates, D) prompt embeddings -> (labels, D) class embeddings."""
    return l2_normalize(l2_normalize(prompt_embeds).mean(axis=1))


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclasses.dataclass
class ZeroShotResult:
    """probs[i, c]: probability of labels[c] for sources[i]; skipped: images that could not be read."""

    probs: np.ndarray
    labels: list
    sources: list
    skipped: list = dataclasses.field(default_factory=list)

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        k = min(k, len(self.labels))
        order = np.argsort(-self.probs, axis=1, kind="stable")[:, :k]
        return [[(self.labels[c], float(row[c])) for c in cols] for row, cols in zip(self.probs, order)]

    def to_json(self, k: int = 5) -> list[dict]:
        return [
            {"image": source, "labels": [{"label": label, "probability": p} for label, p in top]}
            for source, top in zip(self.sources, self.top(k))
        ]


class ZeroShotClassifier:
    """Classify images among `labels`, each label described by `templates` (see get_templates:
    "default" ("This is a photo of {}.", transformers' pipeline default), "label" (the label text as
    is), "simple", "imagenet", a file, or a list)."""

    def __init__(
        self,
        encoder: Encoder,
        labels: Iterable[str],
        templates: Sequence[str] | str | None = None,
        batch_size: int = 256,
    ) -> None:
        labels = [str(label).strip() for label in labels]
        if not labels or not all(labels):
            raise TaskError("zero-shot classification needs at least one non-empty label")
        if len(set(labels)) != len(labels):
            raise TaskError(f"labels repeat: {sorted({x for x in labels if labels.count(x) > 1})}")
        self.encoder, self.labels = encoder, labels
        self.templates = get_templates(templates)
        prompts = [fill(template, label) for label in labels for template in self.templates]
        prompt_embeds = encoder.embed_texts(prompts, batch_size=batch_size)
        self.class_embeddings = ensemble_embeddings(prompt_embeds.reshape(len(labels), len(self.templates), -1))

    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        labels: Iterable[str] = (),
        templates: Sequence[str] | str | None = None,
        backend: str = "pt",
        **kwargs: Any,
    ) -> ZeroShotClassifier:
        return cls(load_encoder(model, backend), labels, templates, **kwargs)

    def logits(self, image_embeds: ArrayLike) -> np.ndarray:
        """(N, labels) scaled cosine similarities for unit image embeddings."""
        return self.encoder.scale * (np.asarray(image_embeds, np.float32) @ self.class_embeddings.T)

    def classify(self, images: Iterable, batch_size: int = 64, progress: bool = False) -> ZeroShotResult:
        """Image paths or PIL images -> ZeroShotResult (unreadable images are skipped and listed)."""
        from clip.tasks.embed import embed_images

        embeds = embed_images(self.encoder, images, batch_size=batch_size, progress=progress)
        return ZeroShotResult(softmax(self.logits(embeds.vectors)), self.labels, embeds.sources, embeds.skipped)
