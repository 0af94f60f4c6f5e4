"""uint8 crops -> the model's float32 input, on the model's device, in one batched gather.

The decode workers of clip.tasks.embed ship (N, H, W, 3) uint8 crops (resized and center-cropped):
a quarter of the bytes of float32 pixels, through their shared memory and on to the device.
Rescale and normalize map each channel's 256 possible values to 256 floats, so those floats are
computed once on the host with the processor's own arithmetic (clip.tasks.embed.decode.pixel_table:
float64 rescale, float32 normalize) and applied where the model runs as one gather from that
768-entry table: the processor's float32 output bit for bit, in every backend (the same
arithmetic on the device in float32 would differ from its float64 rescale by an ulp here and there).

    to_pixels = device_pixels(encoder)      # once per encoder
    pixels = to_pixels(crops)               # (N, 3, H, W) float32 on the model's device, NCHW

On a CPU the device is the host, and numpy's take (one per channel) is that gather at 6-10x the
speed of torch's CPU indexing (64 crops of 224x224: 28 ms against 280 ms on the 2-core test machine,
where ViT-B/32 takes about 1.3 s for them in float32), so a CPU model gets numpy pixels, which its
image call takes as they are.

Like clip.tasks.backends, the framework is imported when the function is built, never before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from clip.tasks.backends import Encoder

# channel c's value of the uint8 value v is at c * 256 + v of the flattened table
_CHANNEL_OFFSETS = (np.arange(3, dtype=np.int32) * 256).reshape(1, 3, 1, 1)


def device_pixels(encoder: Encoder, gather: str = "auto") -> Callable[[np.ndarray], Any]:
    """A function (N, H, W, 3) uint8 numpy crops -> (N, 3, H, W) float32 pixel values where the
    encoder's model runs (what its image call takes). gather: "numpy" (on the host), "framework"
    (the framework's gather on the model's device), or "auto": numpy for a model on a CPU."""
    from clip.tasks.embed.decode import pixel_table

    table = pixel_table(encoder.processor.image_processor)
    if gather == "numpy" or (gather == "auto" and on_cpu(encoder)):
        return functools.partial(numpy_pixels, table=table)
    build = {"pt": _torch_pixels, "tf": _tf_pixels, "flax": _jax_pixels}[encoder.backend]
    return build(encoder, table)


def on_cpu(encoder: Encoder) -> bool:
    """Whether the encoder's model runs on the host's CPU."""
    if encoder.backend == "flax":
        return _jax_device(encoder).platform == "cpu"
    return "cpu" in str(encoder.device).lower()  # torch "cpu", TensorFlow "/CPU:0"


def numpy_pixels(crops: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 crops -> (N, 3, H, W) float32: the (3, 256) table's values, on the host."""
    out = np.empty((len(crops), 3, *crops.shape[1:3]), np.float32)
    for channel in range(3):  # NHWC -> NCHW as it gathers
        np.take(table[channel], crops[..., channel], out=out[:, channel])
    return out


def torch_gather(table: np.ndarray, device: Any) -> Callable[[Any], Any]:
    """A function (N, H, W, 3) uint8 torch crops on `device` -> (N, 3, H, W) float32 there: the
    (3, 256) table's values in one gather (clip.tasks.gpu_decode's crops use it where they were decoded)."""
    import torch

    flat = torch.from_numpy(table.reshape(-1)).to(device)
    offsets = torch.from_numpy(_CHANNEL_OFFSETS).to(device, torch.int64)

    def gather(crops: Any) -> Any:
        x = crops.permute(0, 3, 1, 2)  # NHWC -> NCHW, still uint8
        return flat[x.long() + offsets]  # one gather: (N, 3, H, W) float32

    return gather


def _torch_pixels(encoder: Encoder, table: np.ndarray) -> Callable[[np.ndarray], Any]:
    import torch

    device = torch.device(encoder.device)
    gather = torch_gather(table, device)

    def to_pixels(crops: np.ndarray) -> Any:
        with torch.inference_mode():
            if not crops.flags.writeable:  # torch warns on read-only arrays (Ray hands those out)
                crops = crops.copy()
            return gather(torch.from_numpy(crops).to(device))

    return to_pixels


def _tf_pixels(encoder: Encoder, table: np.ndarray) -> Callable[[np.ndarray], Any]:
    import tensorflow as tf

    with tf.device(encoder.device):
        flat = tf.constant(table.reshape(-1))

    def to_pixels(crops: np.ndarray) -> Any:
        with tf.device(encoder.device):
            x = tf.transpose(tf.convert_to_tensor(crops), (0, 3, 1, 2))  # NHWC -> NCHW, still uint8
            return tf.gather(flat, tf.cast(x, tf.int32) + _CHANNEL_OFFSETS)

    return to_pixels


def _jax_pixels(encoder: Encoder, table: np.ndarray) -> Callable[[np.ndarray], Any]:
    import jax
    import jax.numpy as jnp

    device = _jax_device(encoder)
    flat = jax.device_put(table.reshape(-1), device)

    @jax.jit
    def gather(table, crops):
        x = jnp.transpose(crops, (0, 3, 1, 2)).astype(jnp.int32) + _CHANNEL_OFFSETS  # NHWC -> NCHW
        return jnp.take(table, x, mode="clip")  # indices are in range: no fill value needed

    def to_pixels(crops: np.ndarray) -> Any:
        return gather(flat, jax.device_put(crops, device))

    return to_pixels


def _jax_device(encoder: Encoder) -> Any:
    """The device the encoder's parameters were committed to (clip.tasks.framework_loaders._load_flax)."""
    import jax

    return next(iter(jax.tree.leaves(encoder.network.params)[0].devices()))
