"""Shared pieces of bench_gpu.py and gpu_pipeline.py: model shapes, random-weight model pairs and
checkpoint directories, the timer, "unavailable" rows."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

from clip.common.config import CLIPConfig

# The published shapes (weights are random: the bench needs no network)
VIT_B_32 = CLIPConfig()
VIT_L_14 = CLIPConfig(
    text_config={
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "projection_dim": 768,
    },
    vision_config={
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
    },
    projection_dim=768,
)
TINY = CLIPConfig(  # --quick: seconds on a CPU
    text_config={
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "projection_dim": 16,
    },
    vision_config={
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "image_size": 32,
        "patch_size": 8,
        "projection_dim": 16,
    },
    projection_dim=16,
)


def unavailable(name, reason):
    return {
        "name": name,
        "ours_s": None,
        "baseline_s": None,
        "ratio": None,
        "target": "",
        "note": f"unavailable: {reason}",
    }


def make_pair(torch, transformers, config, device, dtype=None):
    """(ours, transformers') CLIPModel with the same random weights, in eval mode on `device`."""
    from clip.pt import CLIPModel

    dtype = dtype or torch.float32
    torch.manual_seed(0)
    ours = CLIPModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm/bias values, as the CPU tests do
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    theirs = transformers.CLIPModel(transformers.CLIPConfig(**config.to_dict())).eval()
    theirs.load_state_dict(ours.state_dict(), strict=False)
    return ours.to(device, dtype), theirs.to(device, dtype)


QUICK = {"on": False}  # --quick: a smoke run, one warm-up and three timed calls


def median_ms(torch, fns, device, warmup=5, repeats=20):
    """Median time of each callable in ms, interleaved so clock drift hits all alike; CUDA events
    on a GPU, the wall clock on the CPU."""
    cuda = device.type == "cuda"
    if QUICK["on"]:
        warmup, repeats = min(warmup, 1), min(repeats, 3)
    for fn in fns:
        for _ in range(warmup):
            fn()
    if cuda:
        torch.cuda.synchronize()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times[i].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


class ModelDirs:
    """Checkpoint directories (random weights, processor files at the model's image size), made once per shape."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="clip-gpu-bench-")
        self._made = {}

    def get(self, config) -> str:
        key = config.to_json_string() if hasattr(config, "to_json_string") else repr(config.to_dict())
        if key not in self._made:
            import torch

            from clip.common.image_processor import CLIPImageProcessor
            from clip.common.processor import CLIPProcessor
            from clip.pt import CLIPModel

            path = os.path.join(self.root, f"model{len(self._made)}")
            torch.manual_seed(0)
            CLIPModel(config).save_pretrained(path)
            side = config.vision_config.image_size
            images = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
            CLIPProcessor(image_processor=images).save_pretrained(path)
            self._made[key] = path
        return self._made[key]

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)
