"""Readers: what `clip embed` takes in, as a stream of items with stable keys.

    folder of images    key = the /-separated path under the folder (image extensions only)
    one image           key = its file name
    text file of lines  key = the line number
    webdataset shards   key = the sample's __key__ (img2dataset: key.jpg + key.txt caption + key.json)
    parquet/CSV/JSONL   key = the row number; the image path column (image_path, url, filepath) names the file

A key is what resume and --shard go by, so it never depends on the order things are read in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Callable, Iterator

from clip.common.io import read_text
from clip.tasks.backends import TaskError

MANIFEST = "manifest.json"  # what marks a directory as an embedding directory (skipped when listing a folder)
TEXT_SUFFIXES = (".txt", ".text", ".lines")
IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
    ".tga",
    ".ico",
    ".dib",
)
TABLE_SUFFIXES = (".parquet", ".csv", ".tsv", ".jsonl", ".ndjson")
TAR_SUFFIXES = (".tar",)
# img2dataset / clip-retrieval column names, in the order they are tried
IMAGE_COLUMNS = ("image_path", "filepath", "path", "url", "image")
CAPTION_COLUMNS = ("caption", "text", "title")
# webdataset sample fields that hold the image, in the order they are tried (img2dataset writes jpg)
TAR_IMAGE_FIELDS = tuple(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)


@dataclasses.dataclass
class Item:
    """One input. The image is `data` (the encoded bytes, a tar member) or the file at `path`."""

    key: str
    source: str  # what to call it in listings and metadata: a path, a URL, or "shard.tar/key.jpg"
    path: str | None = None
    data: bytes | None = None
    caption: str | None = None
    meta: dict | None = None  # the sidecar .json of a webdataset sample, the other columns of a table row
    error: str | None = None  # known unreadable before decoding: skipped with this reason


@dataclasses.dataclass
class Collection:
    """An input resolved: its kind ("image" or "text"), its type, what identifies it, and its items."""

    kind: str
    input: str  # "folder", "image", "lines", "webdataset" or "table"
    root: str  # recorded in the manifest: a resume must read the same input
    items: list[Item] | Callable[[], Iterator[Item]]  # a list, or a callable giving an iterator of them (streams)
    total: int | None = None  # known in advance for lists (progress bars), None for streams
    has_captions: bool = False
    columns: tuple[str, str | None] | None = None  # a table's (image column, caption column or None)

    def iterate(self) -> Iterator[Item]:
        """The items, in order (a stream is read anew)."""
        return iter(self.items) if isinstance(self.items, list) else self.items()


# --------------------------------------------------------------------- folders


def scan_folder(
    directory: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None
) -> tuple[list[str], list[dict]]:
    """(keys, skipped): the image files under `directory` (recursively, sorted, hidden ones left out),
    and everything with an image name that is not a regular file (a named pipe, a socket, a device,
    a broken link), listed with its reason and never opened: reading a pipe would block forever.

    Files of other extensions (img2dataset's .txt/.json sidecars, notes) are not inputs and not listed.
    exclude: a directory (an embedding directory inside the folder) to leave out.
    """
    keys, skipped = [], []
    exclude = os.path.realpath(exclude) if exclude else None
    stack = [os.fspath(directory)]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError as err:
            skipped.append({"source": _key(directory, folder), "reason": f"cannot list the folder ({err.strerror})"})
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)  # as os.walk: a link loop must not recurse forever
            except OSError:
                is_dir = False
            if is_dir:
                if not os.path.isfile(os.path.join(entry.path, MANIFEST)) and os.path.realpath(entry.path) != exclude:
                    stack.append(entry.path)
                continue
            reason = _not_regular(entry.path)
            if reason is None and entry.name.lower().endswith(IMAGE_SUFFIXES):
                keys.append(_key(directory, entry.path))
            elif reason is not None:
                skipped.append({"source": _key(directory, entry.path), "reason": reason})
    keys.sort()
    return keys, sorted(skipped, key=lambda e: e["source"])


def _key(directory, path) -> str:
    return os.path.relpath(path, directory).replace(os.sep, "/")


def _not_regular(path) -> str | None:
    """None for a regular file (or a link to one); otherwise why it is not read."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return "a broken link" if os.path.islink(path) else f"cannot read it ({err.strerror})"
    if stat.S_ISREG(mode):
        return None
    for test, what in (
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return f"not a regular file ({what}); not read"
    return "not a regular file; not read"


def list_images(directory: str | os.PathLike[str]) -> list[str]:
    """The image files under `directory`, as /-separated relative paths (see scan_folder)."""
    return scan_folder(directory)[0]


def regular_file_error(path: str | os.PathLike[str]) -> str | None:
    """Why `path` must not be opened as an image (None when it is a regular file)."""
    return _not_regular(path)


# --------------------------------------------------------------------- text lines


def read_lines(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) for each non-blank line of a UTF-8 text file."""
    if _not_regular(path):
        raise TaskError(f"{path}: {_not_regular(path)}")
    lines = read_text(path).split("\n")  # bytes that are not UTF-8: an error naming the file and line
    return [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]


# --------------------------------------------------------------------- kinds


def _is_url(source: str) -> bool:
    return "://" in source or source.startswith("pipe:")


def is_shard_spec(source: str) -> bool:
    """A webdataset shard, a brace pattern of shards, or a `::`-separated list of them."""
    return all(part.split("?")[0].lower().endswith(TAR_SUFFIXES) for part in source.split("::"))


def detect_kind(source: str | os.PathLike[str]) -> str:
    """ "image" for a folder, an image file, webdataset shards or a table; "text" for a .txt file of lines."""
    source = os.fspath(source)
    if os.path.isdir(source):
        return "image"
    if is_shard_spec(source) and ("{" in source or "::" in source or _is_url(source)):
        return "image"  # patterns and URLs are checked when they are read
    if not os.path.exists(source):
        raise TaskError(f"{source}: no such file or directory")
    return "text" if source.lower().endswith(TEXT_SUFFIXES) else "image"


def open_collection(
    source: str | os.PathLike[str],
    kind: str = "auto",
    out: str | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    listing: bool = True,
) -> Collection:
    """Resolve `source` (see the module docstring) into a Collection; a bad input is a TaskError.

    listing=False: check what the user named (the folder exists, the table's columns, the shards
    open) without listing a folder's files or reading a table's rows, for a reader elsewhere (Ray
    Data: clip.tasks.embed.ray_readers); a folder's or table's items are then left empty."""
    from clip.tasks.embed.shards import shard_collection
    from clip.tasks.embed.tables import table_collection

    source = os.fspath(source)
    kind = detect_kind(source) if kind == "auto" else kind
    if kind not in ("image", "text"):
        raise TaskError(f"unknown kind {kind!r}; choose auto, image or text")
    if kind == "text":
        if not os.path.isfile(source):
            raise TaskError(f"{source}: no such file")
        lines = read_lines(source)
        if not lines:
            raise TaskError(f"{source}: the file holds no non-blank lines to embed")
        items = [Item(str(number), str(number), caption=text) for number, text in lines]
        return Collection("text", "lines", os.path.abspath(source), items, len(items))
    if os.path.isdir(source):
        root = os.path.abspath(source)
        if not listing:
            return Collection("image", "folder", root, [], None)
        keys, unreadable = scan_folder(root, exclude=out)
        if not keys and not unreadable:
            raise TaskError(f"{source}: the directory holds no image files to embed")
        items = [Item(key, key, path=os.path.join(root, *key.split("/"))) for key in keys]
        items += [Item(e["source"], e["source"], error=e["reason"]) for e in unreadable]
        return Collection("image", "folder", root, items, len(items))
    if is_shard_spec(source):
        return shard_collection(source)
    if source.lower().endswith(TABLE_SUFFIXES):
        return table_collection(source, image_column, caption_column, listing)
    if not os.path.isfile(source):
        raise TaskError(f"{source}: no such file or directory")
    name = os.path.basename(source)
    item = Item(name, name, path=os.path.abspath(source), error=_not_regular(source))
    return Collection("image", "image", os.path.dirname(os.path.abspath(source)), [item], 1)


def parse_meta(data: bytes, label: str) -> dict:
    """A sidecar .json: its top-level fields (nested values as JSON text); {} when it is not an object."""
    from clip.common.io import loads_json

    try:
        value = loads_json(data, label)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {
        str(k): v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v) for k, v in value.items()
    }
