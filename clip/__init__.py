"""CLIP for PyTorch (`clip.pt`), TensorFlow/Keras (`clip.tf`) and JAX/Flax (`clip.flax`).

Importing `clip` never imports a deep-learning framework: the framework-neutral classes below
are loaded on first use, and each backend only when its subpackage is imported.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "CLIPConfig": "clip.common.config",
    "CLIPTextConfig": "clip.common.config",
    "CLIPVisionConfig": "clip.common.config",
    "CLIPTokenizer": "clip.common.tokenizer",
    "CLIPTokenizerFast": "clip.common.tokenizer",
    "CLIPImageProcessor": "clip.common.image_processor",
    "CLIPFeatureExtractor": "clip.common.image_processor",
    "CLIPProcessor": "clip.common.processor",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clip' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
