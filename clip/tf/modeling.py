"""CLIP in TensorFlow / Keras 3: a pre-LN transformer for text (causal) and images (ViT), joined by projections.

A module-for-module translation of clip/pt/modeling.py (and of clip/pt/layers.py and towers.py in
clip/tf/layers.py and towers.py): the same classes, attribute names and order, so each variable's
path is its canonical (transformers PyTorch) name with the Keras leaf name
(clip.common.weights.LEAF_RULES). Every variable's shape follows from the config, so models build
all their weights when constructed. Argument checks and the pooling rule live in clip.common.checks;
which parameters exist and how they are initialized in the parameter table (clip.common.params);
loading and saving in clip.tf.loading; the contrastive loss in clip.tf.loss; the base class
TFCLIPPreTrainedModel in clip.tf.pretrained.

Shapes: B batch, E projection width.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from clip.common import checks, params
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import CLIPOutput, CLIPTextModelOutput, CLIPVisionModelOutput, ModelOutput, as_requested
from clip.tf.eager import graph_when_eager
from clip.tf.layers import CLIPMLP, CLIPAttention, CLIPEncoder, CLIPEncoderLayer
from clip.tf.loss import clip_loss
from clip.tf.pretrained import TFCLIPPreTrainedModel, TFInput, fit_batch_inputs, unpack_inputs
from clip.tf.towers import (
    CLIPTextEmbeddings,
    CLIPTextTransformer,
    CLIPVisionEmbeddings,
    CLIPVisionTransformer,
    set_embedding_table,
)

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


@keras.saving.register_keras_serializable(package=PACKAGE)
class TFCLIPTextModel(TFCLIPPreTrainedModel):
    config_class = CLIPTextConfig
    config: CLIPTextConfig
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
        input_ids: TFInput = None,
        attention_mask: TFInput = None,
        position_ids: TFInput = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
    ) -> ModelOutput | tuple[Any, ...]:
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
    config: CLIPTextConfig
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
        input_ids: TFInput = None,
        attention_mask: TFInput = None,
        position_ids: TFInput = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
    ) -> ModelOutput | tuple[Any, ...]:
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
    config: CLIPVisionConfig
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
        pixel_values: TFInput = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        training: bool = False,
    ) -> ModelOutput | tuple[Any, ...]:
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
    config: CLIPVisionConfig
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
        pixel_values: TFInput = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        training: bool = False,
    ) -> ModelOutput | tuple[Any, ...]:
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
    config: CLIPConfig
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
    def get_text_features(
        self,
        input_ids: TFInput = None,
        attention_mask: TFInput = None,
        position_ids: TFInput = None,
        training: bool = False,
    ) -> tf.Tensor:
        """Projected (not normalized) text embeddings, (B, projection_dim)."""
        return self.text_projection(
            self.text_model(input_ids, attention_mask, position_ids, pooled_only=True, training=training).pooler_output
        )

    @unpack_inputs
    @graph_when_eager
    def get_image_features(
        self, pixel_values: TFInput = None, interpolate_pos_encoding: bool = False, training: bool = False
    ) -> tf.Tensor:
        """Projected (not normalized) image embeddings, (B, projection_dim)."""
        out = self.vision_model(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, pooled_only=True, training=training
        )
        return self.visual_projection(out.pooler_output)

    @unpack_inputs
    @graph_when_eager
    def call(
        self,
        input_ids: TFInput = None,
        pixel_values: TFInput = None,
        attention_mask: TFInput = None,
        position_ids: TFInput = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        training: bool = False,
    ) -> CLIPOutput | tuple[Any, ...]:
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
    def train_step(self, data):
        inputs = fit_batch_inputs(data)
        with tf.GradientTape() as tape:
            loss = self(**inputs, return_loss=True, training=True).loss
            total = loss + tf.add_n(self.losses) if self.losses else loss  # regularizers, if any
            scaled = self.optimizer.scale_loss(total)  # LossScaleOptimizer under mixed_float16
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._track_loss(loss)

    def test_step(self, data):
        return self._track_loss(self(**fit_batch_inputs(data), return_loss=True, training=False).loss)

    def _track_loss(self, loss):
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]
