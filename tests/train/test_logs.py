"""Run logs: `--tensorboard` writes event files that TensorBoard's own reader loads, with the loss, learning
rate, temperature and throughput per step and the evaluation metrics, including zero-shot top-1 on a
`--zero-shot-eval` image folder; wandb is refused with a clear message when it is not installed."""

import json

import numpy as np
import pytest
from PIL import Image

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
    assert labels == ["This is a photo of blue thing.", "This is a photo of red thing."]  # eval-zero-shot's default
    assert targets == [0, 0, 0, 1, 1, 1] and len(images) == 6 and images[0].mode == "RGB"
    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "one" / "only" / "0.png")
    with pytest.raises(ValueError, match="needs at least two classes"):
        folder_task(str(tmp_path / "one"))
    # the other layouts of clip eval-zero-shot: a CSV of (image, label)
    table = tmp_path / "eval" / "labels.csv"
    table.write_text("image,label\nred_thing/0.png,red thing\nblue_thing/1.png,blue thing\nred_thing/2.png,red thing\n")
    images, labels, targets = folder_task(str(table))
    assert len(images) == 3 and sorted(labels) == ["This is a photo of blue thing.", "This is a photo of red thing."]
    assert [labels[t] for t in targets] == [
        "This is a photo of red thing.",
        "This is a photo of blue thing.",
        "This is a photo of red thing.",
    ]


def test_tensorboard_event_files_hold_the_run(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from clip.cli import main

    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    folder = _folder(tmp_path / "colours")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(tmp_path / "tiny.json"),
                "--synthetic",
                "48",
                "--val-fraction",
                "0.25",
                "--batch-size",
                "8",
                "--steps",
                "3",
                "--warmup-steps",
                "1",
                "--save-every",
                "0",
                "--eval-every",
                "2",
                "--tensorboard",
                "--zero-shot-eval",
                str(folder),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    logs = EventAccumulator(str(out / "logs"))
    logs.Reload()
    tags = set(logs.Tags()["scalars"])
    assert {
        "train/loss",
        "train/lr",
        "train/temperature",
        "train/pairs_per_second",
        "eval/image_to_text_R@1",
        "eval/zero_shot_colours",
    } <= tags
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
    assert (
        main(
            [
                "train",
                "--config",
                str(tmp_path / "tiny.json"),
                "--synthetic",
                "16",
                "--batch-size",
                "8",
                "--steps",
                "1",
                "--wandb",
                "--out",
                str(tmp_path / "run"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "--wandb needs the wandb package" in capsys.readouterr().err
