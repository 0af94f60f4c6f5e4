"""Writers: the embedding directory, its manifest, and clip-retrieval's layout beside it.

    EMB/manifest.json                   settings (model, weights fingerprint), the numbers of the finished chunks as
                                        ranges ([[0, 120]]): a few hundred bytes however many chunks there are
    EMB/chunks/000000.safetensors|.npy  (n, D) float32 unit vectors
    EMB/chunks/000000.json              the chunk's keys (and texts or sources) and the inputs skipped meanwhile
    EMB/img_emb/img_emb_000000.npy      clip-retrieval's layout, read unchanged by embedding-reader,
    EMB/text_emb/text_emb_000000.npy    autofaiss and clip-retrieval's back-end (float16 by default)
    EMB/metadata/metadata_000000.parquet  key, image_path, caption, width, height, sidecar json fields

Chunk N's file names follow from N, so neither the manifest nor a keys file holds a path to open.
Every file is written atomically before the manifest names it; the manifest is the commit point.
A resumed run first verifies what the manifest names (shapes and sizes, keys, paths inside the
directory), drops and re-embeds what is broken, and deletes what a killed run left unnamed.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import numpy as np

from clip.common.io import (
    atomic_path,
    atomic_write_json,
    path_inside,
    read_json_object,
    read_safetensors,
    write_safetensors,
)
from clip.errors import InputError
from clip.tasks.backends import TaskError
from clip.tasks.embed.inputs import MANIFEST

LOCK = ".lock"  # held while a run writes the directory
FORMAT_VERSION = 2  # 1: the manifest listed every chunk (and every skipped input); still read
STORAGES = ("safetensors", "npy")
EMB_DTYPES = ("float16", "float32")
LAYOUT_DIRS = ("chunks", "img_emb", "text_emb", "metadata")
# what must match for a run to continue a directory (not the model's name: the same weights under
# another path or hub id may go on)
RESUME_KEYS = (
    "format_version",
    "kind",
    "input",
    "dim",
    "storage",
    "root",
    "compute_dtype",
    "shard",
    "emb_dtype",
    "texts_too",
)


def settings(encoder, kind, input_type, root, storage, shard, emb_dtype="float16", texts_too=False) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "input": input_type,
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
        "emb_dtype": emb_dtype,
        "texts_too": bool(texts_too),
        # clip-retrieval's metadata parquet needs pyarrow (clip[data]); without it the npy files are still written
        "parquet": _have_pyarrow(),
    }


def _have_pyarrow() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


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


def check_out(out, overwrite):
    """Before anything is written into `out`: a directory of ours, an empty one, or a new one."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise TaskError(f"{out} is a file; --out needs a directory (it is created if missing)")
    ours = os.path.isfile(os.path.join(out, MANIFEST))
    if os.path.isdir(out) and not ours and not overwrite and set(os.listdir(out)) - {LOCK}:
        raise TaskError(f"{out} is a non-empty directory without {MANIFEST}; choose an empty or new --out")


