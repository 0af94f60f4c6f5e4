"""clip.tf against clip.pt on random weights: outputs (eager and XLA), training step, Keras conventions, errors."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

import clip.tf as ours
from clip.tf import loading
from clip.common import params
from tf_helpers import CLASSES, as_tf, as_torch, assert_close_outputs, inputs_for, make_config, make_inputs, make_pair


def run_both(model, ref, model_class, inputs, compiled=False, **kwargs):
    if model_class == "CLIPModel":
        kwargs.setdefault("return_loss", True)
    inputs = inputs_for(model_class, inputs)
    with torch.no_grad():
        expected = ref(**as_torch(inputs), **kwargs)
    call = (
        tf.function(lambda **kw: model(**kw, **kwargs), jit_compile=True)
        if compiled
        else (lambda **kw: model(**kw, **kwargs))
    )
    return call(**as_tf(inputs)), expected


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("name", ["quick_gelu", "gelu", "legacy_eos"])
@pytest.mark.parametrize("model_class", CLASSES)
def test_outputs_match_pt(tmp_path, name, model_class, compiled):
    model, ref = make_pair(name, model_class, tmp_path)
    inputs = make_inputs(name)
    out, expected = run_both(
        model, ref, model_class, inputs, compiled, output_hidden_states=True, output_attentions=True
    )
    assert assert_close_outputs(out, expected) >= 5
    out, expected = run_both(model, ref, model_class, inputs, compiled, return_dict=False)
    assert isinstance(out, tuple)
    assert_close_outputs(out, expected)


@pytest.mark.parametrize("image_size", [24, (24, 32), 16])
@pytest.mark.parametrize("model_class", ["CLIPModel", "CLIPVisionModelWithProjection"])
def test_interpolate_pos_encoding(tmp_path, model_class, image_size):
    model, ref = make_pair("quick_gelu", model_class, tmp_path)
    inputs = make_inputs("quick_gelu", image_size=image_size)
    for compiled in (False, True):
        out, expected = run_both(
            model, ref, model_class, inputs, compiled, interpolate_pos_encoding=True, output_hidden_states=True
        )
        assert_close_outputs(out, expected)


def test_features_position_ids_and_padding(tmp_path):
    model, ref = make_pair("gelu", "CLIPModel", tmp_path)
    inputs = make_inputs("gelu")
    t, tt = as_tf(inputs), as_torch(inputs)
    with torch.no_grad():
        assert_close_outputs(
            model.get_text_features(t["input_ids"], t["attention_mask"]),
            ref.get_text_features(tt["input_ids"], tt["attention_mask"]),
        )
        assert_close_outputs(model.get_image_features(t["pixel_values"]), ref.get_image_features(tt["pixel_values"]))
        unpadded = make_inputs("gelu", padded=False)
        del unpadded["attention_mask"]  # the causal bias alone
        unpadded["position_ids"] = np.array([[3, 2, 1, 0, 4, 5, 6]])
        out, expected = run_both(model, ref, "CLIPModel", unpadded)
        assert_close_outputs(out, expected)
        ids, mask = inputs["input_ids"].copy(), np.ones_like(inputs["input_ids"])
        mask[0, :3] = 0  # left padding: rows 0..2 of sequence 0 see no key at all
        text_out = model.text_model(tf.constant(ids), tf.constant(mask), output_hidden_states=True)
        assert_close_outputs(
            text_out, ref.text_model(torch.from_numpy(ids), torch.from_numpy(mask), output_hidden_states=True)
        )


def test_dict_batch_and_output_access(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPModel", tmp_path)
    inputs = as_tf(make_inputs("quick_gelu"))
    out = model(inputs)  # one dict, as Keras' predict/fit pass a batch
    assert out.logits_per_image is out["logits_per_image"] is out[0]
    assert "loss" not in out.keys()
    np.testing.assert_allclose(out.logits_per_text.numpy(), out.logits_per_image.numpy().T)


def test_fit_one_sgd_step_matches_torch(tmp_path):
    model, ref = make_pair("quick_gelu", "CLIPModel", tmp_path)
    inputs = make_inputs("quick_gelu")
    # torch: one plain SGD step on the contrastive loss
    ref.train()
    optimizer = torch.optim.SGD(ref.parameters(), lr=0.5)
    ref(**as_torch(inputs), return_loss=True).loss.backward()
    optimizer.step()
    # keras: compile + fit on a tf.data pipeline of (input_ids, attention_mask, pixel_values)
    data = tf.data.Dataset.from_tensor_slices(
        (inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"])
    ).batch(3)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    history = model.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    expected = {n: p.detach().numpy() for n, p in ref.state_dict().items()}
    moved = 0
    for name, value in loading.canonical_state(model).items():
        diff = np.abs(value - expected[name]).max()
        assert diff <= 1e-5, f"{name}: max abs diff {diff:.3g} after one SGD step"
        moved += 1
    assert moved == len(expected)
    assert model.evaluate(data, verbose=0) == pytest.approx(
        float(ref.eval()(**as_torch(inputs), return_loss=True).loss), abs=1e-5
    )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_logits_finite(tmp_path, policy):
    _, ref = make_pair("quick_gelu", "CLIPModel", tmp_path)
    model = ours.TFCLIPModel.from_pretrained(tmp_path, dtype=policy)
    model.logit_scale.assign(12.0)  # exp(12) = 162755 > float16's 65504
    inputs = as_tf(make_inputs("quick_gelu"))
    out = model(**inputs, return_loss=True)
    compute = policy.split("_")[1]
    assert out.text_model_output.last_hidden_state.dtype == compute and out.text_embeds.dtype == compute
    assert model.logit_scale.dtype == "float32" and model.text_projection.kernel.dtype == "float32"
    assert (
        out.logits_per_image.dtype == tf.float32
        and np.isfinite(out.logits_per_image.numpy()).all()
        and np.isfinite(out.loss.numpy())
    )
    model.logit_scale.assign(4.6052)
    full = ours.TFCLIPModel.from_pretrained(tmp_path)
    full.logit_scale.assign(4.6052)
    assert np.abs(model(**inputs).logits_per_image.numpy() - full(**inputs).logits_per_image.numpy()).max() < 0.5
    # a training step under the policy (LossScaleOptimizer for float16)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    assert np.isfinite(model.train_on_batch(inputs))


def test_keras_serialization_round_trip(tmp_path):
    model, _ = make_pair("gelu", "CLIPModel", tmp_path / "ckpt")
    inputs = as_tf(make_inputs("gelu"))
    expected = model(**inputs).logits_per_image.numpy()
    config = model.get_config()
    clone = ours.TFCLIPModel.from_config(config)
    assert clone.config == model.config and clone.get_config() == config
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is ours.TFCLIPModel and loaded.config == model.config
    np.testing.assert_array_equal(loaded(**inputs).logits_per_image.numpy(), expected)


def test_saved_model_serving_signatures_match_pt(tmp_path):
    """TF Serving's format: a SavedModel with open batch and text length, reloaded without clip."""
    model, ref = make_pair("gelu", "CLIPModel", tmp_path / "ckpt")
    text, vision = model.config.text_config, model.config.vision_config
    size = vision.image_size

    @tf.function(input_signature=[tf.TensorSpec([None, 3, size, size], tf.float32)])
    def image_embeds(pixel_values):
        return {"image_embeds": model.get_image_features(pixel_values=pixel_values)}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64), tf.TensorSpec([None, None], tf.int64)])
    def text_embeds(input_ids, attention_mask):
        return {"text_embeds": model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)}

    path = str(tmp_path / "saved_model")
    tf.saved_model.save(model, path, signatures={"image": image_embeds, "text": text_embeds})
    served = tf.saved_model.load(path)
    inputs = make_inputs("gelu", batch=5, seed=3)  # a batch size the functions were not traced with
    with torch.no_grad():
        expected_image = ref.get_image_features(pixel_values=torch.from_numpy(inputs["pixel_values"])).numpy()
        expected_text = ref.get_text_features(**as_torch(inputs_for("CLIPTextModel", inputs))).numpy()
    got_image = served.signatures["image"](pixel_values=tf.constant(inputs["pixel_values"]))["image_embeds"].numpy()
    got_text = served.signatures["text"](**as_tf(inputs_for("CLIPTextModel", inputs)))["text_embeds"].numpy()
    assert np.abs(got_image - expected_image).max() <= 1e-5
    assert np.abs(got_text - expected_text).max() <= 1e-5
    assert text.max_position_embeddings >= inputs["input_ids"].shape[1]


