"""Tables of image paths (parquet, CSV/TSV, JSONL), as img2dataset and clip-retrieval users keep them.

The image column is `--image-column` or the first of image_path, filepath, path, url, image; the
caption column `--caption-column` or the first of caption, text, title (optional). Relative paths
are relative to the table's folder; URLs (https://, s3://) are read through fsspec. The other
columns travel into the metadata parquet.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from clip.tasks.backends import TaskError
from clip.tasks.embed.inputs import CAPTION_COLUMNS, IMAGE_COLUMNS, Collection, Item, regular_file_error

if TYPE_CHECKING:
    import pyarrow as pa


def read_table(path: str) -> pa.Table:
    """The table as a pyarrow Table; a file that is not one is a TaskError naming it."""
    try:
        import pyarrow as pa
    except ImportError:
        raise TaskError(f"{path}: reading tables needs pyarrow: pip install 'clip[data]'") from None

    lower = path.lower()
    try:
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if lower.endswith((".csv", ".tsv")):
            import pyarrow.csv as pcsv

            delimiter = "\t" if lower.endswith(".tsv") else ","
            return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
        import pyarrow.json as pjson

        return pjson.read_json(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise TaskError(
            f"{path}: not a readable table ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None


def read_schema(path: str) -> pa.Schema:
    """The table's schema (its column names), reading as little as the format allows: a parquet
    footer, the first block of a CSV or JSONL file."""
    import pyarrow as pa

    lower = path.lower()
    try:
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_schema(path)
        if lower.endswith((".csv", ".tsv")):
            import pyarrow.csv as pcsv

            delimiter = "\t" if lower.endswith(".tsv") else ","
            with pcsv.open_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter)) as reader:
                return reader.schema
        import pyarrow.json as pjson

        with pjson.open_json(path) as reader:
            return reader.schema
    except (pa.ArrowException, OSError, ValueError) as err:
        raise TaskError(
            f"{path}: not a readable table ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None


def _column(table, path: str, wanted, candidates, what: str, required: bool):
    names = list(getattr(table, "schema", table).names)  # a Table's or a Schema's column names
    if wanted is not None:
        if wanted not in names:
            raise TaskError(f"{path}: no column {wanted!r} (columns: {', '.join(names) or 'none'})")
        return wanted
    found = next((name for name in candidates if name in names), None)
    if found is None and required:
        raise TaskError(
            f"{path}: no {what} column (looked for {', '.join(candidates)}; columns: "
            f"{', '.join(names) or 'none'}); name it with --image-column"
        )
    return found


def table_collection(
    path: str, image_column: str | None = None, caption_column: str | None = None, listing: bool = True
) -> Collection:
    """The table's rows as items; listing=False checks the file and its columns only (the rows are
    read elsewhere, by Ray Data: clip.tasks.embed.ray_readers) and leaves the items empty."""
    if not os.path.isfile(path):
        raise TaskError(f"{path}: no such file")
    table = read_table(path) if listing else read_schema(path)
    image_column = _column(table, path, image_column, IMAGE_COLUMNS, "image path", True)
    caption_column = _column(table, path, caption_column, CAPTION_COLUMNS, "caption", False)
    if listing and table.num_rows == 0:
        raise TaskError(f"{path}: the table has no rows")
    base = os.path.dirname(os.path.abspath(path))
    rows = table.to_pylist() if listing else []
    items = [row_item(number, row, image_column, caption_column, base) for number, row in enumerate(rows)]
    return Collection(
        "image",
        "table",
        os.path.abspath(path),
        items,
        len(items) if listing else None,
        has_captions=caption_column is not None,
        columns=(image_column, caption_column),
    )


def row_item(number: int, row: dict, image_column: str, caption_column: str | None, base: str) -> Item:
    """The item of row `number` (a dict of its values); `base`: the table's folder, for relative paths."""
    value = row.get(image_column)
    caption = row.get(caption_column) if caption_column else None
    meta = {k: v for k, v in row.items() if k not in (image_column, caption_column)}
    meta = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}
    key = str(number)
    if not isinstance(value, str) or not value.strip():
        return Item(
            key,
            f"row {number}",
            caption=_text(caption),
            meta=meta,
            error=f"row {number}: no path in column {image_column!r}",
        )
    if "://" in value:
        return Item(key, value, path=value, caption=_text(caption), meta=meta)
    full = value if os.path.isabs(value) else os.path.join(base, value)
    error = None
    if not os.path.exists(full):
        error = f"no such file: {value}"
    elif regular_file_error(full):
        error = regular_file_error(full)
    return Item(key, value, path=full, caption=_text(caption), meta=meta, error=error)


def _text(value):
    return None if value is None else str(value)
