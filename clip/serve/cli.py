"""`clip serve INDEX`: the search API and page over HTTP (binds 127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from clip.cli import _command, _model_options, _positive

if TYPE_CHECKING:
    from clip.serve.app import Searcher


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "serve",
        "serve an index over HTTP: a JSON search API (clip-retrieval's /knn-service too) and a page",
        "Serve a built index (`clip index`) or an embedding directory: POST /search (text, base64 image or "
        "vector), POST /search/image (upload), POST /knn-service (clip-retrieval's ClipClient works against "
        "it), GET /image/ID (the index's own images only), the page at /, the OpenAPI docs at /docs. "
        "Binds 127.0.0.1 unless --host says otherwise. Queries are embedded with the model the vectors "
        "were made with unless --model says otherwise (other weights are refused).",
        [
            "clip serve photos.emb                        (http://127.0.0.1:1234/)",
            "clip serve photos.idx --port 8080 --backend pt --device cuda",
        ],
    )
    p.add_argument("index", metavar="INDEX", help="a built index directory, or an embedding directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=1234, help="port (default 1234)")
    p.add_argument("--max-k", type=_positive, default=1000, help="largest k a request may ask (default 1000)")
    p.add_argument("--max-body-mb", type=_positive, default=8, help="largest request body in MiB (default 8)")
    p.add_argument("--exact", action="store_true", help="search the vectors exactly even when a built index exists")
    _model_options(p, "model for the queries (default: the one the vectors were made with)")
    p.set_defaults(run=_run_serve)


def build_searcher(
    index_path: str,
    model: str | None = None,
    backend: str = "pt",
    device: str = "auto",
    dtype: str = "float32",
    exact: bool = False,
    max_k: int = 1000,
) -> Searcher:
    from clip.serve.app import Searcher
    from clip.tasks.backends import load_encoder
    from clip.tasks.embed import check_same_weights
    from clip.tasks.search import EmbeddingIndex

    index = EmbeddingIndex.load(index_path, exact=exact)
    if index.note:
        print(f"clip serve: {index.note}", file=sys.stderr)
    encoder = load_encoder(
        model if model is not None else index.manifest.get("model"), backend, device=device, dtype=dtype
    )
    check_same_weights(
        index.manifest,
        encoder.fingerprint,
        index_path,
        "pass --model with the model the vectors were made with",
        unrecorded_ok=True,
    )
    name = os.path.basename(os.path.normpath(os.fspath(index_path)))
    return Searcher(index, encoder, name=name, max_k=max_k)


def _run_serve(args) -> int:
    import uvicorn

    from clip.serve.app import create_app

    searcher = build_searcher(args.index, args.model, args.backend, args.device, args.dtype, args.exact, args.max_k)
    app = create_app(searcher, max_body=args.max_body_mb << 20)
    print(
        f"serving {len(searcher.index)} {searcher.index.kind} embeddings of {args.index} on "
        f"http://{args.host}:{args.port}/ "
        f"({'ANN ' + searcher.index.manifest.get('kind', '') if searcher.index.engine is not None else 'exact'})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
