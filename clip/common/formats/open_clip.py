"""open_clip state dicts of the standard ViT CLIP models <-> canonical names, as data.

open_clip's `CLIP` class keeps OpenAI's attribute names (visual.conv1,
visual.transformer.resblocks.N.attn.in_proj_weight, token_embedding, positional_embedding, ln_final,
text_projection, logit_scale, ...), so the tensor map is clip.common.formats.openai's. What differs is around it:

- training checkpoints wrap the weights: {"epoch", "name", "state_dict", "optimizer", ...}, and
  DistributedDataParallel prefixes every key with "module.";
- `CustomTextCLIP` keeps the text tower under "text." (text.token_embedding.weight, text.transformer...,
  text.text_projection), the image tower under "visual." as before;
- the config is not recoverable from the shapes alone: the image tower's heads are width // head_width
  with head_width 80, 88 and 104 for ViT-H, ViT-g and ViT-bigG (not 64), and the activation is
  nn.GELU unless the model config says quick_gelu (the "-quickgelu" models, OpenAI's weights). Both
  come from open_clip_config.json (the hub repositories ship it beside the weights) when present,
  else from KNOWN_HEAD_WIDTHS and GELU.

Models with parts that have no canonical form (layer scale, NormFormer norms, attention pooling,
SigLIP's logit_bias, timm towers, CoCa) stop with an error that names the first such tensor.
"""

from __future__ import annotations

import os
from typing import Any

from clip.common import io, weight_files
from clip.common.formats import openai

WRAPPER_KEYS = weight_files.WRAPPER_KEYS  # checkpoint dict entries that may hold the weights
DDP_PREFIX = "module."
CUSTOM_TEXT_PREFIX = "text."
CONFIG_NAME = "open_clip_config.json"
FILE_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # the weights in a hub repository
ACTIVATION = "gelu"  # open_clip's default act_layer; "quick_gelu": true in the model config selects QuickGELU

# Image-tower widths of the released models whose heads are not 64 wide (open_clip's model configs:
# ViT-H-14: 1280 / 80, ViT-g-14: 1408 / 88, ViT-bigG-14: 1664 / 104; 16 heads each).
KNOWN_HEAD_WIDTHS = {1280: 80, 1408: 88, 1664: 104}

# Substrings of tensor names of open_clip features with no canonical form.
UNSUPPORTED = {
    ".ls_1.": "layer scale (ls_1/ls_2)",
    ".ls_2.": "layer scale (ls_1/ls_2)",
    ".ln_attn.": "NormFormer attention norm (scale_attn)",
    ".ln_inner.": "NormFormer MLP norm (scale_fc)",
    "attn_pool": "attention pooling",
    "logit_bias": "SigLIP's logit_bias (a sigmoid loss model, not CLIP)",
    "visual.trunk.": "a timm image tower",
    "visual.head.": "a timm image tower",
    "text.transformer.embeddings": "a Hugging Face text tower",
    "cls_emb": "a class-token text tower (CoCa)",
    "text_decoder": "CoCa's text decoder",
}


def unwrap(checkpoint: dict) -> dict:
    """The weights of an open_clip checkpoint: inside a {"state_dict": ...} wrapper, without "module."."""
    for key in WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), dict) and not hasattr(checkpoint[key], "shape"):
            checkpoint = checkpoint[key]
            break
    if checkpoint and all(name.startswith(DDP_PREFIX) for name in checkpoint):
        checkpoint = {name[len(DDP_PREFIX) :]: value for name, value in checkpoint.items()}
    return checkpoint


def to_openai_names(state: dict, where: str = "checkpoint") -> dict:
    """An (unwrapped) open_clip state dict -> OpenAI's names (CustomTextCLIP's "text." dropped)."""
    for name in state:
        for marker, what in UNSUPPORTED.items():
            if marker in name:
                raise ValueError(
                    f"{where}: tensor {name!r} belongs to {what}, which has no canonical (transformers CLIPModel) form"
                )
    return {
        name[len(CUSTOM_TEXT_PREFIX) :] if name.startswith(CUSTOM_TEXT_PREFIX) else name: value
        for name, value in state.items()
    }


