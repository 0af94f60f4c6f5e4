"""What the trainers read: the datasets named by `clip train`'s arguments, and a reader that turns
dataset indices into numpy batches (tokenized captions, preprocessed images)."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clip.train.options import TrainOptions

if TYPE_CHECKING:  # annotations only: these imports would be circular (common) or load the tokenizer early
    from clip.common.config import CLIPConfig
    from clip.common.processor import CLIPProcessor
    from clip.train.common import DataOrder

# An encoder of the evaluation: a list of images or of texts -> their (n, E) embeddings.
EncodeFn = Callable[[Sequence[Any]], np.ndarray]


# -- data ------------------------------------------------------------------------------------------
def build_datasets(args: TrainOptions, image_size: int) -> tuple[Any, Any, dict[str, tuple]]:
    """(train set, held-out set or None, zero-shot tasks) from the parsed `clip train` arguments.

    Zero-shot tasks: {name: (images, label texts, target label index per image)} evaluated with the
    retrieval metrics; the synthetic set measures colour x shape labels on combinations seen in
    training and on the held-out ones, the digits set its ten digit labels.
    """
    from clip import data

    tasks: dict[str, tuple] = {}
    zero_shot_source, shards = getattr(args, "zero_shot_eval", None), getattr(args, "train_shards", None)
    if zero_shot_source:
        from clip.train.zero_shot_eval import folder_task

        tasks[f"zero_shot_{os.path.basename(os.path.normpath(zero_shot_source))}"] = folder_task(zero_shot_source)
    sources = [bool(args.train), bool(args.synthetic), bool(args.digits), bool(shards)]
    if sum(sources) != 1:
        raise ValueError(
            "give exactly one data source: --train FILE_OR_DIR, --train-shards SHARDS, --synthetic N or --digits"
        )
    if shards:
        from clip.train.shards import ShardStream, expand_shards

        return ShardStream(expand_shards(shards), args.seed), None, tasks  # no held-out part of a stream
    if args.synthetic:
        # held-out images come from their own seed: no image is shared with the training set
        train = data.SyntheticShapes(args.synthetic, seed=args.seed, image_size=image_size)
        n_val = int(round(args.synthetic * args.val_fraction))
        val = data.SyntheticShapes(n_val, seed=args.seed + 1_000_003, image_size=image_size) if n_val else None
        seen = [c for c in data.zero_shot_labels()[1] if c not in data.HELD_OUT_COMBOS]
        tasks["zero_shot_seen_combos"] = data.zero_shot_set(
            10 * len(seen), seed=args.seed + 2_000_003, image_size=image_size, combos=seen
        )
        tasks["zero_shot_held_out_combos"] = data.zero_shot_set(
            40 * len(data.HELD_OUT_COMBOS),
            seed=args.seed + 3_000_003,
            image_size=image_size,
            combos=data.HELD_OUT_COMBOS,
        )
        return train, val, tasks
    full = data.DigitsDataset(image_size=image_size) if args.digits else data.load_captions(str(args.train))
    train_idx, val_idx = data.split_indices(len(full), args.val_fraction, args.seed)
    held_out = data.Subset(full, val_idx) if len(val_idx) else None
    # args.digits first: clip.data loads its digits module only when asked for it
    if args.digits and isinstance(full, data.DigitsDataset) and held_out is not None:
        images = [held_out[i][0] for i in range(len(held_out))]
        tasks["zero_shot_digits"] = (images, full.zero_shot_labels(), full.labels[val_idx])
    return data.Subset(full, train_idx), held_out, tasks


# -- shared by the trainers ------------------------------------------------------------
def build_processor(config) -> CLIPProcessor:  # a CLIPConfig: untyped while its max_position_embeddings is undeclared
    """The processor of a model trained from scratch: images at the config's size, CLIP's tokenizer."""
    from clip.common.image_processor import CLIPImageProcessor
    from clip.common.processor import CLIPProcessor
    from clip.common.tokenizer import CLIPTokenizerFast

    size = config.vision_config.image_size
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return CLIPProcessor(
        image_processor, CLIPTokenizerFast(model_max_length=config.text_config.max_position_embeddings)
    )


def build_model_and_processor(
    options: TrainOptions, load: Callable[[str], Any], create: Callable[[CLIPConfig], Any]
) -> tuple[Any, CLIPProcessor]:
    """(model, processor): `load(options.init)` and the checkpoint's processor, or `create(config)` from
    options.config (a named size or a JSON file; "small" by default) and build_processor(config)."""
    from clip.common.config import CLIPConfig
    from clip.common.processor import CLIPProcessor
    from clip.train.sizes import build_config_dict

    if options.init:
        return load(options.init), CLIPProcessor.from_pretrained(options.init)
    config = CLIPConfig.from_dict(build_config_dict(options.config or "small"))
    return create(config), build_processor(config)


def chunked_encoders(
    processor: CLIPProcessor,
    max_length: int,
    image_fn: Callable[[np.ndarray], Any],
    text_fn: Callable[[np.ndarray, np.ndarray], Any],
    batch_size: int = 256,
    pad: bool = False,
) -> tuple[EncodeFn, EncodeFn]:
    """(images -> (n, E) array, texts -> (n, E) array) over a backend's image_fn(float32 NCHW pixels) and
    text_fn(int32 ids, int32 mask), batch_size items at a time. pad: each chunk zero-padded to a power of
    two rows (at most batch_size), so that a jitted encoder compiles once or twice."""

    def chunks(items: Sequence[Any]) -> Iterator[tuple[list[Any], int]]:
        rows = min(batch_size, 1 << max(0, len(items) - 1).bit_length()) if pad else batch_size
        for i in range(0, len(items), rows):
            yield list(items[i : i + rows]), rows

    def padded(array: np.ndarray, rows: int) -> np.ndarray:
        if not pad or len(array) == rows:
            return array
        return np.concatenate([array, np.zeros((rows - len(array), *array.shape[1:]), array.dtype)])

    def images(items: Sequence[Any]) -> np.ndarray:
        out = []
        for chunk, rows in chunks(items):
            pixels = np.asarray(processor.image_processor(chunk, return_tensors="np")["pixel_values"], np.float32)
            out.append(np.asarray(image_fn(padded(pixels, rows)))[: len(chunk)])
        return np.concatenate(out)

    def texts(items: Sequence[Any]) -> np.ndarray:
        out = []
        for chunk, rows in chunks(items):
            tok = processor.tokenizer(
                chunk, padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
            )
            ids, mask = (padded(np.asarray(tok[k], np.int32), rows) for k in ("input_ids", "attention_mask"))
            out.append(np.asarray(text_fn(ids, mask))[: len(chunk)])
        return np.concatenate(out)

    return images, texts


class BatchReader:
    """Dataset indices -> a numpy batch {"input_ids", "attention_mask" (int32), "pixel_values" (float32 NCHW)}.

    An item that cannot be read (a file gone or corrupted since the dataset was listed) is reported
    once and replaced by the next readable item, deterministically, so that a run goes on and a
    resumed run reads exactly what an uninterrupted one did. Safe to call from several threads.
    """

    def __init__(
        self, dataset: Any, processor: CLIPProcessor, max_length: int, report: Callable[[str], None] | None = None
    ) -> None:
        self.dataset, self.processor, self.max_length = dataset, processor, max_length
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not reentrant across threads
        self.report = report or (lambda message: warnings.warn(message, stacklevel=2))
        self.problems: dict[int, str] = {}

    def item(self, index: int) -> tuple[Any, str]:
        """(PIL image, caption) of item `index`, or of the next readable one."""
        size = len(self.dataset)
        endless = getattr(self.dataset, "unbounded", False)  # a stream: indices run on past one pass
        for offset in range(size):
            j = index + offset if endless else (index + offset) % size
            try:
                return self.dataset[j]
            except Exception as err:  # noqa: BLE001 - any unreadable row is skipped, whatever the reason
                if j not in self.problems:
                    self.problems[j] = f"{type(err).__name__}: {err}"
                    self.report(
                        f"clip train: item {j} is unreadable ({self.problems[j]}); using the next readable item"
                    )
        raise ValueError("clip train: no item of the training set can be read")

    def __call__(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        images, captions = zip(*(self.item(int(i)) for i in indices))
        return self.encode(list(images), list(captions))

    def step(self, order: DataOrder, step: int, accum: int) -> dict[str, np.ndarray]:
        """Optimizer step `step`'s micro-batches in `order` (a common.DataOrder), stacked: {key: (accum, b, ...)}."""
        micro = [self(order.local_indices(step * accum + a)) for a in range(accum)]
        return {k: np.stack([m[k] for m in micro]) for k in micro[0]}

    def encode(self, images: list[Any], captions: list[str]) -> dict[str, np.ndarray]:
        pixels = self.processor.image_processor(images, return_tensors="np")["pixel_values"]
        with self._tokenizer_lock:
            text = self.processor.tokenizer(
                captions, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="np"
            )
        return {
            "input_ids": np.asarray(text["input_ids"], dtype=np.int32),
            "attention_mask": np.asarray(text["attention_mask"], dtype=np.int32),
            "pixel_values": np.ascontiguousarray(pixels, dtype=np.float32),
        }
