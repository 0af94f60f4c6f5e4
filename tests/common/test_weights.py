"""clip.common.weights.fingerprint: what tells two sets of weights apart, and what does not."""

import numpy as np

from clip.common import weights


def _state(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "text_model.encoder.layers.0.mlp.fc1.weight": rng.standard_normal((96, 32), dtype=np.float32),
        "vision_model.embeddings.patch_embedding.weight": rng.standard_normal((32, 3, 4, 4), dtype=np.float32),
        "vision_model.pre_layrnorm.weight": rng.standard_normal(32, dtype=np.float32),
        "logit_scale": np.array(2.6592, dtype=np.float32),
    }


def test_backend_layouts_and_order_do_not_change_it():
    state = _state()
    kinds = {
        "text_model.encoder.layers.0.mlp.fc1.weight": "linear_weight",
        "vision_model.embeddings.patch_embedding.weight": "conv_weight",
        "vision_model.pre_layrnorm.weight": "layer_norm_weight",
        "logit_scale": "variable",
    }
    expected = weights.fingerprint(state.items())
    for backend in ("tf", "flax"):
        # the backend's own (contiguous) arrays, seen back in the canonical layout as transposed views
        stored = {name: weights.to_backend_layout(a, kinds[name], backend).copy(order="C") for name, a in state.items()}
        views = [
            (name, weights.from_backend_layout(stored[name], kinds[name], backend)) for name in reversed(list(state))
        ]
        assert not views[-1][1].flags.c_contiguous or views[-1][1].ndim < 2
        assert weights.fingerprint(views) == expected


def test_any_changed_tensor_name_or_shape_changes_it():
    state = _state()
    base = weights.fingerprint(state.items())
    assert weights.fingerprint(_state(seed=1).items()) != base
    for name, array in state.items():
        # an optimizer step: every entry moves a little
        stepped = dict(state, **{name: array - 1e-4 * np.sign(array + 0.5)})
        assert weights.fingerprint(stepped.items()) != base, name
    renamed = {("x." + name if name == "logit_scale" else name): a for name, a in state.items()}
    assert weights.fingerprint(renamed.items()) != base
    reshaped = dict(
        state, **{"vision_model.pre_layrnorm.weight": state["vision_model.pre_layrnorm.weight"].reshape(4, 8)}
    )
    assert weights.fingerprint(reshaped.items()) != base


def test_large_tensors_are_sampled_across_their_whole_extent():
    big = np.zeros((1000, 1000), np.float32)
    base = weights.fingerprint([("w", big)])
    for row, col in ((0, 0), (999, 999), (500, 500)):
        changed = big.copy()
        changed[row, :] = 1.0  # a whole row: one of the evenly spread samples falls in any row
        assert weights.fingerprint([("w", changed)]) != base, (row, col)
    assert weights.fingerprint([("w", big.astype(np.float64))]) == base  # compared as float32 values
