"""Loading embedding directories: every damage is one TaskError naming the file (issue 19), never
KeyError/TypeError/AttributeError/RecursionError; clip-retrieval's layout loads (issue 15)."""

import json
import os
import pickle

import numpy as np
import pytest
from index_helpers import read_manifest, unit, write_dir, write_manifest

from clip.tasks.backends import TaskError
from clip.tasks.embed import load_embeddings


@pytest.fixture
def emb(tmp_path):
    path = tmp_path / "e.emb"
    write_dir(path, unit(10))
    return path


def test_a_sound_directory_loads_in_order(tmp_path, emb):
    loaded = load_embeddings(emb)
    np.testing.assert_array_equal(loaded.vectors, unit(10))
    assert loaded.sources == [f"t{i}" for i in range(10)] and loaded.kind == "text"
    image_dir = tmp_path / "i.emb"
    write_dir(image_dir, unit(3), kind="image", storage="safetensors", root="/photos")
    assert load_embeddings(image_dir).sources == [f"/photos/img{i}.png" for i in range(3)]


def _edit(emb, change):
    manifest = read_manifest(emb)
    change(manifest)
    write_manifest(emb, manifest)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("chunks"), "'chunks' must be a list"),
        (lambda m: m.update(chunks={"a": 1}), "'chunks' must be a list"),
        (lambda m: m["chunks"].__setitem__(0, "chunks/000000.npy"), "chunk 0 must be an object"),
        (lambda m: m["chunks"][0].pop("file"), "chunk 0 must be an object"),
        (lambda m: m.update(format_version=99), "unknown format_version 99"),
        (lambda m: m.update(kind="banana"), "'kind' must be one of image, text"),
        (lambda m: m.update(dim="512"), "'dim' must be a positive integer"),
        (lambda m: m.update(count=11), "count is 11 but its chunks hold 10"),
        (lambda m: (m["chunks"].append(m["chunks"][0]), m.update(count=14)), "listed twice"),
        (lambda m: m["chunks"][0].update(file="../../../etc/passwd"), "points outside the directory"),
        (lambda m: m["chunks"][0].update(file="/dev/zero"), "absolute path"),
        (lambda m: m["chunks"][0].update(keys="../x.json"), "points outside the directory"),
    ],
)
def test_damaged_manifest_is_one_clear_error(emb, change, message):
    _edit(emb, change)
    with pytest.raises(TaskError, match=message):
        load_embeddings(emb)


def test_manifest_not_json_or_not_an_object(emb):
    (emb / "manifest.json").write_text("[" * 100_000)
    with pytest.raises(TaskError, match="manifest.json.*nested deeper"):
        load_embeddings(emb)
    (emb / "manifest.json").write_text("[1, 2]")
    with pytest.raises(TaskError, match="manifest.json must hold a JSON object"):
        load_embeddings(emb)


