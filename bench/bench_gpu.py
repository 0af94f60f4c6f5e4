"""clip.pt vs transformers' CLIPModel on a CUDA GPU: parity and throughput, same weights, same run.

Not in the default suites (CI and this project's machines have no GPU); run it where one is:

    PYTHONPATH=. python bench/run.py --only gpu

Parity: float32 with TF32 off, every feature and the forward's logits and loss, ours vs
transformers on the same GPU (max abs diff), plus from_pretrained(device="cuda", dtype=float16)
against transformers' loader. Throughput: ViT-B/32 and ViT-L/14, image and text towers, batch 1
and 256, float16 and bfloat16; median of CUDA-event timings after warm-up, interleaved.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pt import TEXT_LEN, tower_flops  # noqa: E402

VIT_L_14 = {
    "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768},
    "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768},
    "projection_dim": 768,
}


def _median_ms(torch, fns, warmup=5, repeats=20):
    """Median CUDA-event time of each callable, interleaved so clock drift hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times[i].append(start.elapsed_time(end))
    return [sorted(t)[len(t) // 2] for t in times]


def _pair(torch, transformers, config):
    from clip.pt import CLIPModel

    torch.manual_seed(0)
    ours = CLIPModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm/bias values, as the CPU tests do
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    theirs = transformers.CLIPModel(transformers.CLIPConfig(**config.to_dict())).eval()
    theirs.load_state_dict(ours.state_dict(), strict=False)
    return ours.cuda(), theirs.cuda()


def _inputs(torch, config, batch, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    vc, tc = config.vision_config, config.text_config
    pixels = torch.randn(batch, 3, vc.image_size, vc.image_size, generator=g).to("cuda", dtype)
    ids = torch.randint(0, tc.vocab_size - 2, (batch, TEXT_LEN), generator=g)
    lengths = torch.randint(5, TEXT_LEN + 1, (batch,), generator=g)
    mask = (torch.arange(TEXT_LEN)[None, :] < lengths[:, None]).long()
    ids[torch.arange(batch), lengths - 1] = tc.eos_token_id
    return pixels, ids.cuda(), mask.cuda()


def _parity_rows(torch, transformers, config):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ours, theirs = _pair(torch, transformers, config)
    pixels, ids, mask = _inputs(torch, config, 8, torch.float32, seed=1)
    with torch.no_grad():
        pairs = {
            "image features": (ours.get_image_features(pixel_values=pixels), theirs.get_image_features(pixel_values=pixels)),
            "text features (padded)": (ours.get_text_features(input_ids=ids, attention_mask=mask), theirs.get_text_features(input_ids=ids, attention_mask=mask)),
        }
        a = ours(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True)
        b = theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True)
        pairs["logits_per_image"] = (a.logits_per_image, b.logits_per_image)
        pairs["loss"] = (a.loss, b.loss)
    out = []
    for what, (x, y) in pairs.items():
        diff = float(_features(x, y, torch))
        out.append({"name": f"gpu parity float32, {what}", "ours_s": None, "baseline_s": None, "ratio": None, "target": "<= 1e-5", "max_abs_diff": diff, "note": f"max abs diff {diff:.1e}"})

    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        from clip.pt import CLIPModel

        loaded = CLIPModel.from_pretrained(tmp, device="cuda", dtype=torch.float16)
        ref = transformers.CLIPModel.from_pretrained(tmp, dtype=torch.float16).cuda().eval()
        with torch.no_grad():
            diff = float(_features(loaded.get_image_features(pixel_values=pixels.half()), ref.get_image_features(pixel_values=pixels.half()), torch))
        where = {str(p.device) for p in loaded.parameters()} | {str(p.dtype) for p in loaded.parameters()}
        out.append({"name": "gpu from_pretrained(device=cuda, dtype=float16), image features", "ours_s": None, "baseline_s": None, "ratio": None,
                    "target": "fp16 rounding", "max_abs_diff": diff, "note": f"max abs diff {diff:.1e}; parameters on {sorted(where)}"})
    torch.backends.cuda.matmul.allow_tf32 = True
    return out


def _features(x, y, torch):
    x = getattr(x, "pooler_output", x)  # transformers 5 may return an output object
    y = getattr(y, "pooler_output", y)
    return (x.float() - y.float()).abs().max()


def _speed_rows(torch, transformers, name, config, quick):
    ours, theirs = _pair(torch, transformers, config)
    vc, tc = config.vision_config, config.text_config
    image_flops = tower_flops(vc.hidden_size, vc.intermediate_size, vc.num_hidden_layers, vc.num_patches + 1)
    text_flops = tower_flops(tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers, TEXT_LEN)
    out = []
    for dtype_name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        ours.to(dtype)
        theirs.to(dtype)
        for batch in (1, 256) if not quick else (1, 16):
            pixels, _, _ = _inputs(torch, config, batch, dtype)
            ids = torch.randint(0, config.text_config.vocab_size - 2, (batch, TEXT_LEN), device="cuda")
            ids[:, -1] = config.text_config.eos_token_id  # full-length texts: the tower's whole work in both
            cases = [
                ("image", lambda m: m.get_image_features(pixel_values=pixels), image_flops),
                ("text", lambda m: m.get_text_features(input_ids=ids), text_flops),
            ]
            for tower, call, flops in cases:
                with torch.inference_mode():
                    t_ours, t_theirs = _median_ms(torch, [lambda: call(ours), lambda: call(theirs)])
                tflops = batch * flops / (t_ours / 1e3) / 1e12
                out.append({
                    "name": f"gpu {name} {tower} tower, batch {batch}, {dtype_name}",
                    "ours_s": t_ours / 1e3, "baseline_s": t_theirs / 1e3, "ratio": t_theirs / t_ours, "target": ">= 1.0x",
                    "ours_items_per_s": batch / t_ours * 1e3, "baseline_items_per_s": batch / t_theirs * 1e3,
                    "note": f"{tflops:.1f} TFLOP/s (theirs {batch * flops / (t_theirs / 1e3) / 1e12:.1f})",
                })
    return out


def rows(quick: bool = False) -> list[dict]:
    import torch
    import transformers

    from clip.common.config import CLIPConfig

    if not torch.cuda.is_available():
        return [{"name": "gpu (no CUDA device here: skipped)", "ours_s": None, "baseline_s": None, "ratio": None, "target": ""}]
    transformers.logging.set_verbosity_error()
    device = torch.cuda.get_device_name()
    out = [{"name": f"gpu device: {device}, torch {torch.__version__}, transformers {transformers.__version__}", "ours_s": None, "baseline_s": None, "ratio": None, "target": ""}]
    out += _parity_rows(torch, transformers, CLIPConfig())
    out += _speed_rows(torch, transformers, "ViT-B/32", CLIPConfig(), quick)
    torch.cuda.empty_cache()
    if not quick:
        out += _speed_rows(torch, transformers, "ViT-L/14", CLIPConfig(**VIT_L_14), quick)
    return out


if __name__ == "__main__":
    for row in rows(quick="--quick" in sys.argv):
        print(json.dumps(row))
