"""The embedding job on a Ray cluster: Ray Data lists and reads the inputs with its own readers
(clip.tasks.embed.ray_readers), decodes them to uint8 crops (CPU tasks), and an actor pool of
encoders embeds them (one per GPU, or CPU actors); this process writes the same directory layout
and manifest as a local run, so resume, `clip search` and --shard work on it unchanged.

    from clip.tasks import load_encoder
    from clip.tasks.embed.ray_job import embed_to_dir_ray
    embed_to_dir_ray(load_encoder("openai/clip-vit-base-patch32"), "photos/", "photos.emb", address="auto")

Needs the optional extra clip[ray]. The encoder given here only names the model (and checks the
directory); each actor loads the same weights itself and must find the same fingerprint.
"""

from __future__ import annotations

import os

import numpy as np

from clip.tasks.backends import Encoder, TaskError
from clip.tasks.embed.decode import crop_spec, decode_crop
from clip.tasks.embed.job import Job, Sources
from clip.tasks.embed.ray_readers import RECORD_FIELDS, input_dataset, item_of


def _decode(batch: dict, spec) -> dict:
    """Ray Data stage: records -> uint8 crops, or the reason a record failed. CPU tasks beside GPU
    encoders; with CPU encoders Ray Data fuses it into them (equal resources), each actor then
    decoding its own batches, so no CPU is held by an idle decoder (nor a read task starved)."""
    count = len(batch["key"])
    crops = np.zeros((count, *spec.shape), np.uint8)
    width, height, errors = np.zeros(count, np.int64), np.zeros(count, np.int64), []
    for i in range(count):
        error = batch["error"][i] or None
        if error is None:
            data = batch["data"][i] if len(batch["data"][i]) else None
            try:
                width[i], height[i] = decode_crop(batch["path"][i] or None, data, spec, crops[i])
            except ValueError as err:
                error = str(err)
        errors.append(error or "")
    out = {name: batch[name] for name in RECORD_FIELDS if name != "data"}  # the bytes stay behind
    out.update(crop=crops, width=width, height=height, error=np.array(errors, object))
    return out


class _Encode:
    """Ray Data actor: loads the model once, embeds batches of uint8 crops (normalized on the
    actor's device: Encoder.encode_crops); failed rows pass through with a zero vector."""

    def __init__(self, model, backend, device, dtype, fingerprint):
        from clip.tasks.backends import load_encoder

        self.encoder = load_encoder(model, backend, device=device, dtype=dtype)
        if fingerprint is not None and self.encoder.fingerprint != fingerprint:
            raise TaskError(
                f"a Ray worker loaded other weights for {model!r} (fingerprint {self.encoder.fingerprint}, "
                f"expected {fingerprint}); every node must see the same checkpoint"
            )

    def __call__(self, batch: dict) -> dict:
        ok = np.array([not e for e in batch["error"]], bool)
        vectors = np.zeros((len(ok), self.encoder.dim), np.float32)
        if ok.any():
            vectors[ok] = self.encoder.encode_crops(batch["crop"][ok])
        out = {name: value for name, value in batch.items() if name != "crop"}
        out["vector"] = vectors
        return out


def embed_to_dir_ray(
    encoder: Encoder,
    source: Sources,
    out: str | os.PathLike[str],
    address: str | None = "local",
    kind: str = "auto",
    batch_size: int = 64,
    chunk_size: int = 1024,
    storage: str = "safetensors",
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
    image_column: str | None = None,
    caption_column: str | None = None,
    texts_too: bool = False,
    emb_dtype: str = "float16",
    draft: bool = False,
    actors: int | None = None,
) -> dict:
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
        raise TaskError(
            "--ray needs a processor that resizes, center-crops and converts to RGB (every CLIP checkpoint's)"
        )
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(
                address=None if address in (None, "local") else address,
                log_to_driver=False,
                include_dashboard=False,
                configure_logging=False,
            )
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise TaskError(f"cannot reach the Ray cluster at {address!r}: {str(err).splitlines()[0]}") from None
    try:
        job = Job(
            encoder,
            source,
            out,
            kind,
            chunk_size,
            storage,
            overwrite,
            shard,
            image_column,
            caption_column,
            texts_too,
            emb_dtype,
            listing=False,
        )
        if job.collection.kind != "image":
            raise TaskError(f"{source}: --ray embeds images; embed a text file without it")
        with job:
            _run(ray, job, encoder, spec, batch_size, actors, texts_too)
            return job.finish()
    finally:
        if started:
            ray.shutdown()


def _run(ray, job, encoder, spec, batch_size, actors, texts_too):
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = actors or max(1, gpus)
    dataset = input_dataset(ray, job.collection, job.out, job.done, job.shard)
    dataset = dataset.map_batches(_decode, fn_kwargs={"spec": spec}, batch_size=batch_size, batch_format="numpy")
    dataset = dataset.map_batches(
        _Encode,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if gpus else 0,
        batch_format="numpy",
        fn_constructor_args=(
            None if encoder.model is None else str(encoder.model),
            encoder.backend,
            "cuda" if gpus else "cpu",
            encoder.dtype,
            encoder.fingerprint,
        ),
    )
    context = ray.data.DataContext.get_current()
    ordered, context.execution_options.preserve_order = context.execution_options.preserve_order, True
    seen, read = set(), 0  # in input order: the first sample of a key is embedded, later ones are duplicates
    try:
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            finished, vectors, failures = [], [], []
            for row in range(len(batch["key"])):
                item = item_of({name: batch[name][row] for name in RECORD_FIELDS if name != "data"})
                read += 1
                if job.collection.input == "webdataset":  # as shards._item: a repeated key, whatever the sample holds
                    if item.key in seen:
                        shard_name = item.source.rsplit("/", 1)[0]
                        item.key, item.error = (
                            f"{item.key}@{shard_name}",
                            f"duplicate key {item.key!r}: an earlier sample has it",
                        )
                    else:
                        seen.add(item.key)
                if item.error:  # the reader's or the decoder's reason
                    failures.append((item, item.error))
                else:
                    finished.append((item, (int(batch["width"][row]), int(batch["height"][row]))))
                    vectors.append(batch["vector"][row])
            captions = (
                encoder.embed_texts([item.caption or "" for item, _ in finished]) if texts_too and finished else None
            )
            job.add_images(
                finished, np.stack(vectors) if vectors else np.zeros((0, encoder.dim), np.float32), failures, captions
            )
    except ray.exceptions.RayError as err:  # a reader or an actor failed on the cluster: one line naming the input
        cause = getattr(err, "cause", None)
        lines = str(cause).strip().splitlines()[:1] if cause is not None else str(err).strip().splitlines()[-1:]
        raise TaskError(f"{job.source}: the Ray run failed ({lines[0] if lines else type(err).__name__})") from None
    finally:
        context.execution_options.preserve_order = ordered
    if read == 0 and not job.done and job.shard == (0, 1):
        raise TaskError(f"{job.source}: Ray Data found no images to embed in it")
