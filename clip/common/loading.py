"""The framework-neutral steps of every backend's from_pretrained.

Each backend reads its files and assigns arrays its own way; what comes before (the config and
its overrides) and after (the shape check, the report of missing, unexpected and mismatched
keys) is the same everywhere and lives here.
"""

from __future__ import annotations

import logging
import os
import warnings

from clip.common import hub, io, surface, weights
from clip.errors import CheckpointShapeError  # noqa: F401  (also importable from here, its former home)

logger = logging.getLogger("clip")

# transformers' generic config flags that the models read with a default when absent
RUNTIME_CONFIG_KEYS = ("output_attentions", "output_hidden_states", "return_dict", "problem_type")


# transformers' from_pretrained keywords that change nothing here, accepted (and checked) so its
# calls run unchanged: CLIP needs no remote code; loading always streams from the memory-mapped
# file (low memory); the TF and Flax backends read PyTorch-named safetensors natively (from_pt).
NO_OP_KWARGS = {"pt": ("trust_remote_code", "low_cpu_mem_usage"), "tf": ("trust_remote_code", "from_pt"),
                "flax": ("trust_remote_code", "from_pt")}
SAFETENSORS_FILES = (hub.SAFETENSORS_NAME, hub.SAFETENSORS_INDEX_NAME)


def pop_no_op_kwargs(kwargs: dict, backend: str):
    """Remove the NO_OP_KWARGS of `backend` from a from_pretrained(**kwargs) call, checking their type."""
    for key in NO_OP_KWARGS[backend]:
        value = kwargs.pop(key, None)
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{key} must be True, False or None, got {value!r}")


def weight_candidates(candidates: tuple, use_safetensors) -> tuple:
    """transformers' use_safetensors: None prefers safetensors, True takes nothing else, False never takes it."""
    if use_safetensors is None:
        return candidates
    if not isinstance(use_safetensors, bool):
        raise TypeError(f"use_safetensors must be True, False or None, got {use_safetensors!r}")
    kept = tuple(name for name in candidates if (name in SAFETENSORS_FILES) == use_safetensors)
    if not kept:
        raise ValueError(f"use_safetensors={use_safetensors}: this backend reads only {', '.join(candidates)}")
    return kept


def resolve_config(cls, name_or_path, config, overrides: dict, hub_kwargs: dict):
    """The model's config: given, or read from name_or_path; then keyword overrides applied."""
    if config is None:
        config = cls.config_class.from_pretrained(name_or_path, **hub_kwargs)
    for key, value in overrides.items():  # e.g. output_hidden_states=True
        if not hasattr(config, key) and key not in RUNTIME_CONFIG_KEYS:
            raise TypeError(f"{cls.__name__}.from_pretrained got an unexpected argument {key!r}")
        setattr(config, key, value)
    return surface.as_config(config, cls.config_class, cls.__name__)  # transformers' config objects too


def locate(cls, name_or_path, config, kwargs: dict, backend: str, candidates: tuple, use_safetensors=None, hint: str = ""):
    """The steps of every backend's from_pretrained before it reads weights: transformers' no-op
    keywords dropped, the hub's arguments split off, the config resolved with the remaining keyword
    overrides, the weight files found. Returns (config, the file name that matched, [local paths])."""
    pop_no_op_kwargs(kwargs, backend)
    hub_kwargs = hub.split_hub_kwargs(kwargs)
    config = resolve_config(cls, name_or_path, config, kwargs, hub_kwargs)
    kind, paths = find_weights(name_or_path, weight_candidates(candidates, use_safetensors), hub_kwargs, hint)
    return config, kind, paths


def find_weights(name_or_path, candidates, hub_kwargs: dict, hint: str = "") -> tuple[str, list[str]]:
    """(the weight file name that matched, [local paths]); a clear error when none is there."""
    found = hub.resolve_weight_files(name_or_path, candidates, **hub_kwargs)
    if found is None:
        raise hub.CheckpointNotFoundError(f"{name_or_path}: no weights found (looked for {', '.join(candidates)}{hint})")
    return found


