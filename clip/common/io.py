"""Atomic file writes and safetensors <-> numpy, with no deep-learning framework imported.

The safetensors reader memory-maps the file: tensors are numpy views into the page cache, so
loading a checkpoint costs about one copy (into the model's parameters), not two.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from clip.errors import InputError

# safetensors dtype tag <-> numpy dtype name; BF16 needs ml_dtypes (a dependency of jax and
# tensorflow, and of this package).
_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
}
_TAGS = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_name: bool = False) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    A crash or an exception leaves any previous file untouched and no partial file behind.
    keep_name: the temporary file has `path`'s own name, in a temporary directory beside it, for
    writers that record the file's name inside the file (torch.save names its zip's root folder
    after it: a random name would make every save differ).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    prefix = f".{os.path.basename(path)}."
    if keep_name:
        holder = tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=directory)
        tmp = os.path.join(holder, os.path.basename(path))
        open(tmp, "wb").close()
    else:
        holder = None
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
        os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it the mode a plain open() would
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if holder is not None:
            shutil.rmtree(holder, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, replace: bool = False) -> Iterator[str]:
    """Yield a temporary directory beside `path`; on success it becomes `path` (renames only).

    An existing `path` is replaced only when empty or with `replace` (else FileExistsError); a crash
    or an exception leaves it untouched and no temporary directory behind."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes the directory private (0700)
        if os.path.isdir(path):
            if os.listdir(path) and not replace:
                raise FileExistsError(f"{path}: the directory exists and is not empty")
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def atomic_write_json(path: str | os.PathLike, data: object) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


# No file we read (configs, manifests, safetensors headers, trainer state) nests deeper than a few
# levels; a hostile file nesting thousands deep would otherwise end in RecursionError.
MAX_JSON_DEPTH = 64


