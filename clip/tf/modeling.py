"""CLIP in TensorFlow / Keras 3: a pre-LN transformer for text (causal) and images (ViT), joined by projections.

A module-for-module translation of clip/pt/modeling.py: the same classes, attribute names and order,
so each variable's path is its canonical (transformers PyTorch) name with the Keras leaf name
(clip.common.weights.LEAF_RULES). Every variable's shape follows from the config, so models build
all their weights when constructed. Argument checks, the pooling rule and the init scheme live in
clip.common.checks; loading and saving in clip.tf.loading; the contrastive loss in clip.tf.loss.

Shapes: B batch, L tokens, N patches, D width, H heads, d head width (D = H * d).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from clip.common import checks, weights
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import (
    BaseModelOutput,
    BaseModelOutputWithPooling,
    CLIPOutput,
    CLIPTextModelOutput,
    CLIPVisionModelOutput,
)
from clip.tf.eager import graph_when_eager, values_may_set_shapes
from clip.tf.kernels import linear, patch_tokens
from clip.tf.loss import clip_loss

PACKAGE = "clip"  # register_keras_serializable package: "clip>TFCLIPModel" in .keras files


def quick_gelu(x):
    return x * tf.sigmoid(1.702 * x)


def gelu_tanh(x):
    return tf.nn.gelu(x, approximate=True)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": tf.nn.gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "relu": tf.nn.relu}


def attention_weights(q, k, bias, scale):
    """softmax(q k^T * scale + bias): (B,H,L,d) x2 -> (B,H,L,L).

    Scores and softmax in float32 whatever the compute dtype (as Keras' mixed precision does).
    """
    scores = tf.cast(tf.matmul(q * tf.cast(scale, q.dtype), k, transpose_b=True), tf.float32)  # BHLd x BHdL -> BHLL
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
        self.dropout = keras.layers.Dropout(config.attention_dropout, name="dropout", dtype=self.dtype_policy) if config.attention_dropout else None

    def build(self, input_shape=None):
        for proj in (self.k_proj, self.v_proj, self.q_proj, self.out_proj):
            proj.build((None, self.width))

    def call(self, x, bias=None, output_attentions=False, training=False):
        B, L = tf.shape(x)[0], tf.shape(x)[1]
        split = lambda t: tf.transpose(tf.reshape(t, (B, L, self.num_heads, self.head_dim)), (0, 2, 1, 3))  # noqa: E731 BLD -> BLHd -> BHLd
        q, k, v = split(linear(self.q_proj, x)), split(linear(self.k_proj, x)), split(linear(self.v_proj, x))
        weights = attention_weights(q, k, bias, self.scale)
        dropped = self.dropout(weights, training=training) if self.dropout is not None else weights
        out = tf.reshape(tf.transpose(tf.matmul(dropped, v), (0, 2, 1, 3)), (B, L, self.width))  # BHLd -> BLHd -> BLD
        return linear(self.out_proj, out), (weights if output_attentions else None)

    def call_query(self, x, query, bias=None, training=False):
        """Attention output for one query per sequence: x (B,L,D), query (B,D), bias (B,1,1,L) -> (B,D)."""
        B, L = tf.shape(x)[0], tf.shape(x)[1]
        split = lambda t, n: tf.transpose(tf.reshape(t, (B, n, self.num_heads, self.head_dim)), (0, 2, 1, 3))  # noqa: E731 BnD -> BHnd
        q = split(linear(self.q_proj, query), 1)  # B,H,1,d
        k, v = split(linear(self.k_proj, x), L), split(linear(self.v_proj, x), L)
        weights = attention_weights(q, k, bias, self.scale)  # B,H,1,L
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
    y = (x32 - mean) * tf.math.rsqrt(variance + norm.epsilon) * tf.cast(norm.gamma, tf.float32) + tf.cast(norm.beta, tf.float32)
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

    def call(self, x, bias=None, output_attentions=False, training=False):
        # sublayers' call() directly: the same math and variables as __call__, without its overhead
        attn, weights = self.self_attn.call(normalize(self.layer_norm1, x), bias, output_attentions, training)
        x = x + attn
        x = x + self.mlp.call(normalize(self.layer_norm2, x))
        return x, weights

    def call_at(self, x, index, bias=None, training=False):
        """The layer's output at position index[b] of each sequence, (B,L,D) -> (B,D).

        Pooling reads one token of the last layer, so only that token needs its query, its
        residual and its MLP: about 1/num_layers of the tower's work saved, exactly.
        """
        h = normalize(self.layer_norm1, x)
        y = tf.gather(x, index, batch_dims=1) + self.self_attn.call_query(h, tf.gather(h, index, batch_dims=1), bias, training)  # BD
        return y + self.mlp.call(normalize(self.layer_norm2, y))


class CLIPEncoder(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False  # as CLIPAttention
        self.layers = [CLIPEncoderLayer(config, name=f"layers.{i}", dtype=self.dtype_policy) for i in range(config.num_hidden_layers)]

    def build(self, input_shape=None):
        for layer in self.layers:
            layer.build(input_shape)

    def call(self, x, bias=None, output_attentions=False, output_hidden_states=False, training=False):
        states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for layer in self.layers:
            x, weights = layer(x, bias=bias, output_attentions=output_attentions, training=training)
            if output_hidden_states:
                states += (x,)
            if output_attentions:
                attentions += (weights,)
        return BaseModelOutput(last_hidden_state=x, hidden_states=states, attentions=attentions)

    def call_pooled(self, x, index, bias=None, row_bias=None, training=False):
        """Only the last layer's output at `index` (B,), for callers that need nothing else."""
        for layer in self.layers[:-1]:
            x, _ = layer(x, bias=bias, training=training)
        return self.layers[-1].call_at(x, index, row_bias, training)


class CLIPTextEmbeddings(keras.layers.Layer):
    def __init__(self, config: CLIPTextConfig, **kwargs):
        super().__init__(**kwargs)
        self.token_embedding = keras.layers.Embedding(config.vocab_size, config.hidden_size, name="token_embedding", dtype=self.dtype_policy)
        self.position_embedding = keras.layers.Embedding(config.max_position_embeddings, config.hidden_size, name="position_embedding", dtype=self.dtype_policy)

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
        self.patch_embedding = keras.layers.Conv2D(self.width, self.patch_size, self.patch_size, use_bias=False, name="patch_embedding", dtype=self.dtype_policy)
        self.position_embedding = keras.layers.Embedding(config.num_patches + 1, self.width, name="position_embedding", dtype=self.dtype_policy)

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
    """Additive float32 bias for the text encoder: causal, plus padding when anything is padded."""
    causal = causal_bias(length)  # L,L
    if attention_mask is None:
        return causal
    padding = tf.where(tf.equal(attention_mask, 0), np.finfo(np.float32).min, 0.0)  # BL
    # B,1,1,L + L,L -> B,1,L,L; doubly masked entries become -inf, as in transformers' sum of masks
    return padding[:, None, None, :] + causal


def _static_shape(tensor, fill):
    """The static shape with unknown dims (inside tf.function) replaced by `fill`'s, which pass the checks."""
    return tuple(d if d is not None else f for d, f in zip(tensor.shape, fill))


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

    def call(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=False, output_hidden_states=False, pooled_only=False, training=False):
        self.check_inputs(input_ids, attention_mask, position_ids)
        index = self.pooled_positions(input_ids)
        if pooled_only and not (output_attentions or output_hidden_states):
            return BaseModelOutputWithPooling(None, self.pooled_only(input_ids, attention_mask, position_ids, index, training))
        x = self.embeddings(input_ids, position_ids=position_ids)
        bias = text_attention_bias(attention_mask, tf.shape(input_ids)[1])
        encoded = self.encoder(x, bias=bias, output_attentions=output_attentions, output_hidden_states=output_hidden_states, training=training)
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
        bias = text_attention_bias(attention_mask, length)
        full = tf.broadcast_to(bias, (tf.shape(input_ids)[0], 1, length, length))
        row_bias = tf.gather(full[:, 0], index, batch_dims=1)[:, None, None, :]  # the pooled queries' rows: B,1,1,L
        return normalize(self.final_layer_norm, self.encoder.call_pooled(x, index, bias, row_bias, training))

    def check_inputs(self, input_ids, attention_mask=None, position_ids=None):
        """ValueError naming the input unless the shapes and dtypes are what the tower takes."""
        if input_ids is None:
            raise ValueError("input_ids are required (integer token ids of shape (batch_size, sequence_length))")
        ids_shape = _static_shape(input_ids, (1, 1))
        checks.check_input_ids(ids_shape, input_ids.dtype, self.config)
        if attention_mask is not None:
            checks.check_attention_mask(_static_shape(attention_mask, ids_shape), ids_shape)
        if position_ids is not None:
            checks.check_position_ids(_static_shape(position_ids, ids_shape), position_ids.dtype, ids_shape, self.config)

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

    def call(self, pixel_values=None, output_attentions=False, output_hidden_states=False, interpolate_pos_encoding=False, pooled_only=False, training=False):
        self.check_inputs(pixel_values, interpolate_pos_encoding)
        x = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding))
        if pooled_only and not (output_attentions or output_hidden_states):
            index = tf.zeros(tf.shape(x)[:1], tf.int32)  # the class token
            return BaseModelOutputWithPooling(None, normalize(self.post_layernorm, self.encoder.call_pooled(x, index, training=training)))
        encoded = self.encoder(x, output_attentions=output_attentions, output_hidden_states=output_hidden_states, training=training)
        last = encoded.last_hidden_state
        pooled = self.post_layernorm(last[:, 0])  # the class token, BD
        return BaseModelOutputWithPooling(last, pooled, encoded.hidden_states, encoded.attentions)

    def check_inputs(self, pixel_values, interpolate_pos_encoding=False):
        """ValueError naming the input unless the shape and dtype are what the tower takes."""
        if pixel_values is None:
            raise ValueError("pixel_values are required (float images of shape (batch_size, channels, height, width))")
        size = self.config.image_size
        shape = _static_shape(pixel_values, (1, self.config.num_channels, size, size))
        checks.check_pixel_values(shape, self.config, interpolate_pos_encoding, pixel_values.dtype)


