"""Models that ship inside the package.

`default_model_path()` is the embedded default CLIP (clip/models/default): a small model trained
with `clip train` on the synthetic shapes set (see its MODEL_CARD.md), used by `clip zero-shot`
when no --model is given. It loads like any checkpoint directory:

    from clip.models import default_model_path
    from clip.pt import CLIPModel
    model = CLIPModel.from_pretrained(default_model_path())
"""

from __future__ import annotations

import os


def default_model_path() -> str:
    """The directory of the embedded default model (config, float16 weights, processor files)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "default")
