"""--lock-image (LiT) and --precision fp16, through each trainer's own step.

Locked: after AdamW steps with weight decay, every locked image-tower weight is bit-identical to its
start while the text tower moved; --lock-image-unlocked-groups N trains the last N groups; without
--lock-image-freeze-norm the locked layers' LayerNorms train. float16: a step whose scaled gradients
overflow is skipped (parameters untouched) and the loss scale halved; the next finite step trains."""

import numpy as np
import pytest

from clip.train import common

from train_backends_helpers import config, initial_weights, random_batch

LAYERS = 1  # config()'s vision layers
FROZEN_ALL = {"unlocked_groups": 0, "freeze_norm": True}


def test_lock_groups_follow_open_clips_vit_lock():
    names = list(initial_weights())
    frozen = {n for n in names if common.is_frozen(n, FROZEN_ALL, LAYERS)}
    assert frozen == {n for n in names if n.startswith("vision_model.") or n == "visual_projection.weight"}
    head = {n for n in names if common.is_frozen(n, {"unlocked_groups": 1, "freeze_norm": True}, LAYERS)}
    assert head == frozen - {
        "visual_projection.weight",
        "vision_model.post_layernorm.weight",
        "vision_model.post_layernorm.bias",
    }
    norms = {n for n in names if common.is_frozen(n, {"unlocked_groups": 0, "freeze_norm": False}, LAYERS)}
    assert norms == {n for n in frozen if "norm" not in n and "layrnorm" not in n}
    assert (
        "vision_model.pre_layrnorm.weight" not in norms
        and "vision_model.encoder.layers.0.layer_norm1.bias" not in norms
    )
    assert not any(common.is_frozen(n, None, LAYERS) for n in names)


def _check_lock(before: dict, after: dict, lock: dict):
    frozen = [n for n in before if common.is_frozen(n, lock, LAYERS)]
    assert frozen
    for name in before:
        same = np.array_equal(before[name], after[name])
        if name in frozen:
            assert same, f"{name} moved although locked"
    moved = [n for n in before if n not in frozen and not np.array_equal(before[n], after[n])]
    assert len(moved) > 5 and any(n.startswith("text_model.") for n in moved)
    return moved


@pytest.mark.parametrize(
    "lock", [FROZEN_ALL, {"unlocked_groups": 1, "freeze_norm": False}], ids=["all", "head-and-norms"]
)
def test_pt_locked_tower_is_bit_identical_after_training(lock):
    torch = pytest.importorskip("torch")
    from clip.pt import CLIPModel
    from clip.train import pt, pt_step

    model = CLIPModel(config())
    weights = initial_weights()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(torch.from_numpy(weights[name]))
    pt.apply_lock(model, lock)
    optimizer = pt.build_optimizer(model, lr=1e-2, weight_decay=0.5)
    batch = {
        k: torch.from_numpy(v).long() if k != "pixel_values" else torch.from_numpy(v) for k, v in random_batch().items()
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    for _ in range(2):
        pt_step.optimizer_step(pt_step.ContrastiveObjective(model), optimizer, trainable, [batch], grad_clip=1.0)
    moved = _check_lock(weights, {n: t.numpy() for n, t in model.state_dict().items()}, lock)
    if lock["unlocked_groups"]:
        assert "visual_projection.weight" in moved and "vision_model.pre_layrnorm.weight" in moved


def test_tf_locked_tower_is_bit_identical_after_training():
    tf = pytest.importorskip("tensorflow")
    from clip.tf import TFCLIPModel, loading
    from clip.train import tf as trainer

    model = TFCLIPModel(config())
    loading.assign_canonical(model, initial_weights())
    optimizer, variables = trainer.build_optimizer(model, 2, 1e-2, 1, 0.5, 1.0, lock=FROZEN_ALL)
    step = trainer.make_train_step(tf.distribute.get_strategy(), model, optimizer, variables)
    batch = {k: tf.constant(v[None]) for k, v in random_batch().items()}
    for _ in range(2):
        step(batch)
    _check_lock(initial_weights(), loading.canonical_state(model), FROZEN_ALL)


def test_flax_locked_tower_is_bit_identical_after_training():
    jax = pytest.importorskip("jax")
    from clip.flax import FlaxCLIPModel, loading
    from clip.train import flax as trainer

    model = FlaxCLIPModel(config(), _do_init=False)
    expected = loading.expected_parameters(model)
    params = loading.to_params(initial_weights(), expected)
    tx = trainer.build_optimizer(model.config, 2, 1e-2, 1, 0.5, 1.0, lock=FROZEN_ALL)
    step = trainer.make_train_step(model, tx, seed=0, dropout=False)
    state, batch = tx.init(params), {k: v[None] for k, v in random_batch().items()}
    for _ in range(2):
        params, state, _ = step(params, state, batch, 0)
    _check_lock(
        initial_weights(),
        {n: np.asarray(a) for n, a in loading.from_params(trainer.to_host(params), expected).items()},
        FROZEN_ALL,
    )
    assert jax is not None


# -- float16 with dynamic loss scaling ----------------------------------------------------------------
def test_loss_scale_rule():
    scale = common.DynamicLossScale(8.0, good_steps=common.DynamicLossScale.GROWTH_INTERVAL - 2)
    assert scale.update(True) and scale.scale == 8.0
    assert scale.update(True) and scale.scale == 16.0 and scale.good_steps == 0  # grows after the interval
    assert not scale.update(False) and scale.scale == 8.0  # overflow: skip, halve
    assert common.DynamicLossScale.from_state(scale.state()).state() == {"scale": 8.0, "good_steps": 0}


def test_pt_fp16_overflow_step_is_skipped_and_the_scale_halved():
    torch = pytest.importorskip("torch")
    from clip.pt import CLIPModel
    from clip.train import pt, pt_step

    torch.manual_seed(0)
    model = CLIPModel(config())
    optimizer = pt.build_optimizer(model, lr=1e-3, weight_decay=0.1)
    batch = {
        k: torch.from_numpy(v).long() if k != "pixel_values" else torch.from_numpy(v) for k, v in random_batch().items()
    }
    autocast = lambda: torch.autocast("cpu", dtype=torch.float16)  # noqa: E731
    before = {n: t.clone() for n, t in model.state_dict().items()}
    scale = common.DynamicLossScale(3e38)  # the scaled gradients overflow (float32's max is 3.4e38)
    loss = pt_step.optimizer_step(
        pt_step.ContrastiveObjective(model), optimizer, list(model.parameters()), [batch], autocast, 1.0, scale
    )
    assert np.isfinite(loss) and scale.scale == 1.5e38 and scale.good_steps == 0
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())  # skipped
    assert not optimizer.state  # AdamW never stepped
    # a scale the float16 backward cannot overflow on these random weights (the default 2**15 may: that
    # step would be skipped too, rightly, but this line checks that a finite step trains)
    scale = common.DynamicLossScale(16.0)
    pt_step.optimizer_step(
        pt_step.ContrastiveObjective(model), optimizer, list(model.parameters()), [batch], autocast, 1.0, scale
    )
    assert scale.good_steps == 1 and not all(torch.equal(before[n], t) for n, t in model.state_dict().items())


