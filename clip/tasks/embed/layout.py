"""The embedding directory's file names: which files chunk N has, and the manifest's list of the
finished chunks as ranges of numbers.

    EMB/manifest.json                   settings (model, weights fingerprint), the numbers of the finished chunks as
                                        ranges ([[0, 120]]): a few hundred bytes however many chunks there are
    EMB/chunks/000000.safetensors|.npy  (n, D) float32 unit vectors
    EMB/chunks/000000.json              the chunk's keys (and texts or sources) and the inputs skipped meanwhile
    EMB/img_emb/img_emb_000000.npy      clip-retrieval's layout, read unchanged by embedding-reader,
    EMB/text_emb/text_emb_000000.npy    autofaiss and clip-retrieval's back-end (float16 by default)
    EMB/metadata/metadata_000000.parquet  key, image_path, caption, width, height, sidecar json fields

Chunk N's file names follow from N, so neither the manifest nor a keys file holds a path to open.
Writing (chunk_writer.py), opening and verifying (store.py) and reading (clip.index.embeddings) all
name the files through these functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from clip.errors import InputError

LAYOUT_DIRS = ("chunks", "img_emb", "text_emb", "metadata")  # the directory's folders, beside manifest.json
MAX_CHUNKS = 10**9  # chunk numbers are six digits or more; a range beyond this is a damaged manifest


def chunk_numbers(manifest: dict) -> list[int]:
    """The finished chunks' numbers from the manifest's chunk_ranges ([[start, stop), ...], ascending,
    disjoint); a malformed value is a ValueError."""
    ranges = manifest.get("chunk_ranges")
    if not isinstance(ranges, list):
        raise InputError(f"the manifest's chunk_ranges is {type(ranges).__name__}, not a list of [start, stop] pairs")
    numbers, last = [], 0  # type: list[int], int
    for pair in ranges:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(type(v) is int for v in pair)
            or not last <= pair[0] < pair[1] <= MAX_CHUNKS
        ):
            raise InputError(f"the manifest's chunk_ranges entry {pair!r} is not an ascending [start, stop] pair")
        numbers.extend(range(*pair))
        last = pair[1]
    return numbers


def chunk_ranges(numbers: Iterable[int]) -> list[list[int]]:
    """[0, 1, 2, 5, 6] -> [[0, 3], [5, 7]]."""
    ranges: list[list[int]] = []
    for number in numbers:
        if ranges and ranges[-1][1] == number:
            ranges[-1][1] += 1
        else:
            ranges.append([number, number + 1])
    return ranges


def chunk_entry(manifest: dict, index: int, count: int | None) -> dict[str, Any]:
    """Chunk `index`'s files, named after its number; the clip-retrieval files exist when it holds vectors."""
    name = f"chunks/{index:06d}"
    entry: dict[str, Any] = {
        "index": index,
        "file": f"{name}.{manifest['storage']}",
        "keys": f"{name}.json",
        "count": count,
    }
    if count:
        if manifest["kind"] == "image":
            entry["img_emb"] = f"img_emb/img_emb_{index:06d}.npy"
        if manifest["kind"] == "text" or manifest.get("texts_too"):
            entry["text_emb"] = f"text_emb/text_emb_{index:06d}.npy"
        if manifest.get("texts_too"):
            entry["text_file"] = f"{name}.text.{manifest['storage']}"
        if manifest.get("parquet", True):  # fixed when the directory is created
            entry["metadata"] = f"metadata/metadata_{index:06d}.parquet"
    return entry


def chunk_files(entry: dict) -> list[str]:
    """The files of a chunk entry, relative to the directory."""
    return [entry[name] for name in ("file", "keys", "img_emb", "text_emb", "metadata", "text_file") if entry.get(name)]


def manifest_on_disk(manifest: dict) -> dict:
    """What the manifest file holds: the chunks as ranges of numbers, not as a list."""
    data = {k: v for k, v in manifest.items() if k != "chunks"}
    data["chunk_ranges"] = chunk_ranges(entry["index"] for entry in manifest["chunks"])
    return data