def l2_normalize(x):
    # the sum of squares overflows float16 once |x| > 256: take the norm in float32
    x32 = tf.cast(x, tf.float32)
    return tf.cast(x32 / tf.sqrt(tf.reduce_sum(tf.square(x32), axis=-1, keepdims=True)), x.dtype)


def scaled_similarity(text_embeds, image_embeds, logit_scale):
    """logit_scale.exp() * cosine similarity, (T,E) x (I,E) -> (T,I), in float32 under every dtype policy."""
    cosine = tf.matmul(tf.cast(text_embeds, tf.float32), tf.cast(image_embeds, tf.float32), transpose_b=True)
    return cosine * tf.exp(tf.cast(logit_scale, tf.float32))


def dense(units, name, dtype):
    return keras.layers.Dense(units, use_bias=False, name=name, dtype=dtype)


class TFCLIPPreTrainedModel(keras.Model):
    """Config handling, initialization, Keras serialization, training, from_pretrained/save_pretrained."""

    config_class = CLIPConfig
    canonical_class = "CLIPModel"  # its name in clip.common.weights and in transformers' PyTorch
    main_input_name = "input_ids"

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    def _finish_init(self):
        self.build()
        self.init_weights()

    def build(self, input_shape=None):
        for sub in self._layers:
            sub.build(input_shape)
        self.built = True

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(cls.config_class.from_dict(config.pop("config")), **config)

    def get_build_config(self):
        return None  # every weight's shape follows from the config: built in __init__

    # -- weights by canonical name ------------------------------------------------------------------
    def canonical_variables(self) -> dict:
        """{canonical name: (Keras variable, leaf kind)} in the order of clip.common.weights."""
        out = {}
        for name, (_, kind) in weights.expected_parameters(self.config, self.canonical_class).items():
            obj = self
            for part in weights.backend_name(name, kind, "tf").split("."):
                obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
            out[name] = (obj, kind)
        return out

    def init_weights(self, names=None):
        """transformers' CLIP initialization (clip.common.checks.init_spec), for all or some weights."""
        variables = self.canonical_variables()
        for name in variables if names is None else names:
            variable, _ = variables[name]
            spec = checks.init_spec(name, self.config)
            if spec[0] == "normal":
                value = tf.random.normal(variable.shape, stddev=spec[1])
            else:
                value = tf.fill(variable.shape, {"zeros": 0.0, "ones": 1.0}.get(spec[0], spec[-1]))
            variable.assign(tf.cast(value, variable.dtype))

    def _output_flags(self, output_attentions, output_hidden_states, return_dict):
        pick = lambda value, key, default: value if value is not None else getattr(self.config, key, default)  # noqa: E731
        return pick(output_attentions, "output_attentions", False), pick(output_hidden_states, "output_hidden_states", False), pick(return_dict, "return_dict", True)

    @classmethod
    def from_pretrained(cls, name_or_path, *args, **kwargs):
        from clip.tf import loading

        return loading.from_pretrained(cls, name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        from clip.tf import loading

        return loading.save_pretrained(self, save_directory, **kwargs)


def _finish(output, return_dict):
    return output if return_dict else output.to_tuple()


@keras.saving.register_keras_serializable(package=PACKAGE)
class TFCLIPTextModel(TFCLIPPreTrainedModel):
    config_class = CLIPTextConfig
    canonical_class = "CLIPTextModel"

    def __init__(self, config: CLIPTextConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.text_model = CLIPTextTransformer(config, name="text_model", dtype=self.dtype_policy)
        self._finish_init()

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    @graph_when_eager
    def call(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None, output_hidden_states=None, return_dict=None, training=False):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        return _finish(self.text_model(input_ids, attention_mask, position_ids, output_attentions=attn, output_hidden_states=hidden, training=training), return_dict)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TFCLIPTextModelWithProjection(TFCLIPPreTrainedModel):
    config_class = CLIPTextConfig
    canonical_class = "CLIPTextModelWithProjection"

    def __init__(self, config: CLIPTextConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.text_model = CLIPTextTransformer(config, name="text_model", dtype=self.dtype_policy)
        self.text_projection = dense(config.projection_dim, "text_projection", self.dtype_policy)
        self._finish_init()

    def build(self, input_shape=None):
        self.text_model.build()
        self.text_projection.build((None, self.config.hidden_size))
        self.built = True

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    @graph_when_eager
    def call(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None, output_hidden_states=None, return_dict=None, training=False):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.text_model(input_ids, attention_mask, position_ids, output_attentions=attn, output_hidden_states=hidden, training=training)
        embeds = self.text_projection(out.pooler_output)
        return _finish(CLIPTextModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions), return_dict)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TFCLIPVisionModel(TFCLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    canonical_class = "CLIPVisionModel"
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPVisionConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.vision_model = CLIPVisionTransformer(config, name="vision_model", dtype=self.dtype_policy)
        self._finish_init()

    def get_input_embeddings(self):
        return self.vision_model.embeddings.patch_embedding

    @graph_when_eager
    def call(self, pixel_values=None, output_attentions=None, output_hidden_states=None, interpolate_pos_encoding=False, return_dict=None, training=False):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.vision_model(pixel_values, output_attentions=attn, output_hidden_states=hidden, interpolate_pos_encoding=interpolate_pos_encoding, training=training)
        return _finish(out, return_dict)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TFCLIPVisionModelWithProjection(TFCLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    canonical_class = "CLIPVisionModelWithProjection"
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPVisionConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.vision_model = CLIPVisionTransformer(config, name="vision_model", dtype=self.dtype_policy)
        self.visual_projection = dense(config.projection_dim, "visual_projection", self.dtype_policy)
        self._finish_init()

    def build(self, input_shape=None):
        self.vision_model.build()
        self.visual_projection.build((None, self.config.hidden_size))
        self.built = True

    def get_input_embeddings(self):
        return self.vision_model.embeddings.patch_embedding

    @graph_when_eager
    def call(self, pixel_values=None, output_attentions=None, output_hidden_states=None, interpolate_pos_encoding=False, return_dict=None, training=False):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.vision_model(pixel_values, output_attentions=attn, output_hidden_states=hidden, interpolate_pos_encoding=interpolate_pos_encoding, training=training)
        embeds = self.visual_projection(out.pooler_output)
        return _finish(CLIPVisionModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions), return_dict)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TFCLIPModel(TFCLIPPreTrainedModel):
    """CLIP as a Keras model.

    Training: `compile(optimizer)` then `fit` on batches of {"input_ids", "attention_mask",
    "pixel_values"} (what CLIPProcessor returns) or tuples in that order, without labels: the
    loss is CLIP's contrastive loss, computed by `train_step`/`test_step`. A loss given to
    `compile` is not used (the pairs are the labels).
    """

    config_class = CLIPConfig
    canonical_class = "CLIPModel"

    def __init__(self, config: CLIPConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.text_model = CLIPTextTransformer(config.text_config, name="text_model", dtype=self.dtype_policy)
        self.vision_model = CLIPVisionTransformer(config.vision_config, name="vision_model", dtype=self.dtype_policy)
        self.visual_projection = dense(config.projection_dim, "visual_projection", self.dtype_policy)
        self.text_projection = dense(config.projection_dim, "text_projection", self.dtype_policy)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self._finish_init()

    def build(self, input_shape=None):
        self.logit_scale = self.add_weight(shape=(), initializer="zeros", name="logit_scale")
        self.text_model.build()
        self.vision_model.build()
        self.visual_projection.build((None, self.config.vision_config.hidden_size))
        self.text_projection.build((None, self.config.text_config.hidden_size))
        self.built = True

    @graph_when_eager
    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None, training=False):
        """Projected (not normalized) text embeddings, (B, projection_dim)."""
        return self.text_projection(self.text_model(input_ids, attention_mask, position_ids, pooled_only=True, training=training).pooler_output)

    @graph_when_eager
    def get_image_features(self, pixel_values=None, interpolate_pos_encoding=False, training=False):
        """Projected (not normalized) image embeddings, (B, projection_dim)."""
        out = self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, pooled_only=True, training=training)
        return self.visual_projection(out.pooler_output)

    @graph_when_eager
    def call(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        return_loss=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
        training=False,
    ):
        if isinstance(input_ids, dict):  # one batch dict, as Keras' fit/predict pass it
            batch = input_ids
            input_ids, pixel_values = batch.get("input_ids"), batch.get("pixel_values", pixel_values)
            attention_mask, position_ids = batch.get("attention_mask", attention_mask), batch.get("position_ids", position_ids)
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        if return_loss and input_ids is not None and pixel_values is not None and len(input_ids.shape) == 2:
            checks.check_batch_sizes(input_ids.shape[0], pixel_values.shape[0])  # static sizes; None passes
        vision = self.vision_model(pixel_values, output_attentions=attn, output_hidden_states=hidden, interpolate_pos_encoding=interpolate_pos_encoding, training=training)
        text = self.text_model(input_ids, attention_mask, position_ids, output_attentions=attn, output_hidden_states=hidden, training=training)
        image_embeds = l2_normalize(self.visual_projection(vision.pooler_output))
        text_embeds = l2_normalize(self.text_projection(text.pooler_output))
        logits_per_text = scaled_similarity(text_embeds, image_embeds, self.logit_scale)  # T,I float32
        loss = clip_loss(logits_per_text) if return_loss else None
        output = CLIPOutput(loss, tf.transpose(logits_per_text), logits_per_text, text_embeds, image_embeds, text, vision)
        return _finish(output, return_dict)

    # -- Keras training -----------------------------------------------------------------------------
    @staticmethod
    def _batch(data):
        """A fit/evaluate batch -> call kwargs: a dict, or (input_ids, attention_mask, pixel_values)."""
        if isinstance(data, dict):
            return dict(data)
        if isinstance(data, (tuple, list)) and len(data) == 1 and isinstance(data[0], dict):
            return dict(data[0])  # (x,) as Keras' adapters may wrap it
        if isinstance(data, (tuple, list)) and len(data) == 3:
            return dict(zip(("input_ids", "attention_mask", "pixel_values"), data))
        raise ValueError(
            "TFCLIPModel trains on batches of {'input_ids', 'attention_mask', 'pixel_values'} or tuples "
            f"(input_ids, attention_mask, pixel_values); got {type(data).__name__}"
        )

    def train_step(self, data):
        inputs = self._batch(data)
        with tf.GradientTape() as tape:
            loss = self(**inputs, return_loss=True, training=True).loss
            total = loss + tf.add_n(self.losses) if self.losses else loss  # regularizers, if any
            scaled = self.optimizer.scale_loss(total)  # LossScaleOptimizer under mixed_float16
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._track_loss(loss)

    def test_step(self, data):
        return self._track_loss(self(**self._batch(data), return_loss=True, training=False).loss)

    def _track_loss(self, loss):
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


# -- tf.nest support for the output containers --------------------------------------------------------
