"""Sharded weight files as transformers writes them, for every backend's save_pretrained.

Up to max_shard_size one file (`model.safetensors`); beyond it `model-00001-of-0000N.safetensors`
shards plus `model.safetensors.index.json` ({"metadata": {"total_parameters", "total_size"},
"weight_map": {name: shard}}), so transformers' from_pretrained and ours read either. Tensors go
to shards in the order given, a shard closing when the next tensor would overflow it; a tensor
larger than the limit gets a shard of its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from clip.common import hub, io
from clip.common.surface import parse_size

# transformers' default max_shard_size
DEFAULT_MAX_SHARD_SIZE = "5GB"
_SHARD_NAME = re.compile(r"-\d{5}-of-\d{5}$")


def plan_shards(sizes: dict, max_shard_size: int | str) -> list[list[str]]:
    """{name: bytes} (in writing order) -> the names of each shard."""
    limit = parse_size(max_shard_size)
    shards, current, filled = [], [], 0  # type: list[list], list, int
    for name, size in sizes.items():
        if size > limit:  # alone, after the shard being filled
            shards.append([name])
            continue
        if current and filled + size > limit:
            shards.append(current)
            current, filled = [], 0
        current.append(name)
        filled += size
    if current:
        shards.append(current)
    return shards or [[]]


def shard_file_name(base: str, index: int, count: int) -> str:
    stem, ext = os.path.splitext(base)
    return f"{stem}-{index:05d}-of-{count:05d}{ext}"


def save_weights(
    directory: str | os.PathLike,
    tensors: dict,
    sizes: dict,
    write: Callable[[dict, str], object],
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    base_name: str = hub.SAFETENSORS_NAME,
    total_parameters: int | None = None,
) -> list[str]:
    """Write `tensors` ({name: tensor}) into `directory` with `write(subset, path)` (atomic), sharded
    by their byte `sizes`; returns the file names written (shards and index, or the one file).
    Shards of an earlier, differently sharded save of the same base name are removed."""
    shards = plan_shards(sizes, max_shard_size)
    index_name = base_name + ".index.json"
    if len(shards) == 1:
        write({n: tensors[n] for n in shards[0]}, os.path.join(directory, base_name))
        written = [base_name]
    else:
        names = [shard_file_name(base_name, i + 1, len(shards)) for i in range(len(shards))]
        weight_map = {}
        for file_name, members in zip(names, shards):
            write({n: tensors[n] for n in members}, os.path.join(directory, file_name))
            weight_map.update(dict.fromkeys(members, file_name))
        metadata = {"total_size": sum(sizes.values())}
        if total_parameters is not None:
            metadata = {"total_parameters": total_parameters, **metadata}
        io.atomic_write_json(os.path.join(directory, index_name), {"metadata": metadata, "weight_map": weight_map})
        written = names + [index_name]
    _remove_stale_shards(directory, base_name, set(written))
    if len(shards) == 1:  # an index left from an earlier sharded save would point at removed shards
        stale_index = os.path.join(directory, index_name)
        if os.path.isfile(stale_index):
            os.unlink(stale_index)
    return written


def _remove_stale_shards(directory, base_name: str, keep: set):
    stem, ext = os.path.splitext(base_name)
    for file_name in os.listdir(directory):
        head, file_ext = os.path.splitext(file_name)
        if file_ext == ext and file_name not in keep and head.startswith(stem) and _SHARD_NAME.search(head):
            os.unlink(os.path.join(directory, file_name))


def remove_weights(directory: str | os.PathLike, base_name: str) -> None:
    """Remove a save's weight files of `base_name` (the single file, its shards and index)."""
    _remove_stale_shards(directory, base_name, set())
    for file_name in (base_name, base_name + ".index.json"):
        path = os.path.join(directory, file_name)
        if os.path.isfile(path):
            os.unlink(path)