def check_checkpoint(cls, name_or_path, expected: dict, shapes: dict, ignore_mismatched_sizes: bool) -> dict:
    """Compare a checkpoint's {canonical name: shape} with the model's before anything is assigned.

    Returns weights.match_checkpoint's report plus "mismatched" (the set of mismatched names);
    raises one ValueError listing every mismatched tensor unless ignore_mismatched_sizes.
    """
    report = weights.match_checkpoint(expected, shapes)
    if report["mismatched_keys"] and not ignore_mismatched_sizes:
        lines = [f"  {n}: the model expects {e}, the checkpoint has {f}" for n, e, f in report["mismatched_keys"]]
        raise CheckpointShapeError(
            f"{name_or_path}: {len(lines)} tensor(s) of the checkpoint do not fit {cls.__name__} "
            "(pass ignore_mismatched_sizes=True to initialize them instead):\n" + "\n".join(lines)
        )
    report["mismatched"] = {n for n, _, _ in report["mismatched_keys"]}
    report["expected_count"] = len(expected)
    return report


def read_canonical_safetensors(paths) -> tuple[dict, dict]:
    """({canonical name: array}, {canonical name: the file it came from}) of safetensors shards."""
    origins = {}
    tensors = io.read_checkpoint(paths, origins)
    canonical = weights.normalize_checkpoint_keys(tensors)  # checkpoint name -> canonical name
    return {canon: tensors[name] for name, canon in canonical.items()}, {canon: origins[name] for name, canon in canonical.items()}


def is_float_dtype(dtype) -> bool:
    """A numpy (ml_dtypes' bfloat16 included) or torch dtype of floating-point numbers."""
    if hasattr(dtype, "is_floating_point"):  # torch.dtype
        return bool(dtype.is_floating_point)
    return dtype.kind == "f" or dtype.name == "bfloat16"


def check_float_weights(arrays: dict, expected: dict, files: dict, default_file):
    """Every tensor the model takes (a name of `expected`) holds floating-point numbers.

    A bool or integer "weight" would be cast silently (int64 gave -inf logits), so it is refused,
    naming the file (`files`: {canonical name: file}, else `default_file`) and the tensor. Tensors
    the model does not take (older checkpoints' int64 position_ids buffers) are not looked at."""
    for name in expected:
        if name in arrays and not is_float_dtype(arrays[name].dtype):
            raise ValueError(f"{files.get(name, default_file)}: tensor {name!r} has dtype {arrays[name].dtype}; "
                             "model weights must be floating point (float16, bfloat16, float32 or float64)")


def missing_weights_message(name_or_path, missing, total: int) -> str:
    """'DIR lacks N of the M weights the model needs ...: a, b, c and K more' (what the tasks refuse
    with, what from_pretrained warns with)."""
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return (f"{name_or_path} lacks {len(missing)} of the {total} weights the model needs "
            f"(they would be random, not trained): {shown}")


def loading_info(cls, name_or_path, report: dict) -> dict:
    """Log what was not loaded, as transformers does, and return its output_loading_info dict."""
    if report["missing_keys"]:
        logger.warning("Some weights of %s were not in %s and are newly initialized: %s", cls.__name__, name_or_path, report["missing_keys"])
        # a log line scrolls past; a model with untrained weights gives confident wrong answers
        # (stacklevel: the caller of Model.from_pretrained, through the backend's loading module)
        warnings.warn(f"{cls.__name__}.from_pretrained: {len(report['missing_keys'])} weight(s) newly initialized: "
                      + missing_weights_message(name_or_path, report["missing_keys"], report["expected_count"]),
                      UserWarning, stacklevel=4)
    if report["unexpected_keys"]:
        logger.warning("Some weights of %s were not used by %s: %s", name_or_path, cls.__name__, report["unexpected_keys"])
    if report["mismatched_keys"]:
        logger.warning("Some weights of %s had other shapes and are newly initialized: %s", cls.__name__, report["mismatched_keys"])
    info = {k: report[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    return {**info, "error_msgs": []}


def start_save(save_directory, config, canonical_class: str) -> str:
    """The first steps of every backend's save_pretrained: the directory (refused when it is a file),
    then config.json naming the canonical class in `architectures`, as transformers writes it."""
    save_directory = os.fspath(save_directory)
    if os.path.isfile(save_directory):
        raise ValueError(f"{save_directory} is a file; save_pretrained needs a directory")
    os.makedirs(save_directory, exist_ok=True)
    type(config).from_dict({**config.to_dict(), "architectures": [canonical_class]}).save_pretrained(save_directory)
    return save_directory


def check_safe_serialization(value):
    if not isinstance(value, bool):
        raise TypeError(f"safe_serialization must be True or False, got {value!r}")
