"""Gradient accumulation grows the contrastive batch (GradCache) in every backend: k micro-batches of m
pairs give the loss and the gradients of one batch of k x m pairs, in one process and over 2 processes
(pt: DDP over gloo) or replicas/devices (tf: MirroredStrategy over 2 logical CPUs; flax: a mesh of 4
host devices). The reference is each backend's own plain step on the whole batch at once."""

import json
import os
import socket

import numpy as np
import pytest

from train_backends_helpers import GLOBAL_BATCH, config, initial_weights, random_batch, run_script

LOSS_TOL = 1e-6
GRAD_TOL = 1e-5  # relative to each tensor's largest gradient (the embeddings' reach ~20 on these random weights)


def assert_same_gradients(reference: dict, accumulated: dict):
    assert reference.keys() == accumulated.keys()
    for name, ref in reference.items():
        ref, acc = np.asarray(ref, np.float64), np.asarray(accumulated[name], np.float64)
        assert ref.shape == acc.shape, name
        assert np.abs(ref - acc).max() <= GRAD_TOL * max(1.0, np.abs(ref).max()), (name, np.abs(ref - acc).max())
    assert sum(float(np.abs(g).max()) > 1e-6 for g in reference.values()) > 10  # real gradients, not zeros


def micro_batches(batch: dict, k: int) -> list[dict]:
    m = len(batch["input_ids"]) // k
    return [{key: value[i * m : (i + 1) * m] for key, value in batch.items()} for i in range(k)]


# -- PyTorch ----------------------------------------------------------------------------------------------
def _pt_model():
    import torch

    from clip.pt import CLIPModel

    model = CLIPModel(config())
    weights = initial_weights()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(torch.from_numpy(weights[name]))
    return model


def _pt_tensors(batch):
    import torch

    return {k: torch.from_numpy(v).long() if k != "pixel_values" else torch.from_numpy(v) for k, v in batch.items()}


def pt_gradients(k: int, rank: int = 0, world: int = 1, batch=None, local=True):
    """(loss, {name: gradient}) of one step over k micro-batches (this rank's slice of each)."""
    import torch

    from clip.train import pt_step

    model = _pt_model()
    objective = pt_step.ContrastiveObjective(model, rank, world, local)
    if world > 1:
        objective = torch.nn.parallel.DistributedDataParallel(objective)
    parts = []
    for micro in micro_batches(batch or random_batch(), k):
        rows = len(micro["input_ids"]) // world
        parts.append(_pt_tensors({key: v[rank * rows : (rank + 1) * rows] for key, v in micro.items()}))
    loss = pt_step.backward_step(objective, parts)
    return float(loss), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def test_pt_micro_batches_give_the_whole_batch_loss_and_gradients():
    pytest.importorskip("torch")
    loss, grads = pt_gradients(1)
    acc_loss, acc_grads = pt_gradients(4)
    assert abs(loss - acc_loss) <= LOSS_TOL
    assert_same_gradients(grads, acc_grads)


def _ddp_worker(rank, world, port, out_path, local):
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    loss, grads = pt_gradients(2, rank, world, local=local)
    mean = torch.tensor(loss)
    dist.all_reduce(mean)
    if rank == 0:
        np.savez(out_path, loss=mean.item() / world, **grads)
    dist.barrier()  # every rank reaches teardown together
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("local", [True, False], ids=["local-loss", "global-loss"])
def test_pt_two_processes_accumulating_equal_one_whole_batch(tmp_path, local):
    """2 gloo ranks x 2 micro-batches of 2 pairs each = one batch of 8; with --local-loss (each rank's rows
    against all columns) and without (each rank the whole matrix): the same loss and DDP-averaged gradients."""
    torch = pytest.importorskip("torch")
    import torch.multiprocessing as mp

    out = tmp_path / "ddp.npz"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(out), local), nprocs=2, join=True)
    saved = np.load(out)
    loss, grads = pt_gradients(1)
    assert abs(float(saved["loss"]) - loss) <= LOSS_TOL * 2  # a mean of two float32 losses
    assert_same_gradients(grads, {n: saved[n] for n in grads})
    assert torch is not None


# -- TensorFlow -------------------------------------------------------------------------------------------
TF_GRADIENTS = """
def tf_gradients(k, strategy=None, local=True):
    import tensorflow as tf
    from clip.tf import TFCLIPModel, loading
    from clip.train import tf as trainer
    from train_backends_helpers import config, initial_weights, random_batch
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = TFCLIPModel(config())
        loading.assign_canonical(model, initial_weights())
    canonical = model.canonical_variables()
    variables = [v for v, _ in canonical.values()]
    batch = random_batch()
    stacked = {key: tf.constant(v.reshape(k, len(v) // k, *v.shape[1:])) for key, v in batch.items()}
    loss, grads = trainer.make_gradient_fn(strategy, model, variables, local)(trainer.distribute(strategy, stacked))
    return float(loss), {name: g.numpy() for name, g in zip(canonical, grads)}
"""


