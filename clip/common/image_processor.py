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

import contextlib
import copy
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from clip.common import hub
from clip.common.batch import BatchFeature, check_tensor_type, to_numpy, to_tensor
from clip.common.io import atomic_write_json, read_json_object

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
_FORMATS = ("channels_first", "channels_last")
_TENSOR_MODULES = ("torch", "tensorflow", "keras", "jax", "jaxlib")
# PIL can fail on a broken file with any of these, on open or on the deferred decode.
_PIL_ERRORS = (OSError, SyntaxError, EOFError, Image.DecompressionBombError)


def _size_dict(value, name: str, square: bool) -> dict:
    """The size forms transformers accepts, as a dict; `square` says what a bare int means."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int, a (height, width) pair or a dict, got {value!r}")
    if isinstance(value, (int, np.integer)):
        size = {"height": int(value), "width": int(value)} if square else {"shortest_edge": int(value)}
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        size = {"height": value[0], "width": value[1]}
    elif isinstance(value, dict):
        size = dict(value)
    else:
        raise ValueError(f"{name} must be an int, a (height, width) pair or a dict, got {value!r}")
    allowed = [{"height", "width"}] if square else [{"shortest_edge"}, {"height", "width"}]
    if set(size) not in allowed:
        forms = " or ".join(str(sorted(keys)) for keys in allowed)
        raise ValueError(f"{name} must have the keys {forms}, got {sorted(size)}")
    for key, edge in size.items():
        if isinstance(edge, bool) or not isinstance(edge, (int, np.integer)) or edge < 1:
            raise ValueError(f"{name}[{key!r}] must be a positive int, got {edge!r}")
        size[key] = int(edge)
    return size


def _per_channel(value, name: str, channels: int, label: str) -> np.ndarray:
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if values.size == 1:
        values = np.repeat(values, channels)
    if values.ndim != 1 or values.size != channels:
        raise ValueError(f"{label}: the image has {channels} channel(s) but {name} has {values.size} values")
    return values


def resize_output_size(height: int, width: int, size: dict) -> tuple[int, int]:
    """(height, width) after resizing, with transformers' rounding (int() truncation)."""
    if "height" in size:
        return size["height"], size["width"]
    edge = size["shortest_edge"]
    if width <= height:
        return int(edge * height / width), edge
    return edge, int(edge * width / height)


