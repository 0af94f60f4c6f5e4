"""Named model sizes for training from scratch (`clip train --config NAME`) and the config dict they give."""

from __future__ import annotations

import os
from typing import Any, TypedDict

from clip.common.io import read_json_object


class SizeSpec(TypedDict):
    """One named size: CLIPTextConfig and CLIPVisionConfig fields over their defaults, and the joint width."""

    text: dict[str, int]
    vision: dict[str, int]
    projection_dim: int


# Small sizes for training from scratch with the real CLIP vocabulary (49,408 tokens: the token
# embedding dominates the parameter count at these widths). "vit-b-32" is the paper's base model.
SIZES: dict[str, SizeSpec] = {
    "tiny": {
        "text": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        "vision": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        "projection_dim": 32,
    },
    "small": {
        "text": {
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 24,
        },
        "vision": {
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "image_size": 48,
            "patch_size": 8,
        },
        "projection_dim": 64,
    },
    # the embedded default model (clip/models/default): "small" with 16 text positions (the synthetic
    # captions need at most 13 tokens), which cuts the text tower's work by a third
    "shapes": {
        "text": {
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 16,
        },
        "vision": {
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "image_size": 48,
            "patch_size": 8,
        },
        "projection_dim": 64,
    },
    "base": {
        "text": {
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "max_position_embeddings": 32,
        },
        "vision": {
            "hidden_size": 192,
            "intermediate_size": 768,
            "num_hidden_layers": 6,
            "num_attention_heads": 6,
            "image_size": 96,
            "patch_size": 8,
        },
        "projection_dim": 128,
    },
    "vit-b-32": {"text": {}, "vision": {}, "projection_dim": 512},
}


def build_config_dict(size_or_path: str) -> dict[str, Any]:
    """A CLIPConfig dict from a name in SIZES or a JSON file (a full config.json or the same layout)."""
    if size_or_path in SIZES:
        spec = SIZES[size_or_path]
        return {
            "text_config": dict(spec["text"]),
            "vision_config": dict(spec["vision"]),
            "projection_dim": spec["projection_dim"],
        }
    if not os.path.isfile(size_or_path):
        raise ValueError(f"--config {size_or_path!r} is neither a size ({', '.join(SIZES)}) nor a JSON file")
    return read_json_object(size_or_path)
