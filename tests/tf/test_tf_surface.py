"""transformers' TFPreTrainedModel surface of clip.tf, called the way its docs and TFModelTesterMixin
call it, on ours and on transformers 4.57's TF CLIP (same checkpoint) side by side."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tf_helpers import as_tf, inputs_for, make_inputs, make_pair, ours, tf, torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
keras = pytest.importorskip("keras")

MODELS = ["CLIPModel", "CLIPTextModel", "CLIPVisionModel"]  # the TF classes transformers has


def _theirs(model_class, ref, path):
    # transformers' TF loader cannot iterate this safetensors version's files: give it the .bin
    ref.save_pretrained(path, safe_serialization=False)
    return getattr(transformers, "TF" + model_class).from_pretrained(path, from_pt=True)


def _fields(config):
    """The model-defining fields of one of our configs (the generic flags aside)."""
    if hasattr(config, "text_config"):
        return _fields(config.text_config), _fields(config.vision_config), config.projection_dim
    return {name: getattr(config, name) for name in config.defaults}


def _first(output):
    return np.asarray(output[0])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{model class: (our model, transformers' TF model, checkpoint directory)} sharing weights."""
    out = {}
    for model_class in MODELS:
        path = tmp_path_factory.mktemp(model_class)
        model, ref = make_pair("quick_gelu", model_class, path)
        out[model_class] = (model, _theirs(model_class, ref, path / "bin"), path)
    return out


@pytest.mark.parametrize("model_class", MODELS)
@pytest.mark.parametrize("form", ["transformers", "dict"])
def test_models_take_transformers_configs_and_dicts(checkpoints, model_class, form):
    model, theirs, path = checkpoints[model_class]
    config = theirs.config if form == "transformers" else theirs.config.to_dict()
    built = getattr(ours, "TF" + model_class)(config)
    assert type(built.config).__module__ == "clip.common.config"
    assert _fields(built.config) == _fields(model.config)
    loaded = getattr(ours, "TF" + model_class).from_pretrained(path, config=theirs.config)
    inputs = as_tf(inputs_for(model_class, make_inputs("quick_gelu")))
    assert np.abs(_first(loaded(**inputs)) - _first(theirs(**inputs))).max() <= 1e-5


@pytest.mark.parametrize("model_class", MODELS)
def test_inputs_as_the_first_positional_argument(checkpoints, model_class):
    model, theirs, _ = checkpoints[model_class]
    inputs = inputs_for(model_class, make_inputs("quick_gelu"))
    expected = _first(theirs(**as_tf(inputs)))
    text = {k: v for k, v in inputs.items() if k != "pixel_values"}
    pixels = {k: v for k, v in inputs.items() if k == "pixel_values"}
    forms = [as_tf(inputs), inputs, transformers.BatchEncoding({**text, **pixels})]
    if pixels and text:
        forms.append({**transformers.BatchEncoding(text), **transformers.BatchFeature(pixels)})
    if text:
        # a list in the call's order: (input_ids, pixel_values, attention_mask) for CLIPModel
        order = ("input_ids", "pixel_values", "attention_mask") if pixels else ("input_ids", "attention_mask")
        forms.append([tf.constant(inputs[name]) for name in order])
    for form in forms:
        assert np.abs(_first(model(form)) - expected).max() <= 1e-5, type(form)
        if isinstance(form, dict):  # transformers' own model takes the same forms
            assert np.abs(_first(theirs(form)) - expected).max() <= 1e-5
    with pytest.raises(ValueError, match="keys"):
        model({**as_tf(inputs), "labels": tf.constant([1])})


@pytest.mark.parametrize("model_class", MODELS)
def test_input_signature_dummy_inputs_and_serving(checkpoints, model_class):
    model, theirs, _ = checkpoints[model_class]
    mine, their_spec = model.input_signature, theirs.input_signature
    assert {k: (tuple(v.shape), v.dtype) for k, v in mine.items()} == {
        k: (tuple(v.shape), v.dtype) for k, v in their_spec.items()
    }
    dummies, their_dummies = model.dummy_inputs, theirs.dummy_inputs
    assert {k: v.dtype for k, v in dummies.items()} == {k: v.dtype for k, v in their_dummies.items()}
    assert np.abs(_first(model(dummies)) - _first(theirs(dummies))).max() <= 1e-5
    served, their_served = model.serving(their_dummies), theirs.serving(their_dummies)
    for key, value in their_served.items():
        if isinstance(value, tf.Tensor):
            assert np.abs(np.asarray(served[key]) - np.asarray(value)).max() <= 1e-5, key
    assert isinstance(model.serving_output(model(dummies)), dict)


