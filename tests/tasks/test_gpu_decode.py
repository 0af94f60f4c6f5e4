"""GPU decoding's selection and fallback logic, on the CPU: with no GPU decoder the CPU path runs;
a decoder that refuses a batch or an image never fails it; the CPU path's crops are exactly the
image processor's (independent reference: CLIPImageProcessor's normalized pixels)."""

import io
import os

import numpy as np
import pytest
from PIL import Image
from task_helpers import PHOTOS

from clip.common.image_processor import CLIPImageProcessor
from clip.tasks import gpu_decode

NAMES = sorted(os.listdir(PHOTOS))  # RGB and RGBA PNGs, a grayscale PNG, a JPEG
PATHS = [os.path.join(PHOTOS, name) for name in NAMES if not name.endswith(".md")]
MARK = 7  # the fake decoder's pixel value: rows holding it came from the "GPU"


def _jpeg(path, **save):
    out = io.BytesIO()
    with Image.open(path) as image:
        image.convert(save.pop("mode", "RGB")).save(out, "JPEG", quality=90, **save)
    return out.getvalue()


def _normalized(crops, processor):
    """The processor's arithmetic on uint8 crops: float64 rescale, float32 normalize, NCHW."""
    x = (crops.astype(np.float64) * processor.rescale_factor).astype(np.float32)
    mean, std = (np.asarray(v, np.float32) for v in (processor.image_mean, processor.image_std))
    return ((x - mean) / std).transpose(0, 3, 1, 2)


class FakeDecoder:
    """Accepts batches only when `refuse_batch` is False and refuses images listed in `refused`
    (by their bytes); what it accepts comes back as crops filled with MARK."""

    name = "fake"

    def __init__(self, refused=(), refuse_batch=False):
        self.refused, self.refuse_batch, self.calls = set(refused), refuse_batch, []

    def decode(self, datas, size, crop):
        self.calls.append(len(datas))
        if (self.refuse_batch and len(datas) > 1) or any(d in self.refused for d in datas):
            raise RuntimeError("nvJPEG: unsupported")
        return [np.full((*crop, 3), MARK, np.uint8) for _ in datas]

    def stack(self, rows, crop):
        return np.stack(rows) if rows else np.zeros((0, *crop, 3), np.uint8)


