"""Reading an embedding directory back (load_embeddings); the search helper's side of the format."""

from __future__ import annotations

import os

import numpy as np

from clip.common.io import path_inside, read_json_object, read_safetensors
from clip.tasks.backends import TaskError
from clip.tasks.embed.pipeline import Embeddings
from clip.tasks.embed.store import MANIFEST, chunk_entry, chunk_numbers


def load_embeddings(path) -> Embeddings:
    """The vectors and sources of an embedding directory written by `embed_to_dir` / `clip embed`,
    or of several (a list: the shards of one input, say), in the order given.

    Sources are absolute image paths (a shard member or a table's path for those inputs), or the
    texts for a text file; a partial (interrupted) directory loads what is finished. Several
    directories must hold vectors of the same weights, kind and width, and no input twice.
    """
    if isinstance(path, (list, tuple)):
        return _load_several([os.fspath(p) for p in path])
    path = os.fspath(path)
    if os.path.basename(path) == MANIFEST:
        path = os.path.dirname(path) or "."
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise TaskError(f"{path}: not an embedding directory (no {MANIFEST}); make one with `clip embed`")
    manifest = read_json_object(manifest_path)
    vectors = np.zeros((manifest["count"], manifest["dim"]), np.float32)
    sources, start = [], 0
    skipped = list(manifest.get("skipped", []))  # directories written before skipped inputs moved to the chunks
    for chunk in _chunks(path, manifest):
        file = path_inside(path, chunk["file"], "chunk")
        array = read_safetensors(file)["embeddings"] if file.endswith(".safetensors") else np.load(file, mmap_mode="r")
        if array.shape != (chunk["count"], manifest["dim"]):
            raise TaskError(f"{file}: expected {chunk['count']} x {manifest['dim']} vectors, found {array.shape}")
        vectors[start : start + len(array)] = array
        start += len(array)
        side = chunk.get("side") or read_json_object(path_inside(path, chunk["keys"], "keys"))
        skipped += side.get("skipped", [])
        if manifest["kind"] == "text":
            sources.extend(side["texts"])
        elif "sources" in side:
            sources.extend(side["sources"])
        else:
            sources.extend(os.path.join(manifest["root"], *key.split("/")) for key in side["keys"])
    return Embeddings(vectors, sources, skipped, manifest["kind"], manifest)


def _chunks(path, manifest) -> list[dict]:
    """The chunk entries: listed in a format-1 manifest, derived from chunk_ranges in format 2."""
    if "chunk_ranges" not in manifest:
        return manifest["chunks"]
    try:
        numbers = chunk_numbers(manifest)
    except ValueError as err:
        raise TaskError(f"{path}: {err}") from None
    entries = []
    for number in numbers:
        side = read_json_object(path_inside(path, f"chunks/{number:06d}.json", "keys"))
        keys = side.get("keys")
        if not isinstance(keys, list):
            raise TaskError(f"{path}/chunks/{number:06d}.json: no list of keys")
        entries.append({**chunk_entry(manifest, number, len(keys)), "side": side})
    return entries


def _load_several(paths) -> Embeddings:
    if not paths:
        raise TaskError("no embedding directories given")
    parts = [load_embeddings(p) for p in paths]
    first = parts[0].manifest
    seen = {}
    for path, part in zip(paths, parts):
        manifest = part.manifest
        for key in ("kind", "dim", "weights"):
            if manifest.get(key) != first.get(key):
                raise TaskError(f"{path} holds {key}={manifest.get(key)!r} but {paths[0]} {first.get(key)!r}; "
                                "search directories of one model and kind together")
        root, (k, n) = manifest["root"], manifest.get("shard", [0, 1])
        for other_k, other_n, other_path in seen.get(root, []):
            if other_n != n or other_k == k:  # the same part twice, or parts of two different splits
                raise TaskError(f"{path} (shard {k}/{n}) and {other_path} (shard {other_k}/{other_n}) overlap: "
                                f"both hold inputs of {root}")
        seen.setdefault(root, []).append((k, n, path))
    return Embeddings(np.concatenate([p.vectors for p in parts]), [s for p in parts for s in p.sources],
                      [e for p in parts for e in p.skipped], parts[0].kind, first)
