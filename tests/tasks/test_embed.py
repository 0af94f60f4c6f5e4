"""`clip embed` end to end: chunks and manifest, skipped files, resume after a kill, search round trip."""

import json
import os
import shutil
import signal

import numpy as np
import pytest
from task_helpers import PHOTOS, run_clip, run_json

from clip.tasks.embed import embed_images, load_embeddings


def test_embed_folder_writes_chunks_manifest_and_lists_skipped_files(photos_with_junk, tmp_path, encoder):
    out = tmp_path / "photos.emb"
    summary = run_json(
        "embed", photos_with_junk, "--out", out, "--chunk-size", "4", "--batch-size", "3", subprocess_=True
    )
    assert summary["count"] == 6 and summary["embedded"] == 6 and summary["reused"] == 0
    # notes.txt is not an image name: not an input, not listed
    assert sorted(e["source"] for e in summary["skipped"]) == ["sub/empty.png", "sub/truncated.jpg"]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["kind"] == "image" and manifest["dim"] == encoder.dim
    assert manifest["chunk_ranges"] == [[0, 2]] and manifest["count"] == 6
    assert [len(json.loads((out / "chunks" / f"00000{i}.json").read_text())["keys"]) for i in (0, 1)] == [4, 2]
    assert manifest["skipped"] == [] and manifest["skipped_count"] == 2  # the list lives in the chunk files

    loaded = load_embeddings(out)
    assert sorted(e["source"] for e in loaded.skipped) == ["sub/empty.png", "sub/truncated.jpg"]
    assert all(e["reason"] for e in loaded.skipped)
    names = sorted(os.listdir(PHOTOS))
    assert [os.path.basename(s) for s in loaded.sources] == names
    direct = encoder.encode_images(encoder.preprocess([os.path.join(PHOTOS, n) for n in names]))
    np.testing.assert_allclose(loaded.vectors, direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(loaded.vectors, axis=1), 1, atol=1e-5)


def test_embed_texts_to_npy(tmp_path, encoder):
    lines = tmp_path / "captions.txt"
    lines.write_text("a red circle\n\na blue square\na green star\n")
    out = tmp_path / "captions.emb"
    table = run_clip("embed", lines, "--out", out, "--format", "npy", "--chunk-size", "2").stdout
    assert "3 text vectors" in table
    assert sorted(os.listdir(out / "chunks")) == ["000000.json", "000000.npy", "000001.json", "000001.npy"]
    loaded = load_embeddings(out)
    assert loaded.kind == "text" and loaded.sources == ["a red circle", "a blue square", "a green star"]
    np.testing.assert_allclose(loaded.vectors, encoder.embed_texts(loaded.sources), atol=1e-5)

    lines.write_text("a red circle\na yellow square\na green star\n")  # line 3 is now line 2, changed
    proc = run_clip("embed", lines, "--out", out, "--format", "npy", check=False)
    assert proc.returncode == 2 and "changed since" in proc.stderr


def _chunk_stats(out):
    return {
        name: (os.stat(out / "chunks" / name).st_mtime_ns, os.stat(out / "chunks" / name).st_ino)
        for name in os.listdir(out / "chunks")
    }


def test_resume_after_a_kill_recomputes_nothing(tmp_path):
    from clip.data import SyntheticShapes

    folder = tmp_path / "many"
    folder.mkdir()
    shapes = SyntheticShapes(11, seed=7, image_size=48)
    for i in range(len(shapes)):
        shapes[i][0].save(folder / f"{i:03d}.png")
    args = ("--chunk-size", "3", "--batch-size", "2", "--workers", "2")

    full = tmp_path / "full.emb"
    run_json("embed", folder, "--out", full, *args)

    out = tmp_path / "killed.emb"
    killed = run_clip("embed", folder, "--out", out, *args, kill_after_chunks=2, check=False, subprocess_=True)
    assert killed.returncode == -signal.SIGKILL
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["count"] == 6 and manifest["chunk_ranges"] == [[0, 2]]
    assert len(load_embeddings(out)) == 6  # the finished part is usable as it is
    before = _chunk_stats(out)

    summary = run_json("embed", folder, "--out", out, *args)
    assert summary["reused"] == 6 and summary["embedded"] == 5 and summary["count"] == 11
    after = _chunk_stats(out)
    assert {name: after[name] for name in before} == before  # finished chunks were not rewritten

    resumed, reference = load_embeddings(out), load_embeddings(full)
    assert resumed.sources == reference.sources
    np.testing.assert_allclose(resumed.vectors, reference.vectors, atol=1e-6)

    # a complete directory is up to date; a new file is added without touching the rest
    assert run_json("embed", folder, "--out", out, *args)["embedded"] == 0
    shapes[0][0].save(folder / "new.png")
    summary = run_json("embed", folder, "--out", out, *args)
    assert summary["embedded"] == 1 and summary["count"] == 12
    assert load_embeddings(out).sources[-1].endswith("new.png")


