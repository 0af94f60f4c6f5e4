"""`clip index`: one persisted index over one or more embedding directories, sized to a memory budget.

The kind is chosen by rule (auto), or named:
    fewer than FLAT_MAX_ROWS vectors -> flat (exact numpy already answers in milliseconds there)
    an HNSW graph over float16 vectors fits the budget -> hnsw f16 (recall ~0.99, sub-millisecond)
    over int8 vectors fits -> hnsw i8
    otherwise -> ivfpq with the widest PQ code that fits
usearch's HNSW was chosen by measurement (bench/bench_index.py --compare, bench/RESULTS.md): FAISS's
HNSW over float32 answered one query 2-4x faster (both are over 100x faster than exact numpy, far
past what search needs) but holds twice the bytes per vector; usearch keeps float16 or int8
vectors at the same recall and opens its file as a memory-mapped view, so under a memory budget it
fits twice to four times the vectors. IVF-PQ (autofaiss's kind of choice for tight budgets)
reached recall@10 0.53 on CLIP-like vectors without re-ranking: it is the last resort.
The search-time knob (HNSW's expansion, IVF's nprobe) is tuned at build time, as autofaiss does: the
smallest value that reaches the target recall@10 against exact search on sample queries, recorded in
index.json with the recall it got.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Sequence

import numpy as np

from clip.common.io import atomic_write_json
from clip.common.vectors import l2_normalize
from clip.index import engines
from clip.index.store import INDEX_FORMAT_VERSION, INDEX_JSON, is_index_dir, write_strings
from clip.tasks.backends import TaskError
from clip.tasks.search import topk_cosine

FLAT_MAX_ROWS = 50_000
TARGET_RECALL = 0.97
MIDPOINT_RECALL = 0.90
CALIBRATION_QUERIES = 200
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tib": 1 << 40,
}


def parse_memory(text: str | int) -> int:
    """ "4GB", "512MB", "1.5GiB" or a number of bytes -> bytes (binary units: 1 GB = 2**30)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS or float(match.group(1)) <= 0:
        raise TaskError(f"--memory takes a size such as 4GB or 512MB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def choose(count: int, dim: int, memory: int, kind: str = "auto") -> tuple[str, dict]:
    """(kind, build parameters) for `count` vectors of width `dim` within `memory` bytes."""
    flat_fits = kind in ("auto", "flat") and (kind == "flat" or count < FLAT_MAX_ROWS)
    candidates: list[tuple[str, dict]] = [("flat", {})] if flat_fits else []
    if kind in ("auto", "hnsw"):
        candidates += [
            ("hnsw", {"dtype": dtype, "connectivity": 16, "expansion_add": 128, "expansion_search": 64})
            for dtype in ("f16", "i8")
        ]
    if kind in ("auto", "ivfpq"):
        nlist = int(min(65536, max(16, 2 ** round(np.log2(4 * np.sqrt(count))), 1)))
        while nlist > 16 and nlist * 39 > count:  # k-means needs ~39 points per centroid
            nlist //= 2
        candidates += [
            ("ivfpq", {"nlist": nlist, "pq_bytes": m, "nprobe": 16}) for m in (64, 32, 16, 8) if dim % m == 0
        ]
    if not candidates:
        raise TaskError(f"unknown index kind {kind!r}; choose auto, flat, hnsw or ivfpq")
    for name, params in candidates:
        if engines.estimate_bytes(name, count, dim, params) <= memory:
            return name, params
    need = min(engines.estimate_bytes(n, count, dim, p) for n, p in candidates)
    raise TaskError(
        f"{count} x {dim} vectors need at least {need / 2**30:.2f} GiB as a {kind} index; "
        f"--memory {memory / 2**30:.2f} GiB is too small (raise it, or use --kind auto)"
    )


def embedding_state(path: str) -> str:
    """A digest of what an embedding directory holds now (its manifest, or its files' names and sizes),
    so an index can tell it was built from an older state."""
    from clip.tasks.embed import MANIFEST

    manifest = os.path.join(path, MANIFEST)
    digest = hashlib.sha256()
    if os.path.isfile(manifest):
        with open(manifest, "rb") as f:
            digest.update(f.read())
    else:
        for root, dirs, files in os.walk(path):  # in place: pruning `dirs` keeps the walk out of index/
            dirs[:] = sorted(d for d in dirs if not (root == path and d == "index"))
            for name in sorted(files):
                file = os.path.join(root, name)
                digest.update(f"{os.path.relpath(file, path)}:{os.path.getsize(file)}\n".encode())
    return digest.hexdigest()[:32]


def default_out(paths: Sequence[str]) -> str:
    if len(paths) != 1:
        raise TaskError("several embedding directories build one index: name it with --out")
    return os.path.join(paths[0], "index")


def build_index(
    paths: str | Sequence[str],
    out: str | None = None,
    memory: str | int = "4GB",
    kind: str = "auto",
    threads: int = 0,
    target_recall: float = TARGET_RECALL,
) -> dict:
    """Build the index of the embedding directories `paths` into `out` (default EMB/index); returns
    index.json's content. An existing index in `out` is replaced; any other non-empty `out` is refused."""
    from clip.index.embeddings import load_embeddings

    paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    out = os.fspath(out) if out is not None else default_out(paths)
    if os.path.exists(out) and not os.path.isdir(out):
        raise TaskError(f"{out} is a file; --out needs a directory")
    if os.path.isdir(out) and os.listdir(out) and not is_index_dir(out):
        raise TaskError(f"{out} is a non-empty directory without {INDEX_JSON}; choose an empty or new --out")
    memory = parse_memory(memory) if not isinstance(memory, int) else memory
    embeddings = load_embeddings(paths if len(paths) > 1 else paths[0])
    if not len(embeddings):
        raise TaskError(f"{' '.join(paths)}: no vectors to index")
    vectors = embeddings.vectors
    kind, params = choose(len(vectors), vectors.shape[1], memory, kind)

    started = time.perf_counter()
    if os.path.isdir(out):  # a rebuild: the old index stops being one before its files change
        os.unlink(os.path.join(out, INDEX_JSON))
        shutil.rmtree(out)
    os.makedirs(out)
    engines.build(kind, vectors, out, params, threads)
    write_strings(out, "sources", embeddings.sources)
    columns = getattr(embeddings, "columns", None) or {}
    tables = [name for name in ("captions", "urls") if columns.get(name) is not None]
    for name in tables:
        write_strings(out, name, columns[name])
    build_s = time.perf_counter() - started
    engine = engines.open_engine(kind, out, len(vectors), vectors.shape[1], params)
    recall = calibrate(kind, engine, vectors, params, target_recall)  # type: ignore[arg-type]  # flat returns before tuning
    manifest = embeddings.manifest or {}
    info = {
        "format_version": INDEX_FORMAT_VERSION,
        "kind": kind,
        "params": params,
        "count": len(vectors),
        "dim": int(vectors.shape[1]),
        "embedding_kind": embeddings.kind,
        "weights": manifest.get("weights"),
        "model": manifest.get("model"),
        "backend": manifest.get("backend"),
        "tables": tables,
        "memory_budget": memory,
        "memory_estimate": engines.estimate_bytes(kind, len(vectors), vectors.shape[1], params),
        "index_file_bytes": os.path.getsize(os.path.join(out, engines.FILES[kind])),
        "build_seconds": round(build_s, 3),
        "calibration_recall_at_10": recall,
        "built_from": [{"path": os.path.abspath(p), "state": embedding_state(p)} for p in paths],
    }
    atomic_write_json(os.path.join(out, INDEX_JSON), info)  # the commit point: an index exists from here
    info["out"] = out
    return info


def calibrate(
    kind: str, engine: engines.HnswEngine | engines.IvfPqEngine, vectors: np.ndarray, params: dict, target_recall: float
) -> float | None:
    """Tune the search-time knob to the smallest value that reaches `target_recall` (recall@10 against
    exact search) on synthetic fresh queries and MIDPOINT_RECALL on hard ones; updates `params` and
    returns the recall on the fresh ones.

    Fresh: a sample row moved within the data (along the difference of two other rows) to the cosine
    its nearest neighbour has, as far from the data as a new member would be. Hard: midpoints of
    random pairs, between clusters. Measured on CLIP-like vectors (50k): efforts 16..512 gave
    fresh-like 0.80 .. 0.99, midpoints 0.69 .. 0.98, real fresh members 0.91 .. 0.997. The rule is
    conservative on purpose: on the tests' noisy 32-d clusters neither query set alone (nor a
    midpoint bar of 0.8) kept real recall at 0.95; at 200k CLIP-like vectors it picks 1024, where 64
    already gave real queries 0.98 in a tenth of the time (bench/RESULTS.md). Rows used as their own
    queries under-tune (their own graph links are the answer).
    """
    if kind == "flat":
        return 1.0
    rng = np.random.default_rng(0)
    n = min(CALIBRATION_QUERIES, len(vectors))
    rows = np.asarray(vectors[np.sort(rng.choice(len(vectors), n, replace=False))], np.float32)

    def pick(count):
        return np.asarray(vectors[np.sort(rng.integers(0, len(vectors), count))], np.float32)

    nearest = np.clip(topk_cosine(rows, vectors, 2)[0][:, -1:], -1.0, 1.0)  # each row's nearest other row
    step = pick(n) - pick(n)
    step -= np.sum(step * rows, axis=1, keepdims=True) * rows  # orthogonal to the row
    step = l2_normalize(step, axis=1, eps=1e-12)
    fresh = nearest * rows + np.sqrt(1.0 - nearest**2) * step
    hard = pick(n) + pick(n)
    hard = l2_normalize(hard, axis=1, eps=1e-12)
    k = min(10, len(vectors))
    truths = [topk_cosine(q, vectors, k)[1] for q in (fresh, hard)]
    knob, values = {
        "hnsw": ("expansion_search", (16, 32, 64, 128, 256, 512, 1024)),
        "ivfpq": ("nprobe", (4, 8, 16, 32, 64, 128, 256, 512)),
    }[kind]
    recalls = [0.0, 0.0]
    for value in values:
        if kind == "ivfpq" and value > params["nlist"]:
            break
        params[knob] = value
        if kind == "hnsw":
            engine.index.expansion_search = value
        else:
            engine.index.nprobe = value
        recalls = [
            float(np.mean([len(set(f.tolist()) & set(t.tolist())) / k for f, t in zip(engine.topk(q, k)[1], truth)]))
            for q, truth in zip((fresh, hard), truths)
        ]
        if recalls[0] >= target_recall and recalls[1] >= MIDPOINT_RECALL:
            break
    if kind == "hnsw":  # one step of margin: real queries can crowd among near-ties more than these do
        params[knob] = min(2 * params[knob], values[-1])
    return round(recalls[0], 4)


def describe(info: dict) -> str:
    return json.dumps(
        {k: info[k] for k in ("kind", "params", "count", "dim", "build_seconds", "calibration_recall_at_10")}
    )
