"""Issue 19: damaged or hostile weight files give one clear error naming the file (and tensor) in clip.flax."""

import os
import shutil

import numpy as np
import pytest
from flax import serialization

import clip.flax as ours
from hostile_files import LFS_POINTER, LN_A, SAFETENSORS_CASES, damaged_checkpoint, garbage_bytes, tiny_checkpoint

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "transformers_flax")


def test_the_undamaged_checkpoint_loads(tmp_path):
    arrays = tiny_checkpoint(tmp_path)
    model = ours.FlaxCLIPModel.from_pretrained(tmp_path)
    assert float(np.asarray(model.params["logit_scale"])) == pytest.approx(float(arrays["logit_scale"]))


@pytest.mark.parametrize("case", SAFETENSORS_CASES)
def test_damaged_safetensors_is_refused_naming_file_and_tensor(tmp_path, case):
    message = damaged_checkpoint(tmp_path, case)
    with pytest.raises(ValueError, match=message):
        ours.FlaxCLIPModel.from_pretrained(tmp_path)


def _msgpack_directory(tmp_path):
    shutil.copy(os.path.join(FIXTURE, "config.json"), tmp_path / "config.json")
    shutil.copy(os.path.join(FIXTURE, "flax_model.msgpack"), tmp_path / "flax_model.msgpack")
    return tmp_path / "flax_model.msgpack"


def _tree(path):
    return serialization.msgpack_restore(path.read_bytes())


@pytest.mark.parametrize(
    "case, error, message",
    [
        ("random bytes", OSError, r"flax_model\.msgpack: not a readable msgpack params file"),
        ("truncated", OSError, r"flax_model\.msgpack: not a readable msgpack params file \(ValueError: .*incomplete"),
        ("extra data", OSError, r"flax_model\.msgpack: not a readable msgpack params file \(ExtraData"),
        ("git lfs pointer", OSError, r"flax_model\.msgpack: a Git LFS pointer"),
        ("a list", ValueError, r"flax_model\.msgpack: the msgpack file holds a list, not a params tree"),
        (
            "a string leaf",
            ValueError,
            r"flax_model\.msgpack: params entry 'logit_scale' is not a numeric array \(found str\)",
        ),
        ("deep nesting", ValueError, r"flax_model\.msgpack: the params tree nests deeper than"),
        (
            "int64 weight",
            ValueError,
            rf"flax_model\.msgpack: tensor '{LN_A}' has dtype int64; model weights must be floating point",
        ),
    ],
)
def test_corrupt_msgpack_names_the_file(tmp_path, case, error, message):
    path = _msgpack_directory(tmp_path)
    good = path.read_bytes()
    if case == "a string leaf":
        tree = _tree(path)
        tree["logit_scale"] = "2.65"
        content = serialization.msgpack_serialize(tree)
    elif case == "deep nesting":
        deep = {"leaf": np.ones(1, np.float32)}
        for _ in range(100):
            deep = {"x": deep}
        content = serialization.msgpack_serialize({**_tree(path), "text_model": deep})
    elif case == "int64 weight":
        tree = _tree(path)
        node = tree["text_model"]["final_layer_norm"]
        node["scale"] = node["scale"].astype(np.int64)
        content = serialization.msgpack_serialize(tree)
    else:
        content = {
            "random bytes": garbage_bytes(),
            "truncated": good[: len(good) // 2],
            "extra data": good + b"\x00\x01",
            "git lfs pointer": LFS_POINTER,
            "a list": serialization.msgpack_serialize([1, 2]),
        }[case]
    path.write_bytes(content)
    with pytest.raises(error, match=message):
        ours.FlaxCLIPModel.from_pretrained(tmp_path)
