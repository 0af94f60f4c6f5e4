"""CLIP in PyTorch: a pre-LN transformer for text (causal) and images (ViT), joined by projections.

Module and parameter names follow transformers' CLIP, so its checkpoints load unchanged. This
file holds the public models (their base class, CLIPPreTrainedModel, is in clip.pt.pretrained);
the transformer blocks live in clip.pt.layers, the two towers in
clip.pt.towers, the fast CPU kernels under them in clip.pt.kernels. Argument checks and the pooling
rule live in clip.common.checks; which parameters exist and how they are initialized in the
parameter table (clip.common.params); loading and saving in clip.pt.loading; the contrastive loss
in clip.pt.loss.

Shapes: B batch, E projection width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clip.common import checks, params
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import (
    CLIPOutput,
    CLIPTextModelOutput,
    CLIPVisionModelOutput,
    ImageClassifierOutput,
    ModelOutput,
    as_requested,
)
from clip.pt.kernels import Linear
from clip.pt.layers import CLIPMLP, CLIPAttention, CLIPEncoder, CLIPEncoderLayer
from clip.pt.loss import classification_loss, clip_loss
from clip.pt.pretrained import CLIPPreTrainedModel
from clip.pt.towers import CLIPTextEmbeddings, CLIPTextTransformer, CLIPVisionEmbeddings, CLIPVisionTransformer

# the blocks and towers stay importable from here (and pickles that name them here keep loading)
__all__ = [
    "CLIPAttention",
    "CLIPMLP",
    "CLIPEncoderLayer",
    "CLIPEncoder",
    "CLIPTextEmbeddings",
    "CLIPVisionEmbeddings",
    "CLIPTextTransformer",
    "CLIPVisionTransformer",
    "CLIPPreTrainedModel",
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
    "CLIPVisionModel",
    "CLIPVisionModelWithProjection",
    "CLIPModel",
    "CLIPForImageClassification",
]


def l2_normalize(x):
    # the sum of squares overflows float16 once |x| > 256: take the norm in float32
    x32 = x.float()
    return (x32 / x32.pow(2).sum(dim=-1, keepdim=True).sqrt()).to(x.dtype)


def scaled_similarity(text_embeds, image_embeds, logit_scale):
    """logit_scale.exp() * cosine similarity, (T,E) x (I,E) -> (T,I), finite in float16."""
    cosine = torch.matmul(text_embeds, image_embeds.t())  # unit vectors: |cosine| <= 1 in any dtype
    if cosine.dtype != torch.float16:
        return cosine * logit_scale.exp().to(cosine.dtype)
    # exp(logit_scale) passes float16's 65504 for logit_scale > 11.09: scale in float32, then saturate
    logits = cosine.float() * logit_scale.float().exp()
    return logits.clamp(-65504.0, 65504.0).to(torch.float16)


class CLIPTextModel(CLIPPreTrainedModel):
    config_class = CLIPTextConfig
    config: CLIPTextConfig
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer"]

    def __init__(self, config: CLIPTextConfig):
        super().__init__(config)
        config = self.config  # ours, converted from transformers' or a dict
        self.text_model = CLIPTextTransformer(config)
        self.init_weights()

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value):
        self.text_model.embeddings.token_embedding = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ModelOutput | tuple[Any, ...]:
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        return as_requested(self.text_model(input_ids, attention_mask, position_ids, attn, hidden), return_dict)


class CLIPTextModelWithProjection(CLIPPreTrainedModel):
    config_class = CLIPTextConfig
    config: CLIPTextConfig
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer"]

    def __init__(self, config: CLIPTextConfig):
        super().__init__(config)
        config = self.config  # ours, converted from transformers' or a dict
        self.text_model = CLIPTextTransformer(config)
        bias = params.has_parameter(config, "CLIPTextModelWithProjection", "text_projection.bias")  # the table decides
        self.text_projection = Linear(config.hidden_size, config.projection_dim, bias=bias)
        self.init_weights()

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value):
        self.text_model.embeddings.token_embedding = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ModelOutput | tuple[Any, ...]:
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.text_model(input_ids, attention_mask, position_ids, attn, hidden)
        embeds = self.text_projection(out.pooler_output)
        return as_requested(
            CLIPTextModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions), return_dict
        )


class CLIPVisionModel(CLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    config: CLIPVisionConfig
    main_input_name = "pixel_values"
    _supports_flash_attn = True

    def __init__(self, config: CLIPVisionConfig):
        super().__init__(config)
        config = self.config  # ours, converted from transformers' or a dict
        self.vision_model = CLIPVisionTransformer(config)
        self.init_weights()

    def get_input_embeddings(self):
        return self.vision_model.embeddings.patch_embedding

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> ModelOutput | tuple[Any, ...]:
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        return as_requested(self.vision_model(pixel_values, attn, hidden, interpolate_pos_encoding), return_dict)


class CLIPVisionModelWithProjection(CLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    config: CLIPVisionConfig
    main_input_name = "pixel_values"
    _supports_flash_attn = True
    _no_split_modules = None

    def __init__(self, config: CLIPVisionConfig):
        super().__init__(config)
        config = self.config  # ours, converted from transformers' or a dict
        self.vision_model = CLIPVisionTransformer(config)
        bias = params.has_parameter(
            config, "CLIPVisionModelWithProjection", "visual_projection.bias"
        )  # the table decides
        self.visual_projection = Linear(config.hidden_size, config.projection_dim, bias=bias)
        self.init_weights()

    def get_input_embeddings(self):
        return self.vision_model.embeddings.patch_embedding

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> ModelOutput | tuple[Any, ...]:
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.vision_model(pixel_values, attn, hidden, interpolate_pos_encoding)
        embeds = self.visual_projection(out.pooler_output)
        return as_requested(
            CLIPVisionModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions), return_dict
        )


class CLIPModel(CLIPPreTrainedModel):
    config_class = CLIPConfig
    config: CLIPConfig
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]

    def __init__(self, config: CLIPConfig):
        super().__init__(config)
        config = self.config  # ours, converted from transformers' or a dict
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.text_model = CLIPTextTransformer(config.text_config)
        self.vision_model = CLIPVisionTransformer(config.vision_config)
        table = params.parameter_table(config, "CLIPModel")  # which optional parameters exist
        self.visual_projection = Linear(
            config.vision_config.hidden_size, config.projection_dim, bias="visual_projection.bias" in table
        )
        self.text_projection = Linear(
            config.text_config.hidden_size, config.projection_dim, bias="text_projection.bias" in table
        )
        self.init_weights()

    def get_text_features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Projected (not normalized) text embeddings, (B, projection_dim)."""
        return self.text_projection(
            self.text_model(input_ids, attention_mask, position_ids, pooled_only=True).pooler_output
        )

    def get_image_features(
        self, pixel_values: torch.Tensor | None = None, interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """Projected (not normalized) image embeddings, (B, projection_dim)."""
        pooled = self.vision_model(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, pooled_only=True
        ).pooler_output
        return self.visual_projection(pooled)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> CLIPOutput | tuple[Any, ...]:
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        checks.check_loss_inputs(return_loss, input_ids, pixel_values)
        vision = self.vision_model(pixel_values, attn, hidden, interpolate_pos_encoding)
        text = self.text_model(input_ids, attention_mask, position_ids, attn, hidden)
        image_embeds = l2_normalize(self.visual_projection(vision.pooler_output))
        text_embeds = l2_normalize(self.text_projection(text.pooler_output))
        logits_per_text = scaled_similarity(text_embeds, image_embeds, self.logit_scale)  # T,I
        loss = clip_loss(logits_per_text) if return_loss else None
        output = CLIPOutput(loss, logits_per_text.t(), logits_per_text, text_embeds, image_embeds, text, vision)
        return as_requested(output, return_dict)


class CLIPForImageClassification(CLIPPreTrainedModel):
    config_class = CLIPConfig
    config: CLIPConfig
    main_input_name = "pixel_values"
    _supports_flash_attn = True
    _no_split_modules = None

    def __init__(self, config: CLIPConfig):
        super().__init__(config)
        config = self.config  # ours, converted from transformers' or a dict
        self.num_labels = config.num_labels
        self.vision_model = CLIPVisionTransformer(config.vision_config)
        width = config.vision_config.hidden_size
        table = params.parameter_table(config, "CLIPForImageClassification")  # no rows without labels: an identity
        self.classifier = (
            Linear(width, self.num_labels, bias="classifier.bias" in table)
            if "classifier.weight" in table
            else nn.Identity()
        )
        self.init_weights()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> ImageClassifierOutput | tuple[Any, ...]:
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.vision_model(pixel_values, attn, hidden, interpolate_pos_encoding)
        logits = self.classifier(out.last_hidden_state[:, 1:].mean(dim=1))  # mean of the patch tokens
        loss = None if labels is None else classification_loss(logits, labels, self.config, self.num_labels)
        return as_requested(ImageClassifierOutput(loss, logits, out.hidden_states, out.attentions), return_dict)
