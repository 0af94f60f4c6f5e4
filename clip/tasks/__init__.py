"""What people do with CLIP, over any backend: zero-shot classification and its evaluation on
labelled images, batch embedding, search, retrieval evaluation, similarity maps and relevance maps
(explain) (the `clip` command runs each of them).

    from clip.tasks import load_encoder, ZeroShotClassifier, EmbeddingIndex, embed_images
    encoder = load_encoder()                      # the embedded default model, PyTorch backend
    encoder = load_encoder("openai/clip-vit-base-patch32", backend="flax")

Nothing here imports a deep-learning framework until an encoder is loaded.
"""

import importlib
from typing import Any

_LAZY = {
    "BACKENDS": "clip.tasks.backends",
    "Encoder": "clip.tasks.backends",
    "TaskError": "clip.tasks.backends",
    "load_encoder": "clip.tasks.backends",
    "ZeroShotClassifier": "clip.tasks.zero_shot",
    "ZeroShotResult": "clip.tasks.zero_shot",
    "ensemble_embeddings": "clip.tasks.zero_shot",
    "Embeddings": "clip.tasks.embed",
    "embed_images": "clip.tasks.embed",
    "embed_texts": "clip.tasks.embed",
    "embed_to_dir": "clip.tasks.embed",
    "load_embeddings": "clip.tasks.embed",
    "EmbeddingIndex": "clip.tasks.search",
    "Hit": "clip.tasks.search",
    "near_duplicates": "clip.tasks.search",
    "topk_cosine": "clip.tasks.search",
    "evaluate_captions": "clip.tasks.retrieval",
    "retrieval_metrics": "clip.tasks.retrieval",
    "plot_similarity": "clip.tasks.similarity",
    "similarity_matrix": "clip.tasks.similarity",
    "Explanation": "clip.tasks.explain",
    "explain": "clip.tasks.explain",
    "ZeroShotEvaluation": "clip.tasks.eval_zero_shot",
    "evaluate_zero_shot": "clip.tasks.eval_zero_shot",
    "DEFAULT_TEMPLATES": "clip.tasks.templates",
    "IMAGENET_TEMPLATES": "clip.tasks.templates",
    "SIMPLE_TEMPLATES": "clip.tasks.templates",
    "get_templates": "clip.tasks.templates",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clip.tasks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
