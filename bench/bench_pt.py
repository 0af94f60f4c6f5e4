"""clip.pt vs transformers' CLIPModel (PyTorch) on the ViT-B/32 configuration, same weights, same run.

Rows: image and text towers, batch 1 and 32, float32 and bfloat16; throughput also as a fraction
of the matmul peak measured in the same run. Plus peak RSS of from_pretrained on a ViT-B/32-size
checkpoint, ours and transformers', relative to the checkpoint's file size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

TEXT_LEN = 77  # the length OpenAI's tokenizer pads to; the worst case for the text tower


def _best_interleaved(fns, repeats, min_time=1.0):
    """Best-of timings of several callables, interleaved so machine drift hits all of them alike."""
    for fn in fns:  # warm-up
        fn()
        fn()
    best = [float("inf")] * len(fns)
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or (time.perf_counter() - start < min_time and rounds < 50):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
        rounds += 1
    return best


def matmul_peak_gflops(torch, dtype, n=2048):
    """The faster of PyTorch's mm and oneDNN's linear (weight reordered once, as clip.pt.kernels
    does): oneDNN beats MKL's float32 mm on this kind of CPU, so mm alone understates the peak."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    fns = [lambda: torch.mm(a, b)]
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(b, n) if dtype == torch.bfloat16 else b
        fns.append(lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], ""))
    except (AttributeError, RuntimeError):
        pass
    with torch.inference_mode():
        times = _best_interleaved(fns, repeats=5)
    return 2 * n**3 / min(times) / 1e9


def tower_flops(hidden, intermediate, layers, tokens, extra=0):
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * intermediate) + 4 * tokens * tokens * hidden
    return layers * per_layer + extra


def rows(quick: bool = False) -> list[dict]:
    import torch
    import transformers

    from clip.common.config import CLIPConfig
    from clip.pt import CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig()  # ViT-B/32 defaults
    if quick:
        config = CLIPConfig(text_config={"num_hidden_layers": 2}, vision_config={"num_hidden_layers": 2})
    ours = CLIPModel(config).eval()
    theirs = transformers.CLIPModel(transformers.CLIPConfig(**config.to_dict())).eval()
    theirs.load_state_dict(ours.state_dict(), strict=False)

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
    for dtype_name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        peak = matmul_peak_gflops(torch, dtype)
        ours.to(dtype)
        theirs.to(dtype)
        for batch in (1, 32):
            pixels = torch.from_numpy(
                rng.standard_normal((batch, 3, vc.image_size, vc.image_size), dtype=np.float32)
            ).to(dtype)
            ids = torch.from_numpy(rng.integers(0, tc.vocab_size - 2, (batch, TEXT_LEN)))
            ids[:, -1] = tc.eos_token_id
            mask = torch.ones_like(ids)
            cases = [
                ("image", lambda m: m.get_image_features(pixel_values=pixels), image_flops),
                ("text", lambda m: m.get_text_features(input_ids=ids, attention_mask=mask), text_flops),
            ]
            for tower, call, flops in cases:
                with torch.inference_mode():
                    diff = (call(ours).float() - call(theirs).float()).abs().max().item()
                    t_ours, t_theirs = _best_interleaved(
                        [lambda: call(ours), lambda: call(theirs)], repeats=2 if quick else 4
                    )
                achieved = batch * flops / t_ours / 1e9
                out.append(
                    {
                        "name": f"pt {tower} tower, batch {batch}, {dtype_name}",
                        "ours_s": t_ours,
                        "baseline_s": t_theirs,
                        "ratio": t_theirs / t_ours,
                        "target": ">= 1.1x",
                        "ours_items_per_s": batch / t_ours,
                        "baseline_items_per_s": batch / t_theirs,
                        "ours_fraction_of_peak": achieved / peak,
                        "baseline_fraction_of_peak": batch * flops / t_theirs / 1e9 / peak,
                        "peak_gflops": peak,
                        "max_abs_diff": diff,
                        "note": f"{achieved / peak:.0%} of {peak:.0f} GFLOP/s peak (theirs {batch * flops / t_theirs / 1e9 / peak:.0%}); diff {diff:.1e}",
                    }
                )
    out.append(_padded_text_row(torch, ours.float(), theirs.float(), tc, rng, quick))
    out.extend(_rss_rows(ours.float(), quick))
    return out


