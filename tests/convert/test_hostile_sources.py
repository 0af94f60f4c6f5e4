"""Issue 19: `clip convert` refuses damaged or hostile sources with one error naming the file (and
tensor), and writes nothing."""

import os
import shutil
import zipfile

import numpy as np
import pytest
import torch
from flax import serialization

from clip import convert
from clip.cli import main
from hostile_files import LFS_POINTER, LN_A, SAFETENSORS_CASES, damaged_checkpoint, garbage_bytes, tiny_checkpoint

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")


def _nothing_written(tmp_path, dst):
    assert not os.path.exists(dst)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("case", SAFETENSORS_CASES)
def test_damaged_safetensors(tmp_path, case, capsys):
    message = damaged_checkpoint(tmp_path / "src", case)
    with pytest.raises(ValueError, match=message.replace("'", "'?")):  # (convert names a tensor unquoted)
        convert.convert(tmp_path / "src", tmp_path / "out")
    _nothing_written(tmp_path, tmp_path / "out")
    # the command line: one line on stderr, exit 2, no traceback
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clip convert: ") and "Traceback" not in err and "model.safetensors" in err


def _bin_source(tmp_path, content):
    arrays = tiny_checkpoint(tmp_path / "src")
    os.unlink(tmp_path / "src" / "model.safetensors")
    path = tmp_path / "src" / "pytorch_model.bin"
    torch.save({n: torch.from_numpy(a) for n, a in arrays.items()}, path)
    good = path.read_bytes()
    if isinstance(content, bytes) or callable(content):
        path.write_bytes(content(good) if callable(content) else content)
    else:
        torch.save(content, path)
    return tmp_path / "src"


@pytest.mark.parametrize(
    "content, message",
    [
        (garbage_bytes(), r"pytorch_model\.bin: not a readable PyTorch weights file"),
        (
            lambda good: good[: len(good) // 2],
            r"pytorch_model\.bin: not a readable PyTorch weights file.*central directory",
        ),
        (LFS_POINTER, r"pytorch_model\.bin: a Git LFS pointer"),
        ([torch.ones(2)], r"pytorch_model\.bin: holds a list, not a state dict"),
        ({"a": 1}, r"pytorch_model\.bin: holds no tensors"),
    ],
)
def test_malformed_bin(tmp_path, content, message):
    src = _bin_source(tmp_path, content)
    with pytest.raises(convert.ConversionError, match=message):
        convert.convert(src, tmp_path / "out")
    _nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    "fixture, name, content, message",
    [
        ("transformers_tf", "tf_model.h5", garbage_bytes(), r"tf_model\.h5: not a readable HDF5 weights file"),
        (
            "transformers_tf",
            "tf_model.h5",
            lambda good: good[: len(good) // 2],
            r"tf_model\.h5: not a readable HDF5 weights file.*truncated",
        ),
        (
            "transformers_flax",
            "flax_model.msgpack",
            garbage_bytes(),
            r"flax_model\.msgpack: not a readable msgpack params file",
        ),
        (
            "transformers_flax",
            "flax_model.msgpack",
            lambda good: good + b"\x00",
            r"flax_model\.msgpack: not a readable msgpack params file \(ExtraData",
        ),
        (
            "transformers_flax",
            "flax_model.msgpack",
            serialization.msgpack_serialize({"a": "b"}),
            r"flax_model\.msgpack: params entry 'a' is not a numeric array",
        ),
    ],
)
def test_corrupt_h5_and_msgpack(tmp_path, fixture, name, content, message):
    src = tmp_path / "src"
    shutil.copytree(os.path.join(FIXTURES, fixture), src)
    path = src / name
    path.write_bytes(content(path.read_bytes()) if callable(content) else content)
    with pytest.raises(convert.ConversionError, match=message):
        convert.convert(src, tmp_path / "out")
    _nothing_written(tmp_path, tmp_path / "out")


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras")
    tiny_checkpoint(root / "src")
    convert.convert(root / "src", root / "model.keras", to_format="keras")
    return root / "model.keras"


def _crc_broken(good: bytes) -> bytes:
    data = bytearray(good)
    with zipfile.ZipFile(__import__("io").BytesIO(good)) as archive:
        info = archive.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 100
    data[start] ^= 0xFF  # one byte of the stored weights flipped
    return bytes(data)


def _without_config(good: bytes) -> bytes:
    import io

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != "config.json":
                dst.writestr(info, src.read(info))
    return out.getvalue()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda good: garbage_bytes(), r"model\.keras: not a readable \.keras file \(a zip archive\) \(BadZipFile"),
        (lambda good: good[: len(good) // 2], r"model\.keras: not a readable \.keras file \(a zip archive\)"),
        (lambda good: b"", r"model\.keras: the file is empty"),
        (
            _crc_broken,
            r"model\.keras: a damaged \.keras file \(the archive member 'model\.weights\.h5' fails its checksum\)",
        ),
        (_without_config, r"model\.keras: not a \.keras file \(the zip archive lacks config\.json\)"),
    ],
)
def test_corrupt_keras_file(tmp_path, keras_file, damage, message):
    path = tmp_path / "model.keras"
    path.write_bytes(damage(keras_file.read_bytes()))
    with pytest.raises(convert.ConversionError, match=message):
        convert.convert(path, tmp_path / "out")
    _nothing_written(tmp_path, tmp_path / "out")


def test_the_undamaged_keras_file_converts(tmp_path, keras_file):
    checkpoint = convert.convert(keras_file, tmp_path / "out")
    np.testing.assert_array_equal(checkpoint.arrays[LN_A], convert.load(keras_file.parent / "src").arrays[LN_A])
