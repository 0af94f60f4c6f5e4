"""The PyTorch backend of the training loop (clip.train.loop), `clip train --backend pt`.

One process, or several launched by torchrun (DDP; gloo on CPU, nccl on GPU). The objective over
ranks, gradient accumulation over the whole contrastive batch and the update step are in
clip.train.pt_step; the loop, the data and everything framework-neutral in clip.train.loop and
clip.train.common. This file holds the model, the optimizer, the data loader over the loop's
reader and the checkpoint files.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from clip.common import params, weight_files
from clip.common.io import atomic_path, read_safetensors, write_safetensors
from clip.train import common
from clip.train.inputs import BatchReader, EncodeFn
from clip.train.options import LockSettings, TrainOptions
from clip.train.pt_step import ContrastiveObjective, backward_step, gather_with_grad, local_clip_loss, optimizer_step  # noqa: F401 - public here

# -- distributed -----------------------------------------------------------------------------------


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


# -- model -----------------------------------------------------------------------------------------
def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW with decay on matrix weights only (common.applies_weight_decay); CLIP's betas and eps.

    fused: torch's fused AdamW kernel (the same update, several times faster on CPU for the large
    token embedding of small models): `clip train --fused-adamw`, TrainOptions.fused_adamw.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    table = params.parameter_table(model.config, "CLIPModel")
    decay = [p for n, p in named if common.applies_weight_decay(n, table)]
    no_decay = [p for n, p in named if not common.applies_weight_decay(n, table)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **({"fused": True} if fused else {}))


def clamp_logit_scale(model: nn.Module) -> None:
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, common.LOGIT_SCALE_MAX)


class _Steps(torch.utils.data.Dataset):
    """Optimizer step s -> its stacked micro-batches from common.BatchReader (which replaces an unreadable
    item by the next readable one, as in every backend); indexed by step, so DataLoader workers may read
    ahead in any number without changing what a step reads."""

    def __init__(self, reader: BatchReader, order: common.DataOrder, accum: int) -> None:
        self.reader, self.order, self.accum = reader, order, accum

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        return self.reader.step(self.order, step, self.accum)


def make_loader(
    reader: BatchReader, order: common.DataOrder, start: int, stop: int, accum: int, workers: int
) -> torch.utils.data.DataLoader:
    """A DataLoader over optimizer steps start..stop-1, each {key: (accum, b, ...) tensor}, in the order of
    common.DataOrder."""
    return torch.utils.data.DataLoader(
        _Steps(reader, order, accum),
        sampler=range(start, stop),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )


# -- checkpoints -----------------------------------------------------------------------------------
RNG_FILE = "rng.safetensors"


def write_checkpoint(directory: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The model (canonical float32), optimizer.pt and the RNG states into a staged checkpoint directory."""
    state = {n: t.detach().cpu().contiguous().numpy() for n, t in model.state_dict().items()}
    write_safetensors(state, os.path.join(directory, common.MODEL_FILE))
    with atomic_path(os.path.join(directory, "optimizer.pt")) as tmp:
        torch.save(optimizer.state_dict(), tmp)
    # RNG states are byte tensors: stored as safetensors, so resuming a run never unpickles anything
    rng = {"torch": torch.get_rng_state().numpy()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s.numpy() for i, s in enumerate(torch.cuda.get_rng_state_all())})
    write_safetensors(rng, os.path.join(directory, RNG_FILE))


