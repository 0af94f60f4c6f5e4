"""from_pretrained / save_pretrained and initialization for the Flax models.

The params tree is the canonical name split at the dots, with the Flax leaf names and layouts of
clip.common.weights.LEAF_RULES. Loading reads model.safetensors (memory-mapped, no torch) or
transformers' flax_model.msgpack (mapped through clip.common.formats.transformers_flax), checks
every key and shape against clip.common.weights before anything is assigned, and initializes only
what the checkpoint lacks. Saving writes config.json + model.safetensors in canonical names, and
transformers' flax_model.msgpack on request.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from clip.common import hub, io, loading, params, sharding, weight_files, weights
from clip.common.formats import transformers_flax


WEIGHT_CANDIDATES = (hub.SAFETENSORS_NAME, hub.SAFETENSORS_INDEX_NAME, transformers_flax.FILE_NAME, transformers_flax.INDEX_NAME)
STALE_CANDIDATES = (hub.SAFETENSORS_INDEX_NAME, hub.PYTORCH_NAME, hub.PYTORCH_INDEX_NAME, transformers_flax.FILE_NAME, transformers_flax.INDEX_NAME)


def canonical_class(cls) -> str:
    """FlaxCLIPModel (or a subclass) -> "CLIPModel", the name clip.common.weights knows."""
    for base in cls.__mro__:
        name = base.__name__.removeprefix("Flax")
        if name in weights.MODEL_CLASSES:
            return name
    raise TypeError(f"{cls.__name__} is not a Flax{' / Flax'.join(weights.MODEL_CLASSES)} nor a subclass of one")


def expected_parameters(model) -> dict:
    return weights.expected_parameters(model.config, canonical_class(type(model)))


# -- canonical arrays <-> params tree -------------------------------------------------------------
def _transpose(array, kind, inverse=False):
    perm = weights.LEAF_RULES[kind]["transpose"].get("flax")
    if perm is None:
        return array
    perm = tuple(np.argsort(perm)) if inverse else perm
    return jnp.transpose(array, perm) if isinstance(array, jax.Array) else np.transpose(array, perm)


def to_params(arrays: dict, expected: dict) -> dict:
    """{canonical name: array (PyTorch layout)} -> the nested params tree (Flax names and layouts)."""
    tree = {}
    for name, array in arrays.items():
        kind = expected[name][1]
        *parents, leaf = weights.backend_name(name, kind, "flax").split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _transpose(array, kind)
    return tree


def leaves(params: dict, expected: dict):
    """(canonical name, leaf of the params tree as it is, leaf kind) for every expected parameter."""
    for name, (_, kind) in expected.items():
        node = params
        for part in weights.backend_name(name, kind, "flax").split("."):
            node = node[part]
        yield name, node, kind


def from_params(params: dict, expected: dict) -> dict:
    """The params tree (or a gradient of it) -> {canonical name: array in the PyTorch layout}."""
    return {name: _transpose(leaf, kind, inverse=True) for name, leaf, kind in leaves(params, expected)}


def init_arrays(config, model_class: str, rng, names, dtype) -> dict:
    """transformers' CLIP initialization of `names`, PyTorch layout: the arrays of the parameter
    table (clip.common.params.init_arrays), drawn with numpy on the host (no per-shape compilations)
    from `rng`, an int seed or a jax key."""
    if not isinstance(rng, (int, np.integer)):
        rng = int(jax.random.randint(rng, (), 0, 2**31 - 1))
    arrays = params.init_arrays(params.parameter_table(config, model_class), int(rng), names)
    return {name: jnp.asarray(array, dtype=dtype) for name, array in arrays.items()}


def init_params(model, rng, names=None, params=None) -> dict:
    """A full params tree: `names` freshly initialized, the rest from `params` (a possibly partial
    tree) or model.params. Default `names`: all, or with `params` the leaves it lacks."""
    expected = expected_parameters(model)
    if params is not None:
        kept = dict(_present_leaves(params, expected))
        names = [n for n in expected if n not in kept] if names is None else list(names)
    else:
        names = list(expected) if names is None else list(names)
        kept = from_params(model.params, expected) if len(names) < len(expected) else {}
    fresh = init_arrays(model.config, canonical_class(type(model)), rng, names, model.param_dtype)
    return to_params({n: fresh[n] if n in fresh else kept[n] for n in expected}, expected)


def _present_leaves(params: dict, expected: dict):
    """(canonical name, array in the PyTorch layout) for each expected leaf `params` holds."""
    for name, (_, kind) in expected.items():
        node = params
        for part in weights.backend_name(name, kind, "flax").split("."):
            node = node.get(part) if hasattr(node, "get") else None
            if node is None:
                break
        if node is not None:
            yield name, _transpose(node, kind, inverse=True)


# -- loading --------------------------------------------------------------------------------------
def read_weights(kind, paths, files: dict | None = None) -> dict:
    """{canonical name: numpy array in the PyTorch layout} of a checkpoint; `files`, when given, gets
    {canonical name: its file} (for messages)."""
    files = {} if files is None else files
    if kind in (transformers_flax.FILE_NAME, transformers_flax.INDEX_NAME):
        merged = {}
        for path in paths:
            tree = weight_files.read_msgpack(path)
            try:
                shard = transformers_flax.to_canonical(tree)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
            for name, array in shard.items():
                if name in merged:
                    raise ValueError(f"{path}: tensor {name!r} also appears in another shard")
                merged[name] = array
                files[name] = path
        return merged
    arrays, origins = loading.read_canonical_safetensors(paths)
    files.update(origins)
    return arrays


def from_pretrained(
    cls,
    name_or_path,
    *,
    config=None,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    seed: int = 0,
    use_safetensors=None,
    output_loading_info=False,
    ignore_mismatched_sizes=False,
    _do_init=True,
    **kwargs,
):
    """transformers' arguments, from_pt and trust_remote_code included (they change nothing here);
    with _do_init=False returns (model, params), as transformers' Flax models do."""
    hint = "; convert PyTorch .bin checkpoints with clip.pt first"
    config, kind, paths = loading.locate(cls, name_or_path, config, kwargs, "flax", WEIGHT_CANDIDATES, use_safetensors, hint)
    files = {}
    arrays = read_weights(kind, paths, files)  # canonical name -> numpy array, no copies yet

    model = cls(config, seed=seed, dtype=dtype, param_dtype=param_dtype, _do_init=False)
    expected = expected_parameters(model)
    loading.check_float_weights(arrays, expected, files, paths[0])
    shapes = {n: tuple(a.shape) for n, a in arrays.items()}
    report = loading.check_checkpoint(cls, name_or_path, expected, shapes, ignore_mismatched_sizes)
    mismatched = report["mismatched"]
    fresh = [n for n in expected if n not in arrays or n in mismatched]
    loaded = {n: arrays[n] for n in expected if n not in fresh}  # numpy views: transposed without copies
    loaded.update(init_arrays(config, canonical_class(cls), seed, fresh, param_dtype))
    tree = to_params({n: loaded[n] for n in expected}, expected)
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype=param_dtype), tree)  # one copy each
    del arrays, loaded, tree
    if _do_init:
        model.params = params  # with _do_init=False the model keeps none, as in transformers

    info = loading.loading_info(cls, name_or_path, report)
    result = (model,) if _do_init else (model, params)
    result += (info,) if output_loading_info else ()
    return result if len(result) > 1 else model


