"""`clip embed` at scale (slow): Ray Data on a local cluster, and 100,000 small images."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from clip.tasks.embed import KILL_AFTER_CHUNKS_ENV, embed_to_dir, load_embeddings
from task_helpers import ROOT


def _shapes(folder, count, size=48):
    from clip.data import SyntheticShapes

    folder.mkdir()
    shapes = SyntheticShapes(count, seed=3, image_size=size)
    for i in range(count):
        shapes[i][0].save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.slow
def test_ray_job_gives_the_local_vectors_and_a_killed_run_resumes_losing_nothing(tmp_path, encoder):
    ray = pytest.importorskip("ray")
    from clip.tasks.embed.ray_job import embed_to_dir_ray

    folder = _shapes(tmp_path / "shapes", 9)
    local = load_embeddings(embed_to_dir(encoder, folder, tmp_path / "local.emb", chunk_size=2)["out"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        out = tmp_path / "ray.emb"
        env = dict(os.environ, HF_HUB_OFFLINE="1", **{KILL_AFTER_CHUNKS_ENV: "2"})
        killed = subprocess.run([sys.executable, "-m", "clip", "embed", str(folder), "--out", str(out), "--ray", address,
                                 "--chunk-size", "2", "--batch-size", "2"], capture_output=True, text=True, env=env,
                                cwd=ROOT, timeout=300)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert json.loads((out / "manifest.json").read_text())["count"] == 4

        summary = embed_to_dir_ray(encoder, folder, out, chunk_size=2, batch_size=2)  # on the Ray started here
        assert summary["reused"] == 4 and summary["embedded"] == 5 and summary["count"] == 9
    finally:
        ray.shutdown()
    resumed = load_embeddings(out)
    assert sorted(resumed.sources) == local.sources  # each image once: nothing lost, nothing twice
    by_source = dict(zip(resumed.sources, resumed.vectors))
    np.testing.assert_allclose(np.stack([by_source[s] for s in local.sources]), local.vectors, atol=1e-6)
    assert sorted(os.listdir(out / "img_emb")) == [f"img_emb_{i:06d}.npy" for i in range(5)]
