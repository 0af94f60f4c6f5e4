"""The Flax side of clip.common.loading: canonical arrays out of a model's params tree and into it,
and transformers' flax_model.msgpack. The params tree is the canonical name split at the dots,
with the leaf names and layouts of clip.common.weights.LEAF_RULES' "flax" column.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clip.common import loading, weights
from clip.common.formats import transformers_flax

BACKEND = "flax"


def canonical_class(model_or_cls) -> str:
    return loading.canonical_class(model_or_cls, "Flax")


def expected_parameters(model) -> dict:
    return weights.expected_parameters(model.config, canonical_class(model))


def canonical_arrays(model, params=None) -> loading.CanonicalArrays:
    """{canonical name: numpy array} of `params` (default model.params), each leaf brought to the
    host when asked for, seen in the canonical layout through a transposed view."""
    params = model.params if params is None else params

    def read(name, kind):
        return weights.from_backend_layout(np.asarray(jax.device_get(_leaf(params, name, kind))), kind, BACKEND)

    return loading.CanonicalArrays({name: kind for name, (_, kind) in expected_parameters(model).items()}, read)


def assign_canonical(model, arrays: dict) -> list:
    """model.params from {canonical name: array (canonical layout)}, every shape checked first; the
    names not given keep their values (a model made with _do_init=False has none to keep: then
    every name must be given). Returns the names not given."""
    expected = expected_parameters(model)
    unknown = sorted(set(arrays) - set(expected))
    if unknown:
        raise KeyError(f"{type(model).__name__} has no weights named {unknown}")
    for name, array in arrays.items():
        if tuple(np.shape(array)) != tuple(expected[name][0]):
            raise ValueError(
                f"{name}: the model's parameter has shape {tuple(expected[name][0])}, "
                f"the checkpoint gives {tuple(np.shape(array))}"
            )
    fresh = [name for name in expected if name not in arrays]
    kept = from_params(model.params, expected) if fresh else {}
    model.params = params_tree(model, {**kept, **arrays})
    return fresh


def params_tree(model, arrays: dict) -> dict:
    """The full params tree in model.param_dtype from {canonical name: array} holding every parameter."""
    expected = expected_parameters(model)
    tree = to_params({name: arrays[name] for name in expected}, expected)  # numpy views: transposed without copies
    return jax.tree.map(lambda a: jnp.asarray(a, dtype=model.param_dtype), tree)  # one copy each


def read_legacy(kind, paths, files: dict) -> dict:
    """{canonical name: array} of transformers' flax_model.msgpack (or its shards)."""
    return transformers_flax.read(paths, files)


def write_legacy(model, directory, arrays: dict, max_shard_size) -> list:
    """transformers' flax_model.msgpack (one file, as transformers' Flax writes it here), written atomically."""
    kinds = {name: kind for name, (_, kind) in expected_parameters(model).items()}
    transformers_flax.write(arrays, kinds, os.path.join(directory, transformers_flax.FILE_NAME))
    return [transformers_flax.FILE_NAME]


# -- canonical arrays <-> params tree -------------------------------------------------------------
def transpose(array, kind, inverse=False):
    """A leaf between the canonical and the Flax layout (jax arrays stay on their device)."""
    perm = weights.LEAF_RULES[kind]["transpose"].get(BACKEND)
    if perm is None:
        return array
    perm = tuple(np.argsort(perm)) if inverse else perm
    return jnp.transpose(array, perm) if isinstance(array, jax.Array) else np.transpose(array, perm)


def to_params(arrays: dict, expected: dict) -> dict:
    """{canonical name: array (PyTorch layout)} -> the nested params tree (Flax names and layouts)."""
    tree: dict[str, Any] = {}  # nested: {module name: {... {leaf name: array}}}
    for name, array in arrays.items():
        kind = expected[name][1]
        *parents, leaf = weights.backend_name(name, kind, BACKEND).split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = transpose(array, kind)
    return tree


def _leaf(params: dict, name: str, kind: str):
    node = params
    for part in weights.backend_name(name, kind, BACKEND).split("."):
        node = node[part]
    return node


def leaves(params: dict, expected: dict):
    """(canonical name, leaf of the params tree as it is, leaf kind) for every expected parameter."""
    for name, (_, kind) in expected.items():
        yield name, _leaf(params, name, kind), kind


def from_params(params: dict, expected: dict) -> dict:
    """The params tree (or a gradient of it) -> {canonical name: array in the PyTorch layout}."""
    return {name: transpose(leaf, kind, inverse=True) for name, leaf, kind in leaves(params, expected)}
