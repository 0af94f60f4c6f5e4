"""clip.common.params, the parameter table: its rules against transformers, identical init in the
three backends, and the proof that a row added to the table is all that adding a parameter takes."""

import re

import numpy as np
import pytest
from backend_configs import make_config

from clip.common import params, weights
from clip.common.config import CLIPConfig

torch = pytest.importorskip("torch")


# -- the rules ---------------------------------------------------------------------------------------
def test_init_rules_match_transformers_init_weights():
    """Every row's rule against the parameters transformers' CLIP draws (factors differ per tower)."""
    transformers = pytest.importorskip("transformers")
    text = dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=24,
        initializer_factor=1.5,
    )
    vision = dict(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=4,
        initializer_range=0.05,
        initializer_factor=0.7,
    )
    top = dict(projection_dim=40, logit_scale_init_value=2.0, id2label={i: str(i) for i in range(10)})
    torch.manual_seed(0)
    for model_class in ("CLIPModel", "CLIPForImageClassification"):
        theirs = dict(
            getattr(transformers, model_class)(
                transformers.CLIPConfig(text_config=text, vision_config=vision, **top)
            ).named_parameters()
        )
        table = params.parameter_table(CLIPConfig(text_config=text, vision_config=vision, **top), model_class)
        assert list(table) == list(theirs)
        for name, row in table.items():
            q = theirs[name].detach().numpy()
            assert row.shape == q.shape, name
            if row.init[0] != "normal":
                assert np.all(q == {"zeros": 0.0, "ones": 1.0}.get(row.init[0], row.init[-1])), name
                continue
            # the std of n normal samples is within ~6/sqrt(2n) (relative) of the true one
            assert abs(q.std() - row.init[1]) <= 6 * row.init[1] / (2 * q.size) ** 0.5, (name, q.std(), row.init)


def test_hand_computed_rules_and_decay_flags():
    table = params.parameter_table(make_config("gelu", "CLIPModel"), "CLIPModel")  # text 64 wide, 1 layer
    assert table["text_model.encoder.layers.0.mlp.fc1.weight"].init == ("normal", (2 * 64) ** -0.5)
    assert table["text_model.encoder.layers.0.self_attn.q_proj.weight"].init == ("normal", 64**-0.5 * 2**-0.5)
    assert table["text_model.embeddings.token_embedding.weight"].init == ("normal", 0.02)
    assert table["vision_model.embeddings.class_embedding"].init == ("normal", 32**-0.5)
    assert table["logit_scale"].init == ("constant", 3.0) and table["logit_scale"].shape == ()
    assert table["vision_model.embeddings.patch_embedding.weight"].shape == (32, 3, 8, 8)
    decayed = {name for name, row in table.items() if row.decay}
    assert "visual_projection.weight" in decayed and "vision_model.embeddings.patch_embedding.weight" in decayed
    assert not decayed & {
        "logit_scale",
        "vision_model.embeddings.class_embedding",
        "vision_model.pre_layrnorm.weight",
        "text_model.embeddings.position_embedding.weight",
        "text_model.encoder.layers.0.mlp.fc1.bias",
    }
    assert set(weights.LEAF_RULES) == set(params.KINDS)  # every kind has its per-backend names and layouts
    with pytest.raises(ValueError, match="unknown model class 'CLIPThing'"):
        params.parameter_table(make_config("gelu", "CLIPModel"), "CLIPThing")


def test_init_arrays_follow_table_order_and_name_unknown_parameters():
    table = params.parameter_table(make_config("quick_gelu", "CLIPTextModel"), "CLIPTextModel")
    names = ["text_model.final_layer_norm.weight", "text_model.embeddings.token_embedding.weight"]
    a, b = params.init_arrays(table, 5, names), params.init_arrays(table, 5, names[::-1])
    assert list(a) == list(b) == names[::-1] and all(np.array_equal(a[n], b[n]) for n in names)
    assert np.all(a[names[0]] == 1.0)
    alone = params.init_arrays(table, 5, names[1:])[names[1]]
    assert np.array_equal(alone, a[names[1]])  # a parameter's values do not depend on the others drawn
    assert not np.array_equal(params.init_arrays(table, 6, names[1:])[names[1]], alone)
    from_generator = [params.init_arrays(table, np.random.default_rng(5), names[1:])[names[1]] for _ in range(2)]
    assert np.array_equal(*from_generator) and not np.array_equal(from_generator[0], alone)
    std, n = table[names[1]].init[1], alone.size  # the rule's std and mean, 6 standard errors of slack
    assert abs(float(alone.std()) / std - 1) < 6 / np.sqrt(2 * n) and abs(float(alone.mean())) < 6 * std / np.sqrt(n)

    assert params.init_arrays(table, 5, names, dtype=np.float16)[names[1]].dtype == np.float16
    with pytest.raises(KeyError, match="'text_model.nothing'"):
        params.init_arrays(table, 0, ["text_model.nothing"])