def test_resume_refuses_a_different_input_kind_or_format(tmp_path, shapes_dir):
    out = tmp_path / "e.emb"
    run_json("embed", shapes_dir, "--out", out)
    proc = run_clip("embed", shapes_dir, "--out", out, "--format", "npy", check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert run_json("embed", shapes_dir, "--out", out, "--format", "npy", "--overwrite")["embedded"] == 4


@pytest.mark.parametrize(
    "make, message", [(lambda p: p.mkdir(), "holds no image files"), (lambda p: None, "no such file or directory")]
)
def test_empty_or_missing_input_is_one_line(tmp_path, make, message):
    source = tmp_path / "input"
    make(source)
    proc = run_clip("embed", source, "--out", tmp_path / "out", check=False, subprocess_=True)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_missing_model_is_one_line(tmp_path, shapes_dir):
    proc = run_clip(
        "embed", shapes_dir, "--out", tmp_path / "out", "--model", "/no/such/model", check=False, subprocess_=True
    )
    assert proc.returncode == 2 and "no such directory" in proc.stderr and "Traceback" not in proc.stderr


def test_in_memory_embedding_keeps_order_and_lists_failures(encoder, photos_with_junk):
    paths = [photos_with_junk / "rocket.jpg", photos_with_junk / "notes.txt", photos_with_junk / "chelsea.png"]
    result = embed_images(encoder, paths, batch_size=1, workers=3)
    assert result.sources == [str(paths[0]), str(paths[2])]
    assert [e["source"] for e in result.skipped] == [str(paths[1])]
    np.testing.assert_allclose(
        result.vectors, encoder.encode_images(encoder.preprocess([paths[0], paths[2]])), atol=1e-5
    )


def test_embed_then_search_round_trip(tmp_path, shapes_dir, encoder):
    out = tmp_path / "shapes.emb"
    run_json("embed", shapes_dir, "--out", out)

    text = run_json("search", out, "--text", "a red circle", "--top-k", "4", subprocess_=True)[0]
    assert os.path.basename(text["results"][0]["source"]) == "red_circle.png"
    names = sorted(os.listdir(shapes_dir))
    images = encoder.encode_images(encoder.preprocess([shapes_dir / n for n in names]))
    expected = images @ encoder.embed_texts(["a red circle"])[0]
    for hit in text["results"]:
        assert hit["score"] == pytest.approx(expected[names.index(os.path.basename(hit["source"]))], abs=1e-5)
    np.testing.assert_allclose([h["score"] for h in text["results"]], sorted(expected, reverse=True), atol=1e-5)

    image = run_json("search", out, "--image", shapes_dir / "blue_circle.png", "--top-k", "2")[0]
    assert os.path.basename(image["results"][0]["source"]) == "blue_circle.png"
    assert image["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)

    table = run_clip("search", out, "--text", "a yellow circle", "--top-k", "1").stdout
    assert "yellow_circle.png" in table and "rank" in table


def test_search_image_to_text(tmp_path, shapes_dir):
    lines = tmp_path / "labels.txt"
    lines.write_text("".join(f"a {c} circle\n" for c in ("green", "red", "blue", "yellow")))
    out = tmp_path / "labels.emb"
    run_json("embed", lines, "--out", out)
    hits = run_json("search", out, "--image", shapes_dir / "red_circle.png", "--top-k", "1")[0]["results"]
    assert hits[0]["source"] == "a red circle"


@pytest.fixture(scope="module")
def model_copies(tmp_path_factory):
    """The embedded default model saved again under another path, and a copy with one tensor changed."""
    torch = pytest.importorskip("torch")
    from clip.models import default_model_path
    from clip.pt import CLIPModel

    folder = tmp_path_factory.mktemp("models")
    model = CLIPModel.from_pretrained(default_model_path())
    for name in ("same", "tuned"):
        shutil.copytree(default_model_path(), folder / name)  # the tokenizer and processor files
    model.save_pretrained(folder / "same")
    with torch.no_grad():
        model.visual_projection.weight.mul_(1.001)  # what a fine-tuning step does to a tensor
    model.save_pretrained(folder / "tuned")
    return folder / "same", folder / "tuned"


def test_resume_and_search_refuse_vectors_of_other_weights(tmp_path, shapes_dir, model_copies):
    same, tuned = model_copies
    out = tmp_path / "e.emb"
    first = run_json("embed", shapes_dir, "--out", out)
    assert json.loads((out / "manifest.json").read_text())["weights"]

    # the same weights under another path (a moved or re-saved checkpoint) go on
    assert run_json("embed", shapes_dir, "--out", out, "--model", same)["reused"] == first["count"]
    assert run_json("search", out, "--text", "a red circle", "--model", same)[0]["results"]

    for command in (("embed", shapes_dir, "--out", out), ("search", out, "--text", "a red circle")):
        proc = run_clip(*command, "--model", tuned, check=False)
        assert proc.returncode == 2 and "other weights" in proc.stderr and "Traceback" not in proc.stderr
    assert len(load_embeddings(out)) == first["count"]  # nothing was appended


def test_weights_fingerprint_is_the_same_in_every_backend(encoder):
    pytest.importorskip("tensorflow")
    pytest.importorskip("clip.flax")
    from clip.tasks import load_encoder

    assert encoder.fingerprint
    assert load_encoder(None, "tf").fingerprint == encoder.fingerprint
    assert load_encoder(None, "flax").fingerprint == encoder.fingerprint


@pytest.mark.skipif(not hasattr(os, "fork"), reason="advisory locks are POSIX")
def test_a_second_writer_is_refused_while_the_first_runs(tmp_path, shapes_dir):
    import fcntl

    from clip.tasks.embed import LOCK

    out = tmp_path / "e.emb"
    out.mkdir()
    with open(out / LOCK, "a+") as holder:  # what a running `clip embed` holds
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write("pid 4242")
        holder.flush()
        proc = run_clip("embed", shapes_dir, "--out", out, check=False)
        assert proc.returncode == 2 and "being written by another `clip embed` (pid 4242)" in proc.stderr
        assert not (out / "manifest.json").exists() and not (out / "chunks").exists()
    assert run_json("embed", shapes_dir, "--out", out)["embedded"] == 4  # free again


def test_a_foreign_directory_is_refused_untouched(tmp_path, shapes_dir):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("mine")
    proc = run_clip("embed", shapes_dir, "--out", out, check=False)
    assert proc.returncode == 2 and "non-empty directory" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["todo.txt"]  # no lock file, no chunks left behind


@pytest.fixture
def eleven_shapes(tmp_path):
    from clip.data import SyntheticShapes

    folder = tmp_path / "shapes"
    folder.mkdir()
    shapes = SyntheticShapes(12, seed=7, image_size=48)
    for i in range(11):
        shapes[i][0].save(folder / f"{i:03d}.png")
    return folder, shapes[11][0]


def test_shards_cover_the_input_once_and_search_together(tmp_path, eleven_shapes):
    folder, spare = eleven_shapes
    full = load_embeddings(run_json("embed", folder, "--out", tmp_path / "full")["out"])
    parts = [tmp_path / f"part{k}" for k in range(3)]
    counts = [run_json("embed", folder, "--out", part, "--shard", f"{k}/3")["count"] for k, part in enumerate(parts)]
    assert sum(counts) == 11 and all(counts)  # disjoint, and none empty at this size
    together = load_embeddings(parts)
    assert sorted(together.sources) == sorted(full.sources)  # each input exactly once
    by_source = dict(zip(full.sources, full.vectors))
    np.testing.assert_allclose(together.vectors, np.stack([by_source[s] for s in together.sources]), atol=1e-6)
    hits = run_json("search", *parts, "--text", "a red circle", "--top-k", "11")[0]["results"]
    assert sorted(h["source"] for h in hits) == sorted(full.sources)

    # a new file lands in one shard only: the others have nothing to add
    spare.save(folder / "new.png")
    assert (
        sum(run_json("embed", folder, "--out", part, "--shard", f"{k}/3")["embedded"] for k, part in enumerate(parts))
        == 1
    )


def test_overlapping_or_mismatched_shards_are_refused(tmp_path, eleven_shapes):
    from clip.tasks.backends import TaskError
    from clip.tasks.embed import parse_shard

    folder, _ = eleven_shapes
    for spec in ("0/3", "0/2"):
        run_json("embed", folder, "--out", tmp_path / spec.replace("/", "of"), "--shard", spec)
    with pytest.raises(TaskError, match="overlap"):
        load_embeddings([tmp_path / "0of3", tmp_path / "0of3"])
    with pytest.raises(TaskError, match="overlap"):
        load_embeddings([tmp_path / "0of3", tmp_path / "0of2"])
    proc = run_clip("embed", folder, "--out", tmp_path / "0of3", "--shard", "1/3", check=False)
    assert proc.returncode == 2 and "shard=[0, 3]" in proc.stderr
    for bad in ("3/3", "a/b", "1", "-1/2"):
        with pytest.raises(TaskError, match="--shard takes K/N"):
            parse_shard(bad)


def test_an_empty_shard_is_an_empty_directory_not_an_error(tmp_path, shapes_dir):
    parts = [tmp_path / f"p{k}" for k in range(8)]
    summaries = [run_json("embed", shapes_dir, "--out", part, "--shard", f"{k}/8") for k, part in enumerate(parts)]
    assert sum(s["count"] for s in summaries) == 4 and min(s["count"] for s in summaries) == 0
    assert all(json.loads((part / "manifest.json").read_text())["complete"] for part in parts)
    assert len(load_embeddings(parts)) == 4
