"""CLIP image preprocessing: RGB, shortest-edge bicubic resize, center crop, rescale, normalize.

Matches transformers' CLIPImageProcessor (its PIL path) value for value. Speed comes from
resizing straight from the PIL image (transformers goes PIL -> numpy -> PIL), from running the
images on a few threads (PIL's resize, most of the time, releases the GIL), and from mapping the
cropped uint8 pixels through a 256-entry table per channel into one preallocated NCHW batch: the
table is computed with transformers' own float arithmetic (float64 rescale, float32 normalize),
so the result is bit-identical rather than merely close.

No deep-learning framework is imported here; tensors in and out go through `clip.common.batch`.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from clip.common import hub
from clip.common._image_inputs import array_to_pil, flatten, load_repeated, needs_scaling_for_pil
from clip.common._image_layout import FORMATS as _FORMATS
from clip.common._image_layout import image_as_hwc, to_layout
from clip.common._image_pixels import Pool, center_crop_hwc, per_channel, process, resize_output_size
from clip.common.batch import BatchFeature, check_tensor_type, to_tensor
from clip.common.io import atomic_write_json, atomic_write_text, read_json_object
from clip.errors import InputError, InputTypeError

# One image: a PIL image, or a numpy / torch / TensorFlow / JAX array (HWC or CHW).
ImageLike = Any
# An int (the shortest edge, or a square), or transformers' size dict.
SizeLike = int | dict | None

__all__ = ["CLIPFeatureExtractor", "CLIPImageProcessor", "convert_rgb", "resize_output_size"]

IMAGE_PROCESSOR_NAME = "preprocessor_config.json"
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

OPTIONS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)
_BOOL_OPTIONS = tuple(name for name in OPTIONS if name.startswith("do_"))
_CALL_ONLY = ("input_data_format", "data_format")
# Every keyword argument preprocess() takes besides images and return_tensors.
PREPROCESS_KWARGS = frozenset((*OPTIONS, *_CALL_ONLY, "num_threads"))
# Each setting and the step that needs it.
_NEEDED_BY = {
    "size": "do_resize",
    "resample": "do_resize",
    "crop_size": "do_center_crop",
    "rescale_factor": "do_rescale",
    "image_mean": "do_normalize",
    "image_std": "do_normalize",
}


def _size_dict(value, name: str, square: bool) -> dict:
    """The size forms transformers accepts, as a dict; `square` says what a bare int means."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be an int, a (height, width) pair or a dict, got {value!r}")
    if isinstance(value, (int, np.integer)):
        size = {"height": int(value), "width": int(value)} if square else {"shortest_edge": int(value)}
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        size = {"height": value[0], "width": value[1]}
    elif isinstance(value, dict):
        size = dict(value)
    else:
        raise InputError(f"{name} must be an int, a (height, width) pair or a dict, got {value!r}")
    allowed = [{"height", "width"}] if square else [{"shortest_edge"}, {"height", "width"}]
    if set(size) not in allowed:
        forms = " or ".join(str(sorted(keys)) for keys in allowed)
        raise InputError(f"{name} must have the keys {forms}, got {sorted(size)}")
    for key, edge in size.items():
        if isinstance(edge, bool) or not isinstance(edge, (int, np.integer)) or edge < 1:
            raise InputError(f"{name}[{key!r}] must be a positive int, got {edge!r}")
        size[key] = int(edge)
    return size


