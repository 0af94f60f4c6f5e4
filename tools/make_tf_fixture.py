"""Write tests/fixtures/transformers_tf/: a tiny transformers TFCLIPModel checkpoint and its outputs.

    .venv/bin/python tools/make_tf_fixture.py

config.json + tf_model.h5 exactly as transformers 4.x `TFCLIPModel.save_pretrained` writes them (tf_keras
variable names), plus reference.npz: fixed inputs and the outputs transformers' TF model computes on
them. tests/tf/test_tf_loading.py checks that clip.tf loads the h5 file and reproduces those outputs.
Needs transformers < 5 with tf-keras installed.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "transformers_tf")

TEXT = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=40,
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
    intermediate_size=48,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=8,
    patch_size=4,
    projection_dim=24,
    hidden_act="gelu",
)


def inputs(np):
    rng = np.random.default_rng(0)
    ids = rng.integers(3, TEXT["eos_token_id"], (3, 8))
    mask = np.ones_like(ids)
    for i, n in enumerate((8, 6, 5)):  # a padded batch
        ids[i, n - 1] = TEXT["eos_token_id"]
        ids[i, n:] = TEXT["pad_token_id"]
        mask[i, n:] = 0
    pixels = rng.standard_normal((3, 3, VISION["image_size"], VISION["image_size"])).astype(np.float32)
    return ids.astype(np.int32), mask.astype(np.int32), pixels


def main():
    import numpy as np
    import tensorflow as tf
    import transformers

    tf.random.set_seed(0)
    config = transformers.CLIPConfig(
        text_config=TEXT, vision_config=VISION, projection_dim=24, logit_scale_init_value=2.0
    )
    model = transformers.TFCLIPModel(config)
    model(model.dummy_inputs)
    rng = np.random.default_rng(1)
    for variable in model.weights:  # non-trivial layer norms, biases and logit scale
        variable.assign(variable.numpy() + 0.05 * rng.standard_normal(variable.shape).astype(np.float32))
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT)

    ids, mask, pixels = inputs(np)
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True, output_hidden_states=True)
    reference = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixels,
        "loss": out.loss.numpy().reshape(()),
        "logits_per_image": out.logits_per_image.numpy(),
        "text_embeds": out.text_embeds.numpy(),
        "image_embeds": out.image_embeds.numpy(),
        "text_last_hidden_state": out.text_model_output.last_hidden_state.numpy(),
        "vision_pooler_output": out.vision_model_output.pooler_output.numpy(),
        "vision_hidden_state_1": out.vision_model_output.hidden_states[1].numpy(),
    }
    np.savez_compressed(os.path.join(OUT, "reference.npz"), **reference)
    sizes = {name: os.path.getsize(os.path.join(OUT, name)) for name in sorted(os.listdir(OUT))}
    print(f"wrote {os.path.abspath(OUT)}: {sizes}", file=sys.stderr)


if __name__ == "__main__":
    main()
