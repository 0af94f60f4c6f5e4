"""clip.flax vs transformers' FlaxCLIPModel (4.57) on the ViT-B/32 configuration, same weights, same run.

Both jitted the same way (`jax.jit` over a function of (params, inputs)); rows: image and text
towers, batch 1 and 32, float32 and bfloat16 (computation and parameters); best-of timings,
interleaved, each call ending in block_until_ready. Throughput also as a fraction of the matmul
peak (jitted jnp.dot, 2048^2; see matmul_peak_gflops) measured in the same run.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pt import TEXT_LEN, _best_interleaved, tower_flops  # noqa: E402


def matmul_peak_gflops(jax, jnp, dtype, n=2048):
    """The faster of XLA's two ways to multiply in `dtype`: a `dtype` result, or (bfloat16) a float32
    one, which on CPU takes the native bfloat16 kernels (twice the speed)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    plain = jax.jit(jnp.dot)
    wide = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    return max(_peak(plain, a, n), _peak(wide, a, n))


def _peak(dot, a, n):
    (t,) = _best_interleaved([lambda: dot(a, a).block_until_ready()], repeats=5)
    return 2 * n**3 / t / 1e9


def rows(quick: bool = False) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import transformers

    from clip.common.config import CLIPConfig
    from clip.flax import FlaxCLIPModel

    transformers.logging.set_verbosity_error()
    config = CLIPConfig()  # ViT-B/32 defaults
    if quick:
        config = CLIPConfig(text_config={"num_hidden_layers": 2}, vision_config={"num_hidden_layers": 2})
    params32 = FlaxCLIPModel(config, seed=0).params
    ref_config = transformers.CLIPConfig(**config.to_dict())

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

    out = []
    rng = np.random.default_rng(0)
    for dtype_name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        peak = matmul_peak_gflops(jax, jnp, dtype)
        params = jax.tree.map(lambda x: x.astype(dtype), params32)
        ours = FlaxCLIPModel(config, dtype=dtype, param_dtype=dtype, _do_init=False)
        theirs = transformers.FlaxCLIPModel(ref_config, dtype=dtype, _do_init=False)
        calls = {  # [ours, theirs], jitted alike
            "image": [jax.jit(lambda p, x, m=m: m.get_image_features(x, params=p)) for m in (ours, theirs)],
            "text": [
                jax.jit(lambda p, ids, mask, m=m: m.get_text_features(ids, mask, params=p)) for m in (ours, theirs)
            ],
        }
        for batch in (1, 32):
            pixels = jnp.asarray(rng.standard_normal((batch, 3, vc.image_size, vc.image_size)), dtype)
            ids = rng.integers(0, tc.vocab_size - 2, (batch, TEXT_LEN)).astype(np.int32)
            ids[:, -1] = tc.eos_token_id
            ids, mask = jnp.asarray(ids), jnp.ones((batch, TEXT_LEN), jnp.int32)
            cases = [("image", (pixels,), image_flops), ("text", (ids, mask), text_flops)]
            for tower, args, flops in cases:
                f_ours, f_theirs = calls[tower]
                diff = float(
                    jnp.abs(
                        f_ours(params, *args).astype(jnp.float32) - f_theirs(params, *args).astype(jnp.float32)
                    ).max()
                )
                t_ours, t_theirs = _best_interleaved(
                    [
                        lambda: f_ours(params, *args).block_until_ready(),
                        lambda: f_theirs(params, *args).block_until_ready(),
                    ],
                    repeats=2 if quick else 5,
                )
                achieved = batch * flops / t_ours / 1e9
                theirs_frac = batch * flops / t_theirs / 1e9 / peak
                out.append(
                    {
                        "name": f"flax {tower} tower, batch {batch}, {dtype_name}" + (" (2-layer)" if quick else ""),
                        "ours_s": t_ours,
                        "baseline_s": t_theirs,
                        "ratio": t_theirs / t_ours,
                        "target": ">= 1.1x",
                        "ours_items_per_s": batch / t_ours,
                        "baseline_items_per_s": batch / t_theirs,
                        "ours_fraction_of_peak": achieved / peak,
                        "baseline_fraction_of_peak": theirs_frac,
                        "peak_gflops": peak,
                        "max_abs_diff": diff,
                        "note": f"{achieved / peak:.0%} of {peak:.0f} GFLOP/s peak (theirs {theirs_frac:.0%}); diff {diff:.1e}",
                    }
                )
    return out


if __name__ == "__main__":
    for row in rows(quick="--quick" in sys.argv):
        print(json.dumps(row))
