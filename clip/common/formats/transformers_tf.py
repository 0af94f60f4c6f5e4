"""transformers' TensorFlow CLIP checkpoints (`tf_model.h5`, transformers 4.x) <-> canonical names, as data,
and the h5 file's reader and writer.

transformers' TFCLIP layers keep the PyTorch attribute paths below two scopes, the Keras model's and
the main layer's ("tfclip_model/clip/text_model/..."), with `/` for `.`, list items named
"layers_._0", Keras leaf names and layouts (kernels transposed), a ":0" suffix, and two quirks: the
token embedding's leaf is "weight" (an add_weight, not a keras Embedding) and logit_scale has shape (1,).

The HDF5 file itself is h5py's (clip.common.weight_files.read_h5 reads it; `write` writes what
tf_keras' save_weights writes: one layer "clip" listing its weights), imported when called.
"""

from __future__ import annotations

import os

import numpy as np

from clip.common import io, weight_files, weights

FILE_NAME = "tf_model.h5"
BACKEND = "tf"  # the LEAF_RULES column this layout follows
SCOPES = "tfclip_model/clip/"  # the Keras model's scope and the main layer's, as TFCLIPModel writes them
LAYER_NAME = "clip"  # the one Keras layer of the file, holding every weight
SCOPE_DEPTH = 2  # leading scopes to drop: the model's ("tfclip_model", "tfclip_model_1", ...) and "clip"
LIST_ITEM = ("layers_._", "layers.")  # tf_keras' name for item i of a list attribute -> ours

# TF leaf name -> {array rank: leaf kind}; the kind gives the canonical leaf name and transpose.
LEAVES = {
    "kernel": {2: "linear_weight", 4: "conv_weight"},
    "bias": {1: "linear_bias"},
    "gamma": {1: "layer_norm_weight"},
    "beta": {1: "layer_norm_bias"},
    "embeddings": {2: "embedding"},
}
# Whole paths (after the scopes) that do not follow LEAVES: (canonical name, leaf kind, canonical shape or None).
SPECIAL = {
    "text_model/embeddings/token_embedding/weight": ("text_model.embeddings.token_embedding.weight", "embedding", None),
    "logit_scale": ("logit_scale", "variable", ()),  # stored as (1,)
}
# The same exceptions the other way: canonical name -> (TF path, TF shape or None = unchanged).
SPECIAL_FROM_CANONICAL = {
    canonical: (path, (1,) if shape == () else None) for path, (canonical, _, shape) in SPECIAL.items()
}


def canonical_name(tf_name: str, ndim: int) -> tuple[str, str, tuple | None]:
    """(canonical name, leaf kind, canonical shape or None = unchanged) of one h5 weight name."""
    path = tf_name.split(":")[0].split("/", SCOPE_DEPTH)[-1]
    if path in SPECIAL:
        return SPECIAL[path]
    path = path.replace(LIST_ITEM[0], LIST_ITEM[1])
    head, _, leaf = path.rpartition("/")
    kind = LEAVES.get(leaf, {}).get(ndim, "variable")
    canonical = path.replace("/", ".")
    if kind != "variable":
        canonical = weights.backend_name(canonical, kind, "pt")  # the PyTorch leaf name
    return canonical, kind, None


def to_canonical(arrays: dict) -> dict[str, np.ndarray]:
    """{h5 weight name: array} -> {canonical name: array in the canonical (PyTorch) layout}."""
    out = {}
    for tf_name, array in arrays.items():
        name, kind, shape = canonical_name(tf_name, np.ndim(array))
        if name in out:
            raise ValueError(f"{tf_name}: a second weight for canonical name {name!r}")
        array = weights.from_backend_layout(array, kind, BACKEND)
        out[name] = array.reshape(shape) if shape is not None and array.size == int(np.prod(shape)) else array
    return out


def from_canonical(arrays: dict, kinds: dict) -> dict[str, np.ndarray]:
    """{canonical name: array}, {canonical name: leaf kind} -> {h5 weight name: array in the Keras layout}."""
    out = {}
    for name, array in arrays.items():
        kind = kinds[name]
        value = weights.to_backend_layout(array, kind, BACKEND)
        if name in SPECIAL_FROM_CANONICAL:
            path, shape = SPECIAL_FROM_CANONICAL[name]
            value = value.reshape(shape) if shape is not None else value
        else:
            path = weights.backend_name(name, kind, BACKEND).replace(".", "/").replace("/layers/", "/" + LIST_ITEM[0])
        out[f"{SCOPES}{path}:0"] = np.asarray(value, order="C")
    return out


def read(path: str | os.PathLike) -> tuple[dict, dict]:
    """({canonical name: array}, {canonical name: h5 weight name}) of a tf_model.h5; a file that is not
    one is an OSError or ValueError naming it."""
    raw = weight_files.read_h5(path)
    names = {canonical_name(tf_name, np.ndim(array))[0]: tf_name for tf_name, array in raw.items()}
    try:
        return to_canonical(raw), names
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def write(arrays: dict, kinds: dict, path: str | os.PathLike) -> None:
    """{canonical name: array} as transformers' tf_model.h5 at `path` (float16/32/64: HDF5 has no bfloat16)."""
    import h5py

    tf_arrays = from_canonical(arrays, kinds)
    with io.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = _tf_keras_version()
        f.attrs["layer_names"] = np.array([LAYER_NAME], dtype=h5py.string_dtype())
        group = f.create_group(LAYER_NAME)
        group.attrs["weight_names"] = np.array(list(tf_arrays), dtype=h5py.string_dtype())
        for name, array in tf_arrays.items():
            group.create_dataset(name, data=np.asarray(array))


def _tf_keras_version() -> str:
    """The installed tf-keras' version, as tf_keras writes it; transformers' own files say 2.15.0."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tf-keras")
    except PackageNotFoundError:
        return "2.15.0"
