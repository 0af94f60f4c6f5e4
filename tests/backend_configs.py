"""Tiny configs (and numpy inputs for them) shared by the backend tests (each compares against a twin).

Importable from any test directory: tests/conftest.py puts tests/ on sys.path."""

import numpy as np

from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

CLASSES = (
    "CLIPModel",
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
    "CLIPVisionModel",
    "CLIPVisionModelWithProjection",
)
TEXT_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")
VISION_CLASSES = ("CLIPVisionModel", "CLIPVisionModelWithProjection")

# Small configs covering the axes that change the computation: activation, depth, heads,
# patch/image size, projection width != hidden width, pad == eos, the legacy pooling rule.
CONFIGS = {
    "quick_gelu": dict(
        text=dict(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            projection_dim=24,
            eos_token_id=98,
            pad_token_id=0,
            hidden_act="quick_gelu",
        ),
        vision=dict(
            hidden_size=48,
            intermediate_size=40,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=16,
            patch_size=4,
            projection_dim=24,
            hidden_act="quick_gelu",
        ),
        projection_dim=24,
    ),
    "gelu": dict(
        text=dict(
            vocab_size=80,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=12,
            projection_dim=40,
            eos_token_id=79,
            pad_token_id=79,
            hidden_act="gelu",
        ),
        vision=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=40,
            hidden_act="gelu",
        ),
        projection_dim=40,
        logit_scale_init_value=3.0,
    ),
    "legacy_eos": dict(
        text=dict(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=10,
            projection_dim=16,
            eos_token_id=2,
            hidden_act="gelu_new",
        ),
        vision=dict(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=8,
            image_size=24,
            patch_size=8,
            projection_dim=16,
            hidden_act="relu",
        ),
        projection_dim=16,
        id2label={0: "cat", 1: "dog", 2: "bird"},
    ),
}


def config_dicts(name):
    """(text, vision, top-level) keyword dicts of CONFIGS[name]."""
    spec = dict(CONFIGS[name])
    return spec.pop("text"), spec.pop("vision"), spec


def make_config(name, model_class, **top):
    """Our config for `model_class` built from CONFIGS[name]."""
    text, vision, spec = config_dicts(name)
    if model_class in TEXT_CLASSES:
        return CLIPTextConfig(**text)
    if model_class in VISION_CLASSES:
        return CLIPVisionConfig(**vision)
    return CLIPConfig(text_config=text, vision_config=vision, **{**spec, **top})


def make_inputs(name, batch=3, seed=1, image_size=None, padded=True):
    """numpy inputs: ids padded after the end token (lengths L, L-1, L-2, ...), mask, NCHW pixels."""
    spec = CONFIGS[name]
    text, vision = spec["text"], spec["vision"]
    rng = np.random.default_rng(seed)
    length = min(7, text["max_position_embeddings"])
    eos = text["eos_token_id"]
    end = eos if eos != 2 else text["vocab_size"] - 1  # legacy configs pool the highest id
    ids = rng.integers(3, end, (batch, length)).astype(np.int64)
    mask = np.ones((batch, length), np.int64)
    for i in range(batch):
        n = length - (i % 3) if padded else length
        ids[i, n - 1] = end
        ids[i, n:] = text.get("pad_token_id", 1)
        mask[i, n:] = 0
    size = image_size or vision["image_size"]
    sizes = size if isinstance(size, tuple) else (size, size)
    pixels = rng.standard_normal((batch, 3, *sizes)).astype(np.float32)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def inputs_for(model_class, inputs):
    """The inputs `model_class` takes."""
    if model_class in TEXT_CLASSES:
        return {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
    if model_class in VISION_CLASSES:
        return {"pixel_values": inputs["pixel_values"]}
    return dict(inputs)
