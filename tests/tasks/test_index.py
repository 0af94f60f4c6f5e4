"""clip index: built indexes answer like exact search (recall against a full sort), keep the sources and
the weights fingerprint, open memory-mapped, refuse damage; the budget rule; the CLI."""

import json
import os

import numpy as np
import pytest
from index_helpers import read_manifest, unit, write_dir, write_manifest

from clip.index.build import build_index, choose, parse_memory
from clip.tasks.backends import TaskError
from clip.tasks.search import EmbeddingIndex

pytest.importorskip("usearch")


def _clustered(n, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    x = centres[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())])


@pytest.fixture(scope="module")
def emb(tmp_path_factory):
    path = tmp_path_factory.mktemp("idx") / "e.emb"
    write_dir(path, _clustered(3000), chunk=1000)
    return path


@pytest.mark.parametrize("kind", ["hnsw", "flat"])
def test_built_index_matches_exact_search(tmp_path, emb, kind):
    vectors, queries = _clustered(3000), _clustered(50, seed=1)
    truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]  # the reference: a full sort
    info = build_index([emb], tmp_path / "ix", kind=kind, threads=1)
    index = EmbeddingIndex.load(tmp_path / "ix")
    assert index.engine is not None and index.manifest["kind"] == kind and len(index) == 3000
    _, found = index.topk(queries, 10)
    if kind == "flat":
        np.testing.assert_array_equal(found, truth)
        assert isinstance(index.engine.array, np.memmap)  # opened mapped, not read: start-up does not grow with N
    else:
        assert _recall(found, truth) >= (0.95 if kind == "hnsw" else 0.5)
    hits = index.search(queries[:1], 3)[0]
    assert [h.source for h in hits] == [f"t{h.index}" for h in hits]  # the mapping to sources
    assert hits[0].score == pytest.approx(float(queries[0] @ vectors[hits[0].index]), abs=1e-2)
    assert info["weights"] == "w0" and index.manifest["weights"] == "w0"
    assert os.path.isfile(tmp_path / "ix" / "index.json")
    assert isinstance(index.sources.offsets, np.memmap) and isinstance(index.sources.blob, np.memmap)


def test_ivfpq_index(tmp_path):
    """FAISS IVF-PQ (the kind for budgets HNSW does not fit): small, so PQ's recall is only checked loosely."""
    pytest.importorskip("faiss")
    emb = tmp_path / "e.emb"
    vectors, queries = _clustered(1200, dim=16), _clustered(30, dim=16, seed=1)
    write_dir(emb, vectors, chunk=600)
    build_index(emb, tmp_path / "ix", kind="ivfpq", threads=1)
    index = EmbeddingIndex.load(tmp_path / "ix")
    truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    assert index.manifest["params"]["nlist"] == 16 and _recall(index.topk(queries, 10)[1], truth) >= 0.5
    hits = index.search(queries[:1], 2)[0]
    assert [h.source for h in hits] == [f"t{h.index}" for h in hits]


def test_emb_dir_uses_its_index_until_the_embeddings_change(tmp_path):
    emb = tmp_path / "e.emb"
    write_dir(emb, _clustered(500), chunk=200)
    assert EmbeddingIndex.load(emb).engine is None  # no index yet: exact
    info = build_index(emb, kind="hnsw", threads=1)
    assert info["out"] == os.path.join(emb, "index")
    assert EmbeddingIndex.load(emb).engine is not None
    assert EmbeddingIndex.load(emb, exact=True).engine is None
    manifest = read_manifest(emb)
    manifest["chunks"] = manifest["chunks"][:2]
    manifest["count"] = 400
    write_manifest(emb, manifest)  # the directory changed after the build
    index = EmbeddingIndex.load(emb)
    assert index.engine is None and len(index) == 400 and "earlier state" in index.note