# -- saving ---------------------------------------------------------------------------------------
def save_pretrained(model, save_directory, params=None, flax_msgpack=False, max_shard_size=sharding.DEFAULT_MAX_SHARD_SIZE,
                    safe_serialization=True, **kwargs):
    """config.json + model.safetensors (canonical names, {"format": "pt"}; sharded beyond
    max_shard_size with transformers' index json); with `flax_msgpack` also transformers'
    flax_model.msgpack. Each file is written atomically. transformers' safe_serialization=False
    (its Flax default: msgpack only) is accepted and still writes safetensors beside the msgpack."""
    if kwargs.pop("push_to_hub", False):
        raise ValueError("save_pretrained: push_to_hub=True is not supported by clip.flax")
    kwargs.pop("token", None)
    if kwargs:
        raise TypeError(f"save_pretrained got unexpected arguments {sorted(kwargs)}")
    loading.check_safe_serialization(safe_serialization)
    flax_msgpack = flax_msgpack or not safe_serialization
    save_directory = loading.start_save(save_directory, model.config, canonical_class(type(model)))
    expected = expected_parameters(model)
    arrays = {n: np.asarray(jax.device_get(a)) for n, a in from_params(model.params if params is None else params, expected).items()}
    written = set(sharding.save_weights(save_directory, arrays, {n: a.nbytes for n, a in arrays.items()}, _write_safetensors,
                                        max_shard_size, total_parameters=sum(a.size for a in arrays.values())))
    if flax_msgpack:
        tree = transformers_flax.from_canonical(arrays, {n: kind for n, (_, kind) in expected.items()})
        with io.atomic_path(os.path.join(save_directory, transformers_flax.FILE_NAME)) as tmp:
            with open(tmp, "wb") as f:
                f.write(serialization.msgpack_serialize(tree))
        written.add(transformers_flax.FILE_NAME)
    # a stale weight file of another format would be picked up by the next load
    for name in STALE_CANDIDATES:
        path = os.path.join(save_directory, name)
        if name not in written and os.path.isfile(path):
            os.unlink(path)
    sharding.remove_weights(save_directory, hub.PYTORCH_NAME)


def _write_safetensors(arrays: dict, path):
    io.write_safetensors(arrays, path, metadata={"format": "pt"})
