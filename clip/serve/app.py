"""`clip serve`: a JSON search API over a built index (or an embedding directory), and a small page.

    POST /knn-service     clip-retrieval's back-end request and response (its ClipClient works unchanged)
    POST /search          {"text" | "image" (base64) | "vector", "k", "dedup"} -> {"results": [...]}
    POST /search/image    multipart upload (file, k, dedup) -> the same
    GET  /image/{id}      the image file of entry id (only the index's own sources: nothing a request names)
    GET  /indices-list    [the index's name], as clip-retrieval's back-end
    GET  /                the page; GET /docs the OpenAPI docs

Every bad request is a 4xx with a one-line JSON body {"error": "..."}; anything unexpected is a 500
with {"error": "internal error"} (the traceback goes to the server log, never to the client).
Request bodies are capped (max_body) and k is capped (max_k).
(No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations as types.)
"""

import base64
import binascii
import io
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Annotated

import numpy as np

from clip.common.vectors import l2_normalize
from clip.errors import ClipError
from clip.tasks.backends import TaskError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from clip.tasks.backends import Encoder
    from clip.tasks.search import EmbeddingIndex

log = logging.getLogger("clip.serve")
DEDUP_COSINE = 0.94  # hits at least this close to a better one are dropped (clip-retrieval's threshold)
MAX_IMAGE_PIXELS = 40_000_000


class BadRequest(ClipError):
    """A request the service cannot answer; `status` is the HTTP status it answers with instead."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Searcher:
    """The index plus the query encoder, shared by all requests (encoder calls are serialized:
    a model call already uses every core, and tokenizers are not all thread-safe)."""

    def __init__(
        self, index: "EmbeddingIndex", encoder: "Encoder | None" = None, name: str = "index", max_k: int = 1000
    ) -> None:
        self.index, self.encoder, self.name, self.max_k = index, encoder, name, max_k
        self._encoder_lock = threading.Lock()

    def check_k(self, k: object) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_k:
            raise BadRequest(f"k must be an integer from 1 to {self.max_k}, got {k!r}")
        return k

    def embed_text(self, text: object) -> np.ndarray:
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("text must be a non-empty string")
        if len(text) > 10_000:
            raise BadRequest(f"text is {len(text)} characters; at most 10000")
        # _encode refuses a server without a model before it calls these
        return self._encode(lambda: self.encoder.embed_texts([text]))  # type: ignore[union-attr]

    def embed_image_bytes(self, data: bytes, what: str = "image") -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise BadRequest(f"{what} is {image.width}x{image.height}; at most {MAX_IMAGE_PIXELS} pixels", 413)
                image.load()
                rgb = image.convert("RGB")
        except BadRequest:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise BadRequest(
                f"{what} is not an image PIL can read ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
            ) from None
        return self._encode(lambda: self.encoder.encode_images(self.encoder.preprocess([rgb])))  # type: ignore[union-attr]

    def embed_image_base64(self, text: object) -> np.ndarray:
        if not isinstance(text, str) or not text:
            raise BadRequest("image must be a base64 string")
        if "," in text[:100] and text.startswith("data:"):
            text = text.split(",", 1)[1]  # a data: URL from a browser
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("image is not valid base64") from None
        return self.embed_image_bytes(data)

    def vector(self, values: object) -> np.ndarray:
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            raise BadRequest("a vector query must be a list of numbers")
        vector = np.asarray(values, np.float32)[None]
        if vector.shape[1] != self.index.dim:
            raise BadRequest(f"the vector has {vector.shape[1]} numbers but the index holds {self.index.dim}-d vectors")
        if not np.isfinite(vector).all() or not np.linalg.norm(vector) > 0:
            raise BadRequest("the vector must be finite and non-zero")
        return vector

    def _encode(self, fn) -> np.ndarray:
        if self.encoder is None:
            raise BadRequest("this server has no model loaded: send vector queries", 422)
        with self._encoder_lock:
            return np.asarray(fn(), np.float32)

    def search(self, query: np.ndarray, k: int, dedup: bool = False, base_url: str = "") -> list[dict]:
        """The k best entries for one query vector as JSON rows (id, score, source, caption, image_url)."""
        fetch = min(len(self.index), k * 3 if dedup else k)
        scores, ids = self.index.topk(query, fetch)
        scores, ids = scores[0], ids[0]
        keep = ids >= 0
        scores, ids = scores[keep], ids[keep]
        if dedup and len(ids):
            scores, ids = _dedup(scores, ids, self.index.vectors_of(ids))
        rows = []
        captions, urls = self.index.tables.get("captions"), self.index.tables.get("urls")
        for score, i in zip(scores[:k], ids[:k]):
            i = int(i)
            source = str(self.index.sources[i])
            row = {"id": i, "score": float(score), "source": source}
            caption = captions[i] if captions is not None else ""
            row["caption"] = caption or (source if self.index.kind == "text" else os.path.basename(source))
            if self.index.kind == "image":
                row["image_url"] = f"{base_url}image/{i}"
            if urls is not None and urls[i]:
                row["url"] = urls[i]
            rows.append(row)
        return rows

    def image_path(self, i: int) -> str:
        """The file of entry i, only for an image index and only a regular file: the id is the only
        thing a request chooses, so nothing outside the index's own sources can be reached."""
        if self.index.kind != "image":
            raise BadRequest("this index holds texts, not images", 404)
        if not 0 <= i < len(self.index):
            raise BadRequest(f"no entry {i} (the index holds {len(self.index)})", 404)
        path = str(self.index.sources[i])
        if not os.path.isfile(path):
            raise BadRequest(f"the image of entry {i} is not available", 404)
        return path


