"""Captioned image datasets for training and evaluating CLIP.

Every dataset is a sized, indexable sequence: `dataset[i] -> (image, caption)` with a PIL RGB image
and a string, deterministic in i, so any loader (PyTorch's DataLoader, tf.data, a plain loop) and
any worker process can read any item. Nothing here imports a deep-learning framework.
"""

from typing import Any

from clip.data.captions import CaptionDataset, Subset, load_captions, split_indices
from clip.data.synthetic import HELD_OUT_COMBOS, SyntheticShapes, zero_shot_labels, zero_shot_set

__all__ = [
    "HELD_OUT_COMBOS",
    "CaptionDataset",
    "DigitsDataset",
    "SyntheticShapes",
    "Subset",
    "load_captions",
    "split_indices",
    "zero_shot_labels",
    "zero_shot_set",
]


def __getattr__(name: str) -> Any:  # digits needs scikit-learn: import it only when asked for
    if name == "DigitsDataset":
        from clip.data.digits import DigitsDataset

        return DigitsDataset
    raise AttributeError(f"module 'clip.data' has no attribute {name!r}")
