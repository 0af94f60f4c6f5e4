"""Damaged training checkpoints, in every backend: a trainer_state.json holding [] or {}, a garbage optimizer
file or an empty `latest` pointer never end in a traceback. Resuming falls back to the previous checkpoint
kept beside the damaged one and says so; when none loads, one error names each checkpoint's damaged file."""

import json
import shutil

import pytest

from train_helpers import TINY_CONFIG

BACKENDS = {"pt": ("torch", "optimizer.pt"), "tf": ("tensorflow", "optimizer.tf"), "flax": ("jax", "optimizer.flax")}


@pytest.fixture(scope="module", params=list(BACKENDS))
def run(request, tmp_path_factory):
    """(backend, a finished 2-step run with checkpoints step-1 and step-2, a loader of a checkpoint)."""
    backend = request.param
    pytest.importorskip(BACKENDS[backend][0])
    from clip.cli import main

    tmp = tmp_path_factory.mktemp(f"damaged-{backend}")
    (tmp / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    out = tmp / "run"
    assert (
        main(
            [
                "train",
                "--backend",
                backend,
                "--config",
                str(tmp / "tiny.json"),
                "--synthetic",
                "40",
                "--val-fraction",
                "0.1",
                "--batch-size",
                "8",
                "--steps",
                "2",
                "--warmup-steps",
                "1",
                "--save-every",
                "1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    return backend, out, _loader(backend)


def _loader(backend):
    from clip.common.config import CLIPConfig

    cfg = CLIPConfig.from_dict(TINY_CONFIG)
    if backend == "pt":
        from clip.pt import CLIPModel
        from clip.train import pt

        model = CLIPModel(cfg)
        optimizer = pt.build_optimizer(model, 1e-3, 0.1)
        return lambda d: pt.load_checkpoint(d, model, optimizer)
    if backend == "tf":
        from clip.tf import TFCLIPModel
        from clip.train import tf as trainer

        model = TFCLIPModel(cfg)
        optimizer, _ = trainer.build_optimizer(model, 2, 1e-3, 1, 0.1, 1.0)
        return lambda d: trainer.load_checkpoint(d, model, optimizer)
    from clip.flax import FlaxCLIPModel
    from clip.train import flax as trainer

    model = FlaxCLIPModel(cfg)
    template = trainer.build_optimizer(cfg, 2, 1e-3, 1, 0.1, 1.0).init(model.params)
    return lambda d: trainer.load_checkpoint(d, model, template)


def _damaged_copy(out, tmp_path, damage: dict):
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name, content in damage.items():
        (copy / "checkpoints" / name).write_bytes(content)
    return copy


def _resume(copy, load):
    from clip.train import common

    reports = []
    directory, _ = common.resume_from_checkpoints(str(copy), load, reports.append)
    return directory, reports


@pytest.mark.parametrize(
    "content", [b"[]", b"{}", b'{"step": "2"}', b"\x00garbage"], ids=["list", "empty-object", "wrong-type", "bytes"]
)
def test_a_damaged_trainer_state_falls_back_to_the_previous_checkpoint(run, tmp_path, content):
    _, out, load = run
    copy = _damaged_copy(out, tmp_path, {"step-00000002/trainer_state.json": content})
    directory, reports = _resume(copy, load)
    assert directory.endswith("step-00000001")
    assert len(reports) == 1 and "step-00000002" in reports[0] and "trainer_state.json" in reports[0]
    assert "falling back to" in reports[0] and reports[0].rstrip().endswith("step-00000001")


def test_a_garbage_optimizer_file_falls_back_and_when_all_are_damaged_one_error_names_them(run, tmp_path):
    backend, out, load = run
    optimizer = BACKENDS[backend][1]
    copy = _damaged_copy(out, tmp_path, {f"step-00000002/{optimizer}": b"\x80\x04garbage, not a state" * 10})
    directory, reports = _resume(copy, load)
    assert directory.endswith("step-00000001") and optimizer in reports[0]

    (copy / "checkpoints" / "step-00000001" / optimizer).write_bytes(b"")
    from clip.train import common

    with pytest.raises(ValueError, match="no checkpoint in .* can be loaded") as error:
        common.resume_from_checkpoints(str(copy), load, lambda message: None)
    assert str(error.value).count(optimizer) == 2  # each checkpoint's damaged file, by name


def test_an_empty_latest_pointer_resumes_from_the_newest_checkpoint_and_says_so(run, tmp_path):
    _, out, load = run
    copy = _damaged_copy(out, tmp_path, {"latest": b""})
    directory, reports = _resume(copy, load)
    assert directory.endswith("step-00000002")
    assert reports == [f"clip train: {copy}/checkpoints/latest is empty; resuming from {directory}"]


def test_the_command_reports_the_fallback_and_continues(run, tmp_path, capsys):
    backend, out, _ = run
    if backend != "pt":
        pytest.skip("the command's path is the same for every backend; one run shows it")
    from clip.cli import main

    copy = _damaged_copy(out, tmp_path, {"step-00000002/trainer_state.json": b"[]"})
    assert (
        main(
            [
                "train",
                "--config",
                str(out.parent / "tiny.json"),
                "--synthetic",
                "40",
                "--val-fraction",
                "0.1",
                "--batch-size",
                "8",
                "--steps",
                "2",
                "--warmup-steps",
                "1",
                "--save-every",
                "1",
                "--out",
                str(copy),
                "--quiet",
                "--resume",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "step-00000002 is damaged" in err and "must hold a JSON object, found list" in err and "falling back" in err
    assert (
        json.loads((copy / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())["step"] == 2
    )  # redone