def _padded_text_row(torch, ours, theirs, tc, rng, quick):
    """Texts padded to 77 tokens as OpenAI's tokenizer and padding="max_length" give them (prompts
    of 8 to 16 tokens): ours runs only up to the last end token, transformers all 77."""
    batch = 32
    lengths = rng.integers(8, 17, batch)
    ids = torch.zeros(batch, TEXT_LEN, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, : n - 1] = torch.from_numpy(rng.integers(0, tc.vocab_size - 2, n - 1))
        ids[i, n - 1] = tc.eos_token_id
        mask[i, :n] = 1
    with torch.inference_mode():
        call = lambda m: m.get_text_features(input_ids=ids, attention_mask=mask)  # noqa: E731
        diff = (call(ours) - call(theirs)).abs().max().item()
        t_ours, t_theirs = _best_interleaved([lambda: call(ours), lambda: call(theirs)], repeats=2 if quick else 4)
    return {
        "name": "pt text tower, batch 32, float32, padded to 77",
        "ours_s": t_ours,
        "baseline_s": t_theirs,
        "ratio": t_theirs / t_ours,
        "target": "(no target)",
        "ours_items_per_s": batch / t_ours,
        "baseline_items_per_s": batch / t_theirs,
        "max_abs_diff": diff,
        "note": f"texts of 8-16 tokens padded to {TEXT_LEN}; diff {diff:.1e}",
    }


# Peak RSS growth while from_pretrained runs, sampled every millisecond (ru_maxrss would include
# whatever the imports peaked at). transformers is kept from importing TensorFlow/JAX, which
# would otherwise dominate its process.
_RSS_SCRIPT = r"""
import json, sys, threading, time, psutil
which, path = sys.argv[1], sys.argv[2]
import torch
if which == "ours":
    from clip.pt import CLIPModel
else:
    from transformers import CLIPModel
proc = psutil.Process()
before = proc.memory_info().rss
peak, done = [before], []
def sample():
    while not done:
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.001)
thread = threading.Thread(target=sample)
thread.start()
model = CLIPModel.from_pretrained(path)
done.append(1)
thread.join()
print(json.dumps({"before": before, "peak": max(peak[0], proc.memory_info().rss)}))
"""


def _rss_rows(model, quick):
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        size = os.path.getsize(os.path.join(tmp, "model.safetensors"))
        result = {}
        for which in ("ours", "transformers"):
            env = dict(os.environ, USE_TF="0", USE_FLAX="0", USE_JAX="0", TF_CPP_MIN_LOG_LEVEL="3")
            proc = subprocess.run(
                [sys.executable, "-c", _RSS_SCRIPT, which, tmp], capture_output=True, text=True, check=True, env=env
            )
            data = json.loads(proc.stdout.strip().splitlines()[-1])
            result[which] = (data["peak"] - data["before"]) / size
    return [
        {
            "name": "pt from_pretrained peak RSS / file size" + (" (2-layer)" if quick else ""),
            "ours_s": result["ours"],
            "baseline_s": result["transformers"],
            "ratio": None,
            "target": "ours <= 1.3",
            "note": f"checkpoint {size / 2**20:.0f} MiB; columns hold RSS growth / file size, not seconds "
            "(transformers leaves parameters on the file mapping, paged in at first use)",
        }
    ]


if __name__ == "__main__":
    for row in rows(quick="--quick" in sys.argv):
        print(json.dumps(row))
