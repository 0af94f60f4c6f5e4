"""Every target format written from one canonical checkpoint is the file transformers writes for the
same weights: byte for byte where transformers' writer is deterministic (model.safetensors,
pytorch_model.bin, flax_model.msgpack), weight for weight for tf_model.h5 (transformers lists the
weights in its module order, we in state_dict order). The backends' save_pretrained share those
writers, so their files are checked against transformers' too.

References: the fixtures transformers wrote (tests/fixtures/transformers_tf, transformers_flax;
tools/make_tf_fixture.py) and transformers.CLIPModel.save_pretrained run here.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(min(2, torch.get_num_threads()))

from clip import convert  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TF_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "transformers_tf")
FLAX_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "transformers_flax")


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def canonical(tmp_path_factory):
    out = tmp_path_factory.mktemp("canonical") / "model"
    convert.convert(TF_FIXTURE, out, processor=False)
    return out


@pytest.fixture(scope="module")
def transformers_files(canonical, tmp_path_factory):
    """transformers' own model.safetensors and pytorch_model.bin of the canonical checkpoint's weights."""
    import transformers

    out = tmp_path_factory.mktemp("transformers")
    model = transformers.CLIPModel.from_pretrained(canonical)
    model.save_pretrained(out / "safetensors")
    model.save_pretrained(out / "bin", safe_serialization=False)
    return {"canonical": out / "safetensors" / "model.safetensors", "pytorch-bin": out / "bin" / "pytorch_model.bin"}


@pytest.mark.parametrize("fmt, name", [("canonical", "model.safetensors"), ("pytorch-bin", "pytorch_model.bin")])
def test_pytorch_files_are_transformers_bytes(canonical, transformers_files, tmp_path, fmt, name):
    convert.convert(canonical, tmp_path / fmt, to_format=fmt, processor=False)
    assert read_bytes(tmp_path / fmt / name) == read_bytes(transformers_files[fmt])


def test_pt_save_pretrained_bin_is_transformers_bytes(canonical, transformers_files, tmp_path):
    import clip.pt

    clip.pt.CLIPModel.from_pretrained(canonical).save_pretrained(tmp_path, safe_serialization=False)
    assert read_bytes(tmp_path / "pytorch_model.bin") == read_bytes(transformers_files["pytorch-bin"])


def test_flax_msgpack_is_transformers_bytes(tmp_path):
    convert.convert(FLAX_FIXTURE, tmp_path / "canonical", processor=False)
    convert.convert(tmp_path / "canonical", tmp_path / "flax", to_format="transformers-flax", processor=False)
    expected = read_bytes(os.path.join(FLAX_FIXTURE, "flax_model.msgpack"))
    assert read_bytes(tmp_path / "flax" / "flax_model.msgpack") == expected
    convert.convert(tmp_path / "canonical", tmp_path / "params.msgpack", to_format="flax-params")
    assert read_bytes(tmp_path / "params.msgpack") == expected  # the same tree, as a lone file


def test_flax_save_pretrained_msgpack_is_transformers_bytes(tmp_path):
    import clip.flax

    clip.flax.FlaxCLIPModel.from_pretrained(FLAX_FIXTURE).save_pretrained(tmp_path, flax_msgpack=True)
    assert read_bytes(tmp_path / "flax_model.msgpack") == read_bytes(os.path.join(FLAX_FIXTURE, "flax_model.msgpack"))


def h5_contents(path):
    """(file attributes, the layer's weight names in order, {weight name: array})."""
    with h5py.File(path, "r") as f:
        attrs = {k: (list(v) if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        (layer,) = [name.decode() if isinstance(name, bytes) else name for name in f.attrs["layer_names"]]
        names = [n.decode() if isinstance(n, bytes) else n for n in f[layer].attrs["weight_names"]]
        return attrs, names, {name: np.asarray(f[layer][name]) for name in names}


def test_tf_h5_holds_transformers_weights(canonical, tmp_path):
    convert.convert(canonical, tmp_path / "tf", to_format="transformers-tf", processor=False)
    attrs, names, arrays = h5_contents(tmp_path / "tf" / "tf_model.h5")
    theirs_attrs, theirs_names, theirs = h5_contents(os.path.join(TF_FIXTURE, "tf_model.h5"))
    # backend and layer_names; keras_version is the installed tf-keras', whichever wrote the fixture
    assert {k: v for k, v in attrs.items() if k != "keras_version"} == {
        k: v for k, v in theirs_attrs.items() if k != "keras_version"
    }
    assert sorted(names) == sorted(theirs_names) and len(names) == len(set(names))
    for name in names:
        ours, expected = arrays[name], theirs[name]
        assert (ours.dtype, ours.shape) == (expected.dtype, expected.shape) and ours.tobytes() == expected.tobytes(), (
            name
        )
