"""The transformer blocks both CLIP towers share, in flax.nnx: attention, MLP, pre-LN encoder layer, encoder.

A translation of clip/pt/layers.py (same classes, attribute names, argument names and order, with
`dropout_rng` last). Towers in clip.flax.towers, public models in clip.flax.modeling.

Shapes: B batch, L tokens, D width, H heads, d head width (D = H * d).
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
from flax import nnx

from clip.common.outputs import BaseModelOutput
from clip.flax import kernels
from clip.flax.kernels import Linear


def quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def explicit_attention(q, k, v, bias, is_causal, scale, dropout=0.0, dropout_rng=None):
    """softmax(q k^T * scale + bias) v, also returning the weights: (B,L,H,d) -> (B,L,H,d), (B,H,L,S).

    As batched matmuls over heads-major copies (B,H,L,d): XLA runs these 1.3x faster on the CPU than
    jax.nn.dot_product_attention's einsums in the (B,L,H,d) layout, and narrow dtypes accumulate in
    float32 as the projections do. Unused weights cost nothing under jit (dead code).
    """
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # BLHd -> BHLd
    weights = kernels.matmul(q, k.swapaxes(-1, -2), q.dtype) * jnp.asarray(scale, q.dtype)
    if is_causal:
        bias = causal_bias(q.shape[2], weights.dtype)  # BHLd: L is axis 2 now
    if bias is not None:
        weights = weights + bias
    weights = jax.nn.softmax(weights.astype(jnp.float32), axis=-1).astype(q.dtype)
    probes = _ATTENTION_PROBES.get()
    if probes is not None:  # zeros: the values are unchanged, the gradient w.r.t. the probe is the weights'
        weights = weights + next(probes)
    if dropout > 0 and dropout_rng is not None:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout), 0).astype(q.dtype)
    return kernels.matmul(weights, v, q.dtype).transpose(0, 2, 1, 3), weights  # BHLd -> BLHd


def fused_attention(q, k, v, bias, is_causal, scale, implementation):
    """jax.nn.dot_product_attention in the (B,L,H,d) layout: implementation "xla", "cudnn" or "auto"
    (JAX's choice); no weights. The same values as `explicit_attention` to float rounding."""
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        bias=bias,
        scale=scale,
        is_causal=is_causal,
        implementation=None if implementation == "auto" else implementation,
    )


_ATTENTION_PROBES = contextvars.ContextVar("clip_flax_attention_probes", default=None)


@contextlib.contextmanager
def attention_probes(probes):
    """Inside, the i-th attention computed adds probes[i] to its weights (the softmax) before they
    weight the values, in call order (a CLIPModel: the vision layers, then the text layers).

    jax.grad differentiates with respect to inputs only; with zero probes passed in, the gradient
    with respect to them is the gradient with respect to the attention weights (clip.tasks.explain).
    """
    token = _ATTENTION_PROBES.set(iter(probes))
    try:
        yield
    finally:
        _ATTENTION_PROBES.reset(token)


def causal_bias(length, dtype):
    # additive: the dtype's minimum above the diagonal (not -inf, so rows stay finite), as transformers
    return jnp.triu(jnp.full((length, length), jnp.finfo(dtype).min, dtype=dtype), 1)


