"""clip.common.checks, clip.common.params and clip.common.weights, checked against transformers and clip.pt."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

import clip.pt as ours
from clip.common import checks, params, weights
from pt_helpers import CLASSES, make_configs, make_pair


@pytest.mark.parametrize("model_class", CLASSES)
def test_every_parameter_has_an_init_rule(model_class):
    config, _ = make_configs("legacy_eos", model_class)
    table = params.parameter_table(config, model_class)
    assert list(table) == list(weights.expected_parameters(config, model_class))
    for row in table.values():
        assert row.init[0] in ("normal", "zeros", "ones", "constant"), row.name


def test_pooling_rule_reference_matches_models():
    for name, rule in (("quick_gelu", "first_eos"), ("legacy_eos", "argmax")):
        model, ref = make_pair(name, "CLIPTextModel")
        assert checks.text_pooling_rule(model.config) == rule
        ids = torch.tensor([[5, 7, model.config.eos_token_id, 3, 3], [9, 4, 6, 8, 1]])
        positions = checks.pooled_token_positions(ids.numpy(), model.config)
        out = model(ids)
        rows = torch.arange(2)
        assert torch.equal(out.pooler_output, out.last_hidden_state[rows, torch.from_numpy(positions)])
        assert torch.allclose(out.pooler_output, ref(ids).pooler_output, atol=1e-5)


def test_first_eos_when_pad_equals_eos():
    config, _ = make_configs("gelu", "CLIPTextModel")  # pad_token_id == eos_token_id
    ids = np.array([[4, 5, 79, 79, 79]])
    assert checks.pooled_token_positions(ids, config).tolist() == [2]


def test_leaf_rules_round_trip():
    config, _ = make_configs("quick_gelu", "CLIPModel")
    table = weights.expected_parameters(config, "CLIPModel")
    rng = np.random.default_rng(0)
    for name, (shape, kind) in table.items():
        array = rng.standard_normal(shape).astype(np.float32)
        for backend in weights.BACKENDS:
            moved = weights.to_backend_layout(array, kind, backend)
            assert np.array_equal(weights.from_backend_layout(moved, kind, backend), array)
    kinds = {name: kind for name, (_, kind) in table.items()}
    q = "text_model.encoder.layers.0.self_attn.q_proj.weight"
    assert weights.backend_name(q, kinds[q], "flax").endswith("q_proj.kernel")
    assert weights.to_backend_layout(np.zeros((3, 5)), kinds[q], "tf").shape == (5, 3)
    conv = "vision_model.embeddings.patch_embedding.weight"
    assert weights.to_backend_layout(np.zeros(table[conv][0]), "conv_weight", "flax").shape == (4, 4, 3, 48)  # HWIO
    assert weights.backend_name("vision_model.pre_layrnorm.weight", "layer_norm_weight", "flax").endswith("scale")
    assert weights.backend_name("vision_model.pre_layrnorm.bias", "layer_norm_bias", "tf").endswith("beta")
    assert weights.backend_name("text_model.embeddings.token_embedding.weight", "embedding", "flax").endswith(
        "embedding.embedding"
    )
    assert weights.backend_name("logit_scale", "variable", "tf") == "logit_scale"


def test_checkpoint_key_rules():
    keys = ["clip.text_model.final_layer_norm.weight", "clip.logit_scale", "clip.text_model.embeddings.position_ids"]
    assert weights.normalize_checkpoint_keys(keys) == {
        "clip.text_model.final_layer_norm.weight": "text_model.final_layer_norm.weight",
        "clip.logit_scale": "logit_scale",
    }
    report = weights.match_checkpoint({"a": ((2,), "variable"), "b": ((3,), "variable")}, {"a": (4,), "c": (1,)})
    assert report == {"missing_keys": ["b"], "unexpected_keys": ["c"], "mismatched_keys": [("a", (2,), (4,))]}


def test_check_messages_say_what_was_expected():
    config, _ = make_configs("quick_gelu", "CLIPVisionModel")
    with pytest.raises(ValueError, match="16x16"):
        checks.check_pixel_values((1, 3, 225, 225), config)
    checks.check_pixel_values((1, 3, 225, 225), config, interpolate_pos_encoding=True)
    text, _ = make_configs("quick_gelu", "CLIPTextModel")
    with pytest.raises(ValueError, match="integer"):
        checks.check_input_ids((1, 4), "torch.float32", text)
    assert checks.dtype_name(torch.int64) == "int64" and checks.dtype_name(np.dtype("float16")) == "float16"
    with pytest.raises(ValueError, match="2 texts and 3 images"):
        checks.check_batch_sizes(2, 3)


def test_problem_type_rule_matches_transformers():
    config = transformers.CLIPConfig()
    assert checks.classification_problem_type(config, 1, False) == "regression"
    assert checks.classification_problem_type(config, 3, True) == "single_label_classification"
    assert checks.classification_problem_type(config, 3, False) == "multi_label_classification"
    config.problem_type = "regression"
    assert checks.classification_problem_type(config, 3, True) == "regression"


def test_package_exports():
    assert set(ours.__all__) >= {
        "CLIPModel",
        "CLIPTextModel",
        "CLIPTextModelWithProjection",
        "CLIPVisionModel",
        "CLIPVisionModelWithProjection",
        "CLIPForImageClassification",
    }
