"""from_pretrained and save_pretrained, written once around each backend's adapter.

A backend's adapter (clip/{pt,tf,flax}/adapter.py) moves canonical arrays (transformers' PyTorch
names and layouts, as numpy) out of and into its models and reads and writes its legacy file
format; everything else is here: the config and its overrides, which files to look for, reading
safetensors, the float and shape checks before anything is assigned, the report of missing,
unexpected and mismatched keys, and on saving config.json, sharding and stale-file removal. The
backends' loading.py keep only what is framework-specific (torch devices and dtypes, Keras dtype
policies, Flax params trees).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

from clip.common import hub, io, sharding, surface, weights
from clip.common.formats import transformers_flax
from clip.errors import CheckpointShapeError  # noqa: F401  (also importable from here, its former home)

logger = logging.getLogger("clip")

# transformers' generic config flags that the models read with a default when absent
RUNTIME_CONFIG_KEYS = ("output_attentions", "output_hidden_states", "return_dict", "problem_type")


# transformers' from_pretrained keywords that change nothing here, accepted (and checked) so its
# calls run unchanged: CLIP needs no remote code; loading always streams from the memory-mapped
# file (low memory); the TF and Flax backends read PyTorch-named safetensors natively (from_pt).
NO_OP_KWARGS = {
    "pt": ("trust_remote_code", "low_cpu_mem_usage"),
    "tf": ("trust_remote_code", "from_pt"),
    "flax": ("trust_remote_code", "from_pt"),
}
SAFETENSORS_FILES = (hub.SAFETENSORS_NAME, hub.SAFETENSORS_INDEX_NAME)

# Per backend: the weight files its from_pretrained looks for, best first (safetensors, then the
# backend's legacy format as transformers writes it), and what to suggest when none is there.
WEIGHT_FILES = {
    "pt": (SAFETENSORS_FILES + (hub.PYTORCH_NAME, hub.PYTORCH_INDEX_NAME), ""),
    "tf": (
        SAFETENSORS_FILES + (hub.TF_NAME,),
        "; pytorch_model.bin needs clip.pt: load it there and save_pretrained to get model.safetensors",
    ),
    "flax": (
        SAFETENSORS_FILES + (transformers_flax.FILE_NAME, transformers_flax.INDEX_NAME),
        "; convert PyTorch .bin checkpoints with clip.pt first",
    ),
}
# The weight files (each with its shards and index) that some backend's from_pretrained reads:
# after a save, those the save did not write are stale, and the next load (here or in
# transformers) could pick them up instead of what was just saved, so they are removed.
WEIGHT_FILE_NAMES = (hub.SAFETENSORS_NAME, hub.PYTORCH_NAME, hub.TF_NAME, transformers_flax.FILE_NAME)
ModelClass = type[Any]  # a backend's model class, read by attribute (config_class, __name__)
PathOrId = str | os.PathLike  # a checkpoint's local directory or hub id
ConfigLike = Any  # a config object, ours or transformers' (None where read from the checkpoint)

NOT_GIVEN = object()  # a keyword left out (None is a value some callers pass)
# transformers' save_pretrained keywords that clip cannot honour (per backend): refused when set
UNSUPPORTED_SAVE_KWARGS = {
    "pt": ("variant", "push_to_hub", "save_peft_format"),
    "tf": ("push_to_hub", "create_pr"),
    "flax": ("push_to_hub",),
}


def pop_no_op_kwargs(kwargs: dict, backend: str) -> None:
    """Remove the NO_OP_KWARGS of `backend` from a from_pretrained(**kwargs) call, checking their type."""
    for key in NO_OP_KWARGS[backend]:
        value = kwargs.pop(key, None)
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{key} must be True, False or None, got {value!r}")


def weight_candidates(candidates: tuple, use_safetensors: bool | None) -> tuple:
    """transformers' use_safetensors: None prefers safetensors, True takes nothing else, False never takes it."""
    if use_safetensors is None:
        return candidates
    if not isinstance(use_safetensors, bool):
        raise TypeError(f"use_safetensors must be True, False or None, got {use_safetensors!r}")
    kept = tuple(name for name in candidates if (name in SAFETENSORS_FILES) == use_safetensors)
    if not kept:
        raise ValueError(f"use_safetensors={use_safetensors}: this backend reads only {', '.join(candidates)}")
    return kept


