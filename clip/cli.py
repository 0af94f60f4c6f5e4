"""The `clip` command line (`clip ...` or `python -m clip ...`)."""

from __future__ import annotations

import argparse
import json
import sys

BACKENDS = ("pt",)  # tf and flax join as their backends land


def _zero_shot_parser(sub):
    p = sub.add_parser(
        "zero-shot",
        help="zero-shot classification of images against text labels",
        description="Classify images against free-text labels by image-text similarity.",
        epilog='example: clip zero-shot cat.jpg --labels "a photo of a cat,a photo of a dog" --model openai/clip-vit-base-patch32',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--labels", required=True, help="comma-separated labels")
    p.add_argument("--model", default=None, help="local directory or hub id (default: the embedded model)")
    p.add_argument("--backend", choices=BACKENDS, default="pt", help="framework to run the model in")
    p.add_argument("--top-k", type=int, default=5, help="how many labels to print per image")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_run_zero_shot)


def _run_zero_shot(args) -> int:
    from clip.common.processor import CLIPProcessor

    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    if not labels:
        raise SystemExit("clip zero-shot: --labels is empty; give at least one comma-separated label")
    if args.top_k < 1:
        raise SystemExit("clip zero-shot: --top-k must be at least 1")
    if args.model is None:
        from clip.models import default_model_path

        args.model = default_model_path()  # the embedded model (clip/models/default)
    processor = CLIPProcessor.from_pretrained(args.model)
    inputs = processor(text=labels, images=list(args.images), padding=True, return_tensors="np")

    import numpy as np
    import torch

    from clip.pt import CLIPModel

    model = CLIPModel.from_pretrained(args.model).eval()
    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()})
    probs = out.logits_per_image.softmax(dim=-1).numpy()
    results = []
    for path, row in zip(args.images, probs):
        order = np.argsort(-row)[: args.top_k]
        results.append({"image": path, "labels": [{"label": labels[i], "probability": float(row[i])} for i in order]})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(result["image"])
            for item in result["labels"]:
                print(f"  {item['probability']:7.2%}  {item['label']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip", description="CLIP in PyTorch, TensorFlow and JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    _zero_shot_parser(sub)
    from clip.train.cli import add_parser as add_train_parser

    add_train_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as err:
        print(f"clip {args.command}: {err}", file=sys.stderr)
        return 2
