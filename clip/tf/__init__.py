"""CLIP for TensorFlow with Keras 3: the five transformers-compatible TF model classes.

Needs Keras 3 on its TensorFlow backend. Mixed precision follows Keras: set
`keras.mixed_precision.set_global_policy("mixed_float16")` (or "mixed_bfloat16") before building
or loading a model, or pass `dtype=` to the constructor / from_pretrained.
"""

import os

_backend = os.environ.get("KERAS_BACKEND")
if _backend and _backend != "tensorflow":
    raise ImportError(
        f"clip.tf needs Keras' TensorFlow backend, but KERAS_BACKEND={_backend!r}; "
        "unset it or set KERAS_BACKEND=tensorflow before importing keras (use clip.pt or clip.flax otherwise)"
    )

import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"clip.tf needs Keras' TensorFlow backend, but Keras runs on {keras.backend.backend()!r} "
        "(from KERAS_BACKEND or ~/.keras/keras.json)"
    )

from clip.tf.loss import clip_loss, contrastive_loss  # noqa: E402
from clip.tf.modeling import (  # noqa: E402
    TFCLIPModel,
    TFCLIPPreTrainedModel,
    TFCLIPTextModel,
    TFCLIPTextModelWithProjection,
    TFCLIPVisionModel,
    TFCLIPVisionModelWithProjection,
)

__all__ = [
    "TFCLIPModel",
    "TFCLIPPreTrainedModel",
    "TFCLIPTextModel",
    "TFCLIPTextModelWithProjection",
    "TFCLIPVisionModel",
    "TFCLIPVisionModelWithProjection",
    "clip_loss",
    "contrastive_loss",
]
