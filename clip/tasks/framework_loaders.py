"""Loading a checkpoint into each framework for clip.tasks.backends.load_encoder: the device a
model is placed on, the refusal of incomplete checkpoints, the weights' fingerprint, and one loader
per backend (`_load_pt`, `_load_tf`, `_load_flax`) returning the encoder's model calls.

Each framework is imported inside its loader, when an encoder is loaded, never before.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np

from clip.common import loading, weights
from clip.errors import TaskError
from clip.tasks import compiled

# An image call: (N, 3, H, W) float32 pixels (numpy, or a tensor already on the device) -> (N, D) float32 features.
ImageCall: TypeAlias = Callable[[Any], np.ndarray]
# A text call: (M, L) int64 token ids and attention mask -> (M, D) float32 features.
TextCall: TypeAlias = Callable[[np.ndarray, np.ndarray], np.ndarray]
# What a loader returns: image call, text call, logit_scale (float32's), the model's CLIPConfig (Any:
# its fields are set from a table of defaults, which the checker cannot see), weights fingerprint,
# the device in the framework's words, and the framework's CLIPModel.
LoadedModel: TypeAlias = tuple[ImageCall, TextCall, float, Any, str, str, Any]
Place: TypeAlias = "tuple[str, int] | None"  # parse_device's answer: None for the framework's choice


class _HeldRecords(logging.Handler):
    """Keeps the log records it is given, to be passed on or dropped later."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def from_pretrained_complete(cls: Any, path: str, **kwargs: Any) -> Any:
    """cls.from_pretrained(path, **kwargs), refused (TaskError) when the checkpoint lacks weights the
    model needs: a library call may initialize them (transformers' behaviour, with a warning), but a
    task would answer with confident probabilities from random weights. The loader's own warning
    and log lines about them are held back for the one error; its other lines are passed on."""
    logger, held = logging.getLogger("clip"), _HeldRecords()
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(held)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*newly initialized", category=UserWarning)
            loaded = cls.from_pretrained(path, output_loading_info=True, **kwargs)
    finally:
        logger.removeHandler(held)
        logger.propagate = propagate
    net, info = loaded[0], loaded[-1]
    if info["missing_keys"]:
        total = len(weights.expected_parameters(net.config, "CLIPModel"))
        message = loading.missing_weights_message(path, info["missing_keys"], total)
        raise TaskError(message + "; the tasks need a complete checkpoint")
    for record in held.records:
        logger.handle(record)
    return net


def parse_device(device: str | None) -> Place:
    """ "auto" -> None; "cpu" -> ("cpu", 0); "cuda", "gpu", "cuda:N", "gpu:N" -> ("gpu", N)."""
    text = str(device).strip().lower()
    if text == "auto":
        return None
    kind, _, index = text.partition(":")
    if (
        kind in ("cpu", "cuda", "gpu")
        and (not index or index.isdigit())
        and not (kind == "cpu" and index not in ("", "0"))
    ):
        return ("cpu" if kind == "cpu" else "gpu", int(index or 0))
    raise TaskError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def weights_fingerprint(model: Any, backend: str) -> str:
    """clip.common.weights.fingerprint of a model of `backend` ("pt", "tf" or "flax"): its canonical
    arrays through the backend's adapter, one tensor at a time on the host; the same for the same
    weights in every backend."""
    adapter = importlib.import_module(f"clip.{backend}.adapter")
    return weights.fingerprint(adapter.canonical_arrays(model).items())


def _no_gpu(backend: str, index: int, seen: int) -> TaskError:
    return TaskError(f"device cuda:{index} asked for, but {backend} sees {seen} GPU(s); use --device cpu or auto")


