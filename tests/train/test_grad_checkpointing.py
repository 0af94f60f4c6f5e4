"""Gradient checkpointing (`clip train --grad-checkpointing`): transformers' PyTorch surface side by side,
the Flax (`enable_gradient_checkpointing`, nnx.remat) and TensorFlow (tf.recompute_grad) equivalents, and in
every backend the same loss gradients with it as without (1e-6), through each trainer's own objective."""

import numpy as np
import pytest

from train_backends_helpers import config, initial_weights, random_batch

TOL = 1e-6


def _assert_same(plain: dict, checkpointed: dict):
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert np.abs(np.asarray(plain[name]) - np.asarray(checkpointed[name])).max() <= TOL, name
    assert sum(float(np.abs(g).max()) > 1e-6 for g in plain.values()) > 10


def test_pt_surface_matches_transformers_side_by_side():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from clip.pt import CLIPModel

    ours = CLIPModel(config())
    theirs = transformers.CLIPModel(transformers.CLIPConfig.from_dict(config().to_dict()))
    assert ours.supports_gradient_checkpointing is theirs.supports_gradient_checkpointing is True
    for model in (ours, theirs):
        assert model.is_gradient_checkpointing is False
        model.gradient_checkpointing_enable()
        assert model.is_gradient_checkpointing is True
        model.gradient_checkpointing_disable()
        assert model.is_gradient_checkpointing is False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        assert model.is_gradient_checkpointing is True
    assert torch is not None


def test_pt_same_gradients_with_checkpointing():
    torch = pytest.importorskip("torch")
    from clip.pt import CLIPModel
    from clip.train import pt_step

    batch = {
        k: torch.from_numpy(v).long() if k != "pixel_values" else torch.from_numpy(v) for k, v in random_batch().items()
    }
    weights, grads = initial_weights(), []
    for enable in (False, True):
        model = CLIPModel(config()).train()
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                tensor.copy_(torch.from_numpy(weights[name]))
        if enable:
            model.gradient_checkpointing_enable()
        pt_step.backward_step(pt_step.ContrastiveObjective(model), [batch])
        grads.append({n: p.grad.numpy().copy() for n, p in model.named_parameters()})
    _assert_same(*grads)


def test_tf_same_gradients_with_checkpointing():
    tf = pytest.importorskip("tensorflow")
    from clip.tf import TFCLIPModel, loading
    from clip.train import tf_step

    batch = {k: tf.constant(v) for k, v in random_batch().items()}
    grads = []
    for enable in (False, True):
        model = TFCLIPModel(config())
        loading.assign_canonical(model, initial_weights())
        assert model.supports_gradient_checkpointing and not model.is_gradient_checkpointing
        if enable:
            model.gradient_checkpointing_enable()
            assert model.is_gradient_checkpointing
        canonical = model.canonical_variables()
        with tf.GradientTape() as tape:
            loss = tf_step.objective(model, batch)
        gradients = tape.gradient(loss, [v for v, _ in canonical.values()])
        grads.append({n: tf.convert_to_tensor(g).numpy() for n, g in zip(canonical, gradients)})
    _assert_same(*grads)


def test_flax_same_gradients_with_checkpointing():
    jax = pytest.importorskip("jax")
    from clip.flax import FlaxCLIPModel, loading
    from clip.train import flax_step

    model = FlaxCLIPModel(config(), _do_init=False)
    expected = loading.expected_parameters(model)
    params = loading.to_params(initial_weights(), expected)
    batch = random_batch()
    grads = []
    for enable in (False, True):
        if enable:
            model.enable_gradient_checkpointing()  # transformers' Flax name
        assert model.is_gradient_checkpointing is enable and model.supports_gradient_checkpointing
        g = jax.jit(jax.grad(lambda p: flax_step.contrastive_loss(model, p, batch)))(params)
        grads.append({n: np.asarray(a) for n, a in loading.from_params(g, expected).items()})
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    _assert_same(*grads)
