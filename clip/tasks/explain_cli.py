"""`clip explain`: relevance maps of one image for some texts, drawn as overlays, or as JSON.

The figure: one panel per text, the model's view of the image (resized and cropped as the model
saw it) with the relevance heat map over it (matplotlib colormap, alpha), titled with the text and
its similarity, and under it the text's words, each coloured by its share of the text relevance.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clip.tasks.explain import Explanation

PANEL = 3.0  # inches per panel side (the image); the words take another WORDS
WORDS = 0.9
DPI = 100

DESCRIPTION = (
    "Which parts of an image and which words of a text make them match: Chefer et al. 2021's "
    "gradient-weighted attention relevance of the image patches and the text tokens, for the "
    "image-text similarity, in any backend. Writes one panel per text (--out) and/or prints the "
    "patch grids and token scores (--json)."
)
EXAMPLES = [
    'clip explain dog.jpg --text "a dog" --text "a ball" --out map.png --model openai/clip-vit-base-patch32',
    'clip explain shapes.png --text "a red circle" --json',
]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `explain` to the `clip` command's subparsers."""

    from clip.cli import _command, _model_options

    p = _command(
        subparsers,
        "explain",
        "relevance maps: which image regions and words drive an image-text match",
        DESCRIPTION,
        EXAMPLES,
    )
    p.add_argument("image", metavar="IMAGE", help="the image file")
    p.add_argument("--text", action="append", required=True, metavar="TEXT", help="a text to explain (repeat for more)")
    p.add_argument("--out", metavar="PNG", help="write the overlays to this PNG file")
    p.add_argument(
        "--start-layer",
        type=int,
        default=0,
        metavar="N",
        help="first attention layer counted (default 0: all; -1: the last only, as Chefer et al.'s notebook)",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the heat map over the image (default 0.5)")
    _model_options(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from clip.tasks.backends import TaskError, load_encoder
    from clip.tasks.explain import explain

    if not args.out and not args.json:
        raise TaskError("nothing to do: give --out PNG, --json or both")
    if not 0 <= args.alpha <= 1:
        raise TaskError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.out and not args.out.lower().endswith(".png"):
        raise TaskError(f"--out {args.out}: the figure is written as PNG; name it .png")
    texts = [t.strip() for t in args.text]
    if not all(texts):
        raise TaskError("--text is empty; give the text to explain")
    encoder = load_encoder(args.model, args.backend, device=args.device, dtype=args.dtype)
    maps = explain(encoder, args.image, texts, start_layer=args.start_layer)
    if args.out:
        plot_explanations(maps, args.out, alpha=args.alpha)
    if args.json:
        print(
            json.dumps(
                {"image": args.image, "out": args.out, "explanations": [m.to_json() for m in maps]},
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        for found in maps:
            words = "  ".join(f"{token} {share:.0%}" for token, share in found.word_scores())
            print(f"{found.similarity:7.2f}  {found.text}  [{words}]")
        print(f"wrote {args.out}")
    return 0


def plot_explanations(maps: Sequence[Explanation], out: str, alpha: float = 0.5, colormap: str = "jet") -> str:
    """One panel per Explanation: the image with its heat map over it, the words coloured under it."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from clip.common.io import atomic_path

    figure = Figure(figsize=(PANEL * len(maps), PANEL + WORDS), dpi=DPI)
    height = PANEL + WORDS
    cmap = colormaps[colormap]
    for i, found in enumerate(maps):
        left = i / len(maps)
        panel = figure.add_axes((left + 0.02 / len(maps), WORDS / height, 0.96 / len(maps), PANEL / height * 0.9))
        size = found.image.shape[:2]
        panel.imshow(found.image, extent=(0, size[1], size[0], 0))
        panel.imshow(found.heatmap, cmap=cmap, alpha=alpha, vmin=0, vmax=1, extent=(0, size[1], size[0], 0))
        panel.set_title(textwrap.shorten(f"{found.text} ({found.similarity:.2f})", 48, placeholder="..."), fontsize=9)
        panel.axis("off")
        words = figure.add_axes((left + 0.02 / len(maps), 0.02, 0.96 / len(maps), (WORDS - 0.1) / height))
        words.axis("off")
        scores = found.word_scores()
        top = max((share for _, share in scores), default=0.0) or 1.0
        x, line = 0.0, 0
        # words left to right, on up to three lines (about 0.022 of the width per character)
        for token, share in scores:
            step = 0.04 + 0.022 * len(token)
            if x > 0 and x + step > 1.0:
                x, line = 0.0, line + 1
            if line > 2:
                break
            words.text(
                x,
                0.8 - 0.35 * line,
                token,
                fontsize=8,
                ha="left",
                va="center",
                transform=words.transAxes,
                bbox={"facecolor": cmap(share / top), "alpha": 0.6, "edgecolor": "none", "pad": 1.5},
            )
            x += step
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return out
