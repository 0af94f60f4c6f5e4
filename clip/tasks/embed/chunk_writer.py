"""The chunk writer: each chunk's files written atomically, then the manifest that names them (the
commit point), in the layout of clip.tasks.embed.layout.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from clip.common.io import atomic_path, atomic_write_json, write_safetensors
from clip.tasks.embed.inputs import MANIFEST
from clip.tasks.embed.layout import chunk_entry, manifest_on_disk


class ChunkWriter:
    """Appends chunks to an embedding directory; the manifest is rewritten (small) after each."""

    def __init__(self, out: str, manifest: dict) -> None:
        self.out, self.manifest = out, manifest

    def write(
        self,
        vectors: np.ndarray,
        keys: Sequence[str],
        skipped: Sequence[dict],
        rows: list[dict],
        texts: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        text_vectors: np.ndarray | None = None,
    ) -> None:
        """One chunk: vectors (n, D), their keys, the inputs skipped meanwhile, the metadata rows,
        the texts (text kind), the sources (inputs other than folders), and the caption vectors
        (--texts-too). Written only when it holds something; then the manifest that names it."""
        manifest, out = self.manifest, self.out
        if not len(keys) and not skipped:
            self._commit()
            return
        index = manifest["next_chunk"]
        side = {"keys": list(keys), "skipped": list(skipped)}
        if texts is not None:
            side["texts"] = list(texts)
        if sources is not None:
            side["sources"] = list(sources)
        entry = chunk_entry(manifest, index, len(keys))
        atomic_write_json(os.path.join(out, entry["keys"]), side)
        vectors = np.asarray(vectors, np.float32).reshape(len(keys), manifest["dim"])
        self._save(entry["file"], vectors)
        emb_dtype = np.dtype(manifest["emb_dtype"])
        if "text_file" in entry:
            self._save(entry["text_file"], np.asarray(text_vectors, np.float32))
        if "img_emb" in entry:
            _save_npy(os.path.join(out, entry["img_emb"]), vectors.astype(emb_dtype))
        if "text_emb" in entry:
            text_emb = vectors if manifest["kind"] == "text" else text_vectors
            _save_npy(os.path.join(out, entry["text_emb"]), np.asarray(text_emb).astype(emb_dtype))
        if "metadata" in entry:
            write_parquet(os.path.join(out, entry["metadata"]), rows)
        manifest["chunks"].append(entry)
        manifest["count"] += len(keys)
        manifest["skipped_count"] += len(skipped)
        manifest["next_chunk"] = index + 1
        self._commit()

    def _save(self, name: str, vectors: np.ndarray) -> None:
        path = os.path.join(self.out, name)
        if name.endswith(".safetensors"):
            write_safetensors({"embeddings": vectors}, path)
        else:
            _save_npy(path, vectors)

    def _commit(self) -> None:
        atomic_write_json(os.path.join(self.out, MANIFEST), manifest_on_disk(self.manifest))  # the commit point


def _save_npy(path: str, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def write_parquet(path: str, rows: list[dict[str, Any]]) -> None:
    """clip-retrieval's metadata file; fields whose types differ between rows are written as text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        fixed = ("key", "image_path", "caption", "width", "height")
        table = pa.Table.from_pylist(
            [{k: v if k in fixed or v is None else str(v) for k, v in row.items()} for row in rows]
        )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