@contextlib.contextmanager
def exclusive(out):
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
            raise TaskError(
                f"{out} is being written by another `clip embed` ({holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------- opening and verifying


def open_manifest(out, wanted: dict, overwrite: bool) -> tuple[dict, list[str]]:
    """(manifest, repairs): a new manifest, or the existing one verified, with broken chunks dropped
    (their inputs are embedded again) and leftovers of a killed run deleted; repairs says what was fixed."""
    path = os.path.join(out, MANIFEST)
    if overwrite:
        for name in LAYOUT_DIRS:
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
        if os.path.isfile(path):
            os.unlink(path)
    if not os.path.isfile(path):
        for name in LAYOUT_DIRS:
            os.makedirs(os.path.join(out, name), exist_ok=True)
        fresh = {
            **wanted,
            "complete": False,
            "count": 0,
            "skipped": [],
            "skipped_count": 0,
            "next_chunk": 0,
            "chunks": [],
        }
        return fresh, []
    advice = "pass --overwrite to start again, or choose another --out"
    try:
        manifest = read_json_object(path)
    except (ValueError, OSError) as err:
        raise TaskError(f"{out}: the manifest is damaged ({err}); {advice}") from None
    check_same_weights(manifest, wanted["weights"], out, advice)
    defaults = {
        "compute_dtype": "float32",
        "shard": [0, 1],
        "emb_dtype": None,
        "texts_too": False,
        "input": {"text": "lines"}.get(str(manifest.get("kind")), "folder"),
    }
    for key, value in defaults.items():  # written before these options existed
        manifest.setdefault(key, value)
    if manifest["emb_dtype"] is None:
        manifest["emb_dtype"] = wanted["emb_dtype"]  # no clip-retrieval files yet: take this run's
    for key in RESUME_KEYS:
        if manifest.get(key) != wanted[key]:
            raise TaskError(
                f"{out} holds embeddings made with {key}={manifest.get(key)!r}, not {wanted[key]!r}; {advice}"
            )
    if not isinstance(manifest.get("skipped", []), list):
        raise TaskError(f"{out}: the manifest's skipped entry is not a list; {advice}")
    try:
        manifest["chunks"] = [
            chunk_entry(manifest, index, _count_or_none(out, index)) for index in chunk_numbers(manifest)
        ]
    except ValueError as err:
        raise TaskError(f"{out}: {err}; {advice}") from None
    repairs = _verify(out, manifest)
    _delete_unnamed(out, manifest)
    manifest["complete"] = False
    return manifest, repairs


MAX_CHUNKS = 10**9  # chunk numbers are six digits or more; a range beyond this is a damaged manifest


def chunk_numbers(manifest: dict) -> list[int]:
    """The finished chunks' numbers from the manifest's chunk_ranges ([[start, stop), ...], ascending,
    disjoint); a malformed value is a ValueError."""
    ranges = manifest.get("chunk_ranges")
    if not isinstance(ranges, list):
        raise InputError(f"the manifest's chunk_ranges is {type(ranges).__name__}, not a list of [start, stop] pairs")
    numbers, last = [], 0  # type: list[int], int
    for pair in ranges:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(type(v) is int for v in pair)
            or not last <= pair[0] < pair[1] <= MAX_CHUNKS
        ):
            raise InputError(f"the manifest's chunk_ranges entry {pair!r} is not an ascending [start, stop] pair")
        numbers.extend(range(*pair))
        last = pair[1]
    return numbers


def chunk_ranges(numbers) -> list[list[int]]:
    """[0, 1, 2, 5, 6] -> [[0, 3], [5, 7]]."""
    ranges: list[list[int]] = []
    for number in numbers:
        if ranges and ranges[-1][1] == number:
            ranges[-1][1] += 1
        else:
            ranges.append([number, number + 1])
    return ranges


def chunk_entry(manifest: dict, index: int, count) -> dict:
    """Chunk `index`'s files, named after its number; the clip-retrieval files exist when it holds vectors."""
    name = f"chunks/{index:06d}"
    entry = {"index": index, "file": f"{name}.{manifest['storage']}", "keys": f"{name}.json", "count": count}
    if count:
        if manifest["kind"] == "image":
            entry["img_emb"] = f"img_emb/img_emb_{index:06d}.npy"
        if manifest["kind"] == "text" or manifest.get("texts_too"):
            entry["text_emb"] = f"text_emb/text_emb_{index:06d}.npy"
        if manifest.get("texts_too"):
            entry["text_file"] = f"{name}.text.{manifest['storage']}"
        if manifest.get("parquet", True):  # fixed when the directory is created
            entry["metadata"] = f"metadata/metadata_{index:06d}.parquet"
    return entry


