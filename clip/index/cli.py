"""`clip index` (build a persisted ANN index) and `clip search` (query one, or an embedding directory)."""

from __future__ import annotations

import argparse
import sys

from clip.cli import _command, _fail_on_explicit, _model_options, _positive, _print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    _index_parser(sub)
    _search_parser(sub)


def _index_parser(sub):
    p = _command(
        sub,
        "index",
        "build a persisted, memory-mapped ANN index over embedding directories",
        "Build an approximate nearest-neighbour index over the vectors of one or more embedding directories "
        "(`clip embed` output or clip-retrieval's img_emb/ layout), sized to --memory. auto picks exact "
        "search (flat) below 50,000 vectors, else an HNSW graph over float16 (or int8) vectors, else IVF-PQ; "
        "its search setting is tuned to recall@10 >= 0.97 on sample queries. The index keeps each entry's "
        "source and the weights fingerprint; `clip search` and `clip serve` use it.",
        [
            "clip index photos.emb                          (writes photos.emb/index)",
            "clip index part0.emb part1.emb --out photos.idx --memory 8GB",
            "clip index photos.emb --kind hnsw --json",
        ],
    )
    p.add_argument("embeddings", metavar="EMB", nargs="+", help="embedding directories (the shards of one input)")
    p.add_argument("--out", default=None, metavar="INDEX", help="where to write the index (default EMB/index)")
    p.add_argument("--memory", default="4GB", help="memory the index may occupy when searched (default 4GB)")
    p.add_argument(
        "--kind", choices=("auto", "flat", "hnsw", "ivfpq"), default="auto", help="index kind (default auto)"
    )
    p.add_argument("--threads", type=_positive, default=None, help="build threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    p.set_defaults(run=_run_index)


def _run_index(args) -> int:
    from clip.index.build import build_index

    info = build_index(args.embeddings, args.out, args.memory, args.kind, threads=args.threads or 0)
    if args.json:
        _print_json(info)
        return 0
    params = ", ".join(f"{k}={v}" for k, v in info["params"].items())
    print(
        f"indexed {info['count']} x {info['dim']} vectors as {info['kind']} ({params}) in {info['build_seconds']:.1f} s"
    )
    print(
        f"recall@10 on sample queries {info['calibration_recall_at_10']}, about "
        f"{info['memory_estimate'] / 2**20:.0f} MiB of {info['memory_budget'] / 2**20:.0f} MiB"
    )
    print(f"wrote {info['out']}")
    return 0


def _search_parser(sub):
    p = _command(
        sub,
        "search",
        "search an embedding directory or a built index by text or by image, or list near duplicates",
        "Find the entries closest to a text or an image by cosine similarity: text -> image, image -> image, "
        "image -> text, text -> text. A built index (`clip index`) is used when there is one: an index "
        "directory, or EMB/index when it is up to date with EMB; --exact searches the vectors exactly. "
        "Queries are embedded with the model the vectors were made with unless --model says otherwise.",
        [
            'clip search photos.emb --text "a dog on a beach" --top-k 10',
            "clip search photos.emb --image query.jpg --json",
            'clip search photos.idx --text "a red car"            (a built index)',
            'clip search photos.emb --exact --text "a red car"    (exact, even with an index)',
            "clip search captions.emb --image photo.jpg          (image -> text)",
            "clip search photos.emb --duplicates 0.95             (near-duplicate pairs)",
            'clip search photos.emb/0 photos.emb/1 --text "a cat"  (the shards of one input)',
        ],
    )
    p.add_argument(
        "index",
        metavar="EMB_OR_INDEX",
        nargs="+",
        help="an embedding directory, several (the shards of one input), or a built index",
    )
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", action="append", metavar="TEXT", help="a text query (repeat for several)")
    query.add_argument("--image", action="append", metavar="PATH", help="an image query (repeat for several)")
    query.add_argument("--duplicates", type=float, metavar="THRESHOLD", help="list pairs with cosine >= THRESHOLD")
    p.add_argument("--top-k", type=_positive, default=5, help="results per query (default 5)")
    p.add_argument("--exact", action="store_true", help="exact numpy search even when a built index exists")
    _model_options(p, "model for the queries (default: the one the embeddings were made with)")
    p.set_defaults(run=_run_search)


def _run_search(args) -> int:
    from clip.tasks.backends import load_encoder
    from clip.tasks.embed import check_same_weights, embed_images
    from clip.tasks.search import EmbeddingIndex, near_duplicates

    where = args.index if len(args.index) > 1 else args.index[0]
    index = EmbeddingIndex.load(where, exact=args.exact or args.duplicates is not None)
    if index.note:
        print(f"clip search: {index.note}", file=sys.stderr)
    if args.duplicates is not None:
        pairs = near_duplicates(index.vectors, args.duplicates)
        rows = [{"a": index.sources[i], "b": index.sources[j], "score": s} for i, j, s in pairs]
        if args.json:
            _print_json(rows)
        else:
            print(f"{len(rows)} pair(s) with cosine >= {args.duplicates}")
            for row in rows:
                print(f"  {row['score']:.4f}  {row['a']}  ~  {row['b']}")
        return 0
    model = args.model if args.model is not None else index.manifest.get("model")
    encoder = load_encoder(model, args.backend, device=args.device, dtype=args.dtype, compile=args.compile)
    check_same_weights(
        index.manifest,
        encoder.fingerprint,
        " ".join(args.index),
        "pass --model with the model the vectors were made with",
        unrecorded_ok=True,
    )
    if args.text:
        queries, vectors = args.text, encoder.embed_texts(args.text)
    else:
        embedded = embed_images(encoder, args.image)
        _fail_on_explicit(embedded.skipped, set(args.image))
        queries, vectors = args.image, embedded.vectors
    results = []
    for query, hits in zip(queries, index.search(vectors, args.top_k)):
        results.append(
            {
                "query": query,
                "results": [
                    {"rank": r, "score": h.score, "index": h.index, "source": h.source}
                    for r, h in enumerate(hits, start=1)
                ],
            }
        )
    if args.json:
        _print_json(results)
        return 0
    for result in results:
        print(f"query: {result['query']}")
        print(f"  {'rank':>4}  {'score':>7}  {index.kind or 'source'}")
        for hit in result["results"]:
            print(f"  {hit['rank']:>4}  {hit['score']:7.4f}  {hit['source']}")
    return 0
