"""Checkpoints across clip.pt and transformers: both directions, shards, sub-models, dtypes, errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import transformers

import clip.pt as ours
from clip.common import io
from pt_helpers import CLASSES, assert_close_outputs, inputs_for, make_inputs, make_pair


def reference_outputs_equal(model, ref, model_class, name="quick_gelu"):
    inputs = inputs_for(model_class, make_inputs(name))
    with torch.no_grad():
        assert_close_outputs(model(**inputs), ref(**inputs))


@pytest.mark.parametrize("model_class", CLASSES)
def test_our_checkpoint_loads_in_transformers(tmp_path, model_class):
    model, _ = make_pair("quick_gelu", model_class)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # no temp files left
    assert io.read_safetensors_metadata(tmp_path / "model.safetensors") == {"format": "pt"}
    ref, info = getattr(transformers, model_class).from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    reference_outputs_equal(model, ref.eval(), model_class)
    # and back into ours
    again = getattr(ours, model_class).from_pretrained(tmp_path)
    reference_outputs_equal(again, ref, model_class)


@pytest.mark.parametrize(
    "save_kwargs, files",
    [
        (dict(), {"model.safetensors"}),
        (dict(safe_serialization=False), {"pytorch_model.bin"}),
        (dict(max_shard_size="40KB"), {"model.safetensors.index.json"}),
        (dict(max_shard_size="40KB", safe_serialization=False), {"pytorch_model.bin.index.json"}),
    ],
    ids=["safetensors", "bin", "sharded-safetensors", "sharded-bin"],
)
def test_transformers_checkpoints_load(tmp_path, save_kwargs, files):
    _, ref = make_pair("quick_gelu", "CLIPModel")
    ref.save_pretrained(tmp_path, **save_kwargs)
    assert files <= set(os.listdir(tmp_path))
    model, info = ours.CLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    assert not model.training
    reference_outputs_equal(model, ref, "CLIPModel")


def test_bin_loading_refuses_pickled_code(tmp_path):
    _, ref = make_pair("quick_gelu", "CLIPTextModel")
    ref.config.save_pretrained(tmp_path)
    torch.save(
        {"text_model.final_layer_norm.weight": torch.ones(32), "evil": os.system}, tmp_path / "pytorch_model.bin"
    )
    with pytest.raises(Exception, match="weights_only|Unsupported|unpickl|global"):
        ours.CLIPTextModel.from_pretrained(tmp_path)


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("full")
    _, ref = make_pair("legacy_eos", "CLIPModel")
    ref.save_pretrained(path)
    return path


@pytest.mark.parametrize("model_class", CLASSES)
def test_full_checkpoint_into_every_class_reports_like_transformers(full_checkpoint, model_class):
    model, info = getattr(ours, model_class).from_pretrained(full_checkpoint, output_loading_info=True)
    ref, ref_info = getattr(transformers, model_class).from_pretrained(full_checkpoint, output_loading_info=True)
    assert sorted(info["missing_keys"]) == sorted(ref_info["missing_keys"])
    assert sorted(info["unexpected_keys"]) == sorted(ref_info["unexpected_keys"])
    if model_class == "CLIPForImageClassification":  # the head is new on both sides: copy it
        model.classifier.load_state_dict(ref.classifier.state_dict())
    reference_outputs_equal(model, ref.eval(), model_class, name="legacy_eos")


@pytest.mark.parametrize(
    "saved, loaded",
    [
        ("CLIPVisionModelWithProjection", "CLIPVisionModel"),
        ("CLIPVisionModel", "CLIPVisionModelWithProjection"),
        ("CLIPTextModelWithProjection", "CLIPTextModel"),
        ("CLIPTextModel", "CLIPTextModelWithProjection"),
    ],
)
def test_sub_model_checkpoints(tmp_path, saved, loaded):
    model, _ = make_pair("gelu", saved)
    model.save_pretrained(tmp_path)
    mine, info = getattr(ours, loaded).from_pretrained(tmp_path, output_loading_info=True)
    ref, ref_info = getattr(transformers, loaded).from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == sorted(ref_info["missing_keys"])
    assert sorted(info["unexpected_keys"]) == sorted(ref_info["unexpected_keys"])
    shared = set(mine.state_dict()) & set(model.state_dict())
    assert all(torch.equal(mine.state_dict()[k], model.state_dict()[k]) for k in shared)


def test_missing_and_unexpected_keys_are_logged(full_checkpoint, caplog):
    with caplog.at_level(logging.WARNING, logger="clip"):
        ours.CLIPForImageClassification.from_pretrained(full_checkpoint)
    text = caplog.text
    assert "classifier.weight" in text and "newly initialized" in text
    assert "text_projection.weight" in text and "not used" in text


def test_legacy_position_ids_buffers_are_ignored(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPModel")
    model.save_pretrained(tmp_path)
    tensors = dict(io.read_safetensors(tmp_path / "model.safetensors", mmap=False))
    tensors["text_model.embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]
    tensors["vision_model.embeddings.position_ids"] = np.arange(17, dtype=np.int64)[None]
    io.write_safetensors(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    again, info = ours.CLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["unexpected_keys"] == [] and info["missing_keys"] == []
    ref, ref_info = transformers.CLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert ref_info["unexpected_keys"] == []


def test_shape_mismatch_raises_naming_the_tensor(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPModel")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["projection_dim"] = 20
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        ours.CLIPModel.from_pretrained(tmp_path)
    message = str(err.value)
    assert "visual_projection.weight" in message and "(20, 48)" in message and "(24, 48)" in message
    assert "text_projection.weight" in message
    fixed, info = ours.CLIPModel.from_pretrained(tmp_path, ignore_mismatched_sizes=True, output_loading_info=True)
    assert fixed.visual_projection.weight.shape == (20, 48) and len(info["mismatched_keys"]) == 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, "bfloat16"])
def test_dtype_loading(tmp_path, dtype):
    model, _ = make_pair("gelu", "CLIPModel")
    model.save_pretrained(tmp_path)
    loaded = ours.CLIPModel.from_pretrained(tmp_path, torch_dtype=dtype)
    want = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
    assert {p.dtype for p in loaded.parameters()} == {want}
    assert torch.equal(loaded.logit_scale, model.logit_scale.to(want))
    inputs = make_inputs("gelu")
    out = loaded(**inputs)
    assert out.logits_per_image.dtype == want and torch.isfinite(out.logits_per_image).all()


def test_bfloat16_checkpoint_round_trip_and_auto_dtype(tmp_path):
    model, _ = make_pair("gelu", "CLIPVisionModelWithProjection")
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    ref = transformers.CLIPVisionModelWithProjection.from_pretrained(tmp_path, dtype=torch.bfloat16)
    loaded = ours.CLIPVisionModelWithProjection.from_pretrained(tmp_path, dtype="auto")
    assert loaded.dtype == torch.bfloat16
    for (n, p), (m, q) in zip(loaded.state_dict().items(), ref.state_dict().items()):
        assert n == m and torch.equal(p, q), n
    assert ours.CLIPVisionModelWithProjection.from_pretrained(tmp_path).dtype == torch.float32


def test_loaded_parameters_are_writable_and_trainable(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPModel")
    model.save_pretrained(tmp_path)
    loaded = ours.CLIPModel.from_pretrained(tmp_path)
    assert all(p.requires_grad and p.is_contiguous() for p in loaded.parameters())
    with torch.no_grad():
        for p in loaded.parameters():
            p.add_(1.0)  # would crash on a read-only memory map
    loaded2 = ours.CLIPModel.from_pretrained(tmp_path)  # the file is unchanged
    assert torch.equal(loaded2.logit_scale, model.logit_scale)


def test_save_bin_and_switch_formats(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPTextModel")
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path, safe_serialization=False)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "pytorch_model.bin"]
    ref = transformers.CLIPTextModel.from_pretrained(tmp_path)
    reference_outputs_equal(ours.CLIPTextModel.from_pretrained(tmp_path), ref, "CLIPTextModel")


def test_config_overrides_and_unknown_arguments(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPTextModel")
    model.save_pretrained(tmp_path)
    loaded = ours.CLIPTextModel.from_pretrained(tmp_path, output_hidden_states=True)
    assert loaded(make_inputs("quick_gelu")["input_ids"]).hidden_states is not None
    with pytest.raises(TypeError, match="no_such_argument"):
        ours.CLIPTextModel.from_pretrained(tmp_path, no_such_argument=1)


def test_missing_weights_error(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPTextModel")
    model.config.save_pretrained(tmp_path)
    with pytest.raises(OSError, match="no weights"):
        ours.CLIPTextModel.from_pretrained(tmp_path)


def test_peak_memory_of_loading_stays_near_one_copy(tmp_path):
    """Loose check (a benchmark measures it properly): peak RSS growth <= 1.3x the file size."""
    from clip.common.config import CLIPConfig

    config = CLIPConfig(
        text_config=dict(
            vocab_size=8000, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4
        ),
        vision_config=dict(
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=4,
            num_attention_heads=4,
            image_size=64,
            patch_size=16,
        ),
        projection_dim=128,
    )
    ours.CLIPModel(config).save_pretrained(tmp_path)
    size = os.path.getsize(tmp_path / "model.safetensors")
    script = textwrap.dedent(
        f"""
        import threading, time, torch, psutil
        import clip.pt as ours
        from clip.common.config import CLIPConfig
        config = CLIPConfig.from_pretrained({str(tmp_path)!r})
        with torch.device("meta"):
            ours.CLIPModel(config)  # warm up imports and code paths
        process = psutil.Process()
        before = process.memory_info().rss
        peak, done = [before], threading.Event()
        def sample():  # ru_maxrss would also count transient peaks from before the load
            while not done.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.001)
        sampler = threading.Thread(target=sample)
        sampler.start()
        model = ours.CLIPModel.from_pretrained({str(tmp_path)!r})
        done.set()
        sampler.join()
        print(max(peak[0], process.memory_info().rss) - before)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    growth = int(result.stdout.strip().splitlines()[-1])
    assert size > 20e6
    assert growth <= 1.3 * size, f"RSS grew by {growth / 1e6:.1f} MB for a {size / 1e6:.1f} MB checkpoint"


