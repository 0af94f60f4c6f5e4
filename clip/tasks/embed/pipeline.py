"""The in-memory pipeline: items -> decode workers (uint8 crops) -> encoder (normalize on its device), batch by batch.

result = embed_images(encoder, ["a.jpg", "b.png"])   # Embeddings(vectors, sources, skipped)
vectors = embed_texts(encoder, ["a dog", "a cat"])      # (2, D) numpy, as encoder.embed_texts
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from clip.errors import InputError
from clip.tasks.backends import Encoder, ImageSource, TaskError, as_tensors, nonfinite_rows
from clip.tasks.embed.decode import Decoder, crop_spec, default_workers
from clip.tasks.embed.inputs import Item, regular_file_error

DECODE_MODES = ("auto", "process", "thread")
# below this many images, starting worker processes costs more than it saves: threads decode them
PROCESS_THRESHOLD = 256


@dataclasses.dataclass
class Embeddings:
    """vectors[i] (float32, unit length) embeds sources[i]; skipped lists what could not be read."""

    vectors: np.ndarray
    sources: list
    skipped: list = dataclasses.field(default_factory=list)  # [{"source": ..., "reason": ...}]
    kind: str = "image"
    manifest: dict | None = None
    # clip-retrieval's string columns ("captions", "urls") when a directory of that layout holds them
    columns: dict[str, list[str]] | None = None

    def __len__(self):
        return len(self.sources)


def load_image(source: ImageSource) -> Image.Image:
    """A decoded RGB PIL image from a path, a PIL image or a numpy HxW / HxWxC array; errors say
    what is wrong with the file."""
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, np.ndarray):
        return image_from_array(source)
    reason = regular_file_error(source) if os.path.exists(source) or os.path.islink(source) else None
    if reason:  # a named pipe would block the open forever
        raise InputError(f"{os.fspath(source)}: {reason}")
    try:
        with Image.open(source) as image:
            image.load()  # decode now: truncated files fail here, not later
            return image.convert("RGB")
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as err:
        message = str(err) or type(err).__name__
        if isinstance(err, Image.UnidentifiedImageError):
            message = "not an image PIL can read"
        raise InputError(f"{os.fspath(source)}: {message}") from None


def image_from_array(array: ArrayLike, name: str = "image array") -> Image.Image:
    """An RGB PIL image from a numpy HxW or HxWxC (C = 1, 3 or 4) array: uint8 as it is, other
    numbers as transformers' to_pil_image reads them (integral values in [0, 255] as they are,
    fractions in [0, 1] times 255, here rounded rather than cut, so k / 255 gives k back)."""
    array = np.asarray(array)
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))) or array.size == 0:
        raise InputError(f"{name}: an image array must be HxW or HxWxC with C = 1, 3 or 4, got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array) or not np.all(np.isfinite(array)):
            raise InputError(f"{name}: pixel values must be finite real numbers, got dtype {array.dtype}")
        low, high = float(array.min()), float(array.max())
        if np.allclose(array, np.round(array)) and low >= 0 and high <= 255:
            array = np.round(array).astype(np.uint8)
        elif low >= 0 and high <= 1:
            array = np.round(array * 255).astype(np.uint8)
        else:
            raise InputError(
                f"{name}: pixel values must be integers in [0, 255] or fractions in [0, 1], got [{low}, {high}]"
            )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")


def source_name(source: ImageSource, position: int) -> str:
    """What to call an input image in results: its path, or "image <position>" for an image object or array."""
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"image {position}"


def finite_rows(encoder: Encoder, batch: np.ndarray, indices: Sequence[Any]) -> tuple[list[int], list[tuple[Any, str]]]:
    """(the rows of `batch` that are finite, [(index, reason)] for the others): a NaN or inf vector
    (a float16 overflow, damaged weights) is skipped and named, never written or ranked."""
    bad = set(nonfinite_rows(batch).tolist())
    reason = f"the model's vector is {encoder.nonfinite_reason()}" if bad else ""
    return [row for row in range(len(indices)) if row not in bad], [(indices[row], reason) for row in sorted(bad)]


def choose_mode(decode: str, count: int | None, batch_size: int) -> str:
    if decode not in DECODE_MODES:
        raise TaskError(f"unknown decode mode {decode!r}; choose {', '.join(DECODE_MODES)}")
    if decode != "auto":
        return decode
    if "jax" in sys.modules:  # JAX warns on every fork (its threads); threads decode without that noise
        return "thread"
    return "process" if count is None or count > max(PROCESS_THRESHOLD, 2 * batch_size) else "thread"


def image_batches(
    encoder: Encoder,
    items: Iterable[Item],
    batch_size: int = 64,
    workers: int | None = None,
    prefetch: int | None = None,
    decode: str = "auto",
    draft: bool = False,
    count: int | None = None,
) -> Iterator[tuple[list[tuple[Item, tuple[int, int]]], np.ndarray, list[tuple[Item, str]]]]:
    """Yield (done, images, failures) per batch of `items` (Item objects), in order.

    done: [(item, (width, height))] for the rows of images: (n, H, W, 3) uint8 crops (resized and
    center-cropped; encoder.encode_crops rescales and normalizes them on the model's device), or
    (n, 3, H, W) float32 pixel values for a processor configured unlike CLIP's; encode_batch takes
    either. failures: [(item, reason)]. Decoding runs `prefetch` images (default 4 batches) ahead
    of the consumer, so the next batches decode while the model runs on this one.
    """
    if batch_size < 1:
        raise TaskError(f"batch size must be at least 1, got {batch_size}")
    processor = encoder.processor.image_processor
    spec = crop_spec(processor, draft)
    if spec is None:  # a processor configured unlike CLIP's: let it do everything
        yield from _processor_batches(processor, items, batch_size, encoder.image_size)
        return
    slots = max(prefetch or 4 * batch_size, batch_size)
    mode = choose_mode(decode, count, batch_size)
    with Decoder(spec, slots, workers, mode) as decoder:
        # a few images per message to a worker: enough to hide its cost, few enough to keep all busy
        group = max(1, min(16, batch_size // (2 * (workers or default_workers()))))
        source = iter(items)
        pending: collections.deque = collections.deque()  # (item, slot, future, position in the future's group)
        free = collections.deque(range(slots))

        def top_up():
            jobs, members = [], []
            while free and len(pending) + len(members) < slots:
                item = next(source, None)
                if item is None:
                    break
                if item.error is not None:
                    members.append((item, None))
                    continue
                slot = free.popleft()
                jobs.append((slot, item.path, item.data))
                members.append((item, slot))
                if len(jobs) == group:
                    _submit(decoder, jobs, members, pending)
                    jobs, members = [], []
            _submit(decoder, jobs, members, pending)

        top_up()
        while pending:
            done, slots_done, failures, used = [], [], [], []  # type: list, list, list, list
            while pending and len(done) + len(failures) < batch_size:
                item, slot, future, position = pending.popleft()
                if future is None:
                    failures.append((item, item.error))
                    continue
                size, reason = future.result()[position]
                used.append(slot)
                if reason is None:
                    done.append((item, size))
                    slots_done.append(slot)
                else:
                    failures.append((item, reason))
            crops = decoder.ring[slots_done]  # a copy: the slots can be reused now
            free.extend(used)
            top_up()  # the next batches decode while the caller runs the model on this one
            yield done, crops, failures


def encode_batch(encoder: Encoder, images: np.ndarray) -> np.ndarray:
    """The unit vectors of one image_batches batch: uint8 crops are rescaled and normalized on the
    model's device (encoder.encode_crops), float pixel values go in as they are."""
    if images.dtype == np.uint8:
        return encoder.encode_crops(images)
    return encoder.encode_images(images)


def _submit(decoder, jobs, members, pending):
    future = decoder.submit(jobs) if jobs else None
    position = 0
    for item, slot in members:
        if slot is None:
            pending.append((item, None, None, 0))
        else:
            pending.append((item, slot, future, position))
            position += 1


def _processor_batches(processor, items, batch_size, image_size):
    batch = []
    for item in list(items) + [None]:
        if item is not None:
            batch.append(item)
        if batch and (item is None or len(batch) == batch_size):
            done, pixels, failures = [], [], []
            for it in batch:
                if it.error is not None:
                    failures.append((it, it.error))
                    continue
                try:
                    image = load_image(it.path) if it.data is None else _image_from_bytes(it.data)
                    pixels.append(processor.preprocess([image], return_tensors="np", num_threads=1)["pixel_values"][0])
                    done.append((it, image.size))
                except ValueError as err:
                    failures.append((it, str(err).removeprefix(f"{it.path}: ")))
            yield done, np.stack(pixels) if pixels else np.zeros((0, 3, *image_size), np.float32), failures
            batch = []


def _image_from_bytes(data):
    import io

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(str(err) or type(err).__name__) from None


class _NoProgress:
    """progress_bar's silent stand-in for tqdm."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        return False

    def update(self, n: int = 1) -> None:
        pass


def progress_bar(total: int | None, enabled: bool, description: str, initial: int = 0) -> Any:
    """A tqdm bar on stderr when enabled and tqdm is installed, otherwise a silent stand-in."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    if not enabled:
        return _NoProgress()
    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        desc=description,
        unit="item",
        dynamic_ncols=True,
        leave=False,
    )


