"""Image decoding on the GPU: JPEGs decoded, resized and center-cropped where the model runs.

    crops, skipped = decode_batch(paths_or_bytes, 224, "cuda")   # (N, 224, 224, 3) uint8, NHWC

The geometry is the CLIP processor's: the shortest side to `size` (transformers' rounding), bicubic
with antialiasing, then the center `crop`. The CPU path (PIL, as clip.common.image_processor)
decodes every image a GPU decoder refuses, one at a time, so one odd file never fails a batch:
  - files a GPU decoder cannot be trusted with go to the CPU without being tried: non-JPEGs (PNG
    too: torchvision decodes it on the CPU anyway), JPEGs with 4 components (CMYK, YCCK: colour
    conversion differs) or without an end marker (truncated: nvJPEG may return half an image);
  - a batched decode that raises is retried image by image, and each image that raises alone
    takes the CPU path;
  - what the CPU path cannot read either is reported in `skipped`, with PIL's reason.

GPU decoders, tried in this order (DECODER_ORDER), the first importable with a CUDA device wins:
  1. torchvision: torchvision.io.decode_jpeg(device="cuda") (nvJPEG), in PyTorch's GPU builds;
  2. nvimgcodec: NVIDIA's nvImageCodec (pip install nvidia-nvimgcodec-cu12 / -cu13).
Both resize with torch.nn.functional.interpolate (bicubic, antialias) on the device. The GPU's
pixels differ from PIL's by its filter arithmetic and nvJPEG's IDCT: bench/bench_gpu.py
(--decode-diff) measures the difference on real photographs. DALI is not among them: its
pipelines bring their own scheduling, and its wheel is ~0.5 GB.

A decoder is any object with `name`, `decode(datas, size, crop) -> list of (H, W, 3) rows`
(raising when it refuses the batch) and `stack(rows, crop) -> batch`, where rows may also be numpy
crops from the CPU path; tests inject a fake one. PillowTorchDecoder (PIL's decoding, the GPU
path's resize) runs anywhere and isolates the resize's share of the difference.

`pixels_from_crops(crops, image_processor)` turns the crops into the model's float input where
they are (the processor's values bit for bit), so nothing returns to the host before the model.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, cast

import numpy as np
from PIL import Image

from clip.common.image_processor import CLIPImageProcessor, resize_output_size
from clip.errors import InputError
from clip.tasks.crops import numpy_pixels, torch_gather
from clip.tasks.embed.decode import pixel_table

DECODER_ORDER = ("torchvision", "nvimgcodec")
_PIL_ERRORS = (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError)


# --------------------------------------------------------------------- the exact CPU path


def cpu_crop(data: bytes, size: int, crop: tuple[int, int]) -> np.ndarray:
    """(crop_h, crop_w, 3) uint8: the crop clip.common.image_processor computes, from encoded bytes.

    RGB conversion, the shortest side to `size` with PIL's bicubic, the center crop (zeros where
    the resized image is smaller than the crop, as transformers pads).
    """
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        rgb = opened if opened.mode == "RGB" else opened.convert("RGB")
    height, width = resize_output_size(rgb.height, rgb.width, {"shortest_edge": size})
    array = np.asarray(rgb.resize((width, height), resample=Image.Resampling.BICUBIC))
    return center_crop(array, crop)


def center_crop(array: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """The processor's center crop of an HWC array: offsets (H - h) // 2, zero padding if smaller."""
    height, width = array.shape[:2]
    crop_h, crop_w = crop
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    out = np.zeros((crop_h, crop_w, array.shape[2]), array.dtype)
    src_top, src_left = max(top, 0), max(left, 0)
    dst_top, dst_left = src_top - top, src_left - left
    rows, cols = min(height - src_top, crop_h - dst_top), min(width - src_left, crop_w - dst_left)
    out[dst_top : dst_top + rows, dst_left : dst_left + cols] = array[
        src_top : src_top + rows, src_left : src_left + cols
    ]
    return out


# --------------------------------------------------------------------- which files a GPU may take


