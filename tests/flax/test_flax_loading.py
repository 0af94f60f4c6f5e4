"""Checkpoints across clip.flax, clip.pt and transformers (PyTorch and Flax): both directions, errors."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import clip.flax as ours
import clip.pt as pt
from clip.common import io
from clip.common.formats import transformers_flax
from flax_helpers import CLASSES, assert_close, inputs_for, make_inputs, make_pair, torch_inputs

transformers.logging.set_verbosity_error()
FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "transformers_flax")


def jit_call(model, output_hidden_states=False, **inputs):
    return jax.jit(lambda p, x: model(**x, params=p, output_hidden_states=output_hidden_states))(model.params, inputs)


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(os.path.join(FIXTURE, "reference.npz")))


def test_transformers_flax_msgpack_gives_transformers_outputs(reference):
    model, info = ours.FlaxCLIPModel.from_pretrained(FIXTURE, output_loading_info=True)
    assert info == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    inputs = {k: reference[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    out = jit_call(model, **inputs, output_hidden_states=True)
    got = {
        "logits_per_image": out.logits_per_image,
        "text_embeds": out.text_embeds,
        "image_embeds": out.image_embeds,
        "text_last_hidden_state": out.text_model_output.last_hidden_state,
        "text_pooler_output": out.text_model_output.pooler_output,
        "vision_last_hidden_state": out.vision_model_output.last_hidden_state,
        "vision_pooler_output": out.vision_model_output.pooler_output,
    }
    got.update({f"text_hidden_states_{i}": h for i, h in enumerate(out.text_model_output.hidden_states)})
    got.update({f"vision_hidden_states_{i}": h for i, h in enumerate(out.vision_model_output.hidden_states)})
    expected = {k: v for k, v in reference.items() if k not in inputs}
    assert sorted(got) == sorted(expected)
    assert_close(got, expected)


def test_msgpack_into_a_sub_model_reports_unexpected(reference, caplog):
    with caplog.at_level(logging.WARNING):
        model, info = ours.FlaxCLIPTextModelWithProjection.from_pretrained(FIXTURE, output_loading_info=True)
    assert info["missing_keys"] == [] and info["mismatched_keys"] == []
    assert info["unexpected_keys"] and all(
        k.startswith(("vision_model.", "visual_projection", "logit_scale")) for k in info["unexpected_keys"]
    )
    assert "were not used" in caplog.text
    out = jit_call(model, input_ids=reference["input_ids"], attention_mask=reference["attention_mask"])
    embeds = out.text_embeds / jnp.linalg.norm(out.text_embeds, axis=-1, keepdims=True)  # CLIPModel's are normalized
    assert_close(embeds, reference["text_embeds"])


@pytest.mark.parametrize("model_class", CLASSES)
def test_our_checkpoint_loads_in_clip_pt_and_transformers(tmp_path, model_class):
    model, _ = make_pair("quick_gelu", model_class)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # no temp files left
    assert io.read_safetensors_metadata(tmp_path / "model.safetensors") == {"format": "pt"}
    inputs = inputs_for(model_class, make_inputs("quick_gelu"))
    expected = jit_call(model, **inputs)
    for cls in (getattr(pt, model_class), getattr(transformers, model_class)):
        ref, info = cls.from_pretrained(tmp_path, output_loading_info=True)
        assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
        with torch.no_grad():
            assert_close(expected, ref.eval()(**torch_inputs(inputs)))
    again = getattr(ours, "Flax" + model_class).from_pretrained(tmp_path)  # and back into ours
    assert_close(jax.tree.map(np.asarray, again.params), jax.tree.map(np.asarray, model.params))


def test_our_msgpack_loads_in_transformers_flax(tmp_path):
    model, _ = make_pair("gelu", "CLIPModel")
    (tmp_path / "flax_model.msgpack").write_bytes(b"stale")
    model.save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain" / "flax_model.msgpack").exists()
    model.save_pretrained(tmp_path, flax_msgpack=True)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "flax_model.msgpack", "model.safetensors", "plain"]
    ref = transformers.FlaxCLIPModel.from_pretrained(tmp_path)  # reads flax_model.msgpack first
    inputs = make_inputs("gelu")
    expected = jit_call(model, **inputs)
    theirs = jax.jit(lambda p, x: ref(**x, params=p))(ref.params, inputs)
    for key in ("logits_per_image", "text_embeds", "image_embeds"):
        assert_close(expected[key], theirs[key])
    # the msgpack round-trips through our loader too
    os.remove(tmp_path / "model.safetensors")
    again = ours.FlaxCLIPModel.from_pretrained(tmp_path)
    assert_close(jax.tree.map(np.asarray, again.params), jax.tree.map(np.asarray, model.params))


def test_format_tree_is_our_params_layout():
    model, _ = make_pair("legacy_eos", "CLIPModel")
    canonical = transformers_flax.to_canonical(model.params)
    tree = transformers_flax.from_canonical(canonical, {n: k for n, (_, k) in _expected(model).items()})
    assert jax.tree.structure(tree) == jax.tree.structure(model.params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(model.params)))


def _expected(model):
    from clip.flax import loading

    return loading.expected_parameters(model)


def test_missing_and_mismatched_keys(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPModel")
    model.save_pretrained(tmp_path)
    arrays = dict(io.read_safetensors(tmp_path / "model.safetensors", mmap=False))
    del arrays["text_projection.weight"]
    arrays["visual_projection.weight"] = np.zeros((5, 48), np.float32)
    io.write_safetensors(arrays, tmp_path / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"visual_projection.weight: the model expects \(24, 48\), the checkpoint has \(5, 48\)"
    ):
        ours.FlaxCLIPModel.from_pretrained(tmp_path)
    loaded, info = ours.FlaxCLIPModel.from_pretrained(tmp_path, ignore_mismatched_sizes=True, output_loading_info=True)
    assert info["missing_keys"] == ["text_projection.weight"]
    assert info["mismatched_keys"] == [("visual_projection.weight", (24, 48), (5, 48))]
    assert loaded.params["text_projection"]["kernel"].shape == (32, 24)
    np.testing.assert_array_equal(loaded.params["logit_scale"], model.params["logit_scale"])


def test_bfloat16_params_round_trip(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPVisionModel")
    model.save_pretrained(tmp_path)
    low = ours.FlaxCLIPVisionModel.from_pretrained(tmp_path, param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(low.params)} == {jnp.dtype(jnp.bfloat16)}
    low.save_pretrained(tmp_path / "bf16")
    assert (
        io.read_safetensors(tmp_path / "bf16" / "model.safetensors")["vision_model.pre_layrnorm.weight"].dtype.name
        == "bfloat16"
    )


def test_load_errors(tmp_path):
    with pytest.raises(OSError, match="no such directory"):
        ours.FlaxCLIPModel.from_pretrained(str(tmp_path / "absent"))
    model, _ = make_pair("quick_gelu", "CLIPTextModel")
    model.config.save_pretrained(tmp_path)
    with pytest.raises(OSError, match="no weights found"):
        ours.FlaxCLIPTextModel.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="unexpected argument"):
        ours.FlaxCLIPTextModel.from_pretrained(FIXTURE, not_a_field=1)
    with pytest.raises(TypeError, match="needs a CLIPConfig"):
        ours.FlaxCLIPModel(model.config)


def test_do_init_false_returns_model_and_params_as_transformers(reference):
    model, params = ours.FlaxCLIPModel.from_pretrained(FIXTURE, _do_init=False, from_pt=False, trust_remote_code=False)
    theirs, their_params = transformers.FlaxCLIPModel.from_pretrained(FIXTURE, _do_init=False)
    assert jax.tree.structure(params) == jax.tree.structure(their_params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(their_params)))
    model, params, info = ours.FlaxCLIPModel.from_pretrained(FIXTURE, _do_init=False, output_loading_info=True)
    assert info["missing_keys"] == []
    for without_params in (model, theirs):  # _do_init=False keeps no params, in both
        with pytest.raises(ValueError, match="_do_init=False"):
            without_params.params  # noqa: B018
    with pytest.raises(OSError, match="model.safetensors"):
        ours.FlaxCLIPModel.from_pretrained(FIXTURE, use_safetensors=True)
