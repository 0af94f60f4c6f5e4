"""The parameter table: every fact the code knows about a canonical parameter, in one row.

Why a table: the architecture used to be known by several name-string parsers that had to agree
(the init rule, the weight-decay rule, the LayerNorm test, the list of expected checkpoint
keys), so adding or changing one parameter meant editing four or five files. Here the rows are
built once from a config, by walking the architecture the way the modules are built, and every
consumer reads them: the loaders and converters (`clip.common.weights.expected_parameters` is a
view of the table), the three backends' initialization (`init_arrays`, drawn once in numpy so
PyTorch, TensorFlow and Flax start from identical arrays for one seed), the optimizers' decay
masks, the fingerprint, and the modules themselves where a parameter is optional (a projection
has a bias exactly when the table has its row). Adding a parameter is adding a row.

A row's `kind` keys the per-backend naming and layout rules of clip.common.weights.LEAF_RULES.
The init rules reproduce transformers' CLIP `_init_weights`; the decay flag is CLIP's and
open_clip's recipe: only matrix weights of linear and convolution layers decay.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

# A model's config, read by attribute: CLIPConfig, CLIPTextConfig or CLIPVisionConfig (which one
# depends on the model class, a string) or transformers' equivalents.
ConfigLike = Any

MODEL_CLASSES = (
    "CLIPModel",
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
    "CLIPVisionModel",
    "CLIPVisionModelWithProjection",
    "CLIPForImageClassification",
)

# Leaf kinds (the keys of clip.common.weights.LEAF_RULES). "variable": a bare parameter of no layer
# (class_embedding, logit_scale).
KINDS = ("linear_weight", "linear_bias", "conv_weight", "layer_norm_weight", "layer_norm_bias", "embedding", "variable")
DECAYED_KINDS = ("linear_weight", "conv_weight")  # biases, gains, embeddings and scalars keep their size


@dataclass(frozen=True)
class Param:
    """One canonical parameter.

    init: ("normal", std), ("zeros",), ("ones",) or ("constant", value), mean 0 for "normal".
    decay: whether AdamW's weight decay applies to it.
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    init: tuple
    decay: bool


def row(name: str, shape: tuple[int, ...], kind: str, init: tuple, decay: bool | None = None) -> Param:
    """A Param whose decay flag defaults to the kind's (DECAYED_KINDS)."""
    if kind not in KINDS:
        raise ValueError(f"unknown parameter kind {kind!r} for {name!r}; expected one of {', '.join(KINDS)}")
    return Param(
        name, tuple(int(d) for d in shape), kind, tuple(init), kind in DECAYED_KINDS if decay is None else decay
    )


# -- building blocks, in the order of PyTorch's state_dict() ---------------------------------------------
def _linear(prefix: str, out_dim: int, in_dim: int, std: float, bias: bool = True) -> list[Param]:
    rows = [row(f"{prefix}.weight", (out_dim, in_dim), "linear_weight", ("normal", std))]
    if bias:
        rows.append(row(f"{prefix}.bias", (out_dim,), "linear_bias", ("zeros",)))
    return rows


def _layer_norm(prefix: str, width: int) -> list[Param]:
    return [
        row(f"{prefix}.weight", (width,), "layer_norm_weight", ("ones",)),
        row(f"{prefix}.bias", (width,), "layer_norm_bias", ("zeros",)),
    ]


def _encoder(prefix: str, tower) -> list[Param]:
    """The pre-LN blocks; stds as transformers: each tower with its own initializer_factor."""
    width, inner, factor = tower.hidden_size, tower.intermediate_size, tower.initializer_factor
    depth_std = width**-0.5 * (2 * tower.num_hidden_layers) ** -0.5 * factor  # q, k, v and fc2
    rows = []
    for i in range(tower.num_hidden_layers):
        layer = f"{prefix}.encoder.layers.{i}"
        for proj, std in (
            ("k_proj", depth_std),
            ("v_proj", depth_std),
            ("q_proj", depth_std),
            ("out_proj", width**-0.5 * factor),
        ):
            rows += _linear(f"{layer}.self_attn.{proj}", width, width, std)
        rows += _layer_norm(f"{layer}.layer_norm1", width)
        rows += _linear(f"{layer}.mlp.fc1", inner, width, (2 * width) ** -0.5 * factor)
        rows += _linear(f"{layer}.mlp.fc2", width, inner, depth_std)
        rows += _layer_norm(f"{layer}.layer_norm2", width)
    return rows


def text_tower(config: ConfigLike) -> list[Param]:
    width, factor = config.hidden_size, config.initializer_factor
    rows = [  # a fixed 0.02, not initializer_range, as transformers
        row(
            "text_model.embeddings.token_embedding.weight",
            (config.vocab_size, width),
            "embedding",
            ("normal", 0.02 * factor),
        ),
        row(
            "text_model.embeddings.position_embedding.weight",
            (config.max_position_embeddings, width),
            "embedding",
            ("normal", 0.02 * factor),
        ),
    ]
    return rows + _encoder("text_model", config) + _layer_norm("text_model.final_layer_norm", width)


