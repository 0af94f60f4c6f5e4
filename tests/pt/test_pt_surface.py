"""transformers' PreTrainedModel surface of clip.pt, called the way transformers' docs and its
ModelTesterMixin call it, on ours and on transformers 4.57 side by side: equal outputs, or the
same exception type."""

from __future__ import annotations

import json

import pytest

from clip.common import config as our_configs
from pt_helpers import (
    CLASSES,
    TEXT_CLASSES,
    inputs_for,
    make_configs,
    make_inputs,
    make_pair,
    ours,
    torch,
    transformers,
)

SHARD = "20KB"  # a few shards for the tiny configs


def _outputs_close(a, b, tol=1e-5):
    a, b = a.to_tuple() if hasattr(a, "to_tuple") else a, b.to_tuple() if hasattr(b, "to_tuple") else b
    flat_a, flat_b = list(_flatten(a)), list(_flatten(b))
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b):
        assert x.shape == y.shape
        assert (x.float() - y.float()).abs().max() <= tol


def _flatten(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _flatten(item)
    elif hasattr(value, "to_tuple"):
        yield from _flatten(value.to_tuple())


def _run(model, model_class, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs_for(model_class, inputs), **kwargs)


# -- item 1: transformers' config objects and dicts ---------------------------------------------------
@pytest.mark.parametrize("model_class", CLASSES)
@pytest.mark.parametrize("form", ["transformers", "dict"])
def test_models_take_transformers_configs_and_dicts(model_class, form):
    _, ref = make_pair("quick_gelu", model_class)
    config = ref.config if form == "transformers" else ref.config.to_dict()
    model = getattr(ours, model_class)(config).eval()
    model.load_state_dict(ref.state_dict())
    inputs = make_inputs("quick_gelu")
    _outputs_close(_run(model, model_class, inputs), _run(ref, model_class, inputs))
    assert type(model.config).__module__ == "clip.common.config"


def test_a_config_of_the_wrong_kind_is_refused():
    with pytest.raises(TypeError, match="CLIPConfig"):
        ours.CLIPModel(transformers.CLIPTextConfig())
    with pytest.raises(TypeError, match="CLIPTextConfig"):
        ours.CLIPTextModel(transformers.CLIPConfig())


# -- item 2: config values accepted as transformers does, refused by the model ---------------------
def test_config_accepts_what_transformers_accepts_and_the_model_refuses_it():
    odd = dict(hidden_size=30, num_attention_heads=4)  # 30 is not divisible by 4
    theirs, mine = transformers.CLIPTextConfig(**odd), our_configs.CLIPTextConfig(**odd)  # both accepted
    with pytest.raises(ValueError):
        transformers.CLIPTextModel(theirs)
    with pytest.raises(ValueError, match="divisible"):
        ours.CLIPTextModel(mine)
    # transformers builds projection_dim=0 (a zero-width projection); ours refuses it, naming the field
    transformers.CLIPConfig(projection_dim=0)
    with pytest.raises(ValueError, match="projection_dim"):
        ours.CLIPModel(our_configs.CLIPConfig(projection_dim=0))


@pytest.mark.parametrize("model_class", ["CLIPModel", "CLIPTextModel", "CLIPVisionModelWithProjection"])
def test_output_flag_defaults_from_the_config(model_class):
    model, ref = make_pair("gelu", model_class, attn_implementation="eager")
    model.config._attn_implementation = "sdpa"
    for config in (model.config, ref.config):  # attention weights need the eager path in both
        with pytest.raises(ValueError):
            type(config)(**{**config.to_dict(), "attn_implementation": "sdpa"}).output_attentions = True
    model.config._attn_implementation = "eager"
    inputs = make_inputs("gelu")
    for config in (model.config, ref.config):
        config.output_hidden_states = True
        config.output_attentions = True
    mine, theirs = _run(model, model_class, inputs), _run(ref, model_class, inputs)
    _outputs_close(mine, theirs)
    assert len(mine) == len(theirs)
    for config in (model.config, ref.config):
        config.return_dict = False
    mine, theirs = _run(model, model_class, inputs), _run(ref, model_class, inputs)
    assert isinstance(mine, tuple) and isinstance(theirs, tuple)
    _outputs_close(mine, theirs)
    for config in (model.config, ref.config):  # use_return_dict reports torchscript; the models read return_dict
        config.return_dict, config.torchscript = True, True
    assert model.config.use_return_dict is ref.config.use_return_dict is False
    assert type(_run(model, model_class, inputs)).__name__ == type(_run(ref, model_class, inputs)).__name__


# -- item 3: the PreTrainedModel surface -------------------------------------------------------------
def _same_outcome(call_mine, call_theirs):
    """Both return equal plain values, or both raise the same exception type."""
    try:
        theirs = ("ok", call_theirs())
    except Exception as error:  # noqa: BLE001 - the type is what is compared
        theirs = ("raised", type(error))
    try:
        mine = ("ok", call_mine())
    except Exception as error:  # noqa: BLE001
        mine = ("raised", type(error))
    assert mine == theirs


@pytest.mark.parametrize("model_class", CLASSES)
def test_pretrained_model_attributes_and_methods(model_class):
    model, ref = make_pair("legacy_eos", model_class)
    cls, ref_cls = type(model), type(ref)
    for name in ("base_model_prefix", "main_input_name", "_supports_sdpa", "_supports_flash_attn", "_no_split_modules"):
        assert getattr(cls, name) == getattr(ref_cls, name), name
    assert cls.config_class.__name__ == ref_cls.config_class.__name__
    assert cls.can_generate() is ref_cls.can_generate() is False
    assert cls._can_set_attn_implementation() is ref_cls._can_set_attn_implementation()
    assert model.get_output_embeddings() is ref.get_output_embeddings() is None
    for flags in ({}, {"only_trainable": True}, {"exclude_embeddings": True}):
        assert model.num_parameters(**flags) == ref.num_parameters(**flags), flags
    model.text_model.requires_grad_(False) if hasattr(model, "text_model") else model.vision_model.requires_grad_(False)
    ref.text_model.requires_grad_(False) if hasattr(ref, "text_model") else ref.vision_model.requires_grad_(False)
    assert model.num_parameters(only_trainable=True) == ref.num_parameters(only_trainable=True)
    kind = lambda layer: (isinstance(layer, torch.nn.Embedding), isinstance(layer, torch.nn.Conv2d))  # noqa: E731
    _same_outcome(lambda: kind(model.get_input_embeddings()), lambda: kind(ref.get_input_embeddings()))
    _same_outcome(model.get_position_embeddings, ref.get_position_embeddings)
    _same_outcome(lambda: model.resize_position_embeddings(4), lambda: ref.resize_position_embeddings(4))
    _same_outcome(
        lambda: model.set_input_embeddings(torch.nn.Embedding(3, 3)),
        lambda: ref.set_input_embeddings(torch.nn.Embedding(3, 3)),
    )


@pytest.mark.parametrize("model_class", TEXT_CLASSES)
def test_set_input_embeddings_replaces_the_token_table(model_class):
    model, ref = make_pair("quick_gelu", model_class)
    width = model.config.hidden_size
    torch.manual_seed(5)
    table = torch.nn.Embedding(model.config.vocab_size, width)
    model.set_input_embeddings(table)
    ref.set_input_embeddings(table)
    assert model.get_input_embeddings() is table
    inputs = make_inputs("quick_gelu")
    _outputs_close(_run(model, model_class, inputs), _run(ref, model_class, inputs))


# -- item 4: attention implementations ---------------------------------------------------------------
@pytest.mark.parametrize("model_class", CLASSES)
def test_eager_and_sdpa_are_both_real_and_switchable(model_class, monkeypatch):
    _, ref = make_pair("gelu", model_class, attn_implementation="eager")
    model = getattr(ours, model_class)._from_config(ref.config, attn_implementation="eager").eval()
    model.load_state_dict(ref.state_dict())
    assert model.config._attn_implementation == ref.config._attn_implementation == "eager"
    inputs = make_inputs("gelu")
    fused_calls = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: fused_calls.append(1) or real_sdpa(*a, **k)
    )
    eager = _run(model, model_class, inputs)
    assert not fused_calls  # eager: the explicit softmax only
    _outputs_close(eager, _run(ref, model_class, inputs))
    model.set_attn_implementation("sdpa")
    ref.set_attn_implementation("sdpa")
    assert model.config._attn_implementation == "sdpa"
    sdpa = _run(model, model_class, inputs)
    assert fused_calls
    _outputs_close(sdpa, eager)
    _outputs_close(sdpa, _run(ref, model_class, inputs))
    model.config._attn_implementation = "eager"  # the config field alone switches it too
    fused_calls.clear()
    _outputs_close(_run(model, model_class, inputs), eager)
    assert not fused_calls
    if model_class == "CLIPModel":  # the pooled-only shortcut follows the choice as well
        with torch.no_grad():
            features = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
            assert not fused_calls
            expected = ref.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        assert (features - expected).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="attn_implementation"):
        model.set_attn_implementation("flex-ish")


