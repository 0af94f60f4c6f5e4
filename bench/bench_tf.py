"""clip.tf vs transformers' TFCLIPModel (tf-keras) on the ViT-B/32 configuration, same weights, same run.

Rows: image and text towers, batch 1 and 32, float32, eager and tf.function(jit_compile=True) (each
compared with transformers in the same mode); throughput also as a fraction of the matmul peak
measured in the same run. "eager" is a plain eager call, as a user makes it: ours runs it through
its cached graph (clip/tf/eager.py), transformers op by op.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pt import TEXT_LEN, _best_interleaved, tower_flops  # noqa: E402


def matmul_peak_gflops(tf, n=2048):
    """Best of TF's eager matmul (oneDNN) and XLA's, float32."""
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    jitted = tf.function(tf.matmul, jit_compile=True)
    times = _best_interleaved([lambda: tf.matmul(a, b).numpy(), lambda: jitted(a, b).numpy()], repeats=5)
    return 2 * n**3 / min(times) / 1e9


def copy_weights(ours, theirs):
    """Our canonical weights into transformers' TF model, through the h5 name map."""
    from clip.common import weights
    from clip.common.formats import transformers_tf
    from clip.tf import loading

    state = loading.canonical_state(ours)
    for variable in theirs.weights:
        name, kind, _ = transformers_tf.canonical_name(variable.name, len(variable.shape))
        variable.assign(weights.to_backend_layout(state[name], kind, "tf").reshape(variable.shape))


def rows(quick: bool = False) -> list[dict]:
    import tensorflow as tf
    import transformers

    from clip.common.config import CLIPConfig
    from clip.tf import TFCLIPModel

    transformers.logging.set_verbosity_error()
    config = CLIPConfig()  # ViT-B/32 defaults
    if quick:
        config = CLIPConfig(text_config={"num_hidden_layers": 2}, vision_config={"num_hidden_layers": 2})
    tf.random.set_seed(0)
    ours = TFCLIPModel(config)
    theirs = transformers.TFCLIPModel(transformers.CLIPConfig(**config.to_dict()))
    theirs(theirs.dummy_inputs)
    copy_weights(ours, theirs)

    vc, tc = config.vision_config, config.text_config
    patches = vc.num_patches
    image_flops = tower_flops(
        vc.hidden_size,
        vc.intermediate_size,
        vc.num_hidden_layers,
        patches + 1,
        extra=2 * patches * 3 * vc.patch_size**2 * vc.hidden_size,
    )
    text_flops = tower_flops(tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers, TEXT_LEN)
    peak = matmul_peak_gflops(tf)

    towers = {
        "image": (lambda m, x: m.get_image_features(pixel_values=x["pixel_values"]), image_flops),
        "text": (
            lambda m, x: m.get_text_features(input_ids=x["input_ids"], attention_mask=x["attention_mask"]),
            text_flops,
        ),
    }
    out = []
    rng = np.random.default_rng(0)
    for batch in (1, 32):
        ids = rng.integers(0, tc.vocab_size - 2, (batch, TEXT_LEN)).astype(np.int32)
        ids[:, -1] = tc.eos_token_id
        inputs = {
            "pixel_values": tf.constant(
                rng.standard_normal((batch, 3, vc.image_size, vc.image_size), dtype=np.float32)
            ),
            "input_ids": tf.constant(ids),
            "attention_mask": tf.ones_like(tf.constant(ids)),
        }
        for tower, (call, flops) in towers.items():
            eager = [lambda m=m: call(m, inputs).numpy() for m in (ours, theirs)]
            jitted = [tf.function(lambda x, m=m: call(m, x), jit_compile=True) for m in (ours, theirs)]
            xla = [lambda f=f: f(inputs).numpy() for f in jitted]
            diff = float(np.abs(eager[0]() - eager[1]()).max())
            times = _best_interleaved(eager + xla, repeats=2 if quick else 3)
            for mode, (t_ours, t_theirs) in (("eager", times[:2]), ("jit_compile", times[2:])):
                achieved = batch * flops / t_ours / 1e9
                theirs_frac = batch * flops / t_theirs / 1e9 / peak
                out.append(
                    {
                        "name": f"tf {tower} tower, batch {batch}, float32, {mode}" + (" (2-layer)" if quick else ""),
                        "ours_s": t_ours,
                        "baseline_s": t_theirs,
                        "ratio": t_theirs / t_ours,
                        "target": ">= 1.2x",
                        "ours_items_per_s": batch / t_ours,
                        "baseline_items_per_s": batch / t_theirs,
                        "ours_fraction_of_peak": achieved / peak,
                        "baseline_fraction_of_peak": theirs_frac,
                        "peak_gflops": peak,
                        "max_abs_diff": diff,
                        "note": f"{achieved / peak:.0%} of {peak:.0f} GFLOP/s peak (theirs {theirs_frac:.0%}); diff {diff:.1e}"
                        + (f"; theirs eager {times[1]:.4f}s" if mode == "jit_compile" else ""),
                    }
                )
    out.append(_padded_text_row(tf, ours, theirs, tc, rng, quick))
    return out


def _padded_text_row(tf, ours, theirs, tc, rng, quick):
    """Texts padded to 77 tokens (prompts of 8 to 16), eager calls: ours runs only up to the last
    end token, transformers all 77."""
    batch = 32
    lengths = rng.integers(8, 17, batch)
    ids = np.zeros((batch, TEXT_LEN), np.int32)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, : n - 1] = rng.integers(0, tc.vocab_size - 2, n - 1)
        ids[i, n - 1] = tc.eos_token_id
        mask[i, :n] = 1
    ids, mask = tf.constant(ids), tf.constant(mask)
    calls = [lambda m=m: m.get_text_features(input_ids=ids, attention_mask=mask).numpy() for m in (ours, theirs)]
    diff = float(np.abs(calls[0]() - calls[1]()).max())
    t_ours, t_theirs = _best_interleaved(calls, repeats=2 if quick else 3)
    return {
        "name": "tf text tower, batch 32, float32, eager, padded to 77",
        "ours_s": t_ours,
        "baseline_s": t_theirs,
        "ratio": t_theirs / t_ours,
        "target": "(no target)",
        "ours_items_per_s": batch / t_ours,
        "baseline_items_per_s": batch / t_theirs,
        "max_abs_diff": diff,
        "note": f"texts of 8-16 tokens padded to {TEXT_LEN}; diff {diff:.1e}",
    }


if __name__ == "__main__":
    for row in rows(quick="--quick" in sys.argv):
        print(json.dumps(row))
