"""clip.tasks: the `clip embed` pipeline against the bare model, and exact search latency.

Rows:
- embed: images/s of the whole pipeline (list a folder of JPEGs, decode and preprocess on the
  thread pool, run the model, write chunks and manifest) against images/s of the model alone on
  the same preprocessed batches, same encoder, same run; ViT-B/32-size random model (saved to a
  temp dir) on the PyTorch backend. ratio = pipeline rate / model rate, target >= 0.90.
- search: top-10 latency over 1M random 512-d unit vectors (200k with --quick), chunked numpy
  (clip.tasks.search.topk_cosine) against a plain full matmul + argsort, for 1 and 16 queries;
  (the ANN index has its own bench: bench/bench_index.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np


def _best_interleaved(fns, repeats):
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def _make_jpegs(folder, count, seed=0, size=None):
    """Photo-like JPEGs (smooth colour fields plus noise), quality 90: of `size` (width, height), or
    500x375 and 375x500 in turn."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        w, h = size or ((500, 375) if i % 2 == 0 else (375, 500))
        coarse = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, (h, w, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def _model_dir(folder, quick):
    from clip.common.config import CLIPConfig
    from clip.common.processor import CLIPProcessor
    from clip.pt import CLIPModel

    import torch

    torch.manual_seed(0)
    config = CLIPConfig()  # ViT-B/32
    if quick:
        config = CLIPConfig(text_config={"num_hidden_layers": 2}, vision_config={"num_hidden_layers": 4})
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor().save_pretrained(folder)  # 224 px, CLIP mean/std, the CLIP vocabulary


def embed_rows(quick: bool) -> list[dict]:
    from clip.tasks.backends import load_encoder
    from clip.tasks.embed import embed_to_dir, list_images

    count, batch = (48, 16) if quick else (200, 32)
    work = tempfile.mkdtemp(prefix="bench_tasks_")
    try:
        model, images, out = (os.path.join(work, name) for name in ("model", "images", "out"))
        os.makedirs(images)
        _model_dir(model, quick)
        _make_jpegs(images, count)
        encoder = load_encoder(model, "pt")
        paths = [os.path.join(images, key) for key in list_images(images)]
        batches = [encoder.preprocess(paths[i : i + batch]) for i in range(0, count, batch)]

        encode = encoder.encode_images
        busy = []  # per pipeline run: seconds inside the model / wall seconds

        def model_only():
            for pixels in batches:
                encode(pixels)

        def pipeline():
            inside = [0.0]

            def timed(pixels):
                t0 = time.perf_counter()
                result = encode(pixels)
                inside[0] += time.perf_counter() - t0
                return result

            encoder.encode_images = timed
            t0 = time.perf_counter()
            summary = embed_to_dir(encoder, images, out, batch_size=batch, chunk_size=1024, overwrite=True)
            busy.append(inside[0] / (time.perf_counter() - t0))
            encoder.encode_images = encode
            assert summary["embedded"] == count

        model_only()  # warm-up (allocator, thread pools)
        t_pipeline, t_model = _best_interleaved([pipeline, model_only], repeats=2 if quick else 3)
        ratio = t_model / t_pipeline
        size = "4-layer ViT-B/32-width" if quick else "ViT-B/32"
        return [
            {
                "name": f"embed pipeline vs model only, {size}, batch {batch}",
                "ours_s": t_pipeline,
                "baseline_s": t_model,
                "ratio": ratio,
                "target": ">= 0.90",
                "ours_items_per_s": count / t_pipeline,
                "baseline_items_per_s": count / t_model,
                "model_busy_fraction": max(busy),
                "note": f"{count} JPEGs 500x375: pipeline {count / t_pipeline:.1f} img/s, model alone {count / t_model:.1f} img/s "
                f"({ratio:.0%}); model busy {max(busy):.0%} of the pipeline's wall time; {os.cpu_count()} cpus",
            }
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def search_rows(quick: bool) -> list[dict]:
    from clip.tasks.search import topk_cosine

    n, dim, k = (200_000 if quick else 1_000_000), 512, 10
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = []
    for q in (1, 16):
        queries = rng.standard_normal((q, dim), dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)

        def ours():
            return topk_cosine(queries, vectors, k)

        def naive():
            scores = queries @ vectors.T
            return np.argsort(-scores, axis=1)[:, :k]

        np.testing.assert_array_equal(ours()[1], naive())
        t_ours, t_naive = _best_interleaved([ours, naive], repeats=3)
        out.append(
            {
                "name": f"search top-{k}, {n // 1000}k x {dim}, {q} quer{'y' if q == 1 else 'ies'}",
                "ours_s": t_ours,
                "baseline_s": t_naive,
                "ratio": t_naive / t_ours,
                "target": "< 0.1 s",
                "note": f"chunked numpy {t_ours * 1e3:.0f} ms vs full matmul + argsort {t_naive * 1e3:.0f} ms",
            }
        )
    return out


def rows(quick: bool = False) -> list[dict]:
    return embed_rows(quick) + search_rows(quick)


if __name__ == "__main__":
    import sys

    for row in rows(quick="--quick" in sys.argv):
        print(
            f"{row['name']:<58} ours {row['ours_s']:.4f}s  baseline {row['baseline_s']:.4f}s  "
            f"ratio {row['ratio']:.2f}  ({row['target']})  {row['note']}"
        )
