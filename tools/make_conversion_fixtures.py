"""Write tests/fixtures/conversion/: tiny checkpoints in OpenAI's and open_clip's layouts.

    .venv/bin/python tools/make_conversion_fixtures.py [OUT_DIR]

`OpenAIStyleCLIP` below is a small ViT CLIP written from the CLIP paper and the layout OpenAI's
checkpoints have (attribute names visual.conv1, visual.transformer.resblocks.N.attn (an
nn.MultiheadAttention: fused in_proj_weight), mlp.c_fc/c_proj, ln_1/ln_2, visual.proj,
token_embedding, positional_embedding, ln_final, text_projection, logit_scale; towers in LND
order; text pooled at the highest token id). It is the independent reference of the conversion
tests: its TorchScript archive runs as it was saved, and the converted model must agree with it.

Files (float16, as OpenAI released its weights, except the open_clip one):
  openai_vit.pt          torch.save of the module's state_dict()
  openai_vit_jit.pt      torch.jit.script of the same module, saved (with OpenAI's integer buffers
                         input_resolution, context_length, vocab_size)
  open_clip/open_clip_pytorch_model.bin   an open_clip training checkpoint of a GELU model:
                         {"epoch", "name", "state_dict": {"module." + name: tensor}}, float32
  open_clip/open_clip_config.json          its model config (head_width 16: 2 image heads)
  reference.npz          fixed inputs and the logits each module computes on them
"""

from __future__ import annotations

import json
import os
import sys
from collections import OrderedDict
from typing import Optional

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "tests", "fixtures", "conversion")

