"""Cosine top-k search over unit vectors: exact in numpy, or through a persisted ANN index.

    index = EmbeddingIndex(vectors, sources)          # exact, in memory
    index = EmbeddingIndex.load("photos.emb")         # its built index (photos.emb/index) when up to date
    index = EmbeddingIndex.load("photos.idx")         # a built index (`clip index ... --out photos.idx`)
    hits = index.search(encoder.embed_texts(["a red car"]), k=5)   # [[Hit(score, index, source), ...]]

The numpy path multiplies the queries with the database a chunk of rows at a time (so the
(queries x rows) score block stays small), keeps each chunk's best k with argpartition and
merges: exact results for a few million vectors with memory bounded by the chunk. (FAISS's flat
index was dropped: exact like this path, and measured slower than it on CPUs.)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from clip.tasks.backends import TaskError, l2_normalize

SCORE_BLOCK = 1 << 22  # floats in one (queries x rows) score block: 16 MB


@dataclasses.dataclass(frozen=True)
class Hit:
    score: float
    index: int
    source: object = None


def topk_cosine(
    queries: ArrayLike, vectors: ArrayLike, k: int = 10, chunk_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices), each (Q, min(k, N)): the k rows of `vectors` with the largest dot
    product with each query, best first (ties: lower index first). Rows are assumed unit length.

    chunk_rows: database rows per matmul (default: as many as keep the score block at 16 MB).
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    vectors = np.asarray(vectors)
    if k < 1:
        raise TaskError(f"top-k must be at least 1, got {k}")
    if queries.shape[1] != vectors.shape[1]:
        raise TaskError(f"queries have {queries.shape[1]} dimensions but the index has {vectors.shape[1]}")
    n, k = len(vectors), min(k, len(vectors))
    chunk_rows = chunk_rows or max(4096, SCORE_BLOCK // max(1, len(queries)))
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_indices = np.zeros((len(queries), 0), np.int64)
    for start in range(0, n, chunk_rows):
        block = vectors[start : start + chunk_rows]
        scores = np.ascontiguousarray((block.astype(np.float32, copy=False) @ queries.T).T)  # C x Q -> Q x C
        if scores.shape[1] > k:
            part = np.argpartition(scores, -k, axis=1)[:, -k:]
            scores = np.take_along_axis(scores, part, axis=1)
        else:
            part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_indices = np.concatenate([best_indices, part + start], axis=1)
        if best_scores.shape[1] > 4 * k:  # keep the running candidate set small
            best_scores, best_indices = _sorted_topk(best_scores, best_indices, k)
    return _sorted_topk(best_scores, best_indices, k)


def _sorted_topk(scores, indices, k):
    order = np.lexsort((indices, -scores), axis=1)[:, :k]  # by score descending, then index
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


class EmbeddingIndex:
    """Unit vectors plus what each one embeds, searchable by cosine similarity.

    Built from arrays it searches exactly; `load` opens a built ANN index memory-mapped (then
    `vectors` is None, `approximate` True, and `sources` a lazily read table).
    """

    def __init__(
        self, vectors: ArrayLike, sources: Sequence[str] | None = None, normalize: bool = True, kind: str | None = None
    ) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise TaskError(f"an index needs a 2-d array of vectors, got shape {vectors.shape}")
        self.vectors = l2_normalize(vectors) if normalize else vectors
        self.sources = list(sources) if sources is not None else list(range(len(vectors)))
        if len(self.sources) != len(self.vectors):
            raise TaskError(f"{len(self.vectors)} vectors but {len(self.sources)} sources")
        self.kind = kind
        self.manifest: dict = {}
        self.engine = None  # a clip.index engine when opened from a built index
        self.tables: dict = {}  # optional per-entry captions / urls
        self.note: str | None = None  # why a built index was not used, for the caller to show
        self._count, self._dim = self.vectors.shape

    @classmethod
    def load(
        cls, path: str | os.PathLike | list | tuple, exact: bool = False, kind: str | None = None
    ) -> EmbeddingIndex:
        """Open a built index directory, or an embedding directory (or a list: shards of one input).

        An embedding directory with an up-to-date built index inside (EMB/index) is searched through
        it unless `exact`; a stale one is ignored and `note` says so.
        """
        from clip.index.open import find_index, open_index

        if not exact:
            built, note = find_index(path)  # type: ignore[arg-type]  # a list is never a built index
            if built is not None:
                return open_index(cls, built)
        else:
            note = None
        from clip.index.embeddings import load_embeddings
        from clip.index.store import is_index_dir

        if not isinstance(path, (list, tuple)) and is_index_dir(path):  # type: ignore[arg-type]
            raise TaskError(f"{path} is a built index; exact search needs the embedding directories it was built from")
        embeddings = load_embeddings(path, kind)
        if not len(embeddings):
            raise TaskError(f"{path}: the embedding directory holds no vectors")
        index = cls(embeddings.vectors, embeddings.sources, normalize=False, kind=embeddings.kind)
        index.manifest = embeddings.manifest or {}
        index.tables = dict(getattr(embeddings, "columns", None) or {})
        index.note = note
        return index

    def __len__(self) -> int:
        return self._count

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def approximate(self) -> bool:
        return self.engine is not None and self.manifest.get("kind") != "flat"

    def topk(self, queries: ArrayLike, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices) arrays, (Q, min(k, N)), best first; index -1 where an ANN search found fewer."""
        queries = l2_normalize(np.atleast_2d(queries))
        if k < 1:
            raise TaskError(f"top-k must be at least 1, got {k}")
        if queries.shape[1] != self.dim:
            raise TaskError(f"queries have {queries.shape[1]} dimensions but the index has {self.dim}")
        if self.engine is not None:
            return self.engine.topk(queries, k)
        return topk_cosine(queries, self.vectors, k)

    def vectors_of(self, ids: ArrayLike) -> np.ndarray:
        """The stored vectors of entries `ids` (an ANN index's own, possibly compressed, copies)."""
        if self.engine is not None:
            return self.engine.vectors(ids)
        return self.vectors[np.asarray(ids, np.int64)]

    def search(self, queries: ArrayLike, k: int = 10) -> list[list[Hit]]:
        """For each query vector, its k nearest entries as Hit(score, index, source)."""
        scores, indices = self.topk(queries, k)
        return [
            [Hit(float(s), int(i), self.sources[int(i)]) for s, i in zip(row_scores, row_indices) if i >= 0]
            for row_scores, row_indices in zip(scores, indices)
        ]


def near_duplicates(
    vectors: ArrayLike, threshold: float = 0.95, chunk_rows: int = 4096
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine) with i < j whose cosine is at least `threshold`, highest first."""
    vectors = l2_normalize(vectors)
    pairs = []
    for start in range(0, len(vectors), chunk_rows):
        block = vectors[start : start + chunk_rows] @ vectors.T  # C x N
        rows, cols = np.nonzero(block >= threshold)
        rows = rows + start
        keep = cols > rows
        pairs += [(int(i), int(j), float(block[i - start, j])) for i, j in zip(rows[keep], cols[keep])]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))
