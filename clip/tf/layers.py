"""The transformer blocks both CLIP towers share, in Keras 3: attention, MLP, pre-LN encoder layer, encoder.

A translation of clip/pt/layers.py (same classes, attribute names, argument names and order, with
`training` last). Sublayers are called as `layer(x, ...)`, every argument after the input by
keyword (Keras 3 takes only tensors positionally); Keras' own Dense and LayerNormalization
inside the blocks go through `linear` and `normalize`, functions of their weights, because
Keras' per-call overhead (about 1 ms a call eagerly) would cost more than their arithmetic.
Towers in clip.tf.towers, public models in clip.tf.modeling.

Shapes: B batch, L tokens, D width, H heads, d head width (D = H * d).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from clip.common.outputs import BaseModelOutput
from clip.tf.kernels import linear


def quick_gelu(x):
    return x * tf.sigmoid(1.702 * x)


def gelu_tanh(x):
    return tf.nn.gelu(x, approximate=True)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": tf.nn.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": tf.nn.relu,
}


def attention_weights(q, k, bias, is_causal, scale):
    """softmax(q k^T * scale + bias): (B,H,L,d) x2 -> (B,H,L,L); is_causal: the causal bias instead.

    Scores and softmax in float32 whatever the compute dtype (as Keras' mixed precision does).
    """
    scores = tf.cast(tf.matmul(q * tf.cast(scale, q.dtype), k, transpose_b=True), tf.float32)  # BHLd x BHdL -> BHLL
    if is_causal:
        bias = causal_bias(tf.shape(q)[2])
    if bias is not None:
        scores = scores + bias
    return tf.cast(tf.nn.softmax(scores, axis=-1), q.dtype)


def causal_bias(length):
    # additive: float32's minimum above the diagonal (not -inf, so rows stay finite), as transformers
    positions = tf.range(length)
    return tf.where(positions[None, :] > positions[:, None], np.finfo(np.float32).min, 0.0)  # L,L


class CLIPAttention(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False  # keep the float32 bias float32 under mixed precision
        self.num_heads, self.head_dim, self.width = config.num_attention_heads, config.head_dim, config.hidden_size
        self.scale = self.head_dim**-0.5
        self.k_proj = keras.layers.Dense(self.width, name="k_proj", dtype=self.dtype_policy)
        self.v_proj = keras.layers.Dense(self.width, name="v_proj", dtype=self.dtype_policy)
        self.q_proj = keras.layers.Dense(self.width, name="q_proj", dtype=self.dtype_policy)
        self.out_proj = keras.layers.Dense(self.width, name="out_proj", dtype=self.dtype_policy)
        # only when used: a Dropout layer carries a seed variable
        self.dropout = (
            keras.layers.Dropout(config.attention_dropout, name="dropout", dtype=self.dtype_policy)
            if config.attention_dropout
            else None
        )

    def build(self, input_shape=None):
        for proj in (self.k_proj, self.v_proj, self.q_proj, self.out_proj):
            proj.build((None, self.width))

    def call(self, x, bias=None, is_causal=False, output_attentions=False, training=False):
        B, L = tf.shape(x)[0], tf.shape(x)[1]
        split = lambda t: tf.transpose(tf.reshape(t, (B, L, self.num_heads, self.head_dim)), (0, 2, 1, 3))  # noqa: E731 BLD -> BLHd -> BHLd
        q, k, v = split(linear(self.q_proj, x)), split(linear(self.k_proj, x)), split(linear(self.v_proj, x))
        weights = attention_weights(q, k, bias, is_causal, self.scale)
        dropped = self.dropout(weights, training=training) if self.dropout is not None else weights
        out = tf.reshape(tf.transpose(tf.matmul(dropped, v), (0, 2, 1, 3)), (B, L, self.width))  # BHLd -> BLHd -> BLD
        return linear(self.out_proj, out), (weights if output_attentions else None)

    def attend_one(self, x, query, bias=None, training=False):
        """Attention output for one query per sequence: x (B,L,D), query (B,D), bias (B,1,1,L) -> (B,D)."""
        B, L = tf.shape(x)[0], tf.shape(x)[1]
        split = lambda t, n: tf.transpose(tf.reshape(t, (B, n, self.num_heads, self.head_dim)), (0, 2, 1, 3))  # noqa: E731 BnD -> BHnd
        q = split(linear(self.q_proj, query), 1)  # B,H,1,d
        k, v = split(linear(self.k_proj, x), L), split(linear(self.v_proj, x), L)
        weights = attention_weights(q, k, bias, False, self.scale)  # B,H,1,L
        weights = self.dropout(weights, training=training) if self.dropout is not None else weights
        return linear(self.out_proj, tf.reshape(tf.matmul(weights, v), (B, self.width)))  # B,H,1,d -> BD


class CLIPMLP(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.width, self.inner = config.hidden_size, config.intermediate_size
        self.activation_fn = ACTIVATIONS[config.hidden_act]
        self.fc1 = keras.layers.Dense(self.inner, name="fc1", dtype=self.dtype_policy)
        self.fc2 = keras.layers.Dense(self.width, name="fc2", dtype=self.dtype_policy)

    def build(self, input_shape=None):
        self.fc1.build((None, self.width))
        self.fc2.build((None, self.inner))

    def call(self, x):
        return linear(self.fc2, self.activation_fn(linear(self.fc1, x)))


def normalize(norm, x):
    """norm(x) (a keras LayerNormalization) in float32, as Keras computes it, without the call overhead."""
    x32 = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
    y = (x32 - mean) * tf.math.rsqrt(variance + norm.epsilon) * tf.cast(norm.gamma, tf.float32) + tf.cast(
        norm.beta, tf.float32
    )
    return tf.cast(y, x.dtype)


def layer_norm(config, name, dtype):
    return keras.layers.LayerNormalization(epsilon=config.layer_norm_eps, name=name, dtype=dtype)  # computes in float32


class CLIPEncoderLayer(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False  # as CLIPAttention
        self.width = config.hidden_size
        self.self_attn = CLIPAttention(config, name="self_attn", dtype=self.dtype_policy)
        self.layer_norm1 = layer_norm(config, "layer_norm1", self.dtype_policy)
        self.mlp = CLIPMLP(config, name="mlp", dtype=self.dtype_policy)
        self.layer_norm2 = layer_norm(config, "layer_norm2", self.dtype_policy)

    def build(self, input_shape=None):
        for sub in (self.self_attn, self.layer_norm1, self.mlp, self.layer_norm2):
            sub.build((None, self.width))

    def call(self, x, bias=None, is_causal=False, output_attentions=False, training=False):
        attn, weights = self.self_attn(
            normalize(self.layer_norm1, x),
            bias=bias,
            is_causal=is_causal,
            output_attentions=output_attentions,
            training=training,
        )
        x = x + attn
        x = x + self.mlp(normalize(self.layer_norm2, x))
        return x, weights

    def output_at(self, x, index, bias=None, training=False):
        """The layer's output at position index[b] of each sequence, (B,L,D) -> (B,D).

        Pooling reads one token of the last layer, so only that token needs its query, its
        residual and its MLP: about 1/num_layers of the tower's work saved, exactly.
        """
        h = normalize(self.layer_norm1, x)
        y = tf.gather(x, index, batch_dims=1) + self.self_attn.attend_one(
            h, tf.gather(h, index, batch_dims=1), bias, training
        )  # BD
        return y + self.mlp(normalize(self.layer_norm2, y))


class CLIPEncoder(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False  # as CLIPAttention
        self.layers = [
            CLIPEncoderLayer(config, name=f"layers.{i}", dtype=self.dtype_policy)
            for i in range(config.num_hidden_layers)
        ]
        self.gradient_checkpointing = False

    def build(self, input_shape=None):
        for layer in self.layers:
            layer.build(input_shape)

    def call(self, x, bias=None, is_causal=False, output_attentions=False, output_hidden_states=False, training=False):
        states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for layer in self.layers:
            x, weights = self._run(layer, x, bias, is_causal, output_attentions, training)
            if output_hidden_states:
                states += (x,)
            if output_attentions:
                attentions += (weights,)
        return BaseModelOutput(last_hidden_state=x, hidden_states=states, attentions=attentions)

    def output_at(self, x, index, bias=None, is_causal=False, row_bias=None, training=False):
        """Only the last layer's output at `index` (B,), for callers that need nothing else;
        `row_bias` (B,1,1,L) is `bias`'s row of each pooled query."""
        for layer in self.layers[:-1]:
            x, _ = self._run(layer, x, bias, is_causal, False, training)
        return self.layers[-1].output_at(x, index, row_bias, training)

    def _run(self, layer, x, bias, is_causal, output_attentions, training):
        if self.gradient_checkpointing and training and not output_attentions:
            # recompute the layer in backward instead of keeping its activations (tf.recompute_grad)
            return tf.recompute_grad(lambda h: layer(h, bias=bias, is_causal=is_causal, training=training)[0])(x), None
        return layer(x, bias=bias, is_causal=is_causal, output_attentions=output_attentions, training=training)