# OpenAI-style: heads = width // 64 in both towers; the MLP width is read off c_fc (4x in OpenAI's models,
# 1x here to keep the files small).
OPENAI = dict(
    embed_dim=24,
    image_resolution=16,
    vision_layers=1,
    vision_width=64,
    vision_patch_size=8,
    vision_mlp=64,
    context_length=8,
    vocab_size=48,
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=1,
    text_mlp=64,
    vision_heads=1,
    act="quick_gelu",
)
# open_clip-style: a GELU model with 2-head towers of width 32 (heads from open_clip_config.json).
OPEN_CLIP = dict(
    embed_dim=16,
    image_resolution=8,
    vision_layers=1,
    vision_width=32,
    vision_patch_size=4,
    vision_mlp=64,
    context_length=6,
    vocab_size=40,
    transformer_width=32,
    transformer_heads=2,
    transformer_layers=1,
    text_mlp=64,
    vision_heads=2,
    act="gelu",
)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads, mlp_width, act):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)  # in_proj_weight: q, k, v stacked on axis 0
        self.ln_1 = nn.LayerNorm(width)
        activation = QuickGELU() if act == "quick_gelu" else nn.GELU()
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, mlp_width)), ("gelu", activation), ("c_proj", nn.Linear(mlp_width, width))]
            )
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x, attn_mask: Optional[torch.Tensor] = None):  # LND
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mlp_width, act):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, mlp_width, act) for _ in range(layers)])

    def forward(self, x, attn_mask: Optional[torch.Tensor] = None):
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, resolution, patch, width, layers, heads, mlp_width, output_dim, act):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.positional_embedding = nn.Parameter(torch.randn((resolution // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_width, act)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, output_dim))

    def forward(self, x):
        x = self.conv1(x)  # NCHW -> N, width, grid, grid
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # N, grid**2, width
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x).permute(1, 0, 2)  # LND -> NLD
        return self.ln_post(x[:, 0, :]) @ self.proj


class OpenAIStyleCLIP(nn.Module):
    def __init__(
        self,
        embed_dim,
        image_resolution,
        vision_layers,
        vision_width,
        vision_patch_size,
        vision_mlp,
        context_length,
        vocab_size,
        transformer_width,
        transformer_heads,
        transformer_layers,
        text_mlp,
        vision_heads,
        act,
    ):
        super().__init__()
        self.visual = VisionTransformer(
            image_resolution, vision_patch_size, vision_width, vision_layers, vision_heads, vision_mlp, embed_dim, act
        )
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, text_mlp, act)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, transformer_width))
        self.ln_final = nn.LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.randn(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
        mask = torch.full((context_length, context_length), float("-inf")).triu(1)  # causal, additive
        self.register_buffer("attn_mask", mask, persistent=False)

    def encode_image(self, image):
        return self.visual(image)

    def encode_text(self, text):
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2), self.attn_mask).permute(1, 0, 2)  # NLD -> LND -> NLD
        x = self.ln_final(x)
        return (
            x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection
        )  # the end-of-text token (highest id)

    def forward(self, image, text):
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(p=2, dim=1, keepdim=True)
        text_features = text_features / text_features.norm(p=2, dim=1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def build(spec: dict, seed: int, jit_buffers: bool = False) -> OpenAIStyleCLIP:
    torch.manual_seed(seed)
    model = OpenAIStyleCLIP(**spec)
    with torch.no_grad():  # non-trivial values everywhere (layer norms, biases), small enough to stay tame
        for name, p in model.named_parameters():
            if name != "logit_scale":
                is_norm_scale = name.endswith(".weight") and name.split(".")[-2].startswith("ln_")
                p.copy_(torch.randn_like(p) * (0.2 if p.ndim > 1 else 0.1) + (1.0 if is_norm_scale else 0.0))
    if jit_buffers:  # OpenAI's TorchScript archives carry these as integer buffers
        model.register_buffer("input_resolution", torch.tensor(spec["image_resolution"]))
        model.register_buffer("context_length", torch.tensor(spec["context_length"]))
        model.register_buffer("vocab_size", torch.tensor(spec["vocab_size"]))
    return model.eval()


def inputs(spec: dict, batch: int = 3, seed: int = 0):
    """Token ids (end-of-text = the vocabulary's last id, zero padding after it) and NCHW pixels."""
    rng = np.random.default_rng(seed)
    length, vocab = spec["context_length"], spec["vocab_size"]
    ids = np.zeros((batch, length), np.int64)
    for i in range(batch):
        n = length - i % length  # a padded batch: lengths length, length - 1, ...
        ids[i, : n - 1] = rng.integers(1, vocab - 2, n - 1)
        ids[i, n - 1] = vocab - 1
    pixels = rng.standard_normal((batch, 3, spec["image_resolution"], spec["image_resolution"])).astype(np.float32)
    return ids, pixels


def open_clip_config(spec: dict) -> dict:
    return {
        "model_cfg": {
            "embed_dim": spec["embed_dim"],
            "quick_gelu": spec["act"] == "quick_gelu",
            "vision_cfg": {
                "image_size": spec["image_resolution"],
                "layers": spec["vision_layers"],
                "width": spec["vision_width"],
                "patch_size": spec["vision_patch_size"],
                "head_width": spec["vision_width"] // spec["vision_heads"],
                "mlp_ratio": spec["vision_mlp"] / spec["vision_width"],
            },
            "text_cfg": {
                "context_length": spec["context_length"],
                "vocab_size": spec["vocab_size"],
                "width": spec["transformer_width"],
                "heads": spec["transformer_heads"],
                "layers": spec["transformer_layers"],
            },
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }


def main(out_dir=DEFAULT_OUT):
    os.makedirs(os.path.join(out_dir, "open_clip"), exist_ok=True)
    reference = {}

    model = build(OPENAI, seed=0, jit_buffers=True).half()
    state = {
        k: v for k, v in model.state_dict().items() if k not in ("input_resolution", "context_length", "vocab_size")
    }
    torch.save(state, os.path.join(out_dir, "openai_vit.pt"))
    torch.jit.script(model).save(os.path.join(out_dir, "openai_vit_jit.pt"))
    ids, pixels = inputs(OPENAI)
    with torch.no_grad():
        logits = model.float()(torch.from_numpy(pixels), torch.from_numpy(ids))[0]
    reference.update(openai_input_ids=ids, openai_pixel_values=pixels, openai_logits_per_image=logits.numpy())

    model = build(OPEN_CLIP, seed=1)
    checkpoint = {
        "epoch": 3,
        "name": "tiny-gelu",
        "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
    }
    torch.save(checkpoint, os.path.join(out_dir, "open_clip", "open_clip_pytorch_model.bin"))
    with open(os.path.join(out_dir, "open_clip", "open_clip_config.json"), "w") as f:
        json.dump(open_clip_config(OPEN_CLIP), f, indent=2)
        f.write("\n")
    ids, pixels = inputs(OPEN_CLIP)
    with torch.no_grad():
        logits = model(torch.from_numpy(pixels), torch.from_numpy(ids))[0]
    reference.update(open_clip_input_ids=ids, open_clip_pixel_values=pixels, open_clip_logits_per_image=logits.numpy())
    np.savez_compressed(os.path.join(out_dir, "reference.npz"), **reference)

    total = 0
    for root, _, files in os.walk(out_dir):
        for name in sorted(files):
            size = os.path.getsize(os.path.join(root, name))
            total += size
            print(f"{os.path.relpath(os.path.join(root, name), out_dir)}: {size} bytes", file=sys.stderr)
    print(f"total {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
