"""The `clip train` subcommand: argument definitions, turned into clip.train.TrainOptions for clip.train.fit."""

from __future__ import annotations

import argparse
import dataclasses

from clip.train.options import BACKENDS as TRAIN_BACKENDS
from clip.train.options import TrainOptions
from clip.train.sizes import SIZES

EPILOG = """examples:
  clip train --synthetic 20000 --steps 500 --out runs/shapes
  clip train --digits --config tiny --epochs 5 --out runs/digits
  clip train --train captions.csv --init openai/clip-vit-base-patch32 --lr 1e-5 --steps 1000 --out runs/ft
  torchrun --nproc-per-node 2 -m clip train --synthetic 20000 --steps 500 --out runs/ddp
  clip train --backend flax --synthetic 20000 --steps 500 --out runs/jax     (all JAX devices, data parallel)
  clip train --backend tf --synthetic 20000 --steps 500 --out runs/tf        (MirroredStrategy over all GPUs)
  clip train ... --out runs/shapes --resume          (continue from the latest checkpoint)
  clip train ... --batch-size 32 --accum-steps 8     (a contrastive batch of 256 with the memory of 32)
  clip train --init DIR --train pairs.csv --lock-image --tensorboard --out runs/lit
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a CLIP model on captioned images",
        description="Train CLIP from scratch (--config) or from a checkpoint (--init) with the contrastive loss. "
        "The output directory loads with CLIPModel.from_pretrained and CLIPProcessor.from_pretrained "
        "(ours or transformers').",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--backend",
        choices=TRAIN_BACKENDS,
        default="pt",
        help="framework to train in: pt (PyTorch, default), tf (TensorFlow/Keras 3) or flax (JAX)",
    )
    model = p.add_argument_group("model")
    start = model.add_mutually_exclusive_group()
    start.add_argument(
        "--config",
        default=None,
        help=f"from scratch: a size ({', '.join(SIZES)}) or a config JSON file (default: small)",
    )
    start.add_argument(
        "--init", default=None, metavar="DIR_OR_HUB_ID", help="start from this checkpoint (and its processor)"
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--train",
        default=None,
        metavar="FILE_OR_DIR",
        help="CSV/JSONL of (image, caption) rows or a folder of images with .txt captions",
    )
    data.add_argument(
        "--train-shards",
        default=None,
        metavar="SHARDS",
        help="webdataset tar shards (a folder, a glob or 'shards-{000..099}.tar'): an endless stream resampled "
        "with --seed; --resume continues it exactly",
    )
    data.add_argument("--synthetic", type=int, default=None, metavar="N", help="N generated captioned shape images")
    data.add_argument("--digits", action="store_true", help="scikit-learn's handwritten digits (needs scikit-learn)")
    data.add_argument("--val-fraction", type=float, default=0.05, help="held-out share for evaluation (default 0.05)")
    data.add_argument(
        "--workers",
        type=int,
        default=0,
        help="data loading workers: DataLoader processes (pt), decoding threads (flax), "
        "tf.data parallel calls (tf; 0: AUTOTUNE)",
    )
    opt = p.add_argument_group("optimization")
    opt.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="global contrastive batch per micro-step, over all processes (default 128)",
    )
    opt.add_argument(
        "--accum-steps",
        type=int,
        default=1,
        help="micro-batches per optimizer step; the loss is over all their pairs together (GradCache): "
        "--batch-size m --accum-steps k trains as --batch-size k*m with the memory of m",
    )
    opt.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    opt.add_argument("--min-lr-ratio", type=float, default=0.0, help="final lr as a fraction of --lr (default 0)")
    opt.add_argument("--warmup-steps", type=int, default=100, help="linear warmup steps (default 100)")
    length = opt.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimizer steps")
    length.add_argument(
        "--epochs", type=float, default=None, help="passes over the training set (default 1 when --steps is absent)"
    )
    opt.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay on matrix weights (default 0.1)")
    opt.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm, 0 for none (default 1.0)")
    opt.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="bf16/fp16: mixed precision (half-precision compute, float32 weights and loss); "
        "fp16 with dynamic loss scaling (a step that overflows is skipped and the scale halved)",
    )
    opt.add_argument(
        "--local-loss",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pt/tf with several processes or replicas: each takes its own rows against all gathered columns "
        "(default); --no-local-loss: each takes the whole global matrix (open_clip's default; same gradients, "
        "more work). flax: XLA shards the global loss either way",
    )
    opt.add_argument(
        "--compile",
        action="store_true",
        help="compile the training step: torch.compile (pt), tf.function(jit_compile=True) (tf); "
        "flax's step is always jax.jit. Off by default: see bench/bench_train.py --compile for when it pays",
    )
    opt.add_argument(
        "--grad-checkpointing",
        action="store_true",
        help="recompute each encoder layer in backward instead of keeping its activations",
    )
    opt.add_argument(
        "--fused-adamw",
        action="store_true",
        help="pt: torch's fused AdamW kernel (the same update; several times faster on CPU for the large "
        "token embedding of small models)",
    )
    lock = p.add_argument_group("locked image tower (LiT)")
    lock.add_argument(
        "--lock-image", action="store_true", help="keep the image tower's weights fixed (train the text tower)"
    )
    lock.add_argument(
        "--lock-image-unlocked-groups",
        type=int,
        default=0,
        metavar="N",
        help="train the last N groups of the image tower anyway (groups: embeddings, each layer, the head)",
    )
    lock.add_argument(
        "--lock-image-freeze-norm",
        action="store_true",
        help="freeze the locked layers' LayerNorms too (by default they keep training)",
    )
    opt.add_argument("--seed", type=int, default=0)
    run = p.add_argument_group("output")
    run.add_argument("--out", required=True, help="output directory (model, checkpoints, metrics.json)")
    run.add_argument(
        "--save-every", type=int, default=500, help="checkpoint every N steps, 0 for only the final model (default 500)"
    )
    run.add_argument(
        "--save-dtype",
        choices=("float32", "float16"),
        default="float32",
        help="dtype of the saved model (checkpoints stay float32)",
    )
    run.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out, bit for bit")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out that holds an earlier run (its checkpoints are deleted)",
    )
    run.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (always at the end)")
    run.add_argument(
        "--eval-max", type=int, default=2000, help="at most this many held-out pairs for retrieval metrics"
    )
    run.add_argument("--log-every", type=int, default=10, help="plain progress line every N steps (without tqdm)")
    run.add_argument(
        "--tensorboard",
        action="store_true",
        help="TensorBoard event files in OUT/logs (loss, lr, temperature, throughput, metrics)",
    )
    run.add_argument(
        "--log-dir", default=None, help="TensorBoard event files here instead of OUT/logs (implies --tensorboard)"
    )
    run.add_argument(
        "--wandb", action="store_true", help="also log to Weights & Biases (needs wandb installed and logged in)"
    )
    run.add_argument("--wandb-project", default="clip-train", help="the Weights & Biases project (default clip-train)")
    run.add_argument(
        "--zero-shot-eval",
        default=None,
        metavar="DIR",
        help="a folder of class sub-folders of images: zero-shot top-1 at every evaluation (--eval-every)",
    )
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run_train)
    return p


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """The parsed `clip train` arguments as the TrainOptions that clip.train.fit takes."""
    return TrainOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainOptions)})


def run_train(args: argparse.Namespace) -> int:
    from clip.train.loop import fit

    fit(options_from_args(args))
    return 0
