"""Labelled images for zero-shot evaluation, from the layouts people keep them in.

- ImageFolder: one sub-folder per class (`root/golden_retriever/1.jpg`); classes are the sorted
  folder names, shown with underscores as spaces ("golden retriever"), as torchvision numbers them.
- A CSV (header row) or JSONL table of (image, label) rows; images relative to the table's folder
  and never outside it; labels are class names, or class indices when a class-name mapping is given.
- A webdataset (tar shards, the `webdataset` library): each sample's image (jpg, jpeg, png, webp)
  and a label field (`cls` by default) holding an index (or a name).
- A Hugging Face `datasets` directory written by save_to_disk (needs the `datasets` package):
  an image column and a ClassLabel column, whose names are the classes.

Class names can come from a mapping file instead: JSON (a list, or an object index -> name) or
text (one name per line, in index order).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import os

from clip.common.io import path_inside, read_json
from clip.tasks.backends import TaskError

IMAGE_KEYS = ("image", "image_path", "filepath", "path", "file", "filename", "jpg", "png")
LABEL_KEYS = ("label", "class", "cls", "target", "y")
WDS_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
LAYOUTS = ("auto", "folder", "table", "webdataset", "hf")


@dataclasses.dataclass
class LabelledImages:
    """samples(): a fresh iterable of (name, image: path or PIL image, class index), or of
    (name, None, reason) for a sample that cannot be used; classnames[i] names class i; count:
    how many samples (None when streamed); problems: table rows that could not be used ("where: why")."""

    name: str
    classnames: list
    samples: object  # a callable: webdataset and datasets stream, the others return a list
    count: int | None = None
    problems: list = dataclasses.field(default_factory=list)


def read_classnames(path: str) -> list[str]:
    """Class names from a JSON list, a JSON object {index: name} or a text file of one name per line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TaskError(f"{path}: no such class-name file")
    if path.lower().endswith(".json"):
        data = read_json(path)
        if isinstance(data, dict):
            try:
                by_index = {int(k): str(v) for k, v in data.items()}
            except ValueError:
                raise TaskError(f"{path}: a class-name object needs integer keys (class indices)") from None
            if sorted(by_index) != list(range(len(by_index))):
                raise TaskError(f"{path}: class indices must run 0..{len(by_index) - 1} without gaps")
            names = [by_index[i] for i in range(len(by_index))]
        elif isinstance(data, list):
            names = [str(v) for v in data]
        else:
            raise TaskError(f"{path}: expected a JSON list of class names or an object index -> name")
    else:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    if not names or not all(n.strip() for n in names):
        raise TaskError(f"{path}: no class names (or an empty one)")
    if len(set(names)) != len(names):
        raise TaskError(f"{path}: class names repeat")
    return names


def open_labelled(
    source: str,
    layout: str = "auto",
    classnames: str | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
) -> LabelledImages:
    """LabelledImages from `source` in `layout` (auto: a folder of class folders, a .csv/.jsonl
    table, a .tar shard pattern or a folder of shards, or a save_to_disk directory)."""
    source = os.fspath(source)
    names = read_classnames(classnames) if classnames else None
    if layout not in LAYOUTS:
        raise TaskError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = _detect(source)
    reader = {"folder": _image_folder, "table": _table, "webdataset": _webdataset, "hf": _hf_dataset}[layout]
    return reader(source, names, image_key, label_key)


def _detect(source) -> str:
    if any(ch in source for ch in "{*?") or source.endswith(".tar"):
        return "webdataset"
    if not os.path.exists(source):
        raise TaskError(f"{source}: no such file or directory")
    if os.path.isfile(source):
        if source.lower().endswith((".csv", ".jsonl", ".ndjson")):
            return "table"
        raise TaskError(f"{source}: expected a .csv or .jsonl table, .tar shards or a folder")
    if any(os.path.isfile(os.path.join(source, name)) for name in ("dataset_info.json", "dataset_dict.json")):
        return "hf"
    if glob.glob(os.path.join(glob.escape(source), "*.tar")):
        return "webdataset"
    return "folder"


def _image_folder(root, names, image_key, label_key):
    from clip.tasks.embed import list_images

    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not folders:
        raise TaskError(f"{root}: no class sub-folders (an ImageFolder has one folder per class)")
    if names is not None and len(names) != len(folders):
        raise TaskError(f"{root}: {len(folders)} class folders but {len(names)} class names in the mapping")
    samples = [
        (f"{folder}/{key}", os.path.join(root, folder, *key.split("/")), index)
        for index, folder in enumerate(folders)
        for key in list_images(os.path.join(root, folder))
    ]
    if not samples:
        raise TaskError(f"{root}: the class folders hold no files")
    classnames = names or [folder.replace("_", " ").strip() for folder in folders]
    return LabelledImages(os.path.basename(os.path.normpath(root)), classnames, lambda: samples, len(samples))


