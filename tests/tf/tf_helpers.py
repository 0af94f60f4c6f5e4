"""Helpers for the TF backend tests: tiny configs, a clip.pt twin with the same weights, comparisons.

A uniquely named module (not conftest) so that it imports the same way from every test file.
The twin goes through the canonical checkpoint: clip.pt's save_pretrained, then our from_pretrained.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
torch.set_num_threads(min(2, torch.get_num_threads()))

import clip.pt as pt  # noqa: E402
import clip.tf as ours  # noqa: E402

from backend_configs import CLASSES, CONFIGS, TEXT_CLASSES, VISION_CLASSES, inputs_for, make_config, make_inputs  # noqa: E402,F401


def make_pair(name, model_class, tmp_path, seed=0, **top):
    """(our model, clip.pt's model) with the same random weights, through a canonical checkpoint."""
    config = make_config(name, model_class, **top)
    torch.manual_seed(seed)
    ref = getattr(pt, model_class)(config).eval()
    with torch.no_grad():  # make LayerNorm/bias/logit_scale values non-trivial
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref.save_pretrained(tmp_path)
    return getattr(ours, "TF" + model_class).from_pretrained(tmp_path), ref


def as_tf(inputs):
    return {k: tf.constant(v) for k, v in inputs.items()}


def as_torch(inputs):
    return {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}


def flatten(value, prefix="out"):
    """Nested outputs/tuples -> {path: numpy array or None}, comparing structure by path."""
    if value is None:
        return {prefix: None}
    if isinstance(value, torch.Tensor):
        return {prefix: value.detach().double().numpy()}
    if isinstance(value, (tf.Tensor, tf.Variable, np.ndarray)):
        return {prefix: np.asarray(value, np.float64)}
    if hasattr(value, "keys") and not isinstance(value, (tuple, list)):
        items = [(k, value[k]) for k in value.keys()]
    else:
        items = list(enumerate(value))
    out = {}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}"))
    return out


def assert_close_outputs(ours_out, ref_out, atol=1e-5):
    a, b = flatten(ours_out), flatten(ref_out)
    assert list(a) == list(b), f"output structure differs:\nours {list(a)}\nref  {list(b)}"
    for path in a:
        x, y = a[path], b[path]
        assert x.shape == y.shape, f"{path}: {x.shape} vs {y.shape}"
        diff = float(np.abs(x - y).max()) if x.size else 0.0
        assert diff <= atol, f"{path}: max abs diff {diff:.3g} > {atol}"
    return len(a)
