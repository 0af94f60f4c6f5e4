"""CLIPImageProcessor's transformers surface, exercised the way transformers' image-processing test
mixin exercises it, side by side with transformers 4.57 (equal results to 1e-5, or the same
exception type), plus hostile pixel values and hypothesis fuzzing of inputs.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings

import numpy as np
import pytest
from PIL import Image

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from clip.common.image_processor import CLIPImageProcessor  # noqa: E402

# The settings transformers' CLIP image-processing tests use.
TESTER = {
    "do_resize": True,
    "size": {"shortest_edge": 20},
    "do_center_crop": True,
    "crop_size": {"height": 18, "width": 18},
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
}
RNG = np.random.default_rng(0)
U8 = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)
F01 = (U8.astype(np.float32) / 255).astype(np.float32) + np.float32(1e-4)
F255 = U8.astype(np.float64)
CHW = np.ascontiguousarray(U8.transpose(2, 0, 1))
HWC4 = RNG.integers(0, 256, (40, 50, 4), dtype=np.uint8)
HWC2 = RNG.integers(0, 256, (40, 50, 2), dtype=np.uint8)
UNEQUAL = [RNG.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((30, 40), (25, 60), (49, 21))]


def norm(value):
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.kind, value.shape, value.astype(np.float64))
    if isinstance(value, Image.Image):
        return ("pil", value.mode, value.size, np.asarray(value).tolist())
    if isinstance(value, dict) or (hasattr(value, "keys") and hasattr(value, "items")):
        return {k: norm(x) for k, x in dict(value.items()).items()}
    if isinstance(value, (list, tuple)):
        return [norm(x) for x in value]
    return value


def same(a, b) -> bool:
    if isinstance(a, tuple) and a and a[0] == "array":
        return (
            isinstance(b, tuple)
            and b[0] == "array"
            and a[1:3] == b[1:3]
            and bool(np.allclose(a[3], b[3], rtol=0, atol=1e-5))
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def outcome(fn, processor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ("ok", norm(fn(processor)))
        except Exception as err:  # noqa: BLE001 - the exception type is the result compared
            # the builtin a user's `except` sees: ours are clip.errors subclasses of the one transformers raises
            return ("error", next(c for c in type(err).__mro__ if c.__module__ == "builtins").__name__)


def _with(p, **attributes):
    """A copy of the processor with attributes set after construction (as a user may)."""
    import copy

    changed = copy.deepcopy(p)
    for name, value in attributes.items():
        setattr(changed, name, value)
    return changed


def _round_trip_json(p):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "image_processor.json")
        p.to_json_file(path)
        return type(p).from_json_file(path).to_dict()


def _saved_and_reloaded(p):
    with tempfile.TemporaryDirectory() as directory:
        p.save_pretrained(directory)
        names = sorted(os.listdir(directory))
        back = transformers.AutoImageProcessor.from_pretrained(directory, use_fast=False)
        return names, type(back).__name__, back(U8, return_tensors="np")["pixel_values"]


def _properties(p):
    names = [
        "do_resize",
        "size",
        "do_center_crop",
        "center_crop",
        "do_normalize",
        "image_mean",
        "image_std",
        "do_convert_rgb",
        "resize",
        "rescale",
        "normalize",
        "to_dict",
        "to_json_string",
        "to_json_file",
        "from_dict",
        "from_json_file",
        "save_pretrained",
        "from_pretrained",
        "preprocess",
        "is_fast",
        "model_input_names",
    ]
    return [hasattr(p, n) for n in names]


def _config_dict(p):
    data = p.to_dict()
    return {k: v for k, v in data.items() if not k.startswith("_")}


CALLS = {
    "properties": _properties,
    "is_fast": lambda p: p.is_fast,
    "model_input_names": lambda p: p.model_input_names,
    "to_dict": _config_dict,
    "to_json_string": lambda p: {k: v for k, v in json.loads(p.to_json_string()).items() if not k.startswith("_")},
    "to_json_file_round_trip": lambda p: {k: v for k, v in _round_trip_json(p).items() if not k.startswith("_")},
    "from_dict": lambda p: _config_dict(type(p).from_dict(TESTER)),
    "from_dict_with_kwargs": lambda p: _config_dict(type(p).from_dict(TESTER, size=42, crop_size=84)),
    "from_dict_unused_kwargs": lambda p: type(p).from_dict(TESTER, return_unused_kwargs=True, foo=1)[1],
    "save_pretrained_auto": _saved_and_reloaded,
    "call_pil": lambda p: p(Image.fromarray(U8), return_tensors="pt")["pixel_values"],
    "call_pil_batch": lambda p: p([Image.fromarray(x) for x in UNEQUAL], return_tensors="pt")["pixel_values"],
    "call_numpy": lambda p: p(U8, return_tensors="np")["pixel_values"],
    "call_numpy_batch": lambda p: p(UNEQUAL, return_tensors="np")["pixel_values"],
    "call_pytorch": lambda p: p(torch.from_numpy(CHW), return_tensors="pt")["pixel_values"],
    "call_pytorch_batch": lambda p: p(
        [torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))) for x in UNEQUAL], return_tensors="pt"
    )["pixel_values"],
    "call_numpy_4_channels": lambda p: p(
        HWC4, return_tensors="pt", input_data_format="channels_last", image_mean=0, image_std=1
    )["pixel_values"],
    "call_numpy_4_channels_batch": lambda p: p(
        [x for x in np.random.default_rng(1).integers(0, 256, (2, 4, 30, 40), dtype=np.uint8)],
        return_tensors="pt",
        input_data_format="channels_first",
        image_mean=0,
        image_std=1,
    )["pixel_values"],
    "call_4_channels_no_format": lambda p: p(HWC4, return_tensors="np"),
    "call_4_channels_3_means": lambda p: p(HWC4, return_tensors="np", input_data_format="channels_last"),
    "call_2_channels": lambda p: p(
        HWC2, return_tensors="np", input_data_format="channels_last", image_mean=0.5, image_std=0.5
    ),
    "call_4_channels_float": lambda p: p(
        np.random.default_rng(2).random((30, 40, 4)).astype(np.float32),
        return_tensors="np",
        input_data_format="channels_last",
        image_mean=0,
        image_std=1,
        do_rescale=False,
    ),
    "data_format_last": lambda p: p(U8, return_tensors="np", data_format="channels_last")["pixel_values"],
    "return_list": lambda p: p(UNEQUAL)["pixel_values"],
    "rescale_factor_none": lambda p: type(p)(rescale_factor=None)(U8),
    "image_mean_none": lambda p: type(p)(image_mean=None, do_normalize=True)(U8, return_tensors="np")["pixel_values"],
    "validate_mean_none_unused": lambda p: _with(p, image_mean=None)(U8, do_normalize=False, return_tensors="np"),
    "validate_mean_none": lambda p: _with(p, image_mean=None)(U8),
    "validate_std_none": lambda p: _with(p, image_std=None)(U8),
    "validate_crop_none": lambda p: _with(p, crop_size=None)(U8),
    "validate_crop_none_unused": lambda p: _with(p, crop_size=None)(U8, do_center_crop=False, return_tensors="np"),
    "validate_size_none": lambda p: _with(p, size=None)(U8),
    "validate_size_none_unused": lambda p: _with(p, size=None)(U8, do_resize=False, return_tensors="np"),
    "validate_resample_none": lambda p: _with(p, resample=None)(U8),
    "validate_factor_none_unused": lambda p: _with(p, rescale_factor=None)(U8, do_rescale=False, return_tensors="np"),
    "size_wrong_keys": lambda p: p(U8, size={"longest_edge": 5}),
    "bad_return_tensors": lambda p: p(U8, return_tensors="torch"),
    "resize_u8": lambda p: p.resize(U8, size={"shortest_edge": 30}),
    "resize_f01": lambda p: p.resize(F01, size={"shortest_edge": 30}),
    "resize_f255": lambda p: p.resize(F255, size={"height": 20, "width": 25}),
    "resize_chw_to_last": lambda p: p.resize(CHW, size={"shortest_edge": 30}, data_format="channels_last"),
    "resize_bilinear": lambda p: p.resize(U8, size={"shortest_edge": 33}, resample=Image.Resampling.BILINEAR),
    "resize_int_size": lambda p: p.resize(U8, size=30),
    "center_crop": lambda p: p.center_crop(U8, size={"height": 30, "width": 60}),
    "center_crop_chw": lambda p: p.center_crop(CHW, size={"height": 10, "width": 12}),
    "center_crop_f64": lambda p: p.center_crop(F255, size={"height": 10, "width": 12}),
    "rescale_u8": lambda p: p.rescale(U8, 1 / 255),
    "rescale_chw": lambda p: p.rescale(CHW, 0.5),
    "normalize_u8": lambda p: p.normalize(U8, mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.4]),
    "normalize_f64": lambda p: p.normalize(F255, mean=0.5, std=0.2),
    "normalize_chw_to_last": lambda p: p.normalize(CHW, mean=0.5, std=0.2, data_format="channels_last"),
    "normalize_wrong_mean": lambda p: p.normalize(U8, mean=[0.5, 0.5], std=0.2),
}


@pytest.fixture(scope="module")
def pair():
    return CLIPImageProcessor(**TESTER), transformers.CLIPImageProcessor(**TESTER)


@pytest.mark.parametrize("name", list(CALLS))
def test_call_matches_transformers(pair, name):
    ours, ref = pair
    got, want = outcome(CALLS[name], ours), outcome(CALLS[name], ref)
    assert got[0] == want[0], (got, want)
    assert same(got[1], want[1]), (got, want)


def test_convert_rgb_matches_transformers():
    from transformers.image_transforms import convert_to_rgb

    for mode in ("L", "RGBA", "P", "CMYK", "RGB"):
        image = Image.fromarray(U8).convert(mode)
        assert same(norm(CLIPImageProcessor().convert_rgb(image)), norm(convert_to_rgb(image)))
    assert CLIPImageProcessor().convert_rgb(U8) is U8


def test_we_load_transformers_saved_processor(tmp_path):
    reference = transformers.CLIPImageProcessor(**TESTER)
    reference.save_pretrained(tmp_path)
    ours = CLIPImageProcessor.from_pretrained(tmp_path)
    assert ours.to_dict()["image_processor_type"] == "CLIPImageProcessor"
    assert same(
        norm(ours(U8, return_tensors="np")["pixel_values"]), norm(reference(U8, return_tensors="np")["pixel_values"])
    )


# ---------------------------------------------------------------------------------------------
# Pixel values outside the documented range


def test_float_values_far_outside_the_range_warn():
    processor = CLIPImageProcessor()
    huge = np.full((8, 8, 3), 1e30, dtype=np.float32)
    with pytest.warns(UserWarning, match=r"far outside the expected range: images\[1\]"):
        processor([U8, huge], do_resize=False, do_center_crop=False, do_rescale=False)
    with pytest.warns(UserWarning, match="far outside"):
        processor(F255 * 100, do_resize=False, do_rescale=True)  # 0..25500 where 0..255 is expected
    with pytest.warns(UserWarning, match="far outside"):
        processor(F255, do_resize=False, do_rescale=False)  # 0..255 where 0..1 is expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor(F01, do_resize=False, do_rescale=False)  # in range: silent
        processor(F255, do_resize=False)  # in range: silent
        processor(F255 * 3, do_resize=False, do_rescale=False, do_normalize=False)  # used as given


def test_non_finite_pixels_raise_naming_the_image():
    processor = CLIPImageProcessor()
    for bad in (np.nan, np.inf, -np.inf):
        image = F01.copy()
        image[3, 4, 1] = bad
        for kwargs in ({}, {"do_resize": False}):
            with pytest.raises(ValueError, match=r"images\[2\]: pixel values contain NaN or infinity"):
                processor([U8, U8, image], **kwargs)
    # Finite input whose normalization overflows float32 is refused too, not returned as inf.
    with pytest.raises(ValueError, match=r"images: pixel values overflow float32"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processor(np.full((4, 4, 3), 3e38, dtype=np.float32), do_resize=False, do_center_crop=False, do_rescale=False)


# ---------------------------------------------------------------------------------------------
# Fuzzing


@st.composite
def images(draw):
    kind = draw(st.sampled_from(["uint8", "float32", "pil"]))
    height, width = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if kind == "pil":
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "LA", "1", "CMYK", "I;16", "F"]))
        base = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        return base.convert(mode) if mode not in ("I;16", "F") else base.convert("L").convert(mode), {}
    layout = draw(st.sampled_from(["HW", "HWC1", "HWC3", "HWC4", "CHW3", "CHW1"]))
    channels = {"HW": None, "HWC1": 1, "HWC3": 3, "HWC4": 4, "CHW3": 3, "CHW1": 1}[layout]
    shape = (
        (height, width)
        if channels is None
        else (channels, height, width)
        if layout.startswith("CHW")
        else (height, width, channels)
    )
    if kind == "uint8":
        array = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        array = draw(
            st.sampled_from([rng.random(shape), rng.integers(0, 256, shape) * 1.0, rng.normal(0, 100, shape)])
        ).astype(np.float32)
    options = {}
    if layout != "HW" and draw(st.booleans()):
        options["input_data_format"] = "channels_first" if layout.startswith("CHW") else "channels_last"
    if layout == "HWC4" and "input_data_format" in options:
        options.update(image_mean=0.5, image_std=0.25)
    return array, options


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(image=images(), do_resize=st.booleans(), do_rescale=st.booleans())
def test_fuzzed_images_match_transformers(image, do_resize, do_rescale):
    """Random arrays, modes and sizes: transformers' values to 1e-5, or the same exception type."""
    array, options = image
    kwargs = {"do_resize": do_resize, "do_rescale": do_rescale, "return_tensors": "np", **options}
    got = outcome(lambda p: p(array, **kwargs)["pixel_values"], CLIPImageProcessor())
    reference_input, reference_kwargs = array, kwargs
    if isinstance(array, Image.Image):
        # A PIL image is HWC; transformers guesses the axis from the shape and fails for images 1 or 3
        # pixels high, so it is told (as test_image_processor.py's edge sizes do).
        reference_kwargs = {**kwargs, "input_data_format": "channels_last"}
    gray = isinstance(array, np.ndarray) and (array.ndim == 2 or 1 in (array.shape[0], array.shape[-1]))
    if gray:
        # transformers refuses one-channel arrays (2-D: "Could not make a flat list of images"; with a
        # channel axis, the 3 means do not fit); ours read them as gray and make it RGB as PIL's L ->
        # RGB does, so the reference gets the same pixels as 3 channels.
        hwc = array[:, :, None] if array.ndim == 2 else array
        if array.ndim == 3 and (
            kwargs.get("input_data_format") == "channels_first"
            or (kwargs.get("input_data_format") is None and array.shape[0] == 1)
        ):
            hwc = array.transpose(1, 2, 0)
        if hwc.shape[2] == 1:
            reference_input = np.repeat(hwc, 3, axis=2)
            reference_kwargs = {**kwargs, "input_data_format": "channels_last"}
    want = outcome(lambda p: p(reference_input, **reference_kwargs)["pixel_values"], transformers.CLIPImageProcessor())
    if want[0] == "ok" and not np.all(np.isfinite(want[1][3])):
        # transformers returns inf/nan where float32 overflows; ours refuse with a clear error
        assert got == ("error", "ValueError")
        return
    assert got[0] == want[0], (got, want)
    if got[0] == "ok":
        assert same(got[1], want[1])
    else:
        assert got[1] == want[1]
