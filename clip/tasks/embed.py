"""Batch embedding of images and texts, in memory or streamed to disk in resumable chunks.

In memory:

    result = embed_images(encoder, ["a.jpg", "b.png"])   # Embeddings(vectors, sources, skipped)
    result = embed_texts(encoder, ["a dog", "a cat"])

To disk (`clip embed`): `embed_to_dir(encoder, "photos/", "photos.emb")` writes

    photos.emb/manifest.json          settings (model, weights fingerprint), the finished chunks, the skipped inputs
    photos.emb/chunks/000000.safetensors (or .npy)   (n, D) float32 unit vectors
    photos.emb/chunks/000000.json     the keys (relative paths, or line numbers and texts)

Images are decoded and preprocessed on a thread pool while the model runs on the previous
batch; at most `prefetch` images are in flight and at most one chunk of vectors is held, so
memory stays flat however many images there are. Every chunk is written atomically before the
manifest names it, so an interrupted run loses at most the unfinished chunk; running again
continues with the inputs no chunk holds yet (new files added to the folder included), and
refuses a model whose weights are not the ones the manifest records. One run writes a directory
at a time (photos.emb/.lock, dropped by the system with the process).
An input that cannot be read is skipped and listed, never fatal.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import os
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from clip.common.io import atomic_path, atomic_write_json, read_json_object, write_safetensors
from clip.tasks.backends import TaskError

MANIFEST = "manifest.json"
LOCK = ".lock"  # held while a run writes the directory
FORMAT_VERSION = 1
STORAGES = ("safetensors", "npy")
TEXT_SUFFIXES = (".txt", ".text", ".lines")
# test hook: kill this process (SIGKILL, as a crash would) after writing N chunks
KILL_AFTER_CHUNKS_ENV = "CLIP_EMBED_KILL_AFTER_CHUNKS"


@dataclasses.dataclass
class Embeddings:
    """vectors[i] (float32, unit length) embeds sources[i]; skipped lists what could not be read."""

    vectors: np.ndarray
    sources: list
    skipped: list = dataclasses.field(default_factory=list)  # [{"source": ..., "reason": ...}]
    kind: str = "image"
    manifest: dict | None = None

    def __len__(self):
        return len(self.sources)


# --------------------------------------------------------------------- reading inputs


def load_image(source):
    """A decoded RGB PIL image from a path or a PIL image; errors say what is wrong with the file."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    try:
        with Image.open(source) as image:
            image.load()  # decode now: truncated files fail here, not later
            return image.convert("RGB")
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as err:
        message = str(err) or type(err).__name__
        if isinstance(err, Image.UnidentifiedImageError):
            message = "not an image PIL can read"
        raise ValueError(f"{os.fspath(source)}: {message}") from None


def list_images(directory) -> list[str]:
    """Every non-hidden file under `directory` (recursively, sorted), as /-separated relative paths.

    Files are not filtered by extension: whatever does not decode is skipped and listed later.
    """
    keys = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _is_embedding_dir(os.path.join(root, d)))
        for name in sorted(files):
            if not name.startswith("."):
                keys.append(os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/"))
    return keys


def _is_embedding_dir(path) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST))


def read_lines(path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) for each non-blank line of a UTF-8 text file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [(number, line.strip()) for number, line in enumerate(f, start=1) if line.strip()]


def detect_kind(source) -> str:
    """"image" for a folder or an image file, "text" for a .txt file of lines."""
    source = os.fspath(source)
    if os.path.isdir(source):
        return "image"
    if not os.path.exists(source):
        raise TaskError(f"{source}: no such file or directory")
    return "text" if source.lower().endswith(TEXT_SUFFIXES) else "image"


# --------------------------------------------------------------------- the pipeline


def _default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def image_batches(encoder, sources, batch_size: int = 64, workers: int | None = None, prefetch: int | None = None):
    """Yield (indices, pixel_values, failures) per batch, in order, decoding ahead on a thread pool.

    indices: positions in `sources` of the rows of pixel_values; failures: [(position, reason)].
    At most `prefetch` (default 2 batches) images are decoded ahead of the consumer.
    """
    if batch_size < 1:
        raise TaskError(f"batch size must be at least 1, got {batch_size}")
    processor = encoder.processor.image_processor
    prefetch = max(prefetch or 2 * batch_size, batch_size)

    def prepare(source):
        try:
            image = load_image(source)
            return processor.preprocess([image], return_tensors="np", num_threads=1)["pixel_values"][0], None
        except ValueError as err:  # the reason, without the path that load_image puts first
            name = os.fspath(source) if not isinstance(source, Image.Image) else ""
            return None, str(err).removeprefix(f"{name}: ")

    with ThreadPoolExecutor(max_workers=workers or _default_workers(), thread_name_prefix="clip-decode") as pool:
        pending = collections.deque()
        position = 0

        def top_up():
            nonlocal position
            while position < len(sources) and len(pending) < prefetch:
                pending.append((position, pool.submit(prepare, sources[position])))
                position += 1

        top_up()
        while pending:
            indices, pixels, failures = [], [], []
            while pending and len(indices) + len(failures) < batch_size:
                index, future = pending.popleft()
                array, error = future.result()
                if error is None:
                    indices.append(index)
                    pixels.append(array)
                else:
                    failures.append((index, error))
            top_up()  # the next batch decodes while the caller runs the model on this one
            batch = np.stack(pixels) if pixels else np.zeros((0, 3, *encoder.image_size), np.float32)
            yield indices, batch, failures


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass


