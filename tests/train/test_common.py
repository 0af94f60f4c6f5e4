"""clip.train.common against hand-computed values: schedule, decay rule, metrics, data order."""

import math

import numpy as np
import pytest

from clip.train import common


def test_schedule_warmup_then_cosine():
    lr = lambda s: common.learning_rate(s, base_lr=1.0, warmup_steps=4, total_steps=12)  # noqa: E731
    assert [lr(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # cosine over the 8 steps after warmup: 0.5 * (1 + cos(pi * k / 8))
    assert lr(4) == 1.0
    assert lr(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 8)))
    assert lr(8) == pytest.approx(0.5)
    assert lr(12) == pytest.approx(0.0, abs=1e-12)
    assert lr(20) == pytest.approx(0.0, abs=1e-12)  # stays at the floor past the end
    assert common.learning_rate(12, 2.0, 4, 12, min_lr_ratio=0.1) == pytest.approx(0.2)
    assert common.learning_rate(8, 2.0, 4, 12, min_lr_ratio=0.1) == pytest.approx(0.2 + 1.8 * 0.5)
    assert common.learning_rate(0, 3.0, 0, 10) == 3.0  # no warmup: cosine from the first step


def test_weight_decay_rule_on_canonical_names():
    decay = [
        "text_model.encoder.layers.0.self_attn.q_proj.weight",
        "text_model.encoder.layers.0.mlp.fc1.weight",
        "vision_model.embeddings.patch_embedding.weight",
        "visual_projection.weight",
        "text_projection.weight",
    ]
    no_decay = [
        "logit_scale",
        "text_model.embeddings.token_embedding.weight",
        "text_model.embeddings.position_embedding.weight",
        "vision_model.embeddings.position_embedding.weight",
        "vision_model.embeddings.class_embedding",
        "text_model.encoder.layers.0.self_attn.q_proj.bias",
        "text_model.encoder.layers.0.layer_norm1.weight",
        "text_model.encoder.layers.0.layer_norm2.bias",
        "text_model.final_layer_norm.weight",
        "vision_model.pre_layrnorm.weight",
        "vision_model.post_layernorm.bias",
    ]
    from clip.common import params
    from clip.common.config import CLIPConfig

    table = params.parameter_table(CLIPConfig(), "CLIPModel")
    assert common.split_weight_decay(decay + no_decay, table) == (decay, no_decay)


def test_weight_decay_rule_covers_a_whole_model():
    from clip.common import params, weights
    from clip.common.config import CLIPConfig

    table = params.parameter_table(CLIPConfig(), "CLIPModel")
    expected = weights.expected_parameters(CLIPConfig(), "CLIPModel")
    assert list(expected) == list(table)
    for name, (_, kind) in expected.items():
        assert common.applies_weight_decay(name, table) == (kind in ("linear_weight", "conv_weight")), name


def test_recall_at_k_hand_computed():
    # query i's match is candidate i; ranks of the matches: 0, 2, 1, 3
    sim = np.array([[0.9, 0.1, 0.2, 0.0], [0.8, 0.5, 0.7, 0.0], [0.1, 0.9, 0.3, 0.0], [0.5, 0.6, 0.7, 0.4]])
    assert common.recall_at_k(sim, ks=(1, 2, 3, 4)) == {1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0}


def test_retrieval_metrics_both_directions():
    image = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = np.array([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0]])
    m = common.retrieval_metrics(image, text, ks=(1, 2))
    # image i's match t_i ranks: i0: 1 (t1 higher), i1: 2 (t2, t0 higher), i2: 1 (t0 higher, t1 ties)
    assert m["image_to_text_R@1"] == pytest.approx(0.0)
    assert m["image_to_text_R@2"] == pytest.approx(2 / 3)
    # text j's match i_j ranks: t0: 0, t1: 2 (i0, i2 higher), t2: 1 (i1 higher)
    assert m["text_to_image_R@1"] == pytest.approx(1 / 3)
    assert m["text_to_image_R@2"] == pytest.approx(2 / 3)


def test_zero_shot_accuracy():
    labels = np.eye(3)
    images = np.array([[1.0, 0.1, 0.0], [0.0, 0.2, 1.0], [0.0, 0.0, 1.0]])
    assert common.zero_shot_accuracy(images, labels, [0, 2, 1]) == pytest.approx(2 / 3)


def test_data_order_is_seeded_and_split_over_ranks():
    one = common.DataOrder(100, 8, seed=3)
    again = common.DataOrder(100, 8, seed=3)
    assert [one.local_indices(m) for m in range(30)] == [again.local_indices(m) for m in range(30)]
    assert one.batches_per_epoch == 12
    epoch0 = np.concatenate([one.global_indices(m) for m in range(12)])
    assert len(set(epoch0.tolist())) == 96  # no repeats within an epoch
    ranks = [common.DataOrder(100, 8, seed=3, world=2, rank=r) for r in range(2)]
    for m in (0, 5, 13):
        assert ranks[0].local_indices(m) + ranks[1].local_indices(m) == one.local_indices(m)
    with pytest.raises(ValueError, match="divisible"):
        common.DataOrder(100, 7, seed=0, world=2)


def test_total_steps_from_epochs():
    assert common.total_steps(None, 2, dataset_size=100, global_batch=10, accum_steps=2) == 10
    assert common.total_steps(7, None, 100, 10, 1) == 7
    with pytest.raises(ValueError):
        common.total_steps(None, None, 100, 10, 1)


def test_named_sizes_build_valid_configs():
    from clip.common.config import CLIPConfig

    for name in common.SIZES:
        CLIPConfig.from_dict(common.build_config_dict(name))
    with pytest.raises(ValueError, match="neither a size"):
        common.build_config_dict("enormous")


def test_training_retrieval_metrics_are_eval_retrievals_with_hand_computed_mrr():
    from clip.tasks.retrieval import retrieval_metrics as eval_retrieval_metrics

    image = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    text = np.array([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0]])
    m = common.retrieval_metrics(image, text, ks=(1, 2))
    # the ranks of test_retrieval_metrics_both_directions, 1-based: images 2, 3, 2; texts 1, 3, 2
    assert m["image_to_text_MRR"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert m["text_to_image_MRR"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    nested = eval_retrieval_metrics(unit(image), unit(text), [0, 1, 2], ks=(1, 2))  # what `clip eval-retrieval` reports
    assert m == {f"{d}_{k}": v for d in ("image_to_text", "text_to_image") for k, v in nested[d].items()}
