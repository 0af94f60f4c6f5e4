"""`clip embed --ray` (slow: Ray starts in seconds, its actors load the model): Ray Data reads every
input kind with its own readers and gives the vectors, metadata and skip reasons of a local run; a
killed Ray run resumes losing nothing. One local Ray instance (2 CPUs) serves the whole module."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from task_helpers import KILL_SCRIPT, PHOTOS, ROOT

from clip.tasks.embed import embed_to_dir, load_embeddings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_address():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The committed photos as every input kind, each with one input that cannot be embedded."""
    base = tmp_path_factory.mktemp("inputs")
    names = sorted(os.listdir(PHOTOS))
    folder = base / "folder"
    shutil.copytree(PHOTOS, folder)
    (folder / "notes.txt").write_text("not an image, not listed")
    (folder / "sub").mkdir()
    (folder / "sub" / "truncated.jpg").write_bytes(_read(os.path.join(PHOTOS, "rocket.jpg"))[:3000])
    (folder / ".hidden.png").write_bytes(_read(os.path.join(PHOTOS, "chelsea.png")))
    with tarfile.open(base / "shard-00000.tar", "w") as tar:
        members = {}
        for number, name in enumerate(names):
            key = f"{number:09d}"
            members[f"{key}{os.path.splitext(name)[1]}"] = _read(os.path.join(PHOTOS, name))
            members[f"{key}.txt"] = f"caption {number}".encode()
            members[f"{key}.json"] = json.dumps(
                {"url": f"https://example.org/{name}", "similarity": 0.25 + number}
            ).encode()
        members["999999999.txt"] = b"a caption without an image"
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(base / "shard-00001.tar", "w") as tar:  # a key shard 0 has already, and a new one
        for member, name in (("000000000.png", "chelsea.png"), ("000000100.jpg", "rocket.jpg")):
            data = _read(os.path.join(PHOTOS, name))
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows = [{"image_path": f"folder/{name}", "caption": f"caption {i}", "id": i} for i, name in enumerate(names)]
    rows.append({"image_path": "folder/missing.jpg", "caption": "gone", "id": 99})
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), base / "table.parquet")
    (base / "table.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (base / "table.csv").write_text(
        "filepath,text,id\n" + "".join(f"{r['image_path']},{r['caption']},{r['id']}\n" for r in rows)
    )
    return base


def _metadata(out):
    import pandas as pd

    table = pd.concat([pd.read_parquet(out / "metadata" / f) for f in sorted(os.listdir(out / "metadata"))])
    return table.sort_values("key").reset_index(drop=True)


@pytest.mark.parametrize(
    "source", ["folder", "folder/rocket.jpg", "shard-{00000..00001}.tar", "table.parquet", "table.csv", "table.jsonl"]
)
def test_ray_data_reads_each_input_kind_as_a_local_run_does(source, inputs, ray_address, encoder, tmp_path):
    from clip.tasks.embed.ray_job import embed_to_dir_ray

    name = source.replace("/", "_").replace("{", "").replace("}", "")
    local = embed_to_dir(encoder, inputs / source, tmp_path / f"{name}.local", chunk_size=4)
    ray_run = embed_to_dir_ray(encoder, inputs / source, tmp_path / f"{name}.ray", chunk_size=4, batch_size=4)
    assert ray_run["count"] == local["count"] > 0
    assert sorted((e["source"], e["reason"]) for e in ray_run["skipped"]) == sorted(
        (e["source"], e["reason"]) for e in local["skipped"]
    )
    # each collection holds one input that cannot be embedded; the shards also a repeated key
    assert len(local["skipped"]) == (0 if source == "folder/rocket.jpg" else 2 if "{" in source else 1)
    by_ray, by_local = load_embeddings(ray_run["out"]), load_embeddings(local["out"])
    assert sorted(by_ray.sources) == sorted(by_local.sources)
    vectors = dict(zip(by_ray.sources, by_ray.vectors))
    np.testing.assert_allclose(np.stack([vectors[s] for s in by_local.sources]), by_local.vectors, atol=1e-6)
    ray_meta, local_meta = _metadata(tmp_path / f"{name}.ray"), _metadata(tmp_path / f"{name}.local")
    assert list(ray_meta.columns) == list(local_meta.columns)
    assert ray_meta.equals(local_meta)  # keys, paths, captions, sizes and the sidecar/table fields

    again = embed_to_dir(encoder, inputs / source, tmp_path / f"{name}.ray", chunk_size=4)  # a local run resumes it
    assert again["embedded"] == 0 and again["reused"] == ray_run["count"]


def test_ray_run_names_a_bad_table_column_before_starting(inputs, ray_address, encoder, tmp_path):
    from clip.tasks import TaskError
    from clip.tasks.embed.ray_job import embed_to_dir_ray

    with pytest.raises(TaskError, match="no column 'nope'"):
        embed_to_dir_ray(encoder, inputs / "table.csv", tmp_path / "t.emb", image_column="nope")


def _shapes(folder, count, size=48):
    from clip.data import SyntheticShapes

    folder.mkdir()
    shapes = SyntheticShapes(count, seed=3, image_size=size)
    for i in range(count):
        shapes[i][0].save(folder / f"{i:03d}.png")
    return folder


def test_ray_job_gives_the_local_vectors_and_a_killed_run_resumes_losing_nothing(tmp_path, encoder, ray_address):
    from clip.tasks.embed.ray_job import embed_to_dir_ray

    folder = _shapes(tmp_path / "shapes", 9)
    local = load_embeddings(embed_to_dir(encoder, folder, tmp_path / "local.emb", chunk_size=2)["out"])
    out = tmp_path / "ray.emb"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    killed = subprocess.run(
        [
            sys.executable,
            KILL_SCRIPT,
            "2",
            "embed",
            str(folder),
            "--out",
            str(out),
            "--ray",
            ray_address,
            "--chunk-size",
            "2",
            "--batch-size",
            "2",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert json.loads((out / "manifest.json").read_text())["count"] == 4

    summary = embed_to_dir_ray(encoder, folder, out, chunk_size=2, batch_size=2)  # on the Ray of this module
    assert summary["reused"] == 4 and summary["embedded"] == 5 and summary["count"] == 9
    resumed = load_embeddings(out)
    assert sorted(resumed.sources) == local.sources  # each image once: nothing lost, nothing twice
    by_source = dict(zip(resumed.sources, resumed.vectors))
    np.testing.assert_allclose(np.stack([by_source[s] for s in local.sources]), local.vectors, atol=1e-6)
    assert sorted(os.listdir(out / "img_emb")) == [f"img_emb_{i:06d}.npy" for i in range(5)]