def _progress(total, enabled, description, initial=0):
    """A tqdm bar on stderr when enabled and tqdm is installed, otherwise a silent stand-in."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    if not enabled:
        return _NoProgress()
    return tqdm(total=total, initial=initial, disable=not enabled, desc=description, unit="item",
                dynamic_ncols=True, leave=False)


def embed_images(encoder, images, batch_size: int = 64, workers: int | None = None, progress: bool = False,
                 names=None) -> Embeddings:
    """Embed image paths or PIL images; unreadable ones are skipped and listed, never raised.

    names: what to call each image in `sources` (default: the path, or "image <i>" for PIL images).
    """
    images = list(images)
    names = list(names) if names is not None else [
        os.fspath(image) if not isinstance(image, Image.Image) else f"image {i}" for i, image in enumerate(images)
    ]
    vectors = np.zeros((len(images), encoder.dim), np.float32)
    kept = np.zeros(len(images), bool)
    skipped = []
    with _progress(len(images), progress, "embedding images") as bar:
        for indices, pixels, failures in image_batches(encoder, images, batch_size, workers):
            if indices:
                vectors[indices] = encoder.encode_images(pixels)
                kept[indices] = True
            skipped += [{"source": names[i], "reason": reason} for i, reason in failures]
            bar.update(len(indices) + len(failures))
    return Embeddings(vectors[kept], [n for n, k in zip(names, kept) if k], skipped, "image")


def embed_texts(encoder, texts, batch_size: int = 256, progress: bool = False) -> Embeddings:
    """Embed a list of strings (each cut to the model's text length)."""
    texts = [str(t) for t in texts]
    vectors = np.zeros((len(texts), encoder.dim), np.float32)
    with _progress(len(texts), progress, "embedding texts") as bar:
        for start in range(0, len(texts), batch_size):
            vectors[start : start + batch_size] = encoder.embed_texts(texts[start : start + batch_size], batch_size)
            bar.update(min(batch_size, len(texts) - start))
    return Embeddings(vectors, texts, [], "text")


# --------------------------------------------------------------------- streaming to disk


class _ChunkWriter:
    """Appends chunks of vectors to an embedding directory; the manifest is rewritten after each."""

    def __init__(self, out, manifest):
        self.out, self.manifest = out, manifest
        self.kill_after = int(os.environ.get(KILL_AFTER_CHUNKS_ENV, "0") or 0)
        self.written = 0

    def write(self, vectors, keys, skipped, text_of=None):
        """Write one chunk (if there are vectors), then the manifest that names it."""
        index = len(self.manifest["chunks"])
        storage = self.manifest["storage"]
        name = f"chunks/{index:06d}"
        side = {"keys": keys}
        if text_of is not None:
            side["texts"] = [text_of[key] for key in keys]
        if len(keys):
            atomic_write_json(os.path.join(self.out, name + ".json"), side)
            if storage == "safetensors":
                write_safetensors({"embeddings": vectors}, os.path.join(self.out, name + ".safetensors"))
            else:
                with atomic_path(os.path.join(self.out, name + ".npy")) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, vectors)
            self.manifest["chunks"].append({"file": f"{name}.{storage}", "keys": f"{name}.json", "count": len(keys)})
            self.manifest["count"] += len(keys)
        self.manifest["skipped"] += skipped
        atomic_write_json(os.path.join(self.out, MANIFEST), self.manifest)  # the commit point
        self.written += 1
        if self.kill_after and self.written >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def _settings(encoder, kind, root, storage, shard):
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "root": root,
        "model": None if encoder.model is None else os.fspath(encoder.model),
        "weights": encoder.fingerprint,
        "backend": encoder.backend,
        "dim": encoder.dim,
        "dtype": "float32",
        "compute_dtype": encoder.dtype,
        "normalized": True,
        "storage": storage,
        "shard": list(shard),
    }


