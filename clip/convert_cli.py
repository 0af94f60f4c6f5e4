"""`clip convert SRC DST ...`: the weight converter on the command line (clip.convert does the work).

Wired into `clip` by clip.cli.build_parser (add_parser below) and run standalone by
tools/convert_weights.py. Imports no framework until a format needs one.
"""

from __future__ import annotations

import argparse
import sys

from clip.common.io import loads_json

DESCRIPTION = (
    "Convert a CLIP checkpoint: transformers PyTorch/TF/Flax directories, this library's .keras and Flax params, "
    "OpenAI's ViT checkpoints (TorchScript or state dict) and open_clip state dicts, into a directory with "
    "config.json, model.safetensors and the tokenizer and processor files (or another format with --to). "
    "Formats are detected from the files unless given. Nothing is written to DST unless the whole conversion succeeds."
)
EXAMPLES = (
    "clip convert ViT-B-32.pt clip-vit-b32",
    "clip convert open_clip_pytorch_model.bin out --from open_clip --set text_config.hidden_act=quick_gelu --set "
    "vision_config.hidden_act=quick_gelu",
    "clip convert clip-vit-b32 clip-vit-b32-tf --to transformers-tf",
    "clip convert clip-vit-b32 clip-vit-b32-bf16 --dtype bfloat16",
)


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from clip import convert

    parser.add_argument("src", metavar="SRC", help="checkpoint file or directory")
    parser.add_argument(
        "dst", metavar="DST", help="output directory (a file for keras, flax-params, openai, open_clip)"
    )
    parser.add_argument(
        "--from",
        dest="from_format",
        choices=convert.SOURCE_FORMATS + tuple(convert.ALIASES),
        default=None,
        help="source format (default: detected)",
    )
    parser.add_argument(
        "--to",
        dest="to_format",
        choices=convert.TARGET_FORMATS,
        default="canonical",
        help="target format (default canonical: config.json + model.safetensors + processor files)",
    )
    parser.add_argument("--dtype", choices=convert.DTYPES, default=None, help="cast the weights (default: as stored)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. text_config.hidden_act=quick_gelu or "
        "vision_config.num_attention_heads=16 (JSON values; repeatable)",
    )
    parser.add_argument(
        "--no-processor", dest="processor", action="store_false", help="do not write tokenizer and processor files"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    parser.set_defaults(run=run, command="convert")
    return parser


def add_parser(subparsers):
    """Add `convert` to the `clip` command's subparsers."""
    import textwrap

    parser = subparsers.add_parser(
        "convert",
        help="convert checkpoints between formats",
        description=textwrap.fill(DESCRIPTION, 100),
        epilog="examples:\n  " + "\n  ".join(EXAMPLES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return configure(parser)


def parse_overrides(items) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key] = loads_json(value, "--set")  # depth-limited
        except ValueError:
            out[key] = value  # a bare string: quick_gelu
    return out


def run(args) -> int:
    from clip import convert

    checkpoint = convert.convert(
        args.src,
        args.dst,
        from_format=args.from_format,
        to_format=args.to_format,
        dtype=args.dtype,
        overwrite=args.overwrite,
        config_overrides=parse_overrides(args.overrides),
        processor=args.processor,
    )
    for note in checkpoint.notes:
        print(f"note: {note}", file=sys.stderr)
    print(
        f"wrote {args.dst} ({args.to_format}, {checkpoint.model_class}, {len(checkpoint.arrays)} tensors)",
        file=sys.stderr,
    )
    return 0


def main(argv=None) -> int:
    parser = configure(
        argparse.ArgumentParser(
            prog="convert_weights.py",
            description=DESCRIPTION,
            epilog="examples:\n  " + "\n  ".join(EXAMPLES),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    from clip import cli_errors

    return cli_errors.run(parser.parse_args(argv))  # one line and exit 2 for bad input; CLIP_DEBUG=1: tracebacks
