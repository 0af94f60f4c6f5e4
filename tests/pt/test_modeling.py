"""clip.pt models against transformers 4.57 on random weights: outputs, gradients, structure."""

from __future__ import annotations

import pytest
import torch

import clip.pt as ours
from clip.common import weights
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

from pt_helpers import CLASSES, CONFIGS, assert_close_outputs, flatten, inputs_for, make_configs, make_inputs, make_pair


def scalar_of(out):
    """One scalar that depends on every output, so its gradient reaches every parameter used.

    sin keeps each output's contribution (and so the gradients) of order one, whatever its scale.
    """
    return sum(t.float().sin().mean() for t in flatten(out).values() if t is not None and t.is_floating_point())


def run(model, model_class, inputs, **kwargs):
    kwargs = dict(kwargs)
    if model_class == "CLIPModel":
        kwargs.setdefault("return_loss", True)
    if model_class == "CLIPForImageClassification":
        kwargs.setdefault(
            "labels", torch.tensor([0, 2, 1])[: inputs["pixel_values"].shape[0]] % max(model.config.num_labels, 1)
        )
    return model(**inputs_for(model_class, inputs), **kwargs)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("model_class", CLASSES)
def test_outputs_and_gradients_match_transformers(name, model_class):
    model, ref = make_pair(name, model_class)
    inputs = make_inputs(name)
    out = run(model, model_class, inputs, output_hidden_states=True)
    expected = run(ref, model_class, inputs, output_hidden_states=True)
    n = assert_close_outputs(out, expected)
    assert n >= 3
    scalar_of(out).backward()
    scalar_of(expected).backward()
    ref_params = dict(ref.named_parameters())
    for pname, p in model.named_parameters():
        q = ref_params[pname]
        assert (p.grad is None) == (q.grad is None), pname
        if p.grad is not None:
            diff = (p.grad - q.grad).abs().max().item()
            assert diff <= 1e-5, f"grad of {pname}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("model_class", CLASSES)
def test_attentions_match_eager_transformers(model_class):
    # transformers' SDPA path returns no attention weights; its eager path is the reference
    model, ref = make_pair("quick_gelu", model_class, attn_implementation="eager")
    inputs = make_inputs("quick_gelu")
    out = run(model, model_class, inputs, output_attentions=True, output_hidden_states=True)
    expected = run(ref, model_class, inputs, output_attentions=True, output_hidden_states=True)
    assert_close_outputs(out, expected)
    attentions = out.attentions if "attentions" in out else out.text_model_output.attentions
    assert attentions is not None and all(a is not None for a in attentions)


@pytest.mark.parametrize("model_class", CLASSES)
def test_return_dict_false_tuples(model_class):
    model, ref = make_pair("gelu", model_class)
    inputs = make_inputs("gelu")
    out = run(model, model_class, inputs, output_hidden_states=True, return_dict=False)
    expected = run(ref, model_class, inputs, output_hidden_states=True, return_dict=False)
    assert isinstance(out, tuple)
    assert_close_outputs(out, expected)


def test_output_access_by_attribute_key_and_index():
    model, _ = make_pair("quick_gelu", "CLIPModel")
    out = model(**make_inputs("quick_gelu"))
    assert out.logits_per_image is out["logits_per_image"] is out[0]  # no loss: logits first
    assert out.text_model_output.pooler_output is out["text_model_output"]["pooler_output"]
    assert "loss" not in out.keys()


@pytest.mark.parametrize("image_size", [24, (24, 32), 16])
@pytest.mark.parametrize("model_class", ["CLIPModel", "CLIPVisionModelWithProjection"])
def test_interpolate_pos_encoding(model_class, image_size):
    model, ref = make_pair("quick_gelu", model_class)
    inputs = inputs_for(model_class, make_inputs("quick_gelu", image_size=image_size))
    out = model(**inputs, interpolate_pos_encoding=True, output_hidden_states=True)
    expected = ref(**inputs, interpolate_pos_encoding=True, output_hidden_states=True)
    assert_close_outputs(out, expected)
    assert torch.allclose(
        model.get_image_features(inputs["pixel_values"], interpolate_pos_encoding=True)
        if model_class == "CLIPModel"
        else out.image_embeds,
        ref.get_image_features(inputs["pixel_values"], interpolate_pos_encoding=True)
        if model_class == "CLIPModel"
        else expected.image_embeds,
        atol=1e-5,
    )


