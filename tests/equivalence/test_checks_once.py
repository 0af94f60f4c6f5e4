"""Every public call checks each tower's inputs exactly once, in all three backends.

The towers call clip.common.checks.check_text_inputs / check_image_inputs; counting those calls
(monkeypatched) shows that no wrapper checks again (the Flax wrappers once checked three times per
call, the TF graph calls twice), while a bad input still fails on every path, the TF graph one
included.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
jax = pytest.importorskip("jax")

import clip.flax  # noqa: E402
import clip.pt  # noqa: E402
import clip.tf  # noqa: E402
from backend_configs import make_config, make_inputs  # noqa: E402
from clip.common import checks  # noqa: E402

NAME = "quick_gelu"
BACKENDS = ("pt", "tf", "flax")
PREFIX = {"pt": "", "tf": "TF", "flax": "Flax"}
# (model class, method, inputs it takes, {check: calls expected})
CALLS = [
    ("CLIPModel", "__call__", ("input_ids", "attention_mask", "pixel_values"), {"text": 1, "image": 1}),
    ("CLIPModel", "get_text_features", ("input_ids", "attention_mask"), {"text": 1, "image": 0}),
    ("CLIPModel", "get_image_features", ("pixel_values",), {"text": 0, "image": 1}),
    ("CLIPTextModel", "__call__", ("input_ids", "attention_mask"), {"text": 1, "image": 0}),
    ("CLIPTextModelWithProjection", "__call__", ("input_ids", "attention_mask"), {"text": 1, "image": 0}),
    ("CLIPVisionModel", "__call__", ("pixel_values",), {"text": 0, "image": 1}),
    ("CLIPVisionModelWithProjection", "__call__", ("pixel_values",), {"text": 0, "image": 1}),
]


@pytest.fixture
def counted(monkeypatch):
    calls = collections.Counter()
    for kind in ("text", "image"):
        original = getattr(checks, f"check_{kind}_inputs")

        def counting(*args, _kind=kind, _original=original, **kwargs):
            calls[_kind] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(checks, f"check_{kind}_inputs", counting)
    return calls


def build(backend, class_name):
    module = {"pt": clip.pt, "tf": clip.tf, "flax": clip.flax}[backend]
    return getattr(module, PREFIX[backend] + class_name)(make_config(NAME, class_name))


def as_backend(backend, arrays):
    if backend == "pt":
        return {k: torch.from_numpy(v) for k, v in arrays.items()}
    if backend == "tf":
        return {k: tf.constant(v) for k, v in arrays.items()}
    return dict(arrays)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("class_name,method,names,expected", CALLS, ids=[f"{c}.{m}" for c, m, _, _ in CALLS])
def test_each_public_call_checks_each_tower_once(backend, class_name, method, names, expected, counted):
    model = build(backend, class_name)
    inputs = make_inputs(NAME, batch=2)
    # TF runs a kind of call op by op, then traces a graph, then reuses it (clip.tf.eager): three paths
    for batch in (2, 3, 2) if backend == "tf" else (2,):
        counted.clear()
        arrays = {k: v for k, v in make_inputs(NAME, batch=batch).items() if k in names}
        getattr(model, method)(**as_backend(backend, arrays))
        assert dict(counted) == {k: v for k, v in expected.items() if v}, f"batch {batch}"
    if backend == "flax":  # under jax.jit the checks run once, while tracing
        counted.clear()
        arrays = {k: v for k, v in inputs.items() if k in names}
        jax.jit(lambda params, kw: getattr(model, method)(**kw, params=params))(model.params, arrays)
        assert dict(counted) == {k: v for k, v in expected.items() if v}


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs_still_fail_on_every_call(backend):
    model = build(backend, "CLIPModel")
    good = make_inputs(NAME, batch=2)
    too_long = np.ones((2, make_config(NAME, "CLIPTextModel").max_position_embeddings + 1), np.int64)
    small = good["pixel_values"][:, :, :8, :8]
    # TF: the third call of a kind runs the cached graph, whose open dimensions the towers cannot check
    for _ in range(3 if backend == "tf" else 1):
        model.get_text_features(**as_backend(backend, {"input_ids": good["input_ids"]}))
        model.get_image_features(**as_backend(backend, {"pixel_values": good["pixel_values"]}))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.get_text_features(**as_backend(backend, {"input_ids": too_long}))
    with pytest.raises(ValueError, match="pixel_values must be 16x16"):
        model.get_image_features(**as_backend(backend, {"pixel_values": small}))
    with pytest.raises(ValueError, match="as many texts as images"):
        model(**as_backend(backend, {**good, "pixel_values": good["pixel_values"][:1]}), return_loss=True)
