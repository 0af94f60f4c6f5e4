"""clip.flax against clip.pt on the same random weights: outputs, loss and gradients, jitted and not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import clip.flax as ours
from clip.flax import loading
from clip.common.weights import bicubic_resize_matrix
from flax_helpers import (
    CLASSES,
    CONFIGS,
    assert_close,
    flatten,
    inputs_for,
    make_inputs,
    make_pair,
    scalar_of,
    torch_inputs,
)


def loss_kwargs(model_class):
    return {"return_loss": True} if model_class == "CLIPModel" else {}


def pt_grads(ref, model_class, inputs, **kwargs):
    ref.zero_grad()
    out = ref(**torch_inputs(inputs_for(model_class, inputs)), **loss_kwargs(model_class), **kwargs)
    scalar_of(out).backward()
    return out, {n: p.grad for n, p in ref.named_parameters()}


def assert_grads_close(model, grads, ref_grads, atol=1e-5):
    canonical = loading.from_params(grads, loading.expected_parameters(model))
    assert sorted(canonical) == sorted(ref_grads)
    for name, g in canonical.items():
        expected = ref_grads[name]
        expected = np.zeros(g.shape) if expected is None else expected.double().numpy()
        diff = np.abs(np.asarray(g, np.float64) - expected).max()
        assert diff <= atol, f"grad of {name}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("model_class", CLASSES)
def test_outputs_and_gradients_match_pt(name, model_class):
    model, ref = make_pair(name, model_class)
    inputs = inputs_for(model_class, make_inputs(name))
    expected, ref_grads = pt_grads(ref, model_class, inputs, output_hidden_states=True)

    def run(params):
        out = model(**inputs, params=params, output_hidden_states=True, **loss_kwargs(model_class))
        return scalar_of(out), out

    (_, out), grads = jax.jit(jax.value_and_grad(run, has_aux=True))(model.params)  # one compilation
    assert_close(out, expected)
    assert_grads_close(model, grads, ref_grads)


def test_eager_call_equals_jitted():
    model, ref = make_pair("quick_gelu", "CLIPModel")
    inputs = make_inputs("quick_gelu")
    with torch.no_grad():
        expected = ref(**torch_inputs(inputs), return_loss=True)
    assert_close(model(**inputs, return_loss=True), expected)  # no jit, op by op


@pytest.mark.parametrize("model_class", CLASSES)
def test_attentions_and_tuples_match_pt(model_class):
    model, ref = make_pair("quick_gelu", model_class)
    inputs = inputs_for(model_class, make_inputs("quick_gelu"))
    kwargs = dict(output_attentions=True, output_hidden_states=True, return_dict=False, **loss_kwargs(model_class))
    with torch.no_grad():
        expected = ref(**torch_inputs(inputs), **kwargs)
    out = jax.jit(lambda p, x: model(**x, params=p, **kwargs))(model.params, inputs)
    assert isinstance(out, tuple)
    assert_close(out, expected)
    assert sum(v is not None for v in flatten(out).values()) > 5


@pytest.mark.parametrize(
    "model_class, image_size",
    [
        ("CLIPModel", (24, 32)),
        ("CLIPModel", 16),
        ("CLIPVisionModelWithProjection", 24),
        ("CLIPVisionModelWithProjection", (8, 12)),
    ],
)
def test_interpolate_pos_encoding(model_class, image_size):
    model, ref = make_pair("quick_gelu", model_class)
    inputs = inputs_for(model_class, make_inputs("quick_gelu", image_size=image_size))
    with torch.no_grad():
        expected = ref(**torch_inputs(inputs), interpolate_pos_encoding=True, output_hidden_states=True)
    run = jax.jit(lambda p, x: model(**x, params=p, interpolate_pos_encoding=True, output_hidden_states=True))
    assert_close(run(model.params, inputs), expected)
    if model_class == "CLIPModel":
        features = model.get_image_features(inputs["pixel_values"], interpolate_pos_encoding=True)
        with torch.no_grad():
            ref_features = ref.get_image_features(
                torch.from_numpy(inputs["pixel_values"]), interpolate_pos_encoding=True
            )
        assert_close(features, ref_features)


@pytest.mark.parametrize("size_in, size_out", [(4, 6), (4, 2), (7, 3), (3, 8), (5, 5)])
def test_bicubic_matches_torch(size_in, size_out):
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((size_in, size_in)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(grid)[None, None], size=(size_out, size_out), mode="bicubic", align_corners=False
    )[0, 0].numpy()
    m = bicubic_resize_matrix(size_in, size_out)
    assert np.abs(m @ grid @ m.T - expected).max() <= 1e-5


def test_get_features_position_ids_and_unpadded_batches():
    model, ref = make_pair("gelu", "CLIPModel")
    inputs = make_inputs("gelu", padded=False)
    positions = np.array([[3, 1, 4, 1, 5, 9, 2]])
    no_mask = {k: v for k, v in inputs.items() if k != "attention_mask"}
    calls = {  # name: (call on ours or pt, the inputs it takes)
        "text": (lambda m, x: m.get_text_features(x["input_ids"], x["attention_mask"]), inputs),
        "image": (lambda m, x: m.get_image_features(x["pixel_values"]), inputs),
        "mask of ones": (lambda m, x: m(**x), inputs),  # the bias path: the values of causal alone
        "no mask": (lambda m, x: m(**x), no_mask),  # the causal kernel
        "position_ids": (lambda m, x: m(**x), {**no_mask, "position_ids": positions}),
    }
    for name, (call, x) in calls.items():
        out = jax.jit(lambda p, x: call(_Bound(model, p), x))(model.params, x)
        with torch.no_grad():
            assert_close(out, call(ref, torch_inputs(x)))


def test_text_model_is_jittable_without_host_reads():
    # the pooled index and the padding mask are computed with jnp ops: a fully traced call works
    model, ref = make_pair("legacy_eos", "CLIPTextModelWithProjection")
    inputs = inputs_for("CLIPTextModelWithProjection", make_inputs("legacy_eos"))
    out = jax.jit(lambda p, ids, mask: model(ids, mask, params=p).text_embeds)(
        model.params, inputs["input_ids"], inputs["attention_mask"]
    )
    with torch.no_grad():
        assert_close(out, ref(**torch_inputs(inputs)).text_embeds)


def test_bfloat16_and_param_dtype():
    model, _ = make_pair("quick_gelu", "CLIPModel")
    inputs = make_inputs("quick_gelu")
    reference = jax.jit(lambda p: model(**inputs, params=p))(model.params)
    low = ours.FlaxCLIPModel(model.config, dtype=jnp.bfloat16, _do_init=False)
    low.params = model.params
    out = jax.jit(lambda p: low(**inputs, params=p, return_loss=True))(low.params)
    assert out.text_embeds.dtype == jnp.bfloat16 and out.loss.dtype == jnp.float32
    assert np.abs(np.asarray(out.logits_per_image, np.float32) - np.asarray(reference.logits_per_image)).max() < 0.5
    stored = ours.FlaxCLIPModel(model.config, param_dtype=jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(stored.params)} == {jnp.dtype(jnp.bfloat16)}


def test_training_dropout_and_gradient_checkpointing():
    model, _ = make_pair("quick_gelu", "CLIPModel")
    inputs = make_inputs("quick_gelu")
    loss = lambda p: model(**inputs, params=p, return_loss=True).loss  # noqa: E731
    plain = jax.jit(jax.grad(loss))(model.params)
    model.gradient_checkpointing_enable()
    checkpointed = jax.jit(jax.grad(loss))(model.params)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), plain, checkpointed))
    assert max(diffs) <= 1e-5
    model.gradient_checkpointing_disable()

    config = type(model.config).from_dict(model.config.to_dict())
    config.vision_config.attention_dropout = 0.5
    dropped = ours.FlaxCLIPModel(config, _do_init=False)
    dropped.params = model.params
    with pytest.raises(ValueError, match="dropout_rng"):
        dropped(**inputs, train=True)
    run = jax.jit(
        lambda p, rng, train: dropped(**inputs, params=p, train=train, dropout_rng=rng).logits_per_image,
        static_argnums=2,
    )
    a, b = run(dropped.params, jax.random.key(0), True), run(dropped.params, jax.random.key(1), True)
    c = run(dropped.params, jax.random.key(0), False)  # deterministic unless train=True
    reference = jax.jit(lambda p: model(**inputs, params=p).logits_per_image)(model.params)
    assert not np.allclose(a, b) and np.allclose(c, reference, atol=1e-6)


def test_outputs_are_pytrees_and_access_like_pt():
    model, _ = make_pair("quick_gelu", "CLIPModel")
    out = jax.jit(lambda p: model(**make_inputs("quick_gelu"), params=p))(model.params)
    assert out.logits_per_image is out["logits_per_image"] is out[0]  # no loss: logits first
    assert "loss" not in out.keys()
    assert len(jax.tree.leaves(out)) == 8  # 2 logits, 2 embeds, 2 per tower


def test_init_follows_init_spec():
    model = ours.FlaxCLIPModel(make_pair("gelu", "CLIPModel")[0].config, seed=3)
    params = model.params
    assert float(params["logit_scale"]) == pytest.approx(3.0)
    layer = params["text_model"]["encoder"]["layers"]["0"]
    assert np.all(np.asarray(layer["layer_norm1"]["scale"]) == 1) and np.all(
        np.asarray(layer["mlp"]["fc1"]["bias"]) == 0
    )
    std = np.asarray(layer["mlp"]["fc1"]["kernel"]).std()
    assert std == pytest.approx((2 * 64) ** -0.5, rel=0.1)


ERROR_CASES = {
    "float ids": (lambda x: {**x, "input_ids": x["input_ids"].astype(np.float32)}, "integer token ids"),
    "1-D ids": (lambda x: {**x, "input_ids": x["input_ids"][0], "attention_mask": None}, "batch_size, sequence_length"),
    "too long": (
        lambda x: {**x, "input_ids": np.ones((3, 17), np.int64), "attention_mask": None},
        "max_position_embeddings",
    ),
    "mask shape": (lambda x: {**x, "attention_mask": x["attention_mask"][:, :3]}, "attention_mask"),
    "position_ids": (lambda x: {**x, "position_ids": np.ones((2, 7), np.int64)}, "position_ids"),
    "NHWC": (lambda x: {**x, "pixel_values": x["pixel_values"].transpose(0, 2, 3, 1)}, "channels"),
    "image size": (lambda x: {**x, "pixel_values": x["pixel_values"][:, :, :8, :8]}, "interpolate_pos_encoding"),
    "batches": (lambda x: {**x, "pixel_values": x["pixel_values"][:2], "return_loss": True}, "as many texts as images"),
    "int pixels": (lambda x: {**x, "pixel_values": x["pixel_values"].astype(np.int32)}, "floating point"),
    "no ids": (lambda x: {**x, "input_ids": None, "attention_mask": None}, "input_ids are required"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_match_pt(case):
    make, match = ERROR_CASES[case]
    model, ref = make_pair("quick_gelu", "CLIPModel")
    kwargs = make(make_inputs("quick_gelu"))
    with pytest.raises(ValueError, match=match) as ours_error:
        model(**kwargs)
    as_torch = {
        k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()
    }
    with pytest.raises(ValueError, match=match) as pt_error:
        ref(**as_torch)
    assert str(ours_error.value) == str(pt_error.value)
    with pytest.raises(ValueError, match=match):  # and under jit, at trace time
        jax.jit(lambda p: model(**kwargs, params=p))(model.params)


class _Bound:
    """A model with its params fixed: the same call shapes as clip.pt's models."""

    def __init__(self, model, params):
        self.model, self.params = model, params

    def __call__(self, *args, **kwargs):
        return self.model(*args, params=self.params, **kwargs)

    def __getattr__(self, name):
        method = getattr(self.model, name)
        return lambda *args, **kwargs: method(*args, params=self.params, **kwargs)


