"""The `clip` command line (`clip ...` or `python -m clip ...`).

Each task subcommand parses its arguments here and calls clip.tasks; nothing here imports a
deep-learning framework (the encoder does, for the chosen --backend). Output is a table by
default and JSON with --json; a bad argument or input prints one line and exits with status 2.
"""

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


# --------------------------------------------------------------------- embed


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


# --------------------------------------------------------------------- eval-retrieval


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


# --------------------------------------------------------------------- similarity


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
