"""Convert CLIP checkpoints between formats, through the canonical layout (clip.common.weights).

    convert(src, dst, from_format=None, to_format="canonical", dtype=None)

Every conversion reads the source into {canonical name: numpy array (PyTorch layout)} plus a
CLIPConfig, checks every name and shape against clip.common.weights.expected_parameters, and
only then writes the target. Each format is data plus a reader and a writer in
clip.common.formats (name maps, transposes, fused-qkv splits) over the I/O the backends use too
(clip.common.io, clip.common.weight_files); this module detects formats, builds the Checkpoint
and stages the output. A framework is imported only by the formats that need it: torch for
.pt/.bin, tensorflow for .keras, h5py for .h5, flax for .msgpack.

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
import os
from dataclasses import dataclass, field

import numpy as np

from clip.common import config as config_module
from clip.common import hub, io, weight_files, weights
from clip.common.formats import checkpoint as checks
from clip.common.formats import keras, open_clip, openai, transformers_flax, transformers_pt, transformers_tf
from clip.errors import ConversionError  # noqa: F401  (also importable from here, its former home)

SOURCE_FORMATS = (
    "transformers-pt",
    "transformers-tf",
    "transformers-flax",
    "keras",
    "flax-params",
    "openai",
    "open_clip",
)
TARGET_FORMATS = (
    "canonical",
    "pytorch-bin",
    "transformers-tf",
    "transformers-flax",
    "keras",
    "flax-params",
    "openai",
    "open_clip",
)
ALIASES = {
    "canonical": "transformers-pt",
    "safetensors": "transformers-pt",
    "pytorch": "transformers-pt",
    "tf": "transformers-tf",
    "flax": "transformers-flax",
    "open-clip": "open_clip",
}
DIRECTORY_TARGETS = ("canonical", "pytorch-bin", "transformers-tf", "transformers-flax")
DTYPES = ("float32", "float16", "bfloat16")

CANONICAL_PREFIXES = ("text_model.", "vision_model.", "clip.text_model.", "clip.vision_model.")


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

    def config_object(self):
        """The config class instance of the model class (validates the config)."""
        return checks.config_object(self.config, self.model_class, self.source)

    def expected(self) -> dict:
        """{canonical name: (shape, leaf kind)} of every tensor the config expects, in state_dict order."""
        return weights.expected_parameters(self.config_object(), self.model_class)

    def kinds(self) -> dict:
        return {name: kind for name, (_, kind) in self.expected().items()}

    def validate(self):
        """Every expected tensor present with its shape, nothing else: else one error naming file and tensors."""
        self.arrays = checks.check(self.arrays, self.expected(), self.model_class, self.source, self.names)


# -- public entry point -----------------------------------------------------------------------------
def convert(
    src,
    dst,
    from_format=None,
    to_format="canonical",
    dtype=None,
    overwrite=False,
    config_overrides=None,
    processor=True,
) -> Checkpoint:
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
        checkpoint.arrays = checks.cast(checkpoint.arrays, dtype)
    save(checkpoint, dst, to_format, overwrite=overwrite, processor=processor)
    return checkpoint


def load(src, from_format=None, config_overrides=None) -> Checkpoint:
    """Read and validate any supported source into a Checkpoint."""
    src = os.fspath(src)
    if not os.path.exists(src):
        raise ConversionError(f"{src}: no such file or directory")
    fmt = ALIASES.get(from_format, from_format) if from_format else None
    if fmt is not None and fmt not in SOURCE_FORMATS:
        raise ConversionError(
            f"unknown source format {from_format!r}; expected one of {', '.join(SOURCE_FORMATS)} (or canonical)"
        )
    with _conversion_errors(reading=True):
        checkpoint = READERS[fmt or detect_format(src)](src, config_overrides or {})
    checkpoint.validate()
    return checkpoint


def save(checkpoint: Checkpoint, dst, to_format="canonical", overwrite=False, processor=True):
    """Write a validated Checkpoint as `to_format`, atomically."""
    dst = os.fspath(dst)
    _check_destination(dst, to_format, overwrite)
    with _conversion_errors(reading=False):
        if to_format in DIRECTORY_TARGETS:
            with staged_directory(dst, overwrite) as tmp:
                _write_config(checkpoint, tmp)
                DIRECTORY_WRITERS[to_format](checkpoint, tmp)
                if processor:
                    checks.write_processor_files(checkpoint.processor_dir, checkpoint.config, tmp)
        else:
            with io.atomic_path(dst, keep_name=True) as tmp:  # (torch.save and Keras record the name)
                FILE_WRITERS[to_format](checkpoint, tmp)


@contextlib.contextmanager
def _conversion_errors(reading: bool):
    """The formats' readers and writers raise ValueError (and, for files they cannot read, OSError)
    naming the file; callers of convert get them as one ConversionError with the same message. An
    OSError the system raised (it has an errno: no permission, disk full) passes unchanged, as does
    every OSError while writing."""
    try:
        yield
    except ConversionError:
        raise
    except ValueError as err:
        raise ConversionError(str(err)) from None
    except OSError as err:
        if not reading or err.errno is not None:
            raise
        raise ConversionError(str(err)) from None


# -- detection --------------------------------------------------------------------------------------
@_conversion_errors(reading=True)
def detect_format(src: str) -> str:
    """The source format of a file or directory, from its file names and (for .pt/.bin) its keys."""
    if os.path.isdir(src):
        has = lambda name: os.path.isfile(os.path.join(src, name))  # noqa: E731
        if any(has(n) for n in transformers_pt.FILE_NAMES):
            return "transformers-pt"
        if has(transformers_tf.FILE_NAME):
            return "transformers-tf"
        if has(transformers_flax.FILE_NAME) or has(transformers_flax.INDEX_NAME):
            return "transformers-flax"
        if any(has(name) for name in open_clip.FILE_NAMES):
            return "open_clip"
        raise ConversionError(
            f"{src}: no CLIP weights in this directory (looked for model.safetensors, pytorch_model.bin, "
            "tf_model.h5, flax_model.msgpack, open_clip_pytorch_model.bin)"
        )
    suffix = os.path.splitext(src)[1].lower()
    if suffix == keras.SUFFIX:
        return "keras"
    if suffix == ".h5":
        return "transformers-tf"
    if suffix == ".msgpack":
        return "flax-params"
    if suffix == ".safetensors":
        names = [n for n in io.read_safetensors_header(src)[0] if n != "__metadata__"]
        return _classify_names(src, names)
    if weight_files.is_torchscript(src):
        return "openai"  # OpenAI's released checkpoints are TorchScript archives
    state = weight_files.torch_load(src)
    return _classify_names(src, list(state) if isinstance(state, dict) else [])


def _classify_names(src, names) -> str:
    if any(n.startswith(CANONICAL_PREFIXES) for n in names):
        return "transformers-pt"
    if any(n.startswith(open_clip.DDP_PREFIX) or n.startswith(open_clip.CUSTOM_TEXT_PREFIX) for n in names):
        return "open_clip"
    if "open_clip" in os.path.basename(src) or os.path.isfile(
        os.path.join(os.path.dirname(os.path.abspath(src)), open_clip.CONFIG_NAME)
    ):
        return "open_clip"
    if any(n in ("state_dict", "epoch", "optimizer") for n in names):
        return "open_clip"  # a training checkpoint's wrapper
    return "openai"


# -- readers: a format's reader, the config beside it -> Checkpoint ----------------------------------
def read_transformers_pt(src, overrides) -> Checkpoint:
    paths, directory = _weight_files(src, transformers_pt.FILE_NAMES, "model.safetensors or pytorch_model.bin")
    arrays, names = transformers_pt.read(paths)
    return _with_config(arrays, directory, paths[0], overrides, names)


def read_transformers_tf(src, overrides) -> Checkpoint:
    path = os.path.join(src, transformers_tf.FILE_NAME) if os.path.isdir(src) else src
    arrays, names = transformers_tf.read(path)
    return _with_config(arrays, os.path.dirname(os.path.abspath(path)), path, overrides, names)


def read_transformers_flax(src, overrides) -> Checkpoint:
    paths, directory = _weight_files(
        src, (transformers_flax.FILE_NAME, transformers_flax.INDEX_NAME), "flax_model.msgpack"
    )
    return _with_config(transformers_flax.read(paths), directory, paths[0], overrides, {})


def read_flax_params(src, overrides) -> Checkpoint:
    checkpoint = read_transformers_flax(src, overrides)
    checkpoint.processor_dir = (
        None if not checks.has_processor_files(checkpoint.processor_dir) else checkpoint.processor_dir
    )
    return checkpoint


def read_keras(src, overrides) -> Checkpoint:
    arrays, config, model_class = keras.read(src)
    return Checkpoint(arrays, checks.apply_overrides(config, overrides), model_class, src, {}, None)


def read_openai(src, overrides, layout="openai") -> Checkpoint:
    src = open_clip.checkpoint_file(src)
    heads = {
        kw: int(overrides[key])
        for key, kw in (
            ("text_config.num_attention_heads", "text_heads"),
            ("vision_config.num_attention_heads", "vision_heads"),
        )
        if key in overrides
    }
    state = open_clip.unwrap(openai.read_file(src))  # a training checkpoint's {"state_dict": ...} and DDP's "module."
    if layout == "open_clip":
        arrays, config, names, notes = open_clip.canonical_checkpoint(state, src, **heads)
    else:
        (arrays, config, names), notes = openai.canonical_checkpoint(state, src, **heads), []
    return Checkpoint(arrays, checks.apply_overrides(config, overrides), "CLIPModel", src, names, None, notes)


READERS = {
    "transformers-pt": read_transformers_pt,
    "transformers-tf": read_transformers_tf,
    "transformers-flax": read_transformers_flax,
    "flax-params": read_flax_params,
    "keras": read_keras,
    "openai": read_openai,
    "open_clip": lambda src, overrides: read_openai(src, overrides, layout="open_clip"),
}


def _weight_files(src, candidates, what: str) -> tuple[list, str]:
    """([weight files], the directory with config.json) of a directory (shards expanded) or a lone file."""
    if not os.path.isdir(src):
        return [src], os.path.dirname(os.path.abspath(src))
    found = hub.resolve_weight_files(src, candidates)
    if found is None:
        raise ConversionError(f"{src}: no {what} in this directory")
    return found[1], src


def _with_config(arrays, directory, weights_path, overrides, names) -> Checkpoint:
    """The Checkpoint of a format whose config is config.json beside the weights."""
    path = os.path.join(directory, config_module.CONFIG_NAME)
    if not os.path.isfile(path):
        raise ConversionError(
            f"{weights_path}: no config.json beside it (needed for this format: the config is not in the weights)"
        )
    config = checks.apply_overrides(io.read_json_object(path), overrides)
    return Checkpoint(arrays, config, checks.model_class_of(config), weights_path, names, directory)


# -- writers: Checkpoint -> a format's writer ----------------------------------------------------------------
def write_safetensors_dir(checkpoint, directory):
    transformers_pt.write_safetensors(checkpoint.arrays, os.path.join(directory, hub.SAFETENSORS_NAME))


def write_pytorch_bin(checkpoint, directory):
    transformers_pt.write_bin(checkpoint.arrays, os.path.join(directory, hub.PYTORCH_NAME))


def write_tf_h5(checkpoint, directory):
    if checkpoint.model_class != "CLIPModel":
        raise ConversionError(
            f"transformers-tf output is written for CLIPModel checkpoints only, not {checkpoint.model_class}"
        )
    if any(np.asarray(a).dtype.name == "bfloat16" for a in checkpoint.arrays.values()):
        raise ConversionError("transformers-tf (HDF5) cannot store bfloat16; convert with --dtype float32 or float16")
    transformers_tf.write(checkpoint.arrays, checkpoint.kinds(), os.path.join(directory, transformers_tf.FILE_NAME))


def write_flax_msgpack(checkpoint, path_or_dir):
    path = os.path.join(path_or_dir, transformers_flax.FILE_NAME) if os.path.isdir(path_or_dir) else path_or_dir
    transformers_flax.write(checkpoint.arrays, checkpoint.kinds(), path)


def write_keras(checkpoint, path):
    keras.write(checkpoint.arrays, checkpoint.config_object(), checkpoint.model_class, path)


def write_openai(checkpoint, path):
    if checkpoint.model_class != "CLIPModel":
        raise ConversionError(f"OpenAI's layout holds a whole CLIPModel, not a {checkpoint.model_class}")
    openai.write(checkpoint.arrays, path)


DIRECTORY_WRITERS = {
    "canonical": write_safetensors_dir,
    "pytorch-bin": write_pytorch_bin,
    "transformers-tf": write_tf_h5,
    "transformers-flax": write_flax_msgpack,
}
FILE_WRITERS = {
    "keras": write_keras,
    "flax-params": write_flax_msgpack,
    "openai": write_openai,
    "open_clip": write_openai,
}


def _write_config(checkpoint, directory):
    data = {**checkpoint.config_object().to_dict(), "architectures": [checkpoint.model_class]}
    io.atomic_write_json(os.path.join(directory, config_module.CONFIG_NAME), data)


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
    try:
        with io.atomic_directory(dst, replace=overwrite) as tmp:
            yield tmp
    except FileExistsError as err:  # another process filled `dst` meanwhile (the system's own have an errno)
        if err.errno is not None:
            raise
        raise ConversionError(f"{err} (pass --overwrite to replace it)") from None


# The shared torch reader, under the name the conversion tests call it by.
_torch_tensors = weight_files.torch_arrays
