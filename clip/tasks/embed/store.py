"""The embedding directory's settings and manifest: creating it, holding it for one run, and on a
resume verifying what the manifest names (shapes and sizes, keys, paths inside the directory),
dropping what is broken (its inputs are embedded again) and deleting what a killed run left unnamed.

The file layout is clip.tasks.embed.layout's; chunk_writer.py writes the chunks, every file
atomically before the manifest names it: the manifest is the commit point.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clip.common.io import path_inside, read_json_object, read_safetensors
from clip.tasks.backends import TaskError
from clip.tasks.embed.chunk_writer import ChunkWriter as ChunkWriter  # also importable from here, its former home
from clip.tasks.embed.inputs import MANIFEST
from clip.tasks.embed.layout import LAYOUT_DIRS, chunk_entry, chunk_files, chunk_numbers

if TYPE_CHECKING:
    from clip.tasks.backends import Encoder

LOCK = ".lock"  # held while a run writes the directory
FORMAT_VERSION = 2  # 1: the manifest listed every chunk (and every skipped input); still read
STORAGES = ("safetensors", "npy")
EMB_DTYPES = ("float16", "float32")
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


def settings(
    encoder: Encoder,
    kind: str,
    input_type: str,
    root: str | None,
    storage: str,
    shard: Sequence[int],
    emb_dtype: str = "float16",
    texts_too: bool = False,
) -> dict[str, Any]:
    """The manifest's settings for a run of `encoder` (RESUME_KEYS among them: what a resumed run must match)."""
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


def check_same_weights(
    manifest: dict, fingerprint: str | None, out: str | os.PathLike[str], advice: str, unrecorded_ok: bool = False
) -> None:
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


def check_out(out: str, overwrite: bool) -> None:
    """Before anything is written into `out`: a directory of ours, an empty one, or a new one."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise TaskError(f"{out} is a file; --out needs a directory (it is created if missing)")
    ours = os.path.isfile(os.path.join(out, MANIFEST))
    if os.path.isdir(out) and not ours and not overwrite and set(os.listdir(out)) - {LOCK}:
        raise TaskError(f"{out} is a non-empty directory without {MANIFEST}; choose an empty or new --out")


@contextlib.contextmanager
def exclusive(out: str) -> Iterator[None]:
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


def open_manifest(out: str, wanted: dict, overwrite: bool) -> tuple[dict, list[str]]:
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


def _count_or_none(out: str, index: int) -> int | None:
    """How many keys chunk `index`'s keys file holds (None when it cannot be read: the chunk is then dropped)."""
    try:
        keys = read_json_object(os.path.join(out, "chunks", f"{index:06d}.json")).get("keys")
    except (ValueError, OSError):
        return None
    return len(keys) if isinstance(keys, list) else None


def _verify(out: str, manifest: dict) -> list[str]:
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


def _chunk_problem(out: str, manifest: dict, entry: dict, seen_keys: set[str], seen_files: set[str]) -> str | None:
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


def _array_problem(path: str, shape: tuple[int, ...]) -> str | None:
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


def _delete_unnamed(out: str, manifest: dict) -> None:
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