def embed_images(
    encoder: Encoder,
    images: Iterable[ImageSource],
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
    names: Iterable[str] | None = None,
    decode: str = "auto",
    draft: bool = False,
) -> Embeddings:
    """Embed image paths, PIL images or numpy HxWxC arrays; unreadable ones are skipped and listed, never raised.

    names: what to call each image in `sources` (default: the path, or "image <i>" for images and arrays).
    """
    images = list(images)
    names = list(names) if names is not None else [source_name(image, i) for i, image in enumerate(images)]
    vectors = np.zeros((len(images), encoder.dim), np.float32)
    kept = np.zeros(len(images), bool)
    skipped: list[dict[str, str]] = []
    paths = [(i, image) for i, image in enumerate(images) if isinstance(image, (str, os.PathLike))]
    in_memory = [i for i, image in enumerate(images) if not isinstance(image, (str, os.PathLike))]
    with progress_bar(len(images), progress, "embedding images") as bar:
        items = (_path_item(i, path) for i, path in paths)
        for done, batch, item_failures in image_batches(
            encoder, items, batch_size, workers, decode=decode, draft=draft, count=len(paths)
        ):
            rows = [int(item.key) for item, _ in done]
            failures = [(int(item.key), reason) for item, reason in item_failures]
            if rows:
                _keep_finite(encoder, encode_batch(encoder, batch), rows, vectors, kept, failures)
            skipped += [{"source": names[i], "reason": reason} for i, reason in failures]
            bar.update(len(done) + len(failures))
        for start in range(0, len(in_memory), batch_size):
            rows, decoded, failures = [], [], []
            for i in in_memory[start : start + batch_size]:
                try:
                    decoded.append(load_image(images[i]))
                    rows.append(i)
                except ValueError as err:  # an array that is not an image
                    failures.append((i, str(err)))
            if rows:
                _keep_finite(encoder, encoder.encode_images(encoder.preprocess(decoded)), rows, vectors, kept, failures)
            skipped += [{"source": names[i], "reason": reason} for i, reason in failures]
            bar.update(len(rows) + len(failures))
    return Embeddings(vectors[kept], [n for n, k in zip(names, kept) if k], skipped, "image")


