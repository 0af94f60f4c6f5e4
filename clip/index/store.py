"""The files of a built index directory besides the ANN structure itself:

    INDEX/index.json          what was built: kind, parameters, count, width, the weights fingerprint,
                              the embedding directories it was built from (and their state then)
    INDEX/sources.bin         every entry's source (an image path or a text), UTF-8, back to back
    INDEX/sources.offsets.npy (N + 1) int64 byte offsets into sources.bin
    INDEX/captions.* urls.*   the same, optional, when the embeddings came with clip-retrieval metadata

Tables are memory-mapped: opening one costs the same at a thousand rows as at a billion, and a
lookup reads only the bytes of the rows it returns.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from clip.common.io import atomic_path, path_inside, read_json_object
from clip.tasks.backends import TaskError

INDEX_JSON = "index.json"
INDEX_FORMAT_VERSION = 1
KINDS = ("flat", "hnsw", "ivfpq")
EMBEDDING_KINDS = ("image", "text")


def write_strings(directory: str | os.PathLike, name: str, strings: Iterable[str]) -> None:
    """Write `strings` as the table `name` (name.bin + name.offsets.npy), each file atomically."""
    encoded = [str(s).encode("utf-8", errors="surrogatepass") for s in strings]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    with atomic_path(os.path.join(directory, f"{name}.bin")) as tmp, open(tmp, "wb") as f:
        f.writelines(encoded)
    with atomic_path(os.path.join(directory, f"{name}.offsets.npy")) as tmp, open(tmp, "wb") as f:
        np.save(f, offsets, allow_pickle=False)


class StringTable:
    """A read-only sequence of strings over a memory-mapped table written by `write_strings`."""

    def __init__(self, directory: str | os.PathLike, name: str, count: int) -> None:
        offsets_path = inside(directory, f"{name}.offsets.npy", "table")
        blob_path = inside(directory, f"{name}.bin", "table")
        self.offsets = load_npy(offsets_path, mmap=True)
        if self.offsets.dtype != np.int64 or self.offsets.shape != (count + 1,):
            raise TaskError(
                f"{offsets_path}: expected {count + 1} int64 offsets, found {self.offsets.dtype} {self.offsets.shape}"
            )
        size = os.path.getsize(blob_path)
        # the ends are checked here; a non-monotonic middle shows up as a bad slice, checked per lookup
        if self.offsets[0] != 0 or self.offsets[-1] != size:
            raise TaskError(
                f"{blob_path}: holds {size} bytes but {offsets_path} ends at {int(self.offsets[-1])} (damaged table)"
            )
        self.blob = np.memmap(blob_path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        self.path = blob_path

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} of a table of {len(self)}")
        begin, end = int(self.offsets[i]), int(self.offsets[i + 1])
        if not 0 <= begin <= end <= len(self.blob):
            raise TaskError(f"{self.path}: row {i} has a bad byte range {begin}..{end} (damaged table)")
        return bytes(self.blob[begin:end]).decode("utf-8", errors="replace")

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def inside(directory: str | os.PathLike, name: str, what: str = "file") -> str:
    """clip.common.io.path_inside with its refusal as a TaskError (this package's one error type)."""
    try:
        return path_inside(directory, name, what)
    except ValueError as err:
        raise TaskError(str(err)) from None


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """np.load without pickles, every failure a TaskError naming the file."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as err:  # pickled object arrays, bad headers, truncated data
        raise TaskError(f"{path}: not a readable .npy array ({err})") from None
    except (OSError, EOFError) as err:
        raise TaskError(f"{path}: cannot be read as a .npy array ({err})") from None


def is_index_dir(path: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(os.fspath(path), INDEX_JSON))


def read_index_json(directory: str | os.PathLike) -> dict:
    """index.json of a built index, validated: a damaged file is one TaskError naming it."""
    path = os.path.join(os.fspath(directory), INDEX_JSON)
    try:
        info = read_json_object(path)
    except ValueError as err:
        raise TaskError(str(err)) from None
    if info.get("format_version") != INDEX_FORMAT_VERSION:
        raise TaskError(
            f"{path}: unknown format_version {info.get('format_version')!r} (this version reads "
            f"{INDEX_FORMAT_VERSION}); rebuild it with `clip index`"
        )
    checks = {
        "kind": lambda v: v in KINDS,
        "embedding_kind": lambda v: v in EMBEDDING_KINDS,
        "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "dim": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "params": lambda v: isinstance(v, dict),
        "tables": lambda v: isinstance(v, list) and all(t in ("captions", "urls") for t in v),
        "weights": lambda v: v is None or isinstance(v, str),
        "model": lambda v: v is None or isinstance(v, str),
        "built_from": lambda v: isinstance(v, list),
    }
    for key, ok in checks.items():
        if not ok(info.get(key)):
            raise TaskError(f"{path}: bad or missing {key!r} ({info.get(key)!r}); rebuild it with `clip index`")
    return info
