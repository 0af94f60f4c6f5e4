"""Which image patches and which text tokens make an image match a text: Chefer et al. 2021,
"Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
Transformers" (their rule 6, as in their CLIP notebook), in every backend.

    from clip.tasks import explain, load_encoder
    maps = explain(load_encoder(), "shapes.png", ["a red circle", "a blue square"])
    maps[0].patch_relevance     # (h, w): relevance of each image patch (the vision tower's grid)
    maps[0].heatmap             # (H, W): the same, upsampled to the model's input and scaled to [0, 1]
    maps[0].tokens, maps[0].token_relevance   # the text's tokens and the relevance of each

The rule: S is the scaled image-text similarity (exp(logit_scale) * cosine, the model's logit).
Per tower, starting from the identity R = I (L x L), each layer l in turn adds

    R <- R + mean over heads of max(dS/dA_l * A_l, 0) @ R

where A_l (heads, L, L) are its attention weights (the softmax that weights the values). The
image relevance is the class token's row of the vision tower's R without the class token itself;
the text relevance is the pooled (end) token's row of the text tower's R. The rule is numpy
(`relevance`); only the gradients come from the framework (clip.tasks.explain_backends).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from clip.common import checks
from clip.tasks.backends import TaskError

if TYPE_CHECKING:
    from clip.tasks.backends import Encoder, ImageSource


@dataclasses.dataclass
class Explanation:
    """The relevance maps of one (image, text) pair.

    text: the text; similarity: exp(logit_scale) * cosine, the value explained;
    patch_relevance (h, w): the class token's row of R over the patch grid (raw values);
    heatmap (H, W): patch_relevance upsampled bilinearly to the model's input, scaled to [0, 1];
    tokens: the text's tokens, start and end tokens included (padding and tokens after the end left out);
    token_relevance: the end token's row of R over `tokens` (raw values);
    image: the model's view of the image (resized and cropped), H x W x 3 uint8, for overlays.
    """

    text: str
    similarity: float
    patch_relevance: np.ndarray
    heatmap: np.ndarray
    tokens: list
    token_relevance: np.ndarray
    image: np.ndarray = dataclasses.field(repr=False)

    def word_scores(self) -> list[tuple[str, float]]:
        """(token, share) for the tokens between the start and end tokens, shares summing to 1 (as
        Chefer et al.'s notebook shows them); all zero when no token has relevance."""
        inner = np.clip(self.token_relevance[1:-1], 0, None)
        total = float(inner.sum())
        return [(token, float(value) / total if total > 0 else 0.0) for token, value in zip(self.tokens[1:-1], inner)]

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "similarity": self.similarity,
            "patch_relevance": np.round(self.patch_relevance, 6).tolist(),
            "tokens": [
                {"token": t, "relevance": round(float(r), 6)} for t, r in zip(self.tokens, self.token_relevance)
            ],
            "word_scores": [{"token": t, "share": round(s, 6)} for t, s in self.word_scores()],
        }


def relevance(attentions: Sequence, gradients: Sequence, start_layer: int = 0) -> np.ndarray:
    """Chefer et al.'s relevance R (B, L, L) from per-layer attention weights and their
    gradients, each (B, heads, L, L); layers before `start_layer` are left out."""
    first = np.asarray(attentions[0])
    batch, length = first.shape[0], first.shape[-1]
    rel = np.broadcast_to(np.eye(length, dtype=np.float64), (batch, length, length)).copy()
    for weights, grads in list(zip(attentions, gradients))[start_layer:]:
        cam = np.clip(np.asarray(grads, np.float64) * np.asarray(weights, np.float64), 0, None).mean(axis=1)  # B,L,L
        rel = rel + cam @ rel
    return rel


def upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D float map to height x width (pixel centres aligned, edges clamped)."""
    image = Image.fromarray(np.asarray(grid, np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float32)


def scale_unit(values: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min); all zeros when the map is flat."""
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def explain(
    encoder: Encoder, image: ImageSource, texts: str | Sequence[str], start_layer: int = 0
) -> list[Explanation]:
    """The relevance maps of `image` (a path, a PIL image or an HxWxC array) for each of `texts`.

    start_layer: the first layer whose attention counts (Chefer et al.'s notebook uses only the
    last layer of ViT-B/32 for images; 0, the default, is their paper's rule over all layers).
    """
    from clip.tasks.embed import load_image
    from clip.tasks.explain_backends import attention_gradients

    texts = [str(t) for t in ([texts] if isinstance(texts, str) else texts)]
    if not texts or not all(t.strip() for t in texts):
        raise TaskError("explain needs at least one non-empty text")
    if encoder.network is None:
        raise TaskError("this encoder has no network to differentiate; load it with clip.tasks.load_encoder")
    pixels = encoder.preprocess([load_image(image)])  # 1,3,H,W
    tokens = encoder.tokenize(texts)
    ids, mask = np.asarray(tokens["input_ids"], np.int64), np.asarray(tokens["attention_mask"], np.int64)
    config = encoder.network.config
    layers = (config.vision_config.num_hidden_layers, config.text_config.num_hidden_layers)
    if not -min(layers) <= start_layer < min(layers):
        raise TaskError(f"start_layer {start_layer} is out of range for towers of {layers[0]} and {layers[1]} layers")
    similarities, vision, text = attention_gradients(encoder, np.repeat(pixels, len(texts), axis=0), ids, mask)
    (vision_attentions, vision_gradients), (text_attentions, text_gradients) = zip(*vision), zip(*text)
    # T, N (class row, patches)
    image_rel = relevance(vision_attentions, vision_gradients, start_layer=start_layer % layers[0])[:, 0, 1:]
    text_rel = relevance(text_attentions, text_gradients, start_layer=start_layer % layers[1])  # T, L, L
    patch = config.vision_config.patch_size
    height, width = pixels.shape[2:]
    grid_shape = (height // patch, width // patch)
    ends = checks.pooled_token_positions(ids, config.text_config)
    view = model_view(encoder, pixels[0])
    out = []
    for t, text_value in enumerate(texts):
        grid = image_rel[t].reshape(grid_shape).astype(np.float32)
        end = int(ends[t])
        names = [encoder.processor.tokenizer.decode([int(i)]).strip() for i in ids[t, : end + 1]]
        out.append(
            Explanation(
                text_value,
                float(similarities[t]),
                grid,
                scale_unit(upsample(grid, height, width)),
                names,
                text_rel[t, end, : end + 1].astype(np.float32),
                view,
            )
        )
    return out


def model_view(encoder: Encoder, pixels: np.ndarray) -> np.ndarray:
    """The normalized (3, H, W) pixels the model saw, back as an H x W x 3 uint8 image."""
    processor = encoder.processor.image_processor
    mean = np.asarray(processor.image_mean, np.float32)[:, None, None] if processor.do_normalize else 0.0
    std = np.asarray(processor.image_std, np.float32)[:, None, None] if processor.do_normalize else 1.0
    scale = processor.rescale_factor if processor.do_rescale else 1.0
    values = (np.asarray(pixels, np.float32) * std + mean) / scale
    return np.clip(np.round(values), 0, 255).astype(np.uint8).transpose(1, 2, 0)
