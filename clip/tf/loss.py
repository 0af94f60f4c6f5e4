"""CLIP's symmetric contrastive loss in TensorFlow."""

from __future__ import annotations

import tensorflow as tf


def contrastive_loss(logits):
    """Cross entropy where row i's target is column i: (N, N) -> scalar."""
    labels = tf.range(tf.shape(logits)[0])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def clip_loss(logits_per_text):
    """Mean of the text->image and image->text losses over a (T, I) similarity matrix, T == I.

    Taken in float32 whatever the dtype policy: log-softmax over scaled logits loses most of its
    precision in half precision.
    """
    logits = tf.cast(logits_per_text, tf.float32)
    return (contrastive_loss(logits) + contrastive_loss(tf.transpose(logits))) / 2.0