def test_shards_build_one_index(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dir(a, unit(30, seed=1), root="/r", first=0)
    manifest = write_dir(b, unit(20, seed=2), root="/r", first=30)
    manifest["shard"] = [1, 2]
    write_manifest(b, manifest)
    manifest = read_manifest(a)
    manifest["shard"] = [0, 2]
    write_manifest(a, manifest)
    with pytest.raises(TaskError, match="--out"):
        build_index([a, b])
    build_index([a, b], tmp_path / "ab", kind="flat")
    index = EmbeddingIndex.load(tmp_path / "ab")
    assert len(index) == 50 and list(index.sources) == [f"t{i}" for i in range(50)]
    assert index.search(unit(20, seed=2)[5:6], 1)[0][0].source == "t35"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda ix: _edit_json(ix, format_version=99), "unknown format_version 99"),
        (lambda ix: _edit_json(ix, kind="banana"), "bad or missing 'kind'"),
        (lambda ix: _edit_json(ix, count="many"), "bad or missing 'count'"),
        (lambda ix: (ix / "vectors.npy").unlink(), "vectors.npy: missing"),
        (lambda ix: (ix / "sources.bin").write_bytes(b"xx"), "sources.bin: holds 2 bytes"),
        (lambda ix: (ix / "index.json").write_text("{" * 1000), "nested deeper"),
        (lambda ix: _edit_json(ix, count=7), "holds 10 x 16 vectors but index.json says 7 x 16"),
    ],
)
def test_damaged_index_is_one_clear_error(tmp_path, damage, message):
    write_dir(tmp_path / "e", unit(10))
    build_index(tmp_path / "e", tmp_path / "ix", kind="flat")
    damage(tmp_path / "ix")
    with pytest.raises(TaskError, match=message):
        EmbeddingIndex.load(tmp_path / "ix")


def _edit_json(ix, **changes):
    info = json.loads((ix / "index.json").read_text())
    info.update(changes)
    (ix / "index.json").write_text(json.dumps(info))


def test_budget_rule():
    gib = 1 << 30
    # hand-computed: HNSW f16 needs (512*2 + 16*2*4 + 16) * (1 + 1.5/16) = 1277.5 bytes a vector
    assert choose(1_000_000, 512, 4 * gib)[0:2] == (
        "hnsw",
        {"dtype": "f16", "connectivity": 16, "expansion_add": 128, "expansion_search": 64},
    )
    assert choose(1_000_000, 512, gib)[1]["dtype"] == "i8"  # 1.19 GiB in f16, 0.67 GiB in i8
    kind, params = choose(1_000_000, 512, 300 << 20)
    assert kind == "ivfpq" and params["pq_bytes"] == 64 and params["nlist"] == 4096
    assert choose(10_000, 512, gib)[0] == "flat"
    with pytest.raises(TaskError, match="too small"):
        choose(1_000_000, 512, 10 << 20)
    with pytest.raises(TaskError, match="too small"):
        choose(1_000_000, 512, gib, kind="flat")
    assert (
        parse_memory("4GB") == 4 * gib and parse_memory("512MB") == 512 << 20 and parse_memory("1.5GiB") == 3 * gib // 2
    )
    for bad in ("", "-1GB", "4 parsecs", "GB"):
        with pytest.raises(TaskError, match="--memory"):
            parse_memory(bad)


def test_cli_index_then_search_refuses_other_weights(tmp_path, shapes_dir, encoder):
    from task_helpers import run_clip, run_json

    emb = tmp_path / "shapes.emb"
    run_json("embed", shapes_dir, "--out", emb)
    built = run_json("index", emb, "--kind", "hnsw")
    assert built["kind"] == "hnsw" and built["count"] == 4 and built["weights"] == encoder.fingerprint
    via_index = run_json("search", emb, "--text", "a red circle", "--top-k", "4")[0]["results"]
    exact = run_json("search", emb, "--exact", "--text", "a red circle", "--top-k", "4")[0]["results"]
    assert [r["source"] for r in via_index] == [r["source"] for r in exact]
    assert [r["score"] for r in via_index] == pytest.approx([r["score"] for r in exact], abs=2e-3)
    _edit_json(emb / "index", weights="another-model")
    manifest = read_manifest(emb)  # keep the index current: only its fingerprint differs
    proc = run_clip("search", emb / "index", "--text", "a red circle", check=False)
    assert proc.returncode == 2 and "other weights" in proc.stderr and manifest
    proc = run_clip("index", tmp_path / "nowhere", check=False)
    assert proc.returncode == 2 and "not an embedding directory" in proc.stderr
