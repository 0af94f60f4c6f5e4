"""The embedding job on a Ray cluster: Ray Data decodes (CPU tasks) and an actor pool of encoders
embeds (one per GPU, or CPU actors); this process writes the same directory layout and manifest
as a local run, so resume, `clip search` and --shard work on it unchanged.

    from clip.tasks import load_encoder
    from clip.tasks.embed.ray_job import embed_to_dir_ray
    embed_to_dir_ray(load_encoder("openai/clip-vit-base-patch32"), "photos/", "photos.emb", address="auto")

Needs the optional extra clip[ray]. The encoder given here only names the model (and checks the
directory); each actor loads the same weights itself and must find the same fingerprint.
"""

from __future__ import annotations

import json

import numpy as np

from clip.tasks.backends import TaskError
from clip.tasks.embed.decode import crop_spec, decode_crop
from clip.tasks.embed.inputs import Item
from clip.tasks.embed.job import Job


class _Decode:
    """Ray Data stage: a batch of items -> uint8 crops (or the reason an item failed)."""

    def __init__(self, spec):
        self.spec = spec

    def __call__(self, batch: dict) -> dict:
        count = len(batch["key"])
        crops = np.zeros((count, *self.spec.shape), np.uint8)
        width, height, errors = np.zeros(count, np.int64), np.zeros(count, np.int64), []
        for i in range(count):
            error = batch["error"][i] or None
            if error is None:
                path = batch["path"][i] or None
                data = batch["data"][i] if len(batch["data"][i]) else None
                try:
                    width[i], height[i] = decode_crop(path, data, self.spec, crops[i])
                except ValueError as err:
                    error = str(err)
            errors.append(error or "")
        return {"key": batch["key"], "crop": crops, "width": width, "height": height, "error": np.array(errors, object)}


class _Encode:
    """Ray Data actor: loads the model once, embeds batches of crops (failed rows are passed through)."""

    def __init__(self, model, backend, device, dtype, fingerprint, texts_too):
        from clip.tasks.backends import load_encoder

        self.encoder = load_encoder(model, backend, device=device, dtype=dtype)
        if fingerprint is not None and self.encoder.fingerprint != fingerprint:
            raise TaskError(f"a Ray worker loaded other weights for {model!r} (fingerprint {self.encoder.fingerprint}, "
                            f"expected {fingerprint}); every node must see the same checkpoint")
        self.texts_too = texts_too

    def __call__(self, batch: dict) -> dict:
        ok = np.array([not e for e in batch["error"]], bool)
        vectors = np.zeros((len(ok), self.encoder.dim), np.float32)
        if ok.any():
            vectors[ok] = self.encoder.encode_crops(batch["crop"][ok])  # uint8, normalized on the actor's device
        out = {k: batch[k] for k in ("key", "width", "height", "error")}
        out["vector"] = vectors
        return out


def _record(item: Item) -> dict:
    return {"key": item.key, "path": item.path or "", "data": item.data or b"", "error": item.error or ""}


def embed_to_dir_ray(encoder, source, out, address: str | None = "local", kind: str = "auto", batch_size: int = 64,
                     chunk_size: int = 1024, storage: str = "safetensors", overwrite: bool = False,
                     workers: int | None = None, progress: bool = False, shard: tuple[int, int] = (0, 1),
                     image_column: str | None = None, caption_column: str | None = None, texts_too: bool = False,
                     emb_dtype: str = "float16", draft: bool = False, actors: int | None = None) -> dict:
    """embed_to_dir on Ray (same arguments and summary). address: a cluster ("auto", "ray://host:10001",
    "host:6379"), or "local"/None to start one here; a Ray already initialised in this process is used
    as it is. actors: encoder actors (default: one per GPU of the cluster, else one). workers: CPUs per
    decode task's share is Ray's to schedule; it is accepted for symmetry and ignored."""
    try:
        import ray
    except ImportError:
        raise TaskError("--ray needs Ray Data: pip install 'clip[ray]'") from None
    spec = crop_spec(encoder.processor.image_processor, draft)
    if spec is None:
        raise TaskError("--ray needs a processor that resizes, center-crops and converts to RGB (every CLIP checkpoint's)")
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=None if address in (None, "local") else address, log_to_driver=False,
                     include_dashboard=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise TaskError(f"cannot reach the Ray cluster at {address!r}: {str(err).splitlines()[0]}") from None
    try:
        job = Job(encoder, source, out, kind, chunk_size, storage, overwrite, shard, image_column, caption_column,
                  texts_too, emb_dtype)
        if job.collection.kind != "image":
            raise TaskError(f"{source}: --ray embeds images; embed a text file without it")
        with job:
            _run(ray, job, encoder, spec, batch_size, actors, texts_too)
            return job.finish()
    finally:
        if started:
            ray.shutdown()


def _run(ray, job, encoder, spec, batch_size, actors, texts_too):
    items = {}
    records = []
    for item in job.todo():
        items[item.key] = item
        records.append(_record(item))
    if not records:
        return
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = actors or max(1, gpus)
    dataset = ray.data.from_items(records)
    dataset = dataset.map_batches(_Decode, fn_constructor_args=(spec,), batch_size=batch_size, concurrency=1)
    dataset = dataset.map_batches(
        _Encode, batch_size=batch_size, concurrency=actors, num_gpus=1 if gpus else 0,
        fn_constructor_args=(None if encoder.model is None else str(encoder.model), encoder.backend,
                             "cuda" if gpus else "cpu", encoder.dtype, encoder.fingerprint, texts_too),
    )
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        finished, vectors, failures = [], [], []
        for key, width, height, error, vector in zip(batch["key"], batch["width"], batch["height"], batch["error"],
                                                     batch["vector"]):
            item = items.pop(str(key))
            if error:
                failures.append((item, str(error)))
            else:
                finished.append((item, (int(width), int(height))))
                vectors.append(vector)
        captions = encoder.embed_texts([item.caption or "" for item, _ in finished]) if texts_too and finished else None
        job.add_images(finished, np.stack(vectors) if vectors else np.zeros((0, encoder.dim), np.float32), failures, captions)
    if items:
        raise TaskError(f"Ray returned no result for {len(items)} input(s), e.g. {json.dumps(next(iter(items)))}")
