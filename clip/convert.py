"""Convert CLIP checkpoints between formats, through the canonical layout (clip.common.weights).

    convert(src, dst, from_format=None, to_format="canonical", dtype=None)

Every conversion reads the source into {canonical name: numpy array (PyTorch layout)} plus a
CLIPConfig, checks every name and shape against clip.common.weights.expected_parameters, and
only then writes the target. The foreign layouts are data (clip.common.formats.*: name maps,
transposes, fused-qkv splits); this module only reads and writes files. A framework is imported
only by the formats that need it: torch for .pt/.bin, tensorflow for .keras, flax for .msgpack.

Source formats (detected from the files when not given):
  transformers-pt     a directory with model.safetensors, a sharded index or pytorch_model.bin
                      (read with weights_only=True); also a lone .safetensors/.bin in canonical
                      names with config.json beside it. "canonical" is another name for it.
  transformers-tf     tf_model.h5 (transformers 4.x TFCLIPModel.save_pretrained)
  transformers-flax   flax_model.msgpack (transformers FlaxCLIPModel.save_pretrained)
  keras               this library's TF model saved as a .keras file
  flax-params         a .msgpack of this library's FlaxCLIPModel.params (optionally under "params"),
                      config.json beside it
  openai              OpenAI's ViT checkpoints (ViT-B-32.pt, ...): TorchScript archive or state dict
  open_clip           open_clip state dicts of the same architectures (open_clip_config.json beside
                      it, when present, gives heads and activation)
Target formats: canonical (config.json + model.safetensors + processor files, the default),
pytorch-bin, transformers-tf, transformers-flax (each a directory with config.json and the
processor files), and the single files keras, flax-params, openai, open_clip.

Nothing is written to `dst` unless the whole conversion succeeds: directories are assembled in a
temporary directory beside `dst` and renamed, files written to a temporary file and renamed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field

import numpy as np

from clip.common import config as config_module
from clip.common import hub, io, weight_files, weights
from clip.common.formats import open_clip, openai, transformers_flax, transformers_tf
from clip.errors import ConversionError  # noqa: F401  (also importable from here, its former home)

SOURCE_FORMATS = ("transformers-pt", "transformers-tf", "transformers-flax", "keras", "flax-params", "openai", "open_clip")
TARGET_FORMATS = ("canonical", "pytorch-bin", "transformers-tf", "transformers-flax", "keras", "flax-params", "openai", "open_clip")
ALIASES = {"canonical": "transformers-pt", "safetensors": "transformers-pt", "pytorch": "transformers-pt", "tf": "transformers-tf", "flax": "transformers-flax", "open-clip": "open_clip"}
DIRECTORY_TARGETS = ("canonical", "pytorch-bin", "transformers-tf", "transformers-flax")
DTYPES = ("float32", "float16", "bfloat16")

# Files of the tokenizer and the image processor that a converted directory carries along.
PROCESSOR_FILES = (
    "preprocessor_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
    "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json",
)
CANONICAL_PREFIXES = ("text_model.", "vision_model.", "clip.text_model.", "clip.vision_model.")

# transformers' TF checkpoint: the two scopes before the PyTorch path, the list-item naming, and
# the names and shapes that do not follow the per-leaf rules (inverse of transformers_tf.SPECIAL).
TF_SCOPES = "tfclip_model/clip/"
TF_SPECIAL = {canonical: (path, (1,) if path == "logit_scale" else None) for path, (canonical, _, _) in transformers_tf.SPECIAL.items()}
TF_LAYER_NAME = "clip"


@dataclass
class Checkpoint:
    """A checkpoint in the canonical layout: what every reader returns and every writer takes."""

    arrays: dict  # canonical name -> numpy array (PyTorch layout)
    config: dict  # config.json contents (CLIPConfig, or a tower config for the tower classes)
    model_class: str = "CLIPModel"  # a name of clip.common.weights.MODEL_CLASSES
    source: str = ""  # the file the tensors came from, for messages
    names: dict = field(default_factory=dict)  # canonical name -> the source's own name, for messages
    processor_dir: str | None = None  # a directory whose tokenizer/processor files are copied along
    notes: list = field(default_factory=list)  # assumptions the reader made (printed by the CLI)


# -- public entry point -----------------------------------------------------------------------------
def convert(src, dst, from_format=None, to_format="canonical", dtype=None, overwrite=False,
            config_overrides=None, processor=True) -> Checkpoint:
    """Convert `src` into `dst`; returns the (validated) checkpoint that was written."""
    src, dst = os.fspath(src), os.fspath(dst)
    to_format = {"open-clip": "open_clip"}.get(to_format, to_format)
    if to_format not in TARGET_FORMATS:
        raise ConversionError(f"unknown target format {to_format!r}; expected one of {', '.join(TARGET_FORMATS)}")
    if dtype is not None and dtype not in DTYPES:
        raise ConversionError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ConversionError(f"{dst}: the destination is the source")
    _check_destination(dst, to_format, overwrite)
    checkpoint = load(src, from_format, config_overrides=config_overrides)
    if dtype is not None:
        checkpoint.arrays = cast(checkpoint.arrays, dtype)
    save(checkpoint, dst, to_format, overwrite=overwrite, processor=processor)
    return checkpoint


def load(src, from_format=None, config_overrides=None) -> Checkpoint:
    """Read and validate any supported source into a Checkpoint."""
    src = os.fspath(src)
    if not os.path.exists(src):
        raise ConversionError(f"{src}: no such file or directory")
    fmt = ALIASES.get(from_format, from_format) if from_format else None
    if fmt is not None and fmt not in SOURCE_FORMATS:
        raise ConversionError(f"unknown source format {from_format!r}; expected one of {', '.join(SOURCE_FORMATS)} (or canonical)")
    checkpoint = READERS[fmt or detect_format(src)](src, config_overrides or {})
    validate(checkpoint)
    return checkpoint


def save(checkpoint: Checkpoint, dst, to_format="canonical", overwrite=False, processor=True):
    """Write a validated Checkpoint as `to_format`, atomically."""
    dst = os.fspath(dst)
    _check_destination(dst, to_format, overwrite)
    if to_format in DIRECTORY_TARGETS:
        with staged_directory(dst, overwrite) as tmp:
            _write_config(checkpoint, tmp)
            DIRECTORY_WRITERS[to_format](checkpoint, tmp)
            if processor:
                write_processor(checkpoint, tmp)
    else:
        with io.atomic_path(dst) as tmp:
            FILE_WRITERS[to_format](checkpoint, tmp)


# -- detection --------------------------------------------------------------------------------------
def detect_format(src: str) -> str:
    """The source format of a file or directory, from its file names and (for .pt/.bin) its keys."""
    if os.path.isdir(src):
        has = lambda name: os.path.isfile(os.path.join(src, name))  # noqa: E731
        if any(has(n) for n in (hub.SAFETENSORS_NAME, hub.SAFETENSORS_INDEX_NAME, hub.PYTORCH_NAME, hub.PYTORCH_INDEX_NAME)):
            return "transformers-pt"
        if has(hub.TF_NAME):
            return "transformers-tf"
        if has(transformers_flax.FILE_NAME) or has(transformers_flax.INDEX_NAME):
            return "transformers-flax"
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if has(name):
                return "open_clip"
        raise ConversionError(
            f"{src}: no CLIP weights in this directory (looked for model.safetensors, pytorch_model.bin, "
            "tf_model.h5, flax_model.msgpack, open_clip_pytorch_model.bin)"
        )
    suffix = os.path.splitext(src)[1].lower()
    if suffix == ".keras":
        return "keras"
    if suffix == ".h5":
        return "transformers-tf"
    if suffix == ".msgpack":
        return "flax-params"
    if suffix == ".safetensors":
        names = [n for n in io.read_safetensors_header(src)[0] if n != "__metadata__"]
        return _classify_names(src, names)
    if _is_torchscript(src):
        return "openai"  # OpenAI's released checkpoints are TorchScript archives
    state = _torch_load(src)
    return _classify_names(src, list(_flat_names(state)))


def _classify_names(src, names) -> str:
    if any(n.startswith(CANONICAL_PREFIXES) for n in names):
        return "transformers-pt"
    if any(n.startswith(open_clip.DDP_PREFIX) or n.startswith(open_clip.CUSTOM_TEXT_PREFIX) for n in names):
        return "open_clip"
    if "open_clip" in os.path.basename(src) or os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(src)), open_clip.CONFIG_NAME)):
        return "open_clip"
    if any(n in ("state_dict", "epoch", "optimizer") for n in names):
        return "open_clip"  # a training checkpoint's wrapper
    return "openai"


def _flat_names(state):
    if not isinstance(state, dict):
        return []
    return list(state)


# -- readers ------------------------------------------------------------------------------------------
def read_transformers_pt(src, overrides) -> Checkpoint:
    if os.path.isdir(src):
        found = hub.resolve_weight_files(src, (hub.SAFETENSORS_NAME, hub.SAFETENSORS_INDEX_NAME, hub.PYTORCH_NAME, hub.PYTORCH_INDEX_NAME))
        if found is None:
            raise ConversionError(f"{src}: no model.safetensors or pytorch_model.bin in this directory")
        _, paths = found
        directory = src
    else:
        paths, directory = [src], os.path.dirname(os.path.abspath(src))
    tensors = {}
    for path in paths:
        shard = io.read_safetensors(path) if path.endswith(".safetensors") else _torch_tensors(_torch_load(path), path)
        for name, array in shard.items():
            if name in tensors:
                raise ConversionError(f"{path}: tensor {name!r} also appears in another shard")
            tensors[name] = array
    mapping = weights.normalize_checkpoint_keys(tensors)
    arrays = {canonical: tensors[name] for name, canonical in mapping.items()}
    config = _read_config(directory, paths[0], overrides)
    return Checkpoint(arrays, config, _model_class(config), paths[0], {c: n for n, c in mapping.items()}, directory)


def read_transformers_tf(src, overrides) -> Checkpoint:
    path = os.path.join(src, hub.TF_NAME) if os.path.isdir(src) else src
    directory = os.path.dirname(os.path.abspath(path))
    raw = read_h5(path)
    arrays, names = {}, {}
    for tf_name, array in raw.items():
        canonical, _, _ = transformers_tf.canonical_name(tf_name, np.ndim(array))
        names[canonical] = tf_name
    try:
        arrays = transformers_tf.to_canonical(raw)
    except ValueError as err:
        raise ConversionError(f"{path}: {err}") from None
    config = _read_config(directory, path, overrides)
    return Checkpoint(arrays, config, _model_class(config), path, names, directory)


def read_transformers_flax(src, overrides) -> Checkpoint:
    if os.path.isdir(src):
        found = hub.resolve_weight_files(src, (transformers_flax.FILE_NAME, transformers_flax.INDEX_NAME))
        if found is None:
            raise ConversionError(f"{src}: no flax_model.msgpack in this directory")
        paths, directory = found[1], src
    else:
        paths, directory = [src], os.path.dirname(os.path.abspath(src))
    arrays = {}
    for path in paths:
        tree = _read_msgpack(path)
        try:
            shard = transformers_flax.to_canonical(tree)
        except ValueError as err:
            raise ConversionError(f"{path}: {err}") from None
        for name, array in shard.items():
            if name in arrays:
                raise ConversionError(f"{path}: tensor {name!r} also appears in another shard")
            arrays[name] = array
    config = _read_config(directory, paths[0], overrides)
    return Checkpoint(arrays, config, _model_class(config), paths[0], {}, directory)


def read_flax_params(src, overrides) -> Checkpoint:
    checkpoint = read_transformers_flax(src, overrides)
    checkpoint.processor_dir = None if not _has_processor_files(checkpoint.processor_dir) else checkpoint.processor_dir
    return checkpoint


def read_keras(src, overrides) -> Checkpoint:
    import keras

    import clip.tf  # noqa: F401  registers the model classes with Keras
    from clip.tf import loading

    try:
        weight_files.check_keras_archive(src)
    except OSError as err:
        raise ConversionError(str(err)) from None
    try:
        model = keras.saving.load_model(src, compile=False)
    except Exception as err:  # Keras raises many types for a file that is not its own
        raise ConversionError(f"{src}: not a .keras file of a clip.tf model ({type(err).__name__}: {err})") from None
    if not hasattr(model, "canonical_variables"):
        raise ConversionError(f"{src}: the .keras file holds a {type(model).__name__}, not a clip.tf CLIP model")
    config = {**model.config.to_dict(), "architectures": [model.canonical_class]}
    config = _apply_overrides(config, overrides)
    return Checkpoint(loading.canonical_state(model), config, model.canonical_class, src, {}, None)


def read_openai(src, overrides, layout="openai") -> Checkpoint:
    if os.path.isdir(src):
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if os.path.isfile(os.path.join(src, name)):
                src = os.path.join(src, name)
                break
        else:
            raise ConversionError(f"{src}: a directory; pass the checkpoint file itself")
    if src.endswith(".safetensors"):
        state = io.read_safetensors(src)
    elif _is_torchscript(src):
        state = _torch_tensors(_torchscript_state(src), src)
    else:
        state = _torch_tensors(_torch_load(src), src)
    notes = []
    heads = {kw: int(overrides[key]) for key, kw in (("text_config.num_attention_heads", "text_heads"), ("vision_config.num_attention_heads", "vision_heads")) if key in overrides}
    state = open_clip.unwrap(state)  # a training checkpoint's {"state_dict": ...} and DDP's "module."
    if layout == "open_clip":
        model_cfg = _open_clip_config(src)
        if model_cfg is None:
            notes.append(f"no {open_clip.CONFIG_NAME} beside the file: assumed open_clip's defaults (GELU, head width 64 or "
                         "the released ViT-H/g/bigG widths); set text_config.hidden_act=quick_gelu for -quickgelu models")
        try:
            config = open_clip.infer_config(state, src, model_cfg, **heads)
            arrays, names = open_clip.to_canonical(state, src)
        except ValueError as err:
            raise ConversionError(str(err)) from None
    else:
        try:
            config = openai.infer_config(state, src, **heads)
            openai.check_buffers(state, config, src)
            arrays, names = openai.to_canonical(state, src)
        except ValueError as err:
            raise ConversionError(str(err)) from None
    config = _apply_overrides(config, overrides)
    return Checkpoint(arrays, config, "CLIPModel", src, names, None, notes)


READERS = {
    "transformers-pt": read_transformers_pt,
    "transformers-tf": read_transformers_tf,
    "transformers-flax": read_transformers_flax,
    "flax-params": read_flax_params,
    "keras": read_keras,
    "openai": read_openai,
    "open_clip": lambda src, overrides: read_openai(src, overrides, layout="open_clip"),
}


# -- validation ------------------------------------------------------------------------------------------
def config_object(checkpoint: Checkpoint):
    """The config class instance of the checkpoint's model class (validates the config)."""
    cls = config_class(checkpoint.model_class)
    try:
        return cls.from_dict(checkpoint.config)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"{checkpoint.source}: invalid config: {err}") from None


