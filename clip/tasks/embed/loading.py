"""Reading an embedding directory back: load_embeddings, validated in clip.index.embeddings (which
also reads clip-retrieval's img_emb/ + metadata/ layout)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clip.tasks.embed.pipeline import Embeddings


def load_embeddings(
    path: str | os.PathLike[str] | list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...],
    kind: str | None = None,
) -> Embeddings:
    """The vectors and sources of an embedding directory written by `embed_to_dir` / `clip embed` (or
    in clip-retrieval's img_emb/ + metadata/ layout), or of several (a list: the shards of one input),
    in the order given.

    Sources are absolute image paths (a shard member or a table's path for those inputs), or the
    texts for a text file; a partial (interrupted) directory loads what is finished. Several
    directories must hold vectors of the same weights, kind and width, and no input twice. Everything
    read is validated: a damaged directory is one TaskError naming the file.
    """
    from clip.index.embeddings import load_embeddings as load

    return load(path, kind)
