"""from_pretrained / save_pretrained for the PyTorch models: what is torch's own around
clip.common.loading (dtypes, devices, the meta device, attention implementations).

Loading builds the model on the `meta` device (no memory, no random init), after
clip.common.loading has checked every key and shape of the checkpoint, then copies each tensor
out of the memory-mapped file into its final dtype and device (clip.pt.adapter), releasing the
file's pages as it goes: peak memory stays near one copy of the weights.
"""

from __future__ import annotations

import torch

from clip.common import loading, sharding, surface
from clip.pt import adapter
from clip.pt.pretrained import ATTN_IMPLEMENTATIONS

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
    checkpoint = loading.read_pretrained(
        cls, name_or_path, adapter, config, kwargs, use_safetensors, ignore_mismatched_sizes, state_dict
    )
    if attn_implementation is not None:
        checkpoint.config._attn_implementation = attn_implementation
    with torch.device("meta"):
        model = cls(checkpoint.config)
    if target_dtype == "auto":
        first = checkpoint.first_dtype
        target_dtype = adapter.torch_dtype(first) if first is not None else torch.get_default_dtype()
    adapter.assign_canonical(model, checkpoint.arrays, dtype=target_dtype, device=device)
    checkpoint.arrays.clear()  # the memory maps close once the last copy is out
    model.init_weights(checkpoint.fresh)  # only what the checkpoint did not provide
    model.eval()

    info = loading.loading_info(cls, checkpoint.source, checkpoint.report)
    return (model, info) if output_loading_info else model


def check_attn_implementation(name):
    surface.check_attn_implementation(name, "from_pretrained", ATTN_IMPLEMENTATIONS)


def _default_device_is_meta() -> bool:
    return torch.empty(0).device.type == "meta"


def resolve_device(device, device_map) -> torch.device:
    """device= or transformers' device_map (a device, a GPU index, "auto", or {"": device}): one device.

    CLIP fits on one device, so a map that splits the model over several is refused, not approximated.
    """
    if device_map is not None:
        if isinstance(device_map, dict):
            targets = set(device_map.values())
            if len(targets) != 1:
                raise ValueError(
                    f"device_map puts parts of the model on {sorted(map(str, targets))}; clip.pt "
                    "loads the whole model onto one device (pass device= or a one-device map)"
                )
            device_map = targets.pop()
        if device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
            device_map = "cuda" if torch.cuda.is_available() else "cpu"
        mapped = torch.device(f"cuda:{device_map}" if isinstance(device_map, int) else device_map)
        given = torch.device(device) if device is not None else mapped
        if given.type != mapped.type or None not in (given.index, mapped.index) and given.index != mapped.index:
            raise ValueError(f"device={device!r} and device_map={device_map!r} disagree; pass one of them")
        return mapped
    return torch.device(device) if device is not None else torch.device("cpu")


# -- writing --------------------------------------------------------------------------------------
def save_pretrained(
    model,
    save_directory,
    safe_serialization=True,
    state_dict=None,
    max_shard_size=sharding.DEFAULT_MAX_SHARD_SIZE,
    is_main_process=True,
    **kwargs,
):
    """config.json + model.safetensors ({"format": "pt"}), or pytorch_model.bin; sharded beyond
    max_shard_size with transformers' index json; each file written atomically. On processes other
    than the main one (is_main_process=False) nothing is written, as in transformers."""
    arrays = None if state_dict is None else adapter.canonical_arrays(model, state_dict)  # None: the model's
    loading.save_pretrained(
        model,
        save_directory,
        adapter,
        kwargs,
        arrays,
        safetensors=bool(safe_serialization),
        legacy=not safe_serialization,
        max_shard_size=max_shard_size,
        is_main_process=is_main_process,
    )
