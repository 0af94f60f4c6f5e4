"""The PyTorch side of clip.common.loading: canonical arrays out of a model and into it, and
transformers' pytorch_model.bin. The canonical names are the modules' own state_dict names, so
no name changes: arrays and tensors share memory where the dtype allows it.
"""

from __future__ import annotations

import mmap

import numpy as np
import torch

from clip.common import hub, io, loading, sharding, weight_files, weights

BACKEND = "pt"


def canonical_class(model_or_cls) -> str:
    return loading.canonical_class(model_or_cls)


def canonical_arrays(model, state_dict=None) -> loading.CanonicalArrays:
    """{canonical name: numpy array} of the model's state_dict (or the given one), each a view of
    the CPU tensor (a GPU one copied when asked for; contiguous: views or tied tensors would not
    serialize as themselves)."""
    state = model.state_dict() if state_dict is None else state_dict

    def read(name, kind):
        return _to_numpy(state[name].detach().to("cpu").contiguous())

    return loading.CanonicalArrays(dict.fromkeys(state), read)


def assign_canonical(model, arrays: dict, dtype=None, device=None) -> list:
    """Copy {canonical name: array or tensor} into the model in `dtype` on `device` (default: each
    parameter's own); a parameter not given keeps its tensor, or becomes an empty one when it is on
    the meta device. Returns the names not given."""
    current_state = model.state_dict()
    unknown = sorted(set(arrays) - set(current_state))
    if unknown:
        raise KeyError(f"{type(model).__name__} has no weights named {unknown}")
    state, fresh = {}, []
    for name, current in current_state.items():
        kind = dict(dtype=dtype or current.dtype, device=device or (None if current.is_meta else current.device))
        if name in arrays:
            state[name] = _copy_out(arrays[name], **kind)
        else:
            state[name] = torch.empty(current.shape, **kind) if current.is_meta else current
            fresh.append(name)
    model.load_state_dict(state, strict=True, assign=True)
    return fresh


def read_legacy(kind, paths, files: dict) -> dict:
    """{canonical name: CPU tensor, memory-mapped} of transformers' pytorch_model.bin (or its shards)."""
    # weights_only: a pickle can run code; this loader only accepts tensors
    origins: dict[str, str] = {}  # {checkpoint name: the file it came from}
    tensors = io.merge_shards(paths, lambda path: weight_files.torch_state_dict(path, mmap=True), origins)
    canonical = weights.normalize_checkpoint_keys(tensors)
    files.update({canon: origins[name] for name, canon in canonical.items()})
    return {canon: tensors[name] for name, canon in canonical.items()}


def write_legacy(model, directory, arrays: dict, max_shard_size) -> list:
    """pytorch_model.bin (sharded beyond max_shard_size), each file written atomically."""
    return sharding.save_weights(
        directory,
        arrays,
        {n: a.nbytes for n, a in arrays.items()},
        _write_bin,
        max_shard_size,
        hub.PYTORCH_NAME,
        total_parameters=sum(a.size for a in arrays.values()),
    )


def _write_bin(arrays: dict, path):
    weight_files.save_torch({name: _as_tensor(a) for name, a in arrays.items()}, path)


_to_numpy = weight_files.tensor_to_numpy


def torch_dtype(dtype) -> torch.dtype:
    """A numpy (ml_dtypes' bfloat16 included) or torch dtype as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return torch.bfloat16 if dtype.name == "bfloat16" else torch.from_numpy(np.empty(0, dtype)).dtype


def _as_tensor(array) -> torch.Tensor:
    """A numpy array (possibly a read-only memory map) as a tensor sharing its memory."""
    return array if isinstance(array, torch.Tensor) else weight_files.numpy_to_tensor(array)


def _copy_out(array, dtype, device) -> torch.Tensor:
    """A fresh, writable, contiguous copy in `dtype` on `device`; the source pages are released."""
    out = torch.empty(tuple(array.shape), dtype=dtype, device=device)
    out.copy_(_as_tensor(array))
    _release_pages(array)
    return out


def _release_pages(array):
    """Drop a memory-mapped array's pages from this process (the page cache keeps them).

    Resident file pages count in RSS; releasing each tensor's pages after its copy keeps the
    peak near one copy of the weights instead of two. A no-op where madvise is unavailable.
    """
    mapping = getattr(array, "_mmap", None)
    if mapping is None or not hasattr(mapping, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        begin = array.ctypes.data - np.frombuffer(mapping, dtype=np.uint8).ctypes.data
        start = begin - begin % mmap.PAGESIZE
        mapping.madvise(mmap.MADV_DONTNEED, start, begin + array.nbytes - start)
    except (ValueError, OSError):
        pass
