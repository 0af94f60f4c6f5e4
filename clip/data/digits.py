"""scikit-learn's bundled handwritten digits (1,797 8x8 scans) as a small real captioned dataset.

Captions read "a handwritten digit 7"; images are upscaled (bilinear) to `image_size` and shown
dark on light, as ink on paper. Needs scikit-learn (an optional dependency), which ships the data
inside its package: nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

TEMPLATE = "a handwritten digit {}"


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the digits dataset needs scikit-learn, which is not installed; install it with `pip install scikit-learn`"
        ) from None
    return load_digits()


class DigitsDataset:
    """item i -> (PIL RGB image, "a handwritten digit d"); `labels` holds d per item."""

    def __init__(self, image_size: int = 64) -> None:
        bunch = _load_digits()
        self.image_size = int(image_size)
        # 0..16 ink -> 255..0 grey (dark ink on light paper)
        self._pixels = (255 - np.asarray(bunch.images) * (255 / 16)).round().astype(np.uint8)
        self.labels = np.asarray(bunch.target, dtype=np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        grey = Image.fromarray(self._pixels[index]).resize((self.image_size, self.image_size), Image.BILINEAR)
        return grey.convert("RGB"), TEMPLATE.format(int(self.labels[index]))

    @staticmethod
    def zero_shot_labels() -> list[str]:
        return [TEMPLATE.format(d) for d in range(10)]