def test_large_parameters_are_drawn_in_independent_blocks(monkeypatch):
    table = params.parameter_table(make_config("quick_gelu", "CLIPTextModel"), "CLIPTextModel")
    name = max(table, key=lambda n: np.prod(table[n].shape))
    monkeypatch.setattr(params, "BLOCK", 256)
    first, again = (params.init_arrays(table, 3, [name])[name].reshape(-1) for _ in range(2))
    assert np.array_equal(first, again)  # whatever thread drew which block
    count = first.size // 256
    assert count >= 8
    blocks = first[: count * 256].reshape(count, 256)
    assert len({block.tobytes() for block in blocks}) == count  # no stream repeated
    assert abs(float(np.corrcoef(blocks[0], blocks[1])[0, 1])) < 0.3  # 256 pairs: 5 standard errors


# -- the three backends ------------------------------------------------------------------------------
def canonical_arrays(model) -> dict:
    """{canonical name: numpy array in the canonical layout} of a pt, tf or flax model."""
    if isinstance(model, torch.nn.Module):
        return {n: t.detach().numpy() for n, t in model.state_dict().items()}
    if hasattr(model, "canonical_variables"):  # tf
        return {
            n: weights.from_backend_layout(v.numpy(), kind, "tf")
            for n, (v, kind) in model.canonical_variables().items()
        }
    from clip.flax import loading

    return {n: np.asarray(a) for n, a in loading.from_params(model.params, loading.expected_parameters(model)).items()}


