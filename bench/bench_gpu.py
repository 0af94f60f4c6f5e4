"""Issue 16's GPU measurements in one run: ours vs transformers, the matmul peak, `clip embed`, GPU decoding.

    PYTHONPATH=. python bench/bench_gpu.py --out gpu.json            # on a CUDA machine, ~8 minutes
    PYTHONPATH=. python bench/bench_gpu.py --quick --out quick.json  # tiny shapes, runs on the CPU
    PYTHONPATH=. python bench/bench_gpu.py --only decode_diff --out diff.json

Sections (--only, comma-separated; all by default, in the order of SECTIONS):
  peak        bf16 matmul peak (8192^3) and on the ViT-L/14 MLP shape (256*257 x 1024 x 4096)
  parity      float32 (TF32 off) and bfloat16 features, ours vs transformers, same weights
  towers      ViT-B/32 and ViT-L/14, image and text (77 tokens) towers, bf16 batch 256: items/s,
              TFLOP/s and the fraction of the measured peak, ours and transformers side by side
  compile     ViT-L/14 image tower with torch.compile on both; batch-1 ViT-B/32 latency, eager
              and through load_encoder(compile=True) (CUDA graphs)
  flax        ViT-L/14 image batches through load_encoder(backend="flax") vs "pt", per Flax
              attention kernel (matmul, auto, cudnn)
  decode      GPU JPEG decode + resize + crop throughput (clip.tasks.gpu_decode), 500x375 JPEGs
  embed       `clip embed` end to end (a subprocess, all cores) over 500x375 JPEGs, ViT-B/32 fp16
              and ViT-L/14 bf16, with the model-only rate in the same run; and the in-process
              loop gpu_decode.decode_batch -> model that the embed pipeline could run
  decode_diff GPU crops vs the exact CPU path on the repository's photographs (max abs pixel
              diff, cosine of embeddings); --decode-diff is the same as --only decode_diff

Each section that cannot run (no CUDA device, a package missing) records a row whose note starts
with "unavailable:"; a section that fails records the error and the run goes on. The JSON file is
rewritten after every section, so a run cut short keeps what it measured. Nothing here imports
TensorFlow. Models are randomly initialized at the real shapes (no network needed).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX shares the GPU with PyTorch
os.environ.setdefault("USE_TF", "0")  # transformers: never import TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from bench_pt import TEXT_LEN, tower_flops
from gpu_models import TINY, VIT_B_32, VIT_L_14, make_pair, median_ms, unavailable

# cheap and central first: a run cut short (a 10-minute limit) loses the inductor builds, not the rest
SECTIONS = ("peak", "parity", "towers", "decode", "decode_diff", "embed", "flax", "compile")


def _row(name, **fields):
    return {"name": name, "ours_s": None, "baseline_s": None, "ratio": None, "target": "", **fields}


# --------------------------------------------------------------------- peak


def peak_rows(torch, ctx):
    quick, device = ctx["quick"], ctx["device"]
    dtype = torch.bfloat16
    out = []
    shapes = [("bf16 matmul peak", (256, 256, 256) if quick else (8192, 8192, 8192))]
    shapes.append(("bf16 matmul on the ViT-L/14 MLP shape", (64 * 17, 64, 256) if quick else (256 * 257, 1024, 4096)))
    for name, (m, k, n) in shapes:
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        ms = median_ms(torch, [lambda a=a, b=b: torch.mm(a, b)], device)[0]
        tflops = 2 * m * k * n / (ms / 1e3) / 1e12
        ctx.setdefault("peak_tflops", tflops)  # the first (square) product is the peak the rows compare to
        out.append(_row(f"{name} ({m}x{k}x{n})", ours_s=ms / 1e3, tflops=tflops, note=f"{tflops:.1f} TFLOP/s"))
    return out


# --------------------------------------------------------------------- parity


def parity_rows(torch, ctx):
    import transformers

    device = ctx["device"]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    config = TINY if ctx["quick"] else VIT_B_32
    ours, theirs = make_pair(torch, transformers, config, device)  # float32 first, bfloat16 below
    pixels, ids, mask = _inputs(torch, config, 8, torch.float32, device, padded=True)
    out = []
    for dtype_name, dtype, target in (
        ("float32", torch.float32, "<= 1e-5"),
        ("bfloat16", torch.bfloat16, "bf16 rounding"),
    ):
        ours.to(dtype)
        theirs.to(dtype)
        with torch.inference_mode():
            pairs = {
                "image features": (
                    ours.get_image_features(pixel_values=pixels.to(dtype)),
                    theirs.get_image_features(pixel_values=pixels.to(dtype)),
                ),
                "text features (padded)": (
                    ours.get_text_features(input_ids=ids, attention_mask=mask),
                    theirs.get_text_features(input_ids=ids, attention_mask=mask),
                ),
            }
        for what, (x, y) in pairs.items():
            x, y = (
                getattr(t, "pooler_output", t).float() for t in (x, y)
            )  # transformers 5 may return an output object
            diff = float((x - y).abs().max())
            cosine = float(torch.nn.functional.cosine_similarity(x, y).min())
            out.append(
                _row(
                    f"parity {dtype_name}, {what}",
                    target=target,
                    max_abs_diff=diff,
                    min_cosine=cosine,
                    note=f"max abs diff {diff:.1e}, min cosine {cosine:.6f}",
                )
            )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    ctx["pairs"][id(config)] = (ours, theirs)  # now in bfloat16: the towers and compile sections reuse them
    return out


def _bf16_pair(torch, transformers, ctx, config):
    """The (ours, transformers') bfloat16 pair of `config`, made once per run (a ViT-L/14 pair takes ~20 s)."""
    if id(config) not in ctx["pairs"]:
        ctx["pairs"][id(config)] = make_pair(torch, transformers, config, ctx["device"], torch.bfloat16)
    return ctx["pairs"][id(config)]


def _inputs(torch, config, batch, dtype, device, padded=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    vc, tc = config.vision_config, config.text_config
    length = min(TEXT_LEN, tc.max_position_embeddings)
    pixels = torch.randn(batch, 3, vc.image_size, vc.image_size, generator=g).to(device, dtype)
    ids = torch.randint(0, tc.vocab_size - 2, (batch, length), generator=g)
    lengths = torch.randint(5, length + 1, (batch,), generator=g) if padded else torch.full((batch,), length)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    ids[torch.arange(batch), lengths - 1] = tc.eos_token_id  # full length unless padded: the tower's whole work
    return pixels, ids.to(device), mask.to(device)


# --------------------------------------------------------------------- towers


def _flops(config, tower):
    vc, tc = config.vision_config, config.text_config
    if tower == "image":
        return tower_flops(vc.hidden_size, vc.intermediate_size, vc.num_hidden_layers, vc.num_patches + 1)
    return tower_flops(
        tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers, min(TEXT_LEN, tc.max_position_embeddings)
    )


def _tower_row(name, batch, flops, t_ours, t_theirs, peak, unit):
    tflops = batch * flops / (t_ours / 1e3) / 1e12
    return _row(
        name,
        ours_s=t_ours / 1e3,
        baseline_s=t_theirs / 1e3,
        ratio=t_theirs / t_ours,
        target=">= 1.0x",
        ours_per_s=batch / t_ours * 1e3,
        baseline_per_s=batch / t_theirs * 1e3,
        tflops=tflops,
        fraction_of_peak=tflops / peak if peak else None,
        note=f"{batch / t_ours * 1e3:,.0f} vs {batch / t_theirs * 1e3:,.0f} {unit}/s; {tflops:.1f} TFLOP/s"
        + (f" = {tflops / peak:.0%} of peak" if peak else ""),
    )


def _tower_pair_rows(torch, transformers, ctx, label, config, batch):
    device, peak = ctx["device"], ctx.get("peak_tflops")
    ours, theirs = _bf16_pair(torch, transformers, ctx, config)
    pixels, ids, _ = _inputs(torch, config, batch, torch.bfloat16, device)
    calls = {
        "image": (lambda m: m.get_image_features(pixel_values=pixels), "img"),
        "text": (lambda m: m.get_text_features(input_ids=ids), "txt"),
    }
    out = []
    for tower, (call, unit) in calls.items():
        with torch.inference_mode():
            t_ours, t_theirs = median_ms(torch, [lambda c=call: c(ours), lambda c=call: c(theirs)], device)
        out.append(
            _tower_row(
                f"{label} {tower} tower, bf16, batch {batch}",
                batch,
                _flops(config, tower),
                t_ours,
                t_theirs,
                peak,
                unit,
            )
        )
    return out


def tower_rows(torch, ctx):
    import transformers

    batch = 4 if ctx["quick"] else 256
    models = [("tiny", TINY)] if ctx["quick"] else [("ViT-B/32", VIT_B_32), ("ViT-L/14", VIT_L_14)]
    out = []
    for label, config in models:
        out += _tower_pair_rows(torch, transformers, ctx, label, config, batch)
    return out


# --------------------------------------------------------------------- compile, batch 1


def compile_rows(torch, ctx):
    import transformers

    from clip.tasks import load_encoder

    device, peak, quick = ctx["device"], ctx.get("peak_tflops"), ctx["quick"]
    out = []
    config, batch = (TINY, 4) if quick else (VIT_L_14, 256)
    ours, theirs = _bf16_pair(torch, transformers, ctx, config)
    pixels, _, _ = _inputs(torch, config, batch, torch.bfloat16, device)
    backend = "eager" if quick else "inductor"  # quick: dynamo's tracing alone, no C++/Triton compile
    fast_ours = torch.compile(lambda x: ours.get_image_features(pixel_values=x), backend=backend)
    fast_theirs = torch.compile(lambda x: theirs.get_image_features(pixel_values=x), backend=backend)
    with torch.inference_mode():
        t_ours, t_theirs = median_ms(torch, [lambda: fast_ours(pixels), lambda: fast_theirs(pixels)], device, warmup=3)
    label = "tiny" if quick else "ViT-L/14"
    out.append(
        _tower_row(
            f"{label} image tower, torch.compile ({backend}) on both, bf16, batch {batch}",
            batch,
            _flops(config, "image"),
            t_ours,
            t_theirs,
            peak,
            "img",
        )
    )
    fast_ours = fast_theirs = None  # the compiled graphs' memory
    ctx["pairs"].pop(id(config), None)  # the ViT-L/14 pair is no longer needed

    config = TINY if quick else VIT_B_32
    ours, theirs = _bf16_pair(torch, transformers, ctx, config)
    one, _, _ = _inputs(torch, config, 1, torch.bfloat16, device)
    with torch.inference_mode():
        t_ours, t_theirs = median_ms(
            torch,
            [lambda: ours.get_image_features(pixel_values=one), lambda: theirs.get_image_features(pixel_values=one)],
            device,
        )
    out.append(
        _row(
            f"{'tiny' if quick else 'ViT-B/32'} image, batch 1, bf16, eager",
            ours_s=t_ours / 1e3,
            baseline_s=t_theirs / 1e3,
            ratio=t_theirs / t_ours,
            target="<= 0.5x theirs with graphs",
            note=f"{t_ours:.2f} ms vs {t_theirs:.2f} ms",
        )
    )
    if device.type != "cuda":
        out.append(unavailable("batch 1 through load_encoder(compile=True) (CUDA graphs)", "needs a CUDA device"))
        return out
    model_dir = ctx["model_dir"](config)
    eager_encoder = load_encoder(model_dir, "pt", device="cuda", dtype="bfloat16")
    graphed_encoder = load_encoder(model_dir, "pt", device="cuda", dtype="bfloat16", compile=True)
    pixels_np = one.float().cpu().numpy()
    t_eager, t_graphed = median_ms(
        torch,
        [lambda: eager_encoder.encode_images(pixels_np), lambda: graphed_encoder.encode_images(pixels_np)],
        device,
        warmup=3,
    )
    out.append(
        _row(
            "ViT-B/32 image, batch 1, bf16, load_encoder eager vs compile=True (CUDA graphs)",
            ours_s=t_graphed / 1e3,
            baseline_s=t_eager / 1e3,
            ratio=t_eager / t_graphed,
            target=f"<= {t_theirs / 2:.2f} ms (half of transformers)",
            note=f"graphed {t_graphed:.2f} ms, eager {t_eager:.2f} ms, transformers (model call) {t_theirs:.2f} ms; with host copies",
        )
    )
    return out


# --------------------------------------------------------------------- flax vs pt


def flax_rows(torch, ctx):
    try:
        import flax  # noqa: F401
        import jax  # noqa: F401
    except ImportError as err:
        return [unavailable("flax vs pt through load_encoder", f"{err}")]
    import numpy as np

    from clip.tasks import load_encoder

    quick, device = ctx["quick"], ctx["device"]
    config, batch = (TINY, 4) if quick else (VIT_L_14, 256)
    model_dir = ctx["model_dir"](config)
    where = "cuda" if device.type == "cuda" else "cpu"
    pixels = (
        np.random.default_rng(0)
        .standard_normal((batch, 3, config.vision_config.image_size, config.vision_config.image_size))
        .astype(np.float32)
    )
    pt = load_encoder(model_dir, "pt", device=where, dtype="bfloat16")
    encoders = {"pt": pt}
    for kernel in ("matmul", "auto", "cudnn"):
        try:
            encoder = load_encoder(model_dir, "flax", device=where, dtype="bfloat16", flax_attention=kernel)
            encoder.encode_images(pixels)  # compile; cudnn refuses the CPU or unsupported shapes here
            encoders[f"flax ({kernel})"] = encoder
        except Exception as err:  # noqa: BLE001 - recorded in the JSON
            encoders[f"flax ({kernel})"] = f"{type(err).__name__}: {str(err)[:200]}"
    names = [n for n, e in encoders.items() if not isinstance(e, str)]
    times = dict(
        zip(
            names,
            median_ms(
                torch, [lambda e=encoders[n]: e.encode_images(pixels) for n in names], device, warmup=2, repeats=10
            ),
        )
    )
    label = "tiny" if quick else "ViT-L/14"
    out = []
    for name, encoder in encoders.items():
        if name == "pt":
            continue
        if isinstance(encoder, str):
            out.append(unavailable(f"{label} image through load_encoder, {name} vs pt", encoder))
            continue
        ratio = times["pt"] / times[name]
        out.append(
            _row(
                f"{label} image through load_encoder, {name} vs pt, bf16, batch {batch}",
                ours_s=times[name] / 1e3,
                baseline_s=times["pt"] / 1e3,
                ratio=ratio,
                target=">= 0.95x",
                note=f"{batch / times[name] * 1e3:,.0f} vs {batch / times['pt'] * 1e3:,.0f} img/s (numpy in and out)",
            )
        )
    return out


# --------------------------------------------------------------------- driver


def run(sections, quick, out_path=None):
    import gpu_models
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not quick:
        return [unavailable("gpu bench", "no CUDA device here; use --quick for a CPU smoke run")]
    gpu_models.QUICK["on"] = quick
    if quick and device.type == "cpu":
        torch.set_num_threads(1)  # tiny shapes gain nothing from threads, and a busy machine's OpenMP spin-waits
    dirs = gpu_models.ModelDirs()
    ctx = {"quick": quick, "device": device, "model_dir": dirs.get, "workdir": dirs.root, "pairs": {}}
    versions = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "cpus": os.cpu_count(),
    }
    for name in ("transformers", "jax", "flax", "torchvision"):
        try:
            versions[name] = __import__(name).__version__
        except Exception as err:  # noqa: BLE001 - an absent optional piece is a finding, not a failure
            versions[name] = f"unavailable: {type(err).__name__}"
    rows = [_row("environment", note=", ".join(f"{k} {v}" for k, v in versions.items()), **versions)]
    import gpu_pipeline

    runners = {
        "peak": peak_rows,
        "parity": parity_rows,
        "towers": tower_rows,
        "compile": compile_rows,
        "flax": flax_rows,
        "decode": gpu_pipeline.decode_rows,
        "embed": gpu_pipeline.embed_rows,
        "decode_diff": gpu_pipeline.decode_diff_rows,
    }
    try:
        for section in sections:
            start = time.perf_counter()
            try:
                new = runners[section](torch, ctx)
            except Exception as err:  # noqa: BLE001 - one section's failure must not lose the others
                traceback.print_exc()
                new = [
                    _row(
                        f"{section}: failed",
                        error=f"{type(err).__name__}: {err}",
                        note=f"failed: {type(err).__name__}: {str(err)[:300]}",
                    )
                ]
            for row in new:
                row["section"] = section
                print(f"  {section}: {row['name']}: {row.get('note', '')}", file=sys.stderr, flush=True)
            rows += new
            rows.append(_row(f"{section}: section time", ours_s=time.perf_counter() - start, section=section))
            if out_path:
                _write(out_path, rows, quick)
    finally:
        dirs.cleanup()
    return rows


def _write(path, rows, quick):
    from clip.common.io import atomic_write_json

    atomic_write_json(path, {"machine": platform.machine(), "cpus": os.cpu_count(), "quick": quick, "rows": rows})


def rows(quick: bool = False) -> list[dict]:
    """bench/run.py's entry point (--only gpu)."""
    return run(SECTIONS, quick)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file to write (rewritten after every section)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and inputs: a smoke run, on the CPU too")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--decode-diff", action="store_true", help="only the GPU-vs-CPU decoding difference")
    args = parser.parse_args(argv)
    sections = ["decode_diff"] if args.decode_diff else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    result = run(sections, args.quick, args.out)
    _write(args.out, result, args.quick)
    print(f"wrote {args.out} ({len(result)} rows)")


if __name__ == "__main__":
    main()