@pytest.mark.parametrize("name", ["quick_gelu", "gelu", "legacy_eos"])
@pytest.mark.parametrize("padding", ["padded", "unpadded", "no_mask", "left_padded"])
def test_get_features_match_transformers(name, padding):
    # get_*_features run only the pooled token through the last layer: check that shortcut
    # against transformers' full computation, for every pooling rule and padding form.
    model, ref = make_pair(name, "CLIPModel")
    inputs = make_inputs(name, padded=padding != "unpadded")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if padding == "left_padded":
        order = torch.argsort(mask, dim=1, stable=True)  # pads first, tokens after
        ids, mask = ids.gather(1, order), mask.gather(1, order)
    if padding == "no_mask":
        mask = None
    text = model.get_text_features(ids, mask)
    image = model.get_image_features(inputs["pixel_values"])
    assert (text - ref.get_text_features(ids, mask)).abs().max() <= 1e-5
    assert (image - ref.get_image_features(inputs["pixel_values"])).abs().max() <= 1e-5


def test_get_features_gradients_match_transformers():
    model, ref = make_pair("quick_gelu", "CLIPModel")
    inputs = make_inputs("quick_gelu")
    for m in (model, ref):
        text = m.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        image = m.get_image_features(inputs["pixel_values"])
        (text.square().mean() + image.sin().mean()).backward()
    ref_grads = dict(ref.named_parameters())
    for pname, p in model.named_parameters():
        expected = ref_grads[pname].grad
        if expected is None:
            assert p.grad is None or not p.grad.any(), pname
        else:
            assert (p.grad - expected).abs().max() <= 1e-5, pname


def test_position_ids_and_unpadded_batches():
    model, ref = make_pair("quick_gelu", "CLIPModel")
    inputs = make_inputs("quick_gelu", padded=False)
    assert_close_outputs(model(**inputs), ref(**inputs))  # causal kernel without a mask tensor
    del inputs["attention_mask"]
    assert_close_outputs(model(**inputs), ref(**inputs))
    positions = torch.tensor([[3, 2, 1, 0, 4, 5, 6]])
    assert_close_outputs(model(**inputs, position_ids=positions), ref(**inputs, position_ids=positions))


def test_left_padding_matches_transformers():
    model, ref = make_pair("quick_gelu", "CLIPTextModel")
    inputs = make_inputs("quick_gelu", padded=False)
    ids, mask = inputs["input_ids"].clone(), inputs["attention_mask"].clone()
    mask[0, :3] = 0  # rows 0..2 of sequence 0 see no key at all
    assert_close_outputs(model(ids, mask, output_hidden_states=True), ref(ids, mask, output_hidden_states=True))


def test_sdpa_and_explicit_paths_agree():
    model, _ = make_pair("gelu", "CLIPModel")
    inputs = make_inputs("gelu")
    fast = model(**inputs, output_hidden_states=True)
    slow = model(**inputs, output_hidden_states=True, output_attentions=True)
    for key in ("logits_per_text", "text_embeds", "image_embeds"):
        assert (fast[key] - slow[key]).abs().max() <= 1e-5


def test_state_dict_matches_transformers_and_weights_table():
    for model_class in CLASSES:
        model, ref = make_pair("legacy_eos", model_class)
        assert list(model.state_dict()) == list(ref.state_dict()), model_class
        expected = weights.expected_parameters(model.config, model_class)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: s for k, (s, _) in expected.items()}
        assert not list(model.buffers())


def test_gradient_checkpointing_same_gradients():
    model, _ = make_pair("quick_gelu", "CLIPModel")
    model.train()
    inputs = make_inputs("quick_gelu")
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.gradient_checkpointing_enable() if enable else model.gradient_checkpointing_disable()
        assert model.is_gradient_checkpointing == enable
        model(**inputs, return_loss=True).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def test_float16_logits_do_not_overflow():
    model, _ = make_pair("quick_gelu", "CLIPModel")
    with torch.no_grad():
        model.logit_scale.fill_(12.0)  # exp(12) = 162755 > float16's 65504
    model = model.half()
    inputs = make_inputs("quick_gelu")
    inputs["pixel_values"] = inputs["pixel_values"].half()
    out = model(**inputs, return_loss=True)
    assert out.logits_per_image.dtype == torch.float16
    assert torch.isfinite(out.logits_per_image).all() and torch.isfinite(out.loss)
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)
    out16 = model(**inputs)
    out32 = model.float()(**{**inputs, "pixel_values": inputs["pixel_values"].float()})
    assert (out16.logits_per_image.float() - out32.logits_per_image).abs().max() < 0.5