@pytest.mark.parametrize("model_class", ["CLIPTextModelWithProjection", "CLIPVisionModel"])
def test_sub_models_keras_round_trip(tmp_path, model_class):
    model = getattr(ours, "TF" + model_class)(make_config("quick_gelu", model_class))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    inputs = as_tf(inputs_for(model_class, make_inputs("quick_gelu")))
    np.testing.assert_array_equal(loaded(**inputs)[0].numpy(), model(**inputs)[0].numpy())


def test_summary_and_variable_paths():
    model = ours.TFCLIPModel(make_config("quick_gelu", "CLIPModel"))
    lines = []
    model.summary(print_fn=lambda line, **kw: lines.append(line))
    assert any("text_model" in line for line in lines)
    paths = {v.path for v in model.weights}
    assert f"{model.name}/text_model/encoder/layers.1/self_attn/q_proj/kernel" in paths
    assert f"{model.name}/vision_model/pre_layrnorm/gamma" in paths


def test_initialization_follows_the_shared_spec():
    config = make_config("quick_gelu", "CLIPModel", logit_scale_init_value=2.5)
    keras.utils.set_random_seed(0)
    model = ours.TFCLIPModel(config)
    table = params.parameter_table(config, "CLIPModel")
    for name, (variable, _) in model.canonical_variables().items():
        value, spec = variable.numpy(), table[name].init
        if spec[0] == "normal":
            assert abs(value.std() - spec[1]) <= 6 * spec[1] / (2 * value.size) ** 0.5 + 1e-7, name
        else:
            assert np.all(value == {"zeros": 0.0, "ones": 1.0}.get(spec[0], spec[-1])), name