def test_damaged_chunks_name_the_file(emb):
    chunk = emb / "chunks" / "000001.npy"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(TaskError, match="000001.npy"):
        load_embeddings(emb)
    with open(chunk, "wb") as f:  # a pickled object array: refused, never unpickled
        np.save(f, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(TaskError, match="000001.npy: not a readable .npy array"):
        load_embeddings(emb)
    chunk.write_bytes(pickle.dumps([1, 2, 3]))  # a bare pickle
    with pytest.raises(TaskError, match="000001.npy"):
        load_embeddings(emb)
    chunk.unlink()
    with pytest.raises(TaskError, match="000001.npy: missing"):
        load_embeddings(emb)


@pytest.mark.parametrize(
    "rows, message",
    [
        (np.full((4, 16), np.nan, np.float32), "row 0 is not finite"),
        (unit(4) * 3, "row 0 has length 3.0000, not 1"),
        (unit(3), "expected 4 x 16 vectors, found shape \\(3, 16\\)"),
        (unit(4).astype(np.int32), "expected floating-point vectors"),
    ],
)
def test_bad_vectors_are_refused(emb, rows, message):
    np.save(emb / "chunks" / "000000.npy", rows)
    with pytest.raises(TaskError, match=f"000000.npy: {message}"):
        load_embeddings(emb)


def test_safetensors_chunk_without_its_tensor(tmp_path):
    from safetensors.numpy import save_file

    emb = tmp_path / "s.emb"
    write_dir(emb, unit(4), storage="safetensors")
    save_file({"other": unit(4)}, emb / "chunks" / "000000.safetensors")
    with pytest.raises(TaskError, match="000000.safetensors: holds no 'embeddings' tensor"):
        load_embeddings(emb)
    (emb / "chunks" / "000000.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(TaskError, match="000000.safetensors: not a readable safetensors file"):
        load_embeddings(emb)


@pytest.mark.parametrize(
    "side, message",
    [
        ([1, 2, 3], "must hold a JSON object"),
        ({"keys": "abc", "texts": "abc"}, "'texts' must list 4 strings"),
        ({"keys": ["0"], "texts": ["t0"]}, "'texts' must list 4 strings .* found 1 entries"),
        ({"keys": ["0", "1", "2", "3"], "texts": [1, 2, 3, 4]}, "'texts' must list 4 strings"),
    ],
)
def test_keys_file_of_the_wrong_type(emb, side, message):
    (emb / "chunks" / "000000.json").write_text(json.dumps(side))
    with pytest.raises(TaskError, match=f"000000.json.*{message}"):
        load_embeddings(emb)


def test_image_keys_stay_inside_the_root(tmp_path):
    emb = tmp_path / "i.emb"
    write_dir(emb, unit(4), kind="image")
    (emb / "chunks" / "000000.json").write_text(json.dumps({"keys": ["a.png", "../../etc/passwd", "c", "d"]}))
    with pytest.raises(TaskError, match="'../../etc/passwd' is not a path inside"):
        load_embeddings(emb)


def test_chunk_symlinked_out_of_the_directory(tmp_path, emb):
    outside = tmp_path / "outside.npy"
    np.save(outside, unit(4))
    (emb / "chunks" / "000000.npy").unlink()
    os.symlink(outside, emb / "chunks" / "000000.npy")
    with pytest.raises(TaskError, match="points outside the directory"):
        load_embeddings(emb)


# --------------------------------------------------------------------- clip-retrieval's layout


def _clip_retrieval_dir(path, parts=((0, 3), (1, 2)), with_text=True):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for d in ("img_emb", "text_emb", "metadata"):
        os.makedirs(path / d, exist_ok=True)
    start = 0
    for number, rows in parts:
        ids = range(start, start + rows)
        # clip-retrieval stores float16 unit vectors
        np.save(path / "img_emb" / f"img_emb_{number}.npy", unit(rows, seed=number).astype(np.float16))
        if with_text:
            np.save(path / "text_emb" / f"text_emb_{number}.npy", unit(rows, seed=10 + number).astype(np.float16))
        pq.write_table(
            pa.table({"image_path": [f"/imgs/{i}.jpg" for i in ids], "caption": [f"caption {i}" for i in ids]}),
            path / "metadata" / f"metadata_{number}.parquet",
        )
        start += rows


def test_clip_retrieval_layout_loads(tmp_path):
    _clip_retrieval_dir(tmp_path / "cr")
    images = load_embeddings(tmp_path / "cr")
    assert images.kind == "image" and images.sources == [f"/imgs/{i}.jpg" for i in range(5)]
    expected = np.concatenate([unit(3, seed=0).astype(np.float16), unit(2, seed=1).astype(np.float16)]).astype(
        np.float32
    )
    np.testing.assert_array_equal(images.vectors, expected)
    assert images.columns["captions"] == [f"caption {i}" for i in range(5)]
    texts = load_embeddings(tmp_path / "cr", kind="text")
    assert texts.kind == "text" and texts.sources == [f"caption {i}" for i in range(5)]
    np.testing.assert_array_equal(texts.vectors[3:], unit(2, seed=11).astype(np.float16).astype(np.float32))


def test_clip_retrieval_layout_damage(tmp_path):
    _clip_retrieval_dir(tmp_path / "cr", with_text=False)
    (tmp_path / "cr" / "metadata" / "metadata_1.parquet").unlink()
    with pytest.raises(TaskError, match="img_emb_1.npy: no matching metadata"):
        load_embeddings(tmp_path / "cr")
    _clip_retrieval_dir(tmp_path / "cr2", with_text=False)
    (tmp_path / "cr2" / "metadata" / "metadata_0.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(TaskError, match="metadata_0.parquet: not a readable parquet"):
        load_embeddings(tmp_path / "cr2")
    with pytest.raises(TaskError, match="not an embedding directory"):
        load_embeddings(tmp_path)


# --------------------------------------------------------------------- fuzzing


def test_fuzzed_manifests_raise_only_task_errors(tmp_path_factory):
    """Mutated manifest JSON (values swapped for other JSON values, keys dropped): either a clean load or
    TaskError, nothing else (hypothesis, a few seconds)."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    base = tmp_path_factory.mktemp("fuzz") / "e.emb"
    original = write_dir(base, unit(6), chunk=3)
    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-3, 10**12)
        | st.floats(allow_nan=True)
        | st.text(max_size=20)
        | st.sampled_from(["chunks/000000.npy", "../x", "/dev/zero", "text"]),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=10,
    )
    paths = [(k,) for k in original] + [("chunks", i, k) for i in range(2) for k in ("file", "keys", "count")]

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.sampled_from(paths), json_values, st.booleans()), min_size=1, max_size=4))
    def run(mutations):
        manifest = json.loads(json.dumps(original))
        for path, value, drop in mutations:
            holder = manifest
            try:
                for step in path[:-1]:
                    holder = holder[step]
                if drop and isinstance(holder, dict):
                    holder.pop(path[-1], None)
                else:
                    holder[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                continue
        write_manifest(base, manifest)
        try:
            load_embeddings(base)
        except TaskError:
            pass

    run()
    assert hypothesis  # the property ran


def test_clip_search_and_index_read_clip_retrieval_layout(tmp_path, shapes_dir, encoder):
    """A directory as clip-retrieval's `clip inference` writes it (float16 img_emb + parquet metadata),
    made here with the embedded model: `clip search` finds the red circle by text, before and after
    `clip index`."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from task_helpers import run_json

    from clip.tasks.embed import embed_images

    paths = sorted(str(p) for p in shapes_dir.iterdir())
    embedded = embed_images(encoder, paths)
    for d in ("img_emb", "metadata"):
        (tmp_path / "cr" / d).mkdir(parents=True)
    np.save(tmp_path / "cr" / "img_emb" / "img_emb_0.npy", embedded.vectors.astype(np.float16))
    pq.write_table(
        pa.table({"image_path": embedded.sources, "caption": [os.path.basename(p) for p in paths]}),
        tmp_path / "cr" / "metadata" / "metadata_0.parquet",
    )
    top = run_json("search", tmp_path / "cr", "--text", "a red circle", "--top-k", "1")[0]["results"][0]
    assert top["source"].endswith("red_circle.png")
    run_json("index", tmp_path / "cr", "--kind", "flat")
    from clip.tasks.search import EmbeddingIndex

    assert EmbeddingIndex.load(tmp_path / "cr").engine is not None  # cr/index is used
    again = run_json("search", tmp_path / "cr", "--text", "a red circle", "--top-k", "1")[0]["results"][0]
    assert again["source"] == top["source"] and again["score"] == pytest.approx(top["score"], abs=1e-6)
