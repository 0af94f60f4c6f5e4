"""The job: an input collection -> the pipeline -> chunks in a resumable embedding directory.

`embed_to_dir(encoder, "photos/", "photos.emb")` embeds a folder (or one image, a text file of
lines, webdataset shards, a table of image paths) into the directory layout of clip.tasks.embed.layout.
At most `prefetch` images are in flight and at most one chunk of vectors is held, so memory stays
flat however many images there are. Running again continues with the inputs no chunk holds yet
(new files added to the folder included), after verifying and repairing what the manifest names,
and refuses a model whose weights are not the ones the manifest records. One run writes a
directory at a time (EMB/.lock, dropped by the system with the process).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias, cast

import numpy as np

from clip.common.io import read_json_object
from clip.tasks.backends import Encoder, TaskError
from clip.tasks.embed.chunk_writer import ChunkWriter
from clip.tasks.embed.inputs import Item, open_collection
from clip.tasks.embed.pipeline import encode_batch, finite_rows, image_batches, progress_bar
from clip.tasks.embed.store import EMB_DTYPES, MANIFEST, STORAGES, check_out, exclusive, open_manifest, settings

# what embed_to_dir reads: a folder, a file, a shard pattern, or a list of webdataset shards
Sources: TypeAlias = "str | os.PathLike[str] | list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...]"


def parse_shard(text: str) -> tuple[int, int]:
    """ "K/N" -> (K, N), 0 <= K < N: the K-th of N disjoint parts of the input."""
    k, sep, n = str(text).partition("/")
    if sep and k.strip().isdigit() and n.strip().isdigit() and int(k) < int(n):
        return int(k), int(n)
    raise TaskError(f"--shard takes K/N with 0 <= K < N (e.g. 0/4), got {text!r}")


def in_shard(key: str, shard: Sequence[int]) -> bool:
    """Whether `key` belongs to shard K of N: by a hash of its name, so a key keeps its shard when
    inputs are added or removed and N runs cover the input exactly once between them (a shard of a
    small input may be empty: its directory then holds no vectors)."""
    k, n = shard
    if n == 1:
        return True
    # a cryptographic digest: CRC-like hashes of names that differ in a digit or two share residues
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") % n == k


class _Buffer:
    """Vectors and their rows waiting to fill a chunk, plus the inputs skipped meanwhile."""

    def __init__(self):
        self.vectors, self.text_vectors, self.rows, self.skipped = [], [], [], []

    def __len__(self):
        return len(self.rows)

    def add(self, vectors, rows, skipped, text_vectors=None):
        if rows:
            self.vectors.append(vectors)
            if text_vectors is not None:
                self.text_vectors.append(text_vectors)
            self.rows += rows
        self.skipped += skipped

    def take(self, count):
        """The first `count` rows (key, source, text, metadata) with their vectors, and every skipped input."""
        vectors = np.concatenate(self.vectors) if self.vectors else np.zeros((0, 0), np.float32)
        texts = np.concatenate(self.text_vectors) if self.text_vectors else None
        rows, skipped = self.rows[:count], self.skipped
        self.vectors = [vectors[count:]] if len(vectors) > count else []
        self.text_vectors = [texts[count:]] if texts is not None and len(texts) > count else []
        self.rows, self.skipped = self.rows[count:], []
        return vectors[:count], rows, skipped, None if texts is None else texts[:count]


def _done_keys(out, manifest, collection):
    """The keys the directory holds already (embedded or skipped); for a text file, check that the
    lines the chunks hold are still the same."""
    done = {entry.get("key", entry.get("source")) for entry in manifest.get("skipped", []) if isinstance(entry, dict)}
    text_of = {item.key: item.caption for item in collection.items} if collection.input == "lines" else None
    for chunk in manifest["chunks"]:
        side = read_json_object(os.path.join(out, chunk["keys"]))
        if text_of is not None and any(text_of.get(k) != t for k, t in zip(side["keys"], side["texts"])):
            raise TaskError(f"{collection.root} changed since {out} was started; pass --overwrite to embed it again")
        done.update(side["keys"])
        done.update(e.get("key", e.get("source")) for e in side.get("skipped", []) if isinstance(e, dict))
    return done


class Job:
    """One run into an embedding directory, whatever computes the vectors (this process or Ray):
    checks the input and the directory, holds the lock, knows what is done, buffers vectors into
    chunks and commits them. Use as a context manager; feed it with add(), then finish()."""

    def __init__(
        self,
        encoder: Encoder,
        source: Sources,
        out: str | os.PathLike[str],
        kind: str = "auto",
        chunk_size: int = 1024,
        storage: str = "safetensors",
        overwrite: bool = False,
        shard: Sequence[int] = (0, 1),
        image_column: str | None = None,
        caption_column: str | None = None,
        texts_too: bool = False,
        emb_dtype: str = "float16",
        listing: bool = True,
    ) -> None:
        if isinstance(source, (list, tuple)):
            source = "::".join(os.fspath(s) for s in source)
        self.source, self.out = os.fspath(source), os.fspath(out)
        if storage not in STORAGES:
            raise TaskError(f"unknown storage {storage!r}; choose {' or '.join(STORAGES)}")
        if emb_dtype not in EMB_DTYPES:
            raise TaskError(f"unknown embedding dtype {emb_dtype!r}; choose {' or '.join(EMB_DTYPES)}")
        if chunk_size < 1:
            raise TaskError(f"chunk size must be at least 1, got {chunk_size}")
        if not 0 <= shard[0] < shard[1]:
            raise TaskError(f"shard {shard[0]}/{shard[1]}: K must be in 0..N-1")
        # listing=False: Ray Data lists and reads the inputs (clip.tasks.embed.ray_readers), not this process
        self.collection = open_collection(self.source, kind, self.out, image_column, caption_column, listing)
        if texts_too and (self.collection.kind != "image" or not self.collection.has_captions):
            raise TaskError(
                f"{self.source}: --texts-too needs captions (webdataset .txt members or a table's caption column)"
            )
        self.encoder, self.chunk_size, self.shard, self.texts_too = encoder, chunk_size, tuple(shard), texts_too
        self.wanted = settings(
            encoder,
            self.collection.kind,
            self.collection.input,
            self.collection.root,
            storage,
            shard,
            emb_dtype,
            texts_too,
        )
        self.overwrite = overwrite
        check_out(self.out, overwrite)
        self.embedded = 0
        self.skipped: list[dict[str, str]] = []

    def __enter__(self):
        self._lock = exclusive(self.out)
        self._lock.__enter__()  # one writer per directory
        try:
            self.manifest, self.repairs = open_manifest(self.out, self.wanted, self.overwrite)
            self.done = _done_keys(self.out, self.manifest, self.collection)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        self.reused = self.manifest["count"]
        self.writer, self.buffer = ChunkWriter(self.out, self.manifest), _Buffer()
        return self

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)

    def todo(self) -> Iterator[Item]:
        """The items of this shard that no chunk holds yet."""
        return (
            item for item in self.collection.iterate() if item.key not in self.done and in_shard(item.key, self.shard)
        )

    def add_images(
        self,
        finished: Sequence[tuple[Item, tuple[int, int]]],
        vectors: np.ndarray,
        failures: Sequence[tuple[Item, str]],
        captions: np.ndarray | None = None,
    ) -> None:
        """finished: [(item, (width, height))] with their vectors; failures: [(item, reason)]."""
        skipped = [{"key": item.key, "source": item.source, "reason": reason} for item, reason in failures]
        rows = [_image_row(item, size, self.collection) for item, size in finished]
        self.buffer.add(vectors, rows, skipped, captions)
        self.skipped += skipped
        self.embedded += len(finished)
        self._flush(self.chunk_size)

    def add_texts(self, items: Sequence[Item], vectors: np.ndarray) -> None:
        """Texts embedded: their items and vectors, in order."""
        self.buffer.add(vectors, [{"key": item.key, "caption": item.caption} for item in items], [])
        self.embedded += len(items)
        self._flush(self.chunk_size)

    def _flush(self, size):
        while len(self.buffer) >= size:
            _write(self.writer, self.buffer, size, self.collection)

    def finish(self) -> dict[str, Any]:
        """Write the last chunk and the final manifest; the summary embed_to_dir returns."""
        self.manifest["complete"] = True
        # the last, partial chunk and the final manifest
        _write(self.writer, self.buffer, len(self.buffer), self.collection)
        if self.manifest["count"] == 0 and self.skipped:
            first = self.skipped[0]
            raise TaskError(
                f"{self.source}: nothing could be embedded; {len(self.skipped)} input(s) skipped "
                f"(first: {first['source']}: {first['reason']})"
            )
        return {
            "out": self.out,
            "kind": self.collection.kind,
            "count": self.manifest["count"],
            "embedded": self.embedded,
            "reused": self.reused,
            "skipped": self.skipped,
            "repaired": self.repairs,
            "manifest": os.path.join(self.out, MANIFEST),
        }


def embed_to_dir(
    encoder: Encoder,
    source: Sources,
    out: str | os.PathLike[str],
    kind: str = "auto",
    batch_size: int = 64,
    chunk_size: int = 1024,
    storage: str = "safetensors",
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
    image_column: str | None = None,
    caption_column: str | None = None,
    texts_too: bool = False,
    emb_dtype: str = "float16",
    decode: str = "auto",
    draft: bool = False,
    prefetch: int | None = None,
) -> dict:
    """Embed a folder of images, one image, a text file of lines, webdataset shards (a .tar, a
    brace pattern, a `::`-separated list, or a list of them) or a parquet/CSV/JSONL table of image
    paths into the directory `out`.

    Resumes when `out` already holds a manifest for the same input and model. shard=(K, N) embeds
    only the K-th of N disjoint parts of the input, so N processes or machines can share one input,
    each into its own `out`. texts_too: also embed the captions (webdataset .txt, the caption
    column) into text_emb/. decode: "process" (worker processes, shared memory), "thread", or
    "auto" (processes beyond a few hundred images). draft: let PIL decode big JPEGs at a reduced
    DCT scale (faster, slightly different pixels). Returns a summary: {"out", "kind", "count"
    (vectors stored), "embedded" (this run), "reused" (from earlier runs), "skipped" (this run's
    unreadable inputs), "repaired" (what a resume fixed), "manifest"}.
    """
    job = Job(
        encoder,
        source,
        out,
        kind,
        chunk_size,
        storage,
        overwrite,
        shard,
        image_column,
        caption_column,
        texts_too,
        emb_dtype,
    )
    with job:
        collection = job.collection
        total = collection.total
        initial = min(len(job.done), total or 0)
        with progress_bar(total, progress, f"embedding {collection.kind}s", initial=initial) as bar:
            if collection.kind == "image":
                for finished, images, failures in image_batches(
                    encoder, job.todo(), batch_size, workers, prefetch, decode, draft, total
                ):
                    captions = encoder.embed_texts([item.caption or "" for item, _ in finished]) if texts_too else None
                    vectors = encode_batch(encoder, images) if finished else np.zeros((0, encoder.dim), np.float32)
                    good, bad = finite_rows(encoder, vectors, list(range(len(finished))))
                    failures = list(failures) + [(finished[r][0], reason) for r, reason in bad]
                    if captions is not None:
                        captions = captions[good]
                    job.add_images([finished[r] for r in good], vectors[good], failures, captions)
                    bar.update(len(finished) + len(failures))
            else:
                todo = list(job.todo())
                for start in range(0, len(todo), batch_size):
                    part = todo[start : start + batch_size]
                    texts = cast("list[str]", [item.caption for item in part])  # a text input's items carry their line
                    job.add_texts(part, encoder.embed_texts(texts, batch_size))
                    bar.update(len(part))
        return job.finish()


def _image_row(item, size, collection) -> dict:
    row = {
        "key": item.key,
        "image_path": item.path if collection.input in ("folder", "image", "table") else item.source,
    }
    if collection.has_captions:
        row["caption"] = item.caption
    row["width"], row["height"] = size
    for name, value in (item.meta or {}).items():
        row.setdefault(name, value)  # a sidecar field never overrides ours
    return row


def _write(writer, buffer, count, collection):
    vectors, rows, skipped, text_vectors = buffer.take(count)
    keys = [row["key"] for row in rows]
    texts = [row["caption"] for row in rows] if collection.kind == "text" else None
    sources = [row["image_path"] for row in rows] if collection.input in ("webdataset", "table") else None
    writer.write(vectors, keys, skipped, rows, texts=texts, sources=sources, text_vectors=text_vectors)