class CLIPImageProcessor:
    """Turns images into the `pixel_values` a CLIP vision tower expects.

    Accepts PIL images, file paths, numpy arrays (HWC or CHW, a leading axis for a batch) and
    torch/TensorFlow/JAX tensors, alone or in (nested) lists.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size=None,
        resample: int = Image.Resampling.BICUBIC,
        do_center_crop: bool = True,
        crop_size=None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean=None,
        image_std=None,
        do_convert_rgb: bool = True,
        processor_class: str | None = None,
        **kwargs,
    ):
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
            raise ValueError(
                f"unknown image processor option(s) {sorted(unknown)}; known: {list(OPTIONS + _CALL_ONLY)}"
            )
        options = {name: getattr(self, name) for name in OPTIONS}
        options.update({k: v for k, v in overrides.items() if v is not None})
        for name in _BOOL_OPTIONS:
            if not isinstance(options[name], (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {options[name]!r}")
        options["size"] = _size_dict(options["size"], "size", square=False)
        options["crop_size"] = _size_dict(options["crop_size"], "crop_size", square=True)
        resample = options["resample"]
        if isinstance(resample, bool) or not isinstance(resample, (int, np.integer)) or not 0 <= resample <= 5:
            raise ValueError(f"resample must be a PIL resampling filter (an int 0..5), got {resample!r}")
        options["resample"] = int(resample)
        factor = options["rescale_factor"]
        if isinstance(factor, bool) or not isinstance(factor, (int, float, np.number)):
            raise ValueError(f"rescale_factor must be a number, got {factor!r}")
        for name in ("image_mean", "image_std"):
            try:
                np.asarray(options[name], dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number or a list of numbers, got {options[name]!r}") from None
        for name in _CALL_ONLY:
            if options.get(name) not in (None, *_FORMATS):
                raise ValueError(f"{name} must be one of {_FORMATS} or None, got {options[name]!r}")
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

    def __repr__(self):
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other):
        return isinstance(other, CLIPImageProcessor) and self.to_dict() == other.to_dict()

    @classmethod
    def from_dict(cls, data: dict, **kwargs):
        return cls(**{**data, **kwargs})

    @classmethod
    def from_json_file(cls, path, **kwargs):
        return cls.from_dict(read_json_object(path), **kwargs)

    def save_pretrained(self, save_directory) -> list[str]:
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise ValueError(f"{save_directory} is a file; save_pretrained needs a directory")
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, IMAGE_PROCESSOR_NAME)
        atomic_write_json(path, self.to_dict())
        return [path]

    @classmethod
    def from_pretrained(cls, name_or_path, **kwargs):
        """Load preprocessor_config.json from a directory, a hub id or the JSON file itself.

        Hub arguments (revision, cache_dir, token, ...) select the file; other keyword
        arguments override the stored options.
        """
        hub_kwargs = hub.split_hub_kwargs(kwargs)
        if os.path.isfile(os.fspath(name_or_path)):
            path = os.fspath(name_or_path)
        else:
            path = hub.resolve_file(name_or_path, IMAGE_PROCESSOR_NAME, **hub_kwargs)
        return cls.from_json_file(path, **kwargs)

    # ----------------------------------------------------------------- preprocessing

    def __call__(self, images, return_tensors=None, **overrides) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **overrides)

    def preprocess(self, images, return_tensors=None, num_threads=None, **overrides) -> BatchFeature:
        """`pixel_values`: float32 (N, C, H, W); a list of (C, H, W) arrays when return_tensors is None.

        Images are processed on `num_threads` threads (default: one per available core, at most
        one per image); PIL releases the GIL while it decodes and resizes.
        """
        check_tensor_type(return_tensors)
        options = self._options(overrides)
        pairs = _flatten(images)
        _load_repeated(pairs)
        with _Pool(num_threads, len(pairs)) as pool:
            items = pool.map(lambda pair: _process(pair[1], pair[0], options), pairs)
            shapes = {item.shape for item in items}
            if len(shapes) > 1 and return_tensors is not None:
                raise ValueError(
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

    def __init__(self, *args, **kwargs):
        warnings.warn(
            "CLIPFeatureExtractor is deprecated and will be removed; use CLIPImageProcessor instead",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)


# --------------------------------------------------------------------- per-image steps


def _process(image, label: str, options: dict):
    """One input image -> a _TableMapped or _FloatMapped, ready to be written into the batch."""
    if isinstance(image, (str, os.PathLike)):
        image = _open_image(image, label)
    if isinstance(image, Image.Image):
        with _reading(label):
            image.load()
            image = _from_pil(image, label, options)
    if isinstance(image, Image.Image):
        return _from_uint8_pil(image, False, label, options)
    array = _to_hwc(image, label, options)
    if options["do_rescale"] and array.dtype != np.uint8 and array.min() >= 0 and array.max() <= 1:
        # One message for all images, so that Python shows it once rather than per image.
        warnings.warn(
            "pixel values look already rescaled (floats in [0, 1]) but do_rescale=True rescales them "
            "again; pass do_rescale=False for images in [0, 1]",
            UserWarning,
            stacklevel=2,
        )
    if array.dtype == np.uint8:
        if options["do_resize"]:
            return _from_uint8_pil(_array_to_pil(array), False, label, options)
        return _TableMapped(_crop(array, options), _table(False, array.shape[2], label, options))
    if options["do_resize"]:
        # transformers resizes every image through 8-bit PIL: [0, 1] floats are scaled to
        # 0..255 and truncated, integral values in 0..255 are taken as they are.
        pre_scaled = _needs_scaling_for_pil(array, label)
        if pre_scaled:
            array = (array.astype(np.float64) * 255).astype(np.float32)
        return _from_uint8_pil(_array_to_pil(array.astype(np.uint8)), pre_scaled, label, options)
    return _FloatMapped(_crop(array, options), label, options)


def _from_uint8_pil(image: Image.Image, pre_scaled: bool, label: str, options: dict):
    if options["do_resize"]:
        height, width = resize_output_size(image.height, image.width, options["size"])
        image = image.resize((width, height), resample=options["resample"])
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    return _TableMapped(_crop(array, options), _table(pre_scaled, array.shape[2], label, options))


@contextlib.contextmanager
def _reading(label: str):
    """PIL's errors for a broken, truncated or oversized file, as a ValueError naming the input."""
    try:
        yield
    except _PIL_ERRORS as err:
        raise ValueError(f"{label}: cannot read the image ({type(err).__name__}: {err})") from err


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
            mean = _per_channel(options["image_mean"], "image_mean", channels, label).astype(dtype)
            std = _per_channel(options["image_std"], "image_std", channels, label).astype(dtype)
            x = (x.astype(dtype) - mean) / std
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
    x = np.arange(256, dtype=np.uint8)
    if pre_scaled:
        x = (x.astype(np.float64) * (1 / 255)).astype(np.float32)
    if options["do_rescale"]:
        x = (x.astype(np.float64) * options["rescale_factor"]).astype(np.float32)
    x = np.broadcast_to(x.astype(np.float32), (channels, 256))
    if options["do_normalize"]:
        mean = _per_channel(options["image_mean"], "image_mean", channels, label).astype(np.float32)
        std = _per_channel(options["image_std"], "image_std", channels, label).astype(np.float32)
        x = (x - mean[:, None]) / std[:, None]
    return np.ascontiguousarray(x, dtype=np.float32)


