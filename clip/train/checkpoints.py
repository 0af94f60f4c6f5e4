"""The checkpoint layout every trainer writes, and resuming from it (with a fallback when damaged).

OUT/
  config.json, model.safetensors, preprocessor_config.json, tokenizer files  <- the model, loadable
  metrics.json                                                               <- evaluation results
  checkpoints/step-00000100/                                                 <- resumable state
    model.safetensors        canonical names, float32 (exact)
    optimizer.<backend>      the backend's optimizer state in its own format
    rng.<backend>            the backend's RNG states
    trainer_state.json       step, micro_step, args, rng of numpy/python, loss history
  checkpoints/latest         name of the newest complete checkpoint (written last, atomically)

Two checkpoints are kept, so that a damaged newest one (a disk error, a hand edit, a file truncated
by a full disk) costs the steps since the previous one instead of the whole run:
`resume_from_checkpoints` tries the checkpoint `latest` names, then the older ones, newest first.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

import numpy as np

from clip.common.io import atomic_write_json, atomic_write_text, read_json, read_safetensors, write_safetensors

Loaded = TypeVar("Loaded")

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.json"
STEP_PREFIX = "step-"


def checkpoint_dir(out: str, step: int) -> str:
    return os.path.join(out, CHECKPOINTS, f"{STEP_PREFIX}{step:08d}")


def staging_dir(out: str, step: int) -> str:
    """Where a checkpoint is written before `commit_checkpoint` renames it into place."""
    return os.path.join(out, CHECKPOINTS, f".{STEP_PREFIX}{step:08d}.partial")


def commit_checkpoint(out: str, step: int, keep: int = 2) -> str:
    """Rename the staged checkpoint into place, point `latest` at it, and prune old ones.

    A crash before the pointer is written leaves the previous checkpoint as `latest`.
    """
    staged, final = staging_dir(out, step), checkpoint_dir(out, step)
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.replace(staged, final)
    atomic_write_text(os.path.join(out, CHECKPOINTS, LATEST), os.path.basename(final) + "\n")
    existing = sorted(d for d in os.listdir(os.path.join(out, CHECKPOINTS)) if d.startswith(STEP_PREFIX))
    for old in existing[: max(0, len(existing) - keep)]:
        shutil.rmtree(os.path.join(out, CHECKPOINTS, old), ignore_errors=True)
    return final


def _latest_pointer(out: str) -> tuple[str | None, str | None]:
    """(the checkpoint directory `latest` names, or None; the reason it is unusable, or None)."""
    pointer = os.path.join(out, CHECKPOINTS, LATEST)
    if not os.path.isfile(pointer):
        return None, None
    with open(pointer, "rb") as f:
        raw = f.read(4096)
    name = raw.decode("utf-8", errors="replace").strip()
    if not name:
        return None, f"{pointer} is empty"
    if not name.startswith(STEP_PREFIX) or os.sep in name or "/" in name or name in (".", ".."):
        return None, f"{pointer} names {name!r}, not a checkpoint of this directory"
    path = os.path.join(out, CHECKPOINTS, name)
    if not os.path.isdir(path):
        return None, f"{pointer} names {name}, which does not exist"
    return path, None


def latest_checkpoint(out: str) -> str | None:
    """The checkpoint `latest` names when it exists, else None."""
    return _latest_pointer(out)[0]


def candidate_checkpoints(out: str) -> tuple[list[str], list[str]]:
    """(checkpoint directories to try on resume, newest first: the one `latest` names, then the other
    complete step-N directories; notes on a damaged `latest` pointer)."""
    named, problem = _latest_pointer(out)
    root = os.path.join(out, CHECKPOINTS)
    steps = (
        sorted(
            (d for d in os.listdir(root) if d.startswith(STEP_PREFIX) and os.path.isdir(os.path.join(root, d))),
            reverse=True,
        )
        if os.path.isdir(root)
        else []
    )
    ordered = ([named] if named else []) + [os.path.join(root, d) for d in steps if os.path.join(root, d) != named]
    return ordered, [problem] if problem else []


MODEL_FILE = "model.safetensors"


def read_model_state(directory: str, shapes: Mapping[str, Sequence[int] | None]) -> dict[str, np.ndarray]:
    """The checkpoint's model.safetensors, {canonical name: array}, checked against the model's
    {canonical name: shape} (a shape of None is not checked): a ValueError naming the file otherwise."""
    path = os.path.join(directory, MODEL_FILE)
    tensors = read_safetensors(path)
    missing = [n for n in shapes if n not in tensors]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of the model's tensors are missing ({', '.join(missing[:3])}, ...)")
    wrong = [
        f"{n} {tuple(tensors[n].shape)} instead of {tuple(s)}"
        for n, s in shapes.items()
        if s is not None and tuple(tensors[n].shape) != tuple(s)
    ]
    if wrong:
        raise ValueError(f"{path}: tensors of the wrong shape: {'; '.join(wrong[:3])}")
    return {n: np.array(tensors[n]) for n in shapes}


def write_array_list(arrays: Iterable[Any], path: str) -> None:
    """A list of arrays (an optimizer's state in its own order) as safetensors keys "00000", "00001", ..."""
    write_safetensors({f"{i:05d}": np.asarray(a) for i, a in enumerate(arrays)}, path)


def read_array_list(path: str, shapes: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """write_array_list's arrays, checked against the expected count and shapes (a ValueError naming the file)."""
    saved = read_safetensors(path)
    if sorted(saved) != [f"{i:05d}" for i in range(len(shapes))]:
        raise ValueError(f"{path}: {len(saved)} optimizer arrays, this optimizer has {len(shapes)}")
    for i, shape in enumerate(shapes):
        if tuple(saved[f"{i:05d}"].shape) != tuple(shape):
            raise ValueError(f"{path}: array {i} has shape {tuple(saved[f'{i:05d}'].shape)}, expected {tuple(shape)}")
    return [np.array(saved[f"{i:05d}"]) for i in range(len(shapes))]


# Exceptions that mean "this checkpoint's files are damaged": each backend's readers raise ValueError
# naming the file; the rest come from a framework refusing what a damaged file held (a missing key, a
# tensor of the wrong shape or type).
DAMAGE = (ValueError, OSError, KeyError, TypeError, IndexError, RuntimeError)


def resume_from_checkpoints(
    out: str, load: Callable[[str], Loaded], report: Callable[[str], None]
) -> tuple[str, Loaded]:
    """`load(directory)` of the newest checkpoint in OUT that loads, telling `report` about each damaged
    one passed over. `load` must restore everything (model, optimizer, RNG) from its directory alone,
    so that a half-read damaged checkpoint leaves nothing behind once an older one is loaded."""
    candidates, notes = candidate_checkpoints(out)
    if not candidates:
        raise ValueError(
            f"--resume: no checkpoint in {os.path.join(out, CHECKPOINTS)}" + (f" ({notes[0]})" if notes else "")
        )
    failures = list(notes)
    for i, directory in enumerate(candidates):
        try:
            result = load(directory)
        except DAMAGE as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            failures.append(f"{directory}: {reason}" if os.path.basename(directory) not in reason else reason)
            if i + 1 < len(candidates):
                report(f"clip train: checkpoint {directory} is damaged ({reason}); falling back to {candidates[i + 1]}")
            continue
        if failures and i == 0:
            report(f"clip train: {failures[0]}; resuming from {directory}")
        return directory, result
    raise ValueError(
        "--resume: no checkpoint in " + os.path.join(out, CHECKPOINTS) + " can be loaded:\n  " + "\n  ".join(failures)
    )


def write_trainer_state(directory: str, state: Mapping[str, Any]) -> None:
    atomic_write_json(os.path.join(directory, TRAINER_STATE), state)


_STATE_FIELDS = {"step": int, "micro_step": int, "run": dict, "history": list, "rng": dict}


def read_trainer_state(directory: str) -> dict[str, Any]:
    """trainer_state.json, checked field by field: a damaged file is a ValueError naming it."""
    path = os.path.join(directory, TRAINER_STATE)
    state = read_json(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(state).__name__}")
    for field, kind in _STATE_FIELDS.items():
        value = state.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            found = "nothing" if field not in state else type(value).__name__
            raise ValueError(f"{path}: {field!r} must be a{'n' if kind is int else ''} {kind.__name__}, found {found}")
    if state["step"] < 0 or state["micro_step"] < 0:
        raise ValueError(f"{path}: negative step {state['step']}")
    rng = state["rng"]
    if not (
        isinstance(rng.get("python"), list)
        and len(rng["python"]) == 3
        and isinstance(rng.get("numpy"), list)
        and len(rng["numpy"]) == 5
    ):
        raise ValueError(f"{path}: 'rng' does not hold the python and numpy generator states")
    return state


# Arguments that must match for --resume to continue the same run bit for bit.
RESUME_KEYS = (
    "batch_size",
    "accum_steps",
    "lr",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "precision",
    "seed",
    "total_steps",
    "dataset_size",
    "world_size",
    "accumulation",
    "lock_image",
    "shards",
)


def check_resume_compatible(saved: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    changed = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in RESUME_KEYS if saved.get(k) != current.get(k)]
    if changed:
        raise ValueError(
            "--resume: the run's settings differ from the checkpoint's, so it cannot continue it exactly:\n  "
            + "\n  ".join(changed)
        )


def python_numpy_rng_state() -> dict[str, list]:
    import random

    state = random.getstate()
    return {"python": [state[0], list(state[1]), state[2]], "numpy": _numpy_state()}


def _numpy_state() -> list:
    # the legacy tuple form (get_state's default; numpy's stub also allows its dict form)
    state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, pos, has_gauss, gauss = state
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]


def set_python_numpy_rng_state(state: Mapping[str, Any]) -> None:
    import random

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, g = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, g))