def jpeg_components(data: bytes) -> int | None:
    """The component count of a baseline/progressive JPEG's frame header; None if not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        # SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC): the frame header holds the components
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return data[at + 9] if at + 9 < len(data) else None
        at += 2 + length
    return None


def gpu_may_decode(data: bytes) -> bool:
    """A complete JPEG with 1 (gray) or 3 (YCbCr/RGB) components: what nvJPEG decodes like PIL."""
    return jpeg_components(data) in (1, 3) and data.rstrip(b"\x00\r\n")[-2:] == b"\xff\xd9"


# --------------------------------------------------------------------- GPU decoders


class CropDecoder(Protocol):
    """What decode_batch takes as a decoder (the module docstring says how each method behaves)."""

    name: str

    def decode(self, datas: Sequence[bytes], size: int, crop: tuple[int, int]) -> list[Any]: ...

    def stack(self, rows: Sequence[Any], crop: tuple[int, int]) -> Any: ...


class _TorchResize:
    """Resize + crop of decoded (3, H, W) uint8 CUDA tensors, images of one size in one call."""

    def __init__(self, torch: Any, device: Any) -> None:
        self.torch, self.device = torch, device

    def crops(self, images: Sequence[Any], size: int, crop: tuple[int, int]) -> list[Any]:
        torch = self.torch
        out: list[Any] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(tuple(image.shape[-2:]), []).append(i)
        for (height, width), members in by_shape.items():
            new_h, new_w = resize_output_size(height, width, {"shortest_edge": size})
            top, left = (new_h - crop[0]) // 2, (new_w - crop[1]) // 2
            if top < 0 or left < 0:
                raise InputError("resized image smaller than the crop")  # rare: the CPU path pads
            x = torch.stack([images[i] for i in members]).float()  # B,3,H,W
            x = torch.nn.functional.interpolate(
                x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
            )
            x = x[:, :, top : top + crop[0], left : left + crop[1]].round_().clamp_(0, 255).to(torch.uint8)
            for i, row in zip(members, x.permute(0, 2, 3, 1)):  # BCHW -> BHWC
                out[i] = row
        return out

    def stack(self, rows: Sequence[Any], crop: tuple[int, int]) -> Any:
        torch = self.torch
        if not rows:
            return torch.zeros((0, *crop, 3), dtype=torch.uint8, device=self.device)
        return torch.stack([torch.from_numpy(r).to(self.device) if isinstance(r, np.ndarray) else r for r in rows])


class TorchvisionDecoder(_TorchResize):
    name = "torchvision"

    def __init__(self, device: str) -> None:
        import torch
        import torchvision.io  # type: ignore[import-not-found]  # optional: GPU builds of torch

        super().__init__(torch, torch.device(device))
        self.io = torchvision.io

    def decode(self, datas: Sequence[bytes], size: int, crop: tuple[int, int]) -> list[Any]:
        encoded = [self.torch.frombuffer(bytearray(d), dtype=self.torch.uint8) for d in datas]
        images = self.io.decode_jpeg(encoded, mode=self.io.ImageReadMode.RGB, device=self.device)
        return self.crops(images, size, crop)


class NvImageCodecDecoder(_TorchResize):
    name = "nvimgcodec"

    def __init__(self, device: str) -> None:
        import torch
        from nvidia import nvimgcodec  # type: ignore[import-not-found]  # optional

        super().__init__(torch, torch.device(device))
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        self.decoder = nvimgcodec.Decoder(device_id=index)
        self.params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.RGB, apply_exif_orientation=False)

    def decode(self, datas: Sequence[bytes], size: int, crop: tuple[int, int]) -> list[Any]:
        images = self.decoder.decode(list(datas), params=self.params)
        if any(image is None for image in images):
            raise InputError("nvImageCodec refused an image")
        # HWC device images (CUDA array interface) -> (3, H, W) tensors, no copy
        chw = [self.torch.as_tensor(image, device=self.device).permute(2, 0, 1) for image in images]
        return self.crops(chw, size, crop)


class PillowTorchDecoder(_TorchResize):
    """PIL's decoding with the GPU decoders' torch resize, on any device: it separates the resize's
    share of the GPU path's difference from the decoder's (bench/bench_gpu.py, tests)."""

    name = "pil+torch-resize"

    def __init__(self, device: str = "cpu") -> None:
        import torch

        super().__init__(torch, torch.device(device))

    def decode(self, datas: Sequence[bytes], size: int, crop: tuple[int, int]) -> list[Any]:
        images = []
        for data in datas:
            with Image.open(io.BytesIO(data)) as image:
                pixels = np.array(image.convert("RGB"))  # a writable copy, HWC
            images.append(self.torch.from_numpy(pixels).to(self.device).permute(2, 0, 1))
        return self.crops(images, size, crop)


_DECODERS: dict[str, Callable[[str], CropDecoder]] = {
    "torchvision": TorchvisionDecoder,
    "nvimgcodec": NvImageCodecDecoder,
}


def select_decoder(device: str, order: Iterable[str] = DECODER_ORDER) -> CropDecoder | None:
    """The first decoder of `order` that imports and has its CUDA device; None: the CPU path only."""
    if not str(device).startswith(("cuda", "gpu")):
        return None
    device = "cuda" + str(device)[len("gpu") :] if str(device).startswith("gpu") else str(device)
    try:
        import torch

        if not torch.cuda.is_available():
            return None
    except ImportError:
        return None
    for name in order:
        try:
            decoder = _DECODERS[name](device)
            decoder.decode([_probe_jpeg()], 8, (8, 8))  # a build without nvJPEG fails here, not per image
            return decoder
        except Exception:  # noqa: BLE001,S112 - not installed, a CPU-only build, no codec: the next one
            continue
    return None


def _probe_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 60)).save(out, "JPEG")
    return out.getvalue()


# --------------------------------------------------------------------- crops -> model input


def pixels_from_crops(crops: Any, image_processor: CLIPImageProcessor) -> Any:
    """uint8 (N, H, W, 3) crops -> float32 (N, 3, H, W) model input, the processor's values exactly.

    A torch tensor stays on its device (a gather from a 768-entry table there); numpy stays numpy.
    The table and the gathers are the embedding pipeline's (clip.tasks.embed.decode.pixel_table,
    clip.tasks.crops).
    """
    table = pixel_table(image_processor)
    if isinstance(crops, np.ndarray):
        return numpy_pixels(crops, table)
    return torch_gather(table, crops.device)(crops)


# --------------------------------------------------------------------- the batch


def _read(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    with open(os.fspath(source), "rb") as f:
        return f.read()


def decode_batch(
    sources: Iterable[str | os.PathLike[str] | bytes | bytearray | memoryview],
    size: int,
    device: str = "cuda",
    crop: Sequence[int] | None = None,
    decoder: CropDecoder | Literal["auto"] | None = "auto",
) -> tuple[Any, list[tuple[int, str]]]:
    """(crops, skipped): `sources` (paths or encoded bytes) decoded to (N, crop_h, crop_w, 3) uint8.

    size: the shortest side after resizing; crop: (height, width) of the center crop (default
    size x size). device: "cuda"/"cuda:N" tries a GPU decoder, "cpu" the CPU path alone.
    decoder: "auto" (select_decoder), None (CPU path), or a decoder object.
    crops: a torch tensor on the device when a GPU decoder ran, else a numpy array; its rows are
    the sources not skipped, in order. skipped: [(position, reason)] for what no path could read.
    """
    crop = cast("tuple[int, int]", tuple(crop)) if crop is not None else (size, size)  # (height, width)
    decoder = select_decoder(device) if decoder == "auto" else cast("CropDecoder | None", decoder)
    rows: dict = {}
    skipped: list[tuple[int, str]] = []
    datas: dict[int, bytes] = {}
    for i, source in enumerate(sources):
        try:
            datas[i] = _read(source)
        except OSError as err:
            skipped.append((i, f"cannot read the file ({err.strerror or err})"))
    gpu = [i for i, data in datas.items() if decoder is not None and gpu_may_decode(data)]
    if gpu and decoder is not None:  # (gpu is empty without a decoder)
        try:
            rows.update(zip(gpu, decoder.decode([datas[i] for i in gpu], size, crop)))
        except Exception:  # noqa: BLE001 - any refusal of the batch: each image alone, then the CPU
            for i in gpu:
                try:
                    rows[i] = decoder.decode([datas[i]], size, crop)[0]
                except Exception:  # noqa: BLE001,S112 - the CPU path below decodes it or says why not
                    continue
    for i, data in datas.items():
        if i not in rows:
            try:
                rows[i] = cpu_crop(data, size, crop)
            except _PIL_ERRORS as err:
                message = "not an image PIL can read" if isinstance(err, Image.UnidentifiedImageError) else str(err)
                skipped.append((i, message or type(err).__name__))
    ordered = [rows[i] for i in sorted(rows)]
    if decoder is not None:  # on the device, whichever path each row took
        return decoder.stack(ordered, crop), sorted(skipped)
    return (np.stack(ordered) if ordered else np.zeros((0, *crop, 3), np.uint8)), sorted(skipped)
