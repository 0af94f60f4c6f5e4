"""`clip embed` at scale (slow): 100,000 small images (the Ray job is in test_embed_ray.py)."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from task_helpers import KILL_SCRIPT, ROOT

from clip.tasks.embed import load_embeddings

# 100,000 by the issue: 2 min 45 s to 3 min 40 s on the 2-core test machine while other work loaded
# it (load average 4-5; generating the PNGs included); CLIP_EMBED_SCALE_N=20000 for a quicker run
SCALE_N = int(os.environ.get("CLIP_EMBED_SCALE_N", "100000"))


def _thumbnails(folder, count):
    """`count` random 16x16 PNGs, 1,000 per subfolder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for start in range(0, count, 1000):
        sub = folder / f"{start // 1000:04d}"
        sub.mkdir(parents=True)
        for i, pixels in enumerate(rng.integers(0, 256, (min(1000, count - start), 16, 16, 3), dtype=np.uint8)):
            Image.fromarray(pixels).save(sub / f"{start + i:06d}.png")


def _embed(folder, out, chunk_size, kill_after=None):
    """`clip embed` in a child process: (exit status, its peak resident memory in bytes)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "clip"] if not kill_after else [sys.executable, KILL_SCRIPT, str(kill_after)]
    with open(out.parent / f"{out.name}.stderr", "ab") as stderr:
        child = subprocess.Popen(
            [
                *command,
                "embed",
                str(folder),
                "--out",
                str(out),
                "--chunk-size",
                str(chunk_size),
                "--batch-size",
                "256",
                "--json",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss * 1024


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "wait4"), reason="peak memory of a child needs wait4 (POSIX)")
def test_many_small_images_flat_memory_small_manifest_and_a_resume_that_loses_nothing(tmp_path):
    small_n, chunk_size = SCALE_N // 10, 1000
    _thumbnails(tmp_path / "small", small_n)
    _thumbnails(tmp_path / "big", SCALE_N)

    status, small_peak = _embed(tmp_path / "small", tmp_path / "small.emb", chunk_size)
    assert status == 0, (tmp_path / "small.emb.stderr").read_text()
    chunks = SCALE_N // chunk_size
    status, killed_peak = _embed(tmp_path / "big", tmp_path / "big.emb", chunk_size, kill_after=chunks // 2)
    assert status == -signal.SIGKILL
    assert json.loads((tmp_path / "big.emb" / "manifest.json").read_text())["count"] == SCALE_N // 2
    status, resumed_peak = _embed(tmp_path / "big", tmp_path / "big.emb", chunk_size)
    assert status == 0, (tmp_path / "big.emb.stderr").read_text()

    # memory and manifest do not grow with the number of images (within 2x)
    small_manifest = os.path.getsize(tmp_path / "small.emb" / "manifest.json")
    big_manifest = os.path.getsize(tmp_path / "big.emb" / "manifest.json")
    print(
        f"N={small_n}: peak {small_peak / 2**20:.0f} MiB, manifest {small_manifest} B; N={SCALE_N}: peak "
        f"{killed_peak / 2**20:.0f} MiB (killed), {resumed_peak / 2**20:.0f} MiB (resumed), manifest {big_manifest} B"
    )
    assert max(killed_peak, resumed_peak) <= 2 * small_peak, (small_peak, killed_peak, resumed_peak)
    assert big_manifest <= 2 * small_manifest, (small_manifest, big_manifest)

    # no vector lost or duplicated: every image exactly once, each vector its own image's
    loaded = load_embeddings(tmp_path / "big.emb")
    expected = sorted(str(p) for p in (tmp_path / "big").rglob("*.png"))
    assert len(loaded) == SCALE_N and sorted(loaded.sources) == expected
    reference = load_embeddings(tmp_path / "small.emb")  # the same generator: the first images are the same pixels
    by_source = dict(zip(loaded.sources, loaded.vectors))
    for source, vector in zip(reference.sources[:50], reference.vectors[:50]):
        np.testing.assert_allclose(
            by_source[source.replace(f"{os.sep}small{os.sep}", f"{os.sep}big{os.sep}")], vector, atol=1e-6
        )
    assert len(os.listdir(tmp_path / "big.emb" / "img_emb")) == chunks
