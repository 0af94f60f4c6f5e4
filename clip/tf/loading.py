"""from_pretrained / save_pretrained for the Keras models.

Reads `model.safetensors` (canonical names, no torch needed) or transformers' `tf_model.h5`
(h5py, names mapped by clip.common.formats.transformers_tf), checks every key and shape against
clip.common.weights before touching the model, then assigns each array in the Keras layout
(LEAF_RULES' "tf" column). Saving writes config.json + model.safetensors in the canonical names, so
clip.pt and transformers' CLIPModel read it unchanged.
"""

from __future__ import annotations

import os

import numpy as np

from clip.common import hub, io, loading, sharding, weight_files, weights
from clip.common.formats import transformers_tf


WEIGHT_CANDIDATES = (hub.SAFETENSORS_NAME, hub.SAFETENSORS_INDEX_NAME, hub.TF_NAME)
STALE = (hub.SAFETENSORS_INDEX_NAME, hub.PYTORCH_NAME, hub.PYTORCH_INDEX_NAME, hub.TF_NAME)


def from_pretrained(cls, name_or_path, *, config=None, dtype=None, use_safetensors=None, output_loading_info=False,
                    ignore_mismatched_sizes=False, **kwargs):
    """`dtype`: a Keras dtype policy ("float32", "bfloat16", "mixed_float16", ...); default: the global one.
    transformers' from_pt and trust_remote_code are accepted and change nothing."""
    hint = "; pytorch_model.bin needs clip.pt: load it there and save_pretrained to get model.safetensors"
    config, kind, paths = loading.locate(cls, name_or_path, config, kwargs, "tf", WEIGHT_CANDIDATES, use_safetensors, hint)
    files = {}  # canonical name -> its file, for messages
    if kind == hub.TF_NAME:
        by_canonical, _ = transformers_tf.read(paths[0])
    else:
        by_canonical, files = loading.read_canonical_safetensors(paths)

    expected = weights.expected_parameters(config, cls.canonical_class)
    loading.check_float_weights(by_canonical, expected, files, paths[0])
    shapes = {n: tuple(np.shape(a)) for n, a in by_canonical.items()}
    report = loading.check_checkpoint(cls, name_or_path, expected, shapes, ignore_mismatched_sizes)
    mismatched = report["mismatched"]

    model = cls(config, **({"dtype": dtype} if dtype is not None else {}))
    fresh = assign_canonical(model, {n: a for n, a in by_canonical.items() if n in expected and n not in mismatched})
    model.init_weights(fresh) if fresh else None  # only what the checkpoint did not provide (random so far)

    info = loading.loading_info(cls, name_or_path, report)
    return (model, info) if output_loading_info else model


def assign_canonical(model, arrays: dict) -> list:
    """Assign {canonical name: array (canonical layout)} to the model; returns the names not given.

    Every shape is checked before the first assignment; a mismatch names the tensor.
    """
    variables = model.canonical_variables()
    unknown = sorted(set(arrays) - set(variables))
    if unknown:
        raise KeyError(f"{type(model).__name__} has no weights named {unknown}")
    converted = {}
    for name, array in arrays.items():
        variable, kind = variables[name]
        value = weights.to_backend_layout(array, kind, "tf")
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{name}: the model's variable has shape {tuple(variable.shape)}, the checkpoint gives {tuple(value.shape)} (Keras layout)")
        converted[name] = value
    for name, value in converted.items():
        variable = variables[name][0]
        variable.assign(np.asarray(value, dtype=np.dtype(variable.dtype) if variable.dtype != "bfloat16" else np.float32))
    return [name for name in variables if name not in converted]


def canonical_state(model) -> dict[str, np.ndarray]:
    """{canonical name: numpy array in the canonical (PyTorch) layout}, in state_dict order."""
    return {
        name: weights.from_backend_layout(variable.numpy(), kind, "tf").copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        for name, (variable, kind) in model.canonical_variables().items()
    }


read_h5 = weight_files.read_h5  # {weight name: array} of transformers' tf_model.h5


def save_pretrained(model, save_directory, saved_model=False, version=1, signatures=None,
                    max_shard_size=sharding.DEFAULT_MAX_SHARD_SIZE, safe_serialization=True, **kwargs):
    """config.json + model.safetensors ({"format": "pt"}, canonical names; sharded beyond
    max_shard_size with transformers' index json), each written atomically. transformers' TF
    arguments: saved_model=True also writes a SavedModel to saved_model/<version> serving
    `signatures` (default: model.serving); safe_serialization=False is accepted, and the weights
    are still safetensors (clip.tf writes no h5; transformers' TF from_pretrained reads safetensors)."""
    for key in ("push_to_hub", "create_pr"):
        if kwargs.pop(key, False):
            raise ValueError(f"save_pretrained: {key}=True is not supported by clip.tf")
    kwargs.pop("token", None)
    if kwargs:
        raise TypeError(f"save_pretrained got unexpected arguments {sorted(kwargs)}")
    loading.check_safe_serialization(safe_serialization)
    save_directory = loading.start_save(save_directory, model.config, model.canonical_class)
    state = canonical_state(model)
    sharding.save_weights(save_directory, state, {n: a.nbytes for n, a in state.items()}, _write_safetensors,
                          max_shard_size, total_parameters=sum(a.size for a in state.values()))
    # a stale weight file of another format would be picked up by the next load (here or in transformers)
    for name in STALE:
        path = os.path.join(save_directory, name)
        if name != hub.SAFETENSORS_INDEX_NAME and os.path.isfile(path):
            os.unlink(path)
    sharding.remove_weights(save_directory, hub.PYTORCH_NAME)
    if saved_model:
        import tensorflow as tf

        path = os.path.join(save_directory, "saved_model", str(version))
        tf.saved_model.save(model, path, signatures=signatures if signatures is not None else model.serving)


def _write_safetensors(arrays: dict, path):
    io.write_safetensors(arrays, path, metadata={"format": "pt"})