def _read_rng_states(directory: str) -> dict[str, Any]:
    """{"torch": ByteTensor, "cuda": [ByteTensor, ...]} from rng.safetensors, or from an older run's rng.pt
    read with weights_only=True (a byte tensor needs no pickle; a payload in the file is refused)."""
    path = os.path.join(directory, RNG_FILE)
    if os.path.exists(path):
        arrays = read_safetensors(path, mmap=False)
        cuda = [
            torch.from_numpy(np.array(arrays[k]))
            for k in sorted((k for k in arrays if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
        ]
        return {"torch": torch.from_numpy(np.array(arrays["torch"])), "cuda": cuda}
    legacy = weight_files.torch_load(os.path.join(directory, "rng.pt"))
    return {"torch": legacy["torch"], "cuda": list(legacy.get("cuda", []))}


def load_checkpoint(directory: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and RNG states; returns the trainer state dict.

    Every file is read and checked before anything is assigned, so a damaged checkpoint raises
    (naming its file) without changing the model, and the caller can fall back to an older one.
    """
    state = common.read_trainer_state(directory)
    current = model.state_dict()
    tensors = common.read_model_state(directory, {n: tuple(t.shape) for n, t in current.items()})
    saved_optimizer = weight_files.torch_load(os.path.join(directory, "optimizer.pt"))
    if not (
        isinstance(saved_optimizer, dict)
        and isinstance(saved_optimizer.get("state"), dict)
        and isinstance(saved_optimizer.get("param_groups"), list)
    ):
        raise ValueError(
            f"{os.path.join(directory, 'optimizer.pt')}: not an optimizer state (no 'state' and 'param_groups')"
        )
    rng = _read_rng_states(directory)
    try:
        optimizer.load_state_dict(saved_optimizer)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{os.path.join(directory, 'optimizer.pt')}: does not fit this optimizer ({err})") from None
    with torch.no_grad():
        for name, tensor in current.items():
            tensor.copy_(torch.from_numpy(tensors[name]))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    common.set_python_numpy_rng_state(state["rng"])
    return state


def save_model(model: nn.Module, processor: Any, out: str, dtype: torch.dtype | None = None) -> None:
    """The loadable model: config.json + model.safetensors + processor files in `out`."""
    state = model.state_dict()
    if dtype is not None:
        state = {n: t.to(dtype) for n, t in state.items()}
    model.save_pretrained(out, state_dict=state)
    processor.save_pretrained(out)


def apply_lock(model: nn.Module, lock: LockSettings | None) -> list[str]:
    """--lock-image: parameters common.is_frozen names stop requiring gradients (before the optimizer is built,
    so AdamW neither updates nor decays them). Returns their names."""
    layers, table = model.config.vision_config.num_hidden_layers, params.parameter_table(model.config, "CLIPModel")
    frozen = [n for n, p in model.named_parameters() if common.is_frozen(n, lock, layers, table)]
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return frozen


# -- the backend of clip.train.loop ------------------------------------------------------------------
class Trainer:
    """PyTorch's model, optimizer, step and state I/O for clip.train.loop.run (see its docstring)."""

    def __init__(self, options: TrainOptions) -> None:
        from clip.pt import CLIPModel

        self.options = options
        self.rank, self.world, self.device = init_distributed()
        torch.manual_seed(options.seed)
        np.random.seed(options.seed % 2**32)
        random.seed(options.seed)
        if options.threads:
            torch.set_num_threads(options.threads)
        self.model, self.processor = common.build_model_and_processor(
            options, lambda path: CLIPModel.from_pretrained(path, dtype=torch.float32), CLIPModel
        )
        self.model.to(self.device).train()
        if options.grad_checkpointing:
            self.model.gradient_checkpointing_enable()
        apply_lock(self.model, common.lock_settings(options))
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.loss_scale: common.DynamicLossScale | None = None

    def build_optimizer(self, steps: int, warmup: int) -> None:
        self.optimizer = build_optimizer(
            self.model, self.options.lr, self.options.weight_decay, fused=self.options.fused_adamw
        )

    def load_checkpoint(self, directory: str) -> dict[str, Any]:
        return load_checkpoint(directory, self.model, self.optimizer)

    def start(self, loss_scale: common.DynamicLossScale | None) -> None:
        self.loss_scale = loss_scale
        objective = ContrastiveObjective(self.model, self.rank, self.world, local=self.options.local_loss)
        if self.options.compile:
            objective.compile()  # in place: the module keeps its type and parameters, and DDP wraps it as before
        if self.world > 1:
            objective = nn.parallel.DistributedDataParallel(
                objective, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.objective = objective
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.options.precision)
        self.autocast: Callable[[], AbstractContextManager] = (
            (lambda: torch.autocast(self.device.type, dtype=half)) if half is not None else nullcontext
        )

    def batches(self, reader: BatchReader, order: common.DataOrder, start: int, stop: int) -> Iterator[Any]:
        return iter(make_loader(reader, order, start, stop, self.options.accum_steps, self.options.workers))

    def step(self, inputs: dict[str, torch.Tensor], lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        micro = [
            {
                k: (v[a] if k == "pixel_values" else v[a].long()).to(self.device, non_blocking=True)
                for k, v in inputs.items()
            }
            for a in range(self.options.accum_steps)
        ]
        loss = optimizer_step(
            self.objective,
            self.optimizer,
            self.trainable,
            micro,
            self.autocast,
            self.options.grad_clip,
            self.loss_scale,
        )
        clamp_logit_scale(self.model)
        return loss

    def scalars(self) -> dict[str, float]:
        scale = {"loss_scale": self.loss_scale.scale} if self.loss_scale is not None else {}
        return {"temperature": float(self.model.logit_scale.detach().exp()), **scale}

    def loss_scale_state(self) -> dict[str, float] | None:
        return self.loss_scale.state() if self.loss_scale is not None else None

    @contextmanager
    def encoders(self) -> Iterator[tuple[EncodeFn, EncodeFn]]:
        model, device = self.model, self.device

        @torch.no_grad()
        def images(pixels: np.ndarray) -> np.ndarray:
            return model.get_image_features(torch.from_numpy(pixels).to(device)).float().cpu().numpy()

        @torch.no_grad()
        def texts(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            ids, mask = (torch.from_numpy(a).long().to(device) for a in (ids, mask))
            return model.get_text_features(ids, mask).float().cpu().numpy()

        was_training = model.training
        model.eval()
        try:
            yield common.chunked_encoders(
                self.processor, model.config.text_config.max_position_embeddings, images, texts
            )
        finally:
            model.train(was_training)

    def write_checkpoint(self, directory: str) -> None:
        write_checkpoint(directory, self.model, self.optimizer)

    def save_model(self, out: str, float16: bool = False) -> None:
        save_model(self.model, self.processor, out, dtype=torch.float16 if float16 else None)

    def describe(self) -> str:
        return f"{sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters"

    def placement(self) -> str:
        return f"on {self.world} process(es), {self.device.type}"

    def close(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
