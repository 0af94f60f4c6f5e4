"""clip.train.fit, the Python API under `clip train`: it equals the command, its options default to the
command's, a callback may stop a run (which then resumes exactly), an image that becomes unreadable
after the data was listed is skipped by every backend's run, and importing the trainers leaves the
environment alone."""

import dataclasses
import json
import os

import numpy as np
import pytest
from train_backends_helpers import run_script, stop_at
from train_helpers import TINY_CONFIG

from clip.train import StepInfo, TrainOptions, fit

BACKEND_MODULES = {"pt": "torch", "tf": "tensorflow", "flax": "jax"}


def _weights(path):
    from clip.common.io import read_safetensors

    return {k: np.array(v) for k, v in read_safetensors(path).items()}


def _assert_same_weights(a, b):
    a, b = _weights(a), _weights(b)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def _config(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return str(path)


def _captions(root, n: int) -> str:
    """A CSV of n captioned shape images in `root` (quicker to train on than --synthetic, which adds zero-shot sets)."""
    from clip import data

    shapes = data.SyntheticShapes(n, seed=0, image_size=32)
    lines = ["image,caption"]
    for i in range(n):
        image, caption = shapes[i]
        image.save(root / f"{i}.png")
        lines.append(f"{i}.png,{caption}")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return str(root / "pairs.csv")


def test_the_command_line_defaults_are_the_options_defaults():
    from clip.cli import build_parser

    args = build_parser().parse_args(["train", "--out", "somewhere"])
    from clip.train.cli import options_from_args

    options = options_from_args(args)
    assert options == TrainOptions(out="somewhere")
    for field in dataclasses.fields(TrainOptions):
        assert hasattr(args, field.name), field.name  # every option is a flag
    assert options_from_args(build_parser().parse_args(["train", "--out", "x", "--fused-adamw"])).fused_adamw


def test_fit_from_python_equals_the_command(tmp_path):
    pytest.importorskip("torch")
    from clip.cli import main

    config, pairs = _config(tmp_path), _captions(tmp_path, 24)
    assert (
        main(
            [
                "train",
                "--config",
                config,
                "--train",
                pairs,
                "--batch-size",
                "8",
                "--accum-steps",
                "2",
                "--steps",
                "3",
                "--warmup-steps",
                "1",
                "--lr",
                "1e-3",
                "--save-every",
                "2",
                "--out",
                str(tmp_path / "cli"),
                "--quiet",
            ]
        )
        == 0
    )
    seen = []
    result = fit(
        out=str(tmp_path / "api"),
        config=config,
        train=pairs,
        batch_size=8,
        accum_steps=2,
        steps=3,
        warmup_steps=1,
        lr=1e-3,
        save_every=2,
        quiet=True,
        callbacks=[seen.append],
    )
    _assert_same_weights(tmp_path / "cli" / "model.safetensors", tmp_path / "api" / "model.safetensors")
    assert [info.step for info in seen] == [1, 2, 3] and isinstance(seen[0], StepInfo)
    assert seen[1].checkpoint.endswith("step-00000002") and seen[0].checkpoint is None
    history = json.loads((tmp_path / "api" / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())[
        "history"
    ]
    assert [[info.step, round(info.loss, 6)] for info in seen] == history
    assert result["final_loss"] == history[-1][1] and "image_to_text_MRR" in result


def test_a_callback_stops_the_run_with_a_checkpoint_off_the_cadence_and_it_resumes_exactly(tmp_path):
    pytest.importorskip("torch")
    options = TrainOptions(
        out=str(tmp_path / "full"),
        config=_config(tmp_path),
        train=_captions(tmp_path, 24),
        batch_size=8,
        steps=4,
        warmup_steps=1,
        lr=1e-3,
        save_every=0,
        quiet=True,
    )
    fit(options)
    stopped = options.replace(out=str(tmp_path / "split"))
    assert fit(stopped, callbacks=[stop_at(1)]) == {}
    assert sorted(os.listdir(tmp_path / "split" / "checkpoints")) == ["latest", "step-00000001"]
    assert not (tmp_path / "split" / "model.safetensors").exists()  # stopped: no final model
    assert fit(stopped, resume=True)["steps"] == 4
    _assert_same_weights(tmp_path / "full" / "model.safetensors", tmp_path / "split" / "model.safetensors")


def test_bad_options_are_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--batch-size must be at least 1"):
        fit(out=str(tmp_path), synthetic=8, batch_size=0)
    with pytest.raises(ValueError, match="backend 'mxnet' is not one of pt, tf, flax"):
        fit(out=str(tmp_path), synthetic=8, backend="mxnet")
    with pytest.raises(TypeError):
        fit(out=str(tmp_path), synthetic=8, no_such_option=1)


@pytest.mark.parametrize("backend", list(BACKEND_MODULES))
def test_an_image_that_becomes_unreadable_after_listing_is_skipped(tmp_path, backend, monkeypatch, capsys):
    """The files are checked when the CSV is listed; one is then truncated (a disk error, a file being
    replaced): every backend's run reports it once and trains on the next readable item instead."""
    pytest.importorskip(BACKEND_MODULES[backend])
    from clip import data

    pairs = _captions(tmp_path, 12)
    listed = data.load_captions

    def list_then_break(path, *args, **kwargs):
        dataset = listed(path, *args, **kwargs)
        (tmp_path / "5.png").write_bytes((tmp_path / "5.png").read_bytes()[:40])
        return dataset

    monkeypatch.setattr(data, "load_captions", list_then_break)
    result = fit(
        out=str(tmp_path / "run"),
        backend=backend,
        config=_config(tmp_path),
        train=pairs,
        val_fraction=0.0,
        batch_size=12,
        steps=1,
        warmup_steps=1,
        save_every=0,
        log_every=1,
    )
    assert result["steps"] == 1 and (tmp_path / "run" / "model.safetensors").exists()
    err = capsys.readouterr().err
    assert err.count("is unreadable") == 1 and "using the next readable item" in err


def test_importing_the_trainers_leaves_the_environment_alone():
    code = """
import json, os, sys
os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
before = dict(os.environ)
import clip.train, clip.train.tf, clip.train.cli, clip.train.loop, clip.tasks.backends
print(json.dumps({"changed": sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)),
                  "tensorflow": "tensorflow" in sys.modules}))
"""
    result = run_script(code, {})
    assert result == {"changed": [], "tensorflow": False}


def test_fused_adamw_is_an_option_that_reaches_torch(tmp_path):
    pytest.importorskip("torch")
    from clip.train import pt

    for fused in (False, True):
        trainer = pt.Trainer(TrainOptions(out=str(tmp_path), config=_config(tmp_path), fused_adamw=fused))
        trainer.build_optimizer(steps=1, warmup=1)
        assert bool(trainer.optimizer.defaults.get("fused")) is fused
