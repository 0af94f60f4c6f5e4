"""Every format -> canonical -> every other format -> back, bit for bit; the outputs load in transformers.

The starting point is transformers' own TF fixture (tests/fixtures/transformers_tf, written by
tools/make_tf_fixture.py) with the outputs transformers computed on it (reference.npz).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(min(2, torch.get_num_threads()))

from clip import convert, convert_cli  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside Keras
from clip.common import io  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TF_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "transformers_tf")
FLAX_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "transformers_flax")
FILE_TARGETS = {
    "keras": "model.keras",
    "flax-params": "params.msgpack",
    "openai": "model.pt",
    "open_clip": "open_clip_model.pt",
}
SOURCE_OF = {
    "canonical": "transformers-pt",
    "pytorch-bin": "transformers-pt",
}  # target name -> the source format reading it


def target_path(directory, fmt):
    """Where a format is written: a directory, or a file in a directory with config.json (flax-params needs it)."""
    return (
        os.path.join(directory, fmt)
        if fmt not in FILE_TARGETS
        else os.path.join(directory, fmt + "_file", FILE_TARGETS[fmt])
    )


def overrides(fmt):
    """OpenAI's layout has no place for the number of heads: the fixture's (not width // 64) are given."""
    if fmt not in ("openai", "open_clip"):
        return None
    with open(os.path.join(TF_FIXTURE, "config.json")) as f:
        config = json.load(f)
    return {
        f"{tower}.num_attention_heads": config[tower]["num_attention_heads"]
        for tower in ("text_config", "vision_config")
    }


def read(path, fmt):
    return convert.load(path, SOURCE_OF.get(fmt, fmt), config_overrides=overrides(fmt)).arrays


def write(src, directory, fmt, config_dir, src_fmt=None):
    dst = target_path(directory, fmt)
    if fmt in FILE_TARGETS:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(config_dir, "config.json"), os.path.join(os.path.dirname(dst), "config.json"))
    convert.convert(
        src,
        dst,
        from_format=SOURCE_OF.get(src_fmt, src_fmt),
        to_format=fmt,
        processor=False,
        config_overrides=overrides(src_fmt),
    )
    return dst


def assert_same_arrays(a: dict, b: dict):
    assert list(a) == list(b)
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name


@pytest.fixture(scope="module")
def canonical(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("canonical") / "model")
    convert.convert(TF_FIXTURE, out)
    return out


@pytest.fixture(scope="module")
def every_format(canonical, tmp_path_factory):
    """{format: path} of the canonical checkpoint written in every target format."""
    directory = str(tmp_path_factory.mktemp("formats"))
    return {fmt: write(canonical, directory, fmt, canonical) for fmt in convert.TARGET_FORMATS}


def test_canonical_directory(canonical):
    names = sorted(os.listdir(canonical))
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= set(names)
    assert io.read_safetensors_metadata(os.path.join(canonical, "model.safetensors")) == {"format": "pt"}
    with open(os.path.join(canonical, "config.json")) as f:
        assert json.load(f)["architectures"] == ["CLIPModel"]


@pytest.mark.parametrize("fmt", convert.TARGET_FORMATS)
def test_detected(every_format, fmt):
    expected = SOURCE_OF.get(fmt, fmt)
    assert convert.detect_format(every_format[fmt]) == expected


@pytest.mark.parametrize("fmt", convert.TARGET_FORMATS)
def test_round_trip_through_every_format_is_exact(canonical, every_format, fmt, tmp_path):
    """canonical -> fmt -> canonical, and fmt -> every other format -> read back: bitwise float32."""
    reference = convert.load(canonical).arrays
    source = every_format[fmt]
    assert_same_arrays(read(source, fmt), reference)
    for other in convert.TARGET_FORMATS:
        if other == fmt or "keras" in (fmt, other) and other != "canonical":
            continue  # keras (a TF model build per write) is covered from and to the others through canonical
        dst = write(source, str(tmp_path), other, canonical, src_fmt=fmt)
        assert_same_arrays(read(dst, other), reference)


