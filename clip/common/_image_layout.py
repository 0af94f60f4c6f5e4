"""One image's channel layout: any accepted image as an HWC array, and HWC back to the requested layout.

These serve CLIPImageProcessor's single-image methods (resize, center_crop, rescale, normalize).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from clip.common._image_inputs import is_array
from clip.common.batch import to_numpy
from clip.errors import InputError, InputTypeError

FORMATS = ("channels_first", "channels_last")


def image_as_hwc(image: Any, input_data_format: str | None) -> tuple[np.ndarray, str]:
    """One image as an HWC numpy array and the layout it came in."""
    if isinstance(image, Image.Image):
        image = np.asarray(image)
    if not is_array(image):
        raise InputTypeError(f"image must be a numpy array or a tensor, got {type(image).__name__}")
    array = to_numpy(image)
    if array.ndim == 2:
        return array[:, :, None], "channels_last"
    if array.ndim != 3:
        raise InputError(f"image must have 2 or 3 dimensions, got shape {array.shape}")
    fmt = input_data_format
    if fmt is None:
        fmt = "channels_first" if array.shape[0] in (1, 3) else "channels_last" if array.shape[2] in (1, 3) else None
        if fmt is None:
            raise InputError(f"cannot tell the channel axis of shape {array.shape}; pass input_data_format")
    if fmt not in FORMATS:
        raise InputError(f"input_data_format must be one of {FORMATS}, got {fmt!r}")
    return (array.transpose(1, 2, 0) if fmt == "channels_first" else array), fmt


def to_layout(array: np.ndarray, fmt: Any) -> np.ndarray:
    """An HWC array in `fmt` ("channels_first", "channels_last" or transformers' ChannelDimension)."""
    fmt = getattr(fmt, "value", fmt)
    if fmt not in FORMATS:
        raise InputError(f"data_format must be one of {FORMATS}, got {fmt!r}")
    return np.ascontiguousarray(array.transpose(2, 0, 1)) if fmt == "channels_first" else array
