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


BACKENDS = ["pt"] + [pytest.param(b, marks=pytest.mark.skipif(importlib.util.find_spec(m) is None, reason=f"{m} not installed"))
                      for b, m in (("tf", "tensorflow"), ("flax", "flax"))]


@pytest.mark.parametrize("text, expected", [
    ("auto", None), ("cpu", ("cpu", 0)), ("CUDA", ("gpu", 0)), ("cuda:1", ("gpu", 1)), ("gpu:0", ("gpu", 0)),
])
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
