"""Checkpoints across clip.tf, clip.pt and transformers: tf_model.h5, safetensors both ways, reports, errors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

import clip.pt as pt
import clip.tf as ours
from clip.common import io, weights
from clip.common.formats import transformers_tf
from clip.tf import loading
from tf_helpers import CLASSES, as_tf, as_torch, assert_close_outputs, inputs_for, make_inputs, make_pair

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "transformers_tf")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(os.path.join(FIXTURE, "reference.npz")))


def test_transformers_tf_h5_gives_transformers_outputs(reference):
    model, info = ours.TFCLIPModel.from_pretrained(FIXTURE, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    inputs = {k: tf.constant(reference[k]) for k in ("input_ids", "attention_mask", "pixel_values")}
    out = model(**inputs, return_loss=True, output_hidden_states=True)
    got = {
        "loss": out.loss,
        "logits_per_image": out.logits_per_image,
        "text_embeds": out.text_embeds,
        "image_embeds": out.image_embeds,
        "text_last_hidden_state": out.text_model_output.last_hidden_state,
        "vision_pooler_output": out.vision_model_output.pooler_output,
        "vision_hidden_state_1": out.vision_model_output.hidden_states[1],
    }
    for name, value in got.items():
        np.testing.assert_allclose(value.numpy(), reference[name], atol=1e-5, rtol=0, err_msg=name)


def test_h5_names_map_onto_the_canonical_layout():
    arrays = loading.read_h5(os.path.join(FIXTURE, "tf_model.h5"))
    assert any("layers_._1" in name for name in arrays) and any(
        name.endswith("token_embedding/weight:0") for name in arrays
    )
    canonical = transformers_tf.to_canonical(arrays)
    config = ours.TFCLIPModel.config_class.from_pretrained(FIXTURE)
    expected = weights.expected_parameters(config, "CLIPModel")
    assert weights.match_checkpoint(expected, {n: a.shape for n, a in canonical.items()}) == {
        "missing_keys": [],
        "unexpected_keys": [],
        "mismatched_keys": [],
    }
    assert canonical["logit_scale"].shape == ()


def test_h5_into_a_sub_model_reports_the_other_parts(reference):
    model, info = ours.TFCLIPTextModel.from_pretrained(FIXTURE, output_loading_info=True)
    assert info["missing_keys"] == [] and "logit_scale" in info["unexpected_keys"]
    assert all(
        k.startswith(("vision_model.", "visual_projection", "text_projection", "logit_scale"))
        for k in info["unexpected_keys"]
    )
    out = model(tf.constant(reference["input_ids"]), tf.constant(reference["attention_mask"]))
    np.testing.assert_allclose(out.last_hidden_state.numpy(), reference["text_last_hidden_state"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_class", CLASSES)
def test_save_pretrained_loads_in_clip_pt_and_transformers(tmp_path, model_class):
    model, _ = make_pair("quick_gelu", model_class, tmp_path / "src")
    out_dir = tmp_path / "ours"
    out_dir.mkdir()
    (out_dir / "tf_model.h5").write_bytes(b"stale")  # a stale file of another format is removed
    model.save_pretrained(out_dir)
    assert sorted(os.listdir(out_dir)) == ["config.json", "model.safetensors"]
    assert io.read_safetensors_metadata(out_dir / "model.safetensors") == {"format": "pt"}
    inputs = inputs_for(model_class, make_inputs("quick_gelu"))
    expected = model(**as_tf(inputs))
    ref, info = getattr(transformers, model_class).from_pretrained(out_dir, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    theirs, info = getattr(pt, model_class).from_pretrained(out_dir, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    with torch.no_grad():
        assert_close_outputs(expected, theirs(**as_torch(inputs)))
        assert_close_outputs(expected, ref.eval()(**as_torch(inputs)))
    again = getattr(ours, "TF" + model_class).from_pretrained(out_dir)
    assert_close_outputs(again(**as_tf(inputs)), expected, atol=0)


def test_missing_keys_are_reported_and_initialized(tmp_path):
    _, ref = make_pair("quick_gelu", "CLIPTextModelWithProjection", tmp_path)
    config = transformers.CLIPConfig(
        text_config=ref.config.to_dict(),
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "image_size": 16,
            "patch_size": 8,
        },
        projection_dim=24,
    )
    config.save_pretrained(tmp_path)  # a full config over a text-only checkpoint
    model, info = ours.TFCLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert "logit_scale" in info["missing_keys"] and "vision_model.pre_layrnorm.weight" in info["missing_keys"]
    assert info["unexpected_keys"] == []
    assert float(model.logit_scale.numpy()) == pytest.approx(config.logit_scale_init_value)
    np.testing.assert_array_equal(model.vision_model.pre_layrnorm.gamma.numpy(), 1.0)


def test_mismatched_shapes_name_the_tensor(tmp_path):
    _, ref = make_pair("quick_gelu", "CLIPVisionModel", tmp_path)
    config = ref.config.to_dict()
    config["image_size"] = 24  # more positions than the checkpoint has
    config = type(ref.config).from_dict(config)
    with pytest.raises(
        ValueError,
        match=r"vision_model.embeddings.position_embedding.weight: the model expects \(37, 48\), the checkpoint has \(17, 48\)",
    ):
        ours.TFCLIPVisionModel.from_pretrained(tmp_path, config=config)
    model, info = ours.TFCLIPVisionModel.from_pretrained(
        tmp_path, config=config, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert [n for n, _, _ in info["mismatched_keys"]] == ["vision_model.embeddings.position_embedding.weight"]
    with pytest.raises(ValueError, match="q_proj.weight.*shape"):
        loading.assign_canonical(
            model, {"vision_model.encoder.layers.0.self_attn.q_proj.weight": np.zeros((48, 47), np.float32)}
        )


def test_no_weights_and_bad_arguments(tmp_path):
    from clip.common.hub import CheckpointNotFoundError

    ref = pt.CLIPTextModel(
        ours.TFCLIPTextModel.config_class(
            hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4
        )
    )
    ref.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(CheckpointNotFoundError, match="pytorch_model.bin needs clip.pt"):
        ours.TFCLIPTextModel.from_pretrained(tmp_path)
    shutil.rmtree(tmp_path)
    ref.save_pretrained(tmp_path)
    with pytest.raises(TypeError, match="unexpected argument 'bogus'"):
        ours.TFCLIPTextModel.from_pretrained(tmp_path, bogus=1)
    model = ours.TFCLIPTextModel.from_pretrained(tmp_path, output_hidden_states=True)
    assert len(model(tf.constant([[5, 6, 49407]])).hidden_states) == 2


def test_transformers_loading_arguments_pick_the_file(tmp_path):
    # the fixture holds tf_model.h5 only: use_safetensors=False (and transformers' from_pt) read it
    model = ours.TFCLIPModel.from_pretrained(FIXTURE, use_safetensors=False, from_pt=False, trust_remote_code=False)
    reference = ours.TFCLIPModel.from_pretrained(FIXTURE)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(loading.canonical_state(model).values(), loading.canonical_state(reference).values())
    )
    with pytest.raises(OSError, match="model.safetensors"):
        ours.TFCLIPModel.from_pretrained(FIXTURE, use_safetensors=True)
    model.save_pretrained(tmp_path)
    assert ours.TFCLIPModel.from_pretrained(tmp_path, from_pt=True, use_safetensors=True) is not None
    with pytest.raises(TypeError, match="from_pt must be"):
        ours.TFCLIPModel.from_pretrained(tmp_path, from_pt="yes")


def test_from_pretrained_draws_only_the_weights_the_checkpoint_lacks(tmp_path, monkeypatch):
    """A complete checkpoint: no init is drawn (it would only be overwritten); one weight missing:
    only that one is drawn, and it follows the table's rule (a layer norm gain of ones)."""
    from clip.common import params

    model, ref = make_pair("quick_gelu", "CLIPModel", tmp_path)
    drawn = []
    real = params.init_arrays
    monkeypatch.setattr(
        params,
        "init_arrays",
        lambda table, seed, names=None, **kw: drawn.append(names) or real(table, seed, names, **kw),
    )
    loaded = ours.TFCLIPModel.from_pretrained(tmp_path)
    assert drawn == []
    state = {n: t.numpy() for n, t in ref.state_dict().items()}
    assert all(np.array_equal(loading.canonical_state(loaded)[n], state[n]) for n in state)

    missing = "text_model.final_layer_norm.weight"
    io.write_safetensors(
        {n: a for n, a in state.items() if n != missing}, tmp_path / "model.safetensors", metadata={"format": "pt"}
    )
    with pytest.warns(UserWarning, match=missing):
        partial = ours.TFCLIPModel.from_pretrained(tmp_path)
    assert drawn == [[missing]]
    assert np.all(loading.canonical_state(partial)[missing] == 1.0)
