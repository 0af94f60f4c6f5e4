"""Helpers for the PyTorch backend tests: tiny configs and their transformers twins.

A uniquely named module (not conftest) so that it imports the same way from every test file."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers.logging.set_verbosity_error()
torch.set_num_threads(min(2, torch.get_num_threads()))

import clip.pt as ours  # noqa: E402
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig  # noqa: E402

from backend_configs import CONFIGS, TEXT_CLASSES, VISION_CLASSES, config_dicts  # noqa: E402,F401
from backend_configs import CLASSES as _TWO_TOWER_CLASSES  # noqa: E402

CLASSES = (*_TWO_TOWER_CLASSES, "CLIPForImageClassification")  # the one class only clip.pt has


def make_configs(name, model_class, **top):
    """(our config, transformers' config) for `model_class` built from CONFIGS[name]."""
    text, vision, extra = config_dicts(name)
    extra = {**extra, **top}
    if model_class in TEXT_CLASSES:
        return CLIPTextConfig(**text), transformers.CLIPTextConfig(**text)
    if model_class in VISION_CLASSES:
        return CLIPVisionConfig(**vision), transformers.CLIPVisionConfig(**vision)
    return (
        CLIPConfig(text_config=text, vision_config=vision, **extra),
        transformers.CLIPConfig(text_config=text, vision_config=vision, **extra),
    )


def make_pair(name, model_class, attn_implementation="sdpa", seed=0, **top):
    """(our model, transformers' model) with the same random weights, both in eval mode."""
    ours_config, ref_config = make_configs(name, model_class, **top)
    torch.manual_seed(seed)
    ref = getattr(transformers, model_class)._from_config(ref_config, attn_implementation=attn_implementation).eval()
    with torch.no_grad():  # make LayerNorm/bias/logit_scale values non-trivial
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model = getattr(ours, model_class)(ours_config).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    return model, ref


def make_inputs(name, batch=3, seed=1, image_size=None, padded=True):
    text, vision, _ = config_dicts(name)
    g = torch.Generator().manual_seed(seed)
    length = min(7, text["max_position_embeddings"])
    eos = text["eos_token_id"]
    # legacy configs pool the highest id: keep the end token the largest id in each sequence
    high = eos if eos != 2 else text["vocab_size"] - 1
    ids = torch.randint(3, high, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    lengths = [length - (i % 3) for i in range(batch)] if padded else [length] * batch
    for i, n in enumerate(lengths):
        ids[i, n - 1] = eos if eos != 2 else text["vocab_size"] - 1
        ids[i, n:] = text.get("pad_token_id", 1)
        mask[i, n:] = 0
    size = image_size or vision["image_size"]
    sizes = size if isinstance(size, tuple) else (size, size)
    pixels = torch.randn(batch, vision.get("num_channels", 3), *sizes, generator=g)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def inputs_for(model_class, inputs):
    if model_class in TEXT_CLASSES:
        return {k: inputs[k] for k in ("input_ids", "attention_mask")}
    if model_class in VISION_CLASSES or model_class == "CLIPForImageClassification":
        return {"pixel_values": inputs["pixel_values"]}
    return dict(inputs)


def flatten(value, prefix="out"):
    """Nested outputs/tuples -> {path: tensor}, comparing structure by path."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    if value is None:
        return {prefix: None}
    if hasattr(value, "keys") and not isinstance(value, (tuple, list)):
        items = [(k, value[k]) for k in value.keys()]
    else:
        items = list(enumerate(value))
    out = {}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}"))
    return out


def assert_close_outputs(ours_out, ref_out, atol=1e-5):
    a, b = flatten(ours_out), flatten(ref_out)
    assert list(a) == list(b), f"output structure differs:\nours {list(a)}\nref  {list(b)}"
    for path in a:
        x, y = a[path], b[path]
        assert x.shape == y.shape, f"{path}: {tuple(x.shape)} vs {tuple(y.shape)}"
        diff = (x.double() - y.double()).abs().max().item() if x.numel() else 0.0
        assert diff <= atol, f"{path}: max abs diff {diff:.3g} > {atol}"
    return len(a)