_JSON_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _json_depth_ok(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether brackets outside strings nest at most `limit` deep (checked before json parses it)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    depth = 0
    for match in _JSON_STRUCTURE.finditer(text):
        ch = match.group()
        if ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def loads_json(text: str | bytes, what: object, unique_keys: bool = False) -> object:
    """json.loads with a nesting limit; every failure is a ValueError naming `what` (a path or a label).

    unique_keys: a name given twice in one object is an error (json keeps the last silently; in a
    safetensors header the two entries would disagree on where a tensor is)."""
    if not _json_depth_ok(text):
        raise InputError(f"{what} is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=_unique_object if unique_keys else None)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, a name given twice
        raise InputError(f"{what} is not valid JSON: {err}") from None


def _unique_object(pairs) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise InputError(f"the name {twice!r} appears twice in one object")
    return out


def read_json(path: str | os.PathLike) -> object:
    """Any JSON file, depth-limited, with errors naming the file."""
    with open(path, "rb") as f:
        return loads_json(f.read(), path)


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file that must hold an object (config.json and friends), with errors naming the file."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's contents (a BOM dropped). Bytes that are not UTF-8 are a ValueError naming
    the file, the line and the byte, not a UnicodeDecodeError that names neither; the universal
    newlines of text mode (\r\n, \r) read as \n."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(
            f"{path}:{line}: not valid UTF-8 text (byte {data[err.start]:#04x}); save the file as UTF-8"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def path_inside(directory: str | os.PathLike, name: str, what: str = "file") -> str:
    """`directory/name` for a relative `name` read from a manifest or index, refused (ValueError) when it
    is absolute or resolves outside `directory` (`../../etc/passwd`, a symlink out): a damaged or hostile
    manifest must never make us open another file."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InputError(f"{directory}: {what} entry {name!r} is not a relative file name")
    if os.path.isabs(name):
        raise InputError(
            f"{directory}: {what} entry {name!r} is an absolute path; only names inside the directory are allowed"
        )
    root = os.path.realpath(directory)
    full = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, full]) != root:
        raise InputError(f"{directory}: {what} entry {name!r} points outside the directory")
    return full


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict, int]:
    """(header dict, byte offset where tensor data starts), the header checked entry by entry
    (check_safetensors_header) before any tensor is read."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise InputError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_MAX_HEADER, size - 8):
            raise InputError(f"{path}: not a safetensors file (header length {n} exceeds the file)")
        text = f.read(n)
    try:
        header = loads_json(text, "header", unique_keys=True)
    except ValueError as err:
        raise InputError(f"{path}: not a safetensors file ({err})") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: not a safetensors file (header is not a JSON object)")
    check_safetensors_header(path, header, size - 8 - n)
    return header, 8 + n


_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no offset


def check_safetensors_header(path: str | os.PathLike, header: dict, data_size: int) -> None:
    """The safetensors library's rules, so that a hostile header can neither point a tensor at
    the header's own bytes or past the file (negative or overlapping offsets) nor make two
    tensors share bytes: every entry an object with exactly dtype, shape and data_offsets; a known
    dtype; non-negative integer dimensions and offsets; each tensor's byte range its shape times
    its item size; the ranges, in order, tiling the data section exactly (no overlap, no gap, no
    byte after the last). A ValueError names the file and the tensor."""
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise InputError(f"{path}: corrupt safetensors header (__metadata__ must map names to strings)")
    ranges = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict):
            raise InputError(f"{where}: its header entry is a {type(info).__name__}, not an object")
        if set(info) != _ENTRY_KEYS:
            missing, extra = sorted(_ENTRY_KEYS - set(info)), sorted(set(info) - _ENTRY_KEYS)
            detail = "; ".join(
                part
                for part in (missing and f"missing {', '.join(missing)}", extra and f"unknown {', '.join(extra)}")
                if part
            )
            raise InputError(f"{where}: its header entry must have exactly dtype, shape and data_offsets ({detail})")
        tag, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(tag, str) or tag not in _DTYPES:
            raise InputError(f"{where} has unsupported dtype {tag!r} (supported: {', '.join(_DTYPES)})")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise InputError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
            raise InputError(f"{where}: data_offsets {offsets!r} are not two non-negative integers")
        begin, end = offsets
        nbytes = math.prod(shape) * numpy_dtype(_DTYPES[tag]).itemsize  # Python ints: no overflow
        if end < begin or end - begin != nbytes:
            raise InputError(
                f"{where} of shape {tuple(shape)} and dtype {tag} needs {nbytes} bytes, "
                f"its data_offsets {offsets} give {end - begin}"
            )
        if end > data_size:
            raise InputError(
                f"{where}: its bytes {begin}..{end} run past the {data_size} bytes of data (file truncated or corrupt)"
            )
        ranges.append((begin, end, name))
    cursor = 0
    for begin, end, name in sorted(ranges):
        if begin != cursor:
            problem = (
                "overlap the tensor before them"
                if begin < cursor
                else f"leave a gap of {begin - cursor} bytes before them"
            )
            raise InputError(
                f"{path}: tensor {name!r}: its bytes {begin}..{end} {problem} (corrupt safetensors header)"
            )
        cursor = end
    if cursor != data_size:
        raise InputError(
            f"{path}: {data_size - cursor} bytes after the last tensor belong to none (corrupt safetensors header)"
        )


def read_safetensors(path: str | os.PathLike, mmap: bool = True) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays (read-only views when `mmap`).

    Any dtype the format stores is returned (training state keeps uint8 RNG state, embedding
    directories integer keys); what a model takes as weights is checked by its loader."""
    path = os.fspath(path)
    header, start = read_safetensors_header(path)
    tensors: dict[str, np.ndarray] = {}
    if not any(name != "__metadata__" for name in header):
        return tensors
    buffer = np.memmap(path, dtype=np.uint8, mode="r") if mmap else np.fromfile(path, dtype=np.uint8)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = numpy_dtype(_DTYPES[info["dtype"]])
        begin, end = info["data_offsets"]
        tensors[name] = buffer[start + begin : start + end].view(dtype).reshape(info["shape"])
    return tensors


def read_safetensors_metadata(path: str | os.PathLike) -> dict:
    header, _ = read_safetensors_header(path)
    return dict(header.get("__metadata__") or {})


def write_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write numpy arrays (any order, any contiguity) as safetensors, atomically.

    Tensors are laid out as the safetensors library lays them out (widest dtype first, then by
    name; metadata first in the header), so our files are byte-identical to its files.
    """
    header: dict[str, dict] = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}} if metadata else {}
    offset = 0
    arrays = []
    items = [(name, np.asarray(array)) for name, array in tensors.items()]
    for name, array in sorted(items, key=lambda item: (-item[1].dtype.itemsize, item[0])):
        dtype_name = "bfloat16" if array.dtype.name == "bfloat16" else array.dtype.name
        if dtype_name not in _TAGS:
            raise InputError(f"tensor {name!r}: dtype {array.dtype} cannot be stored in safetensors")
        nbytes = array.size * array.dtype.itemsize
        header[name] = {
            "dtype": _TAGS[dtype_name],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
        arrays.append(array)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for array in arrays:
                f.write(np.ascontiguousarray(array).tobytes())


def merge_shards(
    paths: Iterable[str | os.PathLike], read: Callable[[str | os.PathLike], dict], origins: dict | None = None
) -> dict:
    """{name: value} of all shards, each read by `read(path)`; a name in two shards is an error.

    origins: when given, filled with {name: the file it came from} (for messages)."""
    merged = {}
    for path in paths:
        for name, value in read(path).items():
            if name in merged:
                raise InputError(f"{path}: tensor {name!r} also appears in another shard")
            merged[name] = value
            if origins is not None:
                origins[name] = os.fspath(path)
    return merged


def read_checkpoint(paths: Iterable[str | os.PathLike], origins: dict | None = None) -> dict[str, np.ndarray]:
    """Merge the tensors of one or more safetensors shards; a name in two shards is an error.

    origins: when given, filled with {tensor name: the file it came from} (for messages)."""
    return merge_shards(paths, read_safetensors, origins)
