"""Losses: CLIP's symmetric contrastive loss and the image-classification head's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clip.common import checks


def contrastive_loss(logits):
    """Cross entropy where row i's target is column i: (N, N) -> scalar."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def clip_loss(logits_per_text):
    """Mean of the text->image and image->text losses over a (T, I) similarity matrix, T == I.

    Taken in float32 whatever the model's dtype: log-softmax over scaled logits loses most of
    its precision in half precision.
    """
    logits = logits_per_text.float()
    return (contrastive_loss(logits) + contrastive_loss(logits.t())) / 2.0


def classification_loss(logits, labels, config, num_labels):
    """transformers' sequence-classification loss, problem type picked as it does."""
    labels = labels.to(logits.device)
    problem = checks.classification_problem_type(config, num_labels, labels.dtype in (torch.long, torch.int))
    if problem == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze())
        return F.mse_loss(logits, labels)
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1), ignore_index=-100)
    return F.binary_cross_entropy_with_logits(logits, labels)
