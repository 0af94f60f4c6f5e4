"""The logits' dtype in reduced precision is transformers' Flax CLIP's: the promotion of the compute
dtype and the parameters' (float32 parameters under bfloat16 compute give float32 logits)."""

from __future__ import annotations

import numpy as np
import pytest

from flax_helpers import jnp, make_inputs, ours

from backend_configs import make_config

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("half_params", [False, True])
def test_logits_dtype_follows_transformers(dtype, half_params):
    config = make_config("quick_gelu", "CLIPModel")
    compute = jnp.dtype(dtype)
    mine = ours.FlaxCLIPModel(config, dtype=compute)
    theirs = transformers.FlaxCLIPModel(
        transformers.CLIPConfig.from_dict(config.to_dict()), dtype=compute, _do_init=False
    )
    params = mine.params
    if half_params:
        params = mine.to_bf16(params) if dtype == "bfloat16" else mine.to_fp16(params)
    inputs = make_inputs("quick_gelu", batch=2)
    got = mine(**inputs, params=params).logits_per_image
    want = theirs(**inputs, params=params).logits_per_image
    assert got.dtype == want.dtype == (compute if half_params else jnp.float32)
    # the same numbers to half-precision rounding of the towers (8 bits of mantissa in bfloat16)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=0.02, atol=0.1)
