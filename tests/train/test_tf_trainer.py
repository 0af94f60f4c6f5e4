"""The TensorFlow trainer: AdamW follows the canonical decay rule, a few steps reduce the loss,
MirroredStrategy over 2 logical CPUs equals one device, tf.data reads in DataOrder and skips bad
rows, --resume continues exactly (on CPU TensorFlow reproduces the run bit for bit), and the output
loads in the other backends."""

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from clip.train import common  # noqa: E402
from clip.train import tf as trainer  # noqa: E402

from train_backends_helpers import assert_resume_is_exact, config, initial_weights, random_batch, run_script  # noqa: E402


def _model():
    from clip.tf import TFCLIPModel, loading

    model = TFCLIPModel(config())
    loading.assign_canonical(model, initial_weights())
    return model


def test_optimizer_excludes_gains_biases_and_embeddings_from_decay():
    model = _model()
    optimizer, variables = trainer.build_optimizer(
        model, steps=4, base_lr=1e-3, warmup=1, weight_decay=0.2, grad_clip=1.0
    )
    assert len(variables) == len(model.canonical_variables())
    from clip.common import params

    table = params.parameter_table(model.config, "CLIPModel")
    for name, (variable, _) in model.canonical_variables().items():
        assert optimizer._use_weight_decay(variable) == common.applies_weight_decay(name, table), name
    schedule = optimizer.learning_rate  # read at iterations 0
    assert float(schedule) == pytest.approx(common.learning_rate(0, 1e-3, 1, 4))


def test_a_few_adamw_steps_reduce_the_loss_and_clamp_logit_scale():
    model = _model()
    model.logit_scale.assign(9.0)
    strategy = tf.distribute.get_strategy()
    optimizer, variables = trainer.build_optimizer(
        model, steps=8, base_lr=2e-3, warmup=1, weight_decay=0.1, grad_clip=1.0
    )
    step = trainer.make_train_step(strategy, model, optimizer, variables)
    batch = {k: tf.constant(v[None]) for k, v in random_batch().items()}
    losses = []
    for _ in range(8):
        losses.append(float(step(batch)))
        assert float(model.logit_scale) <= common.LOGIT_SCALE_MAX + 1e-6
    assert losses[-1] < losses[0] - 0.2, losses


def test_mirrored_strategy_over_two_cpus_equals_one_device():
    """Loss and parameters after one SGD step: 2 replicas (all_gather loss) vs no strategy."""
    code = """
import json
from train_backends_helpers import use_logical_cpus
use_logical_cpus(2)
from clip.train import tf as trainer
strategy, _, _ = trainer.make_strategy()
assert strategy.num_replicas_in_sync == 2, strategy
from train_backends_helpers import tf_sgd_step, initial_weights, random_batch, max_differences
w, b = initial_weights(), random_batch()
one_loss, one = tf_sgd_step(w, b)
two_loss, two = tf_sgd_step(w, b, strategy=strategy)
d = max_differences(one, two)
print(json.dumps({"loss": [one_loss, two_loss], "max": max(d.values()), "moved": sum(float(abs(one[n] - w[n]).max()) > 1e-4 for n in w)}))
"""
    result = run_script(code, {"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert abs(result["loss"][0] - result["loss"][1]) < 1e-5
    assert result["max"] < 1e-5
    assert result["moved"] > 10


def test_tf_data_reads_in_data_order_and_skips_unreadable_items():
    class Flaky:
        def __len__(self):
            return 12

        def __getitem__(self, i):
            if i == 3:
                raise OSError("cannot identify image file")
            return i, f"caption {i}"

    class Reader(common.BatchReader):
        def encode(self, images, captions):
            n = len(images)
            return {
                "input_ids": np.asarray(images, np.int32)[:, None],
                "attention_mask": np.ones((n, 1), np.int32),
                "pixel_values": np.zeros((n, 1), np.float32),
            }

    reports = []
    order = common.DataOrder(12, 4, seed=1)
    dataset = trainer.make_dataset(Reader(Flaky(), None, 8, report=reports.append), order, 1, 5, accum=2)
    got = [b["input_ids"].numpy()[:, :, 0].tolist() for b in dataset]
    expected = [[[i if i != 3 else 4 for i in order.local_indices(2 * s + a)] for a in range(2)] for s in range(1, 5)]
    assert got == expected
    assert reports and "item 3 is unreadable" in reports[0]


def test_resume_continues_exactly_and_the_output_loads_in_flax(tmp_path):
    # Weights, AdamW slots and iteration count are restored exactly and the data order is fixed; on CPU
    # TensorFlow's kernels are deterministic for a fixed thread pool, so the runs agree bit for bit.
    assert_resume_is_exact(tmp_path, "tf", trainer.OPTIMIZER_FILE)
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert {"image_to_text_R@1", "text_to_image_R@10", "zero_shot_seen_combos"} <= metrics.keys()

    pytest.importorskip("jax")
    from clip.common.processor import CLIPProcessor
    from clip.flax import FlaxCLIPModel
    from clip.tf import TFCLIPModel

    processor = CLIPProcessor.from_pretrained(tmp_path / "full")
    inputs = {
        k: np.asarray(v)
        for k, v in processor(
            text=["a red circle", "a blue square"],
            images=[np.zeros((40, 40, 3), np.uint8)] * 2,
            padding=True,
            return_tensors="np",
        ).items()
    }
    ours = TFCLIPModel.from_pretrained(tmp_path / "full")(
        **{k: tf.constant(v) for k, v in inputs.items()}
    ).logits_per_image
    theirs = FlaxCLIPModel.from_pretrained(tmp_path / "full")(**inputs).logits_per_image
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-4, atol=1e-4)
