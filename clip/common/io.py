"""Atomic file writes and safetensors <-> numpy, with no deep-learning framework imported.

The safetensors reader memory-maps the file: tensors are numpy views into the page cache, so
loading a checkpoint costs about one copy (into the model's parameters), not two.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import tempfile

import numpy as np

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
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    A crash or an exception leaves any previous file untouched and no partial file behind.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the mode a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path, text: str):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def atomic_write_json(path, data):
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


def loads_json(text: str | bytes, what) -> object:
    """json.loads with a nesting limit; every failure is a ValueError naming `what` (a path or a label)."""
    if not _json_depth_ok(text):
        raise ValueError(f"{what} is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{what} is not valid JSON: {err}") from None


def read_json(path) -> object:
    """Any JSON file, depth-limited, with errors naming the file."""
    with open(path, "rb") as f:
        return loads_json(f.read(), path)


def read_json_object(path) -> dict:
    """A JSON file that must hold an object (config.json and friends), with errors naming the file."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def path_inside(directory, name, what: str = "file") -> str:
    """`directory/name` for a relative `name` read from a manifest or index, refused (ValueError) when it
    is absolute or resolves outside `directory` (`../../etc/passwd`, a symlink out): a damaged or hostile
    manifest must never make us open another file."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"{directory}: {what} entry {name!r} is not a relative file name")
    if os.path.isabs(name):
        raise ValueError(f"{directory}: {what} entry {name!r} is an absolute path; only names inside the directory are allowed")
    root = os.path.realpath(directory)
    full = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, full]) != root:
        raise ValueError(f"{directory}: {what} entry {name!r} points outside the directory")
    return full


def read_safetensors_header(path) -> tuple[dict, int]:
    """(header dict, byte offset where tensor data starts)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_MAX_HEADER, size - 8):
            raise ValueError(f"{path}: not a safetensors file (header length {n} exceeds the file)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a safetensors file (header is not JSON: {err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object)")
    return header, 8 + n


def read_safetensors(path, mmap: bool = True) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays (read-only views when `mmap`)."""
    path = os.fspath(path)
    header, start = read_safetensors_header(path)
    size = os.path.getsize(path)
    buffer = np.memmap(path, dtype=np.uint8, mode="r") if mmap else np.fromfile(path, dtype=np.uint8)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tag = info.get("dtype")
        if tag not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {tag!r}")
        dtype = numpy_dtype(_DTYPES[tag])
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize or start + end > size:
            raise ValueError(
                f"{path}: tensor {name!r} of shape {shape} and dtype {tag} does not fit its "
                f"byte range {begin}..{end} (file truncated or corrupt)"
            )
        tensors[name] = buffer[start + begin : start + end].view(dtype).reshape(shape)
    return tensors


def read_safetensors_metadata(path) -> dict:
    header, _ = read_safetensors_header(path)
    return dict(header.get("__metadata__") or {})


def write_safetensors(tensors: dict, path, metadata: dict | None = None):
    """Write numpy arrays (any order, any contiguity) as safetensors, atomically.

    Tensors are laid out as the safetensors library lays them out (widest dtype first, then by
    name; metadata first in the header), so our files are byte-identical to its files.
    """
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}} if metadata else {}
    offset = 0
    arrays = []
    items = [(name, np.asarray(array)) for name, array in tensors.items()]
    for name, array in sorted(items, key=lambda item: (-item[1].dtype.itemsize, item[0])):
        dtype_name = "bfloat16" if array.dtype.name == "bfloat16" else array.dtype.name
        if dtype_name not in _TAGS:
            raise ValueError(f"tensor {name!r}: dtype {array.dtype} cannot be stored in safetensors")
        nbytes = array.size * array.dtype.itemsize
        header[name] = {"dtype": _TAGS[dtype_name], "shape": list(array.shape), "data_offsets": [offset, offset + nbytes]}
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


def read_checkpoint(paths) -> dict[str, np.ndarray]:
    """Merge the tensors of one or more safetensors shards; a name in two shards is an error."""
    merged = {}
    for path in paths:
        for name, array in read_safetensors(path).items():
            if name in merged:
                raise ValueError(f"{path}: tensor {name!r} also appears in another shard")
            merged[name] = array
    return merged
