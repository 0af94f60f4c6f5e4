"""transformers' TensorFlow CLIP checkpoints (`tf_model.h5`, transformers 4.x) -> canonical names, as data.

transformers' TFCLIP layers keep the PyTorch attribute paths below two scopes, the Keras model's and
the main layer's ("tfclip_model/clip/text_model/..."), with `/` for `.`, list items named
"layers_._0", Keras leaf names and layouts (kernels transposed), a ":0" suffix, and two quirks: the
token embedding's leaf is "weight" (an add_weight, not a keras Embedding) and logit_scale has shape (1,).

Only the names and layouts here: reading the HDF5 file (h5py) is the TF backend's, at the
checkpoint boundary.
"""

from __future__ import annotations

import numpy as np

from clip.common import weights

FILE_NAME = "tf_model.h5"
BACKEND = "tf"  # the LEAF_RULES column this layout follows
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
