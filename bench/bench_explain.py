"""clip.tasks.explain: seconds per explanation in each backend, against the plain embedding of
the same image and texts (the forward pass alone), same encoder, same run.

A ViT-B/32-shaped random model (saved to a temp dir; --quick: 4 vision and 2 text layers), one
224x224 image, 1 and 8 texts. Each timing is the best of --repeats after one warm-up call (the
warm-up holds JAX's compilation, reported separately as "first call").

    python bench/bench_explain.py [--quick] [--backends pt,tf,flax] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _model_dir(folder, quick):
    import torch

    from clip.common.config import CLIPConfig
    from clip.common.processor import CLIPProcessor
    from clip.pt import CLIPModel

    torch.manual_seed(0)
    config = (
        CLIPConfig(text_config={"num_hidden_layers": 2}, vision_config={"num_hidden_layers": 4})
        if quick
        else CLIPConfig()
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor().save_pretrained(folder)
    return folder


def _best(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    from PIL import Image

    from clip.tasks import load_encoder
    from clip.tasks.explain import explain

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--backends", default="pt,tf,flax")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
    texts = [f"a photo of thing number {i}" for i in range(8)]
    with tempfile.TemporaryDirectory() as folder:
        path = _model_dir(folder, args.quick)
        print("| backend | texts | first call s | explain s | forward s | explain / forward |")
        print("|---|---|---|---|---|---|")
        for backend in args.backends.split(","):
            encoder = load_encoder(path, backend, device="cpu")
            for count in (1, 8):
                t0 = time.perf_counter()
                explain(encoder, image, texts[:count])
                first = time.perf_counter() - t0
                took = _best(lambda: explain(encoder, image, texts[:count]), args.repeats)  # noqa: B023
                forward = _best(lambda: encoder.encode([image, *texts[:count]]), args.repeats)  # noqa: B023
                print(
                    f"| {backend} | {count} | {first:.2f} | {took:.3f} | {forward:.3f} | {took / forward:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
