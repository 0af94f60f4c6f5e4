"""`clip eval-retrieval`: its parser and handler."""

from __future__ import annotations

import os

from clip.cli_options import _batch_options, _command, _model_options, _print_json, _progress, _report_skipped


def _retrieval_parser(sub):
    p = _command(
        sub,
        "eval-retrieval",
        "image-text retrieval metrics (Recall@K, MRR) on a captions file",
        "Embed the images and captions of a CSV/JSONL file of (image, caption) rows, or of a folder of "
        "images with .txt captions, and report Recall@1/5/10 and mean reciprocal rank for text -> image "
        "and image -> text. An image may have several captions. Unusable rows are skipped and listed.",
        [
            "clip eval-retrieval captions.csv --model openai/clip-vit-base-patch32",
            "clip eval-retrieval val.jsonl --backend tf --json",
        ],
    )
    p.add_argument("captions", metavar="CAPTIONS", help="a .csv/.tsv/.jsonl of image,caption rows, or a folder")
    p.add_argument("--ks", default="1,5,10", help="comma-separated K for Recall@K (default 1,5,10)")
    _model_options(p)
    _batch_options(p)
    p.set_defaults(run=_run_retrieval)


def _run_retrieval(args) -> int:
    from clip.tasks.backends import TaskError, load_encoder
    from clip.tasks.retrieval import evaluate_captions

    try:
        ks = tuple(int(k) for k in args.ks.split(",") if k.strip())
    except ValueError:
        raise TaskError(f"--ks must be comma-separated integers, got {args.ks!r}") from None
    if not ks or min(ks) < 1:
        raise TaskError(f"--ks must list positive integers, got {args.ks!r}")
    if not os.path.exists(args.captions):
        raise TaskError(f"{args.captions}: no such file or directory")
    encoder = load_encoder(args.model, args.backend, device=args.device, dtype=args.dtype, compile=args.compile)
    result = evaluate_captions(encoder, args.captions, ks, args.batch_size, args.workers, _progress(args))
    if args.json:
        _print_json(result)
        return 0
    names = [f"R@{k}" for k in ks] + ["MRR"]
    print(f"{result['images']} images, {result['texts']} captions")
    print(f"{'direction':<14}" + "".join(f"{name:>8}" for name in names))
    for key, title in (("text_to_image", "text->image"), ("image_to_text", "image->text")):
        print(f"{title:<14}" + "".join(f"{result[key][name]:8.4f}" for name in names))
    _report_skipped(result["skipped"])
    return 0
