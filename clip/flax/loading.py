"""from_pretrained / save_pretrained and initialization for the Flax models: what is Flax's own
around clip.common.loading (params trees, dtype and param_dtype, _do_init).

The params tree is the canonical name split at the dots, with the Flax leaf names and layouts of
clip.common.weights.LEAF_RULES (clip.flax.adapter). Loading reads model.safetensors (memory-mapped,
no torch) or transformers' flax_model.msgpack, checked against clip.common.weights before anything
is assigned, and initializes only what the checkpoint lacks. Saving writes config.json +
model.safetensors in canonical names, and transformers' flax_model.msgpack on request.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clip.common import loading, params, sharding, weights
from clip.flax import adapter
from clip.flax.adapter import canonical_class, expected_parameters, from_params, leaves, to_params  # noqa: F401
from clip.flax.adapter import transpose as _transpose


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
        node: Any = params  # a nested dict, then the leaf array (or None where a level is missing)
        for part in weights.backend_name(name, kind, "flax").split("."):
            node = node.get(part) if hasattr(node, "get") else None
            if node is None:
                break
        if node is not None:
            yield name, _transpose(node, kind, inverse=True)


# -- loading --------------------------------------------------------------------------------------
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
    checkpoint = loading.read_pretrained(
        cls, name_or_path, adapter, config, kwargs, use_safetensors, ignore_mismatched_sizes
    )
    model = cls(checkpoint.config, seed=seed, dtype=dtype, param_dtype=param_dtype, _do_init=False)
    fresh = init_arrays(checkpoint.config, canonical_class(cls), seed, checkpoint.fresh, param_dtype)
    params = adapter.params_tree(model, {**checkpoint.arrays, **fresh})
    checkpoint.arrays.clear()
    if _do_init:
        model.params = params  # with _do_init=False the model keeps none, as in transformers

    info = loading.loading_info(cls, checkpoint.source, checkpoint.report)
    result: tuple[Any, ...] = (model,) if _do_init else (model, params)
    result += (info,) if output_loading_info else ()
    return result if len(result) > 1 else model


# -- saving ---------------------------------------------------------------------------------------
def save_pretrained(
    model,
    save_directory,
    params=None,
    flax_msgpack=False,
    max_shard_size=sharding.DEFAULT_MAX_SHARD_SIZE,
    safe_serialization=True,
    **kwargs,
):
    """config.json + model.safetensors (canonical names, {"format": "pt"}; sharded beyond
    max_shard_size with transformers' index json); with `flax_msgpack` also transformers'
    flax_model.msgpack. Each file is written atomically. transformers' safe_serialization=False
    (its Flax default: msgpack only) is accepted and still writes safetensors beside the msgpack."""
    loading.save_pretrained(
        model,
        save_directory,
        adapter,
        kwargs,
        None if params is None else adapter.canonical_arrays(model, params),
        legacy=flax_msgpack or not safe_serialization,
        max_shard_size=max_shard_size,
        safe_serialization=safe_serialization,
    )
