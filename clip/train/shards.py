"""Streaming training input from webdataset shards (`clip train --train-shards`), resumable exactly.

Shards are tar files in webdataset's layout: the members of one sample share a key (the name up to its
first dot, split by the webdataset library's own `base_plus_ext`), an image (jpg, png, ...) and a
caption (txt). Each shard's member offsets are indexed once, from the tar headers only (no image is
read), so that sample n of the stream is one seek.

The stream is resampled with a seed, like webdataset's ResampledShards: draw d reads shard
`rng([seed, d]).integers(shards)` in the order `rng([seed, d, 1]).permutation(its samples)`, and the
stream is the draws one after another, without end. Sample n is a pure function of (seed, shard list,
n), and micro-step m reads samples m*B .. (m+1)*B - 1 (B the global batch; rank r of W its r-th slice).

What a resume guarantees: a run resumed from the checkpoint of micro-step m reads exactly the samples,
in the same order, that the uninterrupted run read from micro-step m on, with any number of loader
workers, provided the shards are the same files (their names, sizes and sample counts are part of the
run's settings: a resume over changed shards is refused). It does not depend on how far any reader
had read ahead when the run stopped: nothing about a reader's position needs saving.
"""

from __future__ import annotations

import bisect
import glob
import os
import tarfile
from typing import TYPE_CHECKING

import numpy as np

from clip.train.common import DataOrder

if TYPE_CHECKING:  # PIL is imported when a sample is read
    from PIL import Image

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "tif", "tiff")
CAPTION_EXTENSIONS = ("txt", "caption", "text")


def expand_shards(spec: str) -> list[str]:
    """A folder (its *.tar), a glob, a brace pattern (webdataset's "shards-{000..009}.tar") or a
    comma-separated list -> the shard paths; each must exist."""
    if os.path.isdir(spec):
        paths = sorted(glob.glob(os.path.join(spec, "*.tar")))
    else:
        from braceexpand import braceexpand  # a dependency of webdataset

        paths = []
        for part in spec.split(","):
            for name in braceexpand(part.strip()):
                paths.extend(sorted(glob.glob(name)) if any(c in name for c in "*?[") else [name])
    missing = [p for p in paths if not os.path.isfile(p)]
    if not paths or missing:
        raise ValueError(
            f"--train-shards {spec}: " + (f"no such shard {missing[0]}" if missing else "names no .tar shard")
        )
    return paths


def index_shard(path: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """[((image offset, size), (caption offset, size)), ...] of the complete samples of one tar shard, in
    file order; members without a partner (an image without a caption, or the reverse) are left out."""
    from webdataset.tariterators import base_plus_ext

    samples: dict[str, dict] = {}
    order = []
    try:
        with tarfile.open(path, "r:") as tar:  # uncompressed tar: members are plain byte ranges
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = base_plus_ext(member.name)
                if key is None:
                    continue
                if key not in samples:
                    samples[key] = {}
                    order.append(key)
                kind = (
                    "image"
                    if ext.lower() in IMAGE_EXTENSIONS
                    else "caption"
                    if ext.lower() in CAPTION_EXTENSIONS
                    else None
                )
                if kind:
                    samples[key][kind] = (member.offset_data, member.size)
    except (tarfile.TarError, OSError) as err:
        raise ValueError(f"{path}: not a readable uncompressed tar shard ({err})") from None
    return [(samples[k]["image"], samples[k]["caption"]) for k in order if len(samples[k]) == 2]


class ShardStream:
    """Sample n -> (PIL RGB image, caption) of the endless resampled stream over `paths` (see the module)."""

    unbounded = True  # common.BatchReader: indices run past len() (one pass's worth of samples)

    def __init__(self, paths: list[str], seed: int) -> None:
        self.paths, self.seed = list(paths), int(seed)
        self.samples = [index_shard(p) for p in self.paths]
        empty = [p for p, s in zip(self.paths, self.samples) if not s]
        if empty:
            raise ValueError(f"{empty[0]}: no (image, caption) sample in this shard")
        self._ends: list[int] = []  # cumulative sample count after each draw so far
        self._draws: list[int] = []

    def __len__(self) -> int:
        return sum(len(s) for s in self.samples)

    def fingerprint(self) -> list:
        """What a resume must find unchanged: each shard's name, size in bytes and sample count."""
        return [[os.path.basename(p), os.path.getsize(p), len(s)] for p, s in zip(self.paths, self.samples)]

    def _draw(self, d: int) -> int:
        while len(self._draws) <= d:
            shard = int(np.random.default_rng([self.seed, len(self._draws)]).integers(len(self.paths)))
            self._draws.append(shard)
            self._ends.append((self._ends[-1] if self._ends else 0) + len(self.samples[shard]))
        return self._draws[d]

    def locate(self, n: int) -> tuple[int, int]:
        """(shard index, sample index within it) of stream sample n."""
        while not self._ends or self._ends[-1] <= n:
            self._draw(len(self._draws))
        d = bisect.bisect_right(self._ends, n)
        shard = self._draws[d]
        start = self._ends[d - 1] if d else 0
        order = np.random.default_rng([self.seed, d, 1]).permutation(len(self.samples[shard]))
        return shard, int(order[n - start])

    def __getitem__(self, n: int) -> tuple[Image.Image, str]:
        from io import BytesIO

        from PIL import Image

        shard, i = self.locate(int(n))
        (image_at, image_size), (caption_at, caption_size) = self.samples[shard][i]
        with open(self.paths[shard], "rb") as f:
            f.seek(image_at)
            image_bytes = f.read(image_size)
            f.seek(caption_at)
            caption = f.read(caption_size).decode("utf-8", errors="replace").strip()
        if not caption:
            raise ValueError(f"{self.paths[shard]}: sample {i} has an empty caption")
        with Image.open(BytesIO(image_bytes)) as image:
            return image.convert("RGB"), caption


class StreamOrder(DataOrder):
    """common.DataOrder for a stream: micro-step m reads samples m*B .. (m+1)*B - 1 (the stream itself is
    resampled with the seed); rank slicing and batching are DataOrder's."""

    def __init__(self, dataset_size: int, global_batch: int, world: int = 1, rank: int = 0) -> None:
        if global_batch % world:
            raise ValueError(f"--batch-size {global_batch} must be divisible by the number of processes ({world})")
        # no seed of its own: the stream (ShardStream) is resampled with the run's seed
        self.size, self.batch, self.world, self.rank = dataset_size, global_batch, world, rank
        self.batches_per_epoch = max(1, dataset_size // global_batch)

    def global_indices(self, micro_step: int) -> np.ndarray:
        return np.arange(micro_step * self.batch, (micro_step + 1) * self.batch)
