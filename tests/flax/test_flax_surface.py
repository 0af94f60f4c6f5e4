"""transformers' FlaxPreTrainedModel surface of clip.flax, called the way its docs and
FlaxModelTesterMixin call it, on ours and on transformers 4.57's Flax CLIP side by side."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from flax_helpers import assert_close, inputs_for, jax, jnp, make_inputs, make_pair, ours, torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "transformers_flax")
MODELS = ["CLIPModel", "CLIPTextModel", "CLIPVisionModel"]


def _their_config(our_config):
    cls = {
        "CLIPConfig": transformers.CLIPConfig,
        "CLIPTextConfig": transformers.CLIPTextConfig,
        "CLIPVisionConfig": transformers.CLIPVisionConfig,
    }[type(our_config).__name__]
    return cls(**our_config.to_dict())


def _shapes(tree):
    return jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), tree)


@pytest.mark.parametrize("model_class", MODELS)
@pytest.mark.parametrize("form", ["transformers", "dict"])
def test_models_take_transformers_configs_and_dicts(model_class, form):
    model, _ = make_pair("quick_gelu", model_class)
    their_config = _their_config(model.config)
    built = getattr(ours, "Flax" + model_class)(
        their_config if form == "transformers" else their_config.to_dict(), _do_init=False
    )
    assert type(built.config).__module__ == "clip.common.config"
    inputs = inputs_for(model_class, make_inputs("quick_gelu"))
    run = jax.jit(lambda m, p, x: m(**x, params=p), static_argnums=0)  # eager JAX is slow on tiny shapes
    assert_close(run(built, model.params, inputs), run(model, model.params, inputs))


@pytest.mark.parametrize("model_class", MODELS)
def test_do_init_false_init_weights_and_shapes_as_transformers(model_class):
    model, _ = make_pair("quick_gelu", model_class)
    their_config = _their_config(model.config)
    mine = getattr(ours, "Flax" + model_class)(their_config, _do_init=False)
    theirs = getattr(transformers, "Flax" + model_class)(their_config, _do_init=False)
    inputs = inputs_for(model_class, make_inputs("quick_gelu"))
    for without in (mine, theirs):
        with pytest.raises(ValueError, match="_do_init=False"):
            without.params  # noqa: B018
        with pytest.raises(ValueError, match="_do_init=False"):
            without(**inputs)
    assert mine.input_shape == theirs.input_shape
    key = jax.random.PRNGKey(0)
    params, their_params = mine.init_weights(key, mine.input_shape), theirs.init_weights(key, theirs.input_shape)
    assert _shapes(params) == _shapes(jax.tree.map(np.asarray, dict(their_params)))
    assert _shapes(mine.params_shape_tree) == _shapes(dict(theirs.params_shape_tree))
    assert np.isfinite(np.asarray(jax.jit(lambda p: mine(**inputs, params=p)[0])(params))).all()  # the drawn params run
    for name in ("base_model_prefix", "main_input_name", "framework"):
        assert getattr(mine, name) == getattr(theirs, name), name
    assert mine.can_generate() is theirs.can_generate() is False
    assert mine.config_class.__name__ == theirs.config_class.__name__
    assert mine.module is not None and theirs.module is not None


def test_init_weights_fills_only_the_missing_leaves():
    model, _ = make_pair("quick_gelu", "CLIPModel")
    partial = {k: v for k, v in model.params.items() if k != "text_projection"}
    full = model.init_weights(jax.random.PRNGKey(3), model.input_shape, params=partial)
    assert set(full) == set(model.params)
    assert full["text_projection"]["kernel"].shape == model.params["text_projection"]["kernel"].shape
    for a, b in zip(jax.tree.leaves(full["vision_model"]), jax.tree.leaves(model.params["vision_model"])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cast", ["to_bf16", "to_fp16", "to_fp32"])
def test_dtype_casts_with_and_without_a_mask(cast):
    model, _ = make_pair("quick_gelu", "CLIPModel")
    theirs = transformers.FlaxCLIPModel(_their_config(model.config), _do_init=False)
    params = model.params if cast != "to_fp32" else model.to_bf16(model.params)
    # transformers' documented use: a mask leaving the LayerNorm scales/biases alone
    mask = jax.tree_util.tree_map_with_path(
        lambda path, _: "layer_norm" not in jax.tree_util.keystr(path) and "layrnorm" not in jax.tree_util.keystr(path),
        params,
    )
    for kwargs in ({}, {"mask": mask}):
        mine, their = getattr(model, cast)(params, **kwargs), getattr(theirs, cast)(params, **kwargs)
        their = jax.tree.map(np.asarray, dict(their))
        assert _shapes(mine) == _shapes(their)
        for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(their)):
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    masked = getattr(model, cast)(params, mask=mask)
    assert (
        masked["text_model"]["final_layer_norm"]["scale"].dtype
        == params["text_model"]["final_layer_norm"]["scale"].dtype
    )


def test_from_pretrained_with_bfloat16_compute_matches_transformers():
    mine = ours.FlaxCLIPModel.from_pretrained(FIXTURE, dtype=jnp.bfloat16)
    theirs, their_params = transformers.FlaxCLIPModel.from_pretrained(FIXTURE, dtype=jnp.bfloat16, _do_init=False)
    assert mine.dtype == theirs.dtype == jnp.bfloat16
    assert (
        {x.dtype for x in jax.tree.leaves(mine.params)}
        == {x.dtype for x in jax.tree.leaves(their_params)}
        == {jnp.dtype("float32")}
    )
    config = mine.config
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config.text_config.vocab_size - 1, (2, 6))
    ids[:, -1] = config.text_config.vocab_size - 1  # the highest id: the pooled token under every rule
    size = config.vision_config.image_size
    pixels = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    a = jax.jit(lambda p: mine(ids, pixels, params=p).logits_per_image)(mine.params)
    b = jax.jit(lambda p: theirs(ids, pixels, params=p).logits_per_image)(their_params)
    full = jax.jit(lambda p: mine(ids, pixels, params=p).logits_per_image)(mine.to_bf16(mine.params))
    assert (
        np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max()
        <= 0.1 + 0.05 * np.abs(np.asarray(full)).max()
    )


def test_sharded_save_pretrained_loads_in_transformers(tmp_path):
    model, ref = make_pair("gelu", "CLIPModel")
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    loaded = transformers.CLIPModel.from_pretrained(tmp_path).eval()
    for name, value in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    again = ours.FlaxCLIPModel.from_pretrained(tmp_path)
    logits = jax.jit(lambda m, p, x: m(**x, params=p).logits_per_image, static_argnums=0)
    inputs = make_inputs("gelu")
    expected = logits(model, model.params, inputs)
    np.testing.assert_array_equal(logits(again, again.params, inputs), expected)
    model.save_pretrained(tmp_path, safe_serialization=False)  # transformers' Flax default: its msgpack
    assert (tmp_path / "flax_model.msgpack").is_file() and not (tmp_path / "model.safetensors.index.json").exists()
    theirs, their_params = transformers.FlaxCLIPModel.from_pretrained(tmp_path, _do_init=False)  # no jitted init
    assert np.abs(np.asarray(logits(theirs, their_params, inputs)) - np.asarray(expected)).max() <= 1e-5
