"""Embedding directories written by hand (the documented layout, independent of clip embed's writer)."""

import json
import os

import numpy as np


def unit(rows, dim=16, seed=0):
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_dir(path, vectors, kind="text", chunk=4, storage="npy", weights="w0", root="/data", first=0):
    """A complete embedding directory of `vectors`; sources are "t{i}" texts or "img{i}.png" keys."""
    os.makedirs(os.path.join(path, "chunks"), exist_ok=True)
    chunks = []
    for number, start in enumerate(range(0, len(vectors), chunk)):
        part = vectors[start : start + chunk]
        name = f"chunks/{number:06d}"
        if storage == "npy":
            np.save(os.path.join(path, name + ".npy"), part)
        else:
            from safetensors.numpy import save_file

            save_file({"embeddings": np.ascontiguousarray(part)}, os.path.join(path, name + ".safetensors"))
        ids = range(first + start, first + start + len(part))
        side = (
            {"keys": [str(i) for i in ids], "texts": [f"t{i}" for i in ids]}
            if kind == "text"
            else {"keys": [f"img{i}.png" for i in ids]}
        )
        with open(os.path.join(path, name + ".json"), "w") as f:
            json.dump(side, f)
        chunks.append({"file": f"{name}.{storage}", "keys": f"{name}.json", "count": len(part)})
    manifest = {
        "format_version": 1,
        "kind": kind,
        "root": root,
        "model": None,
        "weights": weights,
        "backend": "pt",
        "dim": int(vectors.shape[1]),
        "dtype": "float32",
        "compute_dtype": "float32",
        "normalized": True,
        "storage": storage,
        "shard": [0, 1],
        "complete": True,
        "count": len(vectors),
        "chunks": chunks,
        "skipped": [],
    }
    write_manifest(path, manifest)
    return manifest


def write_manifest(path, manifest):
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def read_manifest(path):
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)
