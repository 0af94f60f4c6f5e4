"""Losses: CLIP's symmetric contrastive loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def contrastive_loss(logits):
    """Cross entropy where row i's target is column i: (N, N) -> scalar."""
    return -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)))


def clip_loss(logits_per_text):
    """Mean of the text->image and image->text losses over a (T, I) similarity matrix, T == I.

    Taken in float32 whatever the model's dtype: log-softmax over scaled logits loses most of
    its precision in half precision.
    """
    logits = logits_per_text.astype(jnp.float32)
    return (contrastive_loss(logits) + contrastive_loss(logits.T)) / 2.0
