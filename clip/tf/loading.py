"""from_pretrained / save_pretrained for the Keras models: what is Keras' own around
clip.common.loading (the dtype policy, the SavedModel).

Reads `model.safetensors` (canonical names, no torch needed) or transformers' `tf_model.h5`
(clip.tf.adapter), checked against clip.common.weights before the model is touched, then assigns
each array in the Keras layout. Saving writes config.json + model.safetensors in the canonical
names, so clip.pt and transformers' CLIPModel read it unchanged.
"""

from __future__ import annotations

import os

import numpy as np

from clip.common import loading, sharding, weight_files
from clip.tf import adapter, pretrained

assign_canonical = adapter.assign_canonical  # (its former home: the trainer, convert and tests call it here)
read_h5 = weight_files.read_h5  # {weight name: array} of transformers' tf_model.h5


def from_pretrained(
    cls,
    name_or_path,
    *,
    config=None,
    dtype=None,
    use_safetensors=None,
    output_loading_info=False,
    ignore_mismatched_sizes=False,
    **kwargs,
):
    """`dtype`: a Keras dtype policy ("float32", "bfloat16", "mixed_float16", ...); default: the global one.
    transformers' from_pt and trust_remote_code are accepted and change nothing."""
    checkpoint = loading.read_pretrained(
        cls, name_or_path, adapter, config, kwargs, use_safetensors, ignore_mismatched_sizes
    )
    with pretrained.building_for_load():
        model = cls(checkpoint.config, **({"dtype": dtype} if dtype is not None else {}))
    fresh = adapter.assign_canonical(model, checkpoint.arrays)
    model.init_weights(fresh) if fresh else None  # only what the checkpoint did not provide (random so far)

    info = loading.loading_info(cls, checkpoint.source, checkpoint.report)
    return (model, info) if output_loading_info else model


def canonical_state(model) -> dict[str, np.ndarray]:
    """{canonical name: numpy array in the canonical (PyTorch) layout}, in state_dict order, C-contiguous copies."""
    return {name: np.array(array, order="C") for name, array in adapter.canonical_arrays(model).items()}


def save_pretrained(
    model,
    save_directory,
    saved_model=False,
    version=1,
    signatures=None,
    max_shard_size=sharding.DEFAULT_MAX_SHARD_SIZE,
    safe_serialization=True,
    **kwargs,
):
    """config.json + model.safetensors ({"format": "pt"}, canonical names; sharded beyond
    max_shard_size with transformers' index json), each written atomically. transformers' TF
    arguments: saved_model=True also writes a SavedModel to saved_model/<version> serving
    `signatures` (default: model.serving); safe_serialization=False is accepted, and the weights
    are still safetensors (clip.tf writes no h5; transformers' TF from_pretrained reads safetensors)."""
    save_directory = loading.save_pretrained(
        model, save_directory, adapter, kwargs, max_shard_size=max_shard_size, safe_serialization=safe_serialization
    )
    if saved_model:
        import tensorflow as tf

        path = os.path.join(save_directory, "saved_model", str(version))
        tf.saved_model.save(model, path, signatures=signatures if signatures is not None else model.serving)
