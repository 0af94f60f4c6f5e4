"""Helpers for the Flax backend tests: tiny configs, clip.pt twins with the same weights, inputs.

A uniquely named module (not conftest) so that it imports the same way from every test file."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
torch.set_num_threads(min(2, torch.get_num_threads()))

import jax.numpy as jnp  # noqa: E402

import clip.flax as ours  # noqa: E402
import clip.pt as pt  # noqa: E402
from clip.flax import loading  # noqa: E402

from backend_configs import CLASSES, CONFIGS, TEXT_CLASSES, VISION_CLASSES, inputs_for, make_config, make_inputs  # noqa: E402,F401


def make_pair(name, model_class, seed=0, **top):
    """(our model, clip.pt's model) with the same random weights; the pt model in eval mode."""
    config = make_config(name, model_class, **top)
    torch.manual_seed(seed)
    ref = getattr(pt, model_class)(config).eval()
    with torch.no_grad():  # make LayerNorm/bias/logit_scale values non-trivial
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model = getattr(ours, "Flax" + model_class)(config, _do_init=False)
    model.params = params_from_torch(model, ref)
    return model, ref


def params_from_torch(model, ref):
    expected = loading.expected_parameters(model)
    state = {k: jnp.asarray(v.detach().numpy()) for k, v in ref.state_dict().items()}
    return loading.to_params(state, expected)


def torch_inputs(inputs):
    return {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}


def flatten(value, prefix="out"):
    """Nested outputs/tuples -> {path: array}, comparing structure by path."""
    if value is None or hasattr(value, "shape"):
        return {prefix: value}
    if hasattr(value, "keys") and not isinstance(value, (tuple, list)):
        items = [(k, value[k]) for k in value.keys()]
    else:
        items = list(enumerate(value))
    out = {}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}"))
    return out


def scalar_of(out):
    """One scalar of order one that depends on every float output: the mean of sin(output).mean().

    A mean, not a sum: summed, the ~15 outputs of a 3-layer CLIPModel give gradients of order 10,
    where float32 itself resolves only ~1e-5 (PyTorch's float32 gradients then differ from its
    float64 ones by up to 2e-5) and a 1e-5 comparison would measure rounding, not the model.
    """
    terms = []
    for v in flatten(out).values():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            terms.append(v.float().sin().mean())
        elif v is not None and not isinstance(v, torch.Tensor) and jnp.issubdtype(v.dtype, jnp.floating):
            terms.append(jnp.sin(v.astype(jnp.float32)).mean())
    return sum(terms) / len(terms)


def assert_close(ours_out, ref_out, atol=1e-5):
    a, b = flatten(ours_out), flatten(ref_out)
    assert list(a) == list(b), f"output structure differs:\nours {list(a)}\nref  {list(b)}"
    for path in a:
        x, y = a[path], b[path]
        if x is None or y is None:
            assert x is None and y is None, path
            continue
        x = np.asarray(x, np.float64)
        y = y.detach().double().numpy() if isinstance(y, torch.Tensor) else np.asarray(y, np.float64)
        assert x.shape == y.shape, f"{path}: {x.shape} vs {y.shape}"
        diff = np.abs(x - y).max() if x.size else 0.0
        assert diff <= atol, f"{path}: max abs diff {diff:.3g} > {atol}"
    return len(a)
