"""The three backends' adapters (clip/{pt,tf,flax}/adapter.py) against each other and against the
files: the same canonical arrays in and out, the same class names, one fingerprint, one stale-file
rule."""

from __future__ import annotations

import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from clip.common import weights
from clip.common.config import CLIPConfig
from clip.tasks import backends

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("flax")

import clip.flax as flax_models  # noqa: E402
import clip.pt as pt_models  # noqa: E402
import clip.tf as tf_models  # noqa: E402
from clip.flax import adapter as flax_adapter  # noqa: E402
from clip.pt import adapter as pt_adapter  # noqa: E402
from clip.tf import adapter as tf_adapter  # noqa: E402

DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "..", "..", "clip", "models", "default")
BACKENDS = {
    "pt": (pt_adapter, pt_models, ""),
    "tf": (tf_adapter, tf_models, "TF"),
    "flax": (flax_adapter, flax_models, "Flax"),
}
TINY = CLIPConfig(
    text_config=dict(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=16,
    ),
    vision_config=dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=16, patch_size=8
    ),
    projection_dim=24,
)


def random_canonical(config, seed=0) -> dict:
    """Every CLIPModel parameter drawn from a seeded numpy generator, in the canonical layout."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(shape).astype(np.float32)
        for name, (shape, _) in weights.expected_parameters(config, "CLIPModel").items()
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_assigned_canonical_arrays_come_back_unchanged(backend):
    adapter, models, prefix = BACKENDS[backend]
    model = getattr(models, prefix + "CLIPModel")(TINY)
    given = random_canonical(TINY)
    assert adapter.assign_canonical(model, given) == []
    out = adapter.canonical_arrays(model)
    assert list(out) == list(given)  # state_dict order, the order clip.common.weights lists
    for name, array in given.items():
        np.testing.assert_array_equal(out[name], array, err_msg=name)
    # a partial assignment changes only what it names and reports the rest
    changed = {"logit_scale": np.float32(3.5).reshape(())}
    assert adapter.assign_canonical(model, changed) == [n for n in given if n != "logit_scale"]
    after = adapter.canonical_arrays(model)
    assert float(after["logit_scale"]) == 3.5
    np.testing.assert_array_equal(after["text_projection.weight"], given["text_projection.weight"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_canonical_class_of_every_model_class(backend):
    adapter, models, prefix = BACKENDS[backend]
    for name in weights.MODEL_CLASSES:
        cls = getattr(models, prefix + name, None)
        if cls is None:  # CLIPForImageClassification exists in clip.pt only
            continue
        assert adapter.canonical_class(cls) == name
        assert adapter.canonical_class(type(prefix + "Mine", (cls,), {})) == name  # a user's subclass
        if backend == "tf":
            assert cls.canonical_class == name  # the Keras classes' own attribute agrees
    with pytest.raises(TypeError, match="nor a subclass of one"):
        adapter.canonical_class(object)


def test_fingerprint_is_one_value_in_every_backend_and_the_files():
    """The same checkpoint loaded in pt, tf and flax gives the fingerprint computed straight from
    model.safetensors with the safetensors library (the value embedding manifests store)."""
    from_file = weights.fingerprint(load_file(os.path.join(DEFAULT_MODEL, "model.safetensors")).items())
    models = {
        "pt": pt_models.CLIPModel.from_pretrained(DEFAULT_MODEL),
        "tf": tf_models.TFCLIPModel.from_pretrained(DEFAULT_MODEL),
        "flax": flax_models.FlaxCLIPModel.from_pretrained(DEFAULT_MODEL),
    }
    for backend, model in models.items():
        assert backends.weights_fingerprint(model, backend) == from_file, backend
    # any change of one value changes it
    models["pt"].logit_scale.data += 1e-3
    assert backends.weights_fingerprint(models["pt"], "pt") != from_file


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_save_removes_the_weight_files_of_every_other_format(tmp_path, backend):
    adapter, models, prefix = BACKENDS[backend]
    model = getattr(models, prefix + "CLIPTextModel")(TINY.text_config)
    stale = [
        "pytorch_model.bin",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model.bin.index.json",
        "tf_model.h5",
        "flax_model.msgpack",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
    ]
    for name in stale + ["notes.txt"]:
        (tmp_path / name).write_bytes(b"stale")
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors", "notes.txt"]
    loaded = getattr(models, prefix + "CLIPTextModel").from_pretrained(tmp_path)
    assert backends.weights_fingerprint(loaded, backend) == backends.weights_fingerprint(model, backend)