def _load_pt(path: str, place: Place, dtype: str, compile: bool = False) -> LoadedModel:
    import torch

    from clip.pt import CLIPModel

    if place is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif place[0] == "gpu":
        if place[1] >= torch.cuda.device_count():
            raise _no_gpu("torch", place[1], torch.cuda.device_count())
        device = torch.device("cuda", place[1])
    else:
        device = torch.device("cpu")
    net = from_pretrained_complete(CLIPModel, path, dtype="float32", device=device).eval()
    # the checkpoint's identity, before any cast: the same whatever dtype the vectors are computed in
    fingerprint = weights_fingerprint(net, "pt")
    logit_scale = net.logit_scale.item()  # in float32: a bfloat16 temperature would shift every probability
    net = net.to(getattr(torch, dtype))
    # texts trimmed on the host: the tower never waits for the device to say where they end
    image_fn, text_fn = compiled.pt_calls(net, device, compile=compile)
    return image_fn, text_fn, logit_scale, net.config, fingerprint, str(device), net


def _load_tf(path: str, place: Place, dtype: str) -> LoadedModel:
    import contextlib

    from clip.tasks.quiet_tensorflow import import_tensorflow_quietly

    tf = import_tensorflow_quietly()

    from clip.tf import TFCLIPModel

    gpus = tf.config.list_physical_devices("GPU")
    if place is not None and place[0] == "gpu" and place[1] >= len(gpus):
        raise _no_gpu("TensorFlow", place[1], len(gpus))
    tf_device = None if place is None else f"/{place[0].upper()}:{place[1]}"
    where = (lambda: tf.device(tf_device)) if tf_device else contextlib.nullcontext  # None: TensorFlow's own placement
    with where():  # mixed precision: float32 variables (the checkpoint's values), narrow compute
        net = from_pretrained_complete(TFCLIPModel, path, **({} if dtype == "float32" else {"dtype": f"mixed_{dtype}"}))

    def image_fn(pixels: Any) -> np.ndarray:
        with where():
            return np.asarray(net.get_image_features(pixel_values=pixels), dtype=np.float32)

    def text_fn(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with where():
            return np.asarray(net.get_text_features(input_ids=ids, attention_mask=mask), dtype=np.float32)

    fingerprint = weights_fingerprint(net, "tf")
    device = tf_device or ("/GPU:0" if gpus else "/CPU:0")
    return image_fn, text_fn, float(np.asarray(net.logit_scale)), net.config, fingerprint, device, net


def _load_flax(path: str, place: Place, dtype: str, attention: str = "matmul") -> LoadedModel:
    import jax

    from clip.flax import FlaxCLIPModel

    if place is None:
        device = jax.devices()[0]  # JAX's default: its accelerator when it has one
    else:
        try:
            found = jax.devices(place[0])
        except RuntimeError:  # no backend of that kind
            found = []
        if place[1] >= len(found):
            raise _no_gpu("JAX", place[1], len(found)) if place[0] == "gpu" else TaskError("JAX sees no CPU device")
        device = found[place[1]]
    net = from_pretrained_complete(FlaxCLIPModel, path, dtype=getattr(jax.numpy, dtype))
    compiled.set_flax_attention(net, attention)  # before the calls are traced
    fingerprint = weights_fingerprint(net, "flax")
    logit_scale = float(np.asarray(net.params["logit_scale"]))  # in float32, before the cast
    # the params in the compute dtype, committed to the device: the jitted calls run where they are
    net.params = params = jax.device_put(jax.tree.map(lambda a: a.astype(dtype), net.params), device)
    image_jit = jax.jit(lambda p, x: net.get_image_features(x, params=p))
    text_jit = jax.jit(lambda p, ids, mask: net.get_text_features(ids, mask, params=p))
    pad_id = net.config.text_config.pad_token_id

    def image_fn(pixels: Any) -> np.ndarray:
        return np.asarray(image_jit(params, pixels), dtype=np.float32)

    def text_fn(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # pad the length to a multiple of 8 so that a few compiled shapes serve every batch; the
        # added positions are masked out and lie after the end token, so the result is unchanged
        extra = -ids.shape[1] % 8
        if extra and ids.shape[1] + extra <= net.config.text_config.max_position_embeddings:
            ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=pad_id)
            mask = np.pad(mask, ((0, 0), (0, extra)))
        return np.asarray(text_jit(params, ids, mask), dtype=np.float32)

    return image_fn, text_fn, logit_scale, net.config, fingerprint, str(device), net