def config_class(model_class: str):
    if model_class in ("CLIPModel", "CLIPForImageClassification"):
        return config_module.CLIPConfig
    return config_module.CLIPTextConfig if model_class.startswith("CLIPText") else config_module.CLIPVisionConfig


def expected(checkpoint: Checkpoint) -> dict:
    return weights.expected_parameters(config_object(checkpoint), checkpoint.model_class)


def validate(checkpoint: Checkpoint):
    """Every expected tensor present with its shape, nothing else: else one error naming file and tensors."""
    spec = expected(checkpoint)
    found = {name: tuple(np.shape(array)) for name, array in checkpoint.arrays.items()}
    report = weights.match_checkpoint(spec, found)
    where = checkpoint.source
    label = lambda n: n if checkpoint.names.get(n, n) == n else f"{checkpoint.names[n]} (canonical {n})"  # noqa: E731
    if report["mismatched_keys"]:
        lines = [f"  tensor {label(n)}: found shape {f}, the config expects {e}" for n, e, f in report["mismatched_keys"]]
        raise ConversionError(f"{where}: {len(lines)} tensor(s) with the wrong shape for a {checkpoint.model_class}:\n" + "\n".join(lines))
    if report["unexpected_keys"] and not report["missing_keys"]:
        raise ConversionError(f"{where}: tensor(s) that are not part of a {checkpoint.model_class}: {', '.join(map(label, report['unexpected_keys'][:8]))}")
    if report["missing_keys"]:
        if len(report["missing_keys"]) == len(spec):
            raise ConversionError(f"{where}: not a CLIP checkpoint (none of the {len(spec)} tensors of a {checkpoint.model_class}, "
                                  f"e.g. {next(iter(spec))!r}, is in it)")
        raise ConversionError(f"{where}: missing tensor(s) of a {checkpoint.model_class}: {', '.join(report['missing_keys'][:8])}"
                              + (f"; and tensors it does not have: {', '.join(report['unexpected_keys'][:8])}" if report["unexpected_keys"] else ""))
    for name, array in checkpoint.arrays.items():
        if not np.issubdtype(np.asarray(array).dtype, np.floating) and np.asarray(array).dtype.name != "bfloat16":
            raise ConversionError(f"{where}: tensor {label(name)} has dtype {np.asarray(array).dtype}; "
                                  "model weights must be floating point (float16, bfloat16, float32 or float64)")
    # state_dict order, as clip.pt writes it
    checkpoint.arrays = {name: checkpoint.arrays[name] for name in spec}