def _crop(array: np.ndarray, options: dict) -> np.ndarray:
    """Center crop of an HWC array; where the image is smaller than the crop, zeros (as transformers)."""
    if not options["do_center_crop"]:
        return array
    height, width = array.shape[:2]
    crop_h, crop_w = options["crop_size"]["height"], options["crop_size"]["width"]
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


class _Pool:
    """In-order map over a thread pool made for one call; a pool kept across calls would not
    survive a fork (DataLoader workers), and starting a few threads costs far less than a resize."""

    def __init__(self, num_threads, count: int):
        if num_threads is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            num_threads = cores or 1
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
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


def _flatten(images):
    """(label, image) pairs; a list may nest one level, and a 4-D array is a batch."""
    if images is None:
        raise ValueError("images is None; pass a PIL image, a path, an array or a list of those")
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
        elif _is_array(image) and len(image.shape) == 4:
            pairs.extend((f"{label}[{j}]", inner) for j, inner in enumerate(image))
        else:
            pairs.append((label, image))
    if not pairs:
        raise ValueError("images is empty; pass at least one image")
    return pairs


def _load_repeated(pairs):
    """Decode lazily opened PIL images that occur more than once before threads share them:
    two threads loading one image at once race on its file."""
    seen = set()
    for label, image in pairs:
        if isinstance(image, Image.Image):
            if id(image) in seen:
                with _reading(label):
                    image.load()
            seen.add(id(image))


def _is_tensor(value) -> bool:
    return type(value).__module__.split(".")[0] in _TENSOR_MODULES and hasattr(value, "shape")


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray) or _is_tensor(value)


def _open_image(path, label: str) -> Image.Image:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{label}: {path!r} is not an existing image file")
    with _reading(label):
        image = Image.open(path)
        image.load()
    return image


def _from_pil(image: Image.Image, label: str, options: dict):
    if options["do_convert_rgb"] and image.mode != "RGB":
        return image.convert("RGB")
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("I;16", "I", "F"):
        # transformers reads these as numpy integers/floats; so do we.
        return np.asarray(image)
    raise ValueError(f"{label}: a PIL image in mode {image.mode!r} needs do_convert_rgb=True")


def _to_hwc(image, label: str, options: dict) -> np.ndarray:
    if not _is_array(image):
        raise ValueError(
            f"{label}: unsupported type {type(image).__name__}; expected a PIL image, a file path, "
            "a numpy array or a torch/TensorFlow/JAX tensor"
        )
    array = to_numpy(image)
    shape = array.shape
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
        raise ValueError(f"{label}: pixel values must be real numbers, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{label}: the image is empty (shape {array.shape})")
    if array.ndim == 2:
        array = array[:, :, None]  # gray
    elif array.ndim != 3:
        raise ValueError(
            f"{label}: an image must have 2 (HW) or 3 (HWC or CHW) dimensions, got shape {array.shape}"
        )
    else:
        fmt = options.get("input_data_format")
        if fmt is None:
            if array.shape[0] in (1, 3):  # channels first wins a tie, as in transformers
                fmt = "channels_first"
            elif array.shape[2] in (1, 3):
                fmt = "channels_last"
            else:
                raise ValueError(
                    f"{label}: no axis of size 1 or 3 (gray or RGB channels) first or last in shape {array.shape}"
                )
        if fmt == "channels_first":
            array = array.transpose(1, 2, 0)
        if array.shape[2] not in (1, 3):
            raise ValueError(f"{label}: {array.shape[2]} channels in {fmt} shape {shape}; expected 1 or 3")
    if array.dtype != np.uint8 and not np.all(np.isfinite(array)):
        raise ValueError(f"{label}: pixel values contain NaN or infinity")
    if options["do_convert_rgb"] and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)  # what PIL's L -> RGB conversion does
    return array


def _needs_scaling_for_pil(array: np.ndarray, label: str) -> bool:
    """transformers' rule for putting non-uint8 pixels into an 8-bit PIL image."""
    if np.allclose(array, array.astype(int)):
        if array.min() >= 0 and array.max() <= 255:
            return False
        raise ValueError(f"{label}: integral pixel values must lie in [0, 255], got [{array.min()}, {array.max()}]")
    if array.min() >= 0 and array.max() <= 1:
        return True
    raise ValueError(
        f"{label}: fractional pixel values must lie in [0, 1], got [{array.min()}, {array.max()}]"
    )


def _array_to_pil(array: np.ndarray) -> Image.Image:
    array = np.ascontiguousarray(array)
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


