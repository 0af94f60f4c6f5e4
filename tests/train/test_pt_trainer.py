"""The PyTorch trainer: loss goes down, distributed equals single-process, resume is bitwise,
the output loads with ours and transformers', and the CLI's errors are clear."""

import os
import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from clip.common.config import CLIPConfig  # noqa: E402
from clip.pt import CLIPModel  # noqa: E402
from clip.train import pt  # noqa: E402

from train_helpers import TINY_CONFIG  # noqa: E402

# A smaller vocabulary for the pure-tensor tests (random token ids, no tokenizer involved).
TENSOR_CONFIG = {
    **TINY_CONFIG,
    "text_config": {**TINY_CONFIG["text_config"], "vocab_size": 500, "bos_token_id": 498, "eos_token_id": 499},
}
GLOBAL_BATCH = 8


def _model(seed=0):
    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig.from_dict(TENSOR_CONFIG))


def _batch(n=GLOBAL_BATCH, length=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 498, (n, length), generator=g)
    lengths = torch.randint(3, length, (n,), generator=g)
    ids[torch.arange(n), lengths] = 499  # eos ends each caption; padding after it
    mask = (torch.arange(length)[None, :] <= lengths[:, None]).long()
    pixels = torch.randn(n, 3, 32, 32, generator=g)
    return ids, mask, pixels


