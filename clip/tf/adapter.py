"""The Keras side of clip.common.loading: canonical arrays out of a model and into it, and
transformers' tf_model.h5. Variables keep the canonical attribute paths; their leaf names and
layouts follow clip.common.weights.LEAF_RULES' "tf" column.
"""

from __future__ import annotations

import numpy as np

from clip.common import loading, weights
from clip.common.formats import transformers_tf

BACKEND = "tf"


def canonical_class(model_or_cls) -> str:
    return loading.canonical_class(model_or_cls, "TF")


def canonical_arrays(model) -> loading.CanonicalArrays:
    """{canonical name: numpy array}, each variable read when asked for, seen in the canonical
    layout through a transposed view."""
    variables = model.canonical_variables()

    def read(name, kind):
        return weights.from_backend_layout(variables[name][0].numpy(), kind, BACKEND)

    return loading.CanonicalArrays({name: kind for name, (_, kind) in variables.items()}, read)


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
        value = weights.to_backend_layout(array, kind, BACKEND)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{name}: the model's variable has shape {tuple(variable.shape)}, "
                f"the checkpoint gives {tuple(value.shape)} (Keras layout)"
            )
        converted[name] = value
    for name, value in converted.items():
        variable = variables[name][0]
        variable.assign(
            np.asarray(value, dtype=np.dtype(variable.dtype) if variable.dtype != "bfloat16" else np.float32)
        )
    return [name for name in variables if name not in converted]


def read_legacy(kind, paths, files: dict) -> dict:
    """{canonical name: array} of transformers' tf_model.h5 (names mapped by formats.transformers_tf)."""
    arrays, _ = transformers_tf.read(paths[0])  # its errors name the file
    files.update(dict.fromkeys(arrays, paths[0]))
    return arrays


def write_legacy(model, directory, arrays: dict, max_shard_size) -> list:
    """clip.tf writes no h5: transformers' TF from_pretrained reads model.safetensors."""
    return []
