"""Per-image pixel work of CLIPImageProcessor: resize through 8-bit PIL, crop, and the value map.

uint8 pixels get their final values from a 256-entry table per channel, computed with
transformers' own float arithmetic (float64 rescale, float32 normalize), so results are
bit-identical; other pixels that skip the resize get the same arithmetic applied directly.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from clip.errors import InputError

from ._image_inputs import array_to_pil, from_pil, needs_scaling_for_pil, open_image, reading, to_hwc

# Pixel values this far beyond the documented range (after rescaling: [0, 1]) are warned about.
_FAR_OUTSIDE = 10.0


def per_channel(value, name: str, channels: int, label: str) -> np.ndarray:
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, channels)
    if values.ndim != 1 or values.size != channels:
        raise InputError(f"{label}: the image has {channels} channel(s) but {name} has {values.size} values")
    return values


def resize_output_size(height: int, width: int, size: dict) -> tuple[int, int]:
    """(height, width) after resizing, with transformers' rounding (int() truncation)."""
    if "height" in size:
        return size["height"], size["width"]
    edge = size["shortest_edge"]
    if width <= height:
        return int(edge * height / width), edge
    return edge, int(edge * width / height)


def process(image, label: str, options: dict):
    """One input image -> a _TableMapped or _FloatMapped, ready to be written into the batch."""
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image, label)
    if isinstance(image, Image.Image):
        with reading(label):
            image.load()
            image = from_pil(image, label, options)
    if isinstance(image, Image.Image):
        return _from_uint8_pil(image, False, label, options)
    array = to_hwc(image, label, options)
    if array.dtype != np.uint8:
        _warn_about_range(array, label, options)
    if array.dtype == np.uint8:
        if options["do_resize"]:
            return _from_uint8_pil(array_to_pil(array), False, label, options)
        return _TableMapped(_crop(array, options), _table(False, array.shape[2], label, options))
    if options["do_resize"]:
        # transformers resizes every image through 8-bit PIL: [0, 1] floats are scaled to
        # 0..255 and truncated, integral values in 0..255 are taken as they are.
        pre_scaled = needs_scaling_for_pil(array, label)
        if pre_scaled:
            array = (array.astype(np.float64) * 255).astype(np.float32)
        return _from_uint8_pil(array_to_pil(array.astype(np.uint8)), pre_scaled, label, options)
    return _FloatMapped(_crop(array, options), label, options)


def _warn_about_range(array: np.ndarray, label: str, options: dict):
    """Warn, as transformers does for already-rescaled images, about pixel values far outside the
    documented range: 0..255 with do_rescale=True, 0..1 with do_rescale=False."""
    low, high = float(array.min()), float(array.max())
    if options["do_rescale"]:
        if low >= 0 and high <= 1:
            # One message for all images, so that Python shows it once rather than per image.
            warnings.warn(
                "It looks like you are trying to rescale already rescaled images (floats in [0, 1]); "
                "do_rescale=True rescales them again: pass do_rescale=False for images in [0, 1]",
                UserWarning,
                stacklevel=3,
            )
        factor = float(options["rescale_factor"])
        low, high = low * factor, high * factor
        expected = f"[0, {1 / factor:g}] (do_rescale=True, rescale_factor={factor:g})"
    else:
        if not options["do_normalize"]:
            return  # values used as given
        expected = "[0, 1] (do_rescale=False)"
    if low < -_FAR_OUTSIDE or high > 1 + _FAR_OUTSIDE:
        warnings.warn(
            f"It looks like you are passing pixel values far outside the expected range: {label} spans "
            f"[{array.min():g}, {array.max():g}], expected {expected}; the result will not be a usable image",
            UserWarning,
            stacklevel=3,
        )


def _from_uint8_pil(image: Image.Image, pre_scaled: bool, label: str, options: dict):
    if options["do_resize"]:
        height, width = resize_output_size(image.height, image.width, options["size"])
        image = image.resize((width, height), resample=options["resample"])
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    return _TableMapped(_crop(array, options), _table(pre_scaled, array.shape[2], label, options))


