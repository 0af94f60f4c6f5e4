"""CLIP for JAX (flax.nnx modules, transformers-style functional wrappers): the five model classes."""

from clip.flax.loss import clip_loss, contrastive_loss
from clip.flax.modeling import (
    FlaxCLIPModel,
    FlaxCLIPPreTrainedModel,
    FlaxCLIPTextModel,
    FlaxCLIPTextModelWithProjection,
    FlaxCLIPVisionModel,
    FlaxCLIPVisionModelWithProjection,
)

__all__ = [
    "FlaxCLIPModel",
    "FlaxCLIPPreTrainedModel",
    "FlaxCLIPTextModel",
    "FlaxCLIPTextModelWithProjection",
    "FlaxCLIPVisionModel",
    "FlaxCLIPVisionModelWithProjection",
    "clip_loss",
    "contrastive_loss",
]
