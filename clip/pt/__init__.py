"""CLIP for PyTorch: the six transformers-compatible model classes."""

from clip.pt.loss import clip_loss, contrastive_loss
from clip.pt.modeling import (
    CLIPForImageClassification,
    CLIPModel,
    CLIPPreTrainedModel,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)

__all__ = [
    "CLIPForImageClassification",
    "CLIPModel",
    "CLIPPreTrainedModel",
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
    "CLIPVisionModel",
    "CLIPVisionModelWithProjection",
    "clip_loss",
    "contrastive_loss",
]
