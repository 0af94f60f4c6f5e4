"""`clip eval-zero-shot`: zero-shot accuracy on labelled images, printed as a table or JSON, the
confusion matrix as a PNG, and CLIP_benchmark's result file."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = (
    "Measure zero-shot classification on labelled images: top-1, top-5, mean per-class recall, "
    "per-class recall and the confusion matrix. Input: a folder of class folders (ImageFolder; "
    "underscores in folder names become spaces), a CSV/JSONL of image,label rows, webdataset "
    "shards with a label field, or a Hugging Face datasets directory (save_to_disk; needs the "
    "datasets package). Class-prompt embeddings are cached per model weights."
)
EXAMPLES = [
    "clip eval-zero-shot val/ --templates imagenet --model openai/clip-vit-base-patch32 --output result.json",
    "clip eval-zero-shot labels.csv --classnames classes.txt --confusion confusion.png",
    "clip eval-zero-shot 'shards/val-{000000..000003}.tar' --label-key cls --classnames classes.json --json",
]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `eval-zero-shot` to the `clip` command's subparsers."""
    from clip.cli import _batch_options, _command, _model_options
    from clip.tasks.eval_zero_shot_data import LAYOUTS

    p = _command(
        subparsers,
        "eval-zero-shot",
        "zero-shot accuracy on labelled images (CLIP_benchmark's metrics)",
        DESCRIPTION,
        EXAMPLES,
    )
    p.add_argument(
        "dataset",
        metavar="DATASET",
        help="class folders, a .csv/.jsonl table, .tar shards (pattern or folder) or a save_to_disk folder",
    )
    p.add_argument("--layout", choices=LAYOUTS, default="auto", help="how DATASET is laid out (default: detected)")
    p.add_argument(
        "--classnames", metavar="FILE", help="class names: JSON list or {index: name}, or text with one name per line"
    )
    p.add_argument(
        "--templates",
        "--template",
        default="default",
        metavar="NAME_OR_FILE",
        help="prompt templates, as clip zero-shot: default ('This is a photo of {}.'), label, simple, "
        "imagenet (the CLIP paper's 80), a file, or one template with {}",
    )
    p.add_argument("--image-key", metavar="KEY", help="the image column / field (default: image, path, ... or jpg/png)")
    p.add_argument("--label-key", metavar="KEY", help="the label column / field (default: label, class, cls, ...)")
    p.add_argument("--output", metavar="JSON", help="write CLIP_benchmark's result JSON here")
    p.add_argument("--confusion", metavar="PNG", help="draw the confusion matrix into this PNG")
    p.add_argument("--dataset-name", metavar="NAME", help="the dataset's name in the results (default: from the path)")
    p.add_argument(
        "--cache-dir", metavar="DIR", help="where class embeddings are cached (default: ~/.cache/clip/zero_shot)"
    )
    p.add_argument("--no-cache", action="store_true", help="embed the class prompts again, caching nothing")
    _model_options(p)
    _batch_options(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from clip.common.io import atomic_write_json
    from clip.tasks.backends import TaskError, load_encoder
    from clip.tasks.eval_zero_shot import evaluate_zero_shot, plot_confusion
    from clip.tasks.templates import get_templates

    for path, suffix, option in ((args.output, ".json", "--output"), (args.confusion, ".png", "--confusion")):
        if path and not path.lower().endswith(suffix):
            raise TaskError(f"{option} {path}: name it {suffix}")
    templates = get_templates(args.templates)  # a bad template fails before the model loads
    encoder = load_encoder(args.model, args.backend, device=args.device, dtype=args.dtype, compile=args.compile)
    cache = None if args.no_cache else (args.cache_dir or "default")
    result = evaluate_zero_shot(
        encoder,
        args.dataset,
        templates,
        args.layout,
        args.classnames,
        args.image_key,
        args.label_key,
        args.batch_size,
        args.workers,
        progress=not args.json and sys.stderr.isatty(),
        cache=cache,
        dataset_name=args.dataset_name,
    )
    if args.output:
        atomic_write_json(args.output, result.to_benchmark_json())
    if args.confusion:
        plot_confusion(result, args.confusion)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return 0
    m = result.metrics
    print(f"{result.dataset}: {result.count} images, {len(result.classnames)} classes, model {result.model}")
    print(f"  top-1 {m['acc1']:.2%}   top-5 {m['acc5']:.2%}   mean per-class recall {m['mean_per_class_recall']:.2%}")
    width = min(40, max(len(c["class"]) for c in result.per_class))
    print(f"  {'class':<{width}}  {'images':>6}  recall")
    for row in result.per_class:
        print(f"  {row['class'][:width]:<{width}}  {row['support']:>6}  {row['recall']:7.2%}")
    for path in (args.output, args.confusion):
        if path:
            print(f"wrote {path}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unusable sample(s):", file=sys.stderr)
        for entry in result.skipped[:20]:
            print(f"  {entry['source']}: {entry['reason']}", file=sys.stderr)
    return 0
