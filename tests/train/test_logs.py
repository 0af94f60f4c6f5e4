"""Run logs: `--tensorboard` writes event files that TensorBoard's own reader loads, with the loss, learning
rate, temperature and throughput per step and the evaluation metrics, including zero-shot top-1 on a
`--zero-shot-eval` image folder; wandb is refused with a clear message when it is not installed."""

import json

import numpy as np
import pytest

from train_helpers import TINY_CONFIG


def _folder(root):
    from PIL import Image

    for name, colour in (("red_thing", (220, 20, 20)), ("blue_thing", (20, 20, 220))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((32, 32, 3), colour, np.uint8)).save(root / name / f"{i}.png")
    (root / "notes.txt").write_text("not a class")  # a file beside the class folders is ignored
    return root


def test_folder_task_reads_classes_prompts_and_targets(tmp_path):
    from clip.train.zero_shot_eval import folder_task

    images, labels, targets = folder_task(str(_folder(tmp_path / "eval")))
    assert labels == ["a photo of a blue thing.", "a photo of a red thing."]
    assert targets == [0, 0, 0, 1, 1, 1] and len(images) == 6 and images[0].mode == "RGB"
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(ValueError, match="at least two class sub-folders"):
        folder_task(str(tmp_path / "one"))


def test_tensorboard_event_files_hold_the_run(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from clip.cli import main

    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    folder = _folder(tmp_path / "colours")
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "tiny.json"), "--synthetic", "48", "--val-fraction", "0.25", "--batch-size", "8",
                 "--steps", "3", "--warmup-steps", "1", "--save-every", "0", "--eval-every", "2", "--tensorboard",
                 "--zero-shot-eval", str(folder), "--out", str(out), "--quiet"]) == 0
    logs = EventAccumulator(str(out / "logs"))
    logs.Reload()
    tags = set(logs.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/temperature", "train/pairs_per_second", "eval/image_to_text_R@1",
            "eval/zero_shot_colours"} <= tags
    losses = [e.value for e in logs.Scalars("train/loss")]
    history = json.loads((out / "metrics.json").read_text())
    assert [e.step for e in logs.Scalars("train/loss")] == [1, 2, 3]
    assert losses[-1] == pytest.approx(history["final_loss"], abs=1e-5)
    assert [e.step for e in logs.Scalars("eval/zero_shot_colours")] == [2, 3]  # every 2 steps and at the end
    assert logs.Scalars("eval/zero_shot_colours")[-1].value == pytest.approx(history["zero_shot_colours"])
    assert logs.Scalars("train/temperature")[0].value == pytest.approx(np.exp(np.log(1 / 0.07)), rel=0.05)


def test_wandb_without_the_package_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import builtins

    from clip.cli import main

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    assert main(["train", "--config", str(tmp_path / "tiny.json"), "--synthetic", "16", "--batch-size", "8", "--steps", "1",
                 "--wandb", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "--wandb needs the wandb package" in capsys.readouterr().err
