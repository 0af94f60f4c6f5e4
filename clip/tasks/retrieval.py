"""Image-text retrieval evaluation: Recall@K in both directions and mean reciprocal rank.

An image may have several captions (COCO has five). Text -> image: each caption's query is
answered correctly by its own image. Image -> text: an image's query is answered correctly by
any of its captions, and its rank is the rank of the best-placed one. Ranks start at 1; a tie
with a correct item counts in the query's favour (rank = 1 + the number of strictly better
wrong items).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from clip.tasks.backends import TaskError

if TYPE_CHECKING:
    from clip.tasks.backends import Encoder

DEFAULT_KS = (1, 5, 10)


def ranks_of_targets(scores: ArrayLike, targets: Sequence | np.ndarray, chunk_rows: int = 1024) -> np.ndarray:
    """1-based rank of the best-scored correct column per row.

    scores: (Q, N) similarities; targets: per row, a column index or a collection of indices.
    """
    scores = np.asarray(scores, dtype=np.float32)
    ranks = np.zeros(len(scores), np.int64)
    for start in range(0, len(scores), chunk_rows):
        block = scores[start : start + chunk_rows]
        correct = np.zeros(block.shape, bool)
        for row, target in enumerate(targets[start : start + chunk_rows]):
            correct[row, np.atleast_1d(np.asarray(target, dtype=np.int64))] = True
        best = np.where(correct, block, -np.inf).max(axis=1, keepdims=True)
        ranks[start : start + len(block)] = 1 + ((block > best) & ~correct).sum(axis=1)
    return ranks


def metrics_from_ranks(ranks: ArrayLike, ks: Iterable[int] = DEFAULT_KS) -> dict:
    ranks = np.asarray(ranks)
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["MRR"] = float(np.mean(1.0 / ranks))
    return out


def retrieval_metrics(
    image_embeds: ArrayLike,
    text_embeds: ArrayLike,
    text_to_image: ArrayLike,
    ks: Iterable[int] = DEFAULT_KS,
    chunk_rows: int = 1024,
) -> dict:
    """Recall@K and MRR, both directions, from unit embeddings.

    text_to_image[j]: the row of image_embeds that caption j describes. Returns
    {"text_to_image": {"R@1", ..., "MRR"}, "image_to_text": {...}, "images": I, "texts": T}.
    """
    image_embeds = np.asarray(image_embeds, dtype=np.float32)
    text_embeds = np.asarray(text_embeds, dtype=np.float32)
    text_to_image = np.asarray(text_to_image, dtype=np.int64)
    if len(text_to_image) != len(text_embeds):
        raise TaskError(f"{len(text_embeds)} captions but {len(text_to_image)} caption -> image links")
    if len(text_to_image) and (text_to_image.min() < 0 or text_to_image.max() >= len(image_embeds)):
        raise TaskError("a caption points at an image index outside the image embeddings")
    captions_of: list[list[int]] = [[] for _ in range(len(image_embeds))]
    for j, i in enumerate(text_to_image):
        captions_of[i].append(j)
    if any(not c for c in captions_of):
        raise TaskError("every image needs at least one caption")
    t2i, i2t = [], []
    for start in range(0, len(text_embeds), chunk_rows):
        scores = text_embeds[start : start + chunk_rows] @ image_embeds.T
        t2i.append(ranks_of_targets(scores, text_to_image[start : start + chunk_rows], chunk_rows))
    for start in range(0, len(image_embeds), chunk_rows):
        scores = image_embeds[start : start + chunk_rows] @ text_embeds.T
        i2t.append(ranks_of_targets(scores, captions_of[start : start + chunk_rows], chunk_rows))
    return {
        "text_to_image": metrics_from_ranks(np.concatenate(t2i), ks),
        "image_to_text": metrics_from_ranks(np.concatenate(i2t), ks),
        "images": len(image_embeds),
        "texts": len(text_embeds),
    }


def flat_metrics(result: dict) -> dict[str, float]:
    """retrieval_metrics' result as flat keys, "image_to_text_R@1", ..., "image_to_text_MRR", then
    "text_to_image_...": the names `clip train` logs and writes to metrics.json."""
    return {
        f"{direction}_{name}": value
        for direction in ("image_to_text", "text_to_image")
        for name, value in result[direction].items()
    }


def evaluate_captions(
    encoder: Encoder,
    captions: str,
    ks: Iterable[int] = DEFAULT_KS,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
) -> dict:
    """Embed a captions file (CSV/JSONL of image, caption rows, or a folder; see clip.data.captions)
    and compute retrieval_metrics. Unusable rows and unreadable images are skipped and listed
    under "skipped"."""
    from clip.data.captions import load_captions
    from clip.tasks.embed import embed_images, embed_texts

    try:
        dataset = load_captions(captions, verify=False, report=False)
    except FileNotFoundError as err:
        raise TaskError(str(err)) from None
    skipped = [
        {"source": where, "reason": "unusable row"}
        if ": " not in where
        else {"source": where.split(": ", 1)[0], "reason": where.split(": ", 1)[1]}
        for where in dataset.problems
    ]
    paths = list(dict.fromkeys(path for path, _ in dataset.rows))
    images = embed_images(encoder, paths, batch_size=batch_size, workers=workers, progress=progress)
    skipped += images.skipped
    row_of = {path: i for i, path in enumerate(images.sources)}
    pairs = [(row_of[path], caption) for path, caption in dataset.rows if path in row_of]
    if not pairs:
        raise TaskError(f"{captions}: no readable image with a caption")
    texts = embed_texts(encoder, [caption for _, caption in pairs], batch_size=max(batch_size, 256), progress=progress)
    result = retrieval_metrics(images.vectors, texts, [i for i, _ in pairs], ks)
    result["skipped"] = skipped
    return result
