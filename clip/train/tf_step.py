"""The TensorFlow training step: the contrastive objective over replicas, gradient accumulation that
grows the contrastive batch, and the step itself (as clip.train.pt_step and clip.train.flax_step).

Replicas: each encodes its slice of the global batch, gathers every replica's features with
`ReplicaContext.all_gather` (whose gradient hands each replica the summed gradient of its own slice)
and takes its rows' loss (`local_clip_loss`): its own rows against the global columns (local=True)
or the whole global matrix (local=False; the same gradients). The replicas' gradients are summed
in cross-replica context, where keras' AdamW clips them by global norm and applies them once.

Accumulation (GradCache): the step's A micro-batches are embedded without gradients, the loss over
all A x b pairs and its gradient with respect to the embeddings are taken once, then each
micro-batch is embedded again under a tape and back-propagates its slice of that gradient: the
gradient of one batch of A x b pairs with the activations of b.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from clip.train import common

if TYPE_CHECKING:  # annotations only: the step needs nothing of keras itself
    import keras


def _normalize(x: tf.Tensor) -> tf.Tensor:
    x = tf.cast(x, tf.float32)
    return x / tf.norm(x, axis=-1, keepdims=True)


def _replicas() -> tuple[Any, int]:
    ctx = tf.distribute.get_replica_context()
    return ctx, (ctx.num_replicas_in_sync if ctx is not None else 1)


def local_clip_loss(
    image_embeds: tf.Tensor, text_embeds: tf.Tensor, logit_scale: tf.Variable, local: bool = True
) -> tf.Tensor:
    """This replica's contrastive loss from its (b, E) unit-norm features, in float32.

    local=True: rows are the local pairs, columns the global batch gathered over replicas (replica
    order); the mean over replicas is CLIP's loss on the global batch. local=False: the global loss itself.
    """
    ctx, replicas = _replicas()
    all_images, all_texts = image_embeds, text_embeds
    rank = 0
    if replicas > 1:
        all_images, all_texts = ctx.all_gather(image_embeds, axis=0), ctx.all_gather(text_embeds, axis=0)
        rank = ctx.replica_id_in_sync_group
    if local:
        rows_images, rows_texts = image_embeds, text_embeds
        targets = tf.range(tf.shape(image_embeds)[0]) + rank * tf.shape(image_embeds)[0]
    else:
        rows_images, rows_texts = all_images, all_texts
        targets = tf.range(tf.shape(all_images)[0])
    scale = tf.exp(tf.cast(logit_scale, tf.float32))
    per_image = scale * tf.matmul(rows_images, all_texts, transpose_b=True)  # rows, B
    per_text = scale * tf.matmul(rows_texts, all_images, transpose_b=True)  # rows, B
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits
    return (
        tf.reduce_mean(ce(labels=targets, logits=per_image)) + tf.reduce_mean(ce(labels=targets, logits=per_text))
    ) / 2.0


def embed(model: keras.Model, batch: Mapping[str, tf.Tensor], training: bool = True) -> tuple[tf.Tensor, tf.Tensor]:
    """Unit-norm (image, text) features of one micro-batch, float32."""
    image = _normalize(model.get_image_features(batch["pixel_values"], training=training))
    text = _normalize(model.get_text_features(batch["input_ids"], batch["attention_mask"], training=training))
    return image, text


def objective(
    model: keras.Model, batch: Mapping[str, tf.Tensor], training: bool = True, local: bool = True
) -> tf.Tensor:
    image, text = embed(model, batch, training)
    return local_clip_loss(image, text, model.logit_scale, local)


def _dense(gradients: Sequence[Any], variables: Sequence[tf.Variable]) -> list[tf.Tensor]:
    # embeddings' IndexedSlices -> dense; None (a variable the pass does not read, e.g. logit_scale) -> zeros
    return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(gradients, variables)]


def _seed_states(model: keras.Model) -> list[tf.Tensor]:
    # dropout's seed generators advance on every call: the re-run must start where the first pass did
    return [tf.identity(v.value) for v in model.non_trainable_variables]


def _restore_seed_states(model: keras.Model, states: Sequence[tf.Tensor]) -> None:
    for variable, value in zip(model.non_trainable_variables, states):
        variable.assign(value)


def _after(batch: dict[str, tf.Tensor], previous: list[tf.Tensor]) -> dict[str, tf.Tensor]:
    """`batch`, readable only once `previous` are computed. A graph runs every op whose inputs are
    ready, so without this edge the micro-batches' forward passes would all run at once and hold
    k x m activations: the memory accumulation exists to avoid. Eagerly it changes nothing."""
    if not previous or tf.executing_eagerly():
        return batch
    with tf.control_dependencies(previous):
        return {key: tf.identity(value) for key, value in batch.items()}


def replica_gradients(
    model: keras.Model,
    batches: Mapping[str, tf.Tensor],
    variables: Sequence[tf.Variable],
    local: bool = True,
    loss_scale: float | tf.Tensor = 1.0,
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """(loss / replicas, gradients of loss_scale * loss / replicas) of one replica over the step's
    micro-batches (A, b, ...). The loss is over all A x b pairs of every replica together; summed
    over replicas, the gradients are the global batch's gradient (scaled by loss_scale)."""
    _, replicas = _replicas()
    accum = batches["input_ids"].shape[0]
    micro = [{k: v[a] for k, v in batches.items()} for a in range(accum)]
    if accum == 1:
        with tf.GradientTape() as tape:
            loss = objective(model, micro[0], local=local)
            scaled = loss * loss_scale / replicas
        return loss / replicas, _dense(tape.gradient(scaled, variables), variables)
    states: list[list[tf.Tensor]] = []
    images: list[tf.Tensor] = []
    texts: list[tf.Tensor] = []
    for batch in micro:  # pass 1: the embeddings alone, no tape
        states.append(_seed_states(model))
        image, text = embed(model, _after(batch, images + texts))
        images.append(tf.stop_gradient(image))
        texts.append(tf.stop_gradient(text))
    after = _seed_states(model)
    image_all, text_all = tf.concat(images, 0), tf.concat(texts, 0)
    with tf.GradientTape() as tape:
        tape.watch([image_all, text_all])
        loss = local_clip_loss(image_all, text_all, model.logit_scale, local)
        scaled = loss * loss_scale / replicas
    grad_images, grad_texts, grad_scale = tape.gradient(scaled, [image_all, text_all, model.logit_scale])
    rows = images[0].shape[0]
    grads = [tf.zeros_like(v) for v in variables]
    for a, batch in enumerate(micro):  # pass 2: each micro-batch back-propagates its slice
        _restore_seed_states(model, states[a])
        with tf.GradientTape() as tape:
            image, text = embed(model, _after(batch, grads))
            surrogate = tf.reduce_sum(image * grad_images[a * rows : (a + 1) * rows]) + tf.reduce_sum(
                text * grad_texts[a * rows : (a + 1) * rows]
            )
        grads = [g + s for g, s in zip(grads, _dense(tape.gradient(surrogate, variables), variables))]
    _restore_seed_states(model, after)
    grads = [g + tf.convert_to_tensor(grad_scale) if v is model.logit_scale else g for g, v in zip(grads, variables)]
    return loss / replicas, grads


