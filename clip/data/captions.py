"""Captioned images from files: a CSV or JSONL of (image path, caption) rows, or a folder.

- CSV: a header row naming an image column (`image`, `image_path`, `filepath`, `path` or `file`)
  and a caption column (`caption`, `text`, `title` or `label`); without such a header, the first
  two columns are taken as image and caption.
- JSONL: one object per line with the same keys.
- Folder: every image file (any extension PIL reads) with a same-named `.txt` caption beside it
  (`cat.jpg` + `cat.txt`), searched recursively.

Relative image paths are relative to the CSV/JSONL file. Rows that cannot be used (a missing or
undecodable image, an empty caption, a malformed line) are collected in `problems` and reported
as one warning, never raised: a 1-in-10,000 bad row should not stop a training run.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
from PIL import Image

from clip.common.io import loads_json, read_text
from clip.errors import InputError, InputFileNotFoundError

IMAGE_KEYS = ("image", "image_path", "filepath", "path", "file", "filename")
CAPTION_KEYS = ("caption", "text", "title", "label")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class CaptionDataset:
    """item i -> (PIL RGB image, caption) for rows [(image path, caption), ...]."""

    def __init__(self, rows: Iterable[tuple[str, str]], problems: Iterable[str] = (), source: str = "") -> None:
        self.rows = list(rows)
        self.problems = list(problems)
        self.source = source
        if not self.rows:
            detail = f"; {len(self.problems)} unusable row(s), first: {self.problems[0]}" if self.problems else ""
            raise InputError(f"{source or 'caption dataset'}: no usable (image, caption) rows{detail}")

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        path, caption = self.rows[index]
        with Image.open(path) as image:
            return image.convert("RGB"), caption


def load_captions(source: str | os.PathLike[str], verify: bool = True, report: bool = True) -> CaptionDataset:
    """A CaptionDataset from a .csv / .jsonl file or a folder of images with .txt captions.

    verify: decode-check every image now (PIL's verify), so that a broken file is reported here
    rather than failing a training step later. report: warn once with the count and first problems.
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        rows, problems = _folder_rows(source)
    elif not os.path.exists(source):
        raise InputFileNotFoundError(f"{source}: no such file or directory")
    elif source.lower().endswith((".jsonl", ".ndjson")):
        rows, problems = _jsonl_rows(source)
    elif source.lower().endswith((".csv", ".tsv")):
        rows, problems = _csv_rows(source)
    else:
        raise InputError(f"{source}: expected a .csv, .tsv or .jsonl file or a folder of images with .txt captions")
    good = []
    for where, path, caption in rows:
        problem = _check_row(path, caption, verify)
        if problem:
            problems.append(f"{where}: {problem}")
        else:
            good.append((path, caption))
    if problems and report:
        shown = "\n  ".join(problems[:5])
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        warnings.warn(f"{source}: skipped {len(problems)} unusable row(s):\n  {shown}{more}", stacklevel=2)
    return CaptionDataset(good, problems, source)


def _check_row(path, caption, verify) -> str | None:
    if not caption or not str(caption).strip():
        return "empty caption"
    if not path:
        return "empty image path"
    if not os.path.isfile(path):
        return f"image {path} not found"
    if verify:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as err:  # PIL raises many types for broken files
            return f"image {path} cannot be decoded ({type(err).__name__}: {err})"
    return None


def _pick(keys, names):
    lowered = {name.strip().lower(): name for name in names if name}
    return next((lowered[k] for k in keys if k in lowered), None)


def _csv_rows(path):
    base = os.path.dirname(os.path.abspath(path))
    rows, problems = [], []
    with io.StringIO(read_text(path), newline="") as f:  # not UTF-8: an error naming the file and line
        reader = csv.reader(f, delimiter="\t" if path.lower().endswith(".tsv") else ",")
        header = next(reader, None)
        if header is None:
            return rows, problems
        image_col, caption_col = _pick(IMAGE_KEYS, header), _pick(CAPTION_KEYS, header)
        if image_col is not None and caption_col is not None:
            i, j = header.index(image_col), header.index(caption_col)
            lines = reader
        else:  # no recognised header: the first line is data too
            i, j = 0, 1
            lines = [header, *reader]
        for line_number, line in enumerate(lines, start=2 if lines is reader else 1):
            if not any(cell.strip() for cell in line):
                continue
            if len(line) <= max(i, j):
                problems.append(f"{path}:{line_number}: expected at least {max(i, j) + 1} columns, found {len(line)}")
                continue
            rows.append((f"{path}:{line_number}", _resolve(base, line[i].strip()), line[j].strip()))
    return rows, problems


def _jsonl_rows(path):
    base = os.path.dirname(os.path.abspath(path))
    rows, problems = [], []
    for line_number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            record = loads_json(line, "the line")  # depth-limited: a hostile line nests no deeper than 64
        except ValueError as err:
            problems.append(f"{where}: {err}")
            continue
        if not isinstance(record, dict):
            problems.append(f"{where}: expected a JSON object")
            continue
        image_key, caption_key = _pick(IMAGE_KEYS, record), _pick(CAPTION_KEYS, record)
        if image_key is None or caption_key is None:
            problems.append(
                f"{where}: needs an image key ({', '.join(IMAGE_KEYS)}) and a caption key ({', '.join(CAPTION_KEYS)})"
            )
            continue
        rows.append((where, _resolve(base, str(record[image_key]).strip()), str(record[caption_key]).strip()))
    return rows, problems


def _folder_rows(folder):
    rows, problems = [], []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            image = os.path.join(root, name)
            text = os.path.join(root, stem + ".txt")
            if not os.path.isfile(text):
                problems.append(f"{image}: no caption file {stem}.txt beside it")
                continue
            with open(text, encoding="utf-8", errors="replace") as f:
                rows.append((image, image, f.read().strip()))
    return rows, problems


def _resolve(base, path):
    return path if not path or os.path.isabs(path) else os.path.join(base, path)


# -- generic dataset helpers ----------------------------------------------------------------------
class Indexable(Protocol):
    """What Subset takes: any dataset of this package (a sized sequence, dataset[i] -> item)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class Subset:
    """The items of `dataset` at `indices`, in that order."""

    def __init__(self, dataset: Indexable, indices: Iterable[int]) -> None:
        self.dataset, self.indices = dataset, [int(i) for i in indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]


def split_indices(count: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices): a seeded shuffle cut at round(count * val_fraction)."""
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng([seed, 0x5EED]).permutation(count)
    n_val = int(round(count * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])
