"""Resolve a hub id or a local directory to files, through huggingface_hub's cache.

Everything that loads a pretrained object (configs, tokenizers, processors, weights in every
backend) goes through `resolve_file`, so revision, cache_dir, token, local_files_only and
HF_HUB_OFFLINE behave the same everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from clip.common.io import read_json_object
from clip.errors import CheckpointNotFoundError, InputError  # noqa: F401  (also importable from here, its former home)

HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "subfolder", "force_download")

# Weight files in the order they are preferred; the *.index.json forms list shards.
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_NAME = "pytorch_model.bin"
PYTORCH_INDEX_NAME = "pytorch_model.bin.index.json"
TF_NAME = "tf_model.h5"
FLAX_NAME = "flax_model.msgpack"


def split_hub_kwargs(kwargs: dict) -> dict:
    """Pop the hub arguments out of a from_pretrained(**kwargs) call."""
    return {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}


def resolve_file(
    name_or_path: str | os.PathLike,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    subfolder: str = "",
    force_download: bool = False,
    required: bool = True,
) -> str | None:
    """Path of `filename` in a local directory or a hub repository (downloaded into the cache).

    Returns None when the file does not exist and `required` is False.
    """
    name_or_path = os.fspath(name_or_path)
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, subfolder, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise CheckpointNotFoundError(f"{name_or_path}: no {os.path.join(subfolder, filename)} in this directory")
        return None
    if os.path.isfile(name_or_path):
        raise CheckpointNotFoundError(
            f"{name_or_path} is a file; pass the directory that holds {filename} (or a hub id)"
        )
    if _looks_like_path(name_or_path):
        raise CheckpointNotFoundError(f"{name_or_path}: no such directory")

    import huggingface_hub
    from huggingface_hub import errors

    try:
        return huggingface_hub.hf_hub_download(
            name_or_path,
            filename,
            subfolder=subfolder or None,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
        )
    except errors.LocalEntryNotFoundError:
        # Offline (or local_files_only) and not in the cache. Checked before EntryNotFoundError,
        # of which some huggingface_hub versions make it a subclass.
        raise CheckpointNotFoundError(
            f"{name_or_path}: {filename} is not in the local cache and the hub cannot be reached "
            "(offline, HF_HUB_OFFLINE=1 or local_files_only=True). Download it while online, or pass "
            "the path of a local directory that holds the files."
        ) from None
    except errors.EntryNotFoundError:
        if required:
            raise CheckpointNotFoundError(f"{name_or_path}: the hub repository has no file {filename}") from None
        return None
    except errors.RepositoryNotFoundError:
        raise CheckpointNotFoundError(
            f"{name_or_path}: no such local directory, and no such hub repository (or it is private: pass token=...)"
        ) from None
    except errors.RevisionNotFoundError:
        raise CheckpointNotFoundError(f"{name_or_path}: revision {revision!r} does not exist") from None
    except errors.HFValidationError:
        raise CheckpointNotFoundError(
            f"{name_or_path}: neither a local directory nor a valid hub id (owner/name)"
        ) from None
    except (errors.OfflineModeIsEnabled, OSError) as err:
        if isinstance(err, CheckpointNotFoundError):
            raise
        raise CheckpointNotFoundError(
            f"{name_or_path}: could not fetch {filename} from the hub ({err}). When offline, pass the "
            "path of a local directory that holds the files."
        ) from None


def index_shards(path: str | os.PathLike) -> list[str]:
    """The shard file names a *.index.json lists (its weight_map's values), each a plain file name
    beside the index: a damaged or hostile index must not make us open another file."""
    weight_map = read_json_object(path).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InputError(f"{path}: 'weight_map' must map tensor names to shard file names")
    shards = sorted(set(weight_map.values()))
    if not shards:
        raise InputError(f"{path}: the index lists no shards (empty 'weight_map')")
    for shard in shards:
        if not shard or os.path.isabs(shard) or os.path.normpath(shard) != shard or shard.startswith(".."):
            raise InputError(f"{path}: shard {shard!r} is not a file name beside the index")
    return shards


def _looks_like_path(name: str) -> bool:
    # A hub id is "name" or "owner/name"; anything else that is not a directory is a missing path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def resolve_weight_files(
    name_or_path: str | os.PathLike, candidates: Iterable[str], **hub_kwargs: Any
) -> tuple[str, list[str]] | None:
    """First of `candidates` (weight file names) present; index files expand into their shards.

    Returns (the name that matched, [local paths]) or None when none is present.
    """
    for name in candidates:
        path = resolve_file(name_or_path, name, required=False, **hub_kwargs)
        if path is None:
            continue
        if not name.endswith(".index.json"):
            return name, [path]
        shards = [resolve_file(name_or_path, shard, **hub_kwargs) for shard in index_shards(path)]
        return name, shards  # type: ignore[return-value]  # required files: resolve_file raises, never None
    return None
