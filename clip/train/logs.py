"""Run logs: TensorBoard event files (and Weights & Biases when installed and asked for) of loss, learning
rate, temperature, throughput and evaluation metrics, written by every backend's trainer alike.

The event files are written with tensorboard's own writer and protocol buffers, so logging needs
neither TensorFlow nor PyTorch (`pip install tensorboard`); `tensorboard --logdir OUT/logs` shows them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from clip.train.options import TrainOptions


def reporter(rank: int = 0) -> Callable[[str], None]:
    """A function printing one line to stderr on the first process (and nothing on the others)."""
    return (lambda message: print(message, file=sys.stderr, flush=True)) if rank == 0 else (lambda message: None)


class ScalarWriter(Protocol):
    """Where RunLogs sends scalars: a TensorBoard event file, or Weights & Biases (RunLogs itself)."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardWriter:
    """Scalars into an event file under `directory` (one file per run segment, as TensorBoard expects)."""

    def __init__(self, directory: str) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self._writer = EventFileWriter(directory)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        summary = self._summary(value=[self._summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
        self._writer.add_event(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


class RunLogs:
    """What a trainer logs per optimizer step and per evaluation: nothing unless --log-dir/--tensorboard or
    --wandb asked for it, on the first process only. Throughput is pairs per second since the last step."""

    def __init__(self, args: TrainOptions, enabled: bool = True) -> None:
        self.writers: list[ScalarWriter] = []
        self._last: float | None = None
        if not enabled:
            return
        directory = getattr(args, "log_dir", None) or (
            os.path.join(args.out, "logs") if getattr(args, "tensorboard", False) else None
        )
        if directory:
            try:
                self.writers.append(TensorBoardWriter(directory))
            except ImportError as err:
                raise ValueError(f"--tensorboard needs the tensorboard package ({err})") from None
        if getattr(args, "wandb", False):
            try:
                import wandb
            except ImportError:
                raise ValueError("--wandb needs the wandb package (pip install wandb)") from None
            self._wandb = wandb.init(
                project=args.wandb_project, config={k: v for k, v in vars(args).items() if k != "run"}
            )
            self.writers.append(self)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:  # the wandb writer
        self._wandb.log(values, step=step)

    def step(self, step: int, values: Mapping[str, float], pairs: int) -> None:
        now = time.perf_counter()
        if self._last is not None:
            values = {**values, "pairs_per_second": pairs / max(now - self._last, 1e-9)}
        self._last = now
        for writer in self.writers:
            writer.scalars(step, {f"train/{k}": v for k, v in values.items()})

    def metrics(self, step: int, metrics: Mapping[str, object]) -> None:
        numbers = {
            f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for writer in self.writers:
            writer.scalars(step, numbers)

    def close(self) -> None:
        for writer in self.writers:
            if writer is self:
                self._wandb.finish()
            else:
                writer.close()
