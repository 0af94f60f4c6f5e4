"""Write tests/fixtures/transformers_flax/: a tiny transformers (4.57) FlaxCLIPModel checkpoint and its outputs.

    .venv/bin/python tools/make_flax_fixture.py [OUT_DIR]

Files: config.json + flax_model.msgpack (transformers' save_pretrained), and reference.npz with
fixed inputs (padded token ids, attention mask, NCHW pixels) and what transformers computes on
them: logits, embeddings, both towers' last/pooled states and hidden states. Random weights with
noise on every parameter, so LayerNorm scales and biases are not trivial.
"""

from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "tests", "fixtures", "transformers_flax")

TEXT = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=12,
    projection_dim=24,
    eos_token_id=63,
    pad_token_id=0,
    hidden_act="quick_gelu",
)
VISION = dict(
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=16,
    patch_size=8,
    projection_dim=24,
    hidden_act="gelu",
)


def inputs():
    rng = np.random.default_rng(0)
    ids = rng.integers(3, TEXT["eos_token_id"], (3, 8)).astype(np.int32)
    mask = np.ones_like(ids)
    for i, n in enumerate((8, 6, 5)):
        ids[i, n - 1] = TEXT["eos_token_id"]
        ids[i, n:] = TEXT["pad_token_id"]
        mask[i, n:] = 0
    pixels = rng.standard_normal((3, 3, VISION["image_size"], VISION["image_size"])).astype(np.float32)
    return ids, mask, pixels


def main(out_dir=DEFAULT_OUT):
    import jax
    import transformers

    config = transformers.CLIPConfig(
        text_config=TEXT, vision_config=VISION, projection_dim=24, logit_scale_init_value=2.0
    )
    model = transformers.FlaxCLIPModel(config, seed=0)
    leaves, tree = jax.tree_util.tree_flatten(model.params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    model.params = jax.tree_util.tree_unflatten(
        tree, [leaf + 0.05 * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    )
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    ids, mask, pixels = inputs()
    out = model(ids, pixels, attention_mask=mask, output_hidden_states=True)
    arrays = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixels,
        "logits_per_image": out.logits_per_image,
        "text_embeds": out.text_embeds,
        "image_embeds": out.image_embeds,
        "text_last_hidden_state": out.text_model_output.last_hidden_state,
        "text_pooler_output": out.text_model_output.pooler_output,
        "vision_last_hidden_state": out.vision_model_output.last_hidden_state,
        "vision_pooler_output": out.vision_model_output.pooler_output,
    }
    for i, h in enumerate(out.text_model_output.hidden_states):
        arrays[f"text_hidden_states_{i}"] = h
    for i, h in enumerate(out.vision_model_output.hidden_states):
        arrays[f"vision_hidden_states_{i}"] = h
    np.savez_compressed(os.path.join(out_dir, "reference.npz"), **{k: np.asarray(v) for k, v in arrays.items()})
    for name in sorted(os.listdir(out_dir)):
        print(f"{name}: {os.path.getsize(os.path.join(out_dir, name))} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:])