def test_tf_micro_batches_give_the_whole_batch_loss_and_gradients():
    pytest.importorskip("tensorflow")
    namespace = {}
    exec(TF_GRADIENTS, namespace)  # noqa: S102 - the same function the 2-replica subprocess runs
    loss, grads = namespace["tf_gradients"](1)
    acc_loss, acc_grads = namespace["tf_gradients"](4)
    assert abs(loss - acc_loss) <= LOSS_TOL
    assert_same_gradients(grads, acc_grads)


@pytest.mark.slow  # a fresh TensorFlow with 2 logical CPUs: ~30 s of start-up and tracing
def test_tf_two_replicas_accumulating_equal_one_whole_batch(tmp_path):
    pytest.importorskip("tensorflow")
    code = (
        TF_GRADIENTS
        + """
import json, numpy as np
from train_backends_helpers import use_logical_cpus
use_logical_cpus(2)
from clip.train import tf as trainer
strategy, _, _ = trainer.make_strategy()
assert strategy.num_replicas_in_sync == 2, strategy
loss, grads = tf_gradients(2, strategy)
global_loss, global_grads = tf_gradients(2, strategy, local=False)
np.savez(OUT, **grads)
np.savez(OUT.replace(".npz", "-global.npz"), **global_grads)
print(json.dumps({"loss": loss, "global_loss": global_loss}))
""".replace("OUT", repr(str(tmp_path / "tf.npz")))
    )
    result = run_script(code, {"TF_CPP_MIN_LOG_LEVEL": "2"})
    namespace = {}
    exec(TF_GRADIENTS, namespace)  # noqa: S102
    loss, grads = namespace["tf_gradients"](1)
    for name, key in (("tf.npz", "loss"), ("tf-global.npz", "global_loss")):
        assert abs(result[key] - loss) <= LOSS_TOL * 2
        saved = np.load(tmp_path / name)
        assert_same_gradients(grads, {n: saved[n] for n in grads})


# -- JAX ------------------------------------------------------------------------------------------------
FLAX_GRADIENTS = """
def flax_gradients(k, sharded=False):
    import jax
    import numpy as np
    from clip.flax import FlaxCLIPModel, loading
    from clip.train import flax as trainer
    from train_backends_helpers import config, initial_weights, random_batch
    model = FlaxCLIPModel(config(), _do_init=False)
    expected = loading.expected_parameters(model)
    params = loading.to_params(initial_weights(), expected)
    batch = random_batch()
    stacked = {key: v.reshape(k, len(v) // k, *v.shape[1:]) for key, v in batch.items()}
    if sharded:
        place = trainer.Placement(len(batch["input_ids"]) // k)
        params, stacked = place.params(params), place.batches(stacked)
        assert len(stacked["pixel_values"].sharding.device_set) == len(jax.devices()) > 1
    fn = jax.jit(lambda p, b: trainer.step_gradients(model, p, b, 0, jax.random.PRNGKey(0), False))
    loss, grads = fn(params, stacked)
    return float(loss), {n: np.asarray(g) for n, g in loading.from_params(trainer.to_host(grads), expected).items()}
"""


def test_flax_micro_batches_give_the_whole_batch_loss_and_gradients():
    pytest.importorskip("jax")
    namespace = {}
    exec(FLAX_GRADIENTS, namespace)  # noqa: S102 - the same function the 4-device subprocess runs
    loss, grads = namespace["flax_gradients"](1)
    acc_loss, acc_grads = namespace["flax_gradients"](4)
    assert abs(loss - acc_loss) <= LOSS_TOL
    assert_same_gradients(grads, acc_grads)


@pytest.mark.slow  # a fresh JAX with 4 host devices
def test_flax_mesh_of_four_devices_accumulating_equals_one_whole_batch(tmp_path):
    pytest.importorskip("jax")
    code = (
        FLAX_GRADIENTS
        + """
import json, numpy as np
loss, grads = flax_gradients(2, sharded=True)
np.savez(OUT, **grads)
print(json.dumps({"loss": loss}))
""".replace("OUT", repr(str(tmp_path / "flax.npz")))
    )
    result = run_script(code, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"})
    namespace = {}
    exec(FLAX_GRADIENTS, namespace)  # noqa: S102
    loss, grads = namespace["flax_gradients"](1)
    assert abs(result["loss"] - loss) <= LOSS_TOL
    saved = np.load(tmp_path / "flax.npz")
    assert_same_gradients(grads, {n: saved[n] for n in grads})


def test_the_run_records_whole_batch_accumulation_and_refuses_older_accumulating_checkpoints():
    from types import SimpleNamespace

    from clip.train import common

    args = SimpleNamespace(
        batch_size=8, accum_steps=2, lr=1e-3, weight_decay=0.1, grad_clip=1.0, precision="fp32", seed=0
    )
    settings = common.run_settings(args, 4, 1, 96, 1)
    assert settings["accumulation"] == "whole-batch"
    older = {k: v for k, v in settings.items() if k != "accumulation"}  # an earlier version's run: micro-batches apart
    with pytest.raises(ValueError, match="accumulation: None -> 'whole-batch'"):
        common.check_resume_compatible(older, settings)
    assert "accumulation" not in common.run_settings(SimpleNamespace(**{**vars(args), "accum_steps": 1}), 4, 1, 96, 1)
    assert json.dumps(settings)  # stored in trainer_state.json
    assert GLOBAL_BATCH == 8
