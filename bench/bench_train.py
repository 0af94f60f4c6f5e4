"""Training throughput (pairs/s) of clip.train.pt, random data, ViT-B/32-size config.

Rows:
- one optimizer step (forward, backward, AdamW, logit_scale clamp) of our trainer's objective vs
  transformers' CLIPModel(return_loss=True) with the same AdamW, same weights, same batch;
- data-parallel scaling: the same global batch in 1 process vs 2 gloo processes (local-loss
  formulation with all_gather-with-grad), step time ratio;
- the tf and flax trainers' step (clip.train.tf / clip.train.flax: AdamW, clipping, clamp) on the
  same config and batch size, pairs/s, with our pt step as the baseline.

- accumulation (GradCache) per backend: an effective contrastive batch of 256 built as 8 micro-batches
  of 32 against one batch of 256 (where it fits): pairs/s and peak memory, each in a fresh process
  (`--accum` runs only these rows, `--backends=pt,tf` some backends; `--accum --quick` a 2-layer config at
  4 x 8 vs 32). A variant that does not fit in memory is reported as such.
- compiled steps (`--compile` runs only these rows): pt eager vs torch.compile, tf tf.function vs
  tf.function(jit_compile=True), steady-state step time after the compilation (its time in the note).

`--quick` uses 2-layer towers and small batches.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time

import numpy as np

TEXT_LEN = 77


def _config(quick):
    from clip.common.config import CLIPConfig

    if quick:
        return CLIPConfig(text_config={"num_hidden_layers": 2}, vision_config={"num_hidden_layers": 2})
    return CLIPConfig()  # ViT-B/32


def _batch(config, n, seed=0):
    import torch

    rng = np.random.default_rng(seed)
    tc, vc = config.text_config, config.vision_config
    ids = torch.from_numpy(rng.integers(0, tc.vocab_size - 2, (n, TEXT_LEN)))
    ids[:, -1] = tc.eos_token_id
    mask = torch.ones_like(ids)
    pixels = torch.from_numpy(rng.standard_normal((n, 3, vc.image_size, vc.image_size), dtype=np.float32))
    return ids, mask, pixels


def _time_steps(step, repeats):
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return min(times)


def _step_rows(quick):
    import torch
    import transformers

    from clip.pt import CLIPModel
    from clip.train import pt

    torch.manual_seed(0)
    config = _config(quick)
    batch = 8 if quick else 32
    ours = CLIPModel(config).train()
    theirs = transformers.CLIPModel(transformers.CLIPConfig(**config.to_dict())).train()
    theirs.load_state_dict(ours.state_dict(), strict=False)
    ids, mask, pixels = _batch(config, batch)
    objective = pt.ContrastiveObjective(ours)
    opt_ours = pt.build_optimizer(ours, 1e-5, 0.1)
    opt_theirs = pt.build_optimizer(theirs, 1e-5, 0.1)

    def step_ours():
        objective(ids, mask, pixels).backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        pt.clamp_logit_scale(ours)

    def step_theirs():
        theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True).loss.backward()
        opt_theirs.step()
        opt_theirs.zero_grad(set_to_none=True)
        with torch.no_grad():
            theirs.logit_scale.clamp_(0, np.log(100))

    repeats = 2 if quick else 3
    t_ours, t_theirs = _time_steps(step_ours, repeats), _time_steps(step_theirs, repeats)
    size = "2-layer" if quick else "ViT-B/32"
    return [
        {
            "name": f"pt train step, {size}, batch {batch}, fp32",
            "ours_s": t_ours,
            "baseline_s": t_theirs,
            "ratio": t_theirs / t_ours,
            "target": ">= 1.0x",
            "ours_pairs_per_s": batch / t_ours,
            "baseline_pairs_per_s": batch / t_theirs,
            "note": f"{batch / t_ours:.1f} pairs/s (transformers {batch / t_theirs:.1f})",
        }
    ]


def _ddp_worker(rank, world, port, quick, batch, result_path):
    import torch
    import torch.distributed as dist

    from clip.pt import CLIPModel
    from clip.train import pt

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    config = _config(quick)
    model = CLIPModel(config).train()
    ids, mask, pixels = _batch(config, batch)
    part = slice(rank * batch // world, (rank + 1) * batch // world)
    objective = torch.nn.parallel.DistributedDataParallel(pt.ContrastiveObjective(model, rank, world))
    optimizer = pt.build_optimizer(model, 1e-5, 0.1)

    def step():
        objective(ids[part], mask[part], pixels[part]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dist.barrier()

    seconds = _time_steps(step, 2 if quick else 3)
    if rank == 0:
        with open(result_path, "w") as f:
            json.dump({"seconds": seconds}, f)
    # every rank reaches teardown together: a rank that leaves early aborts gloo on its peer
    dist.barrier()
    dist.destroy_process_group()


def _scaling_rows(quick):
    import torch.multiprocessing as mp

    batch = 8 if quick else 32
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2):
            path = os.path.join(tmp, f"{world}.json")
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            mp.spawn(_ddp_worker, args=(world, port, quick, batch, path), nprocs=world, join=True)
            with open(path) as f:
                seconds[world] = json.load(f)["seconds"]
    cpus = os.cpu_count()
    return [
        {
            "name": f"pt DDP (gloo) 2 vs 1 process, global batch {batch}" + (" (2-layer)" if quick else ""),
            "ours_s": seconds[2],
            "baseline_s": seconds[1],
            "ratio": seconds[1] / seconds[2],
            "target": "~2x with 2x cores",
            "note": f"step time, same global batch; {cpus} CPU cores shared by both runs, threads split between processes",
        }
    ]


def _numpy_batch(config, n, seed=0):
    ids, mask, pixels = _batch(config, n, seed)
    return {
        "input_ids": ids.numpy().astype(np.int32),
        "attention_mask": mask.numpy().astype(np.int32),
        "pixel_values": pixels.numpy(),
    }


def _flax_step_seconds(config, batch, repeats):
    import jax

    from clip.flax import FlaxCLIPModel
    from clip.train import flax as trainer

    model = FlaxCLIPModel(config, seed=0)
    tx = trainer.build_optimizer(config, steps=100, base_lr=1e-5, warmup=10, weight_decay=0.1, grad_clip=1.0)
    step = trainer.make_train_step(model, tx, seed=0, dropout=False)
    inputs = {k: jax.device_put(v[None]) for k, v in _numpy_batch(config, batch).items()}
    state = {"params": model.params}
    state["opt"] = tx.init(state["params"])

    def run():
        state["params"], state["opt"], loss = step(state["params"], state["opt"], inputs, 0)
        loss.block_until_ready()

    return _time_steps(run, repeats)


def _tf_step_seconds(config, batch, repeats):
    import tensorflow as tf

    from clip.tf import TFCLIPModel
    from clip.train import tf as trainer

    strategy = tf.distribute.get_strategy()
    model = TFCLIPModel(config)
    optimizer, variables = trainer.build_optimizer(
        model, steps=100, base_lr=1e-5, warmup=10, weight_decay=0.1, grad_clip=1.0
    )
    step = trainer.make_train_step(strategy, model, optimizer, variables)
    inputs = {k: tf.constant(v[None]) for k, v in _numpy_batch(config, batch).items()}
    return _time_steps(lambda: float(step(inputs)), repeats)


def _backend_rows(quick, pt_seconds):
    config = _config(quick)
    batch = 8 if quick else 32
    repeats = 2 if quick else 3
    size = "2-layer" if quick else "ViT-B/32"
    out = []
    for name, measure in (("tf", _tf_step_seconds), ("flax", _flax_step_seconds)):
        try:
            seconds = measure(config, batch, repeats)
        except ImportError as err:
            out.append({"name": f"{name} train step, {size}, batch {batch}, fp32", "note": f"skipped: {err}"})
            continue
        out.append(
            {
                "name": f"{name} train step, {size}, batch {batch}, fp32",
                "ours_s": seconds,
                "baseline_s": pt_seconds,
                "ratio": pt_seconds / seconds,
                "target": "informative (baseline: our pt step)",
                "ours_pairs_per_s": batch / seconds,
                "baseline_pairs_per_s": batch / pt_seconds,
                "note": f"{batch / seconds:.1f} pairs/s ({name}) vs {batch / pt_seconds:.1f} pairs/s (pt)",
            }
        )
    return out


# -- accumulation: k x m vs one batch of k * m, each variant in its own process (peak RSS is per process) --
def _accum_child(backend, k, m, quick):
    """Runs in a fresh interpreter: {"seconds": one optimizer step, "peak_mib", "setup_mib"} for k micro-batches of m."""
    import resource

    config = _config(quick)
    batch = _numpy_batch(config, k * m)
    stacked = {key: v.reshape(k, m, *v.shape[1:]) for key, v in batch.items()}
    repeats = 1 if not quick else 2
    if backend == "pt":
        import torch

        from clip.pt import CLIPModel
        from clip.train import pt_step
        from clip.train.pt import build_optimizer

        model = CLIPModel(config).train()
        optimizer = build_optimizer(model, 1e-5, 0.1)
        micro = [
            {
                key: torch.from_numpy(v[a]).long() if key != "pixel_values" else torch.from_numpy(v[a])
                for key, v in stacked.items()
            }
            for a in range(k)
        ]
        objective, params = pt_step.ContrastiveObjective(model), list(model.parameters())
        setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        seconds = _time_steps(
            lambda: pt_step.optimizer_step(objective, optimizer, params, micro, grad_clip=1.0), repeats
        )
    elif backend == "tf":
        import tensorflow as tf

        from clip.tf import TFCLIPModel
        from clip.train import tf as trainer

        model = TFCLIPModel(config)
        optimizer, variables = trainer.build_optimizer(
            model, steps=100, base_lr=1e-5, warmup=10, weight_decay=0.1, grad_clip=1.0
        )
        step = trainer.make_train_step(tf.distribute.get_strategy(), model, optimizer, variables)
        inputs = {key: tf.constant(v) for key, v in stacked.items()}
        setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        seconds = _time_steps(lambda: float(step(inputs)), repeats)
    else:
        import jax

        from clip.flax import FlaxCLIPModel
        from clip.train import flax as trainer

        model = FlaxCLIPModel(config, seed=0)
        tx = trainer.build_optimizer(config, steps=100, base_lr=1e-5, warmup=10, weight_decay=0.1, grad_clip=1.0)
        step = trainer.make_train_step(model, tx, seed=0, dropout=False)
        inputs = jax.device_put(stacked)
        state = {"params": model.params}
        state["opt"] = tx.init(state["params"])
        setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        def run():
            state["params"], state["opt"], loss = step(state["params"], state["opt"], inputs, 0)
            loss.block_until_ready()

        seconds = _time_steps(run, repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mib": peak / 1024, "setup_mib": setup / 1024}


def _accum_rows(quick):
    import subprocess

    k, m = (4, 8) if quick else (8, 32)
    size = "2-layer" if quick else "ViT-B/32"
    chosen = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--backends=")]
    backends = chosen[0].split(",") if chosen else ("pt", "tf", "flax")
    out = []
    for backend in backends:
        results = {}
        for kk, mm in ((k, m), (1, k * m)):
            code = (
                f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
                f"import bench_train; print(json.dumps(bench_train._accum_child({backend!r}, {kk}, {mm}, {quick})))"
            )
            done = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
            if done.returncode == 0:
                results[kk] = json.loads(done.stdout.strip().splitlines()[-1])
            elif done.returncode == -9 or "RESOURCE_EXHAUSTED" in done.stderr or "MemoryError" in done.stderr:
                results[kk] = {"error": "does not fit in memory" + (" (killed)" if done.returncode == -9 else "")}
            else:
                results[kk] = {"error": done.stderr[-300:]}
        acc, whole = results[k], results[1]
        name = f"{backend} accumulation {k} x {m} vs one batch of {k * m}, {size}, fp32"
        if "error" in acc:
            out.append({"name": name, "note": f"accumulation failed: {acc['error']}"})
            continue
        row = {"name": name, "ours_s": acc["seconds"], "ours_pairs_per_s": k * m / acc["seconds"]}
        row["target"] = "informative: ~0.75x (one extra forward) for memory ~ m"
        if "error" in whole:
            row["note"] = (
                f"{k * m / acc['seconds']:.1f} pairs/s, peak RSS {acc['peak_mib']:.0f} MiB; one batch of "
                f"{k * m}: {whole['error']}"
            )
        else:
            row.update(
                baseline_s=whole["seconds"],
                ratio=whole["seconds"] / acc["seconds"],
                baseline_pairs_per_s=k * m / whole["seconds"],
            )
            row["note"] = (
                f"{k * m / acc['seconds']:.1f} vs {k * m / whole['seconds']:.1f} pairs/s; peak RSS {acc['peak_mib']:.0f} vs "
                f"{whole['peak_mib']:.0f} MiB (step's growth over setup {acc['peak_mib'] - acc['setup_mib']:.0f} vs "
                f"{whole['peak_mib'] - whole['setup_mib']:.0f} MiB)"
            )
        out.append(row)
    return out


def _compile_rows(quick):
    import tensorflow as tf
    import torch

    from clip.pt import CLIPModel
    from clip.tf import TFCLIPModel
    from clip.train import pt_step
    from clip.train import tf as tf_trainer
    from clip.train.pt import build_optimizer

    config, batch = _config(quick), 8 if quick else 32
    repeats = 3
    numpy_batch = _numpy_batch(config, batch)
    out = []
    seconds, first = {}, {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = CLIPModel(config).train()
        optimizer = build_optimizer(model, 1e-5, 0.1)
        objective = pt_step.ContrastiveObjective(model)
        if compiled:
            objective.compile()
        micro = [
            {
                k: torch.from_numpy(v).long() if k != "pixel_values" else torch.from_numpy(v)
                for k, v in numpy_batch.items()
            }
        ]
        step = lambda: pt_step.optimizer_step(objective, optimizer, list(model.parameters()), micro, grad_clip=1.0)  # noqa: E731
        t0 = time.perf_counter()
        step()
        first[compiled] = time.perf_counter() - t0
        seconds[compiled] = _time_steps(step, repeats)
    out.append(
        {
            "name": f"pt train step torch.compile vs eager, batch {batch}" + (" (2-layer)" if quick else ""),
            "ours_s": seconds[True],
            "baseline_s": seconds[False],
            "ratio": seconds[False] / seconds[True],
            "target": "informative: --compile pays when > 1",
            "note": f"first (compiling) step {first[True]:.1f} s",
        }
    )
    for compiled in (False, True):
        model = TFCLIPModel(config)
        optimizer, variables = tf_trainer.build_optimizer(
            model, steps=100, base_lr=1e-5, warmup=10, weight_decay=0.1, grad_clip=1.0
        )
        step = tf_trainer.make_train_step(
            tf.distribute.get_strategy(), model, optimizer, variables, jit_compile=compiled
        )
        inputs = {k: tf.constant(v[None]) for k, v in numpy_batch.items()}
        t0 = time.perf_counter()
        float(step(inputs))
        first[compiled] = time.perf_counter() - t0
        seconds[compiled] = _time_steps(lambda: float(step(inputs)), repeats)
    out.append(
        {
            "name": f"tf train step jit_compile=True vs tf.function, batch {batch}" + (" (2-layer)" if quick else ""),
            "ours_s": seconds[True],
            "baseline_s": seconds[False],
            "ratio": seconds[False] / seconds[True],
            "target": "informative: --compile pays when > 1",
            "note": f"first (compiling) step {first[True]:.1f} s",
        }
    )
    return out


def rows(quick: bool = False) -> list[dict]:
    step_rows = _step_rows(quick)
    return step_rows + _backend_rows(quick, step_rows[0]["ours_s"]) + _scaling_rows(quick)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    quick = "--quick" in sys.argv
    chosen = _accum_rows if "--accum" in sys.argv else _compile_rows if "--compile" in sys.argv else rows
    for row in chosen(quick):
        print(json.dumps(row))