def make_train_step(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    variables: Sequence[tf.Variable],
    local: bool = True,
    jit_compile: bool = False,
    loss_scale: LossScaleState | None = None,
) -> Callable[[Any], tf.Tensor]:
    """tf.function: gradients over replicas and micro-steps, AdamW (clipped), logit_scale clamp
    (XLA-compiled with jit_compile, `clip train --compile`).

    loss_scale (float16): a LossScaleState; the gradients are unscaled, and a step whose gradients are
    not finite is skipped (variables and optimizer untouched) while the scale follows
    common.DynamicLossScale's rule.
    """

    @tf.function(jit_compile=jit_compile or None)
    def step(dist_batches):
        scale = loss_scale.scale.read_value() if loss_scale is not None else tf.constant(1.0)
        per_loss, per_grads = strategy.run(replica_gradients, args=(model, dist_batches, variables, local, scale))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_loss, axis=None)
        grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) / scale for g in per_grads]
        if loss_scale is None:
            optimizer.apply(
                grads, variables
            )  # cross-replica context: no second all-reduce, clipping sees the global norm
        else:
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

            def apply():
                optimizer.apply(grads, variables)
                return tf.constant(True)

            tf.cond(finite, apply, lambda: tf.constant(False))
            loss_scale.update(finite)
        clamp_logit_scale(model)
        return loss

    return step


class LossScaleState:
    """common.DynamicLossScale's rule on TensorFlow variables, so that the jitted step updates it."""

    def __init__(self, scale: float, good_steps: int) -> None:
        self.scale = tf.Variable(float(scale), dtype=tf.float32, trainable=False, name="loss_scale")
        self.good_steps = tf.Variable(int(good_steps), dtype=tf.int64, trainable=False, name="loss_scale_good_steps")

    def update(self, finite: tf.Tensor) -> None:
        good = tf.where(finite, self.good_steps + 1, tf.zeros_like(self.good_steps))
        grow = good >= common.DynamicLossScale.GROWTH_INTERVAL
        factor = common.DynamicLossScale.FACTOR
        self.scale.assign(
            tf.where(finite, tf.where(grow, self.scale * factor, self.scale), tf.maximum(self.scale / factor, 1.0))
        )
        self.good_steps.assign(tf.where(grow, tf.zeros_like(good), good))

    def state(self) -> dict[str, float]:
        return {"scale": float(self.scale.numpy()), "good_steps": int(self.good_steps.numpy())}


def make_gradient_fn(
    strategy: tf.distribute.Strategy, model: keras.Model, variables: Sequence[tf.Variable], local: bool = True
) -> Callable[[Any], tuple[tf.Tensor, list[tf.Tensor]]]:
    """tf.function(distributed batches) -> (global loss, summed gradients): the step without the update."""

    @tf.function
    def gradients(dist_batches):
        per_loss, per_grads = strategy.run(replica_gradients, args=(model, dist_batches, variables, local))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_loss, axis=None)
        return loss, [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in per_grads]

    return gradients


def clamp_logit_scale(model: keras.Model) -> None:
    model.logit_scale.assign(tf.clip_by_value(model.logit_scale, 0.0, common.LOGIT_SCALE_MAX))
