"""Readers of the foreign weight files (PyTorch .bin and TorchScript, transformers' tf_model.h5 and
flax_model.msgpack, .keras archives) with one error per bad file, and the torch <-> numpy bridge
(bfloat16 included), shared by the backends' loading and clip.convert.

Each reader imports its library (torch, h5py, flax) when called, never at import time. A file that
cannot be read at all (random bytes, truncated, a Git LFS pointer) is an OSError, as transformers
raises for it; a file that reads but holds the wrong thing (a list, a dict of ints, no Keras
layers) is a ValueError. Both name the file and what is wrong: the libraries' own errors (h5py's
"file signature not found", msgpack's ExtraData, pickle's opcodes) name neither.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Iterable
from typing import Any

import numpy as np

from clip.common.io import atomic_path, numpy_dtype
from clip.errors import InputError, UnreadableFileError

_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
# msgpack allows deeper nesting than a params tree ever has (model/tower/encoder/layers/i/module/leaf)
MAX_TREE_DEPTH = 32


def _reason(err: BaseException) -> str:
    """The first informative line of a library's error (torch's run to a page of advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:  # torch's weights_only refusal says what it refused on a later line
        if line.startswith(("Unsupported", "WeightsUnpickler error")):
            return line
    return lines[0] if lines else type(err).__name__


def unreadable(path: str | os.PathLike, what: str, err: BaseException) -> OSError:
    """The OSError for a weight file that its library cannot read, naming the file and why."""
    try:
        with open(path, "rb") as f:
            if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
                return UnreadableFileError(
                    f"{path}: a Git LFS pointer, not the {what} itself (fetch the file with `git lfs pull`)"
                )
    except OSError:
        pass
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return UnreadableFileError(f"{path}: the file is empty, not a {what}")
    return UnreadableFileError(f"{path}: not a readable {what} ({type(err).__name__}: {_reason(err)})")


