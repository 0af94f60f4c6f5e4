"""OpenAI's CLIP checkpoints (`ViT-B-32.pt`, ...: TorchScript archives or state dicts) <-> canonical names, as data.

OpenAI's ViT CLIP (openai/CLIP clip/model.py) names its tensors

    visual.conv1.weight                 (width, 3, patch, patch), no bias
    visual.class_embedding              (width,)
    visual.positional_embedding         (grid * grid + 1, width)
    visual.ln_pre / visual.ln_post      LayerNorm
    visual.transformer.resblocks.N.     one pre-LN block per layer:
        attn.in_proj_weight / _bias     q, k and v fused along the output axis (nn.MultiheadAttention)
        attn.out_proj, ln_1, mlp.c_fc, mlp.c_proj, ln_2
    visual.proj                         (width, embed_dim): used as x @ proj, the transpose of a Linear weight
    token_embedding.weight, positional_embedding (context_length, width), transformer.resblocks.N. ...,
    ln_final, text_projection (width, embed_dim, transposed like visual.proj), logit_scale ()

and the TorchScript archives also carry three integer buffers (input_resolution, context_length,
vocab_size). Every name maps to one canonical name, except the fused in_proj tensors (split in
three along axis 0, in the order q, k, v) and the two projections (transposed). The config is not
stored: `infer_config` reads it off the shapes as OpenAI's build_model does (heads = width // 64,
MLP width from c_fc, the grid from the position table). Both towers use QuickGELU.

Reading and writing the .pt files (torch, imported when called) is clip.common.weight_files'; open_clip's
files are read by the same `read_file`.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np

from clip.common import io, weight_files

# (foreign name, canonical name(s), operation); "{i}" stands for a layer index. Operations:
# None: unchanged, "transpose": a 2-d transpose, "split3": axis 0 cut in three (q, k, v) / concatenated back.
BLOCK = (
    (
        "attn.in_proj_weight",
        ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
        "split3",
    ),
    ("attn.in_proj_bias", ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"), "split3"),
    ("attn.out_proj.weight", "self_attn.out_proj.weight", None),
    ("attn.out_proj.bias", "self_attn.out_proj.bias", None),
    ("ln_1.weight", "layer_norm1.weight", None),
    ("ln_1.bias", "layer_norm1.bias", None),
    ("mlp.c_fc.weight", "mlp.fc1.weight", None),
    ("mlp.c_fc.bias", "mlp.fc1.bias", None),
    ("mlp.c_proj.weight", "mlp.fc2.weight", None),
    ("mlp.c_proj.bias", "mlp.fc2.bias", None),
    ("ln_2.weight", "layer_norm2.weight", None),
    ("ln_2.bias", "layer_norm2.bias", None),
)
# foreign block prefix -> canonical block prefix, per tower
TOWERS = (
    ("visual.transformer.resblocks.{i}.", "vision_model.encoder.layers.{i}."),
    ("transformer.resblocks.{i}.", "text_model.encoder.layers.{i}."),
)
GLOBAL = (
    ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight", None),
    ("visual.class_embedding", "vision_model.embeddings.class_embedding", None),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight", None),
    ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight", None),
    ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias", None),
    ("visual.ln_post.weight", "vision_model.post_layernorm.weight", None),
    ("visual.ln_post.bias", "vision_model.post_layernorm.bias", None),
    ("visual.proj", "visual_projection.weight", "transpose"),
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight", None),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight", None),
    ("ln_final.weight", "text_model.final_layer_norm.weight", None),
    ("ln_final.bias", "text_model.final_layer_norm.bias", None),
    ("text_projection", "text_projection.weight", "transpose"),
    ("logit_scale", "logit_scale", None),
)
RULES = GLOBAL + tuple(
    (foreign + f, tuple(canonical + c for c in cs) if isinstance(cs, tuple) else canonical + cs, op)
    for foreign, canonical in TOWERS
    for f, cs, op in BLOCK
)
# Entries that are not weights: the integer buffers of the TorchScript archives, and the causal
# mask some exports keep as a buffer.
IGNORED = ("input_resolution", "context_length", "vocab_size", "attn_mask", "transformer.attn_mask")
# Present only in OpenAI's ResNet image towers (RN50, RN101, RN50x4, ...), which have no canonical form.
RESNET_MARKERS = ("visual.layer1.", "visual.attnpool.")

HEAD_WIDTH = 64  # OpenAI: heads = width // 64 in both towers
ACTIVATION = "quick_gelu"


def _pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + r"\Z")


_COMPILED = [(_pattern(foreign), canonical, op) for foreign, canonical, op in RULES]
_INVERSE = {}  # canonical pattern -> (rule index, part index)
for _index, (_, _canonical, _op) in enumerate(RULES):
    for _part, _name in enumerate(_canonical if isinstance(_canonical, tuple) else (_canonical,)):
        _INVERSE[_pattern(_name)] = (_index, _part)


def _fill(template: str, match: re.Match) -> str:
    return template.replace("{i}", match.group("i")) if "{i}" in template else template


def to_canonical(state: dict, where: str = "checkpoint") -> tuple[dict, dict]:
    """{OpenAI name: array} -> ({canonical name: array (PyTorch layout)}, {canonical name: OpenAI name}).

    Unknown names, ResNet towers and tensors an operation cannot apply to raise ValueError
    naming `where` and the tensor.
    """
    resnet = sorted(n for n in state if n.startswith(RESNET_MARKERS))
    if resnet:
        raise ValueError(
            f"{where}: a ResNet image tower ({resnet[0]}, ...): only ViT CLIP models have a canonical "
            "(transformers CLIPModel) form"
        )
    out, sources, unknown = {}, {}, []
    for name, array in state.items():
        if name in IGNORED:
            continue
        for pattern, canonical, op in _COMPILED:  # noqa: B007 (the matching rule's canonical and op are used below)
            match = pattern.match(name)
            if match:
                break
        else:
            unknown.append(name)
            continue
        array = np.asarray(array)
        if op == "split3":
            if array.ndim < 1 or array.shape[0] % 3:
                raise ValueError(
                    f"{where}: tensor {name!r} of shape {array.shape} cannot be split into q, k, v "
                    "(axis 0 not a multiple of 3)"
                )
            parts = np.split(array, 3, axis=0)
        elif op == "transpose":
            if array.ndim != 2:
                raise ValueError(
                    f"{where}: tensor {name!r} should be 2-d (width, embed_dim), found shape {array.shape}"
                )
            parts = [array.T]
        else:
            parts = [array]
        names = canonical if isinstance(canonical, tuple) else (canonical,)
        for target, part in zip(names, parts):
            target = _fill(target, match)
            out[target] = part
            sources[target] = name
    if unknown:
        shown = ", ".join(sorted(unknown)[:8]) + (", ..." if len(unknown) > 8 else "")
        raise ValueError(
            f"{where}: {len(unknown)} tensor(s) that are not part of a ViT CLIP in OpenAI's layout: {shown}"
        )
    return out, sources


def from_canonical(arrays: dict) -> dict:
    """{canonical name: array} of a CLIPModel -> {OpenAI name: array}, in RULES order."""
    parts: dict[tuple, dict] = {}
    for name, array in arrays.items():
        for pattern, (index, part) in _INVERSE.items():  # noqa: B007 (the matching rule's index and part are used below)
            match = pattern.match(name)
            if match:
                break
        else:
            raise ValueError(f"{name!r} has no place in OpenAI's layout (only a CLIPModel's tensors do)")
        foreign, _, op = RULES[index]
        key = (index, _fill(foreign, match))
        parts.setdefault(key, {})[part] = np.asarray(array)
    out = {}
    for (index, foreign), pieces in sorted(parts.items(), key=lambda item: (item[0][0], _layer(item[0][1]))):
        op = RULES[index][2]
        if op == "split3":
            if len(pieces) != 3:
                raise ValueError(f"{foreign}: needs q, k and v; only {len(pieces)} of them given")
            out[foreign] = np.concatenate([pieces[0], pieces[1], pieces[2]], axis=0)
        elif op == "transpose":
            out[foreign] = pieces[0].T
        else:
            out[foreign] = pieces[0]
    return out


def _layer(name: str) -> int:
    match = re.search(r"\.(\d+)\.", name)
    return int(match.group(1)) if match else -1


def _count_layers(state, prefix: str) -> int:
    return len({name[len(prefix) :].split(".")[0] for name in state if name.startswith(prefix)})


def _heads(width: int, head_width: int, where: str, tower: str) -> int:
    heads = width // head_width
    if heads < 1 or width % heads:
        raise ValueError(
            f"{where}: the {tower} tower's width {width} does not split into heads of width {head_width}; "
            f"give the number of heads (--set {tower}_config.num_attention_heads=N)"
        )
    return heads


def _shape(state, name, where, ndim):
    if name not in state:
        raise ValueError(f"{where}: not a CLIP checkpoint in OpenAI's layout (no tensor {name!r})")
    shape = tuple(np.shape(state[name]))
    if len(shape) != ndim:
        raise ValueError(f"{where}: tensor {name!r} should have {ndim} dimension(s), found shape {shape}")
    return shape


def infer_config(
    state: dict,
    where: str = "checkpoint",
    vision_head_width: int = HEAD_WIDTH,
    text_head_width: int = HEAD_WIDTH,
    text_heads: int | None = None,
    vision_heads: int | None = None,
    hidden_act: str = ACTIVATION,
) -> dict:
    """A CLIPConfig dict read off the tensor shapes of an OpenAI-layout state dict."""
    if any(n.startswith(RESNET_MARKERS) for n in state):
        to_canonical({n: None for n in state if n.startswith(RESNET_MARKERS)}, where)  # raises the ResNet error
    width, channels, patch, patch_w = _shape(state, "visual.conv1.weight", where, 4)
    if patch != patch_w:
        raise ValueError(f"{where}: tensor 'visual.conv1.weight' has non-square patches {patch}x{patch_w}")
    positions = _shape(state, "visual.positional_embedding", where, 2)[0]
    grid = round(math.sqrt(positions - 1))
    if grid * grid + 1 != positions:
        raise ValueError(
            f"{where}: tensor 'visual.positional_embedding' has {positions} rows, "
            "not a square grid plus the class token"
        )
    embed_dim = _shape(state, "text_projection", where, 2)[1]
    context_length, text_width = _shape(state, "positional_embedding", where, 2)
    vocab_size = _shape(state, "token_embedding.weight", where, 2)[0]
    vision_layers = _count_layers(state, "visual.transformer.resblocks.")
    text_layers = _count_layers(state, "transformer.resblocks.")
    if not vision_layers or not text_layers:
        raise ValueError(
            f"{where}: not a CLIP checkpoint in OpenAI's layout "
            f"(no transformer blocks in the {'image' if not vision_layers else 'text'} tower)"
        )
    vision_mlp = _shape(state, "visual.transformer.resblocks.0.mlp.c_fc.weight", where, 2)[0]
    text_mlp = _shape(state, "transformer.resblocks.0.mlp.c_fc.weight", where, 2)[0]
    text = dict(
        vocab_size=vocab_size,
        hidden_size=text_width,
        intermediate_size=text_mlp,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads or _heads(text_width, text_head_width, where, "text"),
        max_position_embeddings=context_length,
        projection_dim=embed_dim,
        hidden_act=hidden_act,
        # the end-of-text token is the vocabulary's last id: pooling at its first occurrence is OpenAI's argmax
        eos_token_id=vocab_size - 1,
        bos_token_id=vocab_size - 2,
    )
    vision = dict(
        hidden_size=width,
        intermediate_size=vision_mlp,
        num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads or _heads(width, vision_head_width, where, "vision"),
        num_channels=channels,
        image_size=patch * grid,
        patch_size=patch,
        projection_dim=embed_dim,
        hidden_act=hidden_act,
    )
    return {"text_config": text, "vision_config": vision, "projection_dim": embed_dim, "architectures": ["CLIPModel"]}


def check_buffers(state: dict, config: dict, where: str = "checkpoint") -> None:
    """The TorchScript archives' integer buffers, where present, must agree with the inferred config."""
    expected = {
        "input_resolution": config["vision_config"]["image_size"],
        "context_length": config["text_config"]["max_position_embeddings"],
        "vocab_size": config["text_config"]["vocab_size"],
    }
    for name, value in expected.items():
        if name in state and np.size(state[name]) == 1 and int(np.asarray(state[name]).reshape(())) != value:
            raise ValueError(
                f"{where}: buffer {name!r} says {int(np.asarray(state[name]).reshape(()))}, "
                f"the tensor shapes say {value}"
            )


def read_file(path: str | os.PathLike) -> dict:
    """{name: numpy array} of a checkpoint file in OpenAI's or open_clip's layout: a TorchScript archive,
    a torch.save state dict (read with weights_only=True; a training checkpoint's wrapper kept for
    open_clip.unwrap) or safetensors."""
    if str(path).endswith(".safetensors"):
        return io.read_safetensors(path)
    state = weight_files.torchscript_state(path) if weight_files.is_torchscript(path) else weight_files.torch_load(path)
    return weight_files.torch_arrays(state, path)


def canonical_checkpoint(state: dict, where: str = "checkpoint", **heads: Any) -> tuple[dict, dict, dict]:
    """(arrays, config, {canonical name: OpenAI name}) of an OpenAI-layout state dict; `heads`:
    text_heads / vision_heads when the shapes cannot tell them."""
    config = infer_config(state, where, **heads)
    check_buffers(state, config, where)
    arrays, names = to_canonical(state, where)
    return arrays, config, names


def write(arrays: dict, path: str | os.PathLike) -> None:
    """A CLIPModel's {canonical name: array} as an OpenAI-layout torch.save state dict."""
    weight_files.save_torch_arrays(from_canonical(arrays), path)
