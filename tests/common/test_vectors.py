"""clip.common.vectors.l2_normalize against hand-computed values."""

import numpy as np

from clip.common.vectors import l2_normalize


def test_rows_reach_unit_length_and_zero_rows_stay_zero():
    out = l2_normalize([[3, 4], [0, 0], [-5, 12]])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-5 / 13, 12 / 13]], rtol=1e-7)
    assert np.isfinite(out).all()


def test_axis_eps_and_dtype_are_the_callers_choice():
    np.testing.assert_allclose(l2_normalize(np.float64([[3, 5], [4, 12]]), axis=0), [[0.6, 5 / 13], [0.8, 12 / 13]])
    tiny = np.float32([[1e-13, 0.0]])
    assert l2_normalize(tiny, eps=1e-12)[0, 0] == np.float32(1e-13) / np.float32(1e-12)  # below eps: divided by eps
    assert l2_normalize(tiny)[0, 0] == 1.0  # the float32 floor: any non-zero row reaches unit length
    half = l2_normalize(np.float16([[0, 2]]), dtype=None)
    assert half.dtype == np.float16 and half.tolist() == [[0.0, 1.0]]


def test_the_tasks_encoder_normalizes_with_the_shared_helper():
    from clip.tasks import backends

    assert backends.l2_normalize is l2_normalize
