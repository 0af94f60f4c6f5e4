"""CLIPProcessor against transformers' CLIPProcessor (4.57) as the reference.

The reference tokenizer is transformers' CLIPTokenizerFast built from vocab.json/merges.txt
written here from the gz vocabulary, independently of clip.common.tokenizer.
"""

import gzip
import json
import os
import pathlib
import warnings

import numpy as np
import pytest
from PIL import Image

from clip.common.image_processor import CLIPImageProcessor
from clip.common.processor import CLIPProcessor

transformers = pytest.importorskip("transformers")
from clip.common.tokenizer import CLIPTokenizer, CLIPTokenizerFast  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGES = ROOT / "tests" / "data" / "images"
VOCAB_GZ = ROOT / "clip" / "common" / "data" / "bpe_simple_vocab_16e6.txt.gz"
TEXTS = ["a photo of a cat", "Two dogs playing in the SNOW!!", "an astronaut riding a horse on the moon, digital art"]


def byte_symbols() -> list[str]:
    """GPT-2's byte -> printable character table, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def write_reference_vocab(directory: pathlib.Path):
    with gzip.open(VOCAB_GZ, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [line.split() for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reference_vocab")
    write_reference_vocab(directory)
    tokenizer = transformers.CLIPTokenizerFast(
        vocab_file=str(directory / "vocab.json"),
        merges_file=str(directory / "merges.txt"),
        pad_token="<|endoftext|>",
        model_max_length=77,
    )
    return transformers.CLIPProcessor(image_processor=transformers.CLIPImageProcessor(), tokenizer=tokenizer)


@pytest.fixture(scope="module")
def processor():
    return CLIPProcessor()


@pytest.fixture(scope="module")
def photos():
    out = []
    for name in ("chelsea.png", "rocket.jpg", "horse.png"):
        with Image.open(IMAGES / name) as image:
            image.load()
            out.append(image)
    return out


def as_np(value):
    if hasattr(value, "detach"):
        value = value.detach().numpy()
    return np.asarray(value)


def assert_same(got, want, keys):
    assert set(got) == set(keys) == set(want)
    for key in keys:
        if isinstance(got[key], list) and key != "pixel_values":
            assert got[key] == want[key], key
            continue
        g, w = as_np(got[key]), as_np(want[key])
        assert g.shape == w.shape, key
        if key == "pixel_values":
            assert np.abs(g.astype(np.float64) - w).max() <= 1e-6
        else:
            assert np.array_equal(g, w), key


def call_reference(reference, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reference(**kwargs)


def test_defaults(processor):
    assert isinstance(processor.tokenizer, CLIPTokenizerFast)
    assert isinstance(processor.image_processor, CLIPImageProcessor)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding": True, "return_tensors": "np"},
        {"padding": "max_length", "truncation": True, "max_length": 77, "return_tensors": "np"},
        {"padding": "max_length", "truncation": True, "max_length": 5, "return_tensors": "np"},
        {},
    ],
)
def test_text_only(processor, reference, kwargs):
    assert_same(
        processor(text=TEXTS, **kwargs),
        call_reference(reference, text=TEXTS, **kwargs),
        ["input_ids", "attention_mask"],
    )
    single = processor(text=TEXTS[0])
    assert single["input_ids"] == call_reference(reference, text=TEXTS[0])["input_ids"]


def test_images_only(processor, reference, photos):
    got = processor(images=photos, return_tensors="np")
    assert_same(got, call_reference(reference, images=photos, return_tensors="np"), ["pixel_values"])
    got = processor(images=photos[0], return_tensors="np", crop_size=100, size=120)
    want = call_reference(reference, images=photos[0], return_tensors="np", crop_size=100, size=120)
    assert got["pixel_values"].shape == (1, 3, 100, 100)
    assert_same(got, want, ["pixel_values"])


def test_text_and_images(processor, reference, photos):
    torch = pytest.importorskip("torch")
    got = processor(text=TEXTS, images=photos, return_tensors="pt", padding=True)
    want = call_reference(reference, text=TEXTS, images=photos, return_tensors="pt", padding=True)
    assert_same(got, want, ["input_ids", "attention_mask", "pixel_values"])
    assert isinstance(got.pixel_values, torch.Tensor) and isinstance(got.input_ids, torch.Tensor)
    assert got.input_ids.dtype == want["input_ids"].dtype
    assert set(processor.model_input_names) == set(reference.model_input_names)
    assert processor.model_input_names == reference.model_input_names


def test_bad_calls(processor, photos):
    with pytest.raises(ValueError, match="neither"):
        processor()
    with pytest.raises(ValueError, match="text must be a string"):
        processor(photos[0])  # transformers 4.57 takes images first; ours takes text first
    with pytest.raises(ValueError, match=r"images\[1\]"):
        processor(images=[photos[0], np.zeros((4, 4, 5), np.uint8)])


def test_decode(processor, reference):
    ids = call_reference(reference, text=TEXTS, padding=True)["input_ids"]
    for kwargs in ({}, {"skip_special_tokens": True}):
        assert processor.batch_decode(ids, **kwargs) == reference.batch_decode(ids, **kwargs)
        assert processor.decode(ids[1], **kwargs) == reference.decode(ids[1], **kwargs)


def test_save_load_both_ways(tmp_path, processor, reference, photos):
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    processor.save_pretrained(ours_dir)
    reference.save_pretrained(theirs_dir)
    assert sorted(os.listdir(ours_dir)) == sorted(os.listdir(theirs_dir))
    assert "processor_config.json" not in os.listdir(ours_dir)
    for name in ("preprocessor_config.json",):
        assert json.loads((ours_dir / name).read_text()) == json.loads((theirs_dir / name).read_text())
    assert json.loads((ours_dir / "tokenizer_config.json").read_text())["processor_class"] == "CLIPProcessor"

    inputs = {"text": TEXTS, "images": photos, "return_tensors": "np", "padding": True}
    keys = ["input_ids", "attention_mask", "pixel_values"]
    theirs_from_ours = transformers.CLIPProcessor.from_pretrained(ours_dir)
    assert_same(call_reference(theirs_from_ours, **inputs), call_reference(reference, **inputs), keys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = transformers.AutoProcessor.from_pretrained(ours_dir)
    assert type(auto).__name__ == "CLIPProcessor"

    ours_from_theirs = CLIPProcessor.from_pretrained(theirs_dir)
    assert isinstance(ours_from_theirs.tokenizer, CLIPTokenizerFast)
    assert_same(ours_from_theirs(**inputs), call_reference(reference, **inputs), keys)
    slow = CLIPProcessor.from_pretrained(ours_dir, use_fast=False, crop_size=112)
    assert isinstance(slow.tokenizer, CLIPTokenizer)
    assert slow.image_processor.crop_size == {"height": 112, "width": 112}
    assert slow(text=TEXTS[0])["input_ids"] == processor(text=TEXTS[0])["input_ids"]


def test_feature_extractor_argument_is_deprecated():
    image_processor = CLIPImageProcessor(crop_size=64)
    with pytest.warns(FutureWarning):
        processor = CLIPProcessor(feature_extractor=image_processor, tokenizer=CLIPTokenizerFast())
    assert processor.image_processor is image_processor
    with pytest.raises(TypeError, match="unexpected"):
        CLIPProcessor(image_procesor=image_processor)


def test_processor_surface_matches_transformers(processor, reference, tmp_path):
    """The calls transformers' processor test mixin makes beyond __call__ and saving."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert processor.to_dict() == reference.to_dict()
        assert json.loads(processor.to_json_string()) == json.loads(reference.to_json_string())
        processor.to_json_file(tmp_path / "ours.json")
        reference.to_json_file(tmp_path / "theirs.json")
        assert json.loads((tmp_path / "ours.json").read_text()) == json.loads((tmp_path / "theirs.json").read_text())
        assert processor.attributes == reference.attributes
        assert processor.image_processor_class == reference.image_processor_class
        assert processor.tokenizer_class == reference.tokenizer_class
        assert type(processor.feature_extractor).__name__ == type(reference.feature_extractor).__name__
        options = {
            "return_token_type_ids": True,
            "padding": True,
            "return_length": True,
            "return_special_tokens_mask": True,
        }
        assert_same(
            processor(text=TEXTS, **options),
            call_reference(reference, text=TEXTS, **options),
            ["input_ids", "attention_mask", "token_type_ids", "length", "special_tokens_mask"],
        )
    conversation = [{"role": "user", "content": "a photo of a cat"}]
    for ours_or_theirs in (processor, reference):
        with pytest.raises(ValueError, match="chat template"):
            ours_or_theirs.apply_chat_template(conversation)
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    got = processor.apply_chat_template(conversation, chat_template=template, tokenize=False)
    assert got == reference.apply_chat_template(conversation, chat_template=template, tokenize=False)