def _dedup(scores, ids, vectors):
    """Drop each hit whose vector is within DEDUP_COSINE of a better hit already kept."""
    # the index's own dtype and its historic 1e-12 floor: the same cosines as before the shared helper
    vectors = l2_normalize(vectors, axis=1, eps=1e-12, dtype=None)
    kept = []
    for row in range(len(ids)):
        if not kept or float(np.max(vectors[kept] @ vectors[row])) < DEDUP_COSINE:
            kept.append(row)
    return scores[kept], ids[kept]


def knn_service(searcher: Searcher, body: dict, base_url: str) -> list[dict]:
    """clip-retrieval's /knn-service: one of text, image (base64), embedding_input; image_url is refused
    (this server does not fetch from the network); modality must be the index's kind."""
    modality = body.get("modality") or "image"
    if modality not in ("image", "text"):
        raise BadRequest(f"modality must be image or text, got {modality!r}")
    if modality != searcher.index.kind:
        raise BadRequest(
            f"this index holds {searcher.index.kind} embeddings; ask with modality={searcher.index.kind!r}"
        )
    k = searcher.check_k(body.get("num_images", 40))
    if body.get("text"):
        query = searcher.embed_text(body["text"])
    elif body.get("image"):
        query = searcher.embed_image_base64(body["image"])
    elif body.get("embedding_input") is not None:
        query = searcher.vector(body["embedding_input"])
    elif body.get("image_url"):
        raise BadRequest(
            "image_url is not supported: this server never fetches from the network; send the image as base64"
        )
    else:
        raise BadRequest("send one of text, image (base64) or embedding_input")
    rows = searcher.search(query, k, bool(body.get("deduplicate", True)), base_url)
    out = []
    for row in rows:
        item = {"id": row["id"], "similarity": row["score"], "caption": row["caption"]}
        if "image_url" in row:
            item["url"] = row.get("url") or row["image_url"]
            item["image_path"] = row["source"]
        out.append(item)
    return out


