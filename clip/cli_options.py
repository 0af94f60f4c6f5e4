"""What the `clip` subcommands share: their common options (model, batch), input expansion and output helpers."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from clip.tasks.backends import BACKENDS, DTYPES


def _command(sub, name, help, description, examples):
    return sub.add_parser(
        name,
        help=help,
        description=textwrap.fill(description, 100),
        epilog="examples:\n  " + "\n  ".join(examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _model_options(
    p, model_help="local directory or hub id, e.g. openai/clip-vit-base-patch32 (default: the embedded model)"
):
    p.add_argument("--model", default=None, metavar="DIR_OR_HUB_ID", help=model_help)
    p.add_argument("--backend", choices=BACKENDS, default="pt", help="framework to run the model in (default pt)")
    p.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto (a GPU when the framework sees one, else the CPU; default), cpu, cuda or cuda:N",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="what the model computes in (default float32; bfloat16: 1.5-1.9x faster on AVX-512 BF16 CPUs)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="pt: run the towers through torch.compile (CUDA graphs for small batches on a GPU); "
        "pays on GPUs and long jobs, costs start-up time on a CPU",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _batch_options(p, default=64):
    p.add_argument("--batch-size", type=_positive, default=default, help=f"images per model call (default {default})")
    p.add_argument("--workers", type=_positive, default=None, help="image decoding workers (default: one per core)")


def _positive(value):
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def _progress(args) -> bool:
    return not args.json and sys.stderr.isatty()


def _print_json(data):
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _report_skipped(skipped, where=None):
    where = where or sys.stderr
    if skipped:
        print(f"skipped {len(skipped)} unreadable input(s):", file=where)
        for entry in skipped:
            print(f"  {entry['source']}: {entry['reason']}", file=where)


def _split_labels(text):
    return [label.strip() for label in text.split(",") if label.strip()]


def _expand_images(paths):
    """(sources, explicit): directories expand to their files; explicit = the files named directly."""
    from clip.tasks.backends import TaskError
    from clip.tasks.embed import scan_folder

    sources, explicit = [], set()
    for path in paths:
        if os.path.isdir(path):
            # a named pipe is listed (then skipped with its reason), never opened
            images, unreadable = scan_folder(path)
            found = [os.path.join(path, *key.split("/")) for key in images + [e["source"] for e in unreadable]]
            if not found:
                raise TaskError(f"{path}: the directory holds no files")
            sources += found
        elif os.path.isfile(path):
            sources.append(path)
            explicit.add(path)
        else:
            raise TaskError(f"{path}: no such file or directory")
    return sources, explicit


def _fail_on_explicit(skipped, explicit):
    """A file named on the command line that cannot be read is an error (one found in a folder is skipped)."""
    from clip.tasks.backends import TaskError

    for entry in skipped:
        if entry["source"] in explicit:
            raise TaskError(f"{entry['source']}: {entry['reason']}")