class CLIPImageProcessor:
    """Turns images into the `pixel_values` a CLIP vision tower expects.

    Accepts PIL images, file paths, numpy arrays (HWC or CHW, a leading axis for a batch) and
    torch/TensorFlow/JAX tensors, alone or in (nested) lists.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size: SizeLike = None,
        resample: int = Image.Resampling.BICUBIC,
        do_center_crop: bool = True,
        crop_size: SizeLike = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_convert_rgb: bool = True,
        processor_class: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Keys written by older or other tools: the type names are re-derived on save, the rest
        # is kept so that a load/save round trip loses nothing.
        kwargs.pop("feature_extractor_type", None)
        kwargs.pop("image_processor_type", None)
        self.do_resize = do_resize
        self.size = {"shortest_edge": 224} if size is None else size
        self.resample = resample
        self.do_center_crop = do_center_crop
        self.crop_size = {"height": 224, "width": 224} if crop_size is None else crop_size
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = list(OPENAI_CLIP_MEAN) if image_mean is None else image_mean
        self.image_std = list(OPENAI_CLIP_STD) if image_std is None else image_std
        self.do_convert_rgb = do_convert_rgb
        self.processor_class = processor_class
        self.extra = kwargs
        options = self._options({})
        self.size, self.crop_size = options["size"], options["crop_size"]

    # ----------------------------------------------------------------- configuration

    def _options(self, overrides: dict) -> dict:
        unknown = set(overrides) - set(OPTIONS) - set(_CALL_ONLY)
        if unknown:
            raise InputError(
                f"unknown image processor option(s) {sorted(unknown)}; known: {list(OPTIONS + _CALL_ONLY)}"
            )
        options = {name: getattr(self, name) for name in OPTIONS}
        options.update({k: v for k, v in overrides.items() if v is not None})
        for name in _BOOL_OPTIONS:
            if not isinstance(options[name], (bool, np.bool_)):
                raise InputError(f"{name} must be True or False, got {options[name]!r}")
        # As transformers' validate_preprocess_arguments: a setting must be there when its step
        # runs, and is not looked at when the step is off.
        # (size and crop_size are read whatever the steps, as transformers reads them.)
        for name, step in _NEEDED_BY.items():
            if options[name] is None and options[step]:
                raise InputError(f"{name} must be specified if {step} is True")
        for name in ("size", "crop_size"):
            if options[name] is None:
                raise InputError(f"{name} must be specified (it is None)")
        options["size"] = _size_dict(options["size"], "size", square=False)
        options["crop_size"] = _size_dict(options["crop_size"], "crop_size", square=True)
        resample = options["resample"]
        if resample is not None:
            if isinstance(resample, bool) or not isinstance(resample, (int, np.integer)) or not 0 <= resample <= 5:
                raise InputError(f"resample must be a PIL resampling filter (an int 0..5), got {resample!r}")
            options["resample"] = int(resample)
        factor = options["rescale_factor"]
        if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float, np.number))):
            raise InputError(f"rescale_factor must be a number, got {factor!r}")
        for name in ("image_mean", "image_std"):
            if options[name] is None:
                continue
            try:
                values = np.asarray(options[name], dtype=np.float64)
            except (TypeError, ValueError):
                values = None
            if values is None or values.ndim > 1 or values.size == 0:
                raise InputError(f"{name} must be a number or a list of numbers, got {options[name]!r}")
        for name in _CALL_ONLY:
            if options.get(name) not in (None, *_FORMATS):
                raise InputError(f"{name} must be one of {_FORMATS} or None, got {options[name]!r}")
        return options

    def to_dict(self) -> dict:
        data = copy.deepcopy(self.extra)
        data.update({name: copy.deepcopy(getattr(self, name)) for name in OPTIONS})
        data["resample"] = int(data["resample"])
        data["image_processor_type"] = "CLIPImageProcessor"
        if self.processor_class is not None:
            data["processor_class"] = self.processor_class
        return data

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        atomic_write_text(os.fspath(json_file_path), self.to_json_string())

    @property
    def is_fast(self) -> bool:
        return False

    def __repr__(self):
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other):
        return isinstance(other, CLIPImageProcessor) and self.to_dict() == other.to_dict()

    @classmethod
    def from_dict(
        cls, image_processor_dict: dict, **kwargs: Any
    ) -> CLIPImageProcessor | tuple[CLIPImageProcessor, dict]:
        """A processor from to_dict()'s form; keyword arguments override it. With
        return_unused_kwargs=True, (processor, the keyword arguments that are not options)."""
        return_unused = kwargs.pop("return_unused_kwargs", False)
        if not isinstance(image_processor_dict, dict):
            raise InputTypeError(f"image_processor_dict must be a dict, got {type(image_processor_dict).__name__}")
        options = {k: v for k, v in kwargs.items() if k in OPTIONS}
        unused = {k: v for k, v in kwargs.items() if k not in OPTIONS}
        processor = cls(**{**image_processor_dict, **options})
        return (processor, unused) if return_unused else processor

    @classmethod
    def from_json_file(
        cls, path: str | os.PathLike, **kwargs: Any
    ) -> CLIPImageProcessor | tuple[CLIPImageProcessor, dict]:
        return cls.from_dict(read_json_object(path), **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[str]:
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise InputError(f"{save_directory} is a file; save_pretrained needs a directory")
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, IMAGE_PROCESSOR_NAME)
        atomic_write_json(path, self.to_dict())
        return [path]

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> CLIPImageProcessor:
        """Load preprocessor_config.json from a directory, a hub id or the JSON file itself.

        Hub arguments (revision, cache_dir, token, ...) select the file; other keyword
        arguments override the stored options.
        """
        hub_kwargs = hub.split_hub_kwargs(kwargs)
        if os.path.isfile(os.fspath(name_or_path)):
            path = os.fspath(name_or_path)
        else:
            path = hub.resolve_file(name_or_path, IMAGE_PROCESSOR_NAME, **hub_kwargs)
        # (the processor, unused kwargs) with return_unused_kwargs=True, as transformers returns
        return cls.from_json_file(path, **kwargs)  # type: ignore[return-value]

    # ----------------------------------------------------------------- single-image transforms
    # transformers' public methods, on one numpy image (HWC or CHW), returned in the same layout
    # (or data_format) and with transformers' dtypes.

    def resize(
        self,
        image: ImageLike,
        size: SizeLike,
        resample: int = Image.Resampling.BICUBIC,
        data_format: str | None = None,
        input_data_format: str | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Resize through 8-bit PIL: uint8 and integral values give uint8, [0, 1] floats float32."""
        if not isinstance(size, dict):
            raise InputTypeError(f"size must be a dict (shortest_edge, or height and width), got {size!r}")
        size = _size_dict(size, "size", square=False)
        array, fmt = image_as_hwc(image, input_data_format)
        pre_scaled = array.dtype != np.uint8 and needs_scaling_for_pil(array, "image")
        if pre_scaled:
            array = (array.astype(np.float64) * 255).astype(np.float32)
        pil = array_to_pil(array.astype(np.uint8))
        height, width = resize_output_size(pil.height, pil.width, size)
        out = np.asarray(pil.resize((width, height), resample=int(resample)))
        out = out[:, :, None] if out.ndim == 2 else out
        if pre_scaled:
            out = (out.astype(np.float64) / 255).astype(np.float32)
        return to_layout(out, data_format or fmt)

    def center_crop(
        self,
        image: ImageLike,
        size: SizeLike,
        data_format: str | None = None,
        input_data_format: str | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """The central (height, width) of the image, zero-padded where the image is smaller."""
        size = _size_dict(size, "size", square=True)
        array, fmt = image_as_hwc(image, input_data_format)
        return to_layout(center_crop_hwc(array, size["height"], size["width"]), data_format or fmt)

    def rescale(
        self,
        image: ImageLike,
        scale: float,
        data_format: str | None = None,
        input_data_format: str | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """image * scale, computed in float64 and returned as float32 (transformers' arithmetic)."""
        array, fmt = image_as_hwc(image, input_data_format)
        return to_layout((array.astype(np.float64) * scale).astype(np.float32), data_format or fmt)

    def normalize(
        self,
        image: ImageLike,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        data_format: str | None = None,
        input_data_format: str | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """(image - mean) / std per channel; float inputs keep their dtype, others become float32."""
        array, fmt = image_as_hwc(image, input_data_format)
        dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32
        channels = array.shape[2]
        mean_per_channel = per_channel(mean, "mean", channels, "image").astype(dtype)
        std_per_channel = per_channel(std, "std", channels, "image").astype(dtype)
        return to_layout((array.astype(dtype) - mean_per_channel) / std_per_channel, data_format or fmt)

    def convert_rgb(self, image: ImageLike) -> ImageLike:
        return convert_rgb(image)

    # ----------------------------------------------------------------- preprocessing

    def __call__(self, images: Any, return_tensors: str | None = None, **overrides: Any) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **overrides)

    def preprocess(
        self, images: Any, return_tensors: str | None = None, num_threads: int | None = None, **overrides: Any
    ) -> BatchFeature:
        """`pixel_values`: float32 (N, C, H, W); a list of (C, H, W) arrays when return_tensors is None.

        Images are processed on `num_threads` threads (default: one per available core, at most
        one per image); PIL releases the GIL while it decodes and resizes.
        """
        check_tensor_type(return_tensors)
        options = self._options(overrides)
        pairs = flatten(images)
        load_repeated(pairs)
        with Pool(num_threads, len(pairs)) as pool:
            items = pool.map(lambda pair: process(pair[1], pair[0], options), pairs)
            shapes = {item.shape for item in items}
            if len(shapes) > 1 and return_tensors is not None:
                raise InputError(
                    f"the processed images have different shapes {sorted(shapes)} and cannot be stacked; "
                    "enable do_center_crop or pass return_tensors=None"
                )
            if len(shapes) == 1:
                batch = np.empty((len(items), *items[0].shape), dtype=np.float32)
                outs = list(batch)
            else:
                batch, outs = None, [np.empty(item.shape, dtype=np.float32) for item in items]
            pool.map(lambda pair: pair[0].write(pair[1]), list(zip(items, outs)))
        channels_last = options.get("data_format") == "channels_last"
        if batch is not None and return_tensors is not None:
            pixel_values = to_tensor(batch.transpose(0, 2, 3, 1) if channels_last else batch, return_tensors)
        else:
            pixel_values = [out.transpose(1, 2, 0) if channels_last else out for out in outs]
        return BatchFeature({"pixel_values": pixel_values})


class CLIPFeatureExtractor(CLIPImageProcessor):
    """Deprecated name of CLIPImageProcessor, kept for old code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "CLIPFeatureExtractor is deprecated and will be removed; use CLIPImageProcessor instead",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)


def convert_rgb(image: ImageLike) -> ImageLike:
    """A PIL image in RGB (other inputs are returned as they are), as transformers' convert_to_rgb."""
    if not isinstance(image, Image.Image) or image.mode == "RGB":
        return image
    return image.convert("RGB")
