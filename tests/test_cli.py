"""The `clip` command: zero-shot classification end to end, and its errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

IMAGES = os.path.join(os.path.dirname(__file__), "data", "images")
CAT = os.path.join(IMAGES, "chelsea.png")


def _clip(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "clip", *args], capture_output=True, text=True, env=env)


def test_zero_shot_defaults_to_the_embedded_model(tmp_path):
    # held-out images (a seed the training set never used), one per shape in five colours; the
    # embedded model must name colour and shape among all 30 colour x shape labels
    # (see clip/models/default/MODEL_CARD.md for its measured accuracy)
    from clip.data import zero_shot_set

    combos = [("red", "circle"), ("blue", "square"), ("yellow", "triangle"), ("orange", "star"), ("green", "cross")]
    images, all_labels, targets = zero_shot_set(5, seed=4242, image_size=48, combos=combos)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        image.save(paths[-1])
    # labels as they are: the model was trained on bare captions (the default prompt costs it ~50 points)
    proc = _clip(
        "zero-shot", *paths, "--labels", ",".join(all_labels), "--templates", "label", "--top-k", "1", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["labels"][0]["label"] for r in results] == [all_labels[t] for t in targets]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from clip.common.image_processor import CLIPImageProcessor
    from clip.common.processor import CLIPProcessor
    from clip.common.tokenizer import CLIPTokenizerFast

    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("tiny")
    reference = transformers.CLIPModel(config).eval()
    reference.save_pretrained(path)
    CLIPProcessor(
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), CLIPTokenizerFast()
    ).save_pretrained(path)
    return path, reference


def test_zero_shot_with_a_model_gives_transformers_probabilities(tiny_model_dir):
    import torch
    import transformers

    path, reference = tiny_model_dir
    labels = ["a photo of a cat", "a photo of a dog", "a rocket"]
    proc = _clip(
        "zero-shot",
        CAT,
        os.path.join(IMAGES, "rocket.jpg"),
        "--labels",
        ",".join(labels),
        "--model",
        str(path),
        "--templates",
        "label",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)

    processor = transformers.CLIPProcessor.from_pretrained(path)
    from PIL import Image

    images = [Image.open(CAT), Image.open(os.path.join(IMAGES, "rocket.jpg"))]
    with torch.no_grad():
        inputs = processor(text=labels, images=images, padding=True, return_tensors="pt")
        probs = reference(**inputs).logits_per_image.softmax(-1).numpy()
    for result, row in zip(results, probs):
        got = {item["label"]: item["probability"] for item in result["labels"]}
        np.testing.assert_allclose([got[label] for label in labels], row, atol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [(["--labels", " , "], "--labels is empty"), (["--labels", "a,b", "--model", "/no/such/dir"], "no such directory")],
)
def test_bad_input_is_one_clear_line(args, message):
    proc = _clip("zero-shot", CAT, *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreadable_image_is_one_clear_line(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    proc = _clip("zero-shot", str(bad), "--labels", "a,b")
    assert proc.returncode != 0
    assert "broken.png" in proc.stderr and "Traceback" not in proc.stderr


def test_default_prompt_gives_the_transformers_pipeline_probabilities(tiny_model_dir):
    # transformers' zero-shot-image-classification pipeline fills "This is a photo of {}." by
    # default; so does ours now (ZeroShotClassifier and `clip zero-shot`), with the same probabilities
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    from clip.tasks import ZeroShotClassifier, load_encoder

    path, _ = tiny_model_dir
    labels = ["cat", "dog", "rocket"]
    images = [CAT, os.path.join(IMAGES, "rocket.jpg")]
    encoder = load_encoder(path)
    ours = ZeroShotClassifier(encoder, labels).classify(images).probs
    pipe = transformers.pipeline("zero-shot-image-classification", model=str(path), framework="pt")
    for image, row in zip(images, ours):
        theirs = {item["label"]: item["score"] for item in pipe(Image.open(image), candidate_labels=labels)}
        np.testing.assert_allclose(row, [theirs[label] for label in labels], atol=1e-5)
    # the bare labels give other numbers, so the comparison above does see the prompt
    bare = ZeroShotClassifier(encoder, labels, templates="label").classify(images).probs
    assert np.abs(bare - ours).max() > 1e-4


TASK_COMMANDS = ["zero-shot", "embed", "search", "eval-retrieval", "similarity", "explain", "eval-zero-shot"]


def test_every_command_is_registered():
    proc = _clip("--help")
    assert proc.returncode == 0
    for command in [*TASK_COMMANDS, "train"]:
        assert command in proc.stdout


@pytest.mark.parametrize("command", TASK_COMMANDS)
def test_help_lists_every_option_with_an_example(command):
    import argparse

    from clip.cli import build_parser

    proc = _clip(command, "--help")
    assert proc.returncode == 0, proc.stderr
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in subparsers.choices[command]._actions:
        for flag in action.option_strings:
            assert flag in proc.stdout, flag
        if action.option_strings and action.help != argparse.SUPPRESS:
            assert action.help, f"{command} {action.option_strings} has no help text"
    assert "examples:" in proc.stdout and f"clip {command} " in proc.stdout.split("examples:")[1]
    for option in ("--model", "--backend", "--json"):
        assert option in proc.stdout


def test_compile_flag_reaches_the_encoder_and_is_refused_where_it_means_nothing(monkeypatch, capsys):
    import clip.cli as cli
    import clip.tasks.backends as backends

    seen = {}
    real = backends.load_encoder

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(backends, "load_encoder", spy)
    monkeypatch.setattr(cli, "load_encoder", spy, raising=False)
    # TensorFlow has no torch.compile: a clear one-line refusal, exit 2
    assert cli.main(["zero-shot", CAT, "--labels", "cat,dog", "--backend", "tf", "--compile"]) == 2
    assert seen.get("compile") is True
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "compile" in err[0]
