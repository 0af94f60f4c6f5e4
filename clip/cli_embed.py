"""`clip embed`: its parser and handler."""

from __future__ import annotations

import sys

from clip.cli_options import (
    _batch_options,
    _command,
    _model_options,
    _positive,
    _print_json,
    _progress,
    _report_skipped,
)


def _embed_parser(sub):
    p = _command(
        sub,
        "embed",
        "embed a folder of images or a text file of lines, resumably",
        "Embed every image under a folder (or one image, each line of a .txt file, webdataset shards, or "
        "the images a parquet/CSV/JSONL table names) into an embedding directory: float32 unit vectors in "
        "chunks (safetensors or .npy) with a small JSON manifest, and clip-retrieval's img_emb/, text_emb/ "
        "and metadata/ files beside them. Run the same command again to resume an interrupted run, repair "
        "a damaged directory or add new files; finished chunks are never recomputed.",
        [
            "clip embed photos/ --out photos.emb",
            "clip embed captions.txt --out captions.emb --model openai/clip-vit-base-patch32 --backend flax",
            "clip embed photos/ --out photos.emb --format npy --chunk-size 4096 --overwrite",
            "clip embed photos/ --out photos.emb/1 --shard 1/4 --device cuda:1   (one of 4 processes)",
            "clip embed 'laion/{00000..00099}.tar' --out laion.emb --texts-too",
            "clip embed images.parquet --out images.emb --image-column filepath --caption-column caption",
            "clip embed photos/ --out photos.emb --ray auto   (on the Ray cluster this machine belongs to)",
        ],
    )
    p.add_argument(
        "source",
        metavar="INPUT",
        help="a folder of images, an image, a .txt file (one text per line), webdataset shards "
        "(a.tar, 'shards-{00000..00009}.tar', 'a.tar::b.tar', s3:// or https:// URLs), "
        "or a parquet/CSV/JSONL table of image paths",
    )
    p.add_argument(
        "--out", required=True, metavar="EMB", help="output embedding directory (created; resumed if it exists)"
    )
    p.add_argument("--texts", action="store_true", help="read INPUT as a text file of lines whatever its name")
    p.add_argument(
        "--format",
        choices=("safetensors", "npy"),
        default="safetensors",
        help="chunk file format (default safetensors)",
    )
    p.add_argument("--chunk-size", type=_positive, default=1024, help="vectors per chunk file (default 1024)")
    p.add_argument("--overwrite", action="store_true", help="discard what --out holds and start again")
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="K/N",
        help="embed only the K-th of N disjoint parts of the input, into its own --out (default 0/1: all)",
    )
    p.add_argument(
        "--image-column",
        default=None,
        metavar="NAME",
        help="a table's image path column (default: the first of image_path, filepath, path, url, image)",
    )
    p.add_argument(
        "--caption-column",
        default=None,
        metavar="NAME",
        help="a table's caption column (default: the first of caption, text, title, if any)",
    )
    p.add_argument(
        "--texts-too",
        action="store_true",
        help="also embed the captions (webdataset .txt, a table's caption column) into text_emb/",
    )
    p.add_argument(
        "--emb-dtype",
        choices=("float16", "float32"),
        default="float16",
        help="dtype of clip-retrieval's img_emb/text_emb files (default float16, as clip-retrieval)",
    )
    p.add_argument(
        "--decode",
        choices=("auto", "process", "thread"),
        default="auto",
        help="decode images in worker processes (shared memory) or threads (default auto: processes beyond "
        "a few hundred images)",
    )
    p.add_argument(
        "--draft",
        action="store_true",
        help="decode big JPEGs at a reduced DCT scale (PIL draft): several times faster on photos "
        "far larger than the model's input, vectors within ~1e-2 cosine (see README)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster (ADDRESS, or a local one when omitted); needs clip[ray]",
    )
    _model_options(p)
    _batch_options(p)
    p.set_defaults(run=_run_embed)


def _run_embed(args) -> int:
    from clip.tasks.backends import load_encoder
    from clip.tasks.embed import embed_to_dir, open_collection, parse_shard

    source = args.source
    kind = "text" if args.texts else "auto"
    shard = parse_shard(args.shard)
    # check the input before loading a model
    open_collection(source, kind, args.out, args.image_column, args.caption_column)
    encoder = load_encoder(args.model, args.backend, device=args.device, dtype=args.dtype, compile=args.compile)
    options = dict(
        kind=kind,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        storage=args.format,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=_progress(args),
        shard=shard,
        image_column=args.image_column,
        caption_column=args.caption_column,
        texts_too=args.texts_too,
        emb_dtype=args.emb_dtype,
        draft=args.draft,
    )
    if args.ray is not None:
        from clip.tasks.embed.ray_job import embed_to_dir_ray

        summary = embed_to_dir_ray(encoder, source, args.out, address=args.ray, **options)
    else:
        summary = embed_to_dir(encoder, source, args.out, decode=args.decode, **options)
    if args.json:
        _print_json(summary)
        return 0
    reused = f" ({summary['reused']} from an earlier run)" if summary["reused"] else ""
    print(
        f"{summary['count']} {summary['kind']} vectors of {encoder.dim} dimensions in {summary['out']}{reused}; "
        f"embedded now: {summary['embedded']}, skipped now: {len(summary['skipped'])}"
    )
    for repair in summary.get("repaired", []):
        print(f"  repaired: {repair}")
    _report_skipped(summary["skipped"], sys.stdout)
    return 0