def test_local_loss_single_process_is_clip_loss():
    model = _model()
    ids, mask, pixels = _batch()
    with torch.no_grad():
        ours = pt.ContrastiveObjective(model)(ids, mask, pixels)
        reference = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch():
    model = _model()
    ids, mask, pixels = _batch()
    objective = pt.ContrastiveObjective(model)
    optimizer = pt.build_optimizer(model, lr=2e-3, weight_decay=0.1)
    losses = []
    for _ in range(8):
        loss = objective(ids, mask, pixels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        pt.clamp_logit_scale(model)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2, losses


def test_optimizer_groups_follow_the_decay_rule():
    model = _model()
    optimizer = pt.build_optimizer(model, lr=1e-3, weight_decay=0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in optimizer.param_groups[0]["params"]}
    no_decay = {names[id(p)] for p in optimizer.param_groups[1]["params"]}
    assert optimizer.param_groups[0]["weight_decay"] == 0.2 and optimizer.param_groups[1]["weight_decay"] == 0.0
    assert "logit_scale" in no_decay and "text_model.embeddings.token_embedding.weight" in no_decay
    assert "visual_projection.weight" in decay and "vision_model.embeddings.patch_embedding.weight" in decay
    assert len(decay) + len(no_decay) == len(list(model.parameters()))


def test_logit_scale_clamp():
    model = _model()
    with torch.no_grad():
        model.logit_scale.fill_(9.0)
    pt.clamp_logit_scale(model)
    assert model.logit_scale.item() == pytest.approx(np.log(100.0))


# -- distributed: 2 gloo processes vs one process on the same global batch ----------------------------
def _ddp_worker(rank, world, port, out_path):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = _model()
    ids, mask, pixels = _batch()
    part = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    objective = torch.nn.parallel.DistributedDataParallel(pt.ContrastiveObjective(model, rank, world))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = objective(ids[part], mask[part], pixels[part])
    loss.backward()
    optimizer.step()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    mean_loss /= world
    if rank == 0:
        torch.save(
            {"loss": mean_loss, "params": {n: p.detach().clone() for n, p in model.named_parameters()}}, out_path
        )
    # every rank reaches teardown together: a rank that leaves early aborts gloo on its peer
    dist.barrier()
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_loss_and_update_equal_single_process(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    result = torch.load(out, weights_only=False)

    model = _model()
    ids, mask, pixels = _batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = pt.ContrastiveObjective(model)(ids, mask, pixels)
    loss.backward()
    optimizer.step()
    torch.testing.assert_close(result["loss"], loss.detach(), rtol=0, atol=1e-5)
    moved = 0
    for name, p in model.named_parameters():
        torch.testing.assert_close(result["params"][name], p.detach(), rtol=0, atol=1e-5, msg=name)
        moved += int(not torch.equal(p.detach(), before[name]))
    assert moved > 10  # the step changed the parameters (so equal updates are a real check)


# -- the command -------------------------------------------------------------------------------------
def _train(tmp_path, out, *extra, expect=0, data=("--synthetic", "96"), stop_after=None):
    import json

    from train_backends_helpers import run_cli

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    args = [
        "train",
        "--config",
        str(config),
        *data,
        "--val-fraction",
        "0.25",
        "--batch-size",
        "16",
        "--steps",
        "6",
        "--warmup-steps",
        "2",
        "--lr",
        "1e-3",
        "--save-every",
        "3",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]
    run_cli(args, stop_after=stop_after, expect=expect)


def _tensors(path):
    from clip.common.io import read_safetensors

    return {k: np.array(v) for k, v in read_safetensors(path).items()}


def test_resume_reproduces_an_uninterrupted_run_bitwise(tmp_path):
    _train(tmp_path, tmp_path / "full")
    _train(tmp_path, tmp_path / "split", stop_after=3)
    assert not os.path.exists(tmp_path / "split" / "model.safetensors")  # interrupted: no final model
    _train(tmp_path, tmp_path / "split", "--resume", "--workers", "1")  # worker count does not change the data
    full = _tensors(tmp_path / "full" / "checkpoints" / "step-00000006" / "model.safetensors")
    split = _tensors(tmp_path / "split" / "checkpoints" / "step-00000006" / "model.safetensors")
    assert full.keys() == split.keys()
    for name in full:
        assert np.array_equal(full[name], split[name]), name
    opt_full = torch.load(tmp_path / "full" / "checkpoints" / "step-00000006" / "optimizer.pt", weights_only=True)
    opt_split = torch.load(tmp_path / "split" / "checkpoints" / "step-00000006" / "optimizer.pt", weights_only=True)
    for key, state in opt_full["state"].items():
        for field, value in state.items():
            assert torch.equal(value, opt_split["state"][key][field]), (key, field)
    first = _tensors(tmp_path / "full" / "model.safetensors")
    assert all(np.array_equal(first[n], full[n]) for n in full)
    # the model directory loads with ours and with transformers
    import transformers

    from clip.common.processor import CLIPProcessor

    ours = CLIPModel.from_pretrained(tmp_path / "full")
    theirs = transformers.CLIPModel.from_pretrained(tmp_path / "full")
    processor = CLIPProcessor.from_pretrained(tmp_path / "full")
    their_processor = transformers.CLIPProcessor.from_pretrained(tmp_path / "full")
    assert processor.tokenizer.model_max_length == their_processor.tokenizer.model_max_length == 16
    inputs = their_processor(
        text=["a red circle", "a small blue square left of a large green cross"],
        images=[np.zeros((40, 40, 3), np.uint8)] * 2,
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        torch.testing.assert_close(
            ours(**inputs).logits_per_image, theirs(**inputs).logits_per_image, rtol=1e-5, atol=1e-5
        )
    metrics = __import__("json").loads((tmp_path / "full" / "metrics.json").read_text())
    assert {"image_to_text_R@1", "text_to_image_R@10", "zero_shot_held_out_combos"} <= metrics.keys()


def test_resume_refuses_changed_settings(tmp_path, capsys):
    _train(tmp_path, tmp_path / "run", stop_after=3)
    _train(tmp_path, tmp_path / "run", "--resume", "--lr", "5e-4", expect=2)
    assert "lr: 0.001 -> 0.0005" in capsys.readouterr().err


def test_a_fresh_run_never_replaces_an_earlier_one_unasked(tmp_path, capsys):
    out = tmp_path / "run"
    _train(tmp_path, out, "--steps", "3")
    trained = (out / "model.safetensors").read_bytes()
    _train(tmp_path, out, "--steps", "3", "--seed", "1", expect=2)
    assert "holds an earlier run (checkpoints, model.safetensors)" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == trained  # the trained model is still there
    _train(tmp_path, out, "--resume", "--overwrite", expect=2)
    _train(tmp_path, out, "--steps", "3", "--seed", "1", "--overwrite")
    assert (out / "model.safetensors").read_bytes() != trained
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step-00000003"]  # only the new run's


def test_training_on_a_csv_with_bad_rows_reports_and_continues(tmp_path):
    from PIL import Image

    from clip.data import SyntheticShapes

    shapes = SyntheticShapes(28, seed=0, image_size=32)
    lines = ["image,caption"]
    for i in range(28):  # 21 for training (one batch of 16 per epoch), 7 held out
        image, caption = shapes[i]
        image.save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{caption}")
    lines += ["gone.png,a missing image", "0.png,"]
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    Image.new("RGB", (4, 4)).save(tmp_path / "unused.png")
    with pytest.warns(UserWarning, match="skipped 2 unusable"):
        _train(tmp_path, tmp_path / "csv", data=("--train", str(tmp_path / "pairs.csv")))


def test_unknown_backend_is_refused_clearly(tmp_path, capsys):
    from clip.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--backend", "mxnet", "--synthetic", "10", "--out", str(tmp_path)])
    assert "invalid choice: 'mxnet'" in capsys.readouterr().err


class _Payload:
    """Unpickling this runs `touch MARKER`: what a poisoned file in a shared run directory would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_never_runs_code_from_any_file_of_a_checkpoint(tmp_path):
    import pickle
    import shutil

    from clip.cli import main

    stopped = tmp_path / "stopped"
    _train(tmp_path, stopped, stop_after=3)
    names = sorted(p.name for p in (stopped / "checkpoints" / "step-00000003").iterdir())
    assert "rng.safetensors" in names and "rng.pt" not in names  # no pickle is written
    marker = tmp_path / "PWNED"
    # every file of the checkpoint in turn, and an older run's rng.pt, replaced by a pickle payload
    for name in [*names, "rng.pt"]:
        run = tmp_path / f"poisoned-{name}"
        shutil.copytree(stopped, run)
        step = run / "checkpoints" / "step-00000003"
        if name == "rng.pt":
            (step / "rng.safetensors").unlink()
        with open(step / name, "wb") as f:
            pickle.dump({"torch": _Payload(marker), "state": {}, "param_groups": []}, f)
        _train(tmp_path, run, "--resume", expect=2)  # refused with a message, not a traceback
        assert not marker.exists(), f"a pickle in {name} ran code on resume"
