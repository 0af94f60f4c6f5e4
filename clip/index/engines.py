"""The three kinds of persisted index, each built from unit vectors and opened memory-mapped:

    flat    the float32 vectors as vectors.npy, searched exactly by chunked numpy (the reference)
    hnsw    a usearch HNSW graph over float16 (or int8) vectors, vectors.usearch, opened as a view
    ivfpq   a FAISS IVF-PQ index (for budgets an HNSW graph does not fit), vectors.faiss, opened
            with IO_FLAG_MMAP

Every engine answers topk(queries, k) -> (scores, ids), cosine scores best first, id -1 where fewer
than k were found, and vectors(ids) -> float32 rows (exact, or the index's stored approximation).
Opening reads headers only: the pages of the graph or the codes come in as queries touch them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from clip.common.io import atomic_path
from clip.index.store import inside, load_npy
from clip.tasks.backends import TaskError
from clip.tasks.search import topk_cosine

FILES = {"flat": "vectors.npy", "hnsw": "vectors.usearch", "ivfpq": "vectors.faiss"}
HNSW_BYTES = {"f16": 2, "i8": 1}


def estimate_bytes(kind: str, count: int, dim: int, params: dict) -> int:
    """What the index occupies in memory when all of it is paged in (the budget rule's input)."""
    if kind == "flat":
        return count * dim * 4
    if kind == "hnsw":
        # level 0 keeps 2 x connectivity 4-byte neighbour slots per node, plus a key and a level tag;
        # upper levels hold 1/connectivity of the nodes each (a few percent more)
        node = dim * HNSW_BYTES[params["dtype"]] + 2 * params["connectivity"] * 4 + 16
        return int(count * node * (1 + 1.5 / params["connectivity"]))
    if kind == "ivfpq":
        return count * (params["pq_bytes"] + 8) + params["nlist"] * dim * 4 + 256 * dim * 4
    raise TaskError(f"unknown index kind {kind!r}; choose one of {', '.join(FILES)}")


def _require(module: str):
    """Import an optional engine library, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TaskError(
            f"this index kind needs {module.split('.')[0]}, which is not installed: pip install 'clip[index]'"
        ) from None


# --------------------------------------------------------------------- building


def build(kind: str, vectors: np.ndarray, directory: str | os.PathLike, params: dict, threads: int = 0) -> None:
    """Write the ANN structure of `kind` over `vectors` (N x D float32, unit rows) into `directory`."""
    path = os.path.join(directory, FILES[kind])
    if kind == "flat":
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
    elif kind == "hnsw":
        Index = _require("usearch.index").Index
        index = Index(
            ndim=vectors.shape[1],
            metric="cos",
            dtype=params["dtype"],
            connectivity=params["connectivity"],
            expansion_add=params["expansion_add"],
            expansion_search=params["expansion_search"],
        )
        for start in range(0, len(vectors), 65536):  # in slices: bounded float32 copies of a memory-mapped input
            block = np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32)
            index.add(np.arange(start, start + len(block), dtype=np.uint64), block, threads=threads)
        with atomic_path(path) as tmp:
            index.save(tmp)
    elif kind == "ivfpq":
        faiss = _require("faiss")
        if threads:
            faiss.omp_set_num_threads(threads)
        # built from its parts, not faiss.index_factory: the factory crashes (SIGSEGV) in a process that
        # imported usearch first (faiss-cpu 1.15 + usearch 2.26, measured)
        quantizer = faiss.IndexFlatIP(vectors.shape[1])
        index = faiss.IndexIVFPQ(
            quantizer, vectors.shape[1], params["nlist"], params["pq_bytes"], 8, faiss.METRIC_INNER_PRODUCT
        )
        # polysemous training (an annealing over PQ codes for Hamming filtering, which we never use)
        # took minutes on a few thousand vectors here: off
        index.do_polysemous_training = False
        rng = np.random.default_rng(0)
        sample = min(len(vectors), max(params["nlist"] * 40, 10_000), 200_000)
        rows = np.sort(rng.choice(len(vectors), sample, replace=False))
        index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
        for start in range(0, len(vectors), 65536):
            index.add(np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32))
        index.make_direct_map()  # id -> list position, so vectors(ids) can decode a hit (dedup)
        with atomic_path(path) as tmp:
            faiss.write_index(index, tmp)
    else:
        raise TaskError(f"unknown index kind {kind!r}; choose one of {', '.join(FILES)}")


# --------------------------------------------------------------------- opening


def open_engine(kind: str, directory: str | os.PathLike, count: int, dim: int, params: dict) -> Engine:
    path = inside(directory, FILES.get(kind, "?"), "index")
    if not os.path.isfile(path):
        raise TaskError(f"{path}: missing (the index directory is incomplete); rebuild it with `clip index`")
    engines: dict[str, type[FlatEngine | HnswEngine | IvfPqEngine]] = {
        "flat": FlatEngine,
        "hnsw": HnswEngine,
        "ivfpq": IvfPqEngine,
    }
    engine = engines[kind](path, params)
    if (engine.count, engine.dim) != (count, dim):
        raise TaskError(f"{path}: holds {engine.count} x {engine.dim} vectors but index.json says {count} x {dim}")
    return engine


class FlatEngine:
    def __init__(self, path: str, params: dict) -> None:
        self.array = load_npy(path, mmap=True)
        if self.array.ndim != 2 or self.array.dtype != np.float32:
            raise TaskError(f"{path}: expected a 2-d float32 array, found {self.array.dtype} {self.array.shape}")
        self.count, self.dim = self.array.shape

    def topk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return topk_cosine(queries, self.array, k)

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.asarray(self.array[np.asarray(ids, np.int64)], np.float32)


class HnswEngine:
    def __init__(self, path: str, params: dict) -> None:
        Index = _require("usearch.index").Index
        try:
            self.index = Index.restore(path, view=True)
        except (RuntimeError, ValueError, OSError) as err:
            raise TaskError(f"{path}: not a readable usearch index ({err})") from None
        if self.index is None:
            raise TaskError(f"{path}: not a usearch index")
        self.index.expansion_search = int(params.get("expansion_search", 64))
        self.count, self.dim = len(self.index), self.index.ndim

    def topk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.count)
        # one query runs on this thread (no pool hand-off, which costs more than the search)
        matches = self.index.search(queries, k, threads=1 if len(queries) == 1 else 0)
        keys = np.asarray(matches.keys, np.int64).reshape(len(queries), -1)
        scores = (1.0 - np.asarray(matches.distances, np.float32)).reshape(len(queries), -1)
        # one query gives Matches (no counts: its keys are the found ones), several BatchMatches
        counts = np.asarray(matches.counts).reshape(-1) if hasattr(matches, "counts") else [len(matches.keys)]
        if keys.shape[1] < k:
            keys = np.pad(keys, ((0, 0), (0, k - keys.shape[1])), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, k - scores.shape[1])), constant_values=-np.inf)
        for row, found in enumerate(counts):  # usearch pads short rows with arbitrary keys
            keys[row, found:], scores[row, found:] = -1, -np.inf
        return scores, keys

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.uint64)
        return np.asarray(self.index.get(ids, dtype=np.float32), np.float32).reshape(len(ids), self.dim)


class IvfPqEngine:
    def __init__(self, path: str, params: dict) -> None:
        faiss = _require("faiss")
        try:
            self.index = faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError as err:
            raise TaskError(f"{path}: not a readable FAISS index ({str(err).splitlines()[0]})") from None
        self.index.nprobe = int(params.get("nprobe", 16))
        self.count, self.dim = self.index.ntotal, self.index.d

    def topk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        scores, ids = self.index.search(queries, min(k, self.count))
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64)

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        # PQ keeps no exact vectors: the stored codes decoded (enough to tell near duplicates apart)
        return (
            np.stack([self.index.reconstruct(int(i)) for i in np.asarray(ids, np.int64)])
            if len(ids)
            else np.zeros((0, self.dim), np.float32)
        )


# what open_engine returns: the three engines share topk, vectors, count and dim
Engine = FlatEngine | HnswEngine | IvfPqEngine
