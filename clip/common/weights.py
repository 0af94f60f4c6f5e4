"""The canonical weight layout: transformers' PyTorch state-dict names, as data.

`expected_parameters(config, model_class)` lists every canonical name with its shape and leaf
kind (a view of clip.common.params.parameter_table), so a loader can check a whole checkpoint
before it assigns anything. The leaf kinds carry the per-backend naming and layout rules
(`LEAF_RULES`): the TF and Flax backends keep the same attribute paths and differ only in the
last name component and a transpose.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

import numpy as np
from numpy.typing import ArrayLike

from clip.common import params

MODEL_CLASSES = params.MODEL_CLASSES

# Which parts (top-level name prefixes) each model class owns. All classes use the same prefixes,
# so a full CLIPModel checkpoint loads into any sub-model (its other parts are reported as
# unexpected) and a sub-model checkpoint into CLIPModel (the absent parts reported missing).
PARTS = {
    "CLIPModel": ("text_model", "vision_model", "visual_projection", "text_projection", "logit_scale"),
    "CLIPTextModel": ("text_model",),
    "CLIPTextModelWithProjection": ("text_model", "text_projection"),
    "CLIPVisionModel": ("vision_model",),
    "CLIPVisionModelWithProjection": ("vision_model", "visual_projection"),
    "CLIPForImageClassification": ("vision_model", "classifier"),
}

# transformers' base_model_prefix: checkpoints of wrapping models may nest CLIP under it.
BASE_MODEL_PREFIX = "clip."

# Buffers that older checkpoints carry (transformers < 4.31 saved them) but that are not
# parameters; loaders drop them silently, as transformers does for non-persistent buffers.
IGNORED_SUFFIXES = ("embeddings.position_ids",)


# Per-leaf rules. "names" gives the last name component per backend, "transpose" the axis order
# that turns the canonical (PyTorch) array into the backend's layout (None: unchanged).
class LeafRule(TypedDict):
    names: dict[str, str]  # backend -> the last name component there
    transpose: dict[str, tuple[int, ...]]  # backend -> axis order of its layout


LEAF_RULES: dict[str, LeafRule] = {
    "linear_weight": {
        "names": {"pt": "weight", "tf": "kernel", "flax": "kernel"},
        "transpose": {"tf": (1, 0), "flax": (1, 0)},
    },
    "linear_bias": {"names": {"pt": "bias", "tf": "bias", "flax": "bias"}, "transpose": {}},
    "conv_weight": {
        "names": {"pt": "weight", "tf": "kernel", "flax": "kernel"},
        "transpose": {"tf": (2, 3, 1, 0), "flax": (2, 3, 1, 0)},
    },  # OIHW -> HWIO
    "layer_norm_weight": {"names": {"pt": "weight", "tf": "gamma", "flax": "scale"}, "transpose": {}},
    "layer_norm_bias": {"names": {"pt": "bias", "tf": "beta", "flax": "bias"}, "transpose": {}},
    "embedding": {"names": {"pt": "weight", "tf": "embeddings", "flax": "embedding"}, "transpose": {}},
    "variable": {"names": {}, "transpose": {}},  # class_embedding, logit_scale: kept as they are
}
BACKENDS = ("pt", "tf", "flax")


def expected_parameters(config: params.ConfigLike, model_class: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """{canonical name: (shape, leaf kind)} for `model_class` (a name from MODEL_CLASSES): a view of
    clip.common.params.parameter_table, in the order of PyTorch's state_dict().

    `config` is the class's config: CLIPConfig for CLIPModel and CLIPForImageClassification, the
    tower config for the others.
    """
    return {name: (param.shape, param.kind) for name, param in params.parameter_table(config, model_class).items()}


# -- checkpoint keys ------------------------------------------------------------------------------
def normalize_checkpoint_keys(names: Iterable[str]) -> dict[str, str]:
    """{checkpoint name: canonical name} after the checkpoint-boundary rules.

    Drops the buffers in IGNORED_SUFFIXES and strips BASE_MODEL_PREFIX when every key has it.
    """
    names = [n for n in names if not n.endswith(IGNORED_SUFFIXES)]
    strip = bool(names) and all(n.startswith(BASE_MODEL_PREFIX) for n in names)
    return {n: n[len(BASE_MODEL_PREFIX) :] if strip else n for n in names}


def match_checkpoint(expected: dict, found: dict) -> dict:
    """Compare the expected {name: (shape, kind)} with a checkpoint's {name: shape}.

    Returns {"missing_keys", "unexpected_keys", "mismatched_keys": [(name, expected, found)]}.
    """
    missing = [n for n in expected if n not in found]
    unexpected = sorted(n for n in found if n not in expected)
    mismatched = [
        (n, tuple(expected[n][0]), tuple(found[n]))
        for n in expected
        if n in found and tuple(found[n]) != tuple(expected[n][0])
    ]
    return {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_keys": mismatched}


# -- per-backend names and layouts ----------------------------------------------------------------
def backend_name(name: str, kind: str, backend: str) -> str:
    """The backend's name of a canonical parameter: same path, the backend's leaf name."""
    leaf = LEAF_RULES[kind]["names"].get(backend)
    if leaf is None:
        return name
    head, _, _ = name.rpartition(".")
    return f"{head}.{leaf}"


def to_backend_layout(array: ArrayLike, kind: str, backend: str) -> np.ndarray:
    perm = LEAF_RULES[kind]["transpose"].get(backend)
    return np.asarray(array) if perm is None else np.transpose(array, perm)


def from_backend_layout(array: ArrayLike, kind: str, backend: str) -> np.ndarray:
    perm = LEAF_RULES[kind]["transpose"].get(backend)
    return np.asarray(array) if perm is None else np.transpose(array, np.argsort(perm))


# -- identity of a set of weights -------------------------------------------------------------------
FINGERPRINT_SAMPLES = 4096


def fingerprint(tensors: Iterable[tuple[str, ArrayLike]]) -> str:
    """A short hex digest that tells one set of weights from another, whatever backend holds them.

    `tensors`: (canonical name, array in the canonical layout) pairs, in any order; transposed
    views are fine (nothing is copied whole). Each tensor contributes its name, shape and up to
    FINGERPRINT_SAMPLES values spread evenly over it, as float32: any training step or other
    checkpoint changes it, reading the same checkpoint into another backend or path does not.
    """
    import hashlib

    parts = {}
    for name, array in tensors:  # one tensor at a time: only its sample is kept
        array = np.asarray(array)
        count = min(FINGERPRINT_SAMPLES, array.size)
        flat = np.linspace(0, array.size - 1, count).round().astype(np.int64)
        sample = array[np.unravel_index(flat, array.shape)] if array.ndim else array.reshape(1)
        parts[name] = (
            f"{name}:{tuple(array.shape)};".encode() + np.ascontiguousarray(sample, dtype=np.float32).tobytes()
        )
    digest = hashlib.sha256()
    for name in sorted(parts):
        digest.update(parts[name])
    return digest.hexdigest()[:16]


# -- position-embedding resampling (interpolate_pos_encoding) ---------------------------------------
def bicubic_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float32 matrix M with M @ x = torch's bicubic resize of x along one axis.

    torch.nn.functional.interpolate(mode="bicubic", align_corners=False): cubic convolution with
    a = -0.75, source coordinate (i + 0.5) * size_in / size_out - 0.5 left unclamped, taps clamped
    to the border. TF's and JAX's bicubic resizes use a = -0.5, so backends apply this instead
    (static sizes: the matrix is built in numpy once per shape).
    """
    a = -0.75

    def cubic(t):  # the kernel at distance |t|
        t = abs(t)
        if t <= 1:
            return ((a + 2) * t - (a + 3)) * t * t + 1
        return (((t - 5) * t + 8) * t - 4) * a if t < 2 else 0.0

    scale = np.float32(size_in) / np.float32(size_out)  # torch computes the scale in float32
    out = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        src = float(scale * np.float32(i + 0.5) - np.float32(0.5))
        base = int(np.floor(src))
        for tap in range(base - 1, base + 3):
            out[i, min(max(tap, 0), size_in - 1)] += cubic(src - tap)
    return out.astype(np.float32)
