"""Decode workers: file or bytes -> uint8 crop (H x W x 3, resized and center-cropped), in processes.

The workers write their crops into one shared-memory ring of slots (no pixels go through a pipe),
and the crops go on to the model's device as uint8 (a quarter of float32's bytes), where
Encoder.encode_crops turns them into the model's float32 input in one gather from `pixel_table`:
a per-channel 256-entry table computed with transformers' arithmetic (float64 rescale, float32
normalize), so the result equals CLIPImageProcessor's float32 output exactly.

`draft=True` lets PIL decode large JPEGs at 1/2, 1/4 or 1/8 scale (DCT scaling) when that still
leaves at least the resize target: much faster on phone photos, slightly different pixels.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import sys
from concurrent.futures import Executor, Future
from multiprocessing import shared_memory
from typing import TypeAlias, cast

import numpy as np
from PIL import Image

from clip.common.image_processor import CLIPImageProcessor
from clip.errors import InputError

# a decode job: (ring slot, path, encoded bytes or None: read the path); its result: ((width, height), None)
# for a crop now in the slot, or (None, the reason it could not be decoded)
DecodeJob: TypeAlias = "tuple[int, str | None, bytes | None]"
DecodeResult: TypeAlias = "tuple[tuple[int, int] | None, str | None]"
_PIL_ERRORS = (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError)


@dataclasses.dataclass(frozen=True)
class CropSpec:
    """What the image processor does before rescaling, as plain data a worker process can take."""

    size: tuple  # (("shortest_edge", 224),) or (("height", h), ("width", w))
    resample: int
    crop: tuple[int, int]  # (height, width)
    draft: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.crop, 3)


def crop_spec(image_processor: CLIPImageProcessor, draft: bool = False) -> CropSpec | None:
    """The spec of a processor that resizes, center-crops and converts to RGB (every CLIP checkpoint's);
    None for one configured otherwise (the caller then uses the processor itself)."""
    p = image_processor
    crop = cast(dict[str, int], p.crop_size)  # a {"height", "width"} dict once the processor has checked it
    if not (p.do_resize and p.do_center_crop and p.do_convert_rgb):
        return None
    return CropSpec(
        tuple(sorted(cast(dict[str, int], p.size).items())), int(p.resample), (crop["height"], crop["width"]), draft
    )


def pixel_table(image_processor: CLIPImageProcessor) -> np.ndarray:
    """(3, 256) float32: the processor's output value of each uint8 value per channel."""
    p = image_processor
    x = np.arange(256, dtype=np.float32)
    if p.do_rescale:
        x = (np.arange(256, dtype=np.float64) * p.rescale_factor).astype(np.float32)
    x = np.broadcast_to(x, (3, 256))
    if p.do_normalize:
        mean = np.asarray(p.image_mean, np.float32).reshape(-1, 1)
        std = np.asarray(p.image_std, np.float32).reshape(-1, 1)
        x = (x - mean) / std
    return np.ascontiguousarray(x, np.float32)


def _resize_target(height: int, width: int, size: dict) -> tuple[int, int]:
    if "height" in size:
        return size["height"], size["width"]
    edge = size["shortest_edge"]  # transformers' rounding: int() truncation
    if width <= height:
        return int(edge * height / width), edge
    return edge, int(edge * width / height)


def _open(path: str | None, data: bytes | None) -> Image.Image:
    if data is not None:
        return Image.open(io.BytesIO(data))
    if path is None:  # every item has one or the other
        raise InputError("neither a file nor encoded bytes to decode")
    if "://" in path:
        import fsspec

        with fsspec.open(path, "rb") as f:
            return Image.open(io.BytesIO(f.read()))
    return Image.open(path)


def decode_crop(path: str | None, data: bytes | None, spec: CropSpec, out: np.ndarray) -> tuple[int, int]:
    """Decode one image into `out` (H x W x 3 uint8); returns its (width, height). Raises ValueError(reason)."""
    size = dict(spec.size)
    try:
        with _open(path, data) as image:
            width, height = image.size
            target_h, target_w = _resize_target(height, width, size)
            if spec.draft and image.format == "JPEG":
                image.draft("RGB", (target_w, target_h))  # the smallest DCT scale still >= the target
            image.load()  # decode now: a truncated file fails here
            rgb = image.convert("RGB")
    except _PIL_ERRORS as err:
        message = str(err) or type(err).__name__
        if isinstance(err, Image.UnidentifiedImageError):
            message = "not an image PIL can read"
        raise InputError(message) from None
    resized = np.asarray(rgb.resize((target_w, target_h), resample=spec.resample))
    crop_h, crop_w = spec.crop
    top, left = (target_h - crop_h) // 2, (target_w - crop_w) // 2
    if top >= 0 and left >= 0:
        out[...] = resized[top : top + crop_h, left : left + crop_w]
    else:  # smaller than the crop: zero padding, as transformers
        out[...] = 0
        src_top, src_left = max(top, 0), max(left, 0)
        dst_top, dst_left = src_top - top, src_left - left
        rows, cols = min(target_h - src_top, crop_h - dst_top), min(target_w - src_left, crop_w - dst_left)
        out[dst_top : dst_top + rows, dst_left : dst_left + cols] = resized[
            src_top : src_top + rows, src_left : src_left + cols
        ]
    return width, height


# --------------------------------------------------------------------- worker processes

_worker: dict = {}  # per worker process: the shared ring and the spec


def _die_with_parent(parent: int):
    """A worker must not outlive a killed parent: a forked one holds the parent's files, the lock of the
    embedding directory among them, and would keep a resumed run out. Linux: PR_SET_PDEATHSIG."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)


def _start_worker(shm_name: str, slots: int, spec: CropSpec, parent: int) -> None:
    _die_with_parent(parent)

    memory = shared_memory.SharedMemory(name=shm_name)
    _worker.update(memory=memory, ring=np.ndarray((slots, *spec.shape), np.uint8, buffer=memory.buf), spec=spec)


def _decode_in_worker(jobs: list[DecodeJob]) -> list[DecodeResult]:
    """[(slot, path, data)] -> [((width, height), None) or (None, reason)]: several per call, as one
    message each way costs more than decoding a thumbnail."""
    results: list[DecodeResult] = []
    for slot, path, data in jobs:
        try:
            results.append((decode_crop(path, data, _worker["spec"], _worker["ring"][slot]), None))
        except ValueError as err:
            results.append((None, str(err)))
    return results


def default_workers() -> int:
    """All cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_method() -> str:
    """fork where there is one (Linux, as torch's DataLoader): the workers start at once and a script
    needs no `if __name__ == "__main__"` guard; they only run PIL and numpy, never the parent's
    framework threads. But once JAX or TensorFlow is loaded, their runtime threads may hold locks at the
    moment of a fork (JAX warns of deadlocks): then spawn (a fresh interpreter whose parent is still
    this process, so PR_SET_PDEATHSIG holds; a forkserver would be the workers' parent instead).
    spawn elsewhere."""
    if "jax" in sys.modules or "tensorflow" in sys.modules:
        return "spawn"
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class Decoder:
    """Decodes items into a ring of `slots` crops, by worker processes ("process", the default) or
    threads ("thread"; PIL releases the GIL for part of the work). submit() takes a group of
    (slot, path, data) and returns a future of one ((width, height), None) or (None, reason) per
    member; a crop is then in ring[slot] until that slot is reused."""

    def __init__(self, spec: CropSpec, slots: int, workers: int | None = None, mode: str = "process") -> None:
        self.spec, self.slots, self.mode = spec, slots, mode
        workers = workers or default_workers()
        self.memory: shared_memory.SharedMemory | None = None  # threads share the ring without shared memory
        self.pool: Executor
        if mode == "process":
            from concurrent.futures import ProcessPoolExecutor

            self.memory = shared_memory.SharedMemory(create=True, size=max(1, slots * int(np.prod(spec.shape))))
            self.ring = np.ndarray((slots, *spec.shape), np.uint8, buffer=self.memory.buf)
            self.pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context(_start_method()),
                initializer=_start_worker,
                initargs=(self.memory.name, slots, spec, os.getpid()),
            )
        elif mode == "thread":
            from concurrent.futures import ThreadPoolExecutor

            self.ring = np.zeros((slots, *spec.shape), np.uint8)
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="clip-decode")
        else:
            raise InputError(f"unknown decode mode {mode!r}; choose process or thread")

    def submit(self, jobs: list[DecodeJob]) -> Future[list[DecodeResult]]:
        if self.mode == "process":
            return self.pool.submit(_decode_in_worker, jobs)
        return self.pool.submit(self._decode_here, jobs)

    def _decode_here(self, jobs: list[DecodeJob]) -> list[DecodeResult]:
        results: list[DecodeResult] = []
        for slot, path, data in jobs:
            try:
                results.append((decode_crop(path, data, self.spec, self.ring[slot]), None))
            except ValueError as err:
                results.append((None, str(err)))
        return results

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.memory is not None:
            del self.ring
            self.memory.close()
            self.memory.unlink()
            self.memory = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