def vision_tower(config: ConfigLike) -> list[Param]:
    width, patch, factor = config.hidden_size, config.patch_size, config.initializer_factor
    rows = [
        row("vision_model.embeddings.class_embedding", (width,), "variable", ("normal", width**-0.5 * factor)),
        row(
            "vision_model.embeddings.patch_embedding.weight",
            (width, config.num_channels, patch, patch),
            "conv_weight",
            ("normal", config.initializer_range * factor),
        ),
        row(
            "vision_model.embeddings.position_embedding.weight",
            (config.num_patches + 1, width),
            "embedding",
            ("normal", config.initializer_range * factor),
        ),
    ]
    rows += _layer_norm("vision_model.pre_layrnorm", width)  # transformers' historic spelling
    return rows + _encoder("vision_model", config) + _layer_norm("vision_model.post_layernorm", width)


def head(prefix: str, out_dim: int, tower: ConfigLike, factor: float, bias: bool = False) -> list[Param]:
    """A linear head on a tower (projection or classifier): std from the tower's width and the model's factor."""
    return _linear(prefix, out_dim, tower.hidden_size, tower.hidden_size**-0.5 * factor, bias)


# -- the table -------------------------------------------------------------------------------------------
def parameter_table(config: ConfigLike, model_class: str) -> dict[str, Param]:
    """{canonical name: Param} of `model_class` (a name of MODEL_CLASSES), in PyTorch's state_dict() order.

    `config` is the class's config: CLIPConfig for CLIPModel and CLIPForImageClassification, the
    tower config otherwise. The heads use that config's initializer_factor, the towers their own
    (transformers builds the towers as sub-models first).
    """
    if model_class == "CLIPModel":
        text, vision = config.text_config, config.vision_config
        factor = config.initializer_factor
        rows = [
            row("logit_scale", (), "variable", ("constant", float(config.logit_scale_init_value)))
        ]  # a module's own first
        rows += text_tower(text) + vision_tower(vision)
        rows += head("visual_projection", config.projection_dim, vision, factor)
        rows += head("text_projection", config.projection_dim, text, factor)
    elif model_class == "CLIPTextModel":
        rows = text_tower(config)
    elif model_class == "CLIPTextModelWithProjection":
        rows = text_tower(config) + head("text_projection", config.projection_dim, config, config.initializer_factor)
    elif model_class == "CLIPVisionModel":
        rows = vision_tower(config)
    elif model_class == "CLIPVisionModelWithProjection":
        rows = vision_tower(config) + head(
            "visual_projection", config.projection_dim, config, config.initializer_factor
        )
    elif model_class == "CLIPForImageClassification":
        rows = vision_tower(config.vision_config)
        if config.num_labels > 0:  # else the head is an identity
            rows += head("classifier", config.num_labels, config.vision_config, config.initializer_factor, bias=True)
    else:
        raise ValueError(f"unknown model class {model_class!r}; expected one of {', '.join(MODEL_CLASSES)}")
    return {p.name: p for p in rows}


# -- initialization ---------------------------------------------------------------------------------
def init_arrays(
    table: dict[str, Param],
    seed: int | np.random.Generator,
    names: Iterable[str] | None = None,
    dtype: DTypeLike = np.float32,
) -> dict[str, np.ndarray]:
    """{name: array in the canonical layout} drawn by the rows' init rules, for `names` (default all),
    in table order.

    `seed`: an int, or a numpy Generator (one int is drawn from it). A parameter's values depend only
    on the seed and its own name (float32 standard normals times the std, from a stream keyed by
    both), never on which other parameters are drawn or on the backend, so every backend seeded alike
    gets the same arrays. Blocks of BLOCK elements are drawn in parallel threads (numpy releases the
    GIL while filling; each block has its own stream, so the result does not depend on the thread
    count). An unknown name is a KeyError naming it.
    """
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(0, 2**63 - 1))
    if names is None:
        chosen = list(table)
    else:
        wanted = set(names)
        unknown = sorted(wanted - set(table))
        if unknown:
            raise KeyError(f"no parameter named {', '.join(map(repr, unknown))} in this model")
        chosen = [name for name in table if name in wanted]
    out, blocks = {}, []
    for name in chosen:
        param = table[name]
        rule = param.init
        if rule[0] == "normal":
            array = np.empty(param.shape, np.float32)
            flat = array.reshape(-1)
            key = _name_key(int(seed), name)
            blocks += [
                (key, start, flat[start : start + BLOCK], np.float32(rule[1])) for start in range(0, flat.size, BLOCK)
            ]
        elif rule[0] in ("zeros", "ones", "constant"):
            array = np.full(param.shape, {"zeros": 0.0, "ones": 1.0}.get(rule[0], rule[-1]), np.float32)
        else:
            raise ValueError(f"{name}: unknown init rule {rule!r}")
        out[name] = array
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda block: _fill_normal(*block), blocks))
    return {name: array.astype(dtype, copy=False) for name, array in out.items()}


BLOCK = 1 << 20  # elements per independently seeded stream (4 MiB of float32)


def _name_key(seed: int, name: str) -> list[int]:
    """The entropy of a parameter's stream: the seed and 128 bits of its name's hash."""
    return [seed, *np.frombuffer(hashlib.sha256(name.encode()).digest()[:16], np.uint32).tolist()]


def _fill_normal(key: list[int], start: int, out: np.ndarray, std: np.float32):
    np.random.default_rng(np.random.SeedSequence([*key, start])).standard_normal(out=out, dtype=np.float32)
    out *= std


def has_parameter(config: ConfigLike, model_class: str, name: str) -> bool:
    """Whether the table of `model_class` has `name`: how a module decides on an optional parameter
    (a head's bias), so that a row added to the table is all it takes to add the parameter."""
    return name in parameter_table(config, model_class)