def _keep_finite(encoder, batch, rows, vectors, kept, failures):
    """Store the finite rows of `batch` at `rows`; the others join `failures` with their reason."""
    good, failed = finite_rows(encoder, batch, rows)
    vectors[[rows[r] for r in good]] = batch[good]
    kept[[rows[r] for r in good]] = True
    failures += failed


def _path_item(index: int, path: str | os.PathLike[str]) -> Item:
    path = os.fspath(path)
    error = None
    if not os.path.lexists(path):
        error = "no such file"
    elif regular_file_error(path):
        error = regular_file_error(path)
    return Item(str(index), path, path=path, error=error)


def embed_texts(
    encoder: Encoder, texts: Iterable[str], batch_size: int = 256, progress: bool = False, return_tensors: str = "np"
) -> Any:
    """Embed a list of strings (each cut to the model's text length): (M, D) unit float32 vectors,
    the same type as encoder.embed_texts returns (numpy, or the framework's tensor on request)."""
    texts = [str(t) for t in texts]
    vectors = np.zeros((len(texts), encoder.dim), np.float32)
    with progress_bar(len(texts), progress, "embedding texts") as bar:
        for start in range(0, len(texts), batch_size):
            vectors[start : start + batch_size] = encoder.embed_texts(texts[start : start + batch_size], batch_size)
            bar.update(min(batch_size, len(texts) - start))
    return as_tensors(vectors, return_tensors)