def test_bfloat16_forward_close_to_float32():
    model, _ = make_pair("gelu", "CLIPModel")
    inputs = make_inputs("gelu")
    out32 = model(**inputs)
    out16 = model.to(torch.bfloat16)(**inputs)
    assert out16.logits_per_image.dtype == torch.bfloat16
    assert (out16.text_embeds.float() - out32.text_embeds).abs().max() < 0.05


@pytest.mark.parametrize(
    "labels, problem",
    [
        (torch.tensor([0, 2, 1]), "single_label_classification"),
        (torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]), "multi_label_classification"),
    ],
)
def test_classification_losses(labels, problem):
    model, ref = make_pair("legacy_eos", "CLIPForImageClassification")
    pixels = make_inputs("legacy_eos")["pixel_values"]
    out, expected = model(pixels, labels=labels), ref(pixels, labels=labels)
    assert (out.loss - expected.loss).abs() <= 1e-5
    assert ref.config.problem_type == problem
    assert getattr(model.config, "problem_type", None) is None  # ours does not mutate the config


def test_classification_regression_and_no_head():
    model, ref = make_pair("legacy_eos", "CLIPForImageClassification", id2label={0: "score"})
    pixels = make_inputs("legacy_eos")["pixel_values"]
    labels = torch.tensor([0.5, -1.0, 2.0])
    assert (model(pixels, labels=labels).loss - ref(pixels, labels=labels).loss).abs() <= 1e-5
    text, vision = CONFIGS["legacy_eos"]["text"], CONFIGS["legacy_eos"]["vision"]
    headless = ours.CLIPForImageClassification(CLIPConfig(text_config=text, vision_config=vision, id2label={}))
    assert headless.config.num_labels == 2  # an empty id2label means the default, as in transformers
    three = CLIPConfig(text_config=text, vision_config=vision, num_labels=3)
    assert ours.CLIPForImageClassification(three).classifier.weight.shape == (3, vision["hidden_size"])
    assert CLIPConfig.from_dict(three.to_dict()).id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}


# -- argument errors ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    model, _ = make_pair("quick_gelu", "CLIPModel")
    return model, make_inputs("quick_gelu")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: i.update(pixel_values=torch.randn(3, 3, 17, 17)), "16x16"),
        (lambda i: i.update(pixel_values=torch.randn(3, 16, 16)), "4-D|3-D"),
        (lambda i: i.update(pixel_values=torch.randn(3, 1, 16, 16)), "channels"),
        (lambda i: i.update(pixel_values=torch.zeros(3, 3, 16, 16, dtype=torch.uint8)), "floating"),
        (lambda i: i.update(input_ids=i["input_ids"].float()), "integer"),
        (
            lambda i: i.update(input_ids=torch.ones(3, 17, dtype=torch.long), attention_mask=None),
            "max_position_embeddings",
        ),
        (lambda i: i.update(input_ids=i["input_ids"][0]), "batch_size, sequence_length"),
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
    with pytest.raises(ValueError, match=message):
        model(**inputs, return_loss=True)


def test_interpolate_rejects_images_smaller_than_a_patch(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="smaller than one"):
        model.get_image_features(torch.randn(1, 3, 2, 2), interpolate_pos_encoding=True)


def test_wrong_config_type():
    with pytest.raises(TypeError, match="CLIPTextConfig"):
        ours.CLIPTextModel(CLIPVisionConfig())


# -- initialization -------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", ["CLIPModel", "CLIPForImageClassification"])
def test_initialization_statistics_match_transformers(model_class):
    import transformers

    text = dict(
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=32,
        initializer_factor=1.5,
    )
    vision = dict(
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=4,
        initializer_range=0.05,
        initializer_factor=0.7,
    )
    # transformers' CLIPConfig forces its own initializer_factor to 1.0: keep the default here
    top = dict(projection_dim=64, logit_scale_init_value=2.0, id2label={i: str(i) for i in range(10)})
    torch.manual_seed(0)
    ref = getattr(transformers, model_class)(transformers.CLIPConfig(text_config=text, vision_config=vision, **top))
    model = getattr(ours, model_class)(CLIPConfig(text_config=text, vision_config=vision, **top))
    ref_params = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        q = ref_params[name].detach()
        if q.numel() == 1:
            assert p.item() == pytest.approx(q.item()), name
            continue
        # std and mean of n ~ N(0, s) samples: relative error ~ 1/sqrt(2n), abs mean ~ s/sqrt(n)
        tol_std = 6 / (2 * q.numel()) ** 0.5 * q.std().item() + 1e-7
        assert abs(p.std().item() - q.std().item()) <= tol_std, (
            f"{name}: std {p.std().item():.4g} vs {q.std().item():.4g}"
        )
        assert abs(p.mean().item() - q.mean().item()) <= 6 * (q.std().item() + 1e-7) / q.numel() ** 0.5 + 1e-7, name


