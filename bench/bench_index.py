"""ANN index proof: recall@10 against exact search, batch-1 latency against the exact numpy path,
memory against the budget, build and open time; and the measurement that chose usearch HNSW.

    python bench/bench_index.py                     # 1M x 512 through `clip index`'s build_index
    python bench/bench_index.py --n 200000 --compare    # usearch HNSW vs FAISS HNSW vs FAISS IVF-PQ

Vectors are generated CLIP-like (bench only; no model involved): CLIP embeddings sit in a narrow
cone (a shared mean direction), spread unevenly over dimensions (a decaying spectrum), and cluster
by content. So each vector is normalize(0.5 * mean + spectrum * (centre + 0.7 * noise)) with 2,000
random centres of Zipf-distributed sizes and a spectrum falling as (j + 1) ** -0.5. Image-like
queries are fresh members of the same clusters; text-like queries add a fixed "modality gap"
direction (CLIP's text and image vectors are offset from each other), which makes them harder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clip.common.io import atomic_write_json
from clip.tasks.search import EmbeddingIndex, topk_cosine


class ClipLike:
    def __init__(self, dim=512, clusters=2000, seed=0):
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.mean = rng.standard_normal(dim).astype(np.float32)
        self.mean /= np.linalg.norm(self.mean)
        self.gap = rng.standard_normal(dim).astype(np.float32)
        self.gap /= np.linalg.norm(self.gap)
        self.spectrum = ((np.arange(dim) + 1.0) ** -0.5).astype(np.float32)
        self.centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
        self.weights = weights / weights.sum()

    def sample(self, n, seed, gap=0.0):
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.dim), np.float32)
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            which = rng.choice(len(self.centres), m, p=self.weights)
            raw = self.centres[which] + 0.7 * rng.standard_normal((m, self.dim), dtype=np.float32)
            raw *= self.spectrum
            raw /= np.linalg.norm(raw, axis=1, keepdims=True)
            raw += 0.5 * self.mean + gap * self.gap
            out[start : start + m] = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        return out


def write_embedding_dir(path, vectors, chunk=100_000):
    """An embedding directory as `clip embed` writes it (text kind: sources are short labels)."""
    os.makedirs(os.path.join(path, "chunks"), exist_ok=True)
    chunks = []
    for number, start in enumerate(range(0, len(vectors), chunk)):
        part = vectors[start : start + chunk]
        np.save(os.path.join(path, "chunks", f"{number:06d}.npy"), part)
        keys = [str(i) for i in range(start, start + len(part))]
        atomic_write_json(
            os.path.join(path, "chunks", f"{number:06d}.json"), {"keys": keys, "texts": [f"item {k}" for k in keys]}
        )
        chunks.append({"file": f"chunks/{number:06d}.npy", "keys": f"chunks/{number:06d}.json", "count": len(part)})
    atomic_write_json(
        os.path.join(path, "manifest.json"),
        {
            "format_version": 1,
            "kind": "text",
            "root": "/bench",
            "model": None,
            "weights": "bench",
            "backend": "pt",
            "dim": vectors.shape[1],
            "dtype": "float32",
            "compute_dtype": "float32",
            "normalized": True,
            "storage": "npy",
            "shard": [0, 1],
            "complete": True,
            "count": len(vectors),
            "chunks": chunks,
            "skipped": [],
        },
    )


def recall_at(found, truth):
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / truth.shape[1] for f, t in zip(found, truth)]))


def batch1_ms(fn, queries, repeats=1):
    times = []
    for _ in range(repeats):
        for q in queries:
            t = time.perf_counter()
            fn(q[None])
            times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times)), 1e3 * float(np.percentile(times, 99))


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main_build(args):
    data = ClipLike(args.dim)
    t = time.perf_counter()
    vectors = data.sample(args.n, seed=1)
    queries = {
        "image-like": data.sample(args.queries, seed=2),
        "text-like": data.sample(args.queries, seed=3, gap=0.35),
    }
    gen_s = time.perf_counter() - t
    work = tempfile.mkdtemp(prefix="bench_index_", dir=args.work)
    rows = []
    try:
        emb = os.path.join(work, "emb")
        write_embedding_dir(emb, vectors)
        truth = {name: topk_cosine(q, vectors, 10)[1] for name, q in queries.items()}
        exact_ms = batch1_ms(lambda q: topk_cosine(q, vectors, 10), queries["image-like"][: args.exact_queries])
        from clip.index.build import build_index

        for kind in args.kinds:
            out = os.path.join(work, f"index_{kind}")
            t = time.perf_counter()
            info = build_index(emb, out, memory=args.memory, kind=kind)
            wall = time.perf_counter() - t
            t = time.perf_counter()
            index = EmbeddingIndex.load(out)
            open_s = time.perf_counter() - t
            row = {
                "kind": kind,
                "n": args.n,
                "dim": args.dim,
                "params": info["params"],
                "build_s": round(info["build_seconds"], 1),
                "build_wall_s (with loading + calibration)": round(wall, 1),
                "open_s": round(open_s, 4),
                "index_file_MiB": round(info["index_file_bytes"] / 2**20, 1),
                "memory_estimate_MiB": round(info["memory_estimate"] / 2**20, 1),
                "budget_MiB": round(info["memory_budget"] / 2**20),
                "exact_batch1_ms_p50": round(exact_ms[0], 2),
            }
            for name, q in queries.items():
                found = index.topk(q, 10)[1]
                row[f"recall@10 {name}"] = round(recall_at(found, truth[name]), 4)
            p50, p99 = batch1_ms(lambda q: index.topk(q, 10), queries["image-like"])
            row.update(
                {
                    "batch1_ms_p50": round(p50, 3),
                    "batch1_ms_p99": round(p99, 3),
                    "speedup_vs_exact": round(exact_ms[0] / p50, 1),
                }
            )
            print(json.dumps(row), flush=True)
            rows.append(row)
            for ef in args.efs if kind == "hnsw" else ():  # the effort / recall trade-off on the same graph
                index.engine.index.expansion_search = ef
                recall = {name: round(recall_at(index.topk(q, 10)[1], truth[name]), 4) for name, q in queries.items()}
                p50, p99 = batch1_ms(lambda q: index.topk(q, 10), queries["image-like"])
                print(
                    json.dumps(
                        {
                            "kind": kind,
                            "n": args.n,
                            "expansion_search": ef,
                            "recall@10": recall,
                            "batch1_ms_p50": round(p50, 3),
                            "batch1_ms_p99": round(p99, 3),
                            "speedup_vs_exact": round(exact_ms[0] / p50, 1),
                        }
                    ),
                    flush=True,
                )
            index = None  # unmapped before the work folder goes
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        json.dumps(
            {
                "generation_s": round(gen_s, 1),
                "peak_rss_MiB": round(rss_mb()),
                "cpus": os.cpu_count(),
                "load_avg": os.getloadavg(),
            }
        )
    )
    return rows


def main_compare(args):
    """The measurement behind the choice: same data, three engines, batch-1 latency at matched recall."""
    import faiss
    from usearch.index import Index

    data = ClipLike(args.dim)
    vectors, queries = data.sample(args.n, seed=1), data.sample(args.queries, seed=3, gap=0.35)
    truth = topk_cosine(queries, vectors, 10)[1]

    def report(name, build_s, search, knobs, set_knob, size):
        for value in knobs:
            set_knob(value)
            recall = recall_at(np.vstack([search(q[None]) for q in queries]), truth)
            p50, _ = batch1_ms(search, queries[:200])
            print(
                json.dumps(
                    {
                        "engine": name,
                        "n": args.n,
                        "build_s": round(build_s, 1),
                        "knob": value,
                        "recall@10": round(recall, 4),
                        "batch1_ms_p50": round(p50, 3),
                        "MiB": round(size / 2**20),
                    }
                ),
                flush=True,
            )
            if recall >= 0.97:
                break

    t = time.perf_counter()
    u = Index(ndim=args.dim, metric="cos", dtype="f16", connectivity=16, expansion_add=128)
    u.add(np.arange(len(vectors), dtype=np.uint64), vectors)
    report(
        "usearch HNSW f16 M16",
        time.perf_counter() - t,
        lambda q: u.search(q, 10, threads=1).keys.reshape(1, -1),
        (16, 32, 64, 128, 256),
        lambda v: setattr(u, "expansion_search", v),
        u.memory_usage,
    )
    u = None
    t = time.perf_counter()
    h = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
    h.hnsw.efConstruction = 128
    h.add(vectors)
    report(
        "faiss HNSW32 flat f32",
        time.perf_counter() - t,
        lambda q: h.search(q, 10)[1],
        (16, 32, 64, 128, 256),
        lambda v: setattr(h.hnsw, "efSearch", v),
        len(vectors) * (args.dim * 4 + 32 * 2 * 4),
    )
    h = None
    # autofaiss's choice for ~1M vectors under a few GB: an IVF with ~4 sqrt(N) lists and PQ codes of D/8 bytes
    nlist = 2 ** round(np.log2(4 * np.sqrt(args.n)))
    t = time.perf_counter()
    quantizer = faiss.IndexFlatIP(args.dim)  # not index_factory: see clip/index/engines.py
    ivf = faiss.IndexIVFPQ(quantizer, args.dim, nlist, args.dim // 8, 8, faiss.METRIC_INNER_PRODUCT)
    ivf.do_polysemous_training = False
    ivf.train(vectors[np.random.default_rng(0).choice(len(vectors), min(len(vectors), 40 * nlist), replace=False)])
    ivf.add(vectors)
    report(
        f"faiss IVF{nlist},PQ{args.dim // 8}",
        time.perf_counter() - t,
        lambda q: ivf.search(q, 10)[1],
        (8, 16, 32, 64, 128, 256),
        lambda v: setattr(ivf, "nprobe", v),
        len(vectors) * (args.dim // 8 + 8),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact-queries", type=int, default=50)
    parser.add_argument("--memory", default="4GB")
    parser.add_argument("--kinds", nargs="+", default=["hnsw"])
    parser.add_argument(
        "--efs",
        nargs="*",
        type=int,
        default=[32, 64, 128, 256],
        help="HNSW search efforts to measure besides the calibrated one",
    )
    parser.add_argument("--work", default=None, help="scratch folder (default: the system's temp)")
    parser.add_argument("--compare", action="store_true", help="the engine comparison instead of the build proof")
    args = parser.parse_args()
    main_compare(args) if args.compare else main_build(args)
