"""transformers' PretrainedConfig surface of our configs, side by side with transformers 4.57."""

import json

import pytest
import transformers

from clip.common import config as ours

PAIRS = [
    (ours.CLIPConfig, transformers.CLIPConfig),
    (ours.CLIPTextConfig, transformers.CLIPTextConfig),
    (ours.CLIPVisionConfig, transformers.CLIPVisionConfig),
]
SMALL = dict(
    text_config={"hidden_size": 64, "num_attention_heads": 4, "pad_token_id": 0},
    vision_config={"patch_size": 8, "image_size": 32},
    projection_dim=24,
)


@pytest.mark.parametrize("mine, theirs", PAIRS)
def test_generic_flags_and_sub_configs(mine, theirs):
    a, b = mine(), theirs()
    for name in (
        "is_encoder_decoder",
        "use_return_dict",
        "return_dict",
        "output_attentions",
        "output_hidden_states",
        "torchscript",
        "tie_word_embeddings",
        "problem_type",
        "_attn_implementation",
    ):
        assert getattr(a, name) == getattr(b, name), name
    assert {k: v.__name__ for k, v in a.sub_configs.items()} == {k: v.__name__ for k, v in b.sub_configs.items()}
    a.torchscript = b.torchscript = True
    assert a.use_return_dict is b.use_return_dict is False


def test_get_text_config_resolves_as_transformers():
    a, b = ours.CLIPConfig(**SMALL), transformers.CLIPConfig(**SMALL)
    for kwargs in ({}, {"decoder": True}, {"encoder": True}, {"decoder": True, "encoder": True}):
        mine, theirs = a.get_text_config(**kwargs), b.get_text_config(**kwargs)
        assert type(mine).__name__ == type(theirs).__name__, kwargs
    assert a.get_text_config() is a.text_config and a.get_text_config().hidden_size == 64
    tower = ours.CLIPVisionConfig()
    assert tower.get_text_config() is tower and transformers.CLIPVisionConfig().get_text_config() is not None


def test_attn_implementation_reaches_the_sub_configs():
    a, b = ours.CLIPConfig(**SMALL), transformers.CLIPConfig(**SMALL)
    for config in (a, b):
        config._attn_implementation = "eager"
    assert (
        (a._attn_implementation, a.text_config._attn_implementation, a.vision_config._attn_implementation)
        == (b._attn_implementation, b.text_config._attn_implementation, b.vision_config._attn_implementation)
        == ("eager",) * 3
    )
    for config in (a, b):
        config._attn_implementation = {"text_config": "sdpa"}
    assert (
        (a.text_config._attn_implementation, a.vision_config._attn_implementation)
        == (b.text_config._attn_implementation, b.vision_config._attn_implementation)
        == ("sdpa", "eager")
    )
    built = ours.CLIPTextConfig(attn_implementation="eager")
    assert built._attn_implementation == transformers.CLIPTextConfig(attn_implementation="eager")._attn_implementation
    assert "_attn_implementation" not in built.to_dict() and "attn_implementation" not in built.to_dict()


def test_output_attentions_needs_the_eager_path_as_in_transformers():
    for cls in (ours.CLIPTextConfig, transformers.CLIPTextConfig):
        config = cls()
        config.output_attentions = True  # unset implementation: switched to eager
        assert config._attn_implementation == "eager"
        other = cls(attn_implementation="sdpa")
        with pytest.raises(ValueError, match="eager"):
            other.output_attentions = True


@pytest.mark.parametrize("mine, theirs", PAIRS)
def test_to_diff_dict_keeps_what_transformers_keeps(mine, theirs):
    kwargs = SMALL if mine is ours.CLIPConfig else {"hidden_size": 64, "num_attention_heads": 4}
    a, b = mine(**kwargs, output_hidden_states=True), theirs(**kwargs, output_hidden_states=True)
    diff, their_diff = a.to_diff_dict(), b.to_diff_dict()
    their_diff.pop("transformers_version")
    assert diff["output_hidden_states"] is their_diff["output_hidden_states"] is True
    assert "return_dict" not in diff and "return_dict" not in their_diff  # a default is left out
    for key, value in diff.items():
        if key in a.sub_configs:  # the fields transformers writes for a sub-config, ours too
            theirs_sub = {k: v for k, v in their_diff[key].items() if k != "transformers_version"}
            assert {k: value[k] for k in theirs_sub if k in value} == {
                k: theirs_sub[k] for k in theirs_sub if k in value
            }
        elif key in their_diff:
            assert their_diff[key] == value, key
    assert mine.from_dict(diff) == a  # the diff alone rebuilds the config
    assert json.loads(a.to_json_string(use_diff=True)) == diff


def test_values_transformers_accepts_are_accepted_and_validated_later():
    for kwargs in ({"hidden_size": 30, "num_attention_heads": 4}, {"image_size": 225}):
        cls = ours.CLIPTextConfig if "num_attention_heads" in kwargs else ours.CLIPVisionConfig
        transformers_cls = getattr(transformers, cls.__name__)
        transformers_cls(**kwargs)
        config = cls(**kwargs)
        with pytest.raises(ValueError):
            config.validate()
    transformers.CLIPConfig(projection_dim=0)
    with pytest.raises(ValueError, match="projection_dim"):
        ours.CLIPConfig(projection_dim=0).validate()


def test_from_dict_takes_keyword_overrides_as_transformers():
    data = ours.CLIPConfig(**SMALL).to_dict()
    a = ours.CLIPConfig.from_dict(data, projection_dim=12)
    b = transformers.CLIPConfig.from_dict(data, projection_dim=12)
    assert a.projection_dim == b.projection_dim == 12
