"""CLIP in JAX (flax.nnx): a pre-LN transformer for text (causal) and images (ViT), joined by projections.

A module-for-module translation of clip/pt/modeling.py: the same class names, attribute names and
order, so the parameter tree is the canonical (PyTorch) names with Flax leaf names
(clip.common.weights.LEAF_RULES) and equals transformers' FlaxCLIP layout. The public wrappers
(FlaxCLIPModel, ...) hold `module`, `config` and `params` (a plain nested dict) and take
`params=` for pure functional use under `jax.jit` / `jax.grad`, as transformers' Flax models do.
Loading and saving live in clip.flax.loading, the contrastive loss in clip.flax.loss.

Training with optax, parameters sharded over a mesh::

    import jax, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from clip.flax import FlaxCLIPModel

    model = FlaxCLIPModel.from_pretrained("openai/clip-vit-base-patch32")
    mesh = Mesh(jax.devices(), ("model",))
    # shard every matrix over its last axis when it divides, replicate the rest
    def spec(x):
        return P(*([None] * (x.ndim - 1) + ["model"])) if x.ndim >= 2 and x.shape[-1] % mesh.size == 0 else P()
    params = jax.device_put(model.params, jax.tree.map(lambda x: NamedSharding(mesh, spec(x)), model.params))
    tx = optax.adamw(1e-5)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, batch, rng):
        def loss_fn(params):
            return model(**batch, params=params, return_loss=True, train=True, dropout_rng=rng).loss
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # batch = processor(text=..., images=..., padding="max_length", return_tensors="np")
    params, opt_state, loss = train_step(params, opt_state, dict(batch), jax.random.key(0))

Shapes: B batch, L tokens, N patches, D width, H heads, d head width (D = H * d).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from clip.common import checks, outputs, weights
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import (
    BaseModelOutput,
    BaseModelOutputWithPooling,
    CLIPOutput,
    CLIPTextModelOutput,
    CLIPVisionModelOutput,
)
from clip.flax import kernels
from clip.flax.kernels import Linear, patch_tokens
from clip.flax.loss import clip_loss


def _register_outputs():
    """The shared output containers as pytrees, so jitted functions can return them."""
    for cls in vars(outputs).values():
        if isinstance(cls, type) and issubclass(cls, outputs.ModelOutput) and dataclasses.is_dataclass(cls):
            try:
                jax.tree_util.register_dataclass(cls, data_fields=[f.name for f in dataclasses.fields(cls)], meta_fields=[])
            except ValueError:  # already registered
                pass


_register_outputs()


def quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def attention(q, k, v, bias, is_causal, scale, dropout=0.0, dropout_rng=None):
    """softmax(q k^T * scale + bias) v, also returning the weights: (B,L,H,d) -> (B,L,H,d), (B,H,L,S).

    As batched matmuls over heads-major copies (B,H,L,d): XLA runs these 1.3x faster on the CPU than
    jax.nn.dot_product_attention's einsums in the (B,L,H,d) layout, and narrow dtypes accumulate in
    float32 as the projections do. Unused weights cost nothing under jit (dead code).
    """
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # BLHd -> BHLd
    weights = kernels.matmul(q, k.swapaxes(-1, -2), q.dtype) * jnp.asarray(scale, q.dtype)
    if is_causal:
        bias = causal_mask(q.shape[2], weights.dtype)  # BHLd: L is axis 2 now
    if bias is not None:
        weights = weights + bias
    weights = jax.nn.softmax(weights.astype(jnp.float32), axis=-1).astype(q.dtype)
    if dropout > 0 and dropout_rng is not None:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout), 0).astype(q.dtype)
    return kernels.matmul(weights, v, q.dtype).transpose(0, 2, 1, 3), weights  # BHLd -> BLHd


def causal_mask(length, dtype):
    # additive: the dtype's minimum above the diagonal (not -inf, so rows stay finite), as transformers
    return jnp.triu(jnp.full((length, length), jnp.finfo(dtype).min, dtype=dtype), 1)


class CLIPAttention(nnx.Module):
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
        out, weights = attention(q, k, v, bias, is_causal, self.scale, dropout, dropout_rng)
        return self.out_proj(out.reshape(B, L, D)), (weights if output_attentions else None)  # BLHd -> BLD

    def call_query(self, x, query, bias=None, dropout_rng=None):
        """Attention output for one query per sequence: x (B,L,D), query (B,D) -> (B,D)."""
        B, L, D = x.shape
        q = self.q_proj(query).reshape(B, 1, self.num_heads, self.head_dim)  # B,1,H,d
        k = self.k_proj(x).reshape(B, L, self.num_heads, self.head_dim)
        v = self.v_proj(x).reshape(B, L, self.num_heads, self.head_dim)
        dropout = self.dropout if dropout_rng is not None else 0.0
        out, _ = attention(q, k, v, bias, False, self.scale, dropout, dropout_rng)
        return self.out_proj(out.reshape(B, D))


class CLIPMLP(nnx.Module):
    def __init__(self, config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.activation_fn = ACTIVATIONS[config.hidden_act]
        dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = Linear(config.hidden_size, config.intermediate_size, **dense)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size, **dense)

    def __call__(self, x):
        return self.fc2(self.activation_fn(self.fc1(x)))


def _layer_norm(config, dtype, param_dtype, rngs):
    return nnx.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class CLIPEncoderLayer(nnx.Module):
    def __init__(self, config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.self_attn = CLIPAttention(config, **kw)
        self.layer_norm1 = _layer_norm(config, **kw)
        self.mlp = CLIPMLP(config, **kw)
        self.layer_norm2 = _layer_norm(config, **kw)

    def __call__(self, x, bias=None, is_causal=False, output_attentions=False, dropout_rng=None):
        attn, weights = self.self_attn(self.layer_norm1(x), bias, is_causal, output_attentions, dropout_rng)
        x = x + attn
        x = x + self.mlp(self.layer_norm2(x))
        return x, weights

    def call_at(self, x, index, bias=None, dropout_rng=None):
        """The layer's output at position index[b] of each sequence, (B,L,D) -> (B,D).

        Pooling reads one token of the last layer, so only that token needs its query, its
        residual and its MLP: about 1/num_layers of the tower's work saved, exactly.
        """
        h = self.layer_norm1(x)
        take = lambda t: jnp.take_along_axis(t, index[:, None, None], axis=1)[:, 0]  # noqa: E731  BLD -> BD
        y = take(x) + self.self_attn.call_query(h, take(h), bias, dropout_rng)  # BD
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

    def __call__(self, x, bias=None, is_causal=False, output_attentions=False, output_hidden_states=False, dropout_rng=None):
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

    def call_pooled(self, x, index, bias=None, is_causal=False, row_bias=None, dropout_rng=None):
        """Only the last layer's output at `index` (B,), for callers that need nothing else."""
        rngs = [None if dropout_rng is None else jax.random.fold_in(dropout_rng, i) for i in range(len(self.layers))]
        for layer, rng in zip(self.layers[:-1], rngs):
            x, _ = self._run(layer, x, bias, is_causal, False, rng)
        return self.layers[-1].call_at(x, index, row_bias, rngs[-1])

    def _run(self, layer, x, bias, is_causal, output_attentions, dropout_rng):
        if self.gradient_checkpointing:
            return _checkpointed_layer(layer, x, bias, is_causal, output_attentions, dropout_rng)
        return layer(x, bias, is_causal, output_attentions, dropout_rng)