def test_flax_fp16_overflow_step_is_skipped_and_the_scale_halved():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from clip.flax import FlaxCLIPModel, loading
    from clip.train import flax as trainer

    model = FlaxCLIPModel(config(), dtype=jnp.float16, _do_init=False)
    params = loading.to_params(initial_weights(), loading.expected_parameters(model))
    tx = trainer.build_optimizer(model.config, 2, 1e-3, 1, 0.1, 1.0)
    step = trainer.make_train_step(model, tx, seed=0, dropout=False, loss_scaling=True)
    batch = {k: v[None] for k, v in random_batch().items()}
    state = tx.init(params)
    new, state, loss, (scale, good) = step(params, state, batch, 0, (jnp.float32(3e38), jnp.int32(5)))
    assert np.isfinite(float(loss)) and float(scale) == pytest.approx(1.5e38) and int(good) == 0
    new = jax.tree.map(np.asarray, new)  # a host copy: the next step donates its inputs
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, np.asarray(b))), new, params)
    assert all(jax.tree.leaves(same))
    # a scale the float16 backward holds (these random weights' gradients reach ~20: 2**15 would overflow too)
    moved, state, loss, (scale, good) = step(new, state, batch, 0, (jnp.float32(2.0**7), jnp.int32(0)))
    assert int(good) == 1 and float(scale) == 2.0**7 and np.isfinite(float(loss))
    assert not all(
        jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), moved, new))
    )


def test_tf_fp16_overflow_step_is_skipped_and_the_scale_halved():
    tf = pytest.importorskip("tensorflow")
    from clip.tf import TFCLIPModel, loading
    from clip.train import tf as trainer

    model = TFCLIPModel(config(), dtype="mixed_float16")
    loading.assign_canonical(model, initial_weights())
    optimizer, variables = trainer.build_optimizer(model, 2, 1e-3, 1, 0.1, 1.0)
    scale = trainer.LossScaleState(3e38, 5)
    step = trainer.make_train_step(tf.distribute.get_strategy(), model, optimizer, variables, loss_scale=scale)
    batch = {k: tf.constant(v[None]) for k, v in random_batch().items()}
    loss = float(step(batch))
    assert np.isfinite(loss) and scale.state() == {"scale": pytest.approx(1.5e38), "good_steps": 0}
    after = loading.canonical_state(model)
    assert all(np.array_equal(initial_weights()[n], after[n]) for n in after)  # skipped
    assert int(optimizer.iterations.numpy()) == 0
    scale.scale.assign(2.0**7)
    step(batch)
    assert scale.state() == {"scale": 2.0**7, "good_steps": 1} and int(optimizer.iterations.numpy()) == 1
    assert not all(np.array_equal(initial_weights()[n], a) for n, a in loading.canonical_state(model).items())
