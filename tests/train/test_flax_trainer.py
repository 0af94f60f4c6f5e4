"""The JAX trainer: the decay mask follows the canonical rule, a few steps reduce the loss, a mesh of
4 devices equals one device, --resume is bitwise, the output loads elsewhere, bad rows are skipped."""

import json

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

from clip.train import common  # noqa: E402
from clip.train import flax as trainer  # noqa: E402

from train_backends_helpers import assert_resume_is_exact, config, initial_weights, random_batch, run_script  # noqa: E402


def _model_and_params():
    from clip.flax import FlaxCLIPModel, loading

    model = FlaxCLIPModel(config(), _do_init=False)
    return model, loading.to_params(initial_weights(), loading.expected_parameters(model))


def test_decay_mask_follows_the_canonical_rule():
    cfg = config()
    paths = trainer.param_paths(cfg)
    mask = trainer.by_name(trainer.decay_mask(cfg), paths)
    from clip.common import params

    table = params.parameter_table(cfg, "CLIPModel")
    assert mask == {name: common.applies_weight_decay(name, table) for name in paths}
    assert mask["visual_projection.weight"] and not mask["logit_scale"]
    assert not mask["text_model.embeddings.token_embedding.weight"] and not mask["vision_model.pre_layrnorm.weight"]


def test_a_few_adamw_steps_reduce_the_loss_and_clamp_logit_scale():
    model, params = _model_and_params()
    params["logit_scale"] = np.float32(9.0)  # above ln 100: clamped after the first step
    tx = trainer.build_optimizer(model.config, steps=8, base_lr=2e-3, warmup=1, weight_decay=0.1, grad_clip=1.0)
    step = trainer.make_train_step(model, tx, seed=0, dropout=False)
    batch = {k: v[None] for k, v in random_batch().items()}
    state = tx.init(params)
    losses = []
    for _ in range(8):
        params, state, loss = step(params, state, batch, 0)
        assert float(params["logit_scale"]) <= common.LOGIT_SCALE_MAX + 1e-7
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.2, losses


def test_bf16_step_keeps_float32_params():
    from clip.flax import FlaxCLIPModel, loading

    model = FlaxCLIPModel(config(), dtype=jax.numpy.bfloat16, _do_init=False)
    params = loading.to_params(initial_weights(), loading.expected_parameters(model))
    tx = trainer.build_optimizer(model.config, steps=2, base_lr=1e-3, warmup=1, weight_decay=0.1, grad_clip=1.0)
    batch = {k: np.stack([v, v]) for k, v in random_batch().items()}  # two accumulated micro-steps
    params, _, loss = trainer.make_train_step(model, tx, seed=0, dropout=False)(params, tx.init(params), batch, 0)
    assert np.isfinite(float(loss))
    assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype("float32")}


def test_mesh_of_four_devices_equals_one_device():
    """Loss and parameters after one SGD step: batch sharded over 4 host devices vs one device."""
    code = """
import json, jax
from train_backends_helpers import flax_sgd_step, initial_weights, random_batch, max_differences
assert len(jax.devices()) == 4, jax.devices()
w, b = initial_weights(), random_batch()
one_loss, one = flax_sgd_step(w, b)
mesh_loss, mesh = flax_sgd_step(w, b, sharded=True)
d = max_differences(one, mesh)
print(json.dumps({"loss": [one_loss, mesh_loss], "max": max(d.values()), "moved": sum(float(abs(one[n] - w[n]).max()) > 1e-4 for n in w), "n": len(w)}))
"""
    result = run_script(code, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"})
    assert abs(result["loss"][0] - result["loss"][1]) < 1e-5
    assert result["max"] < 1e-5
    assert result["moved"] > 10  # the step changed the parameters, so equal updates are a real check


def test_prefetcher_reports_unreadable_items_and_keeps_the_order():
    class Flaky:
        def __len__(self):
            return 12

        def __getitem__(self, i):
            if i == 5:
                raise OSError("truncated file")
            return i, f"caption {i}"

    class Reader(common.BatchReader):
        def encode(self, images, captions):
            return {"items": np.asarray(images)}

    reports = []
    reader = Reader(Flaky(), None, 8, report=reports.append)
    order = common.DataOrder(12, 4, seed=0)
    got = [b["items"] for b in trainer.Prefetcher(reader, order, 0, 6, accum=1, workers=2)]
    expected = [[i if i != 5 else 6 for i in order.local_indices(m)] for m in range(6)]
    assert [g[0].tolist() for g in got] == expected
    assert len(reports) == 1 and "item 5 is unreadable" in reports[0] and "truncated file" in reports[0]


def test_resume_reproduces_an_uninterrupted_run_bitwise_and_loads_in_pt(tmp_path):
    assert_resume_is_exact(tmp_path, "flax", trainer.OPTIMIZER_FILE)
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert {"image_to_text_R@1", "text_to_image_R@10", "zero_shot_held_out_combos"} <= metrics.keys()

    torch = pytest.importorskip("torch")
    from clip.common.processor import CLIPProcessor
    from clip.flax import FlaxCLIPModel
    from clip.pt import CLIPModel

    processor = CLIPProcessor.from_pretrained(tmp_path / "full")
    inputs = processor(
        text=["a red circle", "a blue square"],
        images=[np.zeros((40, 40, 3), np.uint8)] * 2,
        padding=True,
        return_tensors="np",
    )
    ours = FlaxCLIPModel.from_pretrained(tmp_path / "full")(
        **{k: np.asarray(v) for k, v in inputs.items()}
    ).logits_per_image
    with torch.no_grad():
        pt_logits = CLIPModel.from_pretrained(tmp_path / "full")(
            **{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}
        ).logits_per_image
    np.testing.assert_allclose(np.asarray(ours), pt_logits.numpy(), rtol=1e-4, atol=1e-4)
