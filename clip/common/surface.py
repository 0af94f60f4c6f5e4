"""The framework-neutral half of transformers' PreTrainedModel surface, shared by the three backends.

Each backend's base class (clip.pt.pretrained, clip.tf.pretrained, the Flax base in
clip.flax.modeling) calls these for what does not depend on the framework: turning a config given
in any of transformers' forms into ours, the output-flag defaults read from the config, the
attention implementations a class offers, parameter counting, and max_shard_size.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable
from typing import Any, ClassVar, Literal, TypeVar, overload

from clip.common.config import CLIPConfig
from clip.errors import InputError, InputTypeError

# Every backend runs one fused kernel ("sdpa": torch's scaled_dot_product_attention, Keras/TF ops,
# jax.nn.dot_product_attention) or the explicit softmax of transformers' eager path.
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


def as_config(config: Any, config_class: Any, owner: str) -> Any:
    """Our `config_class` from ours, a dict, or any object with transformers' config fields
    (transformers' own CLIPConfig/CLIPTextConfig/CLIPVisionConfig); checked for what a model needs.

    A config of the wrong kind (a CLIPTextConfig for CLIPModel) is a TypeError, as before.
    """
    if isinstance(config, config_class):
        converted = config
    elif isinstance(config, dict):
        converted = config_class.from_dict(config)
    elif _looks_like(config, config_class):
        converted = config_class.from_dict(_foreign_dict(config))
        attn = getattr(config, "_attn_implementation", None)
        if attn is not None:  # not part of to_dict() in transformers: carried over by hand
            converted._attn_implementation = attn
    else:
        raise InputTypeError(
            f"{owner} needs a {config_class.__name__} (ours or transformers'), or a dict of its fields; "
            f"got {type(config).__module__}.{type(config).__name__}"
        )
    converted.validate()
    return converted


def _looks_like(config, config_class) -> bool:
    model_type = getattr(config, "model_type", None)
    return callable(getattr(config, "to_dict", None)) and model_type == config_class.model_type


def _foreign_dict(config) -> dict:
    # to_diff_dict: the fields that matter, without the dozens of generic generation flags at defaults
    data = config.to_diff_dict() if callable(getattr(config, "to_diff_dict", None)) else config.to_dict()
    # transformers' to_dict adds its bookkeeping; the library version is not a field of the model
    for key in ("transformers_version", "_name_or_path"):
        data.pop(key, None)
        for sub in CLIPConfig.sub_configs:
            if isinstance(data.get(sub), dict):
                data[sub].pop(key, None)
    return data


def output_flags(
    config: Any, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None
) -> tuple[bool, bool, bool]:
    """The call's flags, each falling back to the config's. As in transformers 4.57's CLIP, the
    models read config.return_dict (use_return_dict, which torchscript turns off, is only reported)."""
    attn = output_attentions if output_attentions is not None else config.output_attentions
    hidden = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
    as_dict = return_dict if return_dict is not None else config.return_dict
    return bool(attn), bool(hidden), bool(as_dict)


def check_attn_implementation(name: str | None, owner: str, supported: tuple = ATTN_IMPLEMENTATIONS) -> None:
    """None (the default, sdpa) or one of `supported`; a dict names one per sub-config ("" = the model)."""
    values = name.values() if isinstance(name, dict) else [name]
    for value in values:
        if value is not None and value not in supported:
            raise InputError(
                f"{owner}: attn_implementation must be one of {', '.join(supported)} or None, got {value!r}"
            )


def tower_configs(config: Any) -> list:
    """The tower configs inside `config` (itself for a tower config)."""
    if isinstance(config, CLIPConfig):
        return [config.text_config, config.vision_config]
    return [config]


def count_parameters(entries: Iterable, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
    """transformers' num_parameters over (size, trainable, is_embedding_table) triples."""
    return sum(
        size
        for size, trainable, embedding in entries
        if (trainable or not only_trainable) and not (embedding and exclude_embeddings)
    )


_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(size: int | str) -> int:
    """transformers' max_shard_size: bytes as an int, or "5GB" / "200MB" / "10KiB" (decimal and binary units)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", str(size).upper())
        if not match or match.group(2) not in _UNITS:
            raise InputError(f"max_shard_size must be a number of bytes or a size like '5GB' or '200MB', got {size!r}")
        value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise InputError(f"max_shard_size must be positive, got {size!r}")
    return value


class ConfigSurface:
    """What transformers' PreTrainedModel says about configs and outputs, the same in every backend;
    the backends' surface classes (clip/{pt,tf,flax}/pretrained.py) inherit it and add their own;
    the model classes set config_class."""

    def _take_config(self, config):
        """transformers' config objects and dicts are converted to ours; the result is checked."""
        return as_config(config, self.config_class, type(self).__name__)

    def _output_flags(self, output_attentions, output_hidden_states, return_dict):
        return output_flags(self.config, output_attentions, output_hidden_states, return_dict)

    @classmethod
    def can_generate(cls) -> bool:
        return False  # CLIP encodes; it has no generate()

    @classmethod
    def _from_config(cls, config, **kwargs):
        """A randomly initialized model, as transformers' _from_config (the Auto classes' from_config)."""
        return cls(as_config(config, cls.config_class, cls.__name__), **kwargs)


ModelT = TypeVar("ModelT", bound="PretrainedFiles")


class PretrainedFiles:
    """from_pretrained / save_pretrained of the PyTorch and TensorFlow base classes: typed once here,
    carried out by the backend's loading module (`loading_module`, imported on first use so that a
    model class does not import its loader)."""

    loading_module: ClassVar[str]  # "clip.pt.loading", "clip.tf.loading"

    @overload
    @classmethod
    def from_pretrained(
        cls: type[ModelT],
        name_or_path: str | os.PathLike[str],
        *args: Any,
        output_loading_info: Literal[False] = False,
        **kwargs: Any,
    ) -> ModelT: ...
    @overload
    @classmethod
    def from_pretrained(
        cls: type[ModelT],
        name_or_path: str | os.PathLike[str],
        *args: Any,
        output_loading_info: Literal[True],
        **kwargs: Any,
    ) -> tuple[ModelT, dict[str, Any]]: ...
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike[str], *args: Any, **kwargs: Any
    ) -> PretrainedFiles | tuple[PretrainedFiles, dict[str, Any]]:
        """The model of a hub id or directory (transformers' arguments); with output_loading_info=True
        (model, its loading info: the missing, unexpected and mismatched keys)."""
        return importlib.import_module(cls.loading_module).from_pretrained(cls, name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> None:
        """transformers' save_pretrained (the backend's keywords: safe_serialization, max_shard_size,
        state_dict, ...)."""
        return importlib.import_module(self.loading_module).save_pretrained(self, save_directory, **kwargs)