def _reference():
    ref = np.load(os.path.join(TF_FIXTURE, "reference.npz"))
    return ref, dict(
        input_ids=ref["input_ids"].astype(np.int64),
        attention_mask=ref["attention_mask"].astype(np.int64),
        pixel_values=ref["pixel_values"],
    )


@pytest.mark.parametrize("fmt", ["canonical", "pytorch-bin"])
def test_transformers_pytorch_loads(every_format, fmt):
    import transformers

    ref, inputs = _reference()
    model, info = transformers.CLIPModel.from_pretrained(every_format[fmt], output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    np.testing.assert_allclose(out.logits_per_image.numpy(), ref["logits_per_image"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.text_embeds.numpy(), ref["text_embeds"], atol=1e-5, rtol=0)


def test_transformers_tf_loads(every_format):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import transformers

    ref, inputs = _reference()
    model, info = transformers.TFCLIPModel.from_pretrained(every_format["transformers-tf"], output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    out = model(**inputs)
    np.testing.assert_allclose(out.logits_per_image.numpy(), ref["logits_per_image"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.image_embeds.numpy(), ref["image_embeds"], atol=1e-5, rtol=0)


def test_transformers_flax_loads(every_format):
    import transformers

    ref, inputs = _reference()
    import jax

    # _do_init=False: no random init (slow, eager); the call jitted, as eager JAX is slow on tiny shapes
    model, params = transformers.FlaxCLIPModel.from_pretrained(every_format["transformers-flax"], _do_init=False)
    run = jax.jit(
        lambda p: model(
            input_ids=inputs["input_ids"],
            pixel_values=inputs["pixel_values"],
            attention_mask=inputs["attention_mask"],
            params=p,
        )
    )
    out = run(params)
    np.testing.assert_allclose(np.asarray(out.logits_per_image), ref["logits_per_image"], atol=1e-5, rtol=0)


def test_all_three_backends_load_the_converted_directory(canonical):
    import clip.flax
    import clip.pt
    import clip.tf

    ref, inputs = _reference()
    with torch.no_grad():
        pt_logits = clip.pt.CLIPModel.from_pretrained(canonical)(
            **{k: torch.from_numpy(v) for k, v in inputs.items()}
        ).logits_per_image.numpy()
    tf_logits = clip.tf.TFCLIPModel.from_pretrained(canonical)(**inputs).logits_per_image.numpy()
    flax_logits = np.asarray(
        clip.flax.FlaxCLIPModel.from_pretrained(canonical)(
            inputs["input_ids"], inputs["pixel_values"], attention_mask=inputs["attention_mask"]
        ).logits_per_image
    )
    for logits in (pt_logits, tf_logits, flax_logits):
        np.testing.assert_allclose(logits, ref["logits_per_image"], atol=1e-5, rtol=0)


def test_processor_files_load(canonical):
    import transformers

    from clip.common.processor import CLIPProcessor

    ours = CLIPProcessor.from_pretrained(canonical)
    theirs = transformers.CLIPProcessor.from_pretrained(canonical)
    assert ours(text=["a photo of a cat"])["input_ids"] == theirs(text=["a photo of a cat"])["input_ids"]
    assert ours.image_processor.crop_size == {"height": 8, "width": 8}  # the fixture's image size


def test_flax_fixture_and_sharded_safetensors(tmp_path):
    import transformers

    # transformers' Flax file -> canonical is exact
    convert.convert(FLAX_FIXTURE, tmp_path / "from_flax")
    from flax import serialization

    from clip.common.formats import transformers_flax

    with open(os.path.join(FLAX_FIXTURE, "flax_model.msgpack"), "rb") as f:
        direct = transformers_flax.to_canonical(serialization.msgpack_restore(f.read()))
    converted = convert.load(tmp_path / "from_flax").arrays
    assert sorted(direct) == sorted(converted) and all(np.array_equal(direct[k], converted[k]) for k in direct)
    # transformers' sharded safetensors and sharded .bin -> canonical
    model = transformers.CLIPModel.from_pretrained(tmp_path / "from_flax")
    for safe in (True, False):
        sharded = tmp_path / f"sharded_{safe}"
        model.save_pretrained(sharded, max_shard_size="60KB", safe_serialization=safe)
        assert any(n.endswith(".index.json") for n in os.listdir(sharded))
        convert.convert(sharded, tmp_path / f"out_{safe}", processor=False)
        assert_same_arrays(convert.load(tmp_path / f"out_{safe}").arrays, converted)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype(canonical, tmp_path, dtype):
    import clip.pt

    convert.convert(canonical, tmp_path / "out", dtype=dtype, processor=False)
    arrays = io.read_safetensors(tmp_path / "out" / "model.safetensors")
    assert {a.dtype.name for a in arrays.values()} == {dtype}
    model = clip.pt.CLIPModel.from_pretrained(tmp_path / "out", dtype="auto")
    assert str(model.dtype) == f"torch.{dtype}"
    reference = convert.load(canonical).arrays
    name = "text_model.encoder.layers.0.mlp.fc1.weight"
    np.testing.assert_array_equal(arrays[name], reference[name].astype(io.numpy_dtype(dtype)))


def test_bfloat16_cannot_go_to_h5_and_nothing_is_written(canonical, tmp_path):
    with pytest.raises(convert.ConversionError, match="bfloat16"):
        convert.convert(canonical, tmp_path / "tf", to_format="transformers-tf", dtype="bfloat16")
    assert os.listdir(tmp_path) == []


def test_failure_midway_leaves_nothing(canonical, tmp_path, monkeypatch):
    def broken(checkpoint, directory):
        open(os.path.join(directory, "model.safetensors"), "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setitem(convert.DIRECTORY_WRITERS, "canonical", broken)
    with pytest.raises(OSError, match="disk full"):
        convert.convert(canonical, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_existing_destination(canonical, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(convert.ConversionError, match="not empty.*--overwrite"):
        convert.convert(canonical, dst)
    assert os.listdir(dst) == ["keep.txt"]
    convert.convert(canonical, dst, overwrite=True, processor=False)
    assert sorted(os.listdir(dst)) == ["config.json", "model.safetensors"]
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_config_mismatch_names_the_file_and_tensor(canonical, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(canonical, src)
    with open(src / "config.json") as f:
        config = json.load(f)
    config["vision_config"]["intermediate_size"] = 50
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(convert.ConversionError) as err:
        convert.convert(src, tmp_path / "out")
    assert str(src / "model.safetensors") in str(err.value) and "vision_model.encoder.layers.0.mlp.fc1.weight" in str(
        err.value
    )
    assert not (tmp_path / "out").exists()


def test_cli_main_and_errors(canonical, tmp_path, capsys):
    assert convert_cli.main([canonical, str(tmp_path / "h5"), "--to", "transformers-tf", "--no-processor"]) == 0
    assert sorted(os.listdir(tmp_path / "h5")) == ["config.json", "tf_model.h5"]
    assert convert_cli.main([str(tmp_path / "h5"), str(tmp_path / "back"), "--dtype", "float16"]) == 0
    assert convert_cli.main([str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "missing: no such file or directory" in err and not (tmp_path / "x").exists()


def test_add_parser_and_script(canonical, tmp_path):
    parser = argparse.ArgumentParser(prog="clip")
    convert_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["convert", canonical, str(tmp_path / "a"), "--to", "pytorch-bin", "--set", "text_config.hidden_act=gelu"]
    )
    assert args.run(args) == 0
    with open(tmp_path / "a" / "config.json") as f:
        assert json.load(f)["text_config"]["hidden_act"] == "gelu"
    script = os.path.join(ROOT, "tools", "convert_weights.py")
    done = subprocess.run(
        [sys.executable, script, str(tmp_path / "a"), str(tmp_path / "b"), "--no-processor"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert_same_arrays(convert.load(tmp_path / "b").arrays, convert.load(tmp_path / "a").arrays)
