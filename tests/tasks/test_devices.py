"""load_encoder's device: where each backend runs, the same vectors on the CPU, a clear error for a
GPU the framework does not see (never a silent CPU run)."""

import importlib.util

import numpy as np
import pytest

from clip.tasks import load_encoder
from clip.tasks.backends import TaskError, parse_device
from task_helpers import PHOTOS, run_clip


def _gpus(backend) -> int:
    if backend == "pt":
        import torch

        return torch.cuda.device_count()
    if backend == "tf":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    import jax

    try:
        return len(jax.devices("gpu"))
    except RuntimeError:
        return 0


BACKENDS = ["pt"] + [
    pytest.param(b, marks=pytest.mark.skipif(importlib.util.find_spec(m) is None, reason=f"{m} not installed"))
    for b, m in (("tf", "tensorflow"), ("flax", "flax"))
]


@pytest.mark.parametrize(
    "text, expected",
    [("auto", None), ("cpu", ("cpu", 0)), ("CUDA", ("gpu", 0)), ("cuda:1", ("gpu", 1)), ("gpu:0", ("gpu", 0))],
)
def test_device_names(text, expected):
    assert parse_device(text) == expected


@pytest.mark.parametrize("text", ["tpu", "cuda:x", "cpu:1", "", "cuda:-1"])
def test_unknown_device_names_itself(text):
    with pytest.raises(TaskError, match="unknown device"):
        parse_device(text)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cpu_device_gives_the_same_vectors(backend, encoder):
    on_cpu = load_encoder(None, backend, device="cpu")
    assert "cpu" in on_cpu.device.lower()
    texts = ["a red circle", "a blue square"]
    np.testing.assert_allclose(on_cpu.embed_texts(texts), encoder.embed_texts(texts), atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_gpu_the_framework_does_not_see_is_an_error(backend):
    seen = _gpus(backend)
    with pytest.raises(TaskError, match=f"device cuda:{seen} asked for, but .* sees {seen} GPU"):
        load_encoder(None, backend, device=f"cuda:{seen}")


def test_auto_takes_a_gpu_only_when_there_is_one():
    import torch

    assert load_encoder(None, "pt").device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_command_line_device_errors_are_one_line():
    proc = run_clip("zero-shot", PHOTOS, "--labels", "a,b", "--device", "tpu", check=False)
    assert proc.returncode == 2 and "unknown device 'tpu'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    ok = run_clip("zero-shot", PHOTOS, "--labels", "a,b", "--device", "cpu", "--json")
    assert ok.returncode == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_vectors_are_float32_near_float32s_and_keep_the_fingerprint(backend, encoder):
    narrow = load_encoder(None, backend, dtype="bfloat16", device="cpu")
    texts = ["a red circle", "a blue square", "a green star"]
    vectors = narrow.embed_texts(texts)
    assert vectors.dtype == np.float32 and narrow.dtype == "bfloat16"
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # bfloat16 keeps 8 mantissa bits: each component within a few 2^-8 of float32's
    np.testing.assert_allclose(vectors, encoder.embed_texts(texts), atol=0.03)
    assert narrow.fingerprint == encoder.fingerprint  # the same checkpoint, whatever it computes in
    assert narrow.logit_scale == pytest.approx(encoder.logit_scale, abs=1e-6)  # kept in float32


def test_unknown_dtype_and_a_resume_in_another_dtype_are_refused(tmp_path, shapes_dir):
    with pytest.raises(TaskError, match="unknown dtype 'float8'"):
        load_encoder(None, "pt", dtype="float8")
    out = tmp_path / "e.emb"
    run_clip("embed", shapes_dir, "--out", out, "--json")
    proc = run_clip("embed", shapes_dir, "--out", out, "--dtype", "bfloat16", check=False)
    assert proc.returncode == 2 and "compute_dtype" in proc.stderr and "--overwrite" in proc.stderr
