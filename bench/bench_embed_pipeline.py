"""`clip embed`'s pipeline against the model alone, and decoding in threads vs processes.

    python bench/bench_embed_pipeline.py            # the numbers in bench/RESULTS.md
    python bench/bench_embed_pipeline.py --quick    # smaller model and fewer images

Rows (PyTorch backend, CPU, a ViT-B/32-shaped random model saved to a temp dir):
- pipeline: images/s of embed_to_dir on a folder of generated photo-like JPEGs (decode in worker
  processes into shared memory, normalize, the model, chunks + clip-retrieval files), against
  images/s of the model alone on preprocessed batches of the same size, same encoder, same run.
  ratio = pipeline / model (target >= 0.95), for float32 and bfloat16, 500x375 and 4000x3000 JPEGs;
  also with --draft (PIL DCT-scaled decoding) for the big ones, with the cosine of its vectors to
  the exact path's (worst image).
- decode: images/s per worker of the decode stage alone (no model), threads vs processes.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time

import bench_tasks  # the same photo-like JPEGs and random ViT-B/32 as the tasks bench
import numpy as np


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def make_jpegs(folder, count, size, seed=0):
    return bench_tasks._make_jpegs(folder, count, seed, size)


def make_model(folder, quick):
    """ViT-B/32 with random weights (fewer layers with --quick) and CLIP's processor."""
    bench_tasks._model_dir(folder, quick)


def model_rate(encoder, folder, batch_size, repeats=3):
    """Images/s of encode_images alone on one preprocessed batch (best of `repeats`)."""
    names = sorted(os.listdir(folder))[:batch_size]
    pixels = encoder.preprocess([os.path.join(folder, n) for n in names])
    if len(pixels) < batch_size:
        pixels = np.concatenate([pixels] * (batch_size // len(pixels) + 1))[:batch_size]
    encoder.encode_images(pixels)  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode_images(pixels)
        best = min(best, time.perf_counter() - start)
    return batch_size / best


def pipeline_rate(encoder, folder, out, batch_size, draft=False, workers=None):
    from clip.tasks.embed import embed_to_dir, load_embeddings

    start = time.perf_counter()
    summary = embed_to_dir(
        encoder,
        folder,
        out,
        batch_size=batch_size,
        overwrite=True,
        decode="process",
        draft=draft,
        workers=workers,
        chunk_size=4096,
    )
    elapsed = time.perf_counter() - start
    return summary["embedded"] / elapsed, load_embeddings(out)


def decode_rate(encoder, folder, mode, workers, batch_size, draft=False, rounds=3):
    """Images/s per worker of the decode stage alone, timed from the first batch on (the workers'
    start-up left out), over the folder read `rounds` times."""
    from clip.tasks.embed import image_batches, open_collection

    items = list(open_collection(folder).iterate()) * rounds
    start, count = None, 0
    for done, _, _ in image_batches(encoder, items, batch_size, workers, decode=mode, draft=draft):
        if start is None:
            start = time.perf_counter()
            continue
        count += len(done)
    return count / (time.perf_counter() - start) / workers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--small", type=int, default=128, help="500x375 JPEGs (default 128)")
    parser.add_argument("--big", type=int, default=16, help="4000x3000 JPEGs (default 16)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--decode-only", action="store_true", help="only the decode table")
    args = parser.parse_args()
    if args.quick:
        args.small, args.big = 32, 4
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"CPU: {cpu_model()}, {cores} cores usable, load average {os.getloadavg()[0]:.1f}")
    root = tempfile.mkdtemp(prefix="bench_embed_")
    try:
        make_model(os.path.join(root, "model"), args.quick)
        sets = {
            "500x375": (os.path.join(root, "small"), args.small, (500, 375)),
            "4000x3000": (os.path.join(root, "big"), args.big, (4000, 3000)),
        }
        for folder, count, size in sets.values():
            make_jpegs(folder, count, size)
        if not args.decode_only:
            pipeline_table(args, root, sets)
        decode_table(args, root, sets, cores)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pipeline_table(args, root, sets):
    from clip.tasks import load_encoder

    print(
        "\n| dtype | images | model only (img/s) | pipeline (img/s) | ratio | --draft pipeline (img/s) | --draft worst cosine |"
    )
    print("|---|---|---|---|---|---|---|")
    for dtype in ("float32", "bfloat16"):
        encoder = load_encoder(os.path.join(root, "model"), "pt", device="cpu", dtype=dtype)
        for label, (folder, _, _) in sets.items():
            alone = model_rate(encoder, folder, args.batch_size)
            rate, exact = pipeline_rate(encoder, folder, os.path.join(root, "out"), args.batch_size)
            draft_cells = ["", ""]
            if label == "4000x3000":
                draft_rate, drafted = pipeline_rate(
                    encoder, folder, os.path.join(root, "out"), args.batch_size, draft=True
                )
                cosine = np.sum(exact.vectors * drafted.vectors, axis=1).min()
                draft_cells = [f"{draft_rate:.1f}", f"{cosine:.4f}"]
            print(
                f"| {dtype} | {label} | {alone:.1f} | {rate:.1f} | {rate / alone:.2f} | {draft_cells[0]} | {draft_cells[1]} |",
                flush=True,
            )


def decode_table(args, root, sets, cores):
    from clip.tasks import load_encoder

    encoder = load_encoder(os.path.join(root, "model"), "pt", device="cpu")
    print(
        "\n| images | workers | threads (img/s per worker) | processes (img/s per worker) | processes --draft (img/s per worker) |"
    )
    print("|---|---|---|---|---|")
    for label, (folder, _, _) in sets.items():
        for workers in sorted({1, cores}):
            threads = decode_rate(encoder, folder, "thread", workers, args.batch_size)
            processes = decode_rate(encoder, folder, "process", workers, args.batch_size)
            drafted = decode_rate(encoder, folder, "process", workers, args.batch_size, draft=True)
            print(f"| {label} | {workers} | {threads:.1f} | {processes:.1f} | {drafted:.1f} |", flush=True)


if __name__ == "__main__":
    main()