class CLIPAttention(nnx.Module):
    # "matmul": `explicit_attention`; else `fused_attention`'s implementation (clip.tasks.compiled.set_flax_attention)
    implementation = "matmul"

    def __init__(self, config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        width = config.hidden_size
        dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.k_proj = Linear(width, width, **dense)
        self.v_proj = Linear(width, width, **dense)
        self.q_proj = Linear(width, width, **dense)
        self.out_proj = Linear(width, width, **dense)

    def __call__(self, x, bias=None, is_causal=False, output_attentions=False, dropout_rng=None):
        B, L, D = x.shape
        q = self.q_proj(x).reshape(B, L, self.num_heads, self.head_dim)  # BLD -> BLHd
        k = self.k_proj(x).reshape(B, L, self.num_heads, self.head_dim)
        v = self.v_proj(x).reshape(B, L, self.num_heads, self.head_dim)
        dropout = self.dropout if dropout_rng is not None else 0.0
        if self.implementation != "matmul" and not output_attentions and dropout == 0:
            out, weights = fused_attention(q, k, v, bias, is_causal, self.scale, self.implementation), None
        else:
            out, weights = explicit_attention(q, k, v, bias, is_causal, self.scale, dropout, dropout_rng)
        return self.out_proj(out.reshape(B, L, D)), (weights if output_attentions else None)  # BLHd -> BLD

    def attend_one(self, x, query, bias=None, dropout_rng=None):
        """Attention output for one query per sequence: x (B,L,D), query (B,D) -> (B,D)."""
        B, L, D = x.shape
        q = self.q_proj(query).reshape(B, 1, self.num_heads, self.head_dim)  # B,1,H,d
        k = self.k_proj(x).reshape(B, L, self.num_heads, self.head_dim)
        v = self.v_proj(x).reshape(B, L, self.num_heads, self.head_dim)
        dropout = self.dropout if dropout_rng is not None else 0.0
        if self.implementation != "matmul" and dropout == 0:
            return self.out_proj(fused_attention(q, k, v, bias, False, self.scale, self.implementation).reshape(B, D))
        out, _ = explicit_attention(q, k, v, bias, False, self.scale, dropout, dropout_rng)
        return self.out_proj(out.reshape(B, D))


class CLIPMLP(nnx.Module):
    def __init__(self, config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.activation_fn = ACTIVATIONS[config.hidden_act]
        dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = Linear(config.hidden_size, config.intermediate_size, **dense)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size, **dense)

    def __call__(self, x):
        return self.fc2(self.activation_fn(self.fc1(x)))


def layer_norm(config, dtype, param_dtype, rngs):
    return nnx.LayerNorm(
        config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )


class CLIPEncoderLayer(nnx.Module):
    def __init__(self, config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.self_attn = CLIPAttention(config, **kw)
        self.layer_norm1 = layer_norm(config, **kw)
        self.mlp = CLIPMLP(config, **kw)
        self.layer_norm2 = layer_norm(config, **kw)

    def __call__(self, x, bias=None, is_causal=False, output_attentions=False, dropout_rng=None):
        attn, weights = self.self_attn(self.layer_norm1(x), bias, is_causal, output_attentions, dropout_rng)
        x = x + attn
        x = x + self.mlp(self.layer_norm2(x))
        return x, weights

    def output_at(self, x, index, bias=None, dropout_rng=None):
        """The layer's output at position index[b] of each sequence, (B,L,D) -> (B,D).

        Pooling reads one token of the last layer, so only that token needs its query, its
        residual and its MLP: about 1/num_layers of the tower's work saved, exactly.
        """
        h = self.layer_norm1(x)
        take = lambda t: jnp.take_along_axis(t, index[:, None, None], axis=1)[:, 0]  # noqa: E731  BLD -> BD
        y = take(x) + self.self_attn.attend_one(h, take(h), bias, dropout_rng)  # BD
        return y + self.mlp(self.layer_norm2(y))


@nnx.remat(static_argnums=(3, 4))
def _checkpointed_layer(layer, x, bias, is_causal, output_attentions, dropout_rng):
    # recompute the layer in backward instead of keeping its activations
    return layer(x, bias, is_causal, output_attentions, dropout_rng)


class CLIPEncoder(nnx.Module):
    def __init__(self, config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([CLIPEncoderLayer(config, **kw) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def __call__(
        self, x, bias=None, is_causal=False, output_attentions=False, output_hidden_states=False, dropout_rng=None
    ):
        states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for i, layer in enumerate(self.layers):
            rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, i)
            x, weights = self._run(layer, x, bias, is_causal, output_attentions, rng)
            if output_hidden_states:
                states += (x,)
            if output_attentions:
                attentions += (weights,)
        return BaseModelOutput(last_hidden_state=x, hidden_states=states, attentions=attentions)

    def output_at(self, x, index, bias=None, is_causal=False, row_bias=None, dropout_rng=None):
        """Only the last layer's output at `index` (B,), for callers that need nothing else;
        `row_bias` (B,1,1,L) is `bias`'s row of each pooled query."""
        rngs = [None if dropout_rng is None else jax.random.fold_in(dropout_rng, i) for i in range(len(self.layers))]
        for layer, rng in zip(self.layers[:-1], rngs):
            x, _ = self._run(layer, x, bias, is_causal, False, rng)
        return self.layers[-1].output_at(x, index, row_bias, rngs[-1])

    def _run(self, layer, x, bias, is_causal, output_attentions, dropout_rng):
        if self.gradient_checkpointing:
            return _checkpointed_layer(layer, x, bias, is_causal, output_attentions, dropout_rng)
        return layer(x, bias, is_causal, output_attentions, dropout_rng)
