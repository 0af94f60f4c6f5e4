"""Shared pieces of the tf / flax / cross-backend trainer tests: a tiny config with a small vocabulary,
one random batch, initial canonical weights, one SGD step per backend (through each trainer's own
step), and a runner for scripts that must set environment variables before a framework starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from train_helpers import TINY_CONFIG

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# A smaller vocabulary for the pure-tensor tests (random token ids, no tokenizer involved).
TENSOR_CONFIG = {
    **TINY_CONFIG,
    "text_config": {**TINY_CONFIG["text_config"], "vocab_size": 500, "bos_token_id": 498, "eos_token_id": 499},
}
GLOBAL_BATCH = 8
SGD_LR = 0.1  # updates of up to ~2 on the embeddings: float32 differences stay far below 1e-5


def config():
    from clip.common.config import CLIPConfig

    return CLIPConfig.from_dict(TENSOR_CONFIG)


def random_batch(n=GLOBAL_BATCH, length=10, seed=1) -> dict:
    """{"input_ids", "attention_mask" (int32), "pixel_values" (float32 NCHW)}: eos ends each caption."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 498, (n, length)).astype(np.int32)
    lengths = rng.integers(3, length, n)
    ids[np.arange(n), lengths] = 499
    mask = (np.arange(length)[None, :] <= lengths[:, None]).astype(np.int32)
    pixels = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def initial_weights(seed=0) -> dict:
    """{canonical name: float32 array} drawn by the parameter table's init rules with numpy (no framework)."""
    from clip.common import params

    cfg = config()
    rng = np.random.default_rng(seed)
    out = {}
    for name, row in params.parameter_table(cfg, "CLIPModel").items():
        shape, spec = row.shape, row.init
        if spec[0] == "normal":
            out[name] = (rng.standard_normal(shape) * spec[1]).astype(np.float32)
        else:
            out[name] = np.full(shape, {"zeros": 0.0, "ones": 1.0}.get(spec[0], spec[-1]), np.float32)
    return out


# -- one SGD step per backend: (loss, {canonical name: updated array}) ----------------------------------
def pt_sgd_step(initial, batch, lr=SGD_LR):
    import torch

    from clip.pt import CLIPModel
    from clip.train import pt

    model = CLIPModel(config())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(torch.from_numpy(initial[name]))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss = pt.ContrastiveObjective(model)(
        *(
            torch.from_numpy(batch[k]).long() if k != "pixel_values" else torch.from_numpy(batch[k])
            for k in ("input_ids", "attention_mask", "pixel_values")
        )
    )
    loss.backward()
    optimizer.step()
    pt.clamp_logit_scale(model)
    return float(loss.detach()), {n: t.detach().numpy().copy() for n, t in model.state_dict().items()}


def flax_sgd_step(initial, batch, lr=SGD_LR, sharded=False):
    """Through clip.train.flax.make_train_step with optax.sgd; `sharded`: the batch over every device."""
    import jax
    import optax

    from clip.flax import FlaxCLIPModel
    from clip.flax import loading
    from clip.train import flax as trainer

    model = FlaxCLIPModel(config(), _do_init=False)
    expected = loading.expected_parameters(model)
    params = loading.to_params({n: np.array(a) for n, a in initial.items()}, expected)
    tx = optax.sgd(lr)
    step = trainer.make_train_step(model, tx, seed=0, dropout=False)
    stacked = {k: v[None] for k, v in batch.items()}  # one micro-step
    if sharded:
        place = trainer.Placement(len(batch["input_ids"]))
        params, state, inputs = place.params(params), place.params(tx.init(params)), place.batches(stacked)
        assert len(inputs["pixel_values"].sharding.device_set) == len(jax.devices())
    else:
        device = jax.devices()[0]
        params, inputs = jax.device_put(params, device), jax.device_put(stacked, device)
        state = tx.init(params)
    params, _, loss = step(params, state, inputs, 0)
    return float(loss), {n: np.asarray(a) for n, a in loading.from_params(trainer.to_host(params), expected).items()}


