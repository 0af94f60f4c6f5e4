"""The PyTorch trainer behind `clip train --backend pt`.

One process, or several launched by torchrun (DDP; gloo on CPU, nccl on GPU). The objective over
ranks, gradient accumulation over the whole contrastive batch and the update step are in
clip.train.pt_step; the framework-neutral parts (schedule, decay rule, data order, checkpoints,
metrics, logs, progress) in clip.train.common. This file holds the model, optimizer, data loader,
checkpoint files and the run.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from clip.common import params, weight_files
from clip.common.io import atomic_path, read_safetensors, write_safetensors
from clip.train import common
from clip.train.pt_step import ContrastiveObjective, backward_step, gather_with_grad, local_clip_loss, optimizer_step  # noqa: F401 - public here

# -- distributed -----------------------------------------------------------------------------------


def init_distributed():
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
def build_optimizer(model, lr: float, weight_decay: float, betas=(0.9, 0.98), eps=1e-6, fused: bool = False):
    """AdamW with decay on matrix weights only (common.applies_weight_decay); CLIP's betas and eps.

    fused: torch's fused AdamW kernel (the same update, several times faster on CPU for the large
    token embedding of small models); set by the environment variable CLIP_TRAIN_FUSED_ADAMW=1.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    table = params.parameter_table(model.config, "CLIPModel")
    decay = [p for n, p in named if common.applies_weight_decay(n, table)]
    no_decay = [p for n, p in named if not common.applies_weight_decay(n, table)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **({"fused": True} if fused else {}))


def clamp_logit_scale(model):
    with torch.no_grad():
        model.logit_scale.clamp_(0.0, common.LOGIT_SCALE_MAX)


class Collate:
    """[(image, caption), ...] -> dict of tensors; picklable for DataLoader worker processes."""

    def __init__(self, processor, max_length: int):
        self.processor, self.max_length = processor, max_length

    def __call__(self, items):
        images, captions = zip(*items)
        pixels = self.processor.image_processor(list(images), return_tensors="np")["pixel_values"]
        text = self.processor.tokenizer(list(captions), padding="max_length", truncation=True,
                                        max_length=self.max_length, return_tensors="np")
        return {
            "input_ids": torch.from_numpy(np.asarray(text["input_ids"], dtype=np.int64)),
            "attention_mask": torch.from_numpy(np.asarray(text["attention_mask"], dtype=np.int64)),
            "pixel_values": torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)),
        }


class _Batches:
    """Micro-steps start..stop-1 of a common.DataOrder, as a DataLoader batch_sampler."""

    def __init__(self, order, start, stop):
        self.order, self.start, self.stop = order, start, stop

    def __iter__(self):
        return self.order.batches(self.start, self.stop)

    def __len__(self):
        return self.stop - self.start


