"""Opening a built index as an EmbeddingIndex, and finding the one that belongs to an embedding directory."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from clip.index import engines
from clip.index.store import StringTable, is_index_dir, read_index_json

if TYPE_CHECKING:
    from clip.tasks.search import EmbeddingIndex

INDEX_SUBDIR = "index"  # where `clip index EMB` puts its index by default


def find_index(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """(the built index to search for `path`, or None; a note when one exists but is not used)."""
    if isinstance(path, (list, tuple)):
        return (None, None) if len(path) != 1 else find_index(path[0])
    path = os.fspath(path)
    if is_index_dir(path):
        return path, None
    inner = os.path.join(path, INDEX_SUBDIR)
    if not is_index_dir(inner):
        return None, None
    from clip.index.build import embedding_state

    info = read_index_json(inner)
    states = [entry.get("state") for entry in info["built_from"] if isinstance(entry, dict)]
    if states == [embedding_state(path)]:
        return inner, None
    return None, (
        f"{inner} was built from an earlier state of {path}; searching exactly (rebuild it with `clip index {path}`)"
    )


def open_index(cls: type[EmbeddingIndex], directory: str | os.PathLike) -> EmbeddingIndex:
    """An instance of `cls` (EmbeddingIndex) over the built index in `directory`: headers read, data
    memory-mapped, so opening costs the same at any size."""
    info = read_index_json(directory)
    index: Any = cls.__new__(cls)  # filled in here, as __init__ would from vectors in memory
    index.engine = engines.open_engine(info["kind"], directory, info["count"], info["dim"], info["params"])
    index.vectors = None
    index.sources = StringTable(directory, "sources", info["count"])
    index.tables = {name: StringTable(directory, name, info["count"]) for name in info["tables"]}
    index.kind = info["embedding_kind"]
    index.manifest = info
    index.note = None
    index.path = os.fspath(directory)
    index._count, index._dim = info["count"], info["dim"]
    return index