class CLIPTextEmbeddings(nnx.Module):
    def __init__(self, config: CLIPTextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.token_embedding = nnx.Embed(config.vocab_size, config.hidden_size, **kw)
        self.position_embedding = nnx.Embed(config.max_position_embeddings, config.hidden_size, **kw)

    def __call__(self, input_ids, position_ids=None):
        # no position_ids buffer: the first L rows are the default positions, without a gather
        if position_ids is None:
            positions = self.position_embedding.embedding[: input_ids.shape[1]].astype(self.dtype)  # LD
        else:
            positions = self.position_embedding(position_ids)  # BLD or 1LD
        return self.token_embedding(input_ids) + positions


class CLIPVisionEmbeddings(nnx.Module):
    def __init__(self, config: CLIPVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.image_size, self.patch_size, self.dtype = config.image_size, config.patch_size, dtype
        self.class_embedding = nnx.Param(jnp.zeros((config.hidden_size,), param_dtype))
        self.patch_embedding = nnx.Conv(
            config.num_channels, config.hidden_size, (config.patch_size,) * 2, strides=(config.patch_size,) * 2,
            padding="VALID", use_bias=False, **kw,
        )
        self.position_embedding = nnx.Embed(config.num_patches + 1, config.hidden_size, **kw)

    def __call__(self, pixel_values, interpolate_pos_encoding=False):
        B, _, height, width = pixel_values.shape  # NCHW, as the processor gives
        patches = patch_tokens(pixel_values, self.patch_embedding, self.dtype)  # BND
        cls = jnp.broadcast_to(self.class_embedding[...].astype(self.dtype), (B, 1, patches.shape[-1]))
        x = jnp.concatenate([cls, patches], axis=1)  # B,1+N,D
        if interpolate_pos_encoding:
            return x + self.resized_positions(x.shape[1] - 1, height, width)
        return x + self.position_embedding.embedding[...].astype(self.dtype)

    def resized_positions(self, num_patches, height, width):
        """Position embeddings resampled (bicubic, as torch) to the patch grid of a height x width image."""
        weight = self.position_embedding.embedding[...]  # (1+N0),D
        if num_patches == weight.shape[0] - 1 and height == width:
            return weight.astype(self.dtype)
        side = math.isqrt(weight.shape[0] - 1)
        grid = weight[1:].reshape(side, side, -1).astype(jnp.float32)  # s,s,D
        # torch's bicubic kernel (a = -0.75, taps clamped at the border) as matrices; jax.image.resize's differs
        rows = jnp.asarray(weights.bicubic_resize_matrix(side, height // self.patch_size))  # h,s
        cols = jnp.asarray(weights.bicubic_resize_matrix(side, width // self.patch_size))  # w,s
        # resample in float32, separably: (h,s) x (s,s,D) x (w,s) -> h,w,D
        grid = jnp.einsum("hs,stD,wt->hwD", rows, grid, cols, precision=jax.lax.Precision.HIGHEST)
        grid = grid.reshape(-1, weight.shape[1]).astype(weight.dtype)  # (hw),D
        return jnp.concatenate([weight[:1], grid]).astype(self.dtype)


def text_attention_mask(attention_mask, dtype):
    """(bias, is_causal) for the text encoder: the causal kernel alone when no mask is given.

    With a mask, an additive bias for every batch (all ones gives the same values as the causal
    kernel), so nothing branches on array values under jit.
    """
    if attention_mask is None:
        return None, True
    length = attention_mask.shape[1]
    padding = jnp.where(attention_mask == 0, jnp.finfo(dtype).min, 0).astype(dtype)
    # B,1,1,L + L,L -> B,1,L,L; doubly masked entries become -inf, as in transformers' sum of masks
    return padding[:, None, None, :] + causal_mask(length, dtype), False


class CLIPTextTransformer(nnx.Module):
    def __init__(self, config: CLIPTextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config, self.dtype = config, dtype
        self.embeddings = CLIPTextEmbeddings(config, **kw)
        self.encoder = CLIPEncoder(config, **kw)
        self.final_layer_norm = _layer_norm(config, **kw)

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=False,
                 output_hidden_states=False, dropout_rng=None, pooled_only=False):
        self.check_inputs(input_ids, attention_mask, position_ids)
        x = self.embeddings(input_ids, position_ids)
        bias, is_causal = text_attention_mask(attention_mask, x.dtype)
        index = self.pooled_positions(input_ids)
        if pooled_only and not (output_attentions or output_hidden_states):
            # the bias rows of the pooled queries: B,1,1,L
            full = bias if bias is not None else causal_mask(x.shape[1], x.dtype)[None, None]
            row_bias = jnp.take_along_axis(full[:, 0], index[:, None, None], axis=1)[:, None]
            pooled = self.final_layer_norm(self.encoder.call_pooled(x, index, bias, is_causal, row_bias, dropout_rng))
            return BaseModelOutputWithPooling(None, pooled)
        encoded = self.encoder(x, bias, is_causal, output_attentions, output_hidden_states, dropout_rng)
        last = self.final_layer_norm(encoded.last_hidden_state)
        pooled = jnp.take_along_axis(last, index[:, None, None], axis=1)[:, 0]  # BD
        return BaseModelOutputWithPooling(last, pooled, encoded.hidden_states, encoded.attentions)

    def check_inputs(self, input_ids, attention_mask=None, position_ids=None):
        """clip.common.checks on shapes and dtypes only: static under jit, run before any tracing."""
        if input_ids is None:
            raise ValueError("input_ids are required (integer token ids of shape (batch_size, sequence_length))")
        checks.check_input_ids(input_ids.shape, input_ids.dtype, self.config)
        if attention_mask is not None:
            checks.check_attention_mask(attention_mask.shape, input_ids.shape)
        if position_ids is not None:
            checks.check_position_ids(position_ids.shape, position_ids.dtype, input_ids.shape, self.config)

    def pooled_positions(self, input_ids):
        # argmax returns the first maximum (clip.common.checks.text_pooling_rule)
        if checks.text_pooling_rule(self.config) == "argmax":
            return jnp.argmax(input_ids, axis=-1)
        return jnp.argmax((input_ids == self.config.eos_token_id).astype(jnp.int32), axis=-1)


class CLIPVisionTransformer(nnx.Module):
    def __init__(self, config: CLIPVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config, **kw)
        self.pre_layrnorm = _layer_norm(config, **kw)  # sic: checkpoint name
        self.encoder = CLIPEncoder(config, **kw)
        self.post_layernorm = _layer_norm(config, **kw)

    def __call__(self, pixel_values=None, output_attentions=False, output_hidden_states=False,
                 interpolate_pos_encoding=False, dropout_rng=None, pooled_only=False):
        self.check_inputs(pixel_values, interpolate_pos_encoding)
        x = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding))
        if pooled_only and not (output_attentions or output_hidden_states):
            index = jnp.zeros((x.shape[0],), jnp.int32)  # the class token
            return BaseModelOutputWithPooling(None, self.post_layernorm(self.encoder.call_pooled(x, index, dropout_rng=dropout_rng)))
        encoded = self.encoder(x, None, False, output_attentions, output_hidden_states, dropout_rng)
        last = encoded.last_hidden_state
        pooled = self.post_layernorm(last[:, 0])  # the class token, BD
        return BaseModelOutputWithPooling(last, pooled, encoded.hidden_states, encoded.attentions)

    def check_inputs(self, pixel_values, interpolate_pos_encoding=False):
        if pixel_values is None:
            raise ValueError("pixel_values are required (float images of shape (batch_size, channels, height, width))")
        checks.check_pixel_values(pixel_values.shape, self.config, interpolate_pos_encoding, pixel_values.dtype)


def l2_normalize(x):
    # the sum of squares overflows float16 once |x| > 256: take the norm in float32
    x32 = x.astype(jnp.float32)
    return (x32 / jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True))).astype(x.dtype)


def scaled_similarity(text_embeds, image_embeds, logit_scale):
    """exp(logit_scale) * cosine similarity, (T,E) x (I,E) -> (T,I), finite in float16."""
    cosine = text_embeds @ image_embeds.T  # unit vectors: |cosine| <= 1 in any dtype
    if cosine.dtype != jnp.float16:
        return cosine * jnp.exp(logit_scale).astype(cosine.dtype)
    logits = cosine.astype(jnp.float32) * jnp.exp(logit_scale.astype(jnp.float32))
    return jnp.clip(logits, -65504.0, 65504.0).astype(jnp.float16)


def _projection(in_dim, out_dim, dtype, param_dtype, rngs):
    return Linear(in_dim, out_dim, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def _split_rng(rng, n):
    return (None,) * n if rng is None else tuple(jax.random.split(rng, n))


class CLIPTextModule(nnx.Module):
    def __init__(self, config: CLIPTextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.text_model = CLIPTextTransformer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=False,
                 output_hidden_states=False, dropout_rng=None):
        return self.text_model(input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, dropout_rng)


class CLIPTextModelWithProjectionModule(nnx.Module):
    def __init__(self, config: CLIPTextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.text_model = CLIPTextTransformer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.text_projection = _projection(config.hidden_size, config.projection_dim, dtype, param_dtype, rngs)

    def __call__(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=False,
                 output_hidden_states=False, dropout_rng=None):
        out = self.text_model(input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, dropout_rng)
        embeds = self.text_projection(out.pooler_output)
        return CLIPTextModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions)


class CLIPVisionModule(nnx.Module):
    def __init__(self, config: CLIPVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.vision_model = CLIPVisionTransformer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, pixel_values=None, output_attentions=False, output_hidden_states=False,
                 interpolate_pos_encoding=False, dropout_rng=None):
        return self.vision_model(pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding, dropout_rng)


class CLIPVisionModelWithProjectionModule(nnx.Module):
    def __init__(self, config: CLIPVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.vision_model = CLIPVisionTransformer(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.visual_projection = _projection(config.hidden_size, config.projection_dim, dtype, param_dtype, rngs)

    def __call__(self, pixel_values=None, output_attentions=False, output_hidden_states=False,
                 interpolate_pos_encoding=False, dropout_rng=None):
        out = self.vision_model(pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding, dropout_rng)
        embeds = self.visual_projection(out.pooler_output)
        return CLIPVisionModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions)


class CLIPModule(nnx.Module):
    def __init__(self, config: CLIPConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        text, vision = config.text_config, config.vision_config
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.logit_scale = nnx.Param(jnp.asarray(config.logit_scale_init_value, param_dtype))
        self.text_model = CLIPTextTransformer(text, **kw)
        self.vision_model = CLIPVisionTransformer(vision, **kw)
        self.visual_projection = _projection(vision.hidden_size, config.projection_dim, dtype, param_dtype, rngs)
        self.text_projection = _projection(text.hidden_size, config.projection_dim, dtype, param_dtype, rngs)

    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None, dropout_rng=None):
        """Projected (not normalized) text embeddings, (B, projection_dim)."""
        out = self.text_model(input_ids, attention_mask, position_ids, dropout_rng=dropout_rng, pooled_only=True)
        return self.text_projection(out.pooler_output)

    def get_image_features(self, pixel_values=None, interpolate_pos_encoding=False, dropout_rng=None):
        """Projected (not normalized) image embeddings, (B, projection_dim)."""
        out = self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, dropout_rng=dropout_rng, pooled_only=True)
        return self.visual_projection(out.pooler_output)

    def __call__(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, return_loss=False,
                 output_attentions=False, output_hidden_states=False, interpolate_pos_encoding=False, dropout_rng=None):
        self.check_inputs(input_ids, pixel_values, attention_mask, position_ids, return_loss, interpolate_pos_encoding)
        vision_rng, text_rng = _split_rng(dropout_rng, 2)
        vision = self.vision_model(pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding, vision_rng)
        text = self.text_model(input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, text_rng)
        image_embeds = l2_normalize(self.visual_projection(vision.pooler_output))
        text_embeds = l2_normalize(self.text_projection(text.pooler_output))
        logits_per_text = scaled_similarity(text_embeds, image_embeds, self.logit_scale[...])  # T,I
        loss = clip_loss(logits_per_text) if return_loss else None
        return CLIPOutput(loss, logits_per_text.T, logits_per_text, text_embeds, image_embeds, text, vision)

    def check_inputs(self, input_ids, pixel_values, attention_mask, position_ids, return_loss, interpolate_pos_encoding):
        """All argument checks of a forward, in clip.pt's order, on shapes and dtypes only."""
        if return_loss and input_ids is not None and pixel_values is not None and input_ids.ndim == 2:
            checks.check_batch_sizes(input_ids.shape[0], pixel_values.shape[0])
        self.vision_model.check_inputs(pixel_values, interpolate_pos_encoding)
        self.text_model.check_inputs(input_ids, attention_mask, position_ids)


# -- public wrappers: config + module + params, functional calls ---------------------------------
def _str_keys(tree):
    return {str(k): _str_keys(v) if isinstance(v, dict) else v for k, v in tree.items()}


def _as_array(x):
    # arrays (numpy, jax, tracers) pass as they are, so the checks see their real dtype
    return x if x is None or hasattr(x, "shape") else jnp.asarray(x)


def _finish(output, return_dict):
    return output if return_dict else output.to_tuple()


class FlaxCLIPPreTrainedModel:
    """Config, module and params; init, from_pretrained/save_pretrained, `params=` calls.

    `params` is a plain nested dict (transformers' FlaxCLIP layout: "text_model" -> "encoder" ->
    "layers" -> "0" -> ...); `model(..., params=p)` runs the module with `p` and nothing else, so
    it can be jitted, differentiated and sharded like any pytree function.
    """

    config_class = CLIPConfig
    module_class = CLIPModule
    main_input_name = "input_ids"

    def __init__(self, config, seed: int = 0, dtype=jnp.float32, param_dtype=jnp.float32, _do_init: bool = True):
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config, self.dtype, self.param_dtype = config, dtype, param_dtype
        build = lambda: self.module_class(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(seed))  # noqa: E731
        self.module = nnx.eval_shape(build)  # abstract: shapes only, no random numbers drawn
        self.graphdef = nnx.split(self.module)[0]
        if _do_init:
            self.params = self.init_weights(seed)

    def init_weights(self, rng, names=None) -> dict:
        """transformers' CLIP initialization (clip.common.checks.init_spec) as a params tree;
        `rng` an int seed or a jax key; `names` (canonical) re-drawn, the others kept."""
        from clip.flax import loading

        return loading.init_params(self, rng, names)

    @property
    def params(self) -> dict:
        return _str_keys(nnx.to_pure_dict(nnx.state(self.module, nnx.Param)))

    @params.setter
    def params(self, params):
        self.module = self._bind(params)

    def _bind(self, params):
        """The module with `params` in it (traced values under jit); self.module when None."""
        if params is None:
            return self.module
        return nnx.merge(self.graphdef, nnx.State(nnx.restore_int_paths(params)))

    def _output_flags(self, output_attentions, output_hidden_states, return_dict):
        pick = lambda value, key, default: value if value is not None else getattr(self.config, key, default)  # noqa: E731
        return pick(output_attentions, "output_attentions", False), pick(output_hidden_states, "output_hidden_states", False), pick(return_dict, "return_dict", True)

    def _dropout_rng(self, train, dropout_rng):
        if not train:
            return None
        if dropout_rng is None and self._has_dropout():
            raise ValueError("train=True with attention_dropout > 0 needs a dropout_rng (a jax.random key)")
        return dropout_rng

    def _has_dropout(self):
        configs = [getattr(self.config, k) for k in ("text_config", "vision_config") if hasattr(self.config, k)] or [self.config]
        return any(c.attention_dropout > 0 for c in configs)

    def gradient_checkpointing_enable(self):
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self):
        self._set_gradient_checkpointing(False)

    def _set_gradient_checkpointing(self, enabled):
        for _, node in nnx.iter_graph(self.module):
            if isinstance(node, CLIPEncoder):
                node.gradient_checkpointing = enabled
        self.graphdef = nnx.split(self.module)[0]

    @classmethod
    def from_pretrained(cls, name_or_path, *args, **kwargs):
        from clip.flax import loading

        return loading.from_pretrained(cls, name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, params=None, **kwargs):
        from clip.flax import loading

        return loading.save_pretrained(self, save_directory, params=params, **kwargs)


class FlaxCLIPTextModel(FlaxCLIPPreTrainedModel):
    config_class = CLIPTextConfig
    module_class = CLIPTextModule

    def __call__(self, input_ids, attention_mask=None, position_ids=None, params=None, dropout_rng=None, train=False,
                 output_attentions=None, output_hidden_states=None, return_dict=None):
        input_ids, attention_mask, position_ids = map(_as_array, (input_ids, attention_mask, position_ids))
        self.module.text_model.check_inputs(input_ids, attention_mask, position_ids)
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        out = module(input_ids, attention_mask, position_ids, attn, hidden, rng)
        return _finish(out, return_dict)


class FlaxCLIPTextModelWithProjection(FlaxCLIPTextModel):
    module_class = CLIPTextModelWithProjectionModule


class FlaxCLIPVisionModel(FlaxCLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    module_class = CLIPVisionModule
    main_input_name = "pixel_values"

    def __call__(self, pixel_values, params=None, dropout_rng=None, train=False, output_attentions=None,
                 output_hidden_states=None, interpolate_pos_encoding=False, return_dict=None):
        pixel_values = _as_array(pixel_values)
        self.module.vision_model.check_inputs(pixel_values, interpolate_pos_encoding)
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        return _finish(module(pixel_values, attn, hidden, interpolate_pos_encoding, rng), return_dict)


class FlaxCLIPVisionModelWithProjection(FlaxCLIPVisionModel):
    module_class = CLIPVisionModelWithProjectionModule


class FlaxCLIPModel(FlaxCLIPPreTrainedModel):
    config_class = CLIPConfig
    module_class = CLIPModule

    def get_text_features(self, input_ids, attention_mask=None, position_ids=None, params=None, dropout_rng=None, train=False):
        """Projected (not normalized) text embeddings, (B, projection_dim)."""
        input_ids, attention_mask, position_ids = map(_as_array, (input_ids, attention_mask, position_ids))
        self.module.text_model.check_inputs(input_ids, attention_mask, position_ids)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        return module.get_text_features(input_ids, attention_mask, position_ids, rng)

    def get_image_features(self, pixel_values, params=None, dropout_rng=None, train=False, interpolate_pos_encoding=False):
        """Projected (not normalized) image embeddings, (B, projection_dim)."""
        pixel_values = _as_array(pixel_values)
        self.module.vision_model.check_inputs(pixel_values, interpolate_pos_encoding)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        return module.get_image_features(pixel_values, interpolate_pos_encoding, rng)

    def __call__(self, input_ids, pixel_values, attention_mask=None, position_ids=None, params=None, dropout_rng=None,
                 train=False, return_loss=None, output_attentions=None, output_hidden_states=None,
                 interpolate_pos_encoding=False, return_dict=None):
        input_ids, pixel_values, attention_mask, position_ids = map(_as_array, (input_ids, pixel_values, attention_mask, position_ids))
        self.module.check_inputs(input_ids, pixel_values, attention_mask, position_ids, return_loss, interpolate_pos_encoding)
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        module, rng = self._bind(params), self._dropout_rng(train, dropout_rng)
        out = module(input_ids, pixel_values, attention_mask, position_ids, bool(return_loss), attn, hidden, interpolate_pos_encoding, rng)
        return _finish(out, return_dict)
