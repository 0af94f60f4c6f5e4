"""What a checkpoint in the canonical layout must be, whatever format it came from: a config that its
model class accepts, every tensor that config expects with its shape and nothing else, floating
point weights. Each check ends in one ConversionError naming the file and, where the source has
its own tensor names, the source's name beside the canonical one. And what a converted directory
carries beside the weights: the tokenizer and processor files.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from clip.common import config as config_module
from clip.common import io, weights
from clip.errors import ConversionError

# Files of the tokenizer and the image processor that a converted directory carries along.
PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)


def config_class(
    model_class: str,
) -> type[config_module.CLIPConfig] | type[config_module.CLIPTextConfig] | type[config_module.CLIPVisionConfig]:
    if model_class in ("CLIPModel", "CLIPForImageClassification"):
        return config_module.CLIPConfig
    return config_module.CLIPTextConfig if model_class.startswith("CLIPText") else config_module.CLIPVisionConfig


def config_object(
    config: dict, model_class: str, where: str
) -> config_module.CLIPConfig | config_module.CLIPTextConfig | config_module.CLIPVisionConfig:
    """The config class instance of `model_class` from the dict `config` (validates the config)."""
    try:
        return config_class(model_class).from_dict(config)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"{where}: invalid config: {err}") from None


def model_class_of(config: dict) -> str:
    """The canonical model class a config.json describes (its architectures, else its model_type)."""
    for name in config.get("architectures") or []:
        name = name.removeprefix("TF").removeprefix("Flax")
        if name in weights.MODEL_CLASSES:
            return name
    if config.get("model_type") == "clip_text_model":
        return "CLIPTextModel"
    if config.get("model_type") == "clip_vision_model":
        return "CLIPVisionModel"
    return "CLIPModel"


def apply_overrides(config: dict, overrides: dict) -> dict:
    """A copy of `config` with `overrides` applied.

    `overrides` has dotted keys: {"text_config.hidden_act": "gelu", "projection_dim": 512, ...}.
    """
    config = json.loads(json.dumps(config))
    for key, value in (overrides or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def check(arrays: dict, spec: dict, model_class: str, where: str, names: dict) -> dict:
    """`arrays` in state_dict order, once every expected tensor (spec: weights.expected_parameters) is
    present with its shape and nothing else is; else one error naming `where` and the tensors
    (`names`: canonical name -> the source's own name, for messages)."""
    found = {name: tuple(np.shape(array)) for name, array in arrays.items()}
    report = weights.match_checkpoint(spec, found)
    label = lambda n: n if names.get(n, n) == n else f"{names[n]} (canonical {n})"  # noqa: E731
    if report["mismatched_keys"]:
        lines = [
            f"  tensor {label(n)}: found shape {f}, the config expects {e}" for n, e, f in report["mismatched_keys"]
        ]
        raise ConversionError(
            f"{where}: {len(lines)} tensor(s) with the wrong shape for a {model_class}:\n" + "\n".join(lines)
        )
    if report["unexpected_keys"] and not report["missing_keys"]:
        raise ConversionError(
            f"{where}: tensor(s) that are not part of a {model_class}: "
            f"{', '.join(map(label, report['unexpected_keys'][:8]))}"
        )
    if report["missing_keys"]:
        if len(report["missing_keys"]) == len(spec):
            raise ConversionError(
                f"{where}: not a CLIP checkpoint (none of the {len(spec)} tensors of a {model_class}, "
                f"e.g. {next(iter(spec))!r}, is in it)"
            )
        raise ConversionError(
            f"{where}: missing tensor(s) of a {model_class}: {', '.join(report['missing_keys'][:8])}"
            + (
                f"; and tensors it does not have: {', '.join(report['unexpected_keys'][:8])}"
                if report["unexpected_keys"]
                else ""
            )
        )
    for name, array in arrays.items():
        if not np.issubdtype(np.asarray(array).dtype, np.floating) and np.asarray(array).dtype.name != "bfloat16":
            raise ConversionError(
                f"{where}: tensor {label(name)} has dtype {np.asarray(array).dtype}; "
                "model weights must be floating point (float16, bfloat16, float32 or float64)"
            )
    return {name: arrays[name] for name in spec}  # state_dict order, as clip.pt writes it


def cast(arrays: dict, dtype: str) -> dict:
    target = io.numpy_dtype(dtype)
    return {name: np.asarray(array).astype(target) for name, array in arrays.items()}


def has_processor_files(directory: str | os.PathLike | None) -> bool:
    return (
        directory is not None
        and bool(directory)
        and any(
            os.path.isfile(os.path.join(directory, n))
            for n in ("preprocessor_config.json", "tokenizer_config.json", "tokenizer.json")
        )
    )


def write_processor_files(source_dir: str | os.PathLike | None, config: dict, directory: str | os.PathLike) -> None:
    """The tokenizer and processor files of `source_dir` when it has them, else CLIP's defaults
    (the embedded vocabulary; resize and crop to the image size of `config`)."""
    if source_dir is not None and has_processor_files(source_dir):
        for name in PROCESSOR_FILES:
            path = os.path.join(source_dir, name)
            if os.path.isfile(path):
                shutil.copyfile(path, os.path.join(directory, name))
        return
    from clip.common.image_processor import CLIPImageProcessor
    from clip.common.processor import CLIPProcessor
    from clip.common.tokenizer import CLIPTokenizerFast

    vision = config.get("vision_config", config)
    size = int(vision.get("image_size", 224))
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    CLIPProcessor(image_processor, CLIPTokenizerFast()).save_pretrained(directory)