# -- PyTorch ---------------------------------------------------------------------------------------
def torch_load(path: str | os.PathLike, mmap: bool = False) -> Any:
    """torch.load(weights_only=True) of `path`: no pickle opcode outside tensors and plain containers
    runs. A file that does not load is an OSError naming it (a refused pickle says what it refused)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as err:
        if mmap and "mmap" in str(err):  # the legacy (pre-zip) format cannot be memory-mapped
            return torch_load(path, mmap=False)
        raise unreadable(path, "PyTorch weights file that torch.load(weights_only=True) reads", err) from None
    except Exception as err:  # UnpicklingError, EOFError, ValueError, zip errors: all mean a bad file
        raise unreadable(path, "PyTorch weights file that torch.load(weights_only=True) reads", err) from None


def torch_state_dict(path: str | os.PathLike, mmap: bool = True) -> dict:
    """{name: tensor} of a state-dict file; anything else in it is a ValueError naming the entry."""
    import torch

    state = torch_load(path, mmap=mmap)
    if not isinstance(state, dict):
        raise InputError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise InputError(
                f"{path}: entry {name!r} is not a named tensor (found {type(value).__name__}); "
                "not a state dict of a model"
            )
    return state


# Entries of a training checkpoint that hold the weights (open_clip's {"epoch", "state_dict", ...}).
WRAPPER_KEYS = ("state_dict", "model", "module")


def torch_arrays(state: object, path: str | os.PathLike, nested: Iterable[str] = WRAPPER_KEYS) -> dict:
    """A loaded torch object -> {name: numpy array}, leniently: entries that are not tensors (a
    training checkpoint's epoch, name, ...) are dropped, the dicts under `nested` converted in turn
    and other dicts kept as they are (for the caller to unwrap). A non-dict, or a dict without
    tensors, is a ValueError naming the file."""
    import torch

    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    out: dict[str, np.ndarray | dict] = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[name] = tensor_to_numpy(value)
        elif isinstance(value, dict):
            out[name] = value
    if not any(isinstance(v, (np.ndarray, dict)) for v in out.values()):
        raise ValueError(f"{path}: holds no tensors; not a CLIP checkpoint")
    for key in nested:
        if isinstance(out.get(key), dict):
            out[key] = torch_arrays(out[key], path, nested)
    return out


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A torch tensor as a numpy array on the CPU; bfloat16, which numpy lacks, bit for bit as
    ml_dtypes' bfloat16 (a view of the same bytes: no rounding through float32)."""
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(numpy_dtype("bfloat16"))
    return tensor.numpy()


def numpy_to_tensor(array: np.ndarray) -> Any:  # a torch.Tensor (torch is imported when called)
    """A numpy array as a torch tensor sharing its memory (bfloat16 bits reinterpreted). A read-only
    array (a memory-mapped file) is shared too: callers only read it or copy it."""
    import torch

    array = np.asarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not writable": it is only read, then copied
        return torch.from_numpy(array)


def save_torch(tensors: dict, path: str | os.PathLike) -> None:
    """torch.save of {name: tensor}, atomically and under the file's own name (torch.save records it:
    the same tensors give the same bytes); each tensor cloned so that a view saves only its own
    elements, not the whole storage it views."""
    import torch

    with atomic_path(path, keep_name=True) as tmp:
        torch.save({name: tensor.clone() for name, tensor in tensors.items()}, tmp)


def save_torch_arrays(arrays: dict, path: str | os.PathLike) -> None:
    """{name: numpy array} as a torch.save state dict (what torch.load(weights_only=True) reads)."""
    save_torch({name: numpy_to_tensor(np.array(array, copy=True, order="C")) for name, array in arrays.items()}, path)


def is_torchscript(path: str | os.PathLike) -> bool:
    """A TorchScript archive: a zip with code/ and constants.pkl (torch.save zips have neither)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


def torchscript_state(path: str | os.PathLike) -> dict:
    """The state dict of a TorchScript archive (OpenAI's released checkpoints are ones)."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", DeprecationWarning
            )  # "torch.jit.load is deprecated": the archives are TorchScript
            module = torch.jit.load(path, map_location="cpu")
    except RuntimeError as err:
        raise OSError(
            f"{path}: a TorchScript archive that torch.jit.load cannot read ({str(err).splitlines()[0]})"
        ) from None
    return dict(module.state_dict())


# -- transformers' TensorFlow h5 -------------------------------------------------------------------
def read_h5(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{weight name: array} of a Keras 2 (tf_keras) HDF5 weights file, as transformers' save_pretrained writes it."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise unreadable(path, "HDF5 weights file", err) from None
    with f:
        if "layer_names" not in f.attrs:
            raise InputError(f"{path}: not a Keras weights file (no 'layer_names' attribute)")
        out = {}
        try:
            for layer in f.attrs["layer_names"]:
                group = f[_text(layer)]
                for name in group.attrs.get("weight_names", []):
                    out[_text(name)] = np.asarray(group[_text(name)])
        except (KeyError, TypeError, AttributeError) as err:  # a listed layer or weight that is not there
            raise InputError(f"{path}: a damaged Keras weights file ({type(err).__name__}: {_reason(err)})") from None
        except OSError as err:  # truncated or corrupt data blocks
            raise unreadable(path, "HDF5 weights file", err) from None
    return out


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# -- transformers' Flax msgpack --------------------------------------------------------------------
def read_msgpack(path: str | os.PathLike) -> dict:
    """The params tree of a flax .msgpack file (under "params" or not), every leaf an array."""
    from flax import serialization

    with open(path, "rb") as f:
        data = f.read()
    try:
        tree = serialization.msgpack_restore(data)
    except Exception as err:  # msgpack's ExtraData, StackError, "incomplete input", UnicodeDecodeError
        raise unreadable(path, "msgpack params file", err) from None
    if not isinstance(tree, dict):
        raise InputError(f"{path}: the msgpack file holds a {type(tree).__name__}, not a params tree")
    if set(tree) == {"params"} and isinstance(tree["params"], dict):
        tree = tree["params"]
    _check_tree(path, tree)
    return tree


def _check_tree(path, tree):
    """Every leaf an array, nesting bounded (walked without recursion: a hostile file may nest deep)."""
    stack = [((), tree)]
    while stack:
        where, node = stack.pop()
        if len(where) > MAX_TREE_DEPTH:
            raise InputError(
                f"{path}: the params tree nests deeper than {MAX_TREE_DEPTH} levels at {'/'.join(where[:4])}/..."
            )
        for key, value in node.items():
            if isinstance(value, dict):
                stack.append((where + (str(key),), value))
            elif not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf" and value.dtype.name != "bfloat16":
                raise InputError(
                    f"{path}: params entry {'/'.join(where + (str(key),))!r} is not a numeric array "
                    f"(found {type(value).__name__} {getattr(value, 'dtype', '')})".replace(" )", ")")
                )


# -- Keras 3 .keras archives -----------------------------------------------------------------------
KERAS_MEMBERS = ("config.json", "model.weights.h5")


def check_keras_archive(path: str | os.PathLike) -> None:
    """A .keras file is a zip archive holding config.json and model.weights.h5; anything else is an
    OSError saying which (Keras itself answers "File not found" for a damaged archive)."""
    if os.path.getsize(path) == 0:
        raise UnreadableFileError(f"{path}: the file is empty, not a .keras file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()  # the first member whose CRC fails
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise unreadable(path, ".keras file (a zip archive)", err) from None
    if damaged is not None:
        raise UnreadableFileError(f"{path}: a damaged .keras file (the archive member {damaged!r} fails its checksum)")
    missing = [name for name in KERAS_MEMBERS if name not in names]
    if missing:
        raise UnreadableFileError(f"{path}: not a .keras file (the zip archive lacks {', '.join(missing)})")
