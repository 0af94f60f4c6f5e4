"""CLIP in TensorFlow / Keras 3: a pre-LN transformer for text (causal) and images (ViT), joined by projections.

A module-for-module translation of clip/pt/modeling.py (and of clip/pt/layers.py and towers.py in
clip/tf/layers.py and towers.py): the same classes, attribute names and order, so each variable's
path is its canonical (transformers PyTorch) name with the Keras leaf name
(clip.common.weights.LEAF_RULES). Every variable's shape follows from the config, so models build
all their weights when constructed. Argument checks and the pooling rule live in clip.common.checks;
which parameters exist and how they are initialized in the parameter table (clip.common.params);
loading and saving in clip.tf.loading; the contrastive loss in clip.tf.loss.

Shapes: B batch, E projection width.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf

from clip.common import checks, params, weights
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import CLIPOutput, CLIPTextModelOutput, CLIPVisionModelOutput, as_requested
from clip.tf.eager import graph_when_eager
from clip.tf.layers import CLIPMLP, CLIPAttention, CLIPEncoder, CLIPEncoderLayer
from clip.tf.loss import clip_loss
from clip.tf.pretrained import TFPreTrainedSurface, unpack_inputs
from clip.tf.towers import CLIPTextEmbeddings, CLIPTextTransformer, CLIPVisionEmbeddings, CLIPVisionTransformer

# the blocks and towers stay importable from here
__all__ = [
    "CLIPAttention",
    "CLIPMLP",
    "CLIPEncoderLayer",
    "CLIPEncoder",
    "CLIPTextEmbeddings",
    "CLIPVisionEmbeddings",
    "CLIPTextTransformer",
    "CLIPVisionTransformer",
    "TFCLIPPreTrainedModel",
    "TFCLIPTextModel",
    "TFCLIPTextModelWithProjection",
    "TFCLIPVisionModel",
    "TFCLIPVisionModelWithProjection",
    "TFCLIPModel",
]


PACKAGE = "clip"  # register_keras_serializable package: "clip>TFCLIPModel" in .keras files


def l2_normalize(x):
    # the sum of squares overflows float16 once |x| > 256: take the norm in float32
    x32 = tf.cast(x, tf.float32)
    return tf.cast(x32 / tf.sqrt(tf.reduce_sum(tf.square(x32), axis=-1, keepdims=True)), x.dtype)


def scaled_similarity(text_embeds, image_embeds, logit_scale):
    """logit_scale.exp() * cosine similarity, (T,E) x (I,E) -> (T,I), in float32 under every dtype policy.

    transformers' TF CLIP has no reduced-precision behaviour to follow (it fails under a mixed or
    half policy), so Keras' mixed-precision rule holds: a model's outputs in float32. (PyTorch and
    Flax return the dtype transformers' classes return there.)
    """
    cosine = tf.matmul(tf.cast(text_embeds, tf.float32), tf.cast(image_embeds, tf.float32), transpose_b=True)
    return cosine * tf.exp(tf.cast(logit_scale, tf.float32))


def dense(units, name, dtype, use_bias=False):
    return keras.layers.Dense(units, use_bias=use_bias, name=name, dtype=dtype)


class TFCLIPPreTrainedModel(TFPreTrainedSurface, keras.Model):
    """Config handling, initialization, Keras serialization, training, from_pretrained/save_pretrained;
    transformers' TFPreTrainedModel surface in clip.tf.pretrained."""

    config_class = CLIPConfig
    canonical_class = "CLIPModel"  # its name in clip.common.weights and in transformers' PyTorch
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = self._take_config(config)

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

    def init_weights(self, names=None, seed=None):
        """transformers' CLIP initialization for all or some weights: the arrays of the parameter table
        (clip.common.params.init_arrays), drawn in numpy from `seed` (an int or a numpy Generator).
        Without a seed, TensorFlow's random state picks it, so keras.utils.set_random_seed(s) before the
        constructor keeps a model reproducible."""
        variables = self.canonical_variables()
        chosen = list(variables) if names is None else list(names)
        if not chosen:
            return
        if seed is None:
            seed = int(tf.random.uniform((), 0, 2**31 - 1, dtype=tf.int64))
        table = params.parameter_table(self.config, self.canonical_class)
        for name, array in params.init_arrays(table, seed, chosen).items():
            variable, kind = variables[name]
            variable.assign(tf.cast(weights.to_backend_layout(array, kind, "tf"), variable.dtype))

    # -- gradient checkpointing (PyTorch's surface; each encoder layer through tf.recompute_grad) ----------
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self):
        self._set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(layer, "gradient_checkpointing", False) for layer in self._flatten_layers())

    def _set_gradient_checkpointing(self, enabled):
        for layer in self._flatten_layers():
            if hasattr(layer, "gradient_checkpointing"):
                layer.gradient_checkpointing = enabled

    @classmethod
    def from_pretrained(cls, name_or_path, *args, **kwargs):
        from clip.tf import loading

        return loading.from_pretrained(cls, name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        from clip.tf import loading

        return loading.save_pretrained(self, save_directory, **kwargs)


def set_embedding_table(layer, value):
    table = value.embeddings if isinstance(value, keras.layers.Embedding) else value
    if tuple(table.shape) != tuple(layer.embeddings.shape):
        raise ValueError(
            f"set_input_embeddings: the table has shape {tuple(layer.embeddings.shape)}, got {tuple(table.shape)} "
            "(resizing the vocabulary is not supported)"
        )
    layer.embeddings.assign(tf.cast(table, layer.embeddings.dtype))


@keras.saving.register_keras_serializable(package=PACKAGE)
class TFCLIPTextModel(TFCLIPPreTrainedModel):
    config_class = CLIPTextConfig
    canonical_class = "CLIPTextModel"

    def __init__(self, config: CLIPTextConfig, **kwargs):
        super().__init__(config, **kwargs)
        config = self.config  # ours, converted from transformers' or a dict
        self.text_model = CLIPTextTransformer(config, name="text_model", dtype=self.dtype_policy)
        self._finish_init()

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value):
        """New token embeddings: an array or variable of the table's shape, or a Keras Embedding layer."""
        set_embedding_table(self.text_model.embeddings.token_embedding, value)

    @unpack_inputs
    @graph_when_eager
    def call(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        training=False,
    ):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        return as_requested(
            self.text_model(
                input_ids,
                attention_mask,
                position_ids,
                output_attentions=attn,
                output_hidden_states=hidden,
                training=training,
            ),
            return_dict,
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class TFCLIPTextModelWithProjection(TFCLIPPreTrainedModel):
    config_class = CLIPTextConfig
    canonical_class = "CLIPTextModelWithProjection"

    def __init__(self, config: CLIPTextConfig, **kwargs):
        super().__init__(config, **kwargs)
        config = self.config  # ours, converted from transformers' or a dict
        self.text_model = CLIPTextTransformer(config, name="text_model", dtype=self.dtype_policy)
        bias = params.has_parameter(config, self.canonical_class, "text_projection.bias")  # the table decides
        self.text_projection = dense(config.projection_dim, "text_projection", self.dtype_policy, bias)
        self._finish_init()

    def build(self, input_shape=None):
        self.text_model.build()
        self.text_projection.build((None, self.config.hidden_size))
        self.built = True

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value):
        """New token embeddings: an array or variable of the table's shape, or a Keras Embedding layer."""
        set_embedding_table(self.text_model.embeddings.token_embedding, value)

    @unpack_inputs
    @graph_when_eager
    def call(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        training=False,
    ):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.text_model(
            input_ids,
            attention_mask,
            position_ids,
            output_attentions=attn,
            output_hidden_states=hidden,
            training=training,
        )
        embeds = self.text_projection(out.pooler_output)
        return as_requested(
            CLIPTextModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions), return_dict
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class TFCLIPVisionModel(TFCLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    canonical_class = "CLIPVisionModel"
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPVisionConfig, **kwargs):
        super().__init__(config, **kwargs)
        config = self.config  # ours, converted from transformers' or a dict
        self.vision_model = CLIPVisionTransformer(config, name="vision_model", dtype=self.dtype_policy)
        self._finish_init()

    def get_input_embeddings(self):
        return self.vision_model.embeddings.patch_embedding

    @unpack_inputs
    @graph_when_eager
    def call(
        self,
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
        training=False,
    ):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.vision_model(
            pixel_values,
            output_attentions=attn,
            output_hidden_states=hidden,
            interpolate_pos_encoding=interpolate_pos_encoding,
            training=training,
        )
        return as_requested(out, return_dict)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TFCLIPVisionModelWithProjection(TFCLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    canonical_class = "CLIPVisionModelWithProjection"
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPVisionConfig, **kwargs):
        super().__init__(config, **kwargs)
        config = self.config  # ours, converted from transformers' or a dict
        self.vision_model = CLIPVisionTransformer(config, name="vision_model", dtype=self.dtype_policy)
        bias = params.has_parameter(config, self.canonical_class, "visual_projection.bias")  # the table decides
        self.visual_projection = dense(config.projection_dim, "visual_projection", self.dtype_policy, bias)
        self._finish_init()

    def build(self, input_shape=None):
        self.vision_model.build()
        self.visual_projection.build((None, self.config.hidden_size))
        self.built = True

    def get_input_embeddings(self):
        return self.vision_model.embeddings.patch_embedding

    @unpack_inputs
    @graph_when_eager
    def call(
        self,
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
        training=False,
    ):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.vision_model(
            pixel_values,
            output_attentions=attn,
            output_hidden_states=hidden,
            interpolate_pos_encoding=interpolate_pos_encoding,
            training=training,
        )
        embeds = self.visual_projection(out.pooler_output)
        return as_requested(
            CLIPVisionModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions), return_dict
        )


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
        config = self.config  # ours, converted from transformers' or a dict
        self.text_model = CLIPTextTransformer(config.text_config, name="text_model", dtype=self.dtype_policy)
        self.vision_model = CLIPVisionTransformer(config.vision_config, name="vision_model", dtype=self.dtype_policy)
        table = params.parameter_table(config, self.canonical_class)  # which optional parameters exist
        self.visual_projection = dense(
            config.projection_dim, "visual_projection", self.dtype_policy, "visual_projection.bias" in table
        )
        self.text_projection = dense(
            config.projection_dim, "text_projection", self.dtype_policy, "text_projection.bias" in table
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self._finish_init()

    def build(self, input_shape=None):
        self.logit_scale = self.add_weight(shape=(), initializer="zeros", name="logit_scale")
        self.text_model.build()
        self.vision_model.build()
        self.visual_projection.build((None, self.config.vision_config.hidden_size))
        self.text_projection.build((None, self.config.text_config.hidden_size))
        self.built = True

    @unpack_inputs
    @graph_when_eager
    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None, training=False):
        """Projected (not normalized) text embeddings, (B, projection_dim)."""
        return self.text_projection(
            self.text_model(input_ids, attention_mask, position_ids, pooled_only=True, training=training).pooler_output
        )

    @unpack_inputs
    @graph_when_eager
    def get_image_features(self, pixel_values=None, interpolate_pos_encoding=False, training=False):
        """Projected (not normalized) image embeddings, (B, projection_dim)."""
        out = self.vision_model(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, pooled_only=True, training=training
        )
        return self.visual_projection(out.pooler_output)

    @unpack_inputs
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
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        checks.check_loss_inputs(return_loss, input_ids, pixel_values)
        vision = self.vision_model(
            pixel_values,
            output_attentions=attn,
            output_hidden_states=hidden,
            interpolate_pos_encoding=interpolate_pos_encoding,
            training=training,
        )
        text = self.text_model(
            input_ids,
            attention_mask,
            position_ids,
            output_attentions=attn,
            output_hidden_states=hidden,
            training=training,
        )
        image_embeds = l2_normalize(self.visual_projection(vision.pooler_output))
        text_embeds = l2_normalize(self.text_projection(text.pooler_output))
        logits_per_text = scaled_similarity(text_embeds, image_embeds, self.logit_scale)  # T,I float32
        loss = clip_loss(logits_per_text) if return_loss else None
        output = CLIPOutput(
            loss, tf.transpose(logits_per_text), logits_per_text, text_embeds, image_embeds, text, vision
        )
        return as_requested(output, return_dict)

    # -- Keras training -----------------------------------------------------------------------------
    @staticmethod
    def _batch(data):
        """A fit/evaluate batch -> call kwargs: a dict, or (input_ids, attention_mask, pixel_values)."""
        if isinstance(data, (tuple, list)):  # Keras' adapters pass (x, y, sample_weight), y and weight None here
            data = tuple(data)
            while len(data) > 1 and data[-1] is None:
                data = data[:-1]
        if isinstance(data, Mapping):
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
