"""The dict that tokenizers, the image processor and the processor return.

Values are numpy arrays (or lists when no tensor type is asked for) converted on request to
torch, TensorFlow or JAX tensors; the framework is imported only when its tensors are asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clip.errors import InputError

TENSOR_TYPES = ("np", "pt", "tf", "jax")


def check_tensor_type(return_tensors: str | None) -> None:
    if return_tensors is not None and return_tensors not in TENSOR_TYPES:
        raise InputError(f"return_tensors must be one of {TENSOR_TYPES} or None, got {return_tensors!r}")


def to_tensor(array: np.ndarray, return_tensors: str | None) -> Any:
    """numpy array -> the framework's tensor (`return_tensors` in TENSOR_TYPES or None)."""
    check_tensor_type(return_tensors)
    if return_tensors is None:
        return array
    array = np.asarray(array)
    if return_tensors == "np":
        return array
    if return_tensors == "pt":
        import torch

        return torch.from_numpy(np.ascontiguousarray(array))
    if return_tensors == "tf":
        import tensorflow as tf

        return tf.convert_to_tensor(array)
    import jax.numpy as jnp

    return jnp.asarray(array)


def to_numpy(value: Any) -> np.ndarray:
    """A torch/TF/JAX tensor, numpy array or nested list -> numpy array, without importing frameworks."""
    if isinstance(value, np.ndarray):
        return value
    module = type(value).__module__.split(".")[0]
    if module == "torch":
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy") and module in ("tensorflow", "keras"):
        return value.numpy()
    return np.asarray(value)


class BatchEncoding(dict):
    """dict with attribute access: `enc.input_ids` is `enc["input_ids"]`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; fields: {list(self)}") from None

    def convert_to_tensors(self, return_tensors: str | None) -> BatchEncoding:
        check_tensor_type(return_tensors)
        for key, value in self.items():
            self[key] = to_tensor(value, return_tensors)
        return self

    def to(self, device: Any) -> BatchEncoding:  # device: a torch device or its name
        """Move torch tensors to `device` (as transformers' BatchEncoding.to)."""
        for key, value in self.items():
            if hasattr(value, "to") and type(value).__module__.startswith("torch"):
                self[key] = value.to(device)
        return self


# transformers names the image processor's result BatchFeature; same container.
BatchFeature = BatchEncoding