def resolve_config(
    cls: ModelClass, name_or_path: PathOrId | None, config: ConfigLike, overrides: dict, hub_kwargs: dict
) -> ConfigLike:
    """The model's config: given, or read from name_or_path; then keyword overrides applied."""
    if config is None:
        config = cls.config_class.from_pretrained(name_or_path, **hub_kwargs)
    for key, value in overrides.items():  # e.g. output_hidden_states=True
        if not hasattr(config, key) and key not in RUNTIME_CONFIG_KEYS:
            raise TypeError(f"{cls.__name__}.from_pretrained got an unexpected argument {key!r}")
        setattr(config, key, value)
    return surface.as_config(config, cls.config_class, cls.__name__)  # transformers' config objects too


def locate(
    cls: ModelClass,
    name_or_path: PathOrId,
    config: ConfigLike,
    kwargs: dict,
    backend: str,
    use_safetensors: bool | None = None,
) -> tuple[ConfigLike, str, list[str]]:
    """The steps of every backend's from_pretrained before it reads weights: transformers' no-op
    keywords dropped, the hub's arguments split off, the config resolved with the remaining keyword
    overrides, the weight files found. Returns (config, the file name that matched, [local paths])."""
    candidates, hint = WEIGHT_FILES[backend]
    pop_no_op_kwargs(kwargs, backend)
    hub_kwargs = hub.split_hub_kwargs(kwargs)
    config = resolve_config(cls, name_or_path, config, kwargs, hub_kwargs)
    kind, paths = find_weights(name_or_path, weight_candidates(candidates, use_safetensors), hub_kwargs, hint)
    return config, kind, paths


def config_without_files(
    cls: ModelClass, name_or_path: PathOrId | None, config: ConfigLike, kwargs: dict, backend: str
) -> ConfigLike:
    """from_pretrained with the weights given (PyTorch's state_dict=): the config given, or read
    from name_or_path; no weight files are looked for."""
    pop_no_op_kwargs(kwargs, backend)
    kwargs.pop("use_safetensors", None)
    hub_kwargs = hub.split_hub_kwargs(kwargs)
    if name_or_path is None and config is None:
        raise ValueError(f"{cls.__name__}.from_pretrained(None, ...) needs config= (and state_dict= for its weights)")
    return resolve_config(cls, name_or_path, config, kwargs, hub_kwargs)


def find_weights(
    name_or_path: PathOrId, candidates: Iterable[str], hub_kwargs: dict, hint: str = ""
) -> tuple[str, list[str]]:
    """(the weight file name that matched, [local paths]); a clear error when none is there."""
    found = hub.resolve_weight_files(name_or_path, candidates, **hub_kwargs)
    if found is None:
        raise hub.CheckpointNotFoundError(
            f"{name_or_path}: no weights found (looked for {', '.join(candidates)}{hint})"
        )
    return found


def check_checkpoint(
    cls: ModelClass, name_or_path: PathOrId, expected: dict, shapes: dict, ignore_mismatched_sizes: bool
) -> dict:
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


def read_canonical_safetensors(paths: Iterable[str | os.PathLike]) -> tuple[dict, dict]:
    """({canonical name: array}, {canonical name: the file it came from}) of safetensors shards."""
    origins: dict[str, str] = {}
    tensors = io.read_checkpoint(paths, origins)
    canonical = weights.normalize_checkpoint_keys(tensors)  # checkpoint name -> canonical name
    return {canon: tensors[name] for name, canon in canonical.items()}, {
        canon: origins[name] for name, canon in canonical.items()
    }


def is_float_dtype(dtype: Any) -> bool:
    """A numpy (ml_dtypes' bfloat16 included) or torch dtype of floating-point numbers."""
    if hasattr(dtype, "is_floating_point"):  # torch.dtype
        return bool(dtype.is_floating_point)
    return dtype.kind == "f" or dtype.name == "bfloat16"


def check_float_weights(arrays: dict, expected: dict, files: dict, default_file: str | os.PathLike) -> None:
    """Every tensor the model takes (a name of `expected`) holds floating-point numbers.

    A bool or integer "weight" would be cast silently (int64 gave -inf logits), so it is refused,
    naming the file (`files`: {canonical name: file}, else `default_file`) and the tensor. Tensors
    the model does not take (older checkpoints' int64 position_ids buffers) are not looked at."""
    for name in expected:
        if name in arrays and not is_float_dtype(arrays[name].dtype):
            raise ValueError(
                f"{files.get(name, default_file)}: tensor {name!r} has dtype {arrays[name].dtype}; "
                "model weights must be floating point (float16, bfloat16, float32 or float64)"
            )