def _count_or_none(out, index) -> int | None:
    """How many keys chunk `index`'s keys file holds (None when it cannot be read: the chunk is then dropped)."""
    try:
        keys = read_json_object(os.path.join(out, "chunks", f"{index:06d}.json")).get("keys")
    except (ValueError, OSError):
        return None
    return len(keys) if isinstance(keys, list) else None


def manifest_on_disk(manifest: dict) -> dict:
    """What the manifest file holds: the chunks as ranges of numbers, not as a list."""
    data = {k: v for k, v in manifest.items() if k != "chunks"}
    data["chunk_ranges"] = chunk_ranges(entry["index"] for entry in manifest["chunks"])
    return data


def _verify(out, manifest) -> list[str]:
    kept, repairs, seen_keys, seen_files = [], [], set(), set()  # type: list, list[str], set, set
    for number, entry in enumerate(manifest["chunks"]):
        problem = _chunk_problem(out, manifest, entry, seen_keys, seen_files)
        if problem is None:
            kept.append(entry)
        else:
            repairs.append(f"chunk {number}: {problem}; its inputs are embedded again")
    count = sum(entry["count"] for entry in kept)
    if manifest.get("count") != count:
        repairs.append(f"the manifest's count {manifest.get('count')!r} is corrected to {count}")
    next_chunk = manifest.get("next_chunk") if type(manifest.get("next_chunk")) is int else 0
    manifest.update(
        chunks=kept, count=count, next_chunk=max([next_chunk, *[entry["index"] + 1 for entry in manifest["chunks"]]])
    )
    manifest["skipped_count"] = manifest.get("skipped_count") if isinstance(manifest.get("skipped_count"), int) else 0
    return repairs


def chunk_files(entry: dict) -> list[str]:
    """The files of a chunk entry, relative to the directory."""
    return [entry[name] for name in ("file", "keys", "img_emb", "text_emb", "metadata", "text_file") if entry.get(name)]


def _chunk_problem(out, manifest, entry, seen_keys, seen_files) -> str | None:
    """Why a chunk named by the manifest cannot be kept (None: it is sound). A name pointing outside
    the directory is refused outright: the manifest is hostile, not merely damaged."""
    if entry["count"] is None:
        return "its keys file is missing or unreadable"
    try:
        paths = {name: path_inside(out, name, "chunk") for name in chunk_files(entry)}
    except ValueError as err:
        raise TaskError(f"{err}; refusing to continue (pass --overwrite to start again)") from None
    if set(paths) & seen_files:
        return "it is listed twice"
    count, dim = entry["count"], manifest["dim"]
    try:
        side = read_json_object(paths[entry["keys"]])
    except (ValueError, OSError) as err:
        return f"its keys file is unreadable ({err})"
    keys = side.get("keys")
    if not isinstance(keys, list) or len(keys) != count or not all(isinstance(k, str) for k in keys):
        return f"its keys file does not hold {count} keys"
    if manifest["kind"] == "text" and (not isinstance(side.get("texts"), list) or len(side["texts"]) != count):
        return f"its keys file does not hold {count} texts"
    if seen_keys.intersection(keys):
        return "it holds inputs an earlier chunk holds"
    for name, shape in (
        (entry["file"], (count, dim)),
        (entry.get("img_emb"), (count, dim)),
        (entry.get("text_emb"), (count, dim)),
        (entry.get("text_file"), (count, dim)),
    ):
        if name:
            problem = _array_problem(paths[name], shape)
            if problem:
                return f"{name}: {problem}"
    if entry.get("metadata") and not os.path.isfile(paths[entry["metadata"]]):
        return f"{entry['metadata']} is missing"
    seen_keys.update(keys)
    seen_files.update(paths)
    return None