def tf_sgd_step(initial, batch, lr=SGD_LR, strategy=None):
    """Through clip.train.tf.make_train_step with keras SGD, under `strategy` (default: none)."""
    import keras
    import tensorflow as tf

    from clip.tf import TFCLIPModel, loading
    from clip.train import tf as trainer

    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = TFCLIPModel(config())
        loading.assign_canonical(model, initial)
        optimizer = keras.optimizers.SGD(learning_rate=lr)
        variables = [v for v, _ in model.canonical_variables().values()]
        optimizer.build(variables)
    step = trainer.make_train_step(strategy, model, optimizer, variables)
    loss = step(trainer.distribute(strategy, {k: tf.constant(v[None]) for k, v in batch.items()}))
    return float(loss), loading.canonical_state(model)


def max_differences(a: dict, b: dict) -> dict:
    assert a.keys() == b.keys()
    return {n: float(np.abs(np.asarray(a[n], np.float64) - np.asarray(b[n], np.float64)).max()) for n in a}


# -- scripts in a fresh interpreter -------------------------------------------------------------------
def run_script(code: str, env: dict, timeout=240) -> dict:
    """Run `code` in a new Python with `env` added; it prints one JSON line last, returned parsed."""
    full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_tiny(tmp_path, out, backend, *extra, stop_after=None):
    """`clip train` of TINY_CONFIG on 96 synthetic pairs: 4 steps of 2 micro-batches, a checkpoint every 2;
    stop_after=N: the same run interrupted after step N (clip.train.fit with a callback that stops it)."""
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY_CONFIG))
    args = [
        "train",
        "--backend",
        backend,
        "--config",
        str(cfg),
        "--synthetic",
        "96",
        "--val-fraction",
        "0.25",
        "--batch-size",
        "8",
        "--accum-steps",
        "2",
        "--steps",
        "4",
        "--warmup-steps",
        "2",
        "--lr",
        "1e-3",
        "--save-every",
        "2",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]
    run_cli(args, stop_after=stop_after)


def stop_at(step: int):
    """A clip.train.fit callback that interrupts the run after optimizer step `step` (its checkpoint written)."""
    return lambda info: info.step >= step


def run_cli(args: list, stop_after=None, expect: int = 0):
    """`clip ARGS` (clip.cli.main); with stop_after=N a `clip train` ARGS run through clip.train.fit with the
    options the command would build, interrupted after step N as a kill after that step's checkpoint would."""
    from clip.cli import build_parser, main

    if stop_after is None:
        assert main(args) == expect
        return
    from clip.train import fit
    from clip.train.cli import options_from_args

    assert fit(options_from_args(build_parser().parse_args(args)), callbacks=[stop_at(stop_after)]) == {}


def use_logical_cpus(count: int):
    """Split the CPU into `count` logical TensorFlow devices (a MirroredStrategy to test with); call it
    before TensorFlow initializes its devices."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    if tf.config.get_logical_device_configuration(cpu) is None:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def assert_resume_is_exact(tmp_path, backend, optimizer_file):
    """A run stopped after step 2 and resumed equals an uninterrupted one bit for bit at step 4:
    weights, optimizer state and the loss history. Leaves both runs in tmp_path/full and /split."""
    from clip.common.io import read_safetensors
    from clip.train import common

    train_tiny(tmp_path, tmp_path / "full", backend)
    train_tiny(tmp_path, tmp_path / "split", backend, stop_after=2)
    assert not os.path.exists(tmp_path / "split" / "model.safetensors")
    train_tiny(tmp_path, tmp_path / "split", backend, "--resume", "--workers", "2")
    step = os.path.join("checkpoints", "step-00000004")
    for name in ("model.safetensors", optimizer_file):
        full, split = (
            {k: np.array(v) for k, v in read_safetensors(tmp_path / d / step / name).items()} for d in ("full", "split")
        )
        assert full.keys() == split.keys()
        for key in full:
            assert full[key].shape == split[key].shape and np.array_equal(full[key], split[key]), (name, key)
    states = [common.read_trainer_state(tmp_path / d / step) for d in ("full", "split")]
    assert states[0]["history"] == states[1]["history"]
