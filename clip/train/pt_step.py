"""The PyTorch training step: the contrastive objective over processes, and gradient accumulation
that grows the contrastive batch.

Distributed (torchrun, DDP): each rank encodes its slice of the global batch, gathers every rank's
features with `gather_with_grad` and takes the loss of its rows (`local_clip_loss`): with
local=True its own rows against the global columns (the mean over ranks is the global loss, DDP's
gradient average its gradient); with local=False the whole global matrix on every rank (open_clip's
default; more work, the same gradients).

Accumulation (`accumulate_whole_batch`, GradCache: Gao et al. 2021): k micro-batches are embedded
without gradients, the loss over all k x m pairs and its gradient with respect to the embeddings are
taken once, then each micro-batch is embedded again with gradients and back-propagates its slice of
that gradient. The parameters' gradients are those of one batch of k x m pairs, while activations
are kept for m pairs at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from clip.train.common import DynamicLossScale

# torch.autocast's context (or nullcontext: full precision), entered around each forward
Autocast = Callable[[], AbstractContextManager]
# one micro-batch: input_ids, attention_mask, pixel_values
MicroBatch = Mapping[str, torch.Tensor]


class _AllGather(torch.autograd.Function):
    """all_gather whose backward hands each rank the summed gradient of its own slice.

    Every rank's loss reads every rank's features; the gradient of rank r's features is the sum,
    over all ranks, of the gradient flowing into the r-th slice of their gathered copy.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world, ctx.rows = dist.get_rank(), dist.get_world_size(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)  # (world * rows, ...)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # gloo has no reduce_scatter; all_reduce + slice
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0 (rank order), keeping the autograd graph."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _AllGather.apply(x)


def local_clip_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    rank: int = 0,
    world: int = 1,
    local: bool = True,
) -> torch.Tensor:
    """This rank's contrastive loss from its (b, E) unit-norm features, in float32 whatever the autocast dtype.

    local=True: rows are the local pairs, columns the global batch (b * world); local pair i is global
    pair rank * b + i, and the mean over ranks is CLIP's symmetric loss on the global batch.
    local=False: every rank takes the whole (B, B) matrix, i.e. the global loss itself. Both give
    DDP the same averaged gradient: the gather's backward sums over ranks, which for the global loss
    is `world` times each rank's share and is undone by DDP's average.
    """
    image_embeds, text_embeds = image_embeds.float(), text_embeds.float()
    all_images, all_texts = gather_with_grad(image_embeds), gather_with_grad(text_embeds)
    scale = logit_scale.float().exp()
    if local:
        rows_images, rows_texts = image_embeds, text_embeds
        targets = torch.arange(image_embeds.shape[0], device=image_embeds.device) + rank * image_embeds.shape[0]
    else:
        rows_images, rows_texts = all_images, all_texts
        targets = torch.arange(all_images.shape[0], device=image_embeds.device)
    per_image = scale * rows_images @ all_texts.t()  # rows, B
    per_text = scale * rows_texts @ all_images.t()  # rows, B
    return (F.cross_entropy(per_image, targets) + F.cross_entropy(per_text, targets)) / 2.0


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


class ContrastiveObjective(nn.Module):
    """CLIPModel -> this rank's loss (or, with embed_only, its unit-norm features and logit_scale);
    the module DDP wraps, so that its hooks see every forward."""

    def __init__(self, model: nn.Module, rank: int = 0, world: int = 1, local: bool = True) -> None:
        super().__init__()
        self.model, self.rank, self.world, self.local = model, rank, world, local

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        embed_only: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = _normalize(self.model.get_image_features(pixel_values))
        text = _normalize(self.model.get_text_features(input_ids, attention_mask))
        if embed_only:
            # logit_scale goes through the forward too, so DDP sees every parameter used and averages its gradient
            return image, text, self.model.logit_scale
        return local_clip_loss(image, text, self.model.logit_scale, self.rank, self.world, self.local)


