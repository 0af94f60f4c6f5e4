"""An embedding job's inputs as a Ray Data dataset, listed and read on the cluster by Ray's own readers.

    folder        ray.data.read_binary_files(folder, include_paths=True, file_extensions=images)
    one image     ray.data.read_binary_files(path, include_paths=True)
    webdataset    ray.data.read_webdataset(shards, decoder=None): raw member bytes, grouped by key
    tables        ray.data.read_parquet / read_csv / read_json, zipped with ray.data.range for row numbers

Each becomes rows of RECORD_FIELDS with the keys, sources, paths, captions, metadata and skip
reasons clip.tasks.embed.inputs gives a local run (the same per-item functions: shards._item,
tables.row_item), less the keys the embedding directory holds already and those of other shards
(--shard), so a Ray run and a local run resume each other.

Where Ray's listing differs from scan_folder: names that start with "_" at the top of a folder are
left out (Ray Data's rule, as "." for hidden ones), and what is not a regular file (a named pipe, a
broken link) is not listed at all rather than listed as skipped.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from clip.tasks.backends import TaskError
from clip.tasks.embed.inputs import IMAGE_SUFFIXES, MANIFEST, Collection, Item

RECORD_FIELDS = ("key", "source", "path", "data", "caption", "meta", "error")
ROW_NUMBER = "__clip_row_number__"  # the column zipped onto a table's rows


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("key", pa.string()),
            ("source", pa.string()),
            ("path", pa.string()),
            ("data", pa.binary()),
            ("caption", pa.string()),
            ("meta", pa.string()),
            ("error", pa.string()),
        ]
    )


def _records(items, done, shard):
    """A pyarrow table of the items still to embed (not in `done`, in `shard`)."""
    import pyarrow as pa

    from clip.tasks.embed.job import in_shard

    rows = [
        {
            "key": item.key,
            "source": item.source,
            "path": item.path or "",
            "data": item.data or b"",
            "caption": item.caption,
            "meta": json.dumps(item.meta) if item.meta else "",
            "error": item.error or "",
        }
        for item in items
        if item.key not in done and in_shard(item.key, shard)
    ]
    return pa.Table.from_pylist(rows, schema=_schema())


def item_of(row: dict) -> Item:
    """The Item a record (or a result row carrying its fields) stands for, without its bytes.
    Only strings count: a column that is null in a whole block may come back as NaN floats."""

    def text(name):
        value = row.get(name)
        return value if isinstance(value, str) else None

    meta = text("meta")
    return Item(
        str(row["key"]),
        str(row["source"]),
        path=text("path") or None,
        caption=text("caption"),
        meta=json.loads(meta) if meta else None,
        error=text("error") or None,
    )


# --------------------------------------------------------------------- folders and single images


@functools.lru_cache(maxsize=4096)
def _holds_manifest(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, MANIFEST))


def _left_out(key: str, root: str, out_real: str | None) -> bool:
    """What scan_folder does not list: hidden names, embedding directories, the output directory."""
    parts = key.split("/")
    if any(part.startswith(".") for part in parts):
        return True
    for depth in range(1, len(parts)):
        folder = os.path.join(root, *parts[:depth])
        if _holds_manifest(folder) or (out_real is not None and os.path.realpath(folder) == out_real):
            return True
    return False


def _folder_records(batch, root, out_real, done, shard):
    items = []
    for path, data in zip(batch["path"].to_pylist(), batch["bytes"].to_pylist()):
        key = os.path.relpath(path, root).replace(os.sep, "/")
        if not _left_out(key, root, out_real):
            items.append(Item(key, key, path=os.path.join(root, *key.split("/")), data=data))
    return _records(items, done, shard)


def _image_records(batch, done, shard):
    items = [
        Item(os.path.basename(path), os.path.basename(path), path=os.path.abspath(path), data=data)
        for path, data in zip(batch["path"].to_pylist(), batch["bytes"].to_pylist())
    ]
    return _records(items, done, shard)


# --------------------------------------------------------------------- webdataset shards


def _shard_records(batch, done, shard):
    from clip.tasks.embed.shards import _item

    items = []
    for row in batch.to_dict("records"):
        # a member a sample lacks is NaN in its row; Ray's reader keeps the tar's own (webdataset's) keys
        sample = {name: value for name, value in row.items() if isinstance(value, (bytes, str))}
        name = os.path.basename(sample["__url__"].rstrip("/")) or sample["__url__"]
        items.append(_item(sample, name, set()))  # duplicates across shards: found in order by the driver
    return _records(items, done, shard)


# --------------------------------------------------------------------- tables


def _table_records(batch, base, image_column, caption_column, done, shard):
    from clip.tasks.embed.tables import row_item

    items = []
    for row in batch.to_pylist():
        number = row.pop(ROW_NUMBER)
        items.append(row_item(number, row, image_column, caption_column, base))
    return _records(items, done, shard)


def _read_table(ray, path: str):
    lower = path.lower()
    if lower.endswith(".parquet"):
        return ray.data.read_parquet(path, file_extensions=None)
    if lower.endswith((".csv", ".tsv")):
        import pyarrow.csv as pcsv

        delimiter = "\t" if lower.endswith(".tsv") else ","
        return ray.data.read_csv(path, file_extensions=None, parse_options=pcsv.ParseOptions(delimiter=delimiter))
    return ray.data.read_json(path, file_extensions=None)  # pyarrow's JSON reader: one object per line


# --------------------------------------------------------------------- the dataset


def input_dataset(ray: Any, collection: Collection, out: str, done: Iterable[str], shard: Sequence[int]) -> Any:
    """A Ray Data dataset of RECORD_FIELDS rows: the collection's items still to embed. `collection`
    comes from open_collection(..., listing=False): checked, not listed; Ray lists and reads it."""
    options = {"batch_format": "pyarrow", "batch_size": None}
    done = frozenset(done)
    if collection.input == "folder":
        root = collection.root
        out_real = os.path.realpath(out) if out else None
        files = ray.data.read_binary_files(
            root, include_paths=True, file_extensions=[s.lstrip(".") for s in IMAGE_SUFFIXES]
        )
        return files.map_batches(
            _folder_records, fn_kwargs={"root": root, "out_real": out_real, "done": done, "shard": shard}, **options
        )
    if collection.input == "image":
        path = os.path.join(collection.root, next(collection.iterate()).key)  # the one image
        files = ray.data.read_binary_files(path, include_paths=True)
        return files.map_batches(_image_records, fn_kwargs={"done": done, "shard": shard}, **options)
    if collection.input == "webdataset":
        from clip.tasks.embed.shards import expand_shards

        urls = expand_shards(collection.root)
        if any(url.startswith("pipe:") for url in urls):
            raise TaskError(
                f"{collection.root}: --ray reads shards through pyarrow's file systems (local, s3://, "
                "gs://, https://); a pipe: command is for a local run"
            )
        samples = ray.data.read_webdataset(urls, decoder=None, file_extensions=None)
        # pandas: the reader's own block format, whose NaN for a member some samples lack has no arrow type
        return samples.map_batches(
            _shard_records, fn_kwargs={"done": done, "shard": shard}, **{**options, "batch_format": "pandas"}
        )
    if collection.input == "table":
        assert collection.columns is not None  # a table's collection always names its columns
        image_column, caption_column = collection.columns
        table = _read_table(ray, collection.root)
        # a row's key is its number: Ray's readers carry no row index, so zip one on (same row count).
        # zip relies on the order of rows, which the caller makes deterministic (preserve_order);
        # Ray 2.60 warns that zip goes in 2.64 (constraints.txt pins 2.60)
        numbers = ray.data.range(table.count()).rename_columns({"id": ROW_NUMBER})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = table.zip(numbers)
        base = os.path.dirname(collection.root)
        return table.map_batches(
            _table_records,
            fn_kwargs={
                "base": base,
                "image_column": image_column,
                "caption_column": caption_column,
                "done": done,
                "shard": shard,
            },
            **options,
        )
    raise TaskError(f"{collection.root}: --ray embeds images (a folder, an image, webdataset shards or a table)")
