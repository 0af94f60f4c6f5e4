"""Issue 19: how `clip` ends on bad input (one line, exit 2, no traceback), on a bug (one line saying
so, exit 1), with --debug / CLIP_DEBUG=1 (the traceback), and on inputs that would give silent
wrong answers (a checkpoint without its weights, vectors that are not finite)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clip import cli
from clip.common import io, weights
from clip.common.config import CLIPConfig

IMAGES = os.path.join(os.path.dirname(__file__), "data", "images")
CAT = os.path.join(IMAGES, "chelsea.png")


def model_dir(path, change=None):
    """A tiny CLIPModel (the real tokenizer's vocabulary) with its processor files; `change(arrays)`
    edits the weights before they are written."""
    from clip.common.image_processor import CLIPImageProcessor
    from clip.common.processor import CLIPProcessor
    from clip.common.tokenizer import CLIPTokenizerFast

    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    config.save_pretrained(path)
    rng = np.random.default_rng(0)
    arrays = {
        n: rng.standard_normal(shape).astype(np.float32) * 0.05
        for n, (shape, _) in weights.expected_parameters(config, "CLIPModel").items()
    }
    arrays["logit_scale"] = np.array(2.6592, np.float32)
    if change is not None:
        arrays = change(arrays)
    io.write_safetensors(arrays, os.path.join(path, "model.safetensors"))
    CLIPProcessor(
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), CLIPTokenizerFast()
    ).save_pretrained(path)
    return str(path)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err):
    return err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------ weights the model needs


@pytest.mark.parametrize(
    "backend, held",
    [
        ("pt", {"foo": np.ones(3, np.float32)}),
        ("pt", {}),
        ("tf", {"foo": np.ones(3, np.float32)}),
        ("flax", {"foo": np.ones(3, np.float32)}),
    ],
)
def test_zero_shot_refuses_a_checkpoint_without_the_weights(tmp_path, capsys, backend, held):
    path = model_dir(tmp_path, change=lambda arrays: held)
    code, out, err = run(capsys, "zero-shot", CAT, "--labels", "cat,dog", "--model", path, "--backend", backend)
    assert code == 2 and out == ""
    assert one_line_error(err), err
    # 46 by hand: text 2 embeddings + 16 per layer + 2 final norm; vision class, patch and position
    # embeddings + 2 pre-norm + 16 + 2 post-norm; 2 projections and logit_scale
    assert f"clip zero-shot: {path} lacks 46 of the 46 weights the model needs" in err


def test_zero_shot_refuses_a_checkpoint_missing_one_weight(tmp_path, capsys):
    path = model_dir(
        tmp_path, change=lambda arrays: {n: a for n, a in arrays.items() if n != "visual_projection.weight"}
    )
    code, _, err = run(capsys, "zero-shot", CAT, "--labels", "cat,dog", "--model", path)
    assert code == 2 and one_line_error(err)
    assert (
        "lacks 1 of the 46 weights the model needs (they would be random, not trained): visual_projection.weight" in err
    )


def test_a_complete_checkpoint_still_classifies(tmp_path, capsys):
    code, out, err = run(capsys, "zero-shot", CAT, "--labels", "cat,dog", "--model", model_dir(tmp_path), "--json")
    assert code == 0, err
    assert '"label": "cat"' in out


# ------------------------------------------------------------------ vectors that are not finite


def test_float16_overflow_skips_the_image_naming_it(tmp_path, capsys):
    def huge_projection(arrays):
        arrays["visual_projection.weight"] = arrays["visual_projection.weight"] * 1e6  # past float16's 65504
        return arrays

    path = model_dir(tmp_path, change=huge_projection)
    code, out, err = run(capsys, "zero-shot", IMAGES, "--labels", "cat,dog", "--model", path, "--json")
    assert code == 0 and "not finite" not in err  # float32: finite
    code, out, err = run(
        capsys, "zero-shot", IMAGES, "--labels", "cat,dog", "--model", path, "--dtype", "float16", "--json"
    )
    assert code == 0 and out.strip() == "[]"
    assert (
        "chelsea.png: the model's vector is not finite (NaN or inf) in float16" in err and "try --dtype float32" in err
    )
    # a file named on the command line that gives no vector is an error, as an unreadable one is
    code, _, err = run(capsys, "zero-shot", CAT, "--labels", "cat,dog", "--model", path, "--dtype", "float16")
    assert code == 2 and one_line_error(err) and "chelsea.png: the model's vector is not finite" in err


def test_nan_text_vectors_are_an_error_naming_the_label(tmp_path, capsys):
    def nan_projection(arrays):
        arrays["text_projection.weight"][0, 0] = np.nan
        return arrays

    code, _, err = run(
        capsys,
        "zero-shot",
        CAT,
        "--labels",
        "cat,dog",
        "--templates",
        "label",
        "--model",
        model_dir(tmp_path, change=nan_projection),
    )
    assert code == 2 and one_line_error(err)
    assert (
        "the model's vectors for 2 text(s) are not finite (NaN or inf) in float32; the checkpoint's weights may be damaged: 'cat', 'dog'"
        in err
    )


# ------------------------------------------------------------------ bugs and --debug


def _bug(args):
    raise KeyError("chunks")


def test_a_bug_is_one_line_saying_so(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_run_zero_shot", _bug)
    monkeypatch.delenv("CLIP_DEBUG", raising=False)
    code, _, err = run(capsys, "zero-shot", CAT, "--labels", "a")
    assert code == 1 and one_line_error(err)
    assert err.startswith("clip zero-shot: internal error (KeyError: 'chunks'). This is a bug in clip;")
    assert "clip --debug zero-shot" in err and "CLIP_DEBUG=1" in err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(monkeypatch, how):
    original = cli._run_zero_shot
    monkeypatch.setattr(cli, "_run_zero_shot", _bug)
    argv = ["zero-shot", CAT, "--labels", "a"]
    if how == "flag":
        argv = ["--debug", *argv]
    else:
        monkeypatch.setenv("CLIP_DEBUG", "1")
    with pytest.raises(KeyError, match="chunks"):
        cli.main(argv)
    monkeypatch.setattr(cli, "_run_zero_shot", original)
    with pytest.raises(OSError, match="no such directory"):  # bad input too: the traceback, not the line
        cli.main([*argv[:-2], "--labels", "a", "--model", "/no/such/dir"])


def test_debug_in_a_real_process_prints_the_traceback(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", CLIP_DEBUG="1")
    proc = subprocess.run(
        [sys.executable, "-m", "clip", "zero-shot", CAT, "--labels", "a", "--model", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert (
        proc.returncode == 1
        and "Traceback (most recent call last)" in proc.stderr
        and "no such directory" in proc.stderr
    )


def test_a_subcommands_own_exit_message_is_bad_input(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--synthetic", "0", "--out", str(tmp_path / "run"))
    assert code == 2 and one_line_error(err) and "clip train: --synthetic needs a positive number" in err


# ------------------------------------------------------------------ text that is not UTF-8


def test_non_utf8_bytes_in_argv_are_a_clear_error():
    env = dict(os.environ, HF_HUB_OFFLINE="1", LC_ALL="C.UTF-8")
    proc = subprocess.run(
        [sys.executable, "-m", "clip", "zero-shot", CAT, "--labels", b"caf\xe9,dog"],
        capture_output=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert err == (
        "clip zero-shot: --labels is not valid UTF-8 text (byte 0xe9 at character 4); pass it in UTF-8 "
        "(check the terminal's or the script's encoding)\n"
    )


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["zero-shot", CAT, "--labels", "a,\udcff"], "--labels"),
        (["similarity", CAT, "--texts", "ok", "b\udcfe", "--out", "x.png"], "--texts"),
        (["search", "emb", "--text", "\udc80"], "--text"),
        (["zero-shot", CAT, "--labels", "a", "--templates", "a {} \udcff"], "--templates"),
    ],
)
def test_every_text_argument_is_checked(capsys, argv, flag):
    code, _, err = run(capsys, *argv)
    assert code == 2 and one_line_error(err) and f": {flag} is not valid UTF-8 text (byte 0x" in err


@pytest.mark.parametrize("command", ["similarity", "embed", "templates", "captions.csv", "captions.jsonl"])
def test_text_files_that_are_not_utf8_name_file_and_line(tmp_path, capsys, command):
    bad = tmp_path / ("texts.txt" if "." not in command else command)
    lines = {
        "captions.csv": (b"image,caption\n", f"{CAT},a cat \u00e9\n".encode(), f"{CAT},a \xff cat\n".encode("latin-1")),
        "captions.jsonl": (
            b"\n",
            json.dumps({"image": CAT, "caption": "a cat \u00e9"}).encode() + b"\n",
            b'{"image": "x.png", "caption": "a \xff cat"}\n',
        ),
    }
    bad.write_bytes(
        b"".join(lines.get(command, ("first line\n".encode(), "second \u00e9\n".encode(), b"third \xff\n")))
    )
    argv = {
        "similarity": ["similarity", CAT, "--texts-file", str(bad), "--out", str(tmp_path / "m.png")],
        "embed": ["embed", str(bad), "--out", str(tmp_path / "emb")],
        "templates": ["zero-shot", CAT, "--labels", "a", "--templates", str(bad)],
    }.get(command, ["eval-retrieval", str(bad)])
    code, _, err = run(capsys, *argv)
    assert code == 2 and one_line_error(err), err
    assert f"{bad}:3: not valid UTF-8 text (byte 0xff); save the file as UTF-8" in err