def _table(path, names, image_key, label_key):
    base = os.path.dirname(os.path.abspath(path))
    records, problems = _table_records(path)
    rows = []
    for where, record in records:
        image_col = image_key or next((k for k in IMAGE_KEYS if k in record), None)
        label_col = label_key or next((k for k in LABEL_KEYS if k in record), None)
        if image_col not in record or label_col not in record:
            problems.append(
                f"{where}: needs an image column ({image_key or ', '.join(IMAGE_KEYS)}) "
                f"and a label column ({label_key or ', '.join(LABEL_KEYS)})"
            )
            continue
        try:
            image = path_inside(base, str(record[image_col]).strip(), "image")
        except ValueError as err:
            problems.append(f"{where}: {err}")
            continue
        rows.append((where, image, str(record[label_col]).strip()))
    if not rows:
        raise TaskError(
            f"{path}: no usable (image, label) rows" + (f"; first problem: {problems[0]}" if problems else "")
        )
    classnames, index_of = _label_indices([label for _, _, label in rows], names, path)
    samples = [(os.path.relpath(image, base), image, index_of(label)) for _, image, label in rows]
    name = os.path.splitext(os.path.basename(path))[0]
    return LabelledImages(name, classnames, lambda: samples, len(samples), problems)


def _table_records(path):
    records, problems = [], []
    with open(path, encoding="utf-8", newline="") as f:
        if path.lower().endswith(".csv"):
            for number, row in enumerate(csv.DictReader(f), start=2):
                records.append((f"{path}:{number}", {k.strip().lower(): v for k, v in row.items() if k}))
            return records, problems
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{path}:{number}: not valid JSON ({err.msg})")
                continue
            if isinstance(record, dict):
                records.append((f"{path}:{number}", {str(k).lower(): v for k, v in record.items()}))
            else:
                problems.append(f"{path}:{number}: expected a JSON object")
    return records, problems


def _label_indices(labels, names, where):
    """(classnames, label -> index): labels are names (classes: the mapping, else the sorted
    distinct labels) or, with a mapping, indices into it."""
    if names is None:
        classnames = sorted(set(labels))
        position = {name: i for i, name in enumerate(classnames)}
        return classnames, position.__getitem__
    position = {name: i for i, name in enumerate(names)}

    def index_of(label):
        if label in position:
            return position[label]
        if label.isdigit() and int(label) < len(names):
            return int(label)
        raise TaskError(
            f"{where}: label {label!r} is neither a class name of the mapping nor an index below {len(names)}"
        )

    return names, index_of


def _webdataset(source, names, image_key, label_key):
    try:
        import webdataset as wds
    except ImportError:
        raise TaskError("reading webdataset shards needs the webdataset package: pip install webdataset") from None
    from PIL import Image

    if os.path.isdir(source):
        shards = sorted(glob.glob(os.path.join(glob.escape(source), "*.tar")))
    elif any(ch in source for ch in "*?"):
        shards = sorted(glob.glob(source))
    else:
        shards = [source] if "{" not in source else list(wds.shardlists.expand_urls(source))
    missing = [s for s in shards if not os.path.isfile(s)]
    if not shards or missing:
        raise TaskError(f"{source}: no webdataset shards found" + (f" ({missing[0]} is missing)" if missing else ""))
    key = label_key or "cls"
    if names is None:
        raise TaskError(f"{source}: a webdataset needs the class names (--classnames FILE, in label-index order)")

    def samples():
        for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
            name = sample.get("__key__", "?")
            image_field = image_key or next((e for e in WDS_IMAGE_EXTENSIONS if e in sample), None)
            if image_field not in sample or key not in sample:
                yield name, None, f"no image ({image_key or '/'.join(WDS_IMAGE_EXTENSIONS)}) or no {key!r} field"
                continue
            label = sample[key].decode("utf-8").strip() if isinstance(sample[key], bytes) else str(sample[key]).strip()
            try:
                target = int(label) if label.isdigit() else names.index(label)
            except ValueError:
                yield name, None, f"label {label!r} is not a class index or name"
                continue
            if not 0 <= target < len(names):
                yield name, None, f"label {target} is out of range for {len(names)} classes"
                continue
            try:
                with Image.open(io.BytesIO(sample[image_field])) as image:
                    yield name, image.convert("RGB"), target
            except (OSError, ValueError, SyntaxError) as err:
                yield name, None, f"not an image PIL can read ({err})"

    # the dataset's name: the folder, or the shards' common stem ("val" for val-{000000..000009}.tar)
    stem = os.path.basename(os.path.normpath(source)).split("{")[0].split("*")[0].removesuffix(".tar").rstrip("-_.")
    return LabelledImages(stem or "webdataset", names, samples)


def _hf_dataset(path, names, image_key, label_key):
    try:
        import datasets
    except ImportError:
        raise TaskError(
            f"{path}: reading a Hugging Face datasets directory needs the datasets package: pip install datasets"
        ) from None
    data = datasets.load_from_disk(path)
    if isinstance(data, datasets.DatasetDict):
        split = "test" if "test" in data else ("validation" if "validation" in data else next(iter(data)))
        data = data[split]
    image_col = image_key or next((c for c in data.column_names if c in ("image", "img")), None)
    label_col = label_key or next((c for c in data.column_names if c in LABEL_KEYS), None)
    if image_col not in data.column_names or label_col not in data.column_names:
        raise TaskError(f"{path}: needs an image column and a label column; it has {', '.join(data.column_names)}")
    feature = data.features[label_col]
    classnames = names or [n.replace("_", " ") for n in getattr(feature, "names", [])]
    if not classnames:
        raise TaskError(f"{path}: the label column is not a ClassLabel; give the class names (--classnames FILE)")

    def samples():
        for i, row in enumerate(data):
            yield f"{i}", row[image_col].convert("RGB"), int(row[label_col])

    return LabelledImages(os.path.basename(os.path.normpath(path)), classnames, samples, len(data))
