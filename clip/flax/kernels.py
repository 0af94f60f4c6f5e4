"""The matrix products under the model's layers, shaped for XLA's CPU and GPU kernels.

XLA runs a bfloat16 x bfloat16 -> bfloat16 dot on the CPU at float32 speed, but the same dot
asked for a float32 result at twice that (measured on a 2-core AVX-512 machine, ViT-B/32 weights:
130 -> 261 GFLOP/s at 50 rows, 212 -> 428 at 1,600 rows). So low-precision layers accumulate in
float32 and round once at the end, which is also the more accurate sum; float32 layers are
unchanged. The patch embedding's strided conv runs as one matmul over flattened patches
(XLA's conv is 1.6x slower at batch 1 and 1.7x at batch 32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def _accumulates_wider(dtype) -> bool:
    return dtype is not None and jnp.dtype(dtype).itemsize < 4 and jnp.issubdtype(dtype, jnp.floating)


def matmul(a, b, dtype):
    """a @ b (batched over leading axes) in `dtype`, with a float32 accumulator when `dtype` is narrower."""
    a, b = a.astype(dtype), b.astype(dtype)
    if not _accumulates_wider(dtype):
        return jnp.matmul(a, b)
    return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(dtype)


def linear(x, kernel, bias, dtype):
    """x @ kernel + bias in `dtype`, with a float32 accumulator when `dtype` is narrower."""
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if not _accumulates_wider(dtype):
        y = jnp.dot(x, kernel)
        return y if bias is None else y + bias.astype(dtype)
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    return (y if bias is None else y + bias.astype(jnp.float32)).astype(dtype)  # the bias too, before the one rounding


class Linear(nnx.Linear):
    """nnx.Linear (same parameters) computed by `linear`."""

    def __call__(self, x):
        dtype = self.dtype or jnp.result_type(x, self.kernel[...])
        return linear(x, self.kernel[...], None if self.bias is None else self.bias[...], dtype)


def patch_tokens(pixel_values, conv: nnx.Conv, dtype):
    """The patch embedding conv (kernel = stride, VALID, no bias) as one matmul, straight from NCHW:
    (B,C,H,W) -> (B,N,D), N = (H//p)*(W//p) patches in row-major order, as conv + reshape gives."""
    kernel = conv.kernel[...]  # p,p,C,D
    p, _, C, D = kernel.shape
    B, _, H, W = pixel_values.shape
    h, w = H // p, W // p
    x = pixel_values[:, :, : h * p, : w * p]  # the conv drops a remainder that fills no patch
    x = x.reshape(B, C, h, p, w, p).transpose(0, 2, 4, 3, 5, 1)  # B,h,w,p,p,C
    return linear(x.reshape(B, h * w, p * p * C), kernel.reshape(p * p * C, D), None, dtype)