# -- argument errors ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return ours.TFCLIPModel(make_config("quick_gelu", "CLIPModel")), make_inputs("quick_gelu")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: i.update(pixel_values=np.zeros((3, 3, 17, 17), np.float32)), "16x16"),
        (lambda i: i.update(pixel_values=np.zeros((3, 16, 16), np.float32)), "3-D"),
        (lambda i: i.update(pixel_values=np.zeros((3, 1, 16, 16), np.float32)), "channels"),
        (lambda i: i.update(pixel_values=np.zeros((3, 3, 16, 16), np.uint8)), "floating"),
        (lambda i: i.update(input_ids=i["input_ids"].astype(np.float32)), "integer"),
        (lambda i: i.update(input_ids=np.ones((3, 17), np.int64), attention_mask=None), "max_position_embeddings"),
        (lambda i: i.update(input_ids=i["input_ids"][0]), "batch_size, sequence_length"),
        (lambda i: i.update(input_ids=i["input_ids"][:, :, None]), "3-D shape"),  # more dims than expected: seen too
        (lambda i: i.update(pixel_values=i["pixel_values"][..., None]), "5-D shape"),
        (lambda i: i.update(attention_mask=i["attention_mask"][:, :5]), "attention_mask"),
        (lambda i: i.update(pixel_values=i["pixel_values"][:2]), "2 images"),
        (lambda i: i.update(input_ids=None), "input_ids are required"),
        (lambda i: i.update(pixel_values=None), "pixel_values are required"),
    ],
)
def test_bad_arguments_raise_value_error(tiny, change, message):
    model, inputs = tiny
    inputs = dict(inputs)
    change(inputs)
    inputs = {k: (tf.constant(v) if v is not None else None) for k, v in inputs.items()}
    with pytest.raises(ValueError, match=message):
        model(**inputs, return_loss=True)


def test_errors_inside_tf_function_use_static_shapes(tiny):
    model, inputs = tiny
    spec = tf.TensorSpec((None, 3, 17, 17), tf.float32)
    with pytest.raises(ValueError, match="16x16"):
        tf.function(lambda x: model.get_image_features(x), input_signature=[spec]).get_concrete_function()
    # unknown batch and length: checked where known, traced without error
    ids = tf.TensorSpec((None, None), tf.int64)
    fn = tf.function(lambda x, m: model.get_text_features(x, m), input_signature=[ids, ids])
    out = fn(tf.constant(inputs["input_ids"]), tf.constant(inputs["attention_mask"]))
    assert out.shape == (3, 24)


def test_interpolate_rejects_images_smaller_than_a_patch(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="smaller than one"):
        model.get_image_features(tf.zeros((1, 3, 2, 2)), interpolate_pos_encoding=True)


def test_wrong_config_type():
    with pytest.raises(TypeError, match="CLIPTextConfig"):
        ours.TFCLIPTextModel(make_config("quick_gelu", "CLIPVisionModel"))


def test_other_keras_backend_is_refused():
    code = "import clip.tf"
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "ImportError" in proc.stderr and "KERAS_BACKEND='jax'" in proc.stderr


@pytest.mark.parametrize("name", ["quick_gelu", "gelu", "legacy_eos"])
def test_pooled_only_features_match_pt(tmp_path, name):
    # get_*_features run only the pooled token through the last layer, as clip.pt
    model, ref = make_pair(name, "CLIPModel", tmp_path)
    inputs = make_inputs(name)
    ids, mask = inputs["input_ids"], inputs["attention_mask"].copy()
    mask[0, :2] = 0  # left padding as well
    for compiled in (False, True):
        text = tf.function(model.get_text_features, jit_compile=True) if compiled else model.get_text_features
        with torch.no_grad():
            assert_close_outputs(
                text(tf.constant(ids), tf.constant(mask)),
                ref.get_text_features(torch.from_numpy(ids), torch.from_numpy(mask)),
            )
            assert_close_outputs(text(tf.constant(ids)), ref.get_text_features(torch.from_numpy(ids)))
            image = model.get_image_features(tf.constant(inputs["pixel_values"]))
            assert_close_outputs(image, ref.get_image_features(torch.from_numpy(inputs["pixel_values"])))
