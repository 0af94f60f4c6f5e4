"""The matrix products under clip.flax's layers (clip.flax.kernels): the patch matmul equals the
conv it replaces, and narrow dtypes accumulate in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from clip.flax import kernels

from flax_helpers import assert_close, make_pair


@pytest.mark.parametrize("size", [(24, 24), (26, 30), (33, 17)])
def test_patch_matmul_equals_the_conv_including_remainders(size):
    # sizes that are not multiples of the patch: the conv drops the remainder, so must we
    conv = nnx.Conv(3, 16, (8, 8), strides=(8, 8), padding="VALID", use_bias=False, rngs=nnx.Rngs(0))
    pixels = jax.random.normal(jax.random.key(1), (2, 3, *size))  # NCHW, as the processor gives
    expected = conv(pixels.transpose(0, 2, 3, 1)).reshape(2, -1, 16)
    got = jax.jit(lambda x: kernels.patch_tokens(x, conv, jnp.float32))(pixels)
    assert got.shape == expected.shape == (2, (size[0] // 8) * (size[1] // 8), 16)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_narrow_dtypes_accumulate_in_float32_and_round_once(dtype):
    layer = kernels.Linear(256, 64, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
    layer.bias[...] = jax.random.normal(jax.random.key(2), (64,)).astype(dtype)
    x = jax.random.normal(jax.random.key(3), (5, 7, 256)).astype(dtype)
    y = layer(x)
    assert y.dtype == dtype and y.shape == (5, 7, 64)
    # the exact sum of the same (narrow) operands, rounded once to the dtype
    exact = np.asarray(x, np.float64) @ np.asarray(layer.kernel[...], np.float64) + np.asarray(
        layer.bias[...], np.float64
    )
    once = np.asarray(jnp.asarray(exact, jnp.float32).astype(dtype), np.float64)
    # a narrow dot plus a narrow bias add rounds twice and misses `once` in ~30% of the entries
    assert (np.asarray(y, np.float64) != once).mean() <= 0.01


def test_float32_layers_are_a_plain_dot():
    layer = kernels.Linear(32, 8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (4, 32))
    np.testing.assert_allclose(layer(x), x @ layer.kernel[...] + layer.bias[...], atol=1e-6)


def test_interpolated_positions_at_uneven_sizes_match_pt():
    model, ref = make_pair("gelu", "CLIPVisionModelWithProjection")
    pixels = np.random.default_rng(0).standard_normal((2, 3, 44, 52)).astype(np.float32)
    out = jax.jit(lambda p, x: model(pixel_values=x, params=p, interpolate_pos_encoding=True))(model.params, pixels)
    with torch.no_grad():
        expected = ref(pixel_values=torch.from_numpy(pixels), interpolate_pos_encoding=True)
    assert_close(out, expected)
