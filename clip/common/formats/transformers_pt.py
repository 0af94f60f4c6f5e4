"""transformers' PyTorch checkpoints, which are the canonical layout itself: model.safetensors or
pytorch_model.bin, sharded or not (transformers' index json), in the canonical names (or with a
prefix such as "clip." that clip.common.weights.normalize_checkpoint_keys removes).

The .bin files are read with torch.load(weights_only=True) and leniently (a training checkpoint's
non-tensor entries are dropped), as clip.convert reads any foreign file; the backends'
from_pretrained reads them strictly (weight_files.torch_state_dict).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from clip.common import hub, io, weight_files, weights

FILE_NAMES = (hub.SAFETENSORS_NAME, hub.SAFETENSORS_INDEX_NAME, hub.PYTORCH_NAME, hub.PYTORCH_INDEX_NAME)
METADATA = {"format": "pt"}  # what transformers writes into its safetensors header, and checks on load


def read(paths: Iterable[str | os.PathLike]) -> tuple[dict, dict]:
    """({canonical name: numpy array}, {canonical name: the checkpoint's own name}) of the shards `paths`."""
    tensors = io.merge_shards(paths, read_shard)
    mapping = weights.normalize_checkpoint_keys(tensors)  # checkpoint name -> canonical name
    return {canonical: tensors[name] for name, canonical in mapping.items()}, {c: n for n, c in mapping.items()}


def read_shard(path: str | os.PathLike) -> dict:
    """{name: numpy array} of one .safetensors (memory-mapped) or .bin file."""
    if str(path).endswith(".safetensors"):
        return io.read_safetensors(path)
    return weight_files.torch_arrays(weight_files.torch_load(path), path)


def write_safetensors(arrays: dict, path: str | os.PathLike) -> None:
    io.write_safetensors(arrays, path, metadata=METADATA)


def write_bin(arrays: dict, path: str | os.PathLike) -> None:
    weight_files.save_torch_arrays(arrays, path)