def _array_problem(path, shape) -> str | None:
    """Whether the file holds an array of `shape` whose bytes are all there (read from the header, not the data)."""
    if not os.path.isfile(path):
        return "missing"
    try:
        if path.endswith(".safetensors"):
            found = read_safetensors(path)["embeddings"].shape
        else:
            found = np.load(path, mmap_mode="r", allow_pickle=False).shape
    except (ValueError, OSError, KeyError, EOFError) as err:
        return f"unreadable ({str(err) or type(err).__name__})"
    return None if tuple(found) == tuple(shape) else f"holds shape {tuple(found)}, not {tuple(shape)}"


def _delete_unnamed(out, manifest):
    """Delete what the manifest does not name: .tmp files of a killed run, chunks written after its
    last commit, the files of dropped chunks (readers of clip-retrieval's layout list folders)."""
    named = {os.path.normpath(name) for entry in manifest["chunks"] for name in chunk_files(entry)}
    for folder in LAYOUT_DIRS:
        os.makedirs(os.path.join(out, folder), exist_ok=True)
        for name in os.listdir(os.path.join(out, folder)):
            path = os.path.join(out, folder, name)
            if os.path.isfile(path) and os.path.normpath(f"{folder}/{name}") not in named:
                os.unlink(path)
    for name in os.listdir(out):  # the manifest's own temporary files
        if name.startswith(".") and name.endswith(".tmp") and os.path.isfile(os.path.join(out, name)):
            os.unlink(os.path.join(out, name))


# --------------------------------------------------------------------- writing


class ChunkWriter:
    """Appends chunks to an embedding directory; the manifest is rewritten (small) after each."""

    def __init__(self, out, manifest):
        self.out, self.manifest = out, manifest

    def write(self, vectors, keys, skipped, rows, texts=None, sources=None, text_vectors=None):
        """One chunk: vectors (n, D), their keys, the inputs skipped meanwhile, the metadata rows,
        the texts (text kind), the sources (inputs other than folders), and the caption vectors
        (--texts-too). Written only when it holds something; then the manifest that names it."""
        manifest, out = self.manifest, self.out
        if not len(keys) and not skipped:
            self._commit()
            return
        index = manifest["next_chunk"]
        side = {"keys": list(keys), "skipped": list(skipped)}
        if texts is not None:
            side["texts"] = list(texts)
        if sources is not None:
            side["sources"] = list(sources)
        entry = chunk_entry(manifest, index, len(keys))
        atomic_write_json(os.path.join(out, entry["keys"]), side)
        vectors = np.asarray(vectors, np.float32).reshape(len(keys), manifest["dim"])
        self._save(entry["file"], vectors)
        emb_dtype = np.dtype(manifest["emb_dtype"])
        if "text_file" in entry:
            self._save(entry["text_file"], np.asarray(text_vectors, np.float32))
        if "img_emb" in entry:
            _save_npy(os.path.join(out, entry["img_emb"]), vectors.astype(emb_dtype))
        if "text_emb" in entry:
            text_emb = vectors if manifest["kind"] == "text" else text_vectors
            _save_npy(os.path.join(out, entry["text_emb"]), np.asarray(text_emb).astype(emb_dtype))
        if "metadata" in entry:
            write_parquet(os.path.join(out, entry["metadata"]), rows)
        manifest["chunks"].append(entry)
        manifest["count"] += len(keys)
        manifest["skipped_count"] += len(skipped)
        manifest["next_chunk"] = index + 1
        self._commit()

    def _save(self, name, vectors):
        path = os.path.join(self.out, name)
        if name.endswith(".safetensors"):
            write_safetensors({"embeddings": vectors}, path)
        else:
            _save_npy(path, vectors)

    def _commit(self):
        atomic_write_json(os.path.join(self.out, MANIFEST), manifest_on_disk(self.manifest))  # the commit point


def _save_npy(path, array):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def write_parquet(path, rows: list[dict]):
    """clip-retrieval's metadata file; fields whose types differ between rows are written as text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        fixed = ("key", "image_path", "caption", "width", "height")
        table = pa.Table.from_pylist(
            [{k: v if k in fixed or v is None else str(v) for k, v in row.items()} for row in rows]
        )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