@pytest.mark.parametrize("size, crop", [(224, (224, 224)), (40, (32, 48))])
def test_cpu_path_gives_the_processor_crops_exactly(size, crop):
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": crop[0], "width": crop[1]})
    crops, skipped = gpu_decode.decode_batch(PATHS, size, device="cpu", crop=crop)
    assert skipped == [] and crops.dtype == np.uint8 and crops.shape == (len(PATHS), *crop, 3)
    expected = processor(PATHS, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(_normalized(crops, processor), expected)
    # the model input from the crops, in numpy and in torch (on the device it would run on)
    np.testing.assert_array_equal(gpu_decode.pixels_from_crops(crops, processor), expected)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(gpu_decode.pixels_from_crops(torch.from_numpy(crops), processor).numpy(), expected)


def test_no_gpu_decoder_importable_means_the_cpu_path():
    # this machine has no CUDA device (and no torchvision / nvImageCodec): nothing is selected
    assert gpu_decode.select_decoder("cuda") is None
    assert gpu_decode.select_decoder("cpu") is None
    crops, skipped = gpu_decode.decode_batch(PATHS[:2], 64, device="cuda")
    assert isinstance(crops, np.ndarray) and skipped == []
    np.testing.assert_array_equal(crops, gpu_decode.decode_batch(PATHS[:2], 64, device="cpu")[0])


def test_refused_images_fall_back_one_by_one_and_corrupt_ones_are_skipped(tmp_path):
    rocket = os.path.join(PHOTOS, "rocket.jpg")
    good = [_jpeg(os.path.join(PHOTOS, n)) for n in ("chelsea.png", "coffee.png")]
    odd = _jpeg(os.path.join(PHOTOS, "astronaut.png"), progressive=True)  # the fake refuses this one
    truncated = good[0][: len(good[0]) // 2]
    missing = str(tmp_path / "missing.jpg")
    sources = [good[0], odd, rocket, truncated, good[1], missing]
    decoder = FakeDecoder(refused=[odd], refuse_batch=True)
    crops, skipped = gpu_decode.decode_batch(sources, 32, decoder=decoder)
    # the batch of the 4 complete JPEGs was refused, then each was tried alone
    assert decoder.calls == [4, 1, 1, 1, 1]
    assert [i for i, _ in skipped] == [3, 5]
    assert "truncated" in skipped[0][1] and "No such file" in skipped[1][1]
    assert crops.shape == (4, 32, 32, 3)
    from_gpu = [bool((row == MARK).all()) for row in crops]
    assert from_gpu == [True, False, True, True]  # good[0], odd (CPU), rocket, good[1]
    np.testing.assert_array_equal(crops[1], gpu_decode.cpu_crop(odd, 32, (32, 32)))


def test_files_a_gpu_decoder_must_not_take_go_straight_to_the_cpu():
    rgb = _jpeg(os.path.join(PHOTOS, "coffee.png"))
    gray = _jpeg(os.path.join(PHOTOS, "camera.png"), mode="L")
    cmyk = _jpeg(os.path.join(PHOTOS, "coffee.png"), mode="CMYK")
    with open(os.path.join(PHOTOS, "horse.png"), "rb") as f:
        png = f.read()
    assert [gpu_decode.jpeg_components(d) for d in (rgb, gray, cmyk, png)] == [3, 1, 4, None]
    assert [gpu_decode.gpu_may_decode(d) for d in (rgb, gray, cmyk, png, rgb[:-200])] == [
        True,
        True,
        False,
        False,
        False,
    ]
    decoder = FakeDecoder()
    crops, skipped = gpu_decode.decode_batch([cmyk, rgb, png, gray], 24, decoder=decoder)
    assert skipped == [] and decoder.calls == [2]  # one batch: the RGB and the gray JPEG
    assert [bool((row == MARK).all()) for row in crops] == [False, True, False, True]
    np.testing.assert_array_equal(crops[0], gpu_decode.cpu_crop(cmyk, 24, (24, 24)))
    np.testing.assert_array_equal(crops[2], gpu_decode.cpu_crop(png, 24, (24, 24)))


def test_an_empty_or_unreadable_batch():
    crops, skipped = gpu_decode.decode_batch([b"not an image"], 16, decoder=FakeDecoder())
    assert crops.shape == (0, 16, 16, 3) and skipped == [(0, "not an image PIL can read")]
    crops, skipped = gpu_decode.decode_batch([], 16, device="cpu")
    assert crops.shape == (0, 16, 16, 3) and skipped == []


def test_selection_takes_the_first_decoder_that_imports_and_decodes(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    class NotInstalled:
        def __init__(self, device):
            raise ImportError("No module named 'nvidia'")

    class NoCodec(FakeDecoder):  # imports, but its build cannot decode (a torchvision without nvJPEG)
        def __init__(self, device):
            super().__init__(refused=(), refuse_batch=False)

        def decode(self, datas, size, crop):
            raise RuntimeError("nvjpeg not available")

    class Works(FakeDecoder):
        def __init__(self, device):
            super().__init__()
            self.device = device

    monkeypatch.setattr(gpu_decode, "_DECODERS", {"a": NotInstalled, "b": NoCodec, "c": Works})
    chosen = gpu_decode.select_decoder("gpu:1", order=("a", "b", "c"))
    assert isinstance(chosen, Works) and chosen.device == "cuda:1" and chosen.calls == [1]  # the probe
    assert gpu_decode.select_decoder("cuda", order=("a", "b")) is None
    assert gpu_decode.select_decoder("cpu", order=("c",)) is None


def test_the_gpu_resize_is_within_a_few_levels_of_pil():
    """The GPU decoders' resize + crop (torch's antialiased bicubic; here on the CPU, after PIL's
    decoding) against the exact CPU path: the same geometry, pixel values a few levels apart."""
    pytest.importorskip("torch")
    datas = [_jpeg(path) for path in PATHS]
    exact, _ = gpu_decode.decode_batch(datas, 224, device="cpu")
    resized, skipped = gpu_decode.decode_batch(datas, 224, decoder=gpu_decode.PillowTorchDecoder())
    diff = np.abs(resized.numpy().astype(np.int16) - exact.astype(np.int16))
    assert skipped == [] and resized.shape == exact.shape
    # measured: mean 0.04-0.19 levels per photo, max 2-6; a shifted crop or wrong size gives tens
    assert diff.mean() < 0.3 and diff.max() <= 10