# -- loading and saving -----------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", ["CLIPModel", "CLIPTextModelWithProjection"])
def test_from_pretrained_none_with_config_and_state_dict(model_class):
    model, ref = make_pair("quick_gelu", model_class)
    state = ref.state_dict()
    mine = getattr(ours, model_class).from_pretrained(None, config=ref.config, state_dict=state)
    theirs = getattr(transformers, model_class).from_pretrained(None, config=ref.config, state_dict=state).eval()
    inputs = make_inputs("quick_gelu")
    _outputs_close(_run(mine, model_class, inputs), _run(theirs, model_class, inputs))
    with pytest.raises(ValueError, match="config"):
        getattr(ours, model_class).from_pretrained(None, state_dict=state)


@pytest.mark.parametrize("safe", [True, False])
def test_sharded_save_pretrained_reads_both_ways(tmp_path, safe):
    model, ref = make_pair("gelu", "CLIPModel")
    model.save_pretrained(tmp_path / "ours", max_shard_size=SHARD, safe_serialization=safe)
    ref.save_pretrained(tmp_path / "theirs", max_shard_size=SHARD, safe_serialization=safe)
    index = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
    mine, theirs = (json.loads((tmp_path / d / index).read_text()) for d in ("ours", "theirs"))
    assert mine == theirs  # the same shards, names and metadata as transformers writes
    assert sorted(p.name for p in (tmp_path / "ours").iterdir() if p.name != "config.json") == sorted(
        p.name for p in (tmp_path / "theirs").iterdir() if p.name not in ("config.json", "generation_config.json")
    )
    inputs = make_inputs("gelu")
    loaded_by_them = transformers.CLIPModel.from_pretrained(tmp_path / "ours").eval()
    loaded_by_us = ours.CLIPModel.from_pretrained(tmp_path / "theirs")
    _outputs_close(_run(loaded_by_them, "CLIPModel", inputs), _run(ref, "CLIPModel", inputs))
    _outputs_close(_run(loaded_by_us, "CLIPModel", inputs), _run(ref, "CLIPModel", inputs))
    model.save_pretrained(tmp_path / "ours")  # one file again: the shards and index go
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["config.json", "model.safetensors"]