def cast(arrays: dict, dtype: str) -> dict:
    target = io.numpy_dtype(dtype)
    return {name: np.asarray(array).astype(target) for name, array in arrays.items()}


def kinds(checkpoint: Checkpoint) -> dict:
    return {name: kind for name, (_, kind) in expected(checkpoint).items()}


# -- writers -----------------------------------------------------------------------------------------------
def write_safetensors_dir(checkpoint, directory):
    io.write_safetensors(checkpoint.arrays, os.path.join(directory, hub.SAFETENSORS_NAME), metadata={"format": "pt"})


def write_pytorch_bin(checkpoint, path_or_dir, arrays=None):
    import torch

    path = os.path.join(path_or_dir, hub.PYTORCH_NAME) if os.path.isdir(path_or_dir) else path_or_dir
    tensors = {name: _to_torch(array) for name, array in (checkpoint.arrays if arrays is None else arrays).items()}
    torch.save(tensors, path)


def write_tf_h5(checkpoint, directory):
    import h5py

    if checkpoint.model_class != "CLIPModel":
        raise ConversionError(f"transformers-tf output is written for CLIPModel checkpoints only, not {checkpoint.model_class}")
    if any(np.asarray(a).dtype.name == "bfloat16" for a in checkpoint.arrays.values()):
        raise ConversionError("transformers-tf (HDF5) cannot store bfloat16; convert with --dtype float32 or float16")
    arrays = tf_arrays(checkpoint.arrays, kinds(checkpoint))
    with h5py.File(os.path.join(directory, hub.TF_NAME), "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = _tf_keras_version()
        f.attrs["layer_names"] = np.array([TF_LAYER_NAME], dtype=h5py.string_dtype())
        group = f.create_group(TF_LAYER_NAME)
        group.attrs["weight_names"] = np.array(list(arrays), dtype=h5py.string_dtype())
        for name, array in arrays.items():
            group.create_dataset(name, data=np.asarray(array))


def tf_arrays(arrays: dict, leaf_kinds: dict) -> dict:
    """{canonical name: array} -> {transformers TF weight name: array in the Keras layout}."""
    out = {}
    for name, array in arrays.items():
        kind = leaf_kinds[name]
        if name in TF_SPECIAL:
            path, shape = TF_SPECIAL[name]
            value = weights.to_backend_layout(array, kind, "tf")
            value = value.reshape(shape) if shape is not None else value
        else:
            path = weights.backend_name(name, kind, "tf").replace(".", "/").replace("/layers/", "/" + transformers_tf.LIST_ITEM[0])
            value = weights.to_backend_layout(array, kind, "tf")
        out[f"{TF_SCOPES}{path}:0"] = np.asarray(value, order="C")
    return out


def write_flax_msgpack(checkpoint, path_or_dir):
    from flax import serialization

    path = os.path.join(path_or_dir, transformers_flax.FILE_NAME) if os.path.isdir(path_or_dir) else path_or_dir
    tree = transformers_flax.from_canonical(checkpoint.arrays, kinds(checkpoint))
    tree = _map_tree(tree, lambda a: np.asarray(a, order="C"))  # (ascontiguousarray makes 0-d arrays 1-d)
    with open(path, "wb") as f:
        f.write(serialization.msgpack_serialize(tree))


def write_keras(checkpoint, path):
    import clip.tf
    from clip.tf import loading

    cls = getattr(clip.tf, "TF" + checkpoint.model_class, None)
    if cls is None:
        raise ConversionError(f"clip.tf has no TF{checkpoint.model_class}")
    model = cls(config_object(checkpoint))
    loading.assign_canonical(model, checkpoint.arrays)
    keras_path = path if path.endswith(".keras") else path + ".keras"  # Keras insists on the suffix
    model.save(keras_path)
    if keras_path != path:
        os.replace(keras_path, path)


def write_openai(checkpoint, path):
    if checkpoint.model_class != "CLIPModel":
        raise ConversionError(f"OpenAI's layout holds a whole CLIPModel, not a {checkpoint.model_class}")
    write_pytorch_bin(checkpoint, path, arrays=openai.from_canonical(checkpoint.arrays))


DIRECTORY_WRITERS = {
    "canonical": write_safetensors_dir,
    "pytorch-bin": write_pytorch_bin,
    "transformers-tf": write_tf_h5,
    "transformers-flax": write_flax_msgpack,
}
FILE_WRITERS = {"keras": write_keras, "flax-params": write_flax_msgpack, "openai": write_openai, "open_clip": write_openai}


def _write_config(checkpoint, directory):
    data = {**config_object(checkpoint).to_dict(), "architectures": [checkpoint.model_class]}
    io.atomic_write_json(os.path.join(directory, config_module.CONFIG_NAME), data)


def write_processor(checkpoint, directory):
    """The source's tokenizer and processor files when it has them, else CLIP's defaults
    (the embedded vocabulary; resize and crop to the model's image size)."""
    if _has_processor_files(checkpoint.processor_dir):
        for name in PROCESSOR_FILES:
            path = os.path.join(checkpoint.processor_dir, name)
            if os.path.isfile(path):
                shutil.copyfile(path, os.path.join(directory, name))
        return
    from clip.common.image_processor import CLIPImageProcessor
    from clip.common.processor import CLIPProcessor
    from clip.common.tokenizer import CLIPTokenizerFast

    vision = checkpoint.config.get("vision_config", checkpoint.config)
    size = int(vision.get("image_size", 224))
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    CLIPProcessor(image_processor, CLIPTokenizerFast()).save_pretrained(directory)


# -- staging -------------------------------------------------------------------------------------------------
def _check_destination(dst, to_format, overwrite):
    if to_format in DIRECTORY_TARGETS:
        if os.path.isfile(dst):
            raise ConversionError(f"{dst}: is a file; {to_format} output is a directory")
        if os.path.isdir(dst) and os.listdir(dst) and not overwrite:
            raise ConversionError(f"{dst}: the directory exists and is not empty (pass --overwrite to replace it)")
    else:
        if os.path.isdir(dst):
            raise ConversionError(f"{dst}: is a directory; {to_format} output is a single file")
        if os.path.exists(dst) and not overwrite:
            raise ConversionError(f"{dst}: exists (pass --overwrite to replace it)")


@contextlib.contextmanager
def staged_directory(dst, overwrite=False):
    """Yield a temporary directory beside `dst`; on success it becomes `dst` (renames only)."""
    dst = os.path.abspath(dst)
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if os.path.isdir(dst):
            if os.listdir(dst) and not overwrite:
                raise ConversionError(f"{dst}: the directory exists and is not empty (pass --overwrite to replace it)")
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- helpers ---------------------------------------------------------------------------------------------------
def _read_config(directory, weights_path, overrides) -> dict:
    path = os.path.join(directory, config_module.CONFIG_NAME)
    if not os.path.isfile(path):
        raise ConversionError(f"{weights_path}: no config.json beside it (needed for this format: the config is not in the weights)")
    return _apply_overrides(io.read_json_object(path), overrides)


def _apply_overrides(config: dict, overrides: dict) -> dict:
    """`overrides`: {"text_config.hidden_act": "gelu", "projection_dim": 512, ...} (dotted keys)."""
    config = json.loads(json.dumps(config))
    for key, value in (overrides or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def _model_class(config: dict) -> str:
    for name in config.get("architectures") or []:
        name = name.removeprefix("TF").removeprefix("Flax")
        if name in weights.MODEL_CLASSES:
            return name
    if config.get("model_type") == "clip_text_model":
        return "CLIPTextModel"
    if config.get("model_type") == "clip_vision_model":
        return "CLIPVisionModel"
    return "CLIPModel"


def _has_processor_files(directory) -> bool:
    return bool(directory) and any(
        os.path.isfile(os.path.join(directory, n)) for n in ("preprocessor_config.json", "tokenizer_config.json", "tokenizer.json")
    )


def _open_clip_config(src) -> dict | None:
    path = os.path.join(os.path.dirname(os.path.abspath(src)), open_clip.CONFIG_NAME)
    return io.read_json_object(path) if os.path.isfile(path) else None


def read_h5(path) -> dict:
    """{weight name: array} of a Keras 2 (tf_keras) HDF5 weights file, as transformers writes it."""
    try:
        return weight_files.read_h5(path)
    except (OSError, ValueError) as err:
        raise ConversionError(str(err)) from None


def _tf_keras_version() -> str:
    try:
        from importlib.metadata import version

        return version("tf-keras")
    except Exception:
        return "2.15.0"


def _read_msgpack(path) -> dict:
    try:
        return weight_files.read_msgpack(path)
    except (OSError, ValueError) as err:
        raise ConversionError(str(err)) from None


def _map_tree(tree, fn):
    return {k: _map_tree(v, fn) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


def _is_torchscript(path) -> bool:
    """A TorchScript archive: a zip with code/ and constants.pkl (torch.save zips have neither)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


def _torch_load(path):
    try:
        return weight_files.torch_load(path)  # weights_only=True: a pickle runs nothing
    except OSError as err:
        raise ConversionError(str(err)) from None


def _torchscript_state(path) -> dict:
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "torch.jit.load is deprecated": the archives are TorchScript
            module = torch.jit.load(path, map_location="cpu")
    except RuntimeError as err:
        raise ConversionError(f"{path}: a TorchScript archive that torch.jit.load cannot read ({str(err).splitlines()[0]})") from None
    return dict(module.state_dict())


def _torch_tensors(state, path) -> dict:
    """A loaded torch object -> {name: numpy array}; a non-dict or a dict of non-tensors is an error."""
    import torch

    if not isinstance(state, dict):
        raise ConversionError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    out = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[name] = _to_numpy(value)
        elif isinstance(value, dict):
            out[name] = value  # a wrapper (open_clip's {"state_dict": ...}): unwrapped by the reader
        # other entries (epoch, name, ...) of a training checkpoint are not weights
    if not any(isinstance(v, np.ndarray) for v in out.values()) and not any(isinstance(v, dict) for v in out.values()):
        raise ConversionError(f"{path}: holds no tensors; not a CLIP checkpoint")
    for key in open_clip.WRAPPER_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = _torch_tensors(out[key], path)
    return out


def _to_numpy(tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(io.numpy_dtype("bfloat16"))
    return tensor.numpy()


def _to_torch(array):
    import torch

    array = np.array(array, copy=True, order="C")
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)