def missing_weights_message(name_or_path: PathOrId, missing: Sequence[str], total: int) -> str:
    """'DIR lacks N of the M weights the model needs ...: a, b, c and K more' (what the tasks refuse
    with, what from_pretrained warns with)."""
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return (
        f"{name_or_path} lacks {len(missing)} of the {total} weights the model needs "
        f"(they would be random, not trained): {shown}"
    )


def loading_info(cls: ModelClass, name_or_path: PathOrId, report: dict) -> dict:
    """Log what was not loaded, as transformers does, and return its output_loading_info dict."""
    if report["missing_keys"]:
        logger.warning(
            "Some weights of %s were not in %s and are newly initialized: %s",
            cls.__name__,
            name_or_path,
            report["missing_keys"],
        )
        # a log line scrolls past; a model with untrained weights gives confident wrong answers
        # (stacklevel: the caller of Model.from_pretrained, through the backend's loading module)
        warnings.warn(
            f"{cls.__name__}.from_pretrained: {len(report['missing_keys'])} weight(s) newly initialized: "
            + missing_weights_message(name_or_path, report["missing_keys"], report["expected_count"]),
            UserWarning,
            stacklevel=4,
        )
    if report["unexpected_keys"]:
        logger.warning(
            "Some weights of %s were not used by %s: %s", name_or_path, cls.__name__, report["unexpected_keys"]
        )
    if report["mismatched_keys"]:
        logger.warning(
            "Some weights of %s had other shapes and are newly initialized: %s", cls.__name__, report["mismatched_keys"]
        )
    info = {k: report[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    return {**info, "error_msgs": []}


def start_save(save_directory: str | os.PathLike, config: ConfigLike, canonical_class: str) -> str:
    """The first steps of every backend's save_pretrained: the directory (refused when it is a file),
    then config.json naming the canonical class in `architectures`, as transformers writes it."""
    save_directory = os.fspath(save_directory)
    if os.path.isfile(save_directory):
        raise ValueError(f"{save_directory} is a file; save_pretrained needs a directory")
    os.makedirs(save_directory, exist_ok=True)
    type(config).from_dict({**config.to_dict(), "architectures": [canonical_class]}).save_pretrained(save_directory)
    return save_directory


def check_safe_serialization(value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"safe_serialization must be True or False, got {value!r}")


# -- model classes and canonical arrays ------------------------------------------------------------
def canonical_class(model_or_cls: object, prefix: str = "") -> str:
    """A model (or its class, or a subclass) -> its name in clip.common.weights ("CLIPModel", ...):
    the first class of its MRO whose name, less the backend's `prefix` ("TF", "Flax"), is one."""
    cls = model_or_cls if isinstance(model_or_cls, type) else type(model_or_cls)
    for base in cls.__mro__:
        if base.__name__.removeprefix(prefix) in weights.MODEL_CLASSES:
            return base.__name__.removeprefix(prefix)
    raise TypeError(
        f"{cls.__name__} is not one of {', '.join(prefix + n for n in weights.MODEL_CLASSES)} nor a subclass of one"
    )


class CanonicalArrays(Mapping):
    """{canonical name: numpy array in the canonical layout}, each array read from the model only
    when asked for: walking it (the fingerprint) holds one tensor's host copy at a time."""

    def __init__(self, kinds: dict, read: Callable):
        self._kinds, self._read = kinds, read  # {name: leaf kind}; read(name, kind) -> array

    def __getitem__(self, name):
        return self._read(name, self._kinds[name])

    def __iter__(self):
        return iter(self._kinds)

    def __len__(self):
        return len(self._kinds)


# -- reading --------------------------------------------------------------------------------------
@dataclasses.dataclass
class LoadedCheckpoint:
    """What from_pretrained knows before it builds the model: everything checked, nothing assigned."""

    config: object
    source: str | os.PathLike  # name_or_path, or "the given state_dict": for messages
    arrays: dict  # {canonical name: array} the model takes from the checkpoint, in the model's order
    fresh: list  # canonical names the checkpoint lacks or has in another shape: to be initialized
    report: dict  # check_checkpoint's, for loading_info
    first_dtype: object = None  # the dtype of the checkpoint's first tensor the model takes (dtype="auto")


def read_pretrained(
    cls: ModelClass,
    name_or_path: PathOrId | None,
    adapter: ModuleType,
    config: ConfigLike,
    kwargs: dict,
    use_safetensors: bool | None = None,
    ignore_mismatched_sizes: bool = False,
    state_dict: Mapping | None = None,
) -> LoadedCheckpoint:
    """The config, then the weights of name_or_path (safetensors here, the backend's legacy format
    through adapter.read_legacy) or the given `state_dict`, by canonical name, every tensor checked
    (floating point, shape) against the model class before anything is assigned."""
    files: dict[str, str] = {}  # canonical name -> its file, for messages
    if name_or_path is None or state_dict is not None:
        config = config_without_files(cls, name_or_path, config, kwargs, adapter.BACKEND)
        tensors = dict(state_dict or {})
        arrays = {canon: tensors[name] for name, canon in weights.normalize_checkpoint_keys(tensors).items()}
        source = default_file = name_or_path if name_or_path is not None else "the given state_dict"
    else:
        config, kind, paths = locate(cls, name_or_path, config, kwargs, adapter.BACKEND, use_safetensors)
        if kind in SAFETENSORS_FILES:
            arrays, files = read_canonical_safetensors(paths)
        else:
            arrays = adapter.read_legacy(kind, paths, files)
        source, default_file = name_or_path, paths[0]
    expected = weights.expected_parameters(config, adapter.canonical_class(cls))
    check_float_weights(arrays, expected, files, default_file)
    report = check_checkpoint(
        cls, source, expected, {n: tuple(a.shape) for n, a in arrays.items()}, ignore_mismatched_sizes
    )
    fresh = [n for n in expected if n not in arrays or n in report["mismatched"]]
    first_dtype = next((a.dtype for n, a in arrays.items() if n in expected), None)
    taken = {n: arrays[n] for n in expected if n not in fresh}
    return LoadedCheckpoint(config, source, taken, fresh, report, first_dtype)


# -- writing --------------------------------------------------------------------------------------
def check_save_kwargs(kwargs: dict, backend: str) -> None:
    """transformers' save_pretrained keywords: those clip cannot honour refused when set, the
    token dropped (nothing is pushed), anything else a TypeError."""
    for key in UNSUPPORTED_SAVE_KWARGS[backend]:
        value = kwargs.pop(key, None)
        if value:
            raise ValueError(f"save_pretrained: {key}={value!r} is not supported by clip.{backend}")
    kwargs.pop("token", None)
    if kwargs:
        raise TypeError(f"save_pretrained got unexpected arguments {sorted(kwargs)}")


def save_pretrained(
    model: Any,  # a model of any backend, read by attribute (config)
    save_directory: str | os.PathLike,
    adapter: ModuleType,
    kwargs: dict,
    arrays: dict | None = None,
    safetensors: bool = True,
    legacy: bool = False,
    max_shard_size: int | str = sharding.DEFAULT_MAX_SHARD_SIZE,
    is_main_process: bool = True,
    safe_serialization: object = NOT_GIVEN,
) -> str | None:
    """config.json, then the weights (`arrays`, default adapter.canonical_arrays(model)) as
    model.safetensors ({"format": "pt"}, canonical names; sharded beyond max_shard_size with
    transformers' index json) and/or the backend's legacy format (adapter.write_legacy); each file
    written atomically; then every weight file of another format or sharding removed. On processes
    other than the main one nothing is written, as in transformers. `safe_serialization`, when
    given, is checked to be a bool (the TF and Flax backends' keyword). Returns the directory."""
    check_save_kwargs(kwargs, adapter.BACKEND)
    if safe_serialization is not NOT_GIVEN:
        check_safe_serialization(safe_serialization)
    if not is_main_process:
        return None
    directory = start_save(save_directory, model.config, adapter.canonical_class(model))
    arrays = dict(adapter.canonical_arrays(model) if arrays is None else arrays)
    written = []
    if safetensors:
        written += sharding.save_weights(
            directory,
            arrays,
            {n: a.nbytes for n, a in arrays.items()},
            write_safetensors,
            max_shard_size,
            total_parameters=sum(math.prod(a.shape) for a in arrays.values()),
        )
    if legacy:
        written += adapter.write_legacy(model, directory, arrays, max_shard_size)
    remove_stale_weights(directory, written)
    return directory


def write_safetensors(arrays: dict, path: str | os.PathLike) -> None:
    io.write_safetensors(arrays, path, metadata={"format": "pt"})  # transformers' PyTorch marks its files so


def remove_stale_weights(directory: str, written: Iterable[str]) -> None:
    """Remove each weight file (single, shards, index) of WEIGHT_FILE_NAMES that this save did not write."""
    for base in WEIGHT_FILE_NAMES:
        stem = os.path.splitext(base)[0]
        if not any(name == base or name.startswith(stem + "-") or name == base + ".index.json" for name in written):
            sharding.remove_weights(directory, base)
