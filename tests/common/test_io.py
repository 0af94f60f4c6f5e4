"""safetensors reading/writing against the safetensors library; atomic writes; hub resolution."""

import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from clip.common import hub, io


def _tensors():
    rng = np.random.default_rng(0)
    return {
        "text_model.embeddings.token_embedding.weight": rng.standard_normal((7, 5), dtype=np.float32),
        "logit_scale": np.array(2.6592, dtype=np.float32),
        "a.f16": rng.standard_normal((3, 4)).astype(np.float16),
        "b.i64": np.arange(12, dtype=np.int64).reshape(3, 4),
        "c.bool": np.array([True, False, True]),
        "d.f64": rng.standard_normal(2),
        "e.strided": rng.standard_normal((4, 6), dtype=np.float32)[:, ::2],
    }


def test_write_is_read_by_safetensors_library(tmp_path):
    path = tmp_path / "m.safetensors"
    tensors = _tensors()
    io.write_safetensors(tensors, path, metadata={"format": "pt"})
    loaded = safetensors.numpy.load_file(path)
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype
    with safetensors.safe_open(path, "np") as f:
        assert f.metadata() == {"format": "pt"}


def test_library_files_read_back_bitwise(tmp_path):
    path = tmp_path / "m.safetensors"
    tensors = {k: np.ascontiguousarray(v) for k, v in _tensors().items()}
    safetensors.numpy.save_file(tensors, path, metadata={"format": "np"})
    ours = io.read_safetensors(path)
    for name, array in tensors.items():
        assert ours[name].dtype == array.dtype and ours[name].shape == array.shape
        np.testing.assert_array_equal(ours[name], array)
    assert io.read_safetensors_metadata(path) == {"format": "np"}
    # Our writer lays files out as the library does: byte-identical output.
    ours_path = tmp_path / "ours.safetensors"
    io.write_safetensors(tensors, ours_path, metadata={"format": "np"})
    assert ours_path.read_bytes() == path.read_bytes()


def test_bfloat16_round_trip_through_torch(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    path = tmp_path / "bf16.safetensors"
    reference = torch.randn(4, 3).to(torch.bfloat16)
    safetensors.torch.save_file({"w": reference}, path)
    ours = io.read_safetensors(path)["w"]
    assert ours.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(ours.astype(np.float32), reference.float().numpy())
    io.write_safetensors({"w": ours}, tmp_path / "back.safetensors")
    back = safetensors.torch.load_file(tmp_path / "back.safetensors")["w"]
    assert back.dtype == torch.bfloat16 and torch.equal(back, reference)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "shorter than"),
        (b"\xff" * 8 + b"{}", "header length"),
        ((8).to_bytes(8, "little") + b"not json", "not valid JSON"),
    ],
)
def test_corrupt_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        io.read_safetensors(path)


def test_truncated_file_names_the_tensor(tmp_path):
    path = tmp_path / "t.safetensors"
    io.write_safetensors({"big": np.ones((100, 100), np.float32)}, path)
    path.write_bytes(path.read_bytes()[:-16])
    with pytest.raises(ValueError, match="'big'.*truncated"):
        io.read_safetensors(path)


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "config.json"
    io.atomic_write_json(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write('{"v": 2, half')
            raise RuntimeError("crash mid-write")
    assert json.loads(path.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["config.json"]


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("x")
    io.atomic_write_text(tmp_path / "atomic.txt", "x")
    assert os.stat(tmp_path / "atomic.txt").st_mode == os.stat(path).st_mode


def test_unstorable_dtype_is_rejected_before_writing(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match="'s'"):
        io.write_safetensors({"s": np.array(["a"])}, path)
    assert not path.exists()


def test_read_checkpoint_merges_shards_and_rejects_duplicates(tmp_path):
    io.write_safetensors({"a": np.zeros(2, np.float32)}, tmp_path / "1.safetensors")
    io.write_safetensors({"b": np.ones(3, np.float32)}, tmp_path / "2.safetensors")
    merged = io.read_checkpoint([tmp_path / "1.safetensors", tmp_path / "2.safetensors"])
    assert sorted(merged) == ["a", "b"]
    with pytest.raises(ValueError, match="'a'.*another shard"):
        io.read_checkpoint([tmp_path / "1.safetensors", tmp_path / "1.safetensors"])


def test_resolve_weight_files_expands_a_sharded_index(tmp_path):
    io.write_safetensors({"a": np.zeros(2, np.float32)}, tmp_path / "model-00001-of-00002.safetensors")
    io.write_safetensors({"b": np.zeros(2, np.float32)}, tmp_path / "model-00002-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (tmp_path / hub.SAFETENSORS_INDEX_NAME).write_text(json.dumps(index))
    name, paths = hub.resolve_weight_files(tmp_path, [hub.SAFETENSORS_NAME, hub.SAFETENSORS_INDEX_NAME])
    assert name == hub.SAFETENSORS_INDEX_NAME
    assert [os.path.basename(p) for p in paths] == sorted(set(index["weight_map"].values()))
    assert hub.resolve_weight_files(tmp_path, [hub.TF_NAME]) is None


def test_offline_hub_id_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.CheckpointNotFoundError, match="openai/clip-vit-base-patch32.*local directory"):
        hub.resolve_file("openai/clip-vit-base-patch32", "config.json", cache_dir=str(tmp_path))


def test_hub_cache_is_used_offline(tmp_path):
    # A file in huggingface_hub's cache layout resolves offline, through huggingface_hub itself.
    repo = tmp_path / "models--someone--tiny-clip"
    commit = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    path = hub.resolve_file("someone/tiny-clip", "config.json", cache_dir=str(tmp_path), local_files_only=True)
    assert os.path.samefile(path, snapshot / "config.json")


def test_common_imports_no_framework():
    code = (
        "import sys, clip, clip.common.config, clip.common.io, clip.common.hub, clip.common.outputs, "
        "clip.common.batch\n"
        "for name in ('CLIPConfig', 'CLIPTokenizer', 'CLIPTokenizerFast', 'CLIPImageProcessor', 'CLIPProcessor'):\n"
        "    getattr(clip, name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'jax', 'flax', 'keras'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
