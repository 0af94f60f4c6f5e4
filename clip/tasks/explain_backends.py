"""Attention weights and their gradients, per framework, for clip.tasks.explain.

One function per backend takes the encoder's network and T (image, text) pairs and returns, as
numpy, the scaled similarity of each pair (exp(logit_scale) * cosine, what logits_per_image holds)
and, per layer of each tower, the attention weights A (T, heads, L, L) with the gradient of the
summed pair similarities with respect to them. Pair t only reaches row t of the batch, so row t of
each gradient is the gradient of similarity t alone: one backward pass serves every text.

- PyTorch: autograd.grad with respect to the weights the attention returns with
  output_attentions=True, which are the tensors it multiplies the values by.
- TensorFlow: a GradientTape over an eager call (not clip.tf.eager's cached graph, whose
  intermediate outputs the tape cannot differentiate with respect to).
- JAX: jax.grad with respect to zero probes added to the weights (clip.flax.layers.attention_probes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from clip.tasks.backends import Encoder


def attention_gradients(
    encoder: Encoder, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """(similarities (T,), vision [(A, dS/dA)] per layer, text [(A, dS/dA)] per layer), numpy float32."""
    run = {"pt": _pt, "tf": _tf, "flax": _flax}[encoder.backend]
    similarities, vision, text = run(encoder.network, pixel_values, input_ids, attention_mask)
    return np.asarray(similarities, np.float32), _as_numpy(vision), _as_numpy(text)


def _as_numpy(pairs):
    return [(np.asarray(a, np.float32), np.asarray(g, np.float32)) for a, g in pairs]


def _pt(net, pixel_values, input_ids, attention_mask):
    import torch

    parameter = next(net.parameters())
    device, dtype = parameter.device, parameter.dtype
    with torch.enable_grad():
        out = net(
            input_ids=torch.from_numpy(input_ids).to(device),
            pixel_values=torch.from_numpy(pixel_values).to(device, dtype),
            attention_mask=torch.from_numpy(attention_mask).to(device),
            output_attentions=True,
            return_dict=True,
        )
        similarities = out.logits_per_image.diagonal()
        weights = [*out.vision_model_output.attentions, *out.text_model_output.attentions]
        grads = torch.autograd.grad(similarities.sum(), weights)
    pairs = [(a.detach().float().cpu().numpy(), g.float().cpu().numpy()) for a, g in zip(weights, grads)]
    layers = len(out.vision_model_output.attentions)
    return similarities.detach().float().cpu().numpy(), pairs[:layers], pairs[layers:]


def _tf(net, pixel_values, input_ids, attention_mask):
    import tensorflow as tf

    eager = net.__dict__.get("eager_as_graph", True)
    net.eager_as_graph = False  # op by op, so that the tape sees the attention weights
    try:
        with tf.GradientTape() as tape:
            out = net(
                input_ids=input_ids,
                pixel_values=pixel_values,
                attention_mask=attention_mask,
                output_attentions=True,
                return_dict=True,
            )
            similarities = tf.linalg.diag_part(out.logits_per_image)
            total = tf.reduce_sum(tf.cast(similarities, tf.float32))
        weights = [*out.vision_model_output.attentions, *out.text_model_output.attentions]
        grads = tape.gradient(total, weights)
    finally:
        net.eager_as_graph = eager
    pairs = [(a.numpy(), g.numpy()) for a, g in zip(weights, grads)]
    layers = len(out.vision_model_output.attentions)
    return similarities.numpy(), pairs[:layers], pairs[layers:]


def _flax(net, pixel_values, input_ids, attention_mask):
    import jax
    import jax.numpy as jnp

    from clip.flax.layers import attention_probes

    vision, text = net.config.vision_config, net.config.text_config
    pairs, length = input_ids.shape
    tokens = pixel_values.shape[2] // vision.patch_size * (pixel_values.shape[3] // vision.patch_size) + 1
    shapes = [(pairs, vision.num_attention_heads, tokens, tokens)] * vision.num_hidden_layers
    shapes += [(pairs, text.num_attention_heads, length, length)] * text.num_hidden_layers
    probes = [jnp.zeros(shape, net.dtype) for shape in shapes]

    gradient = net.__dict__.get("_explain_gradient")
    if gradient is None:

        def summed_similarity(probes, params, pixel_values, input_ids, attention_mask):
            with attention_probes(probes):
                out = net(
                    input_ids, pixel_values, attention_mask, params=params, output_attentions=True, return_dict=True
                )
            similarities = jnp.diagonal(out.logits_per_image)
            weights = [*out.vision_model_output.attentions, *out.text_model_output.attentions]
            return similarities.astype(jnp.float32).sum(), (similarities, weights)

        # compiled (op by op, the backward pass of even a tiny model takes tens of seconds), and kept
        # with the network so that later calls of the same shapes reuse the compilation
        gradient = net.__dict__["_explain_gradient"] = jax.jit(jax.grad(summed_similarity, has_aux=True))
    grads, (similarities, weights) = gradient(probes, net.params, pixel_values, input_ids, attention_mask)
    found = [(np.asarray(a), np.asarray(g)) for a, g in zip(weights, grads)]
    return np.asarray(similarities), found[: vision.num_hidden_layers], found[vision.num_hidden_layers :]
