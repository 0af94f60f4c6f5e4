"""The matrix products under the model's layers (the TF mirror of clip/pt/kernels.py)."""

from __future__ import annotations

import tensorflow as tf


def linear(dense, x):
    """dense(x) on its own variables, without Keras' per-call overhead (about 1 ms per call eagerly)."""
    y = tf.matmul(x, dense.kernel)  # variables read in the caller's autocast scope: compute dtype
    return y if dense.bias is None else y + dense.bias


def patch_tokens(pixel_values, conv):
    """The patch embedding Conv2D (kernel = stride, valid, no bias) as one matmul, straight from NCHW:
    (B,C,H,W) -> (B,N,D), N = (H//p)*(W//p) patches in row-major order, as conv + reshape gives.

    A strided conv with a kernel as large as its stride is a matmul over flattened patches, and
    XLA runs it 1.7x faster as one (batch 32).
    """
    kernel = conv.kernel  # p,p,C,D; read in the caller's autocast scope: compute dtype
    p, _, C, D = kernel.shape
    B = tf.shape(pixel_values)[0]
    h, w = pixel_values.shape[2] // p, pixel_values.shape[3] // p
    x = tf.cast(pixel_values[:, :, : h * p, : w * p], kernel.dtype)  # the conv drops a remainder that fills no patch
    x = tf.transpose(tf.reshape(x, (B, C, h, p, w, p)), (0, 2, 4, 3, 5, 1))  # B,h,w,p,p,C
    return tf.matmul(tf.reshape(x, (B, h * w, p * p * C)), tf.reshape(kernel, (p * p * C, D)))
