"""The two CLIP towers in flax.nnx: embeddings, the causal text transformer and the vision transformer.

A translation of clip/pt/towers.py. Input checks and the pooling rule come from clip.common.checks.

Shapes: B batch, L tokens, N patches, D width.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from clip.common import checks, weights
from clip.common.config import CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import BaseModelOutputWithPooling
from clip.flax.kernels import patch_tokens
from clip.flax.layers import CLIPEncoder, causal_bias, layer_norm


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
            config.num_channels,
            config.hidden_size,
            (config.patch_size,) * 2,
            strides=(config.patch_size,) * 2,
            padding="VALID",
            use_bias=False,
            **kw,
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


def text_attention_bias(attention_mask, dtype):
    """(bias, is_causal) for the text encoder: the causal kernel alone when no mask is given, else
    an additive bias (B,1,L,L) of padding and causal masking.

    With a mask, the bias for every batch (all ones gives the same values as the causal
    kernel), so nothing branches on array values under jit.
    """
    if attention_mask is None:
        return None, True
    length = attention_mask.shape[1]
    padding = jnp.where(attention_mask == 0, jnp.finfo(dtype).min, 0).astype(dtype)
    # B,1,1,L + L,L -> B,1,L,L; doubly masked entries become -inf, as in transformers' sum of masks
    return padding[:, None, None, :] + causal_bias(length, dtype), False


class CLIPTextTransformer(nnx.Module):
    def __init__(self, config: CLIPTextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config, self.dtype = config, dtype
        self.embeddings = CLIPTextEmbeddings(config, **kw)
        self.encoder = CLIPEncoder(config, **kw)
        self.final_layer_norm = layer_norm(config, **kw)

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=False,
        output_hidden_states=False,
        pooled_only=False,
        dropout_rng=None,
    ):
        self.check_inputs(input_ids, attention_mask, position_ids)
        index = self.pooled_positions(input_ids)
        if pooled_only and not (output_attentions or output_hidden_states):
            return BaseModelOutputWithPooling(
                None, self.pooled_only(input_ids, attention_mask, position_ids, index, dropout_rng)
            )
        x = self.embeddings(input_ids, position_ids)
        bias, is_causal = text_attention_bias(attention_mask, x.dtype)
        encoded = self.encoder(x, bias, is_causal, output_attentions, output_hidden_states, dropout_rng)
        last = self.final_layer_norm(encoded.last_hidden_state)
        pooled = jnp.take_along_axis(last, index[:, None, None], axis=1)[:, 0]  # BD
        return BaseModelOutputWithPooling(last, pooled, encoded.hidden_states, encoded.attentions)

    def pooled_only(self, input_ids, attention_mask, position_ids, index, dropout_rng=None):
        """The pooled output alone, (B,D): the last layer runs only the pooled queries (all tokens
        still run the other layers: under jit shapes cannot follow the index, as in clip.pt)."""
        x = self.embeddings(input_ids, position_ids)
        bias, is_causal = text_attention_bias(attention_mask, x.dtype)
        # the bias rows of the pooled queries: B,1,1,L
        full = bias if bias is not None else causal_bias(x.shape[1], x.dtype)[None, None]
        row_bias = jnp.take_along_axis(full[:, 0], index[:, None, None], axis=1)[:, None]
        return self.final_layer_norm(self.encoder.output_at(x, index, bias, is_causal, row_bias, dropout_rng))

    def check_inputs(self, input_ids, attention_mask=None, position_ids=None):
        """ValueError naming the input unless the shapes and dtypes are what the tower takes (static under jit)."""
        checks.check_text_inputs(self.config, input_ids, attention_mask, position_ids)

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
        self.pre_layrnorm = layer_norm(config, **kw)  # sic: checkpoint name
        self.encoder = CLIPEncoder(config, **kw)
        self.post_layernorm = layer_norm(config, **kw)

    def __call__(
        self,
        pixel_values=None,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
        pooled_only=False,
        dropout_rng=None,
    ):
        self.check_inputs(pixel_values, interpolate_pos_encoding)
        x = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding))
        if pooled_only and not (output_attentions or output_hidden_states):
            index = jnp.zeros((x.shape[0],), jnp.int32)  # the class token
            return BaseModelOutputWithPooling(
                None, self.post_layernorm(self.encoder.output_at(x, index, dropout_rng=dropout_rng))
            )
        encoded = self.encoder(x, None, False, output_attentions, output_hidden_states, dropout_rng)
        last = encoded.last_hidden_state
        pooled = self.post_layernorm(last[:, 0])  # the class token, BD
        return BaseModelOutputWithPooling(last, pooled, encoded.hidden_states, encoded.attentions)

    def check_inputs(self, pixel_values, interpolate_pos_encoding=False):
        """ValueError naming the input unless the shape and dtype are what the tower takes (static under jit)."""
        checks.check_image_inputs(self.config, pixel_values, interpolate_pos_encoding)
