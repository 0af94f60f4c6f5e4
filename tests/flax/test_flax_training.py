"""An optax step under jax.jit with parameters sharded over a 4-device mesh equals the unsharded step.

Runs in a subprocess: the 4 host devices (XLA_FLAGS) must be set before jax is first imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("optax")

SCRIPT = textwrap.dedent(
    r"""
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from clip.common.config import CLIPConfig
    from clip.flax import FlaxCLIPModel

    assert len(jax.devices()) == 4, jax.devices()
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=8, eos_token_id=63, attention_dropout=0.1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=16, patch_size=8, attention_dropout=0.1),
        projection_dim=16,
    )
    model = FlaxCLIPModel(config, seed=0)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 63, (4, 8)); ids[:, -1] = 63; ids[1, 5:] = 0; ids[1, 4] = 63
    mask = (np.arange(8)[None] < np.array([[8], [5], [8], [8]])).astype(np.int32)
    batch = {"input_ids": ids, "attention_mask": mask, "pixel_values": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}

    # the example of clip/flax/modeling.py's docstring
    mesh = Mesh(jax.devices(), ("model",))
    def spec(x):
        return P(*([None] * (x.ndim - 1) + ["model"])) if x.ndim >= 2 and x.shape[-1] % mesh.size == 0 else P()
    shardings = jax.tree.map(lambda x: NamedSharding(mesh, spec(x)), model.params)
    # sgd, not adamw, for the comparison: adam's g / (|g| + eps) turns the last-bit differences of
    # near-zero gradients (summed in another order across shards) into lr-sized ones
    tx = optax.sgd(0.1, momentum=0.9)

    @jax.jit
    def train_step(params, opt_state, batch, rng):
        def loss_fn(params):
            return model(**batch, params=params, return_loss=True, train=True, dropout_rng=rng).loss
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    results = {}
    for name, params in (("plain", model.params), ("sharded", jax.device_put(model.params, shardings))):
        opt_state = tx.init(params)
        losses = []
        for step in range(2):
            params, opt_state, loss = train_step(params, opt_state, batch, jax.random.key(step))
            losses.append(float(loss))
        results[name] = (params, losses)
    kernel = results["sharded"][0]["text_model"]["encoder"]["layers"]["0"]["mlp"]["fc1"]["kernel"]
    diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), results["plain"][0], results["sharded"][0])))
    print(json.dumps({
        "losses": results["plain"][1], "sharded_losses": results["sharded"][1], "max_param_diff": diff,
        "kernel_devices": len(kernel.sharding.device_set), "kernel_spec": str(kernel.sharding.spec),
        "moved": float(jnp.abs(results["plain"][0]["logit_scale"] - model.params["logit_scale"])),
    }))
    """
)


def test_sharded_jitted_optax_step_equals_unsharded():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=root, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["kernel_devices"] == 4 and "model" in result["kernel_spec"]
    assert result["moved"] > 0  # the step changed the parameters
    assert all(abs(a - b) <= 1e-5 for a, b in zip(result["losses"], result["sharded_losses"])), result
    assert result["max_param_diff"] <= 1e-5, result
