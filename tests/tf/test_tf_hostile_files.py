"""Issue 19: damaged or hostile weight files give one clear error naming the file (and tensor) in clip.tf."""

import os
import shutil

import h5py
import numpy as np
import pytest

import clip.tf as ours
from hostile_files import LFS_POINTER, LN_A, SAFETENSORS_CASES, damaged_checkpoint, garbage_bytes, tiny_checkpoint

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "transformers_tf")


def test_the_undamaged_checkpoint_loads(tmp_path):
    arrays = tiny_checkpoint(tmp_path)
    model = ours.TFCLIPModel.from_pretrained(tmp_path)
    assert float(np.asarray(model.logit_scale)) == pytest.approx(float(arrays["logit_scale"]))


@pytest.mark.parametrize("case", SAFETENSORS_CASES)
def test_damaged_safetensors_is_refused_naming_file_and_tensor(tmp_path, case):
    message = damaged_checkpoint(tmp_path, case)
    with pytest.raises(ValueError, match=message):
        ours.TFCLIPModel.from_pretrained(tmp_path)


def _h5_directory(tmp_path):
    shutil.copy(os.path.join(FIXTURE, "config.json"), tmp_path / "config.json")
    shutil.copy(os.path.join(FIXTURE, "tf_model.h5"), tmp_path / "tf_model.h5")
    return tmp_path / "tf_model.h5"


@pytest.mark.parametrize(
    "case, message",
    [
        ("random bytes", r"tf_model\.h5: not a readable HDF5 weights file \(OSError: .*signature"),
        ("truncated", r"tf_model\.h5: not a readable HDF5 weights file \(OSError: .*truncated"),
        ("git lfs pointer", r"tf_model\.h5: a Git LFS pointer"),
    ],
)
def test_corrupt_h5_is_an_oserror_naming_the_file(tmp_path, case, message):
    path = _h5_directory(tmp_path)
    good = path.read_bytes()
    path.write_bytes(
        {"random bytes": garbage_bytes(), "truncated": good[: len(good) // 2], "git lfs pointer": LFS_POINTER}[case]
    )
    with pytest.raises(OSError, match=message):
        ours.TFCLIPModel.from_pretrained(tmp_path)


def test_h5_listing_a_layer_it_lacks_is_a_valueerror(tmp_path):
    path = _h5_directory(tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["layer_names"] = np.array(["clip", "no_such_layer"], dtype=h5py.string_dtype())
    with pytest.raises(ValueError, match=r"tf_model\.h5: a damaged Keras weights file \(KeyError"):
        ours.TFCLIPModel.from_pretrained(tmp_path)


def test_h5_with_an_integer_weight_names_it(tmp_path):
    path = _h5_directory(tmp_path)
    with h5py.File(path, "r+") as f:
        group = f["clip"]
        name = next(n for n in group.attrs["weight_names"] if "final_layer_norm/gamma" in str(n))
        name = name.decode() if isinstance(name, bytes) else name
        values = np.asarray(group[name])
        del group[name]
        group.create_dataset(name, data=values.astype(np.int64))
    with pytest.raises(
        ValueError, match=rf"tf_model\.h5: tensor '{LN_A}' has dtype int64; model weights must be floating point"
    ):
        ours.TFCLIPModel.from_pretrained(tmp_path)
