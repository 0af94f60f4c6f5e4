"""from_pretrained / save_pretrained for the PyTorch models.

Loading builds the model on the `meta` device (no memory, no random init), checks every key and
shape of the checkpoint against clip.common.weights before touching the model, then copies each
tensor out of the memory-mapped file into its final dtype and device, releasing the file's pages
as it goes: peak memory stays near one copy of the weights.
"""

from __future__ import annotations

import mmap

import numpy as np
import torch

from clip.common import hub, io, loading, sharding, surface, weight_files, weights
from clip.pt.pretrained import ATTN_IMPLEMENTATIONS


WEIGHT_CANDIDATES = (hub.SAFETENSORS_NAME, hub.SAFETENSORS_INDEX_NAME, hub.PYTORCH_NAME, hub.PYTORCH_INDEX_NAME)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_dtype(dtype):
    """None, "auto", a name ("float16", "torch.bfloat16") or a torch.dtype -> torch.dtype, "auto" or None."""
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, 'auto' or a torch.dtype, got {dtype!r}")
    return _DTYPES[name]


def from_pretrained(
    cls,
    name_or_path,
    *,
    config=None,
    dtype=None,
    torch_dtype=None,
    device=None,
    device_map=None,
    attn_implementation=None,
    use_safetensors=None,
    output_loading_info=False,
    ignore_mismatched_sizes=False,
    state_dict=None,
    **kwargs,
):
    """transformers' arguments: dtype/torch_dtype, device_map (one device), attn_implementation,
    use_safetensors, output_loading_info, ignore_mismatched_sizes, state_dict (weights given instead
    of read; with name_or_path None the config must be given), the hub's (revision, token, ...),
    config overrides; trust_remote_code and low_cpu_mem_usage are accepted and change nothing."""
    if _default_device_is_meta():
        # as transformers: loading weights onto the meta device would load nothing
        raise RuntimeError(
            f"{cls.__name__}.from_pretrained was called under a meta device context (torch.device('meta') or "
            "torch.set_default_device('meta')); it loads real weights. For an empty model on the meta device "
            f"build it there instead: {cls.__name__}(config)"
        )
    if dtype is not None and torch_dtype is not None and resolve_dtype(dtype) != resolve_dtype(torch_dtype):
        raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass one of them")
    target_dtype = resolve_dtype(dtype if dtype is not None else torch_dtype) or torch.get_default_dtype()
    device = resolve_device(device, device_map)
    check_attn_implementation(attn_implementation)
    origins = {}  # checkpoint name -> its file, for messages
    if name_or_path is None or state_dict is not None:
        config = _config_without_files(cls, name_or_path, config, kwargs)
        tensors = dict(state_dict or {})
        name_or_path = name_or_path if name_or_path is not None else "the given state_dict"
    else:
        config, kind, paths = loading.locate(cls, name_or_path, config, kwargs, "pt", WEIGHT_CANDIDATES, use_safetensors)
        tensors = read_weights(kind, paths, origins)  # checkpoint name -> numpy array or CPU tensor (no copies yet)
    config = surface.as_config(config, cls.config_class, cls.__name__)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation

    canonical = weights.normalize_checkpoint_keys(tensors)  # checkpoint name -> canonical name
    by_canonical = {canon: tensors[name] for name, canon in canonical.items()}
    expected = weights.expected_parameters(config, _canonical_class(cls))
    loading.check_float_weights(by_canonical, expected, {c: origins.get(n, name_or_path) for n, c in canonical.items()}, name_or_path)
    shapes = {n: tuple(t.shape) for n, t in by_canonical.items()}
    report = loading.check_checkpoint(cls, name_or_path, expected, shapes, ignore_mismatched_sizes)
    mismatched = report["mismatched"]

    with torch.device("meta"):
        model = cls(config)
    if target_dtype == "auto":
        first = next((t for n, t in by_canonical.items() if n in expected), None)
        target_dtype = _torch_dtype(first.dtype) if first is not None else torch.get_default_dtype()

    state, fresh = {}, []
    for name, (shape, _) in expected.items():
        if name in by_canonical and name not in mismatched:
            state[name] = _copy_out(by_canonical[name], target_dtype, device)
        else:
            state[name] = torch.empty(shape, dtype=target_dtype, device=device)
            fresh.append(name)
    del tensors, by_canonical
    model.load_state_dict(state, strict=True, assign=True)
    model.init_weights(fresh)  # only what the checkpoint did not provide
    model.eval()

    info = loading.loading_info(cls, name_or_path, report)
    return (model, info) if output_loading_info else model


def check_attn_implementation(name):
    surface.check_attn_implementation(name, "from_pretrained", ATTN_IMPLEMENTATIONS)


