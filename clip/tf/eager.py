"""Eager calls through a cached TensorFlow graph.

Called eagerly, a Keras model pays Python and op-dispatch overhead for each of its ~500 ops:
a ViT-B/32 image at batch 1 spends 60% of its eager time there. The model's public methods
(`call`, `get_text_features`, `get_image_features`) are wrapped so that eager, inference calls
run a `tf.function` of the same method instead, from the second call of a kind on (a trace costs
a few eager calls): traced once per set of Python arguments, with the batch size (and, for text,
the length) left open, so new batch sizes and paddings reuse it.
Inputs of a graph call are checked eagerly first, on their concrete shapes (inside the graph the
open dimensions would pass every check); the towers skip their own checks while it is traced.

Not wrapped: calls inside a tf.function / fit / predict (already a graph), `training=True`
calls (eager training stays step-through debuggable), and inputs that are not plain arrays.
`tf.config.run_functions_eagerly(True)` or `model.eager_as_graph = False` turns it off.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref

import numpy as np
import tensorflow as tf

from clip.common import checks

_TEXT_INPUTS = ("input_ids", "attention_mask", "position_ids")  # (batch, length): both dims open
# config fields the methods read at trace time: a graph is only reused while they are unchanged
_CONFIG_FLAGS = ("output_attentions", "output_hidden_states", "return_dict")


def graph_when_eager(method):
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if not (getattr(self, "eager_as_graph", True) and tf.executing_eagerly()):
            return method(self, *args, **kwargs)
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            return method(self, *args, **kwargs)  # let the method raise its own error
        values = {k: v for k, v in bound.arguments.items() if k != "self"}
        tensors = {
            k: v for k, v in values.items() if isinstance(v, (tf.Tensor, np.ndarray)) and not isinstance(v, tf.Variable)
        }
        static = {k: v for k, v in values.items() if k not in tensors}
        if static.get("training") or not all(_hashable(v) for v in static.values()):
            return method(self, *args, **kwargs)
        tensors = {k: tf.convert_to_tensor(v) for k, v in tensors.items()}
        names = tuple(sorted(tensors))
        specs = tuple(tf.TensorSpec(_open_shape(n, tensors[n]), tensors[n].dtype) for n in names)
        flags = tuple(getattr(self.config, f, None) for f in _CONFIG_FLAGS)
        key = (method.__name__, tuple(sorted(static.items())), flags, names, specs)
        graphs = self.__dict__.get("_eager_graphs")
        if graphs is None:
            graphs = {}
            object.__setattr__(self, "_eager_graphs", graphs)  # outside Keras' attribute tracking
        fn = graphs.get(key)
        if fn is None:  # the first call of a kind runs op by op: one-off calls never pay for a trace
            graphs[key] = _SEEN_ONCE
            return method(self, *args, **kwargs)
        check_eager_inputs(self, signature, tensors, static)  # the towers skip theirs in this graph
        if fn is _SEEN_ONCE:
            fn = graphs[key] = _graph(method, weakref.ref(self), static, names, specs)
        return fn(*(tensors[n] for n in names))

    return wrapper


_SEEN_ONCE = object()
_tracing_own_graph = threading.local()


def inputs_checked_eagerly() -> bool:
    """True while tracing one of these graphs: check_eager_inputs has checked the concrete inputs,
    so a tower does not check them again (each public call checks its inputs once)."""
    return getattr(_tracing_own_graph, "active", False)


def values_may_set_shapes() -> bool:
    """True eagerly and while tracing one of these graphs (never compiled by XLA), where a
    tensor's shape may depend on values; False in any other tf.function, which may be XLA's."""
    return tf.executing_eagerly() or getattr(_tracing_own_graph, "active", False)


def _graph(method, model_ref, static, names, specs):
    def run(*tensors):
        _tracing_own_graph.active = True
        try:
            return method(model_ref(), **static, **dict(zip(names, tensors)))
        finally:
            _tracing_own_graph.active = False

    return tf.function(run, input_signature=list(specs))


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _open_shape(name, tensor):
    shape = list(tensor.shape)
    if shape:
        shape[0] = None  # batch
    if name in _TEXT_INPUTS and len(shape) > 1:
        shape[1] = None
    return shape


def check_eager_inputs(model, signature, tensors, static):
    """The checks a tower runs on static shapes, on the concrete ones, before the graph opens them."""
    params = signature.parameters
    checks.check_loss_inputs(static.get("return_loss"), tensors.get("input_ids"), tensors.get("pixel_values"))
    if "pixel_values" in params and hasattr(model, "vision_model"):  # vision first, as the towers run
        model.vision_model.check_inputs(
            tensors.get("pixel_values", static.get("pixel_values")), bool(static.get("interpolate_pos_encoding"))
        )
    if "input_ids" in params and hasattr(model, "text_model"):
        model.text_model.check_inputs(*(tensors.get(n, static.get(n)) for n in _TEXT_INPUTS))