def to_canonical(state: dict, where: str = "checkpoint") -> tuple[dict, dict]:
    """({canonical name: array}, {canonical name: open_clip name}) of an unwrapped open_clip state dict."""
    renamed = to_openai_names(state, where)
    back = {(name[len(CUSTOM_TEXT_PREFIX) :] if name.startswith(CUSTOM_TEXT_PREFIX) else name): name for name in state}
    arrays, sources = openai.to_canonical(renamed, where)
    return arrays, {canonical: back.get(name, name) for canonical, name in sources.items()}


def from_canonical(arrays: dict) -> dict:
    """{canonical name: array} -> an open_clip `CLIP` state dict (OpenAI's names)."""
    return openai.from_canonical(arrays)


def config_overrides(model_cfg: dict | None) -> dict:
    """Keyword arguments of openai.infer_config from an open_clip model config (model_cfg of open_clip_config.json)."""
    if not model_cfg:
        return {"hidden_act": ACTIVATION}
    model_cfg = model_cfg.get("model_cfg", model_cfg)
    vision, text = model_cfg.get("vision_cfg", {}) or {}, model_cfg.get("text_cfg", {}) or {}
    out: dict[str, str | int] = {"hidden_act": "quick_gelu" if model_cfg.get("quick_gelu") else ACTIVATION}
    if "head_width" in vision:
        out["vision_head_width"] = int(vision["head_width"])
    if "heads" in text:
        out["text_heads"] = int(text["heads"])
    return out


def infer_config(state: dict, where: str = "checkpoint", model_cfg: dict | None = None, **overrides: Any) -> dict:
    """A CLIPConfig dict for an unwrapped open_clip state dict; `model_cfg` from open_clip_config.json if any."""
    renamed = to_openai_names(state, where)
    kwargs = config_overrides(model_cfg)
    if "vision_head_width" not in kwargs and "visual.conv1.weight" in renamed:
        width = int(renamed["visual.conv1.weight"].shape[0])
        kwargs["vision_head_width"] = KNOWN_HEAD_WIDTHS.get(width, openai.HEAD_WIDTH)
    kwargs.update(overrides)
    return openai.infer_config(renamed, where, **kwargs)


def checkpoint_file(src: str) -> str:
    """`src`, or the open_clip weight file inside the directory `src` (ValueError when there is none)."""
    if not os.path.isdir(src):
        return src
    for name in FILE_NAMES:
        if os.path.isfile(os.path.join(src, name)):
            return os.path.join(src, name)
    raise ValueError(f"{src}: a directory; pass the checkpoint file itself")


def read_model_config(path: str | os.PathLike) -> dict | None:
    """open_clip_config.json beside the weight file `path`, or None."""
    config_path = os.path.join(os.path.dirname(os.path.abspath(path)), CONFIG_NAME)
    return io.read_json_object(config_path) if os.path.isfile(config_path) else None


def canonical_checkpoint(state: dict, where: str = "checkpoint", **heads: Any) -> tuple[dict, dict, dict, list]:
    """(arrays, config, {canonical name: open_clip name}, notes) of an unwrapped open_clip state dict
    read from `where`; the notes say what was assumed for lack of open_clip_config.json."""
    model_cfg = read_model_config(where)
    notes = (
        []
        if model_cfg is not None
        else [
            f"no {CONFIG_NAME} beside the file: assumed open_clip's defaults (GELU, head width 64 or "
            "the released ViT-H/g/bigG widths); set text_config.hidden_act=quick_gelu for -quickgelu models"
        ]
    )
    config = infer_config(state, where, model_cfg, **heads)
    arrays, names = to_canonical(state, where)
    return arrays, config, names, notes
