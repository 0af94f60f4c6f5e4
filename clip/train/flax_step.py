"""The JAX training step: the contrastive objective, gradient accumulation that grows the contrastive
batch, float16 loss scaling, and the jitted step itself (as clip.train.pt_step and clip.train.tf_step).

Data parallelism is XLA's: the batch is sharded over the mesh and the loss is the global batch's, so
there is no per-replica loss to choose (pt's and tf's --local-loss has nothing to change here).

Accumulation (GradCache): the step's A micro-batches are embedded without gradients (a lax.scan),
the loss over all A x B pairs and its gradient with respect to the embeddings are taken once, then
a second scan re-embeds each micro-batch and pulls its slice of that gradient back to the
parameters (jax.vjp): the gradient of one batch of A x B pairs with the activations of B. Dropout
keys are `fold_in(seed, micro_step)`, so both passes draw the same masks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from clip.flax.loss import clip_loss
from clip.train import common


def _normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def embed(
    model: Any, params: Any, batch: Mapping[str, jax.Array], dropout_rng: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Unit-norm (image, text) features of one micro-batch, float32."""
    image_rng, text_rng = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
    image = _normalize(
        model.get_image_features(batch["pixel_values"], params=params, dropout_rng=image_rng, train=True)
    )
    text = _normalize(
        model.get_text_features(
            batch["input_ids"], batch["attention_mask"], params=params, dropout_rng=text_rng, train=True
        )
    )
    return image, text


def pair_loss(image: jax.Array, text: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """CLIP's symmetric loss of unit-norm (N, E) features, in float32."""
    logits_per_text = jnp.exp(logit_scale.astype(jnp.float32)) * text @ image.T  # T,I
    return clip_loss(logits_per_text)


def contrastive_loss(
    model: Any, params: Any, batch: Mapping[str, jax.Array], dropout_rng: jax.Array | None = None
) -> jax.Array:
    """CLIP's symmetric loss over the (global) batch from unit-norm projected features, in float32."""
    image, text = embed(model, params, batch, dropout_rng)
    return pair_loss(image, text, params["logit_scale"])


def step_gradients(
    model: Any,
    params: Any,
    batches: Mapping[str, jax.Array],
    micro_start: int | jax.Array,
    base_key: jax.Array,
    dropout: bool,
    loss_scale: float | jax.Array = 1.0,
) -> tuple[jax.Array, Any]:
    """(loss, gradient of loss_scale * loss) over the step's micro-batches (A, B, ...) taken together."""
    accum = batches["input_ids"].shape[0]
    steps = micro_start + jnp.arange(accum)
    key = (lambda m: jax.random.fold_in(base_key, m)) if dropout else (lambda m: None)
    if accum == 1:
        batch = jax.tree.map(lambda x: x[0], batches)

        def scaled_loss(p):
            loss = contrastive_loss(model, p, batch, key(steps[0]))
            return loss * loss_scale, loss  # the loss itself as well: loss * scale may overflow

        (_, loss), grads = jax.value_and_grad(scaled_loss, has_aux=True)(params)
        return loss, grads

    def first(_, inputs):
        batch, m = inputs
        return None, embed(model, jax.lax.stop_gradient(params), batch, key(m))

    _, (images, texts) = jax.lax.scan(first, None, (batches, steps))  # (A, B, E) each

    def scaled(i, t, s):
        loss = pair_loss(i.reshape(-1, i.shape[-1]), t.reshape(-1, t.shape[-1]), s)
        return loss * loss_scale, loss

    (_, loss), (grad_images, grad_texts, grad_scale) = jax.value_and_grad(scaled, argnums=(0, 1, 2), has_aux=True)(
        images, texts, params["logit_scale"]
    )

    def second(grads, inputs):
        batch, m, g_image, g_text = inputs
        _, pull_back = jax.vjp(lambda p: embed(model, p, batch, key(m)), params)
        (g,) = pull_back((g_image, g_text))
        return jax.tree.map(jnp.add, grads, g), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, _ = jax.lax.scan(second, zeros, (batches, steps, grad_images, grad_texts))
    grads = {**grads, "logit_scale": grads["logit_scale"] + grad_scale}
    return loss, grads


def clamp_logit_scale(params: dict) -> dict:
    return {**params, "logit_scale": jnp.clip(params["logit_scale"], 0.0, common.LOGIT_SCALE_MAX)}


def make_train_step(
    model: Any, tx: optax.GradientTransformation, seed: int, dropout: bool, loss_scaling: bool = False
) -> Callable[..., tuple]:
    """step(params, opt_state, batches (A, b, ...), first micro-step) -> (params, opt_state, loss), jitted.

    loss_scaling (float16): step(params, opt_state, batches, micro_start, (scale, good_steps)) ->
    (params, opt_state, loss, (scale, good_steps)), common.DynamicLossScale's rule in jnp: a step
    whose gradients are not finite leaves params and optimizer state as they were.
    """
    base = jax.random.PRNGKey(seed)

    def step(params, opt_state, batches, micro_start):
        loss, grads = step_gradients(model, params, batches, micro_start, base, dropout)
        updates, opt_state = tx.update(grads, opt_state, params)
        return clamp_logit_scale(optax.apply_updates(params, updates)), opt_state, loss

    def scaled_step(params, opt_state, batches, micro_start, scale_state):
        scale, good = scale_state
        loss, grads = step_gradients(model, params, batches, micro_start, base, dropout, scale)
        grads = jax.tree.map(lambda g: g / scale, grads)
        finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        safe = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
        updates, new_state = tx.update(safe, opt_state, params)
        new_params = clamp_logit_scale(optax.apply_updates(params, updates))
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        good = jnp.where(finite, good + 1, 0)
        grow = good >= common.DynamicLossScale.GROWTH_INTERVAL
        scale = jnp.where(
            finite,
            jnp.where(grow, scale * common.DynamicLossScale.FACTOR, scale),
            jnp.maximum(scale / common.DynamicLossScale.FACTOR, 1.0),
        )
        return keep(new_params, params), keep(new_state, opt_state), loss, (scale, jnp.where(grow, 0, good))

    return jax.jit(scaled_step if loss_scaling else step, donate_argnums=(0, 1))