def test_directory_without_weights_names_the_files_looked_for(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPModel")
    model.config.save_pretrained(tmp_path)
    with pytest.raises(OSError, match="no weights found.*model.safetensors.*pytorch_model.bin"):
        ours.CLIPModel.from_pretrained(tmp_path)


def test_transformers_loading_arguments_work_unchanged(tmp_path):
    _, ref = make_pair("quick_gelu", "CLIPModel")
    ref.save_pretrained(tmp_path)
    # a call as written for transformers (device_map there needs accelerate: checked on ours below)
    kwargs = dict(
        low_cpu_mem_usage=True,
        trust_remote_code=False,
        attn_implementation="eager",
        use_safetensors=True,
        torch_dtype=torch.float32,
    )
    theirs = transformers.CLIPModel.from_pretrained(tmp_path, **kwargs).eval()
    for device_map in (None, "cpu", {"": "cpu"}, "auto" if not torch.cuda.is_available() else "cpu"):
        model = ours.CLIPModel.from_pretrained(tmp_path, device_map=device_map, **kwargs)
        assert model.device == torch.device("cpu")
        reference_outputs_equal(model, theirs, "CLIPModel")


def test_use_safetensors_takes_the_file_transformers_takes(tmp_path):
    a, _ = make_pair("quick_gelu", "CLIPTextModel", seed=0)
    b, _ = make_pair("quick_gelu", "CLIPTextModel", seed=1)
    b.save_pretrained(tmp_path, safe_serialization=False)  # pytorch_model.bin
    io.write_safetensors({n: t.numpy() for n, t in a.state_dict().items()}, tmp_path / "model.safetensors")

    def embedding(m):
        return m.text_model.embeddings.token_embedding.weight

    for flag, expected in ((None, a), (True, a), (False, b)):
        assert torch.equal(
            embedding(ours.CLIPTextModel.from_pretrained(tmp_path, use_safetensors=flag)), embedding(expected)
        ), flag
        assert torch.equal(
            embedding(transformers.CLIPTextModel.from_pretrained(tmp_path, use_safetensors=flag)), embedding(expected)
        ), flag
    os.unlink(tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match="pytorch_model.bin"):
        ours.CLIPTextModel.from_pretrained(tmp_path, use_safetensors=False)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(attn_implementation="flash"), ValueError, "attn_implementation must be one of"),
        (dict(device_map={"text_model": "cpu", "vision_model": "cuda:0"}), ValueError, "onto one device"),
        (dict(device="cpu", device_map="cuda:1"), ValueError, "disagree"),
        (dict(use_safetensors="yes"), TypeError, "use_safetensors must be"),
        (dict(trust_remote_code="yes"), TypeError, "trust_remote_code must be"),
    ],
)
def test_bad_loading_arguments_name_themselves(tmp_path, kwargs, error, match):
    model, _ = make_pair("quick_gelu", "CLIPTextModel")
    model.save_pretrained(tmp_path)
    with pytest.raises(error, match=match):
        ours.CLIPTextModel.from_pretrained(tmp_path, **kwargs)
