"""The two CLIP towers in Keras 3: embeddings, the causal text transformer and the vision transformer.

A translation of clip/pt/towers.py. Input checks and the pooling rule come from clip.common.checks.

Shapes: B batch, L tokens, N patches, D width.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from clip.common import checks, weights
from clip.common.config import CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import BaseModelOutputWithPooling
from clip.tf.eager import inputs_checked_eagerly, values_may_set_shapes
from clip.tf.kernels import patch_tokens
from clip.tf.layers import CLIPEncoder, causal_bias, layer_norm, normalize


class CLIPTextEmbeddings(keras.layers.Layer):
    def __init__(self, config: CLIPTextConfig, **kwargs):
        super().__init__(**kwargs)
        self.token_embedding = keras.layers.Embedding(
            config.vocab_size, config.hidden_size, name="token_embedding", dtype=self.dtype_policy
        )
        self.position_embedding = keras.layers.Embedding(
            config.max_position_embeddings, config.hidden_size, name="position_embedding", dtype=self.dtype_policy
        )

    def build(self, input_shape=None):
        self.token_embedding.build()
        self.position_embedding.build()

    def call(self, input_ids, position_ids=None):
        if position_ids is None:  # the first L rows are the default positions, without a gather
            positions = tf.cast(self.position_embedding.embeddings[: tf.shape(input_ids)[1]], self.compute_dtype)  # LD
        else:
            positions = self.position_embedding(position_ids)  # BLD or 1LD
        return self.token_embedding(input_ids) + positions


class CLIPVisionEmbeddings(keras.layers.Layer):
    def __init__(self, config: CLIPVisionConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.image_size, self.patch_size, self.width = config.image_size, config.patch_size, config.hidden_size
        self.patch_embedding = keras.layers.Conv2D(
            self.width,
            self.patch_size,
            self.patch_size,
            use_bias=False,
            name="patch_embedding",
            dtype=self.dtype_policy,
        )
        self.position_embedding = keras.layers.Embedding(
            config.num_patches + 1, self.width, name="position_embedding", dtype=self.dtype_policy
        )

    def build(self, input_shape=None):
        self.class_embedding = self.add_weight(shape=(self.width,), initializer="zeros", name="class_embedding")
        self.patch_embedding.build((None, self.image_size, self.image_size, self.config.num_channels))
        self.position_embedding.build()

    def call(self, pixel_values, interpolate_pos_encoding=False):
        B = tf.shape(pixel_values)[0]
        height, width = pixel_values.shape[2], pixel_values.shape[3]
        num_patches = (height // self.patch_size) * (width // self.patch_size)  # static, also with the batch open
        patches = patch_tokens(pixel_values, self.patch_embedding)  # BND
        cls = tf.broadcast_to(tf.cast(self.class_embedding, patches.dtype), (B, 1, self.width))
        x = tf.concat([cls, patches], axis=1)  # B,1+N,D
        positions = self.position_embedding.embeddings
        if interpolate_pos_encoding:
            positions = self.resized_positions(num_patches, height, width)
        return x + tf.cast(positions, x.dtype)

    def resized_positions(self, num_patches, height, width):
        """Position embeddings resampled (bicubic, as torch) to the patch grid of a height x width image."""
        weight = self.position_embedding.embeddings  # (1+N0),D
        if num_patches == weight.shape[0] - 1 and height == width:
            return weight
        side = int(round((weight.shape[0] - 1) ** 0.5))
        grid = tf.reshape(weight[1:], (side, side, self.width))  # s,s,D
        rows = weights.bicubic_resize_matrix(side, height // self.patch_size)  # h,s
        cols = weights.bicubic_resize_matrix(side, width // self.patch_size)  # w,s
        grid = tf.einsum("hs,stD,wt->hwD", rows.astype(np.float32), grid, cols.astype(np.float32))
        return tf.concat([weight[:1], tf.reshape(grid, (-1, self.width))], axis=0)  # (1+hw),D


def text_attention_bias(attention_mask, length):
    """(bias, is_causal) for the text encoder: the causal bias alone when no mask is given, else an
    additive float32 bias (B,1,L,L) of padding and causal masking."""
    if attention_mask is None:
        return None, True
    padding = tf.where(tf.equal(attention_mask, 0), np.finfo(np.float32).min, 0.0)  # BL
    # B,1,1,L + L,L -> B,1,L,L; doubly masked entries become -inf, as in transformers' sum of masks
    return padding[:, None, None, :] + causal_bias(length), False


def _static_shape(tensor, fill):
    """The static shape with unknown dims (inside tf.function) replaced by `fill`'s, which pass the
    checks; every dimension kept, so a wrong rank is still seen as one."""
    return tuple(d if d is not None else (fill[i] if i < len(fill) else 1) for i, d in enumerate(tensor.shape))


# set_input_embeddings of the text models: a new table for the token embedding, same shape only
def set_embedding_table(layer, value):
    table = value.embeddings if isinstance(value, keras.layers.Embedding) else value
    if tuple(table.shape) != tuple(layer.embeddings.shape):
        raise ValueError(
            f"set_input_embeddings: the table has shape {tuple(layer.embeddings.shape)}, got {tuple(table.shape)} "
            "(resizing the vocabulary is not supported)"
        )
    layer.embeddings.assign(tf.cast(table, layer.embeddings.dtype))


class CLIPTextTransformer(keras.layers.Layer):
    def __init__(self, config: CLIPTextConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config, name="embeddings", dtype=self.dtype_policy)
        self.encoder = CLIPEncoder(config, name="encoder", dtype=self.dtype_policy)
        self.final_layer_norm = layer_norm(config, "final_layer_norm", self.dtype_policy)

    def build(self, input_shape=None):
        for sub in (self.embeddings, self.encoder, self.final_layer_norm):
            sub.build((None, self.config.hidden_size))

    def call(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=False,
        output_hidden_states=False,
        pooled_only=False,
        training=False,
    ):
        if not inputs_checked_eagerly():
            self.check_inputs(input_ids, attention_mask, position_ids)
        index = self.pooled_positions(input_ids)
        if pooled_only and not (output_attentions or output_hidden_states):
            return BaseModelOutputWithPooling(
                None, self.pooled_only(input_ids, attention_mask, position_ids, index, training)
            )
        x = self.embeddings(input_ids, position_ids=position_ids)
        bias, is_causal = text_attention_bias(attention_mask, tf.shape(input_ids)[1])
        encoded = self.encoder(
            x,
            bias=bias,
            is_causal=is_causal,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            training=training,
        )
        last = self.final_layer_norm(encoded.last_hidden_state)
        pooled = tf.gather(last, index, batch_dims=1)  # BD
        return BaseModelOutputWithPooling(last, pooled, encoded.hidden_states, encoded.attentions)

    def pooled_only(self, input_ids, attention_mask, position_ids, index, training=False):
        """The pooled output alone, (B,D).

        Attention is causal, so no token after the last pooled one can change it: where shapes may
        depend on values (eagerly, and in clip.tf.eager's graphs; not under XLA) the batch runs only
        up to there (texts padded to 77 tokens, the longest 12 long, run 12).
        """
        if values_may_set_shapes():
            keep = tf.maximum(tf.reduce_max(index) + 1, 1)  # an empty batch keeps one column
            input_ids = input_ids[:, :keep]
            attention_mask = None if attention_mask is None else attention_mask[:, :keep]
            position_ids = None if position_ids is None else position_ids[..., :keep]
        x = self.embeddings(input_ids, position_ids=position_ids)
        length = tf.shape(input_ids)[1]
        bias, is_causal = text_attention_bias(attention_mask, length)
        # the bias rows of the pooled queries: B,1,1,L
        full = tf.broadcast_to(
            causal_bias(length) if bias is None else bias, (tf.shape(input_ids)[0], 1, length, length)
        )
        row_bias = tf.gather(full[:, 0], index, batch_dims=1)[:, None, None, :]
        return normalize(self.final_layer_norm, self.encoder.output_at(x, index, bias, is_causal, row_bias, training))

    def check_inputs(self, input_ids, attention_mask=None, position_ids=None):
        """ValueError naming the input unless the shapes and dtypes are what the tower takes."""
        checks.check_text_inputs(self.config, input_ids, attention_mask, position_ids, shape_of=_static_shape)

    def pooled_positions(self, input_ids):
        # the first position that holds the pooled token (clip.common.checks.text_pooling_rule)
        if checks.text_pooling_rule(self.config) == "argmax":
            hits = tf.equal(input_ids, tf.reduce_max(input_ids, axis=-1, keepdims=True))
        else:
            hits = tf.equal(input_ids, tf.cast(self.config.eos_token_id, input_ids.dtype))
        length = tf.shape(input_ids)[1]
        first = tf.reduce_min(tf.where(hits, tf.range(length)[None, :], length), axis=-1)
        return tf.where(first == length, 0, first)  # no hit: position 0, as argmax of all zeros


class CLIPVisionTransformer(keras.layers.Layer):
    def __init__(self, config: CLIPVisionConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config, name="embeddings", dtype=self.dtype_policy)
        self.pre_layrnorm = layer_norm(config, "pre_layrnorm", self.dtype_policy)  # sic: checkpoint name
        self.encoder = CLIPEncoder(config, name="encoder", dtype=self.dtype_policy)
        self.post_layernorm = layer_norm(config, "post_layernorm", self.dtype_policy)

    def build(self, input_shape=None):
        for sub in (self.embeddings, self.pre_layrnorm, self.encoder, self.post_layernorm):
            sub.build((None, self.config.hidden_size))

    def call(
        self,
        pixel_values=None,
        output_attentions=False,
        output_hidden_states=False,
        interpolate_pos_encoding=False,
        pooled_only=False,
        training=False,
    ):
        if not inputs_checked_eagerly():
            self.check_inputs(pixel_values, interpolate_pos_encoding)
        x = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding))
        if pooled_only and not (output_attentions or output_hidden_states):
            index = tf.zeros(tf.shape(x)[:1], tf.int32)  # the class token
            return BaseModelOutputWithPooling(
                None, normalize(self.post_layernorm, self.encoder.output_at(x, index, training=training))
            )
        encoded = self.encoder(
            x, output_attentions=output_attentions, output_hidden_states=output_hidden_states, training=training
        )
        last = encoded.last_hidden_state
        pooled = self.post_layernorm(last[:, 0])  # the class token, BD
        return BaseModelOutputWithPooling(last, pooled, encoded.hidden_states, encoded.attentions)

    def check_inputs(self, pixel_values, interpolate_pos_encoding=False):
        """ValueError naming the input unless the shape and dtype are what the tower takes."""
        checks.check_image_inputs(self.config, pixel_values, interpolate_pos_encoding, shape_of=_static_shape)
