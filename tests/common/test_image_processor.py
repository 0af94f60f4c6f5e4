"""CLIPImageProcessor against transformers' CLIPImageProcessor (4.57) as the reference."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from clip.common.image_processor import CLIPFeatureExtractor, CLIPImageProcessor

transformers = pytest.importorskip("transformers")

IMAGES = pathlib.Path(__file__).resolve().parents[1] / "data" / "images"
PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "horse.png", "camera.png"]
TOL = 1e-6


@pytest.fixture(scope="module")
def photos():
    out = {}
    for name in PHOTOS:
        with Image.open(IMAGES / name) as image:
            image.load()
            out[name] = image
    return out


@pytest.fixture(scope="module")
def rgb(photos):
    return photos["chelsea.png"]


@pytest.fixture(scope="module")
def reference():
    return transformers.CLIPImageProcessor()


def expected(reference, images, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(reference(images, return_tensors="np", **kwargs)["pixel_values"])


def ours(images, **kwargs):
    return CLIPImageProcessor()(images, return_tensors="np", **kwargs)["pixel_values"]


def assert_close(got, want):
    assert got.dtype == np.float32
    assert got.shape == want.shape
    assert np.abs(got.astype(np.float64) - want).max() <= TOL


# ------------------------------------------------------------------------ values


def test_import_needs_no_framework():
    code = (
        "import sys, clip.common.image_processor\n"
        "bad = [m for m in ('torch', 'tensorflow', 'jax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", PHOTOS)
def test_photos_match_transformers(photos, reference, name):
    assert_close(ours(photos[name]), expected(reference, photos[name]))


def test_batch_of_photos_matches_transformers(photos, reference):
    images = list(photos.values())
    got = ours(images)
    assert got.shape == (len(images), 3, 224, 224)
    assert_close(got, expected(reference, images))
    single = CLIPImageProcessor()(images, return_tensors="np", num_threads=1)["pixel_values"]
    assert np.array_equal(got, single)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_modes_match_transformers(rgb, reference, mode):
    if mode == "PA":
        image = rgb.convert("RGBA").convert("PA")
    elif mode == "I;16":
        image = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
        assert image.mode == "I;16"
    else:
        image = rgb.convert(mode)
    assert image.mode == mode
    assert_close(ours(image), expected(reference, image))


@pytest.mark.parametrize("size", [(1, 1), (1, 1000), (1000, 1), (5000, 3), (3, 5000)])
def test_edge_sizes_match_transformers(rgb, reference, size):
    image = rgb.resize(size)
    # transformers guesses the channel axis from the array shape, which fails for images one
    # or three pixels high; tell it.
    want = expected(reference, image, input_data_format="channels_last")
    assert_close(ours(image), want)


def test_numpy_and_tensor_inputs(rgb, reference):
    torch = pytest.importorskip("torch")
    hwc = np.array(rgb)
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    want = expected(reference, rgb)
    for image in (hwc, chw, torch.from_numpy(chw), torch.from_numpy(hwc)):
        assert_close(ours(image), want)
        assert_close(ours(image), expected(reference, image))
    # A 4-D array is a batch; a list may hold batches or nest one level.
    batch = np.stack([hwc, hwc])
    assert_close(ours(batch), expected(reference, batch))
    assert_close(ours([[rgb], [rgb, rgb]]), np.concatenate([want] * 3))


@pytest.mark.parametrize("do_resize", [True, False])
@pytest.mark.parametrize("do_rescale", [True, False])
def test_float_input_matches_transformers(rgb, reference, do_resize, do_rescale):
    scaled = np.asarray(rgb).astype(np.float32) / 255
    kwargs = {"do_resize": do_resize, "do_rescale": do_rescale}
    want = expected(reference, scaled, **kwargs)
    if do_rescale:
        # transformers rescales [0, 1] floats again (and warns); so do we.
        with pytest.warns(UserWarning, match="do_rescale=False"):
            got = ours(scaled, **kwargs)
    else:
        got = ours(scaled, **kwargs)
    assert_close(got, want)
    integral = np.asarray(rgb).astype(np.float64)
    # Unscaled float64 that skips the 8-bit resize stays float64 in transformers (values up to
    # ~800); ours is always float32, so compare with the float32 of theirs.
    want = expected(reference, integral, **kwargs).astype(np.float32)
    assert_close(ours(integral, **kwargs), want)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 100},
        {"size": {"height": 100, "width": 300}, "crop_size": 64},
        {"size": {"shortest_edge": 100}},  # smaller than the crop: zero padding
        {"crop_size": {"height": 500, "width": 120}},
        {"do_resize": False},
        {"do_normalize": False},
        {"do_rescale": False},
        {"image_mean": 0.5, "image_std": [0.2, 0.3, 0.4], "rescale_factor": 0.5},
        {"resample": Image.Resampling.BILINEAR},
        {"resample": Image.Resampling.LANCZOS},
    ],
)
def test_options_match_transformers(rgb, reference, kwargs):
    assert_close(ours(rgb, **kwargs), expected(reference, rgb, **kwargs))
    stored = CLIPImageProcessor(**kwargs)(rgb, return_tensors="np")["pixel_values"]
    assert_close(stored, expected(transformers.CLIPImageProcessor(**kwargs), rgb))


def test_return_types(photos, reference):
    torch = pytest.importorskip("torch")
    images = [photos["chelsea.png"], photos["rocket.jpg"]]
    listed = CLIPImageProcessor()(images)["pixel_values"]
    theirs = reference(images)["pixel_values"]
    assert isinstance(listed, list) and isinstance(theirs, list) and len(listed) == 2
    for got, want in zip(listed, theirs):
        assert_close(got, want)
    pt = CLIPImageProcessor()(images, return_tensors="pt").pixel_values
    assert isinstance(pt, torch.Tensor) and pt.dtype == torch.float32 and pt.shape == (2, 3, 224, 224)
    last = CLIPImageProcessor()(images, return_tensors="np", data_format="channels_last")["pixel_values"]
    assert_close(last, expected(reference, images, data_format="channels_last"))
    # Without a crop the sizes differ: a list is fine, a stacked tensor is not.
    ragged = CLIPImageProcessor(do_center_crop=False)(images)["pixel_values"]
    assert [a.shape for a in ragged] == [a.shape for a in reference(images, do_center_crop=False)["pixel_values"]]
    with pytest.raises(ValueError, match="different shapes"):
        CLIPImageProcessor(do_center_crop=False)(images, return_tensors="np")


def test_paths_are_opened(photos):
    path = IMAGES / "rocket.jpg"
    want = ours(photos["rocket.jpg"])
    assert np.array_equal(ours(str(path)), want)
    assert np.array_equal(ours([path, str(path)]), np.concatenate([want, want]))


def test_repeated_lazy_image_is_safe():
    lazy = Image.open(IMAGES / "coffee.png")
    got = ours([lazy] * 4)
    assert all(np.array_equal(got[0], g) for g in got[1:])


def test_feature_extractor_is_deprecated(rgb):
    with pytest.warns(FutureWarning, match="deprecated"):
        extractor = CLIPFeatureExtractor()
    assert np.array_equal(extractor(rgb, return_tensors="np")["pixel_values"], ours(rgb))


# ------------------------------------------------------------------------ bad input


def test_corrupt_and_truncated_files(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((IMAGES / "rocket.jpg").read_bytes()[:5000])
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    good = IMAGES / "chelsea.png"
    for bad in (corrupt, truncated, not_image):
        with pytest.raises(ValueError, match=r"images\[1\]: cannot read the image"):
            ours([good, bad])
        # A PIL image opened lazily fails on decode, with the same kind of message.
        with pytest.raises(ValueError, match=r"images\[1\]"):
            ours([good, Image.open(bad) if bad is truncated else str(bad)])
    with pytest.raises(ValueError, match=r"images\[0\]: .*missing.png.* not an existing image file"):
        ours([tmp_path / "missing.png"])


def test_decompression_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # astronaut.png has 262,144 pixels
    with pytest.raises(ValueError, match=r"images\[0\]: cannot read the image \(DecompressionBombError"):
        ours([IMAGES / "astronaut.png"])


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 10, 3), np.uint8), r"empty \(shape \(0, 10, 3\)\)"),
        (np.zeros((10, 0), np.uint8), "empty"),
        (np.zeros((8, 8, 5), np.uint8), "no axis of size 1 or 3"),
        (np.zeros((8, 8, 4), np.uint8), "no axis of size 1 or 3"),
        (np.zeros(10, np.uint8), "must have 2 .* or 3 .* dimensions, got shape \\(10,\\)"),
        (np.zeros((1, 2, 3, 4, 5), np.uint8), "dimensions, got shape"),
        (np.full((8, 8, 3), 2.5, np.float32), r"fractional pixel values must lie in \[0, 1\]"),
        (np.full((8, 8, 3), 300.0, np.float32), r"integral pixel values must lie in \[0, 255\]"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8, 3), np.complex64), "real numbers"),
        ("not a path", "not an existing image file"),
        (42, "unsupported type int"),
    ],
)
def test_bad_arrays_name_the_input(rgb, image, message):
    with pytest.raises(ValueError, match=r"images\[1\]: .*" + message):
        ours([rgb, image])


def test_bad_calls():
    processor = CLIPImageProcessor()
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="empty"):
        processor([])
    with pytest.raises(ValueError, match="None"):
        processor(None)
    with pytest.raises(ValueError, match="unknown image processor option"):
        processor(image, do_resise=False)
    with pytest.raises(ValueError, match="return_tensors"):
        processor(image, return_tensors="torch")
    with pytest.raises(ValueError, match="3 values"):
        processor(np.zeros((8, 8, 1), np.uint8), do_convert_rgb=False)
    with pytest.raises(ValueError, match="shortest_edge"):
        CLIPImageProcessor(size={"longest_edge": 3})
    with pytest.raises(ValueError, match="positive int"):
        CLIPImageProcessor(crop_size=0)
    with pytest.raises(ValueError, match="resample"):
        CLIPImageProcessor(resample=9)
    with pytest.raises(ValueError, match="num_threads"):
        processor(image, num_threads=0)


def test_gray_arrays_become_rgb(rgb):
    gray = np.asarray(rgb.convert("L"))
    want = ours(rgb.convert("L"))
    assert np.array_equal(ours(gray), want)
    assert np.array_equal(ours(gray[:, :, None]), want)


# ------------------------------------------------------------------------ config files


def test_save_matches_transformers_and_loads_both_ways(tmp_path, rgb):
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    kwargs = {"size": {"shortest_edge": 256}, "crop_size": {"height": 240, "width": 240}, "image_mean": [0.5] * 3}
    processor = CLIPImageProcessor(**kwargs)
    assert processor.save_pretrained(ours_dir) == [str(ours_dir / "preprocessor_config.json")]
    transformers.CLIPImageProcessor(**kwargs).save_pretrained(theirs_dir)
    saved = json.loads((ours_dir / "preprocessor_config.json").read_text())
    assert saved == json.loads((theirs_dir / "preprocessor_config.json").read_text())
    assert json.loads(processor.to_json_string()) == saved == processor.to_dict()
    assert not [p for p in os.listdir(ours_dir) if p.endswith(".tmp")]

    theirs_loaded = transformers.CLIPImageProcessor.from_pretrained(ours_dir)
    ours_loaded = CLIPImageProcessor.from_pretrained(theirs_dir)
    assert ours_loaded == processor
    assert_close(ours_loaded(rgb, return_tensors="np")["pixel_values"], expected(theirs_loaded, rgb))
    auto = transformers.AutoImageProcessor.from_pretrained(ours_dir, use_fast=False)
    assert type(auto).__name__ == "CLIPImageProcessor"


def test_legacy_config_and_unknown_keys(tmp_path, rgb):
    legacy = {
        "crop_size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "size": 224,
        "processor_class": "CLIPProcessor",
        "some_future_option": {"x": 1},
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(legacy))
    processor = CLIPImageProcessor.from_pretrained(tmp_path)
    assert processor.size == {"shortest_edge": 224}
    assert processor.crop_size == {"height": 224, "width": 224}
    reference = transformers.CLIPImageProcessor.from_pretrained(tmp_path)
    assert_close(processor(rgb, return_tensors="np")["pixel_values"], expected(reference, rgb))

    out = tmp_path / "out"
    processor.save_pretrained(out)
    saved = json.loads((out / "preprocessor_config.json").read_text())
    assert saved["some_future_option"] == {"x": 1}
    assert saved["processor_class"] == "CLIPProcessor"
    assert saved["image_processor_type"] == "CLIPImageProcessor"
    assert "feature_extractor_type" not in saved
    assert CLIPImageProcessor.from_pretrained(out) == processor
    # Keyword arguments override what the file says; the JSON file itself may be given.
    assert CLIPImageProcessor.from_pretrained(out, crop_size=100).crop_size == {"height": 100, "width": 100}
    assert CLIPImageProcessor.from_pretrained(out / "preprocessor_config.json") == processor


def test_bad_config_files(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CLIPImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_resize": "yes"}))
    with pytest.raises(ValueError, match="do_resize must be True or False"):
        CLIPImageProcessor.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="no preprocessor_config.json"):
        CLIPImageProcessor.from_pretrained(tmp_path / "..")


# ------------------------------------------------------------------------ benchmark


def test_benchmark_rows_quick():
    path = pathlib.Path(__file__).resolve().parents[2] / "bench" / "bench_image_processor.py"
    spec = importlib.util.spec_from_file_location("bench_image_processor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.rows(quick=True)
    assert rows and rows[0]["name"] == "image processor, 10 photos"
    for row in rows:
        assert row["max_abs_diff"] <= TOL
        assert row["ours_s"] > 0 and row["baseline_s"] > 0