def _rng_states() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _set_rng_states(states: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state_all(states[1])


def _inputs(batch: MicroBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch["input_ids"], batch["attention_mask"], batch["pixel_values"]


def accumulate_whole_batch(
    objective: nn.Module, micro_batches: Sequence[MicroBatch], autocast: Autocast = nullcontext, loss_scale: float = 1.0
) -> torch.Tensor:
    """Backward of the contrastive loss over all the micro-batches' pairs together, one micro-batch
    of activations at a time; returns the loss (this rank's, as ContrastiveObjective's).

    `objective`: a ContrastiveObjective, or DDP around one (it synchronizes on the last micro-batch
    only). Gradients are added to the parameters' .grad like loss.backward(). Dropout draws the
    same masks in both passes: each micro-batch's re-run starts from the RNG state its first pass
    saw. `loss_scale` multiplies the loss before differentiation (float16 loss scaling).
    """
    inner = objective.module if isinstance(objective, nn.parallel.DistributedDataParallel) else objective
    states, images, texts = [], [], []
    with torch.no_grad():
        for batch in micro_batches:
            states.append(_rng_states())
            with autocast():
                image, text, _ = inner(*_inputs(batch), embed_only=True)
            images.append(image.float())
            texts.append(text.float())
    after = _rng_states()
    image_all = torch.cat(images).requires_grad_()
    text_all = torch.cat(texts).requires_grad_()
    scale = inner.model.logit_scale.detach().clone().requires_grad_()
    loss = local_clip_loss(image_all, text_all, scale, inner.rank, inner.world, inner.local)
    grad_images, grad_texts, grad_scale = torch.autograd.grad(loss * loss_scale, (image_all, text_all, scale))
    rows = [len(x) for x in images]
    last = len(micro_batches) - 1
    for i, (batch, g_image, g_text) in enumerate(zip(micro_batches, grad_images.split(rows), grad_texts.split(rows))):
        _set_rng_states(states[i])
        sync = i == last or not isinstance(objective, nn.parallel.DistributedDataParallel)
        with nullcontext() if sync else objective.no_sync(), autocast():
            image, text, logit_scale = objective(*_inputs(batch), embed_only=True)
            # d(surrogate)/d(theta) = sum over this slice of dL/d(embedding) * d(embedding)/d(theta)
            surrogate = (image.float() * g_image).sum() + (text.float() * g_text).sum()
            surrogate = surrogate + logit_scale.float() * (grad_scale / len(micro_batches))
        surrogate.backward()
    _set_rng_states(after)
    return loss.detach()


def backward_step(
    objective: nn.Module, micro_batches: Sequence[MicroBatch], autocast: Autocast = nullcontext, loss_scale: float = 1.0
) -> torch.Tensor:
    """The gradient of one optimizer step: one micro-batch directly, several through
    accumulate_whole_batch; returns the loss over all of them."""
    if len(micro_batches) > 1:
        return accumulate_whole_batch(objective, micro_batches, autocast, loss_scale)
    with autocast():
        loss = objective(*_inputs(micro_batches[0]))
    (loss * loss_scale).backward()
    return loss.detach()


def optimizer_step(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    parameters: Sequence[torch.Tensor],
    micro_batches: Sequence[MicroBatch],
    autocast: Autocast = nullcontext,
    grad_clip: float = 0.0,
    loss_scale: DynamicLossScale | None = None,
) -> float:
    """One optimizer step over the micro-batches: gradients, global-norm clipping, the update; returns the loss.

    loss_scale (float16): a common.DynamicLossScale; the gradients are unscaled before clipping, and a
    step whose gradients are not finite is skipped (parameters and optimizer state untouched) while
    the scale is halved.
    """
    scale = loss_scale.scale if loss_scale is not None else 1.0
    loss = float(backward_step(objective, micro_batches, autocast, scale))
    if scale != 1.0:
        for p in parameters:
            if p.grad is not None:
                p.grad.div_(scale)
    norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip if grad_clip and grad_clip > 0 else float("inf"))
    if loss_scale is None or loss_scale.update(bool(torch.isfinite(norm))):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss
