"""`clip similarity`: its parser and handler."""

from __future__ import annotations

import os

from clip.cli_options import (
    _command,
    _expand_images,
    _fail_on_explicit,
    _model_options,
    _positive,
    _print_json,
    _report_skipped,
)


def _similarity_parser(sub):
    p = _command(
        sub,
        "similarity",
        "image x text cosine similarity matrix as a PNG heatmap",
        "Embed images and texts, print their cosine similarity matrix and draw it as a heatmap with the "
        "images as thumbnails and the texts as row labels (the figure of the CLIP notebook).",
        [
            'clip similarity cat.jpg dog.jpg --texts "a cat" "a dog" --out map.png',
            "clip similarity photos/ --texts-file captions.txt --out map.png --cell 128 --json",
        ],
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    texts = p.add_mutually_exclusive_group(required=True)
    texts.add_argument("--texts", nargs="+", metavar="TEXT", help="the texts (rows of the map)")
    texts.add_argument("--texts-file", metavar="FILE", help="a text file, one text per line")
    p.add_argument("--out", required=True, metavar="PNG", help="where to write the heatmap")
    p.add_argument("--cell", type=_positive, default=96, help="pixels per cell and thumbnail (default 96)")
    _model_options(p)
    p.set_defaults(run=_run_similarity)


def _run_similarity(args) -> int:
    from clip.tasks.backends import TaskError, load_encoder
    from clip.tasks.embed import read_lines
    from clip.tasks.similarity import plot_similarity, similarity_matrix

    if args.texts_file is not None:
        if not os.path.isfile(args.texts_file):
            raise TaskError(f"{args.texts_file}: no such file")
        texts = [text for _, text in read_lines(args.texts_file)]
    else:
        texts = [t.strip() for t in args.texts if t.strip()]
    if not texts:
        raise TaskError("no texts given; pass --texts or a non-empty --texts-file")
    sources, explicit = _expand_images(args.images)
    encoder = load_encoder(args.model, args.backend, device=args.device, dtype=args.dtype, compile=args.compile)
    similarity, kept, skipped = similarity_matrix(encoder, sources, texts)
    _fail_on_explicit(skipped, explicit)
    if not kept:
        raise TaskError("none of the images could be read")
    plot_similarity(similarity, kept, texts, args.out, cell=args.cell)
    if args.json:
        _print_json(
            {"images": kept, "texts": texts, "similarity": similarity.tolist(), "out": args.out, "skipped": skipped}
        )
        return 0
    width = max(len(os.path.basename(s)) for s in kept)
    print(f"{'':<{width}}  " + "  ".join(f"T{j + 1:<5}" for j in range(len(texts))))
    for source, row in zip(kept, similarity):
        print(f"{os.path.basename(source):<{width}}  " + "  ".join(f"{v:6.3f}" for v in row))
    for j, text in enumerate(texts):
        print(f"T{j + 1}: {text}")
    print(f"wrote {args.out}")
    _report_skipped(skipped)
    return 0
