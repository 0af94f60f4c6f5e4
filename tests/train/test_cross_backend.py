"""One SGD step through each trainer (pt, tf, flax) from the same canonical weights on the same batch
gives the same loss and the same updated parameters, compared by canonical name."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("jax")

from train_backends_helpers import (
    flax_sgd_step,
    initial_weights,
    max_differences,
    pt_sgd_step,
    random_batch,
    tf_sgd_step,
)  # noqa: E402


@pytest.fixture(scope="module")
def pt_reference():
    weights, batch = initial_weights(), random_batch()
    return weights, batch, pt_sgd_step(weights, batch)


@pytest.mark.parametrize("step", [tf_sgd_step, flax_sgd_step], ids=["tf", "flax"])
def test_one_sgd_step_matches_pytorch(pt_reference, step):
    weights, batch, (pt_loss, pt_params) = pt_reference
    loss, params = step(weights, batch)
    assert abs(loss - pt_loss) < 1e-5
    differences = max_differences(pt_params, params)
    worst = max(differences, key=differences.get)
    assert differences[worst] < 1e-5, (worst, differences[worst])
    moved = sum(not np.allclose(pt_params[n], weights[n], atol=1e-4) for n in weights)
    assert moved > 10  # the step moved the parameters: equal updates are a real check