@pytest.mark.parametrize("name", ["quick_gelu", "legacy_eos"])
def test_pooled_only_features_and_gradients_on_padded_batches(name):
    # get_*_features run only the pooled token through the last layer, as clip.pt does
    model, ref = make_pair(name, "CLIPModel")
    inputs = make_inputs(name)  # padded: lengths L, L-1, L-2

    def run(params):
        bound = _Bound(model, params)
        text = bound.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        image = bound.get_image_features(inputs["pixel_values"])
        return jnp.sin(text).mean() + jnp.sin(image).mean(), (text, image)

    (_, (text, image)), grads = jax.jit(jax.value_and_grad(run, has_aux=True))(model.params)
    t = torch_inputs(inputs)
    ref_text = ref.get_text_features(t["input_ids"], t["attention_mask"])
    ref_image = ref.get_image_features(t["pixel_values"])
    (ref_text.sin().mean() + ref_image.sin().mean()).backward()
    assert_close((text, image), (ref_text, ref_image))
    assert_grads_close(model, grads, {n: p.grad for n, p in ref.named_parameters()})


def test_jax_export_serializes_with_a_symbolic_batch():
    """jax.export: the jitted features as StableHLO with an open batch size, serialized, reloaded,
    and run at a batch size it was not traced with."""
    from jax import export

    model, ref = make_pair("gelu", "CLIPModel")
    inputs = make_inputs("gelu", batch=5, seed=3)
    vision = model.config.vision_config
    batch = export.symbolic_shape("b")[0]
    image_fn = jax.jit(lambda p, x: model.get_image_features(x, params=p))
    text_fn = jax.jit(lambda p, ids, mask: model.get_text_features(ids, mask, params=p))
    params_spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), model.params)
    length = inputs["input_ids"].shape[1]
    exported_image = export.export(image_fn)(
        params_spec, jax.ShapeDtypeStruct((batch, 3, vision.image_size, vision.image_size), jnp.float32)
    )
    exported_text = export.export(text_fn)(params_spec, *[jax.ShapeDtypeStruct((batch, length), jnp.int32)] * 2)
    image_back = export.deserialize(exported_image.serialize())
    text_back = export.deserialize(exported_text.serialize())
    with torch.no_grad():
        expected_image = ref.get_image_features(pixel_values=torch.from_numpy(inputs["pixel_values"])).numpy()
        expected_text = ref.get_text_features(**torch_inputs(inputs_for("CLIPTextModel", inputs))).numpy()
    got_image = image_back.call(model.params, inputs["pixel_values"])
    got_text = text_back.call(model.params, *(inputs[k].astype(np.int32) for k in ("input_ids", "attention_mask")))
    assert np.abs(np.asarray(got_image) - expected_image).max() <= 1e-5
    assert np.abs(np.asarray(got_text) - expected_text).max() <= 1e-5
