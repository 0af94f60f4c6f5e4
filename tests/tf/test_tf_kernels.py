"""The matrix products under clip.tf's layers (clip.tf.kernels): the patch matmul equals the
Conv2D it replaces."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from clip.tf import kernels


@pytest.mark.parametrize("size", [(24, 24), (26, 30), (33, 17)])
@pytest.mark.parametrize("jit", [False, True])
def test_patch_matmul_equals_the_conv_including_remainders(size, jit):
    # sizes that are not multiples of the patch: the conv drops the remainder, so must we
    conv = keras.layers.Conv2D(16, 8, 8, use_bias=False)
    conv.build((None, None, None, 3))
    pixels = tf.random.normal((2, 3, *size))  # NCHW, as the processor gives
    expected = tf.reshape(conv(tf.transpose(pixels, (0, 2, 3, 1))), (2, -1, 16))
    fn = (
        tf.function(lambda x: kernels.patch_tokens(x, conv), jit_compile=True)
        if jit
        else (lambda x: kernels.patch_tokens(x, conv))
    )
    got = fn(pixels)
    assert got.shape == expected.shape == (2, (size[0] // 8) * (size[1] // 8), 16)
    np.testing.assert_allclose(got, expected, atol=1e-5)