def _default_device_is_meta() -> bool:
    return torch.empty(0).device.type == "meta"


def _config_without_files(cls, name_or_path, config, kwargs: dict):
    """from_pretrained with no weight files to find: the config given, or read from name_or_path."""
    loading.pop_no_op_kwargs(kwargs, "pt")
    kwargs.pop("use_safetensors", None)
    hub_kwargs = hub.split_hub_kwargs(kwargs)
    if name_or_path is None and config is None:
        raise ValueError(f"{cls.__name__}.from_pretrained(None, ...) needs config= (and state_dict= for its weights)")
    return loading.resolve_config(cls, name_or_path, config, kwargs, hub_kwargs)


def resolve_device(device, device_map) -> torch.device:
    """device= or transformers' device_map (a device, a GPU index, "auto", or {"": device}): one device.

    CLIP fits on one device, so a map that splits the model over several is refused, not approximated.
    """
    if device_map is not None:
        if isinstance(device_map, dict):
            targets = set(device_map.values())
            if len(targets) != 1:
                raise ValueError(f"device_map puts parts of the model on {sorted(map(str, targets))}; clip.pt "
                                 "loads the whole model onto one device (pass device= or a one-device map)")
            device_map = targets.pop()
        if device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
            device_map = "cuda" if torch.cuda.is_available() else "cpu"
        mapped = torch.device(f"cuda:{device_map}" if isinstance(device_map, int) else device_map)
        given = torch.device(device) if device is not None else mapped
        if given.type != mapped.type or None not in (given.index, mapped.index) and given.index != mapped.index:
            raise ValueError(f"device={device!r} and device_map={device_map!r} disagree; pass one of them")
        return mapped
    return torch.device(device) if device is not None else torch.device("cpu")


def _canonical_class(cls):
    for base in cls.__mro__:
        if base.__name__ in weights.MODEL_CLASSES:
            return base.__name__
    raise TypeError(f"{cls.__name__} is not one of {', '.join(weights.MODEL_CLASSES)} nor a subclass of one")


# -- reading --------------------------------------------------------------------------------------
def read_weights(kind, paths, origins: dict | None = None) -> dict:
    """{checkpoint name: numpy array or CPU tensor}; `origins`, when given, gets {name: its file}."""
    if kind in (hub.SAFETENSORS_NAME, hub.SAFETENSORS_INDEX_NAME):
        return io.read_checkpoint(paths, origins)
    # weights_only: a pickle can run code; this loader only accepts tensors
    return io.merge_shards(paths, lambda path: weight_files.torch_state_dict(path, mmap=True), origins)


def _torch_dtype(dtype):
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


# -- writing --------------------------------------------------------------------------------------
def save_pretrained(model, save_directory, safe_serialization=True, state_dict=None,
                    max_shard_size=sharding.DEFAULT_MAX_SHARD_SIZE, is_main_process=True, **kwargs):
    """config.json + model.safetensors ({"format": "pt"}), or pytorch_model.bin; sharded beyond
    max_shard_size with transformers' index json; each file written atomically. On processes other
    than the main one (is_main_process=False) nothing is written, as in transformers."""
    for key in ("variant", "push_to_hub", "save_peft_format"):
        if kwargs.get(key):
            raise ValueError(f"save_pretrained: {key}={kwargs[key]!r} is not supported by clip.pt")
        kwargs.pop(key, None)
    kwargs.pop("token", None)
    if kwargs:
        raise TypeError(f"save_pretrained got unexpected arguments {sorted(kwargs)}")
    if not is_main_process:
        return
    save_directory = loading.start_save(save_directory, model.config, _canonical_class(type(model)))
    state = model.state_dict() if state_dict is None else state_dict
    # contiguous, detached CPU copies: views or tied tensors would not serialize as themselves
    state = {name: t.detach().to("cpu").contiguous() for name, t in state.items()}
    sizes = {name: t.numel() * t.element_size() for name, t in state.items()}
    base = hub.SAFETENSORS_NAME if safe_serialization else hub.PYTORCH_NAME
    sharding.save_weights(save_directory, state, sizes, _write_safetensors if safe_serialization else _write_bin,
                          max_shard_size, base, total_parameters=sum(t.numel() for t in state.values()))
    # stale weight files of the other format would be picked up by the next load
    sharding.remove_weights(save_directory, hub.PYTORCH_NAME if safe_serialization else hub.SAFETENSORS_NAME)


def _write_safetensors(state: dict, path):
    io.write_safetensors({name: _to_numpy(t) for name, t in state.items()}, path, metadata={"format": "pt"})


_write_bin = weight_files.save_torch
_to_numpy = weight_files.tensor_to_numpy

