"""CLIP in PyTorch: a pre-LN transformer for text (causal) and images (ViT), joined by projections.

Module and parameter names follow transformers' CLIP, so its checkpoints load unchanged. This
file holds the public models; the transformer blocks live in clip.pt.layers, the two towers in
clip.pt.towers, the fast CPU kernels under them in clip.pt.kernels. Argument checks and the pooling
rule live in clip.common.checks; which parameters exist and how they are initialized in the
parameter table (clip.common.params); loading and saving in clip.pt.loading; the contrastive loss
in clip.pt.loss.

Shapes: B batch, E projection width.
"""

from __future__ import annotations

import torch
from torch import nn

from clip.common import checks, params
from clip.common.config import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from clip.common.outputs import (
    CLIPOutput,
    CLIPTextModelOutput,
    CLIPVisionModelOutput,
    ImageClassifierOutput,
    as_requested,
)
from clip.pt.kernels import Linear
from clip.pt.layers import CLIPMLP, CLIPAttention, CLIPEncoder, CLIPEncoderLayer
from clip.pt.loss import classification_loss, clip_loss
from clip.pt.pretrained import PreTrainedSurface
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


class CLIPPreTrainedModel(PreTrainedSurface, nn.Module):
    """Config handling, initialization, gradient checkpointing, from_pretrained/save_pretrained;
    transformers' PreTrainedModel surface in clip.pt.pretrained."""

    config_class = CLIPConfig
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True

    def __init__(self, config):
        super().__init__()
        self.config = self._take_config(config)

    def init_weights(self, names=None, seed=None):
        """transformers' CLIP initialization for all or some parameters: the arrays of the parameter
        table (clip.common.params.init_arrays), drawn in numpy from `seed` (an int or a numpy
        Generator). Without a seed, torch's generator picks it, so torch.manual_seed(s) before the
        constructor keeps a model reproducible."""
        from clip.common.loading import canonical_class

        table = params.parameter_table(self.config, canonical_class(type(self)))
        own = dict(self.named_parameters())
        chosen = list(table) if names is None else list(names)
        if not chosen or all(own[name].is_meta for name in chosen):
            return  # nothing to draw (from_pretrained builds on the meta device, then fills what it lacks)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (), device="cpu"))
        with torch.no_grad():
            for name, array in params.init_arrays(table, seed, chosen).items():
                own[name].copy_(torch.from_numpy(array))

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self):
        self._set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(m.gradient_checkpointing for m in self.modules() if isinstance(m, CLIPEncoder))

    def _set_gradient_checkpointing(self, enabled):
        for module in self.modules():
            if isinstance(module, CLIPEncoder):
                module.gradient_checkpointing = enabled

    @classmethod
    def from_pretrained(cls, name_or_path, *args, **kwargs):
        from clip.pt import loading

        return loading.from_pretrained(cls, name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, safe_serialization=True, **kwargs):
        """transformers' save_pretrained: safe_serialization, max_shard_size (sharded files plus an
        index json), state_dict."""
        from clip.pt import loading

        return loading.save_pretrained(self, save_directory, safe_serialization=safe_serialization, **kwargs)


class CLIPTextModel(CLIPPreTrainedModel):
    config_class = CLIPTextConfig
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
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        return as_requested(self.text_model(input_ids, attention_mask, position_ids, attn, hidden), return_dict)


class CLIPTextModelWithProjection(CLIPPreTrainedModel):
    config_class = CLIPTextConfig
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
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.text_model(input_ids, attention_mask, position_ids, attn, hidden)
        embeds = self.text_projection(out.pooler_output)
        return as_requested(
            CLIPTextModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions), return_dict
        )


class CLIPVisionModel(CLIPPreTrainedModel):
    config_class = CLIPVisionConfig
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
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        return as_requested(self.vision_model(pixel_values, attn, hidden, interpolate_pos_encoding), return_dict)


class CLIPVisionModelWithProjection(CLIPPreTrainedModel):
    config_class = CLIPVisionConfig
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
        pixel_values=None,
        output_attentions=None,
        output_hidden_states=None,
        interpolate_pos_encoding=False,
        return_dict=None,
    ):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.vision_model(pixel_values, attn, hidden, interpolate_pos_encoding)
        embeds = self.visual_projection(out.pooler_output)
        return as_requested(
            CLIPVisionModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions), return_dict
        )


class CLIPModel(CLIPPreTrainedModel):
    config_class = CLIPConfig
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

    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None):
        """Projected (not normalized) text embeddings, (B, projection_dim)."""
        return self.text_projection(
            self.text_model(input_ids, attention_mask, position_ids, pooled_only=True).pooler_output
        )

    def get_image_features(self, pixel_values=None, interpolate_pos_encoding=False):
        """Projected (not normalized) image embeddings, (B, projection_dim)."""
        pooled = self.vision_model(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, pooled_only=True
        ).pooler_output
        return self.visual_projection(pooled)

    def forward(
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
    ):
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
        pixel_values=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        interpolate_pos_encoding=False,
    ):
        attn, hidden, return_dict = self._output_flags(output_attentions, output_hidden_states, return_dict)
        out = self.vision_model(pixel_values, attn, hidden, interpolate_pos_encoding)
        logits = self.classifier(out.last_hidden_state[:, 1:].mean(dim=1))  # mean of the patch tokens
        loss = None if labels is None else classification_loss(logits, labels, self.config, self.num_labels)
        return as_requested(ImageClassifierOutput(loss, logits, out.hidden_states, out.attentions), return_dict)
