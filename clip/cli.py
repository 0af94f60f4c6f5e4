"""The `clip` command line (`clip ...` or `python -m clip ...`).

Each task subcommand parses its arguments in its own module (clip.cli_embed, clip.cli_retrieval,
clip.cli_similarity, clip.index.cli, clip.train.cli, ...) and calls clip.tasks; this module builds
the parser, runs a command and holds zero-shot, the first task (tests patch its handler here).
Nothing here imports a deep-learning framework (the encoder does, for the chosen --backend).
Output is a table by default and JSON with --json; a bad argument or input prints one line and
exits with status 2.
"""

from __future__ import annotations

import argparse

# The subcommands' parsers, and (re-exported with `as`) the shared option helpers of clip.cli_options,
# which clip.index.cli, clip.serve.cli and clip.tasks.*_cli import from here.
from clip.cli_embed import _embed_parser
from clip.cli_options import _batch_options as _batch_options
from clip.cli_options import _command as _command
from clip.cli_options import _expand_images as _expand_images
from clip.cli_options import _fail_on_explicit as _fail_on_explicit
from clip.cli_options import _model_options as _model_options
from clip.cli_options import _positive as _positive
from clip.cli_options import _print_json as _print_json
from clip.cli_options import _progress as _progress
from clip.cli_options import _report_skipped as _report_skipped
from clip.cli_options import _split_labels as _split_labels
from clip.cli_retrieval import _retrieval_parser
from clip.cli_similarity import _similarity_parser

# --------------------------------------------------------------------- zero-shot


def _zero_shot_parser(sub):
    p = _command(
        sub,
        "zero-shot",
        "zero-shot classification of images against text labels",
        "Classify images against free-text labels by image-text similarity, with optional prompt "
        "ensembling (--templates). Folders are searched recursively; unreadable files in them are skipped.",
        [
            'clip zero-shot cat.jpg --labels "cat,dog,car" --templates imagenet --model openai/clip-vit-base-patch32',
            'clip zero-shot photos/ --labels "a red circle,a blue square" --top-k 1 --json',
        ],
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--labels", required=True, help="comma-separated labels")
    p.add_argument(
        "--templates",
        "--template",
        default="default",
        metavar="NAME_OR_FILE",
        help="prompt templates: default ('This is a photo of {}.', as transformers' pipeline), label "
        "(the label as is), simple ('a photo of a {}.'), imagenet (the CLIP paper's 80), a file "
        "with one template per line, or one template with {}",
    )
    _model_options(p)
    p.add_argument("--top-k", type=int, default=5, help="how many labels to print per image (default 5)")
    _batch_options(p)
    p.set_defaults(run=_run_zero_shot)


def _run_zero_shot(args) -> int:
    from clip.tasks.backends import TaskError, load_encoder
    from clip.tasks.zero_shot import ZeroShotClassifier

    labels = _split_labels(args.labels)
    if not labels:
        raise TaskError("--labels is empty; give at least one comma-separated label")
    if args.top_k < 1:
        raise TaskError("--top-k must be at least 1")
    sources, explicit = _expand_images(args.images)
    # model None: the embedded model (clip/models/default)
    encoder = load_encoder(args.model, args.backend, device=args.device, dtype=args.dtype, compile=args.compile)
    classifier = ZeroShotClassifier(encoder, labels, args.templates)
    result = classifier.classify(sources, batch_size=args.batch_size, progress=_progress(args))
    _fail_on_explicit(result.skipped, explicit)
    if args.json:
        _print_json(result.to_json(args.top_k))
    else:
        for source, top in zip(result.sources, result.top(args.top_k)):
            print(source)
            for label, probability in top:
                print(f"  {probability:7.2%}  {label}")
    _report_skipped(result.skipped)
    return 0


# --------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip", description="CLIP in PyTorch, TensorFlow and JAX")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of any error (also: CLIP_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _zero_shot_parser(sub)
    _embed_parser(sub)
    from clip.index.cli import add_parser as add_index_parsers  # clip index, clip search

    add_index_parsers(sub)
    from clip.serve.cli import add_parser as add_serve_parser

    add_serve_parser(sub)
    _retrieval_parser(sub)
    _similarity_parser(sub)
    from clip.convert_cli import add_parser as add_convert_parser
    from clip.train.cli import add_parser as add_train_parser

    add_train_parser(sub)
    add_convert_parser(sub)
    from clip.tasks import eval_zero_shot_cli, explain_cli

    explain_cli.add_parser(sub)
    eval_zero_shot_cli.add_parser(sub)
    return parser


def main(argv=None) -> int:
    """Bad input: one line on stderr, exit 2; a bug: one line saying so, exit 1 (clip.cli_errors)."""
    from clip import cli_errors

    return cli_errors.run(build_parser().parse_args(argv))
