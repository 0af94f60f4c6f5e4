"""CLIP configurations, field for field compatible with transformers' `config.json`.

Every backend builds its modules from these objects. Unknown keys found in a `config.json`
(transformers writes many generic ones) are kept as attributes and written back unchanged, so a
load/save round trip loses nothing.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from typing import Any

from clip.common import hub
from clip.common.io import atomic_write_text, read_json_object
from clip.errors import InputError, InputTypeError

# Activations every backend implements; the names are transformers' ACT2FN keys.
SUPPORTED_ACTIVATIONS = ("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

CONFIG_NAME = "config.json"

# transformers' generic PretrainedConfig flags with their defaults: read (through class attributes)
# when a config does not set them, written only when set, left out of to_diff_dict at their default
GENERIC_DEFAULTS = {
    "return_dict": True,
    "output_hidden_states": False,
    "output_attentions": False,
    "torchscript": False,
    "is_encoder_decoder": False,
    "tie_word_embeddings": True,
    "problem_type": None,
}


class _ConfigSurface:
    """transformers' PretrainedConfig surface both kinds of config share (generic flags, the
    attention implementation, get_text_config, to_diff_dict). The values are not validated here:
    like transformers, a config takes any value and the model refuses what it cannot build
    (validate(), called by every model's constructor)."""

    to_dict: Callable[[], dict]  # each kind of config defines it

    sub_configs: dict = {}
    return_dict = True
    output_hidden_states = False
    _output_attentions = False
    torchscript = False
    is_encoder_decoder = False
    tie_word_embeddings = True
    problem_type = None
    _attn_implementation_internal = None

    def _take_generic_kwargs(self, kwargs: dict):
        # transformers' PretrainedConfig(attn_implementation=...) sets the private field
        if "attn_implementation" in kwargs:
            self._attn_implementation = kwargs.pop("attn_implementation")

    @property
    def output_attentions(self) -> bool:
        return self._output_attentions

    @output_attentions.setter
    def output_attentions(self, value):
        # as transformers: attention weights come from the eager path, which a config left at the
        # default (None) switches to, and one set to another implementation refuses
        if value and self._attn_implementation is None:
            self._attn_implementation = "eager"
        if value and self._attn_implementation != "eager":
            raise InputError(
                f"output_attentions=True needs attn_implementation 'eager', this config has "
                f"{self._attn_implementation!r}; set config._attn_implementation = 'eager' first"
            )
        self._output_attentions = value

    @property
    def use_return_dict(self) -> bool:
        return bool(self.return_dict) and not self.torchscript

    @property
    def _attn_implementation(self):
        return self._attn_implementation_internal

    @_attn_implementation.setter
    def _attn_implementation(self, value):
        """Set here and on every sub-config; a dict gives per-sub-config values ("" for this one)."""
        own = value.get("", self._attn_implementation_internal) if isinstance(value, dict) else value
        self._attn_implementation_internal = own
        for key in self.sub_configs:
            sub = getattr(self, key, None)
            if sub is not None:
                sub._attn_implementation = (
                    value.get(key, sub._attn_implementation) if isinstance(value, dict) else value
                )

    def get_text_config(self, decoder=None, encoder=None):
        """The text tower's config (the config itself for a tower), as transformers resolves it:
        CLIP's text_config counts as a "decoder" name there, so encoder=True alone gives the config itself."""
        if decoder == encoder or decoder:
            return getattr(self, "text_config", self)
        return self

    def to_diff_dict(self) -> dict:
        """to_dict() without the generic flags left at transformers' defaults (what transformers'
        to_diff_dict leaves out of config.json); sub-configs nested in the same form."""
        out = {}
        for key, value in self.to_dict().items():
            if key in GENERIC_DEFAULTS and value == GENERIC_DEFAULTS[key]:
                continue
            out[key] = getattr(self, key).to_diff_dict() if key in self.sub_configs else value
        return out

    def to_json_string(self, use_diff: bool = False) -> str:
        return json.dumps(self.to_diff_dict() if use_diff else self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__} {self.to_json_string()}"

    def save_pretrained(self, save_directory, **kwargs):
        # push_to_hub and the like are refused by name rather than silently ignored
        if kwargs:
            raise InputTypeError(f"save_pretrained got unexpected arguments {sorted(kwargs)}")
        os.makedirs(save_directory, exist_ok=True)
        atomic_write_text(os.path.join(save_directory, CONFIG_NAME), self.to_json_string())


class _TowerConfig(_ConfigSurface):
    """Shared machinery: known fields with defaults, extra keys kept, validation."""

    model_type: str = ""
    # fields are set from `defaults` (or the caller's values) in __init__; the ones the code reads:
    hidden_size: int
    num_attention_heads: int
    hidden_act: str
    attention_dropout: float
    layer_norm_eps: float
    intermediate_size: int
    projection_dim: int
    num_hidden_layers: int
    initializer_range: float
    initializer_factor: float
    # field -> default, in the order transformers writes them
    defaults: dict = {}

    def __init__(self, **kwargs):
        self._take_generic_kwargs(kwargs)
        for name, default in self.defaults.items():
            setattr(self, name, kwargs.pop(name, copy.deepcopy(default)))
        kwargs.pop("model_type", None)
        self._extra_keys = list(kwargs)
        for name, value in kwargs.items():
            setattr(self, name, value)

    # -- validation (by the models: a config itself accepts what transformers' accepts) ------------
    def _positive_ints(self):
        return ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")

    def validate(self) -> None:
        where = type(self).__name__
        for name in self._positive_ints():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InputError(f"{where}.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise InputError(
                f"{where}.hidden_size ({self.hidden_size}) must be divisible by "
                f"{where}.num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise InputError(
                f"{where}.hidden_act {self.hidden_act!r} is not supported; "
                f"choose one of {', '.join(SUPPORTED_ACTIVATIONS)}"
            )
        if not 0.0 <= float(self.attention_dropout) < 1.0:
            raise InputError(f"{where}.attention_dropout must be in [0, 1), got {self.attention_dropout!r}")
        if float(self.layer_norm_eps) <= 0:
            raise InputError(f"{where}.layer_norm_eps must be positive, got {self.layer_norm_eps!r}")

    # -- serialization ----------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict:
        out = {name: copy.deepcopy(getattr(self, name)) for name in self.defaults}
        out.update({name: copy.deepcopy(getattr(self, name)) for name in self._extra_keys})
        out["model_type"] = self.model_type
        return out

    @classmethod
    def from_dict(cls, data: dict, **kwargs):
        return cls(**{**copy.deepcopy(data), **kwargs})

    @classmethod
    def from_pretrained(cls, name_or_path, **hub_kwargs):
        """Read `config.json` of a tower, or the matching tower out of a full CLIP config."""
        data = _read_config_json(name_or_path, **hub_kwargs)
        if data.get("model_type") == "clip" or "text_config" in data or "vision_config" in data:
            return getattr(CLIPConfig.from_dict(data), cls._sub_attr)
        return cls.from_dict(data)


class CLIPTextConfig(_TowerConfig):
    model_type = "clip_text_model"
    vocab_size: int
    max_position_embeddings: int
    pad_token_id: int
    bos_token_id: int
    eos_token_id: int
    _sub_attr = "text_config"
    defaults = {
        "vocab_size": 49408,
        "hidden_size": 512,
        "intermediate_size": 2048,
        "projection_dim": 512,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
        "pad_token_id": 1,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
    }

    def _positive_ints(self):
        return super()._positive_ints() + ("vocab_size", "max_position_embeddings", "projection_dim")


class CLIPVisionConfig(_TowerConfig):
    model_type = "clip_vision_model"
    image_size: int
    patch_size: int
    num_channels: int
    _sub_attr = "vision_config"
    defaults = {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "projection_dim": 512,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_channels": 3,
        "image_size": 224,
        "patch_size": 32,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
    }

    def _positive_ints(self):
        return super()._positive_ints() + ("num_channels", "image_size", "patch_size", "projection_dim")

    def validate(self) -> None:
        super().validate()
        if self.image_size % self.patch_size:
            raise InputError(
                f"CLIPVisionConfig.image_size ({self.image_size}) must be divisible by "
                f"CLIPVisionConfig.patch_size ({self.patch_size})"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class CLIPConfig(_ConfigSurface):
    """The two tower configs plus the joint-space fields (projection_dim, logit_scale_init_value)."""

    model_type = "clip"
    projection_dim: int  # set from `defaults` in __init__, like every field
    logit_scale_init_value: float
    sub_configs = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}
    defaults = {"projection_dim": 512, "logit_scale_init_value": 2.6592, "initializer_factor": 1.0}

    def __init__(
        self,
        text_config: dict | CLIPTextConfig | None = None,
        vision_config: dict | CLIPVisionConfig | None = None,
        **kwargs: Any,
    ) -> None:
        attn_implementation = kwargs.pop("attn_implementation", None)
        # transformers <4.22 wrote `text_config_dict`/`vision_config_dict`; when both forms are
        # present the *_dict values win, as transformers resolves it.
        text_dict = _as_dict(text_config)
        vision_dict = _as_dict(vision_config)
        text_dict.update(_as_dict(kwargs.pop("text_config_dict", None)))
        vision_dict.update(_as_dict(kwargs.pop("vision_config_dict", None)))
        text_dict.pop("model_type", None)
        vision_dict.pop("model_type", None)
        self.text_config = CLIPTextConfig(**text_dict)
        self.vision_config = CLIPVisionConfig(**vision_dict)
        for name, default in self.defaults.items():
            setattr(self, name, kwargs.pop(name, default))
        kwargs.pop("model_type", None)
        self._extra_keys = list(kwargs)
        for name, value in kwargs.items():
            setattr(self, name, value)
        if attn_implementation is not None:
            self._attn_implementation = attn_implementation

    def validate(self) -> None:
        """What a model needs of the config; raises one clear ValueError naming the field."""
        self.text_config.validate()
        self.vision_config.validate()
        if (
            not isinstance(self.projection_dim, int)
            or isinstance(self.projection_dim, bool)
            or self.projection_dim <= 0
        ):
            raise InputError(f"CLIPConfig.projection_dim must be a positive integer, got {self.projection_dim!r}")

    @classmethod
    def from_text_vision_configs(
        cls, text_config: CLIPTextConfig, vision_config: CLIPVisionConfig, **kwargs: Any
    ) -> CLIPConfig:
        return cls(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), **kwargs)

    # -- labels (used by CLIPForImageClassification, as in transformers' PretrainedConfig) ----------
    @property
    def num_labels(self) -> int:
        id2label = getattr(self, "id2label", None)
        return len(id2label) if id2label else 2

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        # CLIPConfig(num_labels=n), as transformers: default labels LABEL_0..LABEL_{n-1}
        if len(getattr(self, "id2label", None) or {}) != value:
            self.id2label = {i: f"LABEL_{i}" for i in range(value)}
            self.label2id = {label: i for i, label in self.id2label.items()}
            self._extra_keys += [key for key in ("id2label", "label2id") if key not in self._extra_keys]

    def to_dict(self) -> dict:
        out: dict = {"text_config": self.text_config.to_dict(), "vision_config": self.vision_config.to_dict()}
        out.update({name: copy.deepcopy(getattr(self, name)) for name in self.defaults})
        out.update({name: copy.deepcopy(getattr(self, name)) for name in self._extra_keys})
        out["model_type"] = self.model_type
        return out

    @classmethod
    def from_dict(cls, data: dict, **kwargs: Any) -> CLIPConfig:
        data = {**copy.deepcopy(data), **kwargs}
        if "id2label" in data and data["id2label"] is not None:
            # JSON object keys are strings; transformers turns them back into ints.
            labels = data["id2label"]
            if not isinstance(labels, dict) or not all(
                isinstance(k, int) or str(k).lstrip("-").isdigit() for k in labels
            ):
                raise InputError(f"CLIPConfig.id2label must map class indices to labels, got {labels!r}")
            data["id2label"] = {int(k): v for k, v in labels.items()}
        return cls(**data)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **hub_kwargs: Any) -> CLIPConfig:
        data = _read_config_json(name_or_path, **hub_kwargs)
        if data.get("model_type") in ("clip_text_model", "clip_vision_model"):
            raise InputError(
                f"{name_or_path}: config.json describes a single {data['model_type']}, "
                "not a full CLIP model; load it with CLIPTextConfig/CLIPVisionConfig"
            )
        return cls.from_dict(data)


def _as_dict(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return copy.deepcopy(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise InputTypeError(f"expected a dict or a config object, got {type(value).__name__}")


def _read_config_json(name_or_path, **hub_kwargs) -> dict:
    return read_json_object(hub.resolve_file(name_or_path, CONFIG_NAME, **hub_kwargs))  # type: ignore[arg-type]  # required
