"""Image processor speed against transformers' CLIPImageProcessor, side by side in one process.

The photos are the test images resized and cropped deterministically to about 640x480, held
decoded in memory so that both sides time preprocessing, not PNG/JPEG decoding.
"""

from __future__ import annotations

import os
import time

import numpy as np
from PIL import Image

from clip.common.image_processor import CLIPImageProcessor

IMAGES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "images")


def photos(count: int) -> list[Image.Image]:
    sources = []
    for name in sorted(os.listdir(IMAGES_DIR)):
        with Image.open(os.path.join(IMAGES_DIR, name)) as image:
            sources.append(image.convert("RGB").resize((720, 540), Image.Resampling.BICUBIC))
    out = []
    for i in range(count):
        width, height = 600 + (i * 17) % 80, 440 + (i * 11) % 60
        left, top = (i * 13) % (720 - width + 1), (i * 7) % (540 - height + 1)
        out.append(sources[i % len(sources)].crop((left, top, left + width, top + height)))
    for image in out:
        image.load()
    return out


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def rows(quick: bool = False) -> list[dict]:
    """The default (one thread per core) and a single-thread run, each against transformers."""
    count, repeats = (10, 3) if quick else (100, 5)
    images = photos(count)
    try:
        import transformers
    except ImportError:
        transformers = None
    if transformers is not None:
        theirs = transformers.CLIPImageProcessor()
        baseline_s = _best_time(lambda: theirs(images, return_tensors="np"), repeats)
        expected = np.asarray(theirs(images, return_tensors="np")["pixel_values"], dtype=np.float64)
    out = []
    for threads in (None, 1):
        ours = CLIPImageProcessor()
        ours_s = _best_time(lambda: ours(images, return_tensors="np", num_threads=threads), repeats)
        row = {
            "name": f"image processor, {count} photos" + (", 1 thread" if threads == 1 else ""),
            "ours_s": ours_s,
            "baseline_s": None,
            "ratio": None,
            "target": ">= 2.0x" if threads is None else "none (shows the share of threads)",
            "max_abs_diff": None,
            "note": "transformers is not installed: no baseline",
        }
        if transformers is not None:
            got = ours(images, return_tensors="np", num_threads=threads)["pixel_values"]
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            row.update(
                baseline_s=baseline_s,
                ratio=baseline_s / ours_s,
                max_abs_diff=float(np.abs(expected - got).max()),
                note=f"vs transformers {transformers.__version__} CLIPImageProcessor (single-threaded); "
                f"~640x480 RGB PIL images in memory, return_tensors='np', best of {repeats}; "
                f"{threads or cores} thread(s) on {cores} core(s)",
            )
        out.append(row)
    return out


if __name__ == "__main__":
    import sys

    for row in rows(quick="--quick" in sys.argv):
        print(row)