def build_three(config, seed):
    """CLIPModel in pt, tf and flax, each initialized from `seed`."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("jax")
    import clip.flax
    import clip.pt
    import clip.tf

    pt_model, tf_model = clip.pt.CLIPModel(config), clip.tf.TFCLIPModel(config)
    pt_model.init_weights(seed=seed)
    tf_model.init_weights(seed=seed)
    return {"pt": pt_model, "tf": tf_model, "flax": clip.flax.FlaxCLIPModel(config, seed=seed)}


def assert_same_arrays(models: dict):
    arrays = {backend: canonical_arrays(model) for backend, model in models.items()}
    for backend in ("tf", "flax"):
        assert list(arrays[backend]) == list(arrays["pt"])
        for name, array in arrays["pt"].items():
            assert float(np.max(np.abs(arrays[backend][name] - array), initial=0.0)) == 0.0, (backend, name)
    return arrays["pt"]


def test_three_backends_initialize_identically_from_a_seed():
    config = make_config("quick_gelu", "CLIPModel")
    arrays = assert_same_arrays(build_three(config, seed=11))
    table = params.parameter_table(config, "CLIPModel")
    assert arrays.keys() == table.keys()
    fc1 = arrays["text_model.encoder.layers.1.mlp.fc1.weight"]
    assert fc1.std() == pytest.approx((2 * 32) ** -0.5, rel=0.1) and np.all(
        arrays["text_model.final_layer_norm.weight"] == 1
    )


def test_pt_initialization_is_reproducible_under_torch_manual_seed():
    import clip.pt

    config = make_config("gelu", "CLIPModel")
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        states.append(clip.pt.CLIPModel(config).state_dict())
    assert all(torch.equal(states[0][n], states[1][n]) for n in states[0])
    torch.manual_seed(4)
    assert not torch.equal(clip.pt.CLIPModel(config).text_projection.weight, states[0]["text_projection.weight"])


# -- the proof: a row added to the table is the whole change ------------------------------------------------
BIAS = "visual_projection.bias"
BIAS_INIT = 0.25


@pytest.fixture
def projection_bias(monkeypatch):
    """The table builder with one more row: visual_projection.bias, initialized to 0.25 and (unlike a
    bias by its kind) decayed, so that every consumer is seen to read the row, not the name."""
    original = params.parameter_table

    def with_bias(config, model_class):
        out = {}
        for name, row in original(config, model_class).items():
            out[name] = row
            if name == "visual_projection.weight":
                out[BIAS] = params.row(BIAS, row.shape[:1], "linear_bias", ("constant", BIAS_INIT), decay=True)
        return out

    monkeypatch.setattr(params, "parameter_table", with_bias)
    return original


def test_a_table_row_is_all_it_takes_to_add_a_parameter(projection_bias, tmp_path):
    config = make_config("quick_gelu", "CLIPModel")
    models = build_three(config, seed=2)
    # init: every backend has the parameter, drawn by its rule, the same everywhere
    arrays = assert_same_arrays(models)
    assert arrays[BIAS].shape == (config.projection_dim,) and np.all(arrays[BIAS] == BIAS_INIT)

    # the forward pass uses it, alike in every backend
    pixels = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    pt_model = models["pt"]
    with torch.no_grad():
        pt_features = pt_model.get_image_features(torch.from_numpy(pixels)).numpy()
        pooled = pt_model.vision_model(torch.from_numpy(pixels)).pooler_output.numpy()
    np.testing.assert_allclose(pt_features, pooled @ arrays["visual_projection.weight"].T + BIAS_INIT, atol=1e-5)
    np.testing.assert_allclose(np.asarray(models["tf"].get_image_features(pixel_values=pixels)), pt_features, atol=1e-5)
    np.testing.assert_allclose(np.asarray(models["flax"].get_image_features(pixels)), pt_features, atol=1e-5)

    # weight decay: the row's flag, in all three optimizers
    from clip.train import common
    from clip.train import flax as flax_trainer
    from clip.train import pt as pt_trainer
    from clip.train import tf as tf_trainer

    assert common.applies_weight_decay(BIAS, params.parameter_table(config, "CLIPModel"))
    groups = pt_trainer.build_optimizer(pt_model, lr=1e-3, weight_decay=0.1).param_groups
    assert any(p is pt_model.visual_projection.bias for p in groups[0]["params"]) and groups[0]["weight_decay"] == 0.1
    assert flax_trainer.decay_mask(config)["visual_projection"]["bias"] is True
    optimizer, _ = tf_trainer.build_optimizer(
        models["tf"], steps=2, base_lr=1e-3, warmup=1, weight_decay=0.1, grad_clip=0
    )
    assert optimizer._use_weight_decay(models["tf"].visual_projection.bias)
    assert not optimizer._use_weight_decay(models["tf"].vision_model.post_layernorm.beta)

    # saving and loading: every backend writes and reads it; a checkpoint without it reports it missing
    with torch.no_grad():
        pt_model.visual_projection.bias.copy_(torch.arange(config.projection_dim, dtype=torch.float32))
    saved = tmp_path / "pt"
    pt_model.save_pretrained(saved)
    import clip.flax
    import clip.pt
    import clip.tf

    loaded = {
        "pt": clip.pt.CLIPModel.from_pretrained(saved, output_loading_info=True),
        "tf": clip.tf.TFCLIPModel.from_pretrained(saved, output_loading_info=True),
        "flax": clip.flax.FlaxCLIPModel.from_pretrained(saved, output_loading_info=True),
    }
    for backend, (model, info) in loaded.items():
        assert not info["missing_keys"] and not info["unexpected_keys"], backend
    reloaded = assert_same_arrays({backend: model for backend, (model, _) in loaded.items()})
    assert np.array_equal(reloaded[BIAS], np.arange(config.projection_dim))
    for backend in ("tf", "flax"):
        loaded[backend][0].save_pretrained(tmp_path / backend)
        from_backend = clip.pt.CLIPModel.from_pretrained(tmp_path / backend)
        assert np.array_equal(from_backend.visual_projection.bias.detach().numpy(), reloaded[BIAS]), backend

    with pytest.warns(UserWarning, match=BIAS):
        model, info = clip.pt.CLIPModel.from_pretrained(
            None,
            config=config,
            output_loading_info=True,
            state_dict={n: t for n, t in pt_model.state_dict().items() if n != BIAS},
        )
    assert info["missing_keys"] == [BIAS] and np.all(model.visual_projection.bias.detach().numpy() == BIAS_INIT)
    wrong = dict(pt_model.state_dict(), **{BIAS: torch.zeros(3)})
    with pytest.raises(
        ValueError,
        match=rf"{re.escape(BIAS)}: the model expects \({config.projection_dim},\), the checkpoint has \(3,\)",
    ):
        clip.pt.CLIPModel.from_pretrained(None, config=config, state_dict=wrong)

    # conversion: canonical -> transformers' Flax layout -> canonical keeps it
    from clip import convert

    convert.convert(str(saved), str(tmp_path / "msgpack"), to_format="transformers-flax")
    convert.convert(str(tmp_path / "msgpack"), str(tmp_path / "back"), to_format="canonical")
    from clip.common.io import read_safetensors

    back = read_safetensors(str(tmp_path / "back" / "model.safetensors"))
    assert back.keys() == reloaded.keys() and all(np.array_equal(back[n], reloaded[n]) for n in back)

    # the fingerprint: the same in every backend, and it sees the new parameter
    from clip.common.processor import CLIPProcessor
    from clip.models import default_model_path
    from clip.tasks.backends import load_encoder

    processor = CLIPProcessor.from_pretrained(default_model_path())
    prints = {
        b: load_encoder(str(saved), b, processor=processor, device="cpu").fingerprint for b in ("pt", "tf", "flax")
    }
    assert len(set(prints.values())) == 1
    with torch.no_grad():
        pt_model.visual_projection.bias.add_(1.0)
    pt_model.save_pretrained(tmp_path / "changed")
    assert load_encoder(str(tmp_path / "changed"), "pt", processor=processor, device="cpu").fingerprint != prints["pt"]


def test_without_the_row_the_checkpoint_entry_is_unexpected(projection_bias, tmp_path):
    import clip.pt

    config = make_config("quick_gelu", "CLIPModel")
    clip.pt.CLIPModel(config).save_pretrained(tmp_path)  # with the row
    original = projection_bias
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(params, "parameter_table", original)  # the table as it ships
        model, info = clip.pt.CLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["unexpected_keys"] == [BIAS] and model.visual_projection.bias is None
