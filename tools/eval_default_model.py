#!/usr/bin/env python
"""Measure the model-card metrics of a CLIP model directory on the synthetic shapes set; prints JSON.

    .venv/bin/python tools/eval_default_model.py [MODEL_DIR] [--images 600] [--held-out-images 300] [--pairs 2000]

MODEL_DIR defaults to the embedded default model (clip/models/default). Everything is generated
from seeds that training never uses (`clip train --synthetic` with --seed 0 renders its training
set from seed 0):

- zero_shot_top1: top-1 over the 30 colour x shape labels ("a red circle", ...) on --images
  single-shape images cycling over all 30 combinations (seed 9000001), with the colour-only and
  shape-only accuracies of the same predictions, and the top-1 split into combinations seen in
  training and the 5 held-out combinations (clip.data.HELD_OUT_COMBOS).
- held_out_combos_top1: top-1 over the same 30 labels on --held-out-images images of only the 5
  held-out combinations (seed 9000002).
- retrieval: image->text and text->image Recall@1/5/10 on --pairs held-out captioned scenes
  (SyntheticShapes with seed 1000003, the trainer's --val-fraction split for --seed 0), plus
  image->text "caption R@1": the top caption is counted right when its text equals the pair's
  caption (held-out captions repeat, and strict R@1 counts an identical caption of another image
  as a miss).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

ZERO_SHOT_SEED = 9_000_001
HELD_OUT_SEED = 9_000_002
PAIRS_SEED = 1_000_003  # clip train --synthetic N --seed 0: the held-out split's seed (seed + 1_000_003)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def main(argv=None) -> dict:
    from clip.models import default_model_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "model", nargs="?", default=default_model_path(), help="model directory (default: the embedded model)"
    )
    p.add_argument("--images", type=int, default=600, help="single-shape images over all 30 combinations (default 600)")
    p.add_argument(
        "--held-out-images", type=int, default=300, help="images of the 5 held-out combinations (default 300)"
    )
    p.add_argument("--pairs", type=int, default=2000, help="held-out captioned pairs for retrieval (default 2000)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)

    import torch

    from clip import data
    from clip.common.processor import CLIPProcessor
    from clip.pt import CLIPModel
    from clip.train import common

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = CLIPModel.from_pretrained(args.model, dtype=torch.float32).eval()
    processor = CLIPProcessor.from_pretrained(args.model)
    size = model.config.vision_config.image_size
    max_length = model.config.text_config.max_position_embeddings

    @torch.no_grad()
    def image_features(pixels):
        return model.get_image_features(torch.from_numpy(pixels)).float().numpy()

    @torch.no_grad()
    def text_features(ids, mask):
        return model.get_text_features(torch.from_numpy(ids).long(), torch.from_numpy(mask).long()).float().numpy()

    # the chunked encoders of the trainers' evaluation (the processor's images and padded captions)
    encode_images, encode_texts = common.chunked_encoders(processor, max_length, image_features, text_features)

    labels, combos = data.zero_shot_labels()
    label_embeds = _unit(encode_texts(labels))
    held = set(data.HELD_OUT_COMBOS)

    def predict(images):
        return (_unit(encode_images(images)) @ label_embeds.T).argmax(axis=1)

    out = {"model": os.path.relpath(args.model), "image_size": size}
    images, _, targets = data.zero_shot_set(args.images, seed=ZERO_SHOT_SEED, image_size=size)
    pred = predict(images)
    right = pred == targets
    is_held = np.array([combos[t] in held for t in targets])
    out["zero_shot_top1"] = float(right.mean())
    out["zero_shot_colour_correct"] = float(np.mean([combos[a][0] == combos[b][0] for a, b in zip(pred, targets)]))
    out["zero_shot_shape_correct"] = float(np.mean([combos[a][1] == combos[b][1] for a, b in zip(pred, targets)]))
    out["zero_shot_top1_seen_combos"] = float(right[~is_held].mean())
    out["zero_shot_top1_held_out_combos_in_mix"] = float(right[is_held].mean())
    out["zero_shot_images"] = int(args.images)
    per_shape = {}
    for shape in data.synthetic.SHAPES:
        rows = np.array([combos[t][1] == shape for t in targets])
        per_shape[shape] = float(right[rows].mean())
    out["zero_shot_top1_per_shape"] = per_shape

    if args.held_out_images:
        images, _, targets = data.zero_shot_set(
            args.held_out_images, seed=HELD_OUT_SEED, image_size=size, combos=data.HELD_OUT_COMBOS
        )
        pred = predict(images)
        out["held_out_combos_top1"] = float((pred == targets).mean())
        out["held_out_combos_colour_correct"] = float(
            np.mean([combos[a][0] == combos[b][0] for a, b in zip(pred, targets)])
        )
        out["held_out_combos_shape_correct"] = float(
            np.mean([combos[a][1] == combos[b][1] for a, b in zip(pred, targets)])
        )
        out["held_out_combos_images"] = int(args.held_out_images)

    if args.pairs:
        val = data.SyntheticShapes(args.pairs, seed=PAIRS_SEED, image_size=size)
        items = [val[i] for i in range(len(val))]
        captions = [c for _, c in items]
        image_embeds = encode_images([im for im, _ in items])
        text_embeds = encode_texts(captions)
        out.update({k: float(v) for k, v in common.retrieval_metrics(image_embeds, text_embeds).items()})
        top = (_unit(image_embeds) @ _unit(text_embeds).T).argmax(axis=1)
        out["image_to_text_caption_R@1"] = float(np.mean([captions[j] == c for j, c in zip(top, captions)]))
        out["retrieval_pairs"] = int(args.pairs)
    out["eval_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
