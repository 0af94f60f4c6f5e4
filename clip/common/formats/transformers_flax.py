"""transformers' Flax CLIP checkpoints (`flax_model.msgpack`) <-> canonical names, as data, and the
msgpack file's reader and writer.

transformers' FlaxCLIP modules keep the PyTorch attribute paths (encoder layers named "0", "1",
...), so its param tree is the canonical name split at the dots, with the Flax leaf name of
clip.common.weights.LEAF_RULES in place of the PyTorch one, and the Flax layouts (kernels
transposed). The tree root is the model's own parts for every class ("text_model", "vision_model",
"text_projection", "visual_projection", "logit_scale"), as in the canonical names.

The msgpack (de)serialization itself is flax's (clip.common.weight_files.read_msgpack reads it),
imported when called. This library's own FlaxCLIPModel.params file (convert's "flax-params") is the
same tree, so one reader and one writer serve both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from clip.common import io, weight_files, weights

FILE_NAME = "flax_model.msgpack"
INDEX_NAME = "flax_model.msgpack.index.json"  # transformers' sharded msgpack
BACKEND = "flax"  # the LEAF_RULES column this layout follows

# Flax leaf name -> {array rank: leaf kind}; the kind gives the canonical leaf name and transpose.
# Leaves not listed (class_embedding, logit_scale) are kept as they are ("variable").
LEAVES = {
    "kernel": {2: "linear_weight", 4: "conv_weight"},
    "bias": {1: "linear_bias"},  # LayerNorm's bias has the same name and layout
    "scale": {1: "layer_norm_weight"},
    "embedding": {2: "embedding"},
}


def flatten(tree: Mapping, prefix: tuple = ()) -> dict[tuple, object]:
    """A nested {name: {...: array}} dict -> {path tuple: array}."""
    out = {}
    for key, value in tree.items():
        path = prefix + (str(key),)
        if isinstance(value, dict):
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def leaf_kind(path: tuple, ndim: int) -> str:
    return LEAVES.get(path[-1], {}).get(ndim, "variable")


def to_canonical(tree: Mapping) -> dict[str, np.ndarray]:
    """transformers' Flax param tree -> {canonical name: array in the canonical (PyTorch) layout}."""
    out = {}
    for path, array in flatten(tree).items():
        array = np.asarray(array)
        kind = leaf_kind(path, array.ndim)
        leaf = weights.LEAF_RULES[kind]["names"].get("pt", path[-1])
        name = ".".join(path[:-1] + (leaf,))
        if name in out:
            raise ValueError(f"two entries of the Flax checkpoint map to {name!r}")
        out[name] = weights.from_backend_layout(array, kind, BACKEND)
    return out


def from_canonical(arrays: dict, kinds: dict) -> dict:
    """{canonical name: array}, {canonical name: leaf kind} -> transformers' nested Flax param tree."""
    tree: dict[str, Any] = {}  # nested dicts of arrays
    for name, array in arrays.items():
        kind = kinds[name]
        node = tree
        *parents, leaf = weights.backend_name(name, kind, BACKEND).split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = weights.to_backend_layout(array, kind, BACKEND)
    return tree


def read(paths: Iterable[str | os.PathLike], origins: dict | None = None) -> dict[str, np.ndarray]:
    """{canonical name: array in the canonical layout} of one or more (sharded) msgpack files;
    `origins`, when given, gets {canonical name: its file}. Errors name the file."""
    return io.merge_shards(paths, _read_shard, origins)


def _read_shard(path) -> dict[str, np.ndarray]:
    tree = weight_files.read_msgpack(path)
    try:
        return to_canonical(tree)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def write(arrays: dict, kinds: dict, path: str | os.PathLike) -> None:
    """{canonical name: array}, {canonical name: leaf kind} as transformers' flax_model.msgpack, atomically."""
    from flax import serialization

    tree = _map_tree(
        from_canonical(arrays, kinds), lambda a: np.asarray(a, order="C")
    )  # (ascontiguousarray makes 0-d arrays 1-d)
    with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(serialization.msgpack_serialize(tree))


def _map_tree(tree, fn):
    return {k: _map_tree(v, fn) if isinstance(v, dict) else fn(v) for k, v in tree.items()}