class _TableMapped:
    """Cropped uint8 HWC pixels and the per-channel table that gives their final values."""

    def __init__(self, pixels: np.ndarray, table: np.ndarray):
        self.pixels, self.table = pixels, table
        self.shape = (pixels.shape[2], pixels.shape[0], pixels.shape[1])

    def write(self, out: np.ndarray):
        for channel, table in enumerate(self.table):
            np.take(table, self.pixels[:, :, channel], out=out[channel], mode="clip")


class _FloatMapped:
    """Non-uint8 pixels that skip the resize: transformers' float arithmetic, applied directly."""

    def __init__(self, pixels: np.ndarray, label: str, options: dict):
        x = pixels
        if options["do_rescale"]:
            x = (x.astype(np.float64) * options["rescale_factor"]).astype(np.float32)
        if options["do_normalize"]:
            dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
            channels = x.shape[2]
            mean = per_channel(options["image_mean"], "image_mean", channels, label).astype(dtype)
            std = per_channel(options["image_std"], "image_std", channels, label).astype(dtype)
            x = (x.astype(dtype) - mean) / std
        if not np.all(np.isfinite(x)):
            raise InputError(
                f"{label}: pixel values overflow float32 after rescaling and normalizing (input spans "
                f"[{pixels.min()}, {pixels.max()}])"
            )
        self.values = x.transpose(2, 0, 1)
        self.shape = self.values.shape

    def write(self, out: np.ndarray):
        out[...] = self.values


def _table(pre_scaled: bool, channels: int, label: str, options: dict) -> np.ndarray:
    """(channels, 256) float32: what transformers computes for each uint8 pixel value."""
    tables = options.setdefault("tables", {})
    if (pre_scaled, channels) not in tables:
        tables[pre_scaled, channels] = _compute_table(pre_scaled, channels, label, options)
    return tables[pre_scaled, channels]


def _compute_table(pre_scaled: bool, channels: int, label: str, options: dict) -> np.ndarray:
    x: np.ndarray = np.arange(256, dtype=np.uint8)
    if pre_scaled:
        x = (x.astype(np.float64) * (1 / 255)).astype(np.float32)
    if options["do_rescale"]:
        x = (x.astype(np.float64) * options["rescale_factor"]).astype(np.float32)
    x = np.broadcast_to(x.astype(np.float32), (channels, 256))
    if options["do_normalize"]:
        mean = per_channel(options["image_mean"], "image_mean", channels, label).astype(np.float32)
        std = per_channel(options["image_std"], "image_std", channels, label).astype(np.float32)
        x = (x - mean[:, None]) / std[:, None]
    return np.ascontiguousarray(x, dtype=np.float32)


def _crop(array: np.ndarray, options: dict) -> np.ndarray:
    if not options["do_center_crop"]:
        return array
    return center_crop_hwc(array, options["crop_size"]["height"], options["crop_size"]["width"])


def center_crop_hwc(array: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """Center crop of an HWC array; where the image is smaller than the crop, zeros (as transformers)."""
    height, width = array.shape[:2]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return array[top : top + crop_h, left : left + crop_w]
    out = np.zeros((crop_h, crop_w, array.shape[2]), dtype=array.dtype)
    src_top, src_left = max(top, 0), max(left, 0)
    dst_top, dst_left = src_top - top, src_left - left
    rows, cols = min(height - src_top, crop_h - dst_top), min(width - src_left, crop_w - dst_left)
    out[dst_top : dst_top + rows, dst_left : dst_left + cols] = array[
        src_top : src_top + rows, src_left : src_left + cols
    ]
    return out


class Pool:
    """In-order map over a thread pool made for one call; a pool kept across calls would not
    survive a fork (DataLoader workers), and starting a few threads costs far less than a resize."""

    def __init__(self, num_threads, count: int):
        if num_threads is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            num_threads = cores or 1
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise InputError(f"num_threads must be a positive int or None, got {num_threads!r}")
        self.workers = min(num_threads, count)
        self.executor = ThreadPoolExecutor(self.workers) if self.workers > 1 else None

    def map(self, fn, args: list) -> list:
        if self.executor is None:
            return [fn(arg) for arg in args]
        return list(self.executor.map(fn, args))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.executor is not None:
            self.executor.shutdown()
