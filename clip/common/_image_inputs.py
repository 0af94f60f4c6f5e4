"""Inputs of CLIPImageProcessor: what an image may be, and how it becomes pixels.

PIL images, file paths, numpy arrays (HW, HWC or CHW; a leading axis for a batch) and
torch/TensorFlow/JAX tensors, alone or in (nested) lists. Errors name the input (images[3]).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
from PIL import Image

from clip.errors import InputError

from .batch import to_numpy

_TENSOR_MODULES = ("torch", "tensorflow", "keras", "jax", "jaxlib")
# PIL can fail on a broken file with any of these, on open or on the deferred decode.
_PIL_ERRORS = (OSError, SyntaxError, EOFError, Image.DecompressionBombError)


@contextlib.contextmanager
def reading(label: str):
    """PIL's errors for a broken, truncated or oversized file, as a ValueError naming the input."""
    try:
        yield
    except _PIL_ERRORS as err:
        raise InputError(f"{label}: cannot read the image ({type(err).__name__}: {err})") from err


def flatten(images):
    """(label, image) pairs; a list may nest one level, and a 4-D array is a batch."""
    if images is None:
        raise InputError("images is None; pass a PIL image, a path, an array or a list of those")
    if not isinstance(images, (list, tuple)):
        images = [images]
        top = "images"
    else:
        top = None
    pairs = []
    for i, image in enumerate(images):
        label = top or f"images[{i}]"
        if isinstance(image, (list, tuple)) and top is None:
            pairs.extend((f"{label}[{j}]", inner) for j, inner in enumerate(image))
        elif is_array(image) and len(image.shape) == 4:
            pairs.extend((f"{label}[{j}]", inner) for j, inner in enumerate(image))
        else:
            pairs.append((label, image))
    if not pairs:
        raise InputError("images is empty; pass at least one image")
    return pairs


def load_repeated(pairs):
    """Decode lazily opened PIL images that occur more than once before threads share them:
    two threads loading one image at once race on its file."""
    seen = set()
    for label, image in pairs:
        if isinstance(image, Image.Image):
            if id(image) in seen:
                with reading(label):
                    image.load()
            seen.add(id(image))


def _is_tensor(value) -> bool:
    return type(value).__module__.split(".")[0] in _TENSOR_MODULES and hasattr(value, "shape")


def is_array(value) -> bool:
    return isinstance(value, np.ndarray) or _is_tensor(value)


def open_image(path, label: str) -> Image.Image:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{label}: {path!r} is not an existing image file")
    with reading(label):
        image = Image.open(path)
        image.load()
    return image


def from_pil(image: Image.Image, label: str, options: dict):
    if options["do_convert_rgb"] and image.mode != "RGB":
        return image.convert("RGB")
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("I;16", "I", "F"):
        # transformers reads these as numpy integers/floats; so do we.
        return np.asarray(image)
    raise InputError(f"{label}: a PIL image in mode {image.mode!r} needs do_convert_rgb=True")


def to_hwc(image, label: str, options: dict) -> np.ndarray:
    if not is_array(image):
        raise InputError(
            f"{label}: unsupported type {type(image).__name__}; expected a PIL image, a file path, "
            "a numpy array or a torch/TensorFlow/JAX tensor"
        )
    array = to_numpy(image)
    shape = array.shape
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
        raise InputError(f"{label}: pixel values must be real numbers, got dtype {array.dtype}")
    if array.size == 0:
        raise InputError(f"{label}: the image is empty (shape {array.shape})")
    if array.ndim == 2:
        array = array[:, :, None]  # gray
    elif array.ndim != 3:
        raise InputError(f"{label}: an image must have 2 (HW) or 3 (HWC or CHW) dimensions, got shape {array.shape}")
    else:
        fmt = options.get("input_data_format")
        explicit = fmt is not None
        if fmt is None:
            if array.shape[0] in (1, 3):  # channels first wins a tie, as in transformers
                fmt = "channels_first"
            elif array.shape[2] in (1, 3):
                fmt = "channels_last"
            else:
                raise InputError(
                    f"{label}: no axis of size 1 or 3 (gray or RGB channels) first or last in shape {array.shape}; "
                    "pass input_data_format for other channel counts"
                )
        if fmt == "channels_first":
            array = array.transpose(1, 2, 0)
        # Like transformers, any channel count PIL can resize (1 to 4: L, LA, RGB, RGBA) is taken
        # when the caller names the channel axis; the per-channel mean and std must match it.
        allowed = (1, 2, 3, 4) if explicit else (1, 3)
        if array.shape[2] not in allowed:
            raise InputError(
                f"{label}: {array.shape[2]} channels in {fmt} shape {shape}; expected {' or '.join(map(str, allowed))}"
            )
    if array.dtype != np.uint8 and not np.all(np.isfinite(array)):
        raise InputError(f"{label}: pixel values contain NaN or infinity")
    if options["do_convert_rgb"] and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)  # what PIL's L -> RGB conversion does
    return array


def needs_scaling_for_pil(array: np.ndarray, label: str) -> bool:
    """transformers' rule for putting non-uint8 pixels into an 8-bit PIL image."""
    if np.allclose(array, array.astype(int)):
        if array.min() >= 0 and array.max() <= 255:
            return False
        raise InputError(f"{label}: integral pixel values must lie in [0, 255], got [{array.min()}, {array.max()}]")
    if array.min() >= 0 and array.max() <= 1:
        return True
    raise InputError(f"{label}: fractional pixel values must lie in [0, 1], got [{array.min()}, {array.max()}]")


def array_to_pil(array: np.ndarray) -> Image.Image:
    array = np.ascontiguousarray(array)
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
