"""bench_gpu.py's pipeline sections: GPU decoding throughput, `clip embed` end to end against the
model-only rate, and the GPU decoder's difference from the exact CPU path on real photographs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gpu_models import TINY, VIT_B_32, VIT_L_14, median_ms, unavailable
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = os.path.join(ROOT, "tests", "data", "images")


def _row(name, **fields):
    return {"name": name, "ours_s": None, "baseline_s": None, "ratio": None, "target": "", **fields}


def _photos():
    return [os.path.join(PHOTOS, n) for n in sorted(os.listdir(PHOTOS)) if n.endswith((".png", ".jpg"))]


def _jpeg_bytes(image, quality=90):
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def make_jpegs(folder, count, size=(500, 375), seed=0):
    """`count` 500x375 JPEGs cut from the repository's photographs (random 4:3 crops, flips)."""
    os.makedirs(folder, exist_ok=True)
    sources = []
    for path in _photos():
        with Image.open(path) as image:
            sources.append(image.convert("RGB"))

    def one(i):
        rng = np.random.default_rng(seed + i)
        image = sources[i % len(sources)]
        w = int(image.width * rng.uniform(0.6, 1.0))
        h = min(image.height, w * 3 // 4)
        w = h * 4 // 3
        left, top = int(rng.integers(0, image.width - w + 1)), int(rng.integers(0, image.height - h + 1))
        crop = image.crop((left, top, left + w, top + h)).resize(size, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = os.path.join(folder, f"{i:05d}.jpg")
        crop.save(path, "JPEG", quality=90)
        return path

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(one, range(count)))


def _jpeg_set(ctx, count):
    key = f"jpegs{count}"
    if key not in ctx:
        ctx[key] = make_jpegs(os.path.join(ctx["workdir"], key), count)
    return ctx[key]


def _to_model_input(torch, crops, dtype):
    """uint8 NHWC crops on the device -> the processor's NCHW values (OpenAI's mean and std) in `dtype`, on the device."""
    from clip.common.image_processor import CLIPImageProcessor
    from clip.tasks import gpu_decode

    return gpu_decode.pixels_from_crops(crops, CLIPImageProcessor()).to(dtype)


# --------------------------------------------------------------------- decode


def decode_rows(torch, ctx):
    from clip.tasks import gpu_decode

    quick, device = ctx["quick"], ctx["device"]
    paths = _jpeg_set(ctx, 24 if quick else 3000)
    datas = []
    for path in paths:
        with open(path, "rb") as f:
            datas.append(f.read())
    decoders = _each_decoder(device) or (
        [gpu_decode.PillowTorchDecoder(device)] if quick else []
    )  # quick: the loop's code runs
    out = []
    cpu_n = datas[: 24 if quick else 300]
    start = time.perf_counter()
    gpu_decode.decode_batch(cpu_n, 224, decoder=None)
    cpu_rate = len(cpu_n) / (time.perf_counter() - start)
    out.append(
        _row(
            "decode + resize + crop, CPU path (PIL, one thread), 500x375 JPEGs",
            ours_per_s=cpu_rate,
            note=f"{cpu_rate:,.0f} img/s",
        )
    )
    if not decoders:
        out.append(
            unavailable("decode + resize + crop on the GPU", "no GPU decoder (torchvision with CUDA, or nvImageCodec)")
        )
    batch = 256
    for decoder in decoders:
        gpu_decode.decode_batch(datas[:batch], 224, decoder=decoder)  # warm-up: nvJPEG handles, kernels
        _sync(torch, device)
        start = time.perf_counter()
        for i in range(0, len(datas), batch):
            gpu_decode.decode_batch(datas[i : i + batch], 224, decoder=decoder)
        _sync(torch, device)
        rate = len(datas) / (time.perf_counter() - start)
        out.append(
            _row(
                f"decode + resize + crop, {decoder.name} on {device.type}, 500x375 JPEGs, batch {batch}",
                ours_per_s=rate,
                ratio=rate / cpu_rate,
                note=f"{rate:,.0f} img/s ({rate / cpu_rate:.0f}x one CPU thread); bytes in memory",
            )
        )
    return out


def _sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _each_decoder(device):
    """Every GPU decoder of gpu_decode.DECODER_ORDER that works here (each is measured)."""
    from clip.tasks import gpu_decode

    found = [gpu_decode.select_decoder(str(device), order=(name,)) for name in gpu_decode.DECODER_ORDER]
    return [d for d in found if d is not None]


# --------------------------------------------------------------------- clip embed


def _clip_embed_seconds(folder, out, model_dir, device, dtype, workers, quick):
    env = dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1", USE_TF="0", TOKENIZERS_PARALLELISM="false")
    if quick:
        env["OMP_NUM_THREADS"] = "1"  # as the parent: a smoke run on a possibly busy CPU
    command = [
        sys.executable,
        "-m",
        "clip",
        "embed",
        folder,
        "--out",
        out,
        "--model",
        model_dir,
        "--device",
        device,
        "--dtype",
        dtype,
        "--batch-size",
        "256",
        "--workers",
        str(workers),
        "--json",
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"clip embed exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds


def embed_rows(torch, ctx):
    from clip.tasks import load_encoder

    quick, device = ctx["quick"], ctx["device"]
    where = "cuda" if device.type == "cuda" else "cpu"
    workers = os.cpu_count() or 1
    big, small = (24, None) if quick else (3000, 500)  # quick: one run, no marginal rate
    paths = _jpeg_set(ctx, big)
    folders = {big: os.path.dirname(paths[0])}
    if small:
        folders[small] = os.path.join(ctx["workdir"], f"jpegs_first{small}")
        os.makedirs(folders[small], exist_ok=True)
        for path in paths[:small]:
            target = os.path.join(folders[small], os.path.basename(path))
            if not os.path.exists(target):
                os.link(path, target)
    cases = (
        [("tiny", TINY, "float32")]
        if quick
        else [("ViT-B/32", VIT_B_32, "float16"), ("ViT-L/14", VIT_L_14, "bfloat16")]
    )
    out = []
    for label, config, dtype in cases:
        model_dir = ctx["model_dir"](config)
        encoder = load_encoder(model_dir, "pt", device=where, dtype=dtype)
        side = config.vision_config.image_size
        pixels = np.random.default_rng(0).standard_normal((256, 3, side, side)).astype(np.float32)
        model_ms = median_ms(torch, [lambda e=encoder, x=pixels: e.encode_images(x)], device, warmup=2, repeats=5)[0]
        model_rate = 256 / model_ms * 1e3
        encoder = None  # free the device before `clip embed` loads its own copy
        runs = {
            n: _clip_embed_seconds(
                folder,
                os.path.join(ctx["workdir"], f"emb-{label.replace('/', '')}-{n}"),
                model_dir,
                where,
                dtype,
                workers,
                quick,
            )
            for n, folder in sorted(folders.items())
        }
        # the marginal rate of the larger run over the smaller: start-up (imports, loading) cancels out
        marginal = (big - small) / (runs[big] - runs[small]) if small and runs[big] > runs[small] else big / runs[big]
        what = "marginal" if small else "with start-up"
        target = ">= 8,000 img/s" if label == "ViT-B/32" else ">= 90% of model-only"
        out.append(
            _row(
                f"clip embed {label} {dtype}, {big} JPEGs 500x375, {workers} workers",
                ours_s=runs[big],
                ours_per_s=marginal,
                model_only_per_s=model_rate,
                fraction_of_model=marginal / model_rate,
                target=target,
                note=f"{marginal:,.0f} img/s {what}"
                + (f" ({big / runs[big]:,.0f} with start-up)" if small else "")
                + f"; model alone {model_rate:,.0f} img/s "
                f"(load_encoder, numpy in/out) = {marginal / model_rate:.0%}",
            )
        )
    out += _gpu_decode_loop_rows(torch, ctx, paths)
    return out


def _gpu_decode_loop_rows(torch, ctx, paths):
    """The pipeline the embed stage could run with GPU decoding: decode_batch -> normalize on the device -> model."""
    from clip.pt import CLIPModel
    from clip.tasks import gpu_decode

    quick, device = ctx["quick"], ctx["device"]
    config, dtype = (TINY, torch.float32) if quick else (VIT_B_32, torch.float16)
    decoder = gpu_decode.select_decoder(str(device)) or (gpu_decode.PillowTorchDecoder(device) if quick else None)
    if decoder is None:
        return [unavailable("GPU decode -> model loop", "no GPU decoder")]
    model = CLIPModel.from_pretrained(ctx["model_dir"](config), device=device, dtype=dtype).eval()
    side = config.vision_config.image_size

    def run(batch_paths):
        crops, _ = gpu_decode.decode_batch(batch_paths, side, decoder=decoder)
        with torch.inference_mode():
            return model.get_image_features(pixel_values=_to_model_input(torch, crops, dtype)).float().cpu()

    batch = 256
    run(paths[:batch])
    start = time.perf_counter()
    for i in range(0, len(paths), batch):
        run(paths[i : i + batch])
    rate = len(paths) / (time.perf_counter() - start)
    name = decoder.name
    label = "tiny" if quick else "ViT-B/32 fp16"
    return [
        _row(
            f"decode_batch ({name}) -> model, {label}, {len(paths)} JPEGs from disk, one thread",
            ours_per_s=rate,
            target=">= 8,000 img/s" if not quick else "",
            note=f"{rate:,.0f} img/s (what hooking gpu_decode into embed could give)",
        )
    ]


# --------------------------------------------------------------------- GPU vs CPU difference


def decode_diff_rows(torch, ctx):
    from clip.pt import CLIPModel
    from clip.tasks import gpu_decode

    quick, device = ctx["quick"], ctx["device"]
    decoders = _each_decoder(device)
    if not decoders and not quick:
        return [unavailable("GPU vs CPU decoding difference", "no GPU decoder")]
    decoders.append(gpu_decode.PillowTorchDecoder(device))  # the resize's share of the difference
    names, datas = [], []
    for path in _photos():  # each photograph as a JPEG (quality 95), the JPEG as it is
        name = os.path.basename(path)
        if name.endswith(".jpg"):
            with open(path, "rb") as f:
                datas.append(f.read())
        else:
            with Image.open(path) as image:
                datas.append(_jpeg_bytes(image, 95))
        names.append(name)
    from clip.models import default_model_path

    out = []
    random = ("tiny", TINY) if quick else ("ViT-B/32", VIT_B_32)
    models = [
        (f"{random[0]} random weights", ctx["model_dir"](random[1])),
        ("embedded default model", default_model_path()),
    ]
    for label, model_dir in models:
        model = CLIPModel.from_pretrained(model_dir, device=device).eval()
        side = model.config.vision_config.image_size
        cpu, _ = gpu_decode.decode_batch(datas, side, decoder=None)
        for decoder in decoders:
            out += _diff_rows(torch, model, device, label, side, names, datas, cpu, decoder)
    return out


def _diff_rows(torch, model, device, label, side, names, datas, cpu, decoder):
    """Per-photo and overall rows: `decoder`'s crops against the exact CPU path's."""
    from clip.tasks import gpu_decode

    gpu, _ = gpu_decode.decode_batch(datas, side, decoder=decoder)
    gpu = gpu.cpu().numpy()
    diff = np.abs(gpu.astype(np.int16) - cpu.astype(np.int16))
    with torch.inference_mode():
        vectors = [
            model.get_image_features(pixel_values=_to_model_input(torch, torch.from_numpy(c).to(device), torch.float32))
            for c in (cpu, gpu)
        ]
    cosine = torch.nn.functional.cosine_similarity(*vectors).cpu().numpy()
    which = decoder.name
    out = []
    for i, name in enumerate(names):
        out.append(
            _row(
                f"decode diff {label} ({side}px), {which}, {name}",
                max_abs_pixel_diff=int(diff[i].max()),
                mean_abs_pixel_diff=float(diff[i].mean()),
                cosine=float(cosine[i]),
                note=f"max abs {int(diff[i].max())}, mean abs {diff[i].mean():.3f}, cosine {cosine[i]:.6f}",
            )
        )
    out.append(
        _row(
            f"decode diff {label} ({side}px), all photos, GPU decoder {which}",
            max_abs_pixel_diff=int(diff.max()),
            mean_abs_pixel_diff=float(diff.mean()),
            min_cosine=float(cosine.min()),
            note=f"max abs {int(diff.max())}, mean abs {diff.mean():.3f}, min cosine {cosine.min():.6f}",
        )
    )
    return out