@pytest.mark.parametrize("model_class", MODELS)
def test_attributes_and_parameter_counts(checkpoints, model_class):
    model, theirs, _ = checkpoints[model_class]
    for name in ("base_model_prefix", "main_input_name", "framework"):
        assert getattr(model, name) == getattr(theirs, name), name
    assert model.can_generate() is theirs.can_generate() is False
    assert model.num_parameters() == theirs.num_parameters()
    assert model.num_parameters(only_trainable=True) == theirs.num_parameters(only_trainable=True)
    assert model.get_output_embeddings() is None and theirs.get_output_embeddings() is None
    clone = type(model)._from_config(theirs.config)
    assert _fields(clone.config) == _fields(model.config)


def test_text_input_embeddings_get_and_set(checkpoints):
    model, theirs, _ = checkpoints["CLIPTextModel"]
    table = (
        np.random.default_rng(0)
        .standard_normal(tuple(model.get_input_embeddings().embeddings.shape))
        .astype(np.float32)
    )
    before = _first(model(**as_tf(inputs_for("CLIPTextModel", make_inputs("quick_gelu")))))
    model.set_input_embeddings(table)
    np.testing.assert_array_equal(model.get_input_embeddings().embeddings.numpy(), table)
    after = _first(model(**as_tf(inputs_for("CLIPTextModel", make_inputs("quick_gelu")))))
    assert np.abs(after - before).max() > 1e-3
    with pytest.raises(ValueError, match="shape"):
        model.set_input_embeddings(table[:3])


def test_keras_save_and_load_model_with_a_dict_input(checkpoints, tmp_path):
    model, theirs, _ = checkpoints["CLIPModel"]
    inputs = as_tf(make_inputs("quick_gelu"))
    path = str(tmp_path / "clip.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    expected = _first(theirs(inputs))
    assert np.abs(_first(loaded(inputs)) - expected).max() <= 1e-5
    assert np.abs(_first(loaded(**inputs)) - expected).max() <= 1e-5


def test_prepare_tf_dataset_batches_the_model_inputs(checkpoints):
    model, _, _ = checkpoints["CLIPModel"]
    inputs = make_inputs("quick_gelu", batch=5)
    columns = {k: list(v) for k, v in inputs.items()}
    columns["caption"] = ["a", "b", "c", "d", "e"]  # not an input: dropped as transformers does
    data = model.prepare_tf_dataset(columns, batch_size=2, shuffle=False)
    batches = list(data)
    assert len(batches) == 3 and data.cardinality().numpy() == 3
    assert set(batches[0]) == {"input_ids", "attention_mask", "pixel_values"}
    np.testing.assert_array_equal(np.concatenate([b["input_ids"].numpy() for b in batches]), inputs["input_ids"])
    np.testing.assert_array_equal(batches[2]["pixel_values"].numpy(), inputs["pixel_values"][4:])
    dropped = list(model.prepare_tf_dataset(columns, batch_size=2, shuffle=True))  # shuffling drops the remainder
    assert len(dropped) == 2 and sorted(np.concatenate([b["input_ids"].numpy()[:, 0] for b in dropped])) != []
    out = model(dict(batches[0]))  # a batch is a valid first argument
    assert out.logits_per_image.shape == (2, 2)


def test_sharded_save_pretrained_loads_in_transformers(checkpoints, tmp_path):
    model, _, path = checkpoints["CLIPModel"]
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all(os.path.isfile(tmp_path / s) for s in shards)
    assert index["metadata"]["total_parameters"] == model.num_parameters()
    reference = transformers.CLIPModel.from_pretrained(path).eval()
    resharded = transformers.CLIPModel.from_pretrained(tmp_path).eval()
    for name, value in reference.state_dict().items():
        assert torch.equal(resharded.state_dict()[name], value), name
    again = ours.TFCLIPModel.from_pretrained(tmp_path)
    inputs = as_tf(make_inputs("quick_gelu"))
    assert np.abs(_first(again(inputs)) - _first(model(inputs))).max() <= 1e-5
