"""Issue 19: damaged or hostile weight files give one clear error naming the file (and tensor) in clip.pt."""

import os

import numpy as np
import pytest
import torch

import clip.pt as ours
from hostile_files import LFS_POINTER, LN_A, SAFETENSORS_CASES, damaged_checkpoint, garbage_bytes, tiny_checkpoint


def test_the_undamaged_checkpoint_loads(tmp_path):
    arrays = tiny_checkpoint(tmp_path)
    model = ours.CLIPModel.from_pretrained(tmp_path)
    assert model.logit_scale.item() == pytest.approx(float(arrays["logit_scale"]))
    np.testing.assert_array_equal(model.state_dict()[LN_A].numpy(), arrays[LN_A])


@pytest.mark.parametrize("case", SAFETENSORS_CASES)
def test_damaged_safetensors_is_refused_naming_file_and_tensor(tmp_path, case):
    message = damaged_checkpoint(tmp_path, case)
    with pytest.raises(ValueError, match=message):
        ours.CLIPModel.from_pretrained(tmp_path)


def _bin_cases(good: bytes):
    return {
        "random bytes": (garbage_bytes(), OSError, r"pytorch_model\.bin: not a readable PyTorch weights file"),
        "truncated": (good[: len(good) // 2], OSError, r"pytorch_model\.bin: not a readable PyTorch weights file"),
        "empty": (b"", OSError, r"pytorch_model\.bin: the file is empty"),
        "git lfs pointer": (LFS_POINTER, OSError, r"pytorch_model\.bin: a Git LFS pointer.*git lfs pull"),
    }


@pytest.mark.parametrize("case", ["random bytes", "truncated", "empty", "git lfs pointer"])
def test_unreadable_bin_is_an_oserror_naming_the_file(tmp_path, case):
    arrays = tiny_checkpoint(tmp_path)
    os.unlink(tmp_path / "model.safetensors")
    torch.save({n: torch.from_numpy(a) for n, a in arrays.items()}, tmp_path / "pytorch_model.bin")
    content, error, message = _bin_cases((tmp_path / "pytorch_model.bin").read_bytes())[case]
    (tmp_path / "pytorch_model.bin").write_bytes(content)
    with pytest.raises(error, match=message):
        ours.CLIPModel.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ([torch.ones(2)], r"pytorch_model\.bin: holds a list, not a state dict"),
        ({"a": 1}, r"pytorch_model\.bin: entry 'a' is not a named tensor \(found int\)"),
        (
            {LN_A: torch.ones(32, dtype=torch.int64)},
            rf"pytorch_model\.bin: tensor '{LN_A}' has dtype torch\.int64; model weights must be floating point",
        ),
    ],
)
def test_bin_holding_something_else_is_a_valueerror(tmp_path, content, message):
    tiny_checkpoint(tmp_path)
    os.unlink(tmp_path / "model.safetensors")
    torch.save(content, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=message):
        ours.CLIPModel.from_pretrained(tmp_path)


def test_checkpoint_without_the_weights_warns_loudly(tmp_path):
    tiny_checkpoint(tmp_path)
    from clip.common import io

    io.write_safetensors({"foo": np.ones(3, np.float32)}, tmp_path / "model.safetensors")
    with pytest.warns(UserWarning, match=r"newly initialized: .* lacks (\d+) of the \1 weights"):
        model, info = ours.CLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["unexpected_keys"] == ["foo"] and len(info["missing_keys"]) == len(model.state_dict())