def test_ignore_mismatched_sizes_reinitializes_the_classification_head(tmp_path):
    model, ref = make_pair("legacy_eos", "CLIPForImageClassification")  # 3 labels
    ref.save_pretrained(tmp_path)
    for cls in (ours.CLIPForImageClassification, transformers.CLIPForImageClassification):
        with pytest.raises(RuntimeError):  # transformers' type; ours is also a ValueError
            cls.from_pretrained(tmp_path, num_labels=5)
    mine = ours.CLIPForImageClassification.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    theirs = transformers.CLIPForImageClassification.from_pretrained(
        tmp_path, num_labels=5, ignore_mismatched_sizes=True
    )
    assert mine.classifier.weight.shape == theirs.classifier.weight.shape == (5, ref.config.vision_config.hidden_size)
    assert mine.config.num_labels == theirs.config.num_labels == 5
    mine_state, their_state = mine.state_dict(), theirs.state_dict()
    for name, value in ref.state_dict().items():
        if not name.startswith("classifier."):
            assert torch.equal(mine_state[name], value) and torch.equal(their_state[name], value), name


def test_from_pretrained_under_a_meta_device_context_is_refused(tmp_path):
    model, ref = make_pair("quick_gelu", "CLIPModel")
    ref.save_pretrained(tmp_path)
    for cls in (ours.CLIPModel, transformers.CLIPModel):
        with torch.device("meta"), pytest.raises(RuntimeError, match="meta"):
            cls.from_pretrained(tmp_path)
    with torch.device("meta"):  # building an empty model there stays allowed, as in transformers
        empty = ours.CLIPModel(make_configs("quick_gelu", "CLIPModel")[0])
    assert empty.logit_scale.device.type == "meta"