def test_model_initializer_factor_scales_the_heads():
    text, vision = CONFIGS["gelu"]["text"], CONFIGS["gelu"]["vision"]
    torch.manual_seed(0)
    model = ours.CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=256, initializer_factor=3.0)
    )
    expected = 3.0 * text["hidden_size"] ** -0.5
    assert model.text_projection.weight.std().item() == pytest.approx(expected, rel=0.05)


def test_text_and_vision_configs_accept_full_config_only_where_expected():
    # sub-models take their tower config; the full model the CLIPConfig
    config = make_configs("gelu", "CLIPModel")[0]
    text, vision = config.text_config, config.vision_config
    assert isinstance(ours.CLIPTextModelWithProjection(text).config, CLIPTextConfig)
    assert ours.CLIPVisionModelWithProjection(vision).visual_projection.weight.shape == (40, 32)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_inference_matches_autograd_and_keeps_hooked_outputs(mode):
    # Without autograd the layers reuse their fresh buffers in place; results must not change,
    # and a forward hook's captured output must not be overwritten afterwards.
    model, ref = make_pair("quick_gelu", "CLIPModel")
    inputs = make_inputs("quick_gelu")
    context = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with context():
        out = model(**inputs, output_hidden_states=True)
    expected = ref(**inputs, output_hidden_states=True)
    assert_close_outputs(out, expected)

    captured = {}
    layer = model.vision_model.encoder.layers[0]
    handles = [
        layer.self_attn.register_forward_hook(lambda m, i, o: captured.__setitem__("attn", o[0])),
        layer.mlp.fc1.register_forward_hook(lambda m, i, o: captured.__setitem__("fc1", o)),
    ]
    with context():
        model(**inputs)
    for h in handles:
        h.remove()
    ref_layer = ref.vision_model.encoder.layers[0]
    x = ref.vision_model.pre_layrnorm(ref.vision_model.embeddings(inputs["pixel_values"]))
    with torch.no_grad():
        attn = ref_layer.self_attn(ref_layer.layer_norm1(x))[0]
        fc1 = ref_layer.mlp.fc1(ref_layer.layer_norm2(x + attn))
    assert (captured["attn"] - attn).abs().max() <= 1e-5
    assert (captured["fc1"] - fc1).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["quick_gelu", "legacy_eos"])
@pytest.mark.parametrize("with_mask", [True, False])
@pytest.mark.parametrize("with_positions", [False, True])
def test_text_features_run_only_up_to_the_last_pooled_token(name, with_mask, with_positions):
    # texts padded to every position (as OpenAI's tokenizer pads to 77): the tokens after the last
    # end token cannot reach the pooled one through causal attention, so they are not computed
    model, ref = make_pair(name, "CLIPModel")
    text = model.config.text_config
    length, ends = text.max_position_embeddings, [4, 6, 9]
    inputs = make_inputs(name, batch=3)
    end = text.eos_token_id if text.eos_token_id != 2 else text.vocab_size - 1
    ids = torch.full((3, length), 1)
    mask = torch.zeros(3, length, dtype=torch.long)
    for i, n in enumerate(ends):
        ids[i, :n] = inputs["input_ids"][i, 0]
        ids[i, n] = end
        mask[i, : n + 1] = 1
    kwargs = {"input_ids": ids, "attention_mask": mask if with_mask else None}
    if with_positions:
        kwargs["position_ids"] = torch.arange(length)[None].flip(-1)  # any positions: sliced alike
    seen = []
    handle = model.text_model.embeddings.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    with torch.no_grad():
        got = model.get_text_features(**kwargs)
        expected = ref.get_text_features(**kwargs)
    handle.remove()
    assert seen == [max(ends) + 1]
    assert (got - expected).abs().max() <= 1e-5
