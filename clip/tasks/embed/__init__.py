"""Batch embedding of images and texts, in memory or streamed to disk in resumable chunks.

In memory:

    result = embed_images(encoder, ["a.jpg", "b.png"])   # Embeddings(vectors, sources, skipped)
    vectors = embed_texts(encoder, ["a dog", "a cat"])      # (2, D) numpy, as encoder.embed_texts

To disk (`clip embed`): `embed_to_dir(encoder, "photos/", "photos.emb")`; see layout.py for the
layout (our resumable chunks + manifest, and clip-retrieval's img_emb/text_emb/metadata beside them).

The stages, one module each: inputs (folder, text lines), shards (webdataset), tables (parquet,
CSV, JSONL) -> decode (worker processes, uint8 crops through shared memory) -> pipeline
(normalize, the encoder) -> store and chunk_writer (manifest, chunks, clip-retrieval files) ->
job (resume, shards of the input); ray_job runs the same job on a Ray cluster; loading reads a directory back.
An input that cannot be read is skipped and listed, never fatal.
"""

from clip.tasks.embed.inputs import (
    MANIFEST,
    TEXT_SUFFIXES,
    Collection,
    Item,
    detect_kind,
    list_images,
    open_collection,
    read_lines,
    scan_folder,
)
from clip.tasks.embed.job import embed_to_dir, in_shard, parse_shard
from clip.tasks.embed.loading import load_embeddings
from clip.tasks.embed.pipeline import (
    Embeddings,
    embed_images,
    embed_texts,
    encode_batch,
    finite_rows,
    image_batches,
    image_from_array,
    load_image,
    progress_bar,
    source_name,
)
from clip.tasks.embed.store import FORMAT_VERSION, LOCK, STORAGES, check_same_weights

__all__ = [
    "FORMAT_VERSION",
    "LOCK",
    "MANIFEST",
    "STORAGES",
    "TEXT_SUFFIXES",
    "Collection",
    "Embeddings",
    "Item",
    "check_same_weights",
    "detect_kind",
    "embed_images",
    "embed_texts",
    "embed_to_dir",
    "encode_batch",
    "finite_rows",
    "image_batches",
    "image_from_array",
    "progress_bar",
    "source_name",
    "in_shard",
    "list_images",
    "load_embeddings",
    "load_image",
    "open_collection",
    "parse_shard",
    "read_lines",
    "scan_folder",
]
