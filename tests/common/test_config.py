"""Configs against transformers 4.57's CLIPConfig: defaults, file formats, round trips, errors."""

import json

import pytest
import transformers

from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig


@pytest.mark.parametrize(
    "ours, theirs", [(CLIPTextConfig, transformers.CLIPTextConfig), (CLIPVisionConfig, transformers.CLIPVisionConfig)]
)
def test_tower_defaults_equal_transformers(ours, theirs):
    reference = theirs()
    for name, value in ours().to_dict().items():
        assert getattr(reference, name) == value, name


def test_clip_defaults_equal_transformers():
    ours, theirs = CLIPConfig(), transformers.CLIPConfig()
    assert ours.projection_dim == theirs.projection_dim
    assert ours.logit_scale_init_value == theirs.logit_scale_init_value
    assert ours.initializer_factor == theirs.initializer_factor
    assert ours.text_config.to_dict().items() <= _tower_items(theirs.text_config)
    assert ours.vision_config.to_dict().items() - {("model_type", "clip_vision_model")} <= _tower_items(
        theirs.vision_config
    )


def _tower_items(config):
    return {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str))}.items()


def test_reads_config_written_by_transformers_and_keeps_unknown_keys(tmp_path):
    reference = transformers.CLIPConfig(
        text_config={"hidden_size": 64, "num_attention_heads": 4, "hidden_act": "gelu"},
        vision_config={"hidden_size": 48, "patch_size": 8, "image_size": 32, "num_attention_heads": 6},
        projection_dim=24,
    )
    reference.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())

    ours = CLIPConfig.from_pretrained(tmp_path)
    assert ours.text_config.hidden_size == 64 and ours.text_config.hidden_act == "gelu"
    assert ours.vision_config.patch_size == 8 and ours.vision_config.num_patches == 16
    assert ours.projection_dim == 24
    # Every key transformers wrote survives our round trip with its value.
    out = tmp_path / "ours"
    ours.save_pretrained(out)
    again = json.loads((out / "config.json").read_text())
    for key, value in written.items():
        if key in ("text_config", "vision_config"):
            for sub_key, sub_value in value.items():
                assert again[key][sub_key] == sub_value, (key, sub_key)
        else:
            assert again[key] == value, key


def test_transformers_reads_our_config(tmp_path):
    ours = CLIPConfig(
        text_config={"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2},
        vision_config={"hidden_size": 40, "num_attention_heads": 5, "image_size": 30, "patch_size": 10},
        projection_dim=16,
        logit_scale_init_value=3.0,
    )
    ours.save_pretrained(tmp_path)
    theirs = transformers.CLIPConfig.from_pretrained(tmp_path)
    assert theirs.text_config.hidden_size == 32 and theirs.text_config.num_hidden_layers == 2
    assert theirs.vision_config.image_size == 30 and theirs.vision_config.patch_size == 10
    assert theirs.projection_dim == 16 and theirs.logit_scale_init_value == 3.0


def test_legacy_config_dict_keys(tmp_path):
    # transformers < 4.22 wrote text_config_dict / vision_config_dict (the openai/clip-vit-* files).
    legacy = {
        "model_type": "clip",
        "projection_dim": 512,
        "text_config_dict": {"hidden_size": 64, "num_attention_heads": 4, "eos_token_id": 2},
        "vision_config_dict": {"hidden_size": 96, "patch_size": 16},
        "text_config": None,
        "vision_config": None,
    }
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    ours = CLIPConfig.from_pretrained(tmp_path)
    theirs = transformers.CLIPConfig.from_pretrained(tmp_path)
    for attr in ("hidden_size", "num_attention_heads", "eos_token_id"):
        assert getattr(ours.text_config, attr) == getattr(theirs.text_config, attr), attr
    for attr in ("hidden_size", "patch_size"):
        assert getattr(ours.vision_config, attr) == getattr(theirs.vision_config, attr), attr


def test_from_text_vision_configs_and_tower_from_full_config(tmp_path):
    text = CLIPTextConfig(hidden_size=32, num_attention_heads=4)
    vision = CLIPVisionConfig(image_size=64, patch_size=16)
    full = CLIPConfig.from_text_vision_configs(text, vision, projection_dim=8)
    assert full.text_config == text and full.vision_config == vision
    full.save_pretrained(tmp_path)
    assert CLIPVisionConfig.from_pretrained(tmp_path) == vision
    assert CLIPTextConfig.from_pretrained(tmp_path) == text
    assert json.loads(full.to_json_string()) == full.to_dict()


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: CLIPTextConfig(hidden_size=50, num_attention_heads=8), "hidden_size"),
        (lambda: CLIPVisionConfig(image_size=225, patch_size=32), "image_size"),
        (lambda: CLIPTextConfig(hidden_act="swishy"), "hidden_act"),
        (lambda: CLIPVisionConfig(num_hidden_layers=0), "num_hidden_layers"),
        (lambda: CLIPTextConfig(vocab_size="many"), "vocab_size"),
        (lambda: CLIPConfig(vision_config={"patch_size": 10}), "image_size"),
    ],
)
def test_invalid_values_name_the_field(make, field):
    # accepted when built, as transformers' configs accept them; refused, naming the field, by
    # validate(), which every model's constructor calls (tests/*/test_*surface*.py build them)
    config = make()
    with pytest.raises(ValueError, match=field):
        config.validate()


def test_bad_json_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CLIPConfig.from_pretrained(tmp_path)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="no such directory"):
        CLIPConfig.from_pretrained(str(tmp_path / "nope" / "deeper"))
    with pytest.raises(OSError, match="no config.json"):
        CLIPConfig.from_pretrained(tmp_path)