def check_same_weights(manifest: dict, fingerprint, out, advice: str, unrecorded_ok: bool = False):
    """Refuse to mix vectors of two models: embeddings of different weights live in different spaces.

    unrecorded_ok: let a manifest written before fingerprints were recorded pass (reading only).
    """
    if unrecorded_ok and manifest.get("weights") is None:
        return
    if fingerprint is not None and manifest.get("weights") != fingerprint:
        made_with = manifest.get("weights") or "unrecorded weights"
        raise TaskError(
            f"{out} holds embeddings made with other weights (model {manifest.get('model')!r}, fingerprint "
            f"{made_with}) than the model loaded now (fingerprint {fingerprint}); {advice}"
        )


def _check_out(out, overwrite):
    """Before anything is written into `out`: a directory of ours, an empty one, or a new one."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise TaskError(f"{out} is a file; --out needs a directory (it is created if missing)")
    ours = os.path.isfile(os.path.join(out, MANIFEST))
    if os.path.isdir(out) and not ours and not overwrite and set(os.listdir(out)) - {LOCK}:
        raise TaskError(f"{out} is a non-empty directory without {MANIFEST}; choose an empty or new --out")


@contextlib.contextmanager
def _exclusive(out):
    """Hold out/.lock for the whole run: two `clip embed` runs into one directory would write
    their chunks under the same names. The kernel drops the lock with the process, so a killed
    run leaves nothing to clean up."""
    os.makedirs(out, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no advisory lock to take
        yield
        return
    with open(os.path.join(out, LOCK), "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise TaskError(f"{out} is being written by another `clip embed` ({holder}); "
                            "wait for it to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_manifest(out, settings, overwrite):
    path = os.path.join(out, MANIFEST)
    if os.path.isfile(path) and not overwrite:
        manifest = read_json_object(path)
        check_same_weights(manifest, settings["weights"], out, "pass --overwrite to start again, or choose another --out")
        manifest.setdefault("compute_dtype", "float32")  # written before these options existed
        manifest.setdefault("shard", [0, 1])
        # not the model's name: the same weights under another path or hub id may go on
        for key in ("format_version", "kind", "dim", "storage", "root", "compute_dtype", "shard"):
            if manifest.get(key) != settings[key]:
                raise TaskError(
                    f"{out} holds embeddings made with {key}={manifest.get(key)!r}, not {settings[key]!r}; "
                    "pass --overwrite to start again, or choose another --out"
                )
        manifest["complete"] = False
        return manifest
    if overwrite:
        shutil.rmtree(os.path.join(out, "chunks"), ignore_errors=True)
        if os.path.isfile(path):
            os.unlink(path)
    os.makedirs(os.path.join(out, "chunks"), exist_ok=True)
    return {**settings, "complete": False, "count": 0, "chunks": [], "skipped": []}


def parse_shard(text) -> tuple[int, int]:
    """"K/N" -> (K, N), 0 <= K < N: the K-th of N disjoint parts of the input."""
    k, sep, n = str(text).partition("/")
    if sep and k.strip().isdigit() and n.strip().isdigit() and int(k) < int(n):
        return int(k), int(n)
    raise TaskError(f"--shard takes K/N with 0 <= K < N (e.g. 0/4), got {text!r}")


def _shard_of(keys, texts, shard):
    """The keys (and texts) of shard K of N: each key by a hash of its name, so a key keeps its shard
    when files are added or removed and N runs cover the input exactly once between them (a shard
    of a small input may be empty: its directory then holds no vectors)."""
    k, n = shard
    if not 0 <= k < n:
        raise TaskError(f"shard {k}/{n}: K must be in 0..N-1")
    if n == 1:
        return keys, texts
    # a cryptographic digest: CRC-like hashes of names that differ in a digit or two share residues
    keep = [i for i, key in enumerate(keys)
            if int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") % n == k]
    return [keys[i] for i in keep], (None if texts is None else [texts[i] for i in keep])


def embed_to_dir(encoder, source, out, kind: str = "auto", batch_size: int = 64, chunk_size: int = 1024,
                 storage: str = "safetensors", overwrite: bool = False, workers: int | None = None,
                 progress: bool = False, shard: tuple[int, int] = (0, 1)) -> dict:
    """Embed a folder of images, one image, or a text file of lines into the directory `out`.

    Resumes when `out` already holds a manifest for the same input and model. shard=(K, N) embeds
    only the K-th of N disjoint parts of the input (by a hash of each file name or line number,
    stable when files are added), so N processes or machines can share one input, each into its own
    `out`; load_embeddings / `clip search` take the N directories together. Returns a summary:
    {"out", "kind", "count" (vectors stored), "embedded" (this run), "reused" (from earlier
    runs), "skipped" (this run's unreadable inputs), "manifest"}.
    """
    source, out = os.fspath(source), os.fspath(out)
    if storage not in STORAGES:
        raise TaskError(f"unknown storage {storage!r}; choose {' or '.join(STORAGES)}")
    if chunk_size < 1:
        raise TaskError(f"chunk size must be at least 1, got {chunk_size}")
    kind = detect_kind(source) if kind == "auto" else kind
    if kind == "image" and os.path.isdir(source):
        root = os.path.abspath(source)
        keys = [k for k in list_images(root) if not os.path.abspath(os.path.join(root, k)).startswith(os.path.abspath(out) + os.sep)]
        texts = None
        if not keys:
            raise TaskError(f"{source}: the directory holds no files to embed")
    elif kind == "image":
        if not os.path.isfile(source):
            raise TaskError(f"{source}: no such file or directory")
        root, keys, texts = os.path.dirname(os.path.abspath(source)), [os.path.basename(source)], None
    elif kind == "text":
        if not os.path.isfile(source):
            raise TaskError(f"{source}: no such file")
        root = os.path.abspath(source)
        lines = read_lines(source)
        if not lines:
            raise TaskError(f"{source}: the file holds no non-blank lines to embed")
        keys, texts = [str(number) for number, _ in lines], [text for _, text in lines]
    else:
        raise TaskError(f"unknown kind {kind!r}; choose auto, image or text")
    keys, texts = _shard_of(keys, texts, shard)

    _check_out(out, overwrite)
    with _exclusive(out):  # one writer per directory
        manifest = _open_manifest(out, _settings(encoder, kind, root, storage, shard), overwrite)
        text_of = dict(zip(keys, texts)) if texts is not None else None
        done = {entry["source"] for entry in manifest["skipped"]}
        for chunk in manifest["chunks"]:
            side = read_json_object(os.path.join(out, chunk["keys"]))
            if text_of is not None and any(text_of.get(k) != t for k, t in zip(side["keys"], side["texts"])):
                raise TaskError(f"{source} changed since {out} was started; pass --overwrite to embed it again")
            done.update(side["keys"])
        reused = manifest["count"]
        todo = [key for key in keys if key not in done]
        writer = _ChunkWriter(out, manifest)
        buffer = _Buffer()
        embedded, skipped_now = 0, []
        with _progress(len(keys), progress, f"embedding {kind}s", initial=len(keys) - len(todo)) as bar:
            if kind == "image":
                paths = [os.path.join(root, key) for key in todo]
                for positions, pixels, failures in image_batches(encoder, paths, batch_size, workers):
                    skipped = [{"source": todo[p], "reason": reason} for p, reason in failures]
                    buffer.add(encoder.encode_images(pixels), [todo[p] for p in positions], skipped)
                    skipped_now += skipped
                    embedded += len(positions)
                    bar.update(len(positions) + len(failures))
                    while len(buffer) >= chunk_size:
                        writer.write(*buffer.take(chunk_size), text_of)
            else:
                for start in range(0, len(todo), batch_size):
                    part = todo[start : start + batch_size]
                    buffer.add(encoder.embed_texts([text_of[k] for k in part], batch_size), part, [])
                    embedded += len(part)
                    bar.update(len(part))
                    while len(buffer) >= chunk_size:
                        writer.write(*buffer.take(chunk_size), text_of)
            manifest["complete"] = True
            writer.write(*buffer.take(len(buffer)), text_of)  # the last, partial chunk and the final manifest
        return {"out": out, "kind": kind, "count": manifest["count"], "embedded": embedded, "reused": reused,
                "skipped": skipped_now, "manifest": os.path.join(out, MANIFEST)}


class _Buffer:
    """Vectors and their keys waiting to fill a chunk, plus the inputs skipped meanwhile."""

    def __init__(self):
        self.vectors, self.keys, self.skipped = [], [], []

    def __len__(self):
        return len(self.keys)

    def add(self, vectors, keys, skipped):
        if len(keys):
            self.vectors.append(vectors)
            self.keys += keys
        self.skipped += skipped

    def take(self, count):
        """(vectors, keys, skipped) of the first `count` buffered vectors, and every skipped input."""
        vectors = np.concatenate(self.vectors) if self.vectors else np.zeros((0, 0), np.float32)
        taken = (vectors[:count], self.keys[:count], self.skipped)
        self.vectors = [vectors[count:]] if len(vectors) > count else []
        self.keys, self.skipped = self.keys[count:], []
        return taken


def load_embeddings(path, kind: str | None = None) -> Embeddings:
    """The vectors and sources of an embedding directory written by `embed_to_dir` / `clip embed` (or
    in clip-retrieval's img_emb/ + metadata/ layout), or of several (a list: the shards of one input),
    in the order given.

    Sources are absolute image paths, or the texts for a text file; a partial (interrupted)
    directory loads what is finished. Several directories must hold vectors of the same weights,
    kind and width, and no input twice. Everything read is validated (clip.index.embeddings):
    a damaged directory is one TaskError naming the file.
    """
    from clip.index.embeddings import load_embeddings as load

    return load(path, kind)