def make_loader(dataset, order, start, stop, collate, workers: int):
    """A DataLoader over micro-steps start..stop-1, in the order fixed by common.DataOrder."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=_Batches(order, start, stop), collate_fn=collate,
                                       num_workers=workers, prefetch_factor=4 if workers else None)


# -- evaluation ------------------------------------------------------------------------------------
@torch.no_grad()
def encode_images(model, images, processor, device, batch_size=256):
    out = []
    for i in range(0, len(images), batch_size):
        pixels = processor.image_processor(list(images[i : i + batch_size]), return_tensors="np")["pixel_values"]
        out.append(model.get_image_features(torch.from_numpy(np.asarray(pixels, dtype=np.float32)).to(device)).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def encode_texts(model, texts, processor, device, max_length, batch_size=256):
    out = []
    for i in range(0, len(texts), batch_size):
        tok = processor.tokenizer(list(texts[i : i + batch_size]), padding="max_length", truncation=True,
                                  max_length=max_length, return_tensors="np")
        ids = torch.from_numpy(np.asarray(tok["input_ids"], dtype=np.int64)).to(device)
        mask = torch.from_numpy(np.asarray(tok["attention_mask"], dtype=np.int64)).to(device)
        out.append(model.get_text_features(ids, mask).float().cpu())
    return torch.cat(out).numpy()


def evaluate(model, processor, val, tasks, device, max_length, max_items: int = 2000) -> dict:
    """Retrieval Recall@1/5/10 on (up to max_items of) the held-out set, plus zero-shot accuracies."""
    was_training = model.training
    model.eval()
    try:
        return common.evaluate_with(lambda images: encode_images(model, images, processor, device),
                                    lambda texts: encode_texts(model, texts, processor, device, max_length), val, tasks, max_items)
    finally:
        model.train(was_training)


# -- checkpoints -----------------------------------------------------------------------------------
def save_checkpoint(out, step, micro_step, model, optimizer, run_info, history, extra=None):
    """Write checkpoints/step-N atomically (staged, then renamed; `latest` updated last)."""
    staged = common.staging_dir(out, step)
    os.makedirs(staged, exist_ok=True)
    state = {n: t.detach().cpu().contiguous().numpy() for n, t in model.state_dict().items()}
    write_safetensors(state, os.path.join(staged, "model.safetensors"))
    with atomic_path(os.path.join(staged, "optimizer.pt")) as tmp:
        torch.save(optimizer.state_dict(), tmp)
    # RNG states are byte tensors: stored as safetensors, so resuming a run never unpickles anything
    rng = {"torch": torch.get_rng_state().numpy()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s.numpy() for i, s in enumerate(torch.cuda.get_rng_state_all())})
    write_safetensors(rng, os.path.join(staged, RNG_FILE))
    common.write_trainer_state(staged, {"step": step, "micro_step": micro_step, "run": run_info, "history": history,
                                        "rng": common.python_numpy_rng_state(), "backend": "pt", **(extra or {})})
    return common.commit_checkpoint(out, step)


RNG_FILE = "rng.safetensors"


def _read_rng_states(directory):
    """{"torch": ByteTensor, "cuda": [ByteTensor, ...]} from rng.safetensors, or from an older run's rng.pt
    read with weights_only=True (a byte tensor needs no pickle; a payload in the file is refused)."""
    path = os.path.join(directory, RNG_FILE)
    if os.path.exists(path):
        arrays = read_safetensors(path, mmap=False)
        cuda = [torch.from_numpy(np.array(arrays[k])) for k in sorted((k for k in arrays if k.startswith("cuda.")),
                                                                     key=lambda k: int(k.split(".")[1]))]
        return {"torch": torch.from_numpy(np.array(arrays["torch"])), "cuda": cuda}
    legacy = weight_files.torch_load(os.path.join(directory, "rng.pt"))
    return {"torch": legacy["torch"], "cuda": list(legacy.get("cuda", []))}


def load_checkpoint(directory, model, optimizer):
    """Restore model, optimizer and RNG states; returns the trainer state dict.

    Every file is read and checked before anything is assigned, so a damaged checkpoint raises
    (naming its file) without changing the model, and the caller can fall back to an older one.
    """
    state = common.read_trainer_state(directory)
    path = os.path.join(directory, "model.safetensors")
    tensors = read_safetensors(path)
    current = model.state_dict()
    missing = [n for n in current if n not in tensors]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of the model's tensors are missing ({', '.join(missing[:3])}, ...)")
    wrong = [f"{n} {tuple(tensors[n].shape)} instead of {tuple(t.shape)}" for n, t in current.items() if tuple(tensors[n].shape) != tuple(t.shape)]
    if wrong:
        raise ValueError(f"{path}: tensors of the wrong shape: {'; '.join(wrong[:3])}")
    saved_optimizer = weight_files.torch_load(os.path.join(directory, "optimizer.pt"))
    if not (isinstance(saved_optimizer, dict) and isinstance(saved_optimizer.get("state"), dict)
            and isinstance(saved_optimizer.get("param_groups"), list)):
        raise ValueError(f"{os.path.join(directory, 'optimizer.pt')}: not an optimizer state (no 'state' and 'param_groups')")
    rng = _read_rng_states(directory)
    try:
        optimizer.load_state_dict(saved_optimizer)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{os.path.join(directory, 'optimizer.pt')}: does not fit this optimizer ({err})") from None
    with torch.no_grad():
        for name, tensor in current.items():
            tensor.copy_(torch.from_numpy(np.array(tensors[name])))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    common.set_python_numpy_rng_state(state["rng"])
    return state


def save_model(model, processor, out, dtype=None):
    """The loadable model: config.json + model.safetensors + processor files in `out`."""
    state = model.state_dict()
    if dtype is not None:
        state = {n: t.to(dtype) for n, t in state.items()}
    model.save_pretrained(out, state_dict=state)
    processor.save_pretrained(out)


# -- the run ---------------------------------------------------------------------------------------
def build_model_and_processor(args):
    from clip.common.config import CLIPConfig
    from clip.common.processor import CLIPProcessor
    from clip.pt import CLIPModel

    if args.init:
        model = CLIPModel.from_pretrained(args.init, dtype=torch.float32)
        processor = CLIPProcessor.from_pretrained(args.init)
        return model, processor
    config = CLIPConfig.from_dict(common.build_config_dict(args.config or "small"))
    return CLIPModel(config), common.build_processor(config)


def apply_lock(model, lock):
    """--lock-image: parameters common.is_frozen names stop requiring gradients (before the optimizer is built,
    so AdamW neither updates nor decays them). Returns their names."""
    layers = model.config.vision_config.num_hidden_layers
    frozen = [n for n, p in model.named_parameters() if common.is_frozen(n, lock, layers)]
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return frozen


def train(args) -> dict:
    """Run `clip train --backend pt`; returns the final metrics (rank 0) or {}."""
    rank, world, device = init_distributed()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed % 2**32)
    import random

    random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, processor = build_model_and_processor(args)
    model.to(device).train()
    if args.grad_checkpointing:
        model.gradient_checkpointing_enable()
    apply_lock(model, common.lock_settings(args))
    image_size = model.config.vision_config.image_size
    max_length = model.config.text_config.max_position_embeddings
    train_set, val_set, tasks = common.build_datasets(args, image_size)

    order = common.make_order(train_set, args.batch_size, args.seed, world, rank)
    steps = common.total_steps(args.steps, args.epochs, len(train_set), args.batch_size, args.accum_steps)
    warmup = min(args.warmup_steps, steps)
    optimizer = build_optimizer(model, args.lr, args.weight_decay, fused=os.environ.get("CLIP_TRAIN_FUSED_ADAMW") == "1")
    run_info = common.run_settings(args, steps, warmup, len(train_set), world) | common.data_settings(train_set)
    loss_scale = common.DynamicLossScale() if args.precision == "fp16" else None

    start, history = 0, []
    if args.resume:
        _, state = common.resume_from_checkpoints(args.out, lambda d: load_checkpoint(d, model, optimizer), common.reporter(rank))
        common.check_resume_compatible(state["run"], run_info)
        start, history = state["step"], state["history"]
        if loss_scale is not None:
            loss_scale = common.DynamicLossScale.from_state(state.get("loss_scale"))
    progress = common.Progress(steps, start, every=args.log_every, enabled=rank == 0 and not args.quiet)

    objective = ContrastiveObjective(model, rank, world, local=args.local_loss)
    if args.compile:
        objective.compile()  # in place: the module keeps its type and parameters, and DDP wraps it as before
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    loader = make_loader(train_set, order, start * args.accum_steps, steps * args.accum_steps, Collate(processor, max_length), args.workers)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    autocast = (lambda: torch.autocast(device.type, dtype=half)) if half is not None else nullcontext
    logs = common.RunLogs(args, enabled=rank == 0)
    if rank == 0 and not args.quiet:
        n_params = sum(p.numel() for p in model.parameters())
        progress.log(f"clip train: {n_params / 1e6:.2f}M parameters, {len(train_set)} training pairs, {steps} steps of "
                     f"{args.batch_size} x {args.accum_steps} pairs on {world} process(es), {device.type}, {args.precision}")

    step, t_start = start, time.perf_counter()
    batches = iter(loader)
    trainable = [p for p in model.parameters() if p.requires_grad]
    while step < steps:
        lr = common.learning_rate(step, args.lr, warmup, steps, args.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro = [{k: v.to(device, non_blocking=True) for k, v in next(batches).items()} for _ in range(args.accum_steps)]
        total = optimizer_step(objective, optimizer, trainable, micro, autocast, args.grad_clip, loss_scale)
        clamp_logit_scale(model)
        step += 1
        history.append([step, round(total, 6)])
        progress.update(step, total, lr, args.batch_size * args.accum_steps)
        logs.step(step, {"loss": total, "lr": lr, "temperature": float(model.logit_scale.detach().exp()),
                         **({"loss_scale": loss_scale.scale} if loss_scale is not None else {})}, args.batch_size * args.accum_steps)

        last = step == steps
        if args.save_every and (step % args.save_every == 0 or last) and rank == 0:
            save_checkpoint(args.out, step, step * args.accum_steps, model, optimizer, run_info, history,
                            extra={"loss_scale": loss_scale.state()} if loss_scale is not None else None)
        if args.eval_every and step % args.eval_every == 0 and not last and rank == 0:
            metrics = evaluate(model, processor, val_set, tasks, device, max_length, args.eval_max)
            logs.metrics(step, metrics)
            progress.log(f"step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        if args.stop_after and step >= args.stop_after and not last:
            break  # simulated interruption (tests): leave the checkpoint, skip the final save
    progress.close()
    elapsed = time.perf_counter() - t_start

    result = {}
    if rank == 0 and step == steps:
        metrics = evaluate(model, processor, val_set, tasks, device, max_length, args.eval_max)
        logs.metrics(step, metrics)
        save_model(model, processor, args.out, dtype=torch.float16 if args.save_dtype == "float16" else None)
        result = common.finish_run(args, metrics, history, steps, start, step, elapsed, run_info)
    logs.close()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return result
