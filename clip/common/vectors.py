"""Vector helpers shared by the tasks, the index and the service (numpy only)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

# The smallest positive normal float32: any row that is not all zeros still reaches unit length.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def l2_normalize(
    x: ArrayLike, axis: int = -1, eps: float = FLOAT32_TINY, dtype: DTypeLike | None = np.float32
) -> np.ndarray:
    """`x` scaled to unit L2 length along `axis`; a vector shorter than `eps` is divided by `eps` instead,
    so an all-zero vector stays zero (never NaN).

    dtype: the array is cast to it first (default float32, what the encoders return); None keeps x's dtype.
    """
    array = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    norm = np.linalg.norm(array, axis=axis, keepdims=True)
    return array / np.maximum(norm, eps)