def search_json(searcher: Searcher, body: dict, base_url: str) -> dict:
    """POST /search: exactly one of text, image (base64), vector; k; dedup."""
    k = searcher.check_k(body.get("k", 10))
    given = [key for key in ("text", "image", "vector") if body.get(key) is not None]
    if len(given) != 1:
        raise BadRequest("send exactly one of text, image (base64) or vector")
    started = time.perf_counter()
    embed = {"text": searcher.embed_text, "image": searcher.embed_image_base64, "vector": searcher.vector}[given[0]]
    query = embed(body[given[0]])
    results = searcher.search(query, k, bool(body.get("dedup", False)), base_url)
    return {"results": results, "took_ms": round(1e3 * (time.perf_counter() - started), 3)}


def create_app(searcher: Searcher, max_body: int = 8 << 20) -> "FastAPI":
    """The FastAPI application over `searcher`."""
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from clip.serve.page import render_page

    app = FastAPI(
        title="clip serve",
        description=f"Search {searcher.name}: {len(searcher.index)} "
        f"{searcher.index.kind} "
        "embeddings, by text, image or vector; clip-retrieval's /knn-service included.",
        version="1",
    )
    app.add_middleware(BodyLimit, max_body=max_body)

    def error(status, message):
        return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)

    @app.exception_handler(BadRequest)
    async def _bad(request, exc: BadRequest):
        return error(exc.status, exc)

    @app.exception_handler(TaskError)
    async def _task(request, exc):
        return error(400, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = first.get("msg", "invalid request")
        return error(400, f"{where}: {message}" if where else message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc):
        return error(exc.status_code, exc.detail)

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        log.exception("internal error on %s", request.url.path)
        return error(500, "internal error")

    async def json_body(request: Request) -> dict:
        # parsed whatever the Content-Type: ClipClient posts json.dumps(...) without one
        from clip.common.io import loads_json

        raw = await request.body()
        try:
            body = loads_json(raw, "the request body")
        except ValueError as err:
            raise BadRequest(str(err)) from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        return body

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return render_page(searcher.name, len(searcher.index), searcher.index.kind, searcher.encoder is not None)

    @app.get("/indices-list", summary="clip-retrieval: the names of the indices served")
    def indices_list():
        return [searcher.name]

    @app.post("/knn-service", summary="clip-retrieval's back-end query (text, image base64, embedding_input)")
    async def knn(request: Request):
        # model calls and searches run on the thread pool: the event loop keeps accepting requests
        return await run_in_threadpool(knn_service, searcher, await json_body(request), str(request.base_url))

    @app.post("/search", summary="text, image (base64) or vector query -> the k nearest entries")
    async def search(request: Request):
        return await run_in_threadpool(search_json, searcher, await json_body(request), str(request.base_url))

    @app.post("/search/image", summary="an uploaded image -> the k nearest entries")
    async def search_image(
        request: Request,
        file: Annotated[UploadFile, File()],
        k: Annotated[int, Form()] = 10,
        dedup: Annotated[bool, Form()] = False,
    ):
        k = searcher.check_k(k)
        data, name = await file.read(), f"upload {file.filename!r}"

        def run():
            started = time.perf_counter()
            results = searcher.search(searcher.embed_image_bytes(data, name), k, dedup, str(request.base_url))
            return {"results": results, "took_ms": round(1e3 * (time.perf_counter() - started), 3)}

        return await run_in_threadpool(run)

    @app.get("/image/{entry}", summary="the image file of an entry of an image index")
    def image(entry: int):
        return FileResponse(searcher.image_path(entry))

    return app


class BodyLimit:
    """ASGI middleware: a request body over max_body bytes gets 413 (by Content-Length, or while streaming)."""

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _reject(send, f"request body over {self.max_body} bytes")
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise BadRequest(f"request body over {self.max_body} bytes", 413)
            return message

        try:
            await self.app(scope, limited, send)
        except BadRequest as exc:
            await _reject(send, str(exc))


async def _reject(send, message):
    import json

    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
