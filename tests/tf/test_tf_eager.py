"""Eager calls through a cached graph (clip.tf.eager): same numbers as running the ops eagerly,
one trace per set of Python arguments, and the same clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_helpers import as_tf, assert_close_outputs, make_inputs, make_pair


def graphs(model):
    """The traced graphs (a first call of a kind only marks its key)."""
    return {
        k: v for k, v in model.__dict__.get("_eager_graphs", {}).items() if hasattr(v, "experimental_get_tracing_count")
    }


def op_by_op(model, fn):
    """fn() with the wrapper off: every op dispatched eagerly, the reference."""
    model.eager_as_graph = False
    try:
        return fn()
    finally:
        model.eager_as_graph = True


def test_eager_calls_equal_op_by_op_and_trace_once_per_argument_set(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPModel", tmp_path)
    for batch, length in ((3, 7), (1, 7), (4, 5), (2, 3)):  # new batch sizes and lengths: no retrace
        inputs = as_tf(make_inputs("quick_gelu", batch=batch))
        inputs["input_ids"], inputs["attention_mask"] = (
            inputs["input_ids"][:, :length],
            inputs["attention_mask"][:, :length],
        )
        image = model.get_image_features(pixel_values=inputs["pixel_values"])
        text = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        out = model(**inputs, output_hidden_states=True)
        np.testing.assert_allclose(
            image, op_by_op(model, lambda: model.get_image_features(pixel_values=inputs["pixel_values"])), atol=1e-5
        )
        np.testing.assert_allclose(
            text,
            op_by_op(model, lambda: model.get_text_features(**{k: inputs[k] for k in ("input_ids", "attention_mask")})),
            atol=1e-5,
        )
        assert_close_outputs(out, op_by_op(model, lambda: model(**inputs, output_hidden_states=True)), atol=1e-5)
    assert len(graphs(model)) == 3
    assert all(fn.experimental_get_tracing_count() == 1 for fn in graphs(model).values())


def test_numpy_inputs_and_sub_models(tmp_path):
    for model_class in ("CLIPTextModelWithProjection", "CLIPVisionModel"):
        model, ref = make_pair("gelu", model_class, tmp_path / model_class)
        inputs = make_inputs("gelu")
        args = (
            {"pixel_values": inputs["pixel_values"]}
            if "Vision" in model_class
            else {k: inputs[k] for k in ("input_ids", "attention_mask")}
        )
        model(**args)
        assert not graphs(model), "a one-off call runs op by op"
        out = model(**args)
        assert graphs(model), "a repeated eager call with numpy inputs runs the graph"
        assert_close_outputs(out, op_by_op(model, lambda: model(**args)), atol=1e-5)


def test_errors_are_the_eager_ones_whatever_was_traced(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPModel", tmp_path)
    inputs = as_tf(make_inputs("quick_gelu"))
    model(**inputs)  # traced with the batch and length open
    with pytest.raises(ValueError, match="pixel_values"):
        model.get_image_features(pixel_values=tf.zeros((2, 3, 17, 16)))
    with pytest.raises(ValueError, match="input_ids"):
        model.get_text_features(input_ids=tf.ones((2, 17), tf.int32))  # longer than the 16 positions
    with pytest.raises(ValueError, match="attention_mask"):
        model.get_text_features(input_ids=tf.ones((2, 5), tf.int32), attention_mask=tf.ones((2, 6), tf.int32))
    with pytest.raises(ValueError, match="as many texts as images"):
        model(input_ids=inputs["input_ids"][:2], pixel_values=inputs["pixel_values"], return_loss=True)


def test_interpolated_sizes_each_get_their_graph(tmp_path):
    model, ref = make_pair("quick_gelu", "CLIPVisionModelWithProjection", tmp_path)
    for size in ((24, 24), (20, 28), (24, 24), (20, 28)):
        pixels = tf.random.normal((2, 3, *size))
        out = model(pixel_values=pixels, interpolate_pos_encoding=True)
        assert_close_outputs(
            out, op_by_op(model, lambda: model(pixel_values=pixels, interpolate_pos_encoding=True)), atol=1e-5
        )
    assert len(graphs(model)) == 2


def test_training_calls_stay_op_by_op_and_gradients_flow_through_the_graph(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPModel", tmp_path)
    inputs = as_tf(make_inputs("quick_gelu"))
    model(**inputs, return_loss=True, training=True)
    assert not graphs(model)

    def grads():
        with tf.GradientTape() as tape:
            loss = model(**inputs, return_loss=True).loss
        return tape.gradient(loss, model.trainable_variables)

    grads()
    through_graph = grads()
    assert graphs(model)
    for a, b in zip(through_graph, op_by_op(model, grads)):
        np.testing.assert_allclose(tf.convert_to_tensor(a), tf.convert_to_tensor(b), atol=1e-5)


def test_run_functions_eagerly_switches_it_off(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPTextModel", tmp_path)
    inputs = make_inputs("quick_gelu")
    tf.config.run_functions_eagerly(True)
    try:
        out = model(input_ids=inputs["input_ids"])
    finally:
        tf.config.run_functions_eagerly(False)
    assert_close_outputs(out, op_by_op(model, lambda: model(input_ids=inputs["input_ids"])), atol=1e-5)


@pytest.mark.parametrize("name", ["quick_gelu", "legacy_eos"])
def test_text_features_run_only_up_to_the_last_pooled_token(tmp_path, name):
    # texts padded to every position: eagerly and in the cached graph the tokens after the last end
    # token are not computed; under XLA (static shapes) they are; the features are the same
    import torch

    from clip.tf.towers import CLIPTextEmbeddings
    from tf_helpers import CONFIGS, as_torch

    model, ref = make_pair(name, "CLIPModel", tmp_path)
    text = CONFIGS[name]["text"]
    length, ends = text["max_position_embeddings"], [4, 6, 9]
    end = text["eos_token_id"] if text["eos_token_id"] != 2 else text["vocab_size"] - 1
    ids = np.full((3, length), 1, np.int64)
    mask = np.zeros((3, length), np.int64)
    for i, n in enumerate(ends):
        ids[i, :n] = 5 + i
        ids[i, n] = end
        mask[i, : n + 1] = 1
    with torch.no_grad():
        expected = ref.get_text_features(**as_torch({"input_ids": ids, "attention_mask": mask})).numpy()

    seen = []
    original = CLIPTextEmbeddings.call

    def spy(self, input_ids, position_ids=None):
        if tf.executing_eagerly():
            seen.append(int(input_ids.shape[1]))
        return original(self, input_ids, position_ids)

    CLIPTextEmbeddings.call = spy
    try:
        eager = model.get_text_features(input_ids=ids, attention_mask=mask)  # first call: op by op
    finally:
        CLIPTextEmbeddings.call = original
    assert seen == [max(ends) + 1]
    graph = model.get_text_features(input_ids=ids, attention_mask=mask)  # second: the cached graph
    assert graphs(model)
    xla = tf.function(lambda i, m: model.get_text_features(input_ids=i, attention_mask=m), jit_compile=True)(ids, mask)
    for got in (eager, graph, xla):
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_config_flags_changed_after_tracing_are_honoured(tmp_path):
    model, _ = make_pair("quick_gelu", "CLIPTextModel", tmp_path)
    ids = make_inputs("quick_gelu")["input_ids"]
    model(input_ids=ids)
    assert model(input_ids=ids).hidden_states is None  # traced with output_hidden_states off
    model.config.output_hidden_states = True
    assert len(model(input_ids=ids).hidden_states) == model.config.num_hidden_layers + 1
