"""Inputs and outputs of `clip embed` beyond folders: webdataset shards, tables, clip-retrieval's
layout read by embedding-reader, decoding in worker processes, and hostile or damaged inputs."""

import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image
from task_helpers import PHOTOS, ROOT, run_clip

from clip.tasks.embed import embed_to_dir, load_embeddings
from clip.tasks.embed.decode import crop_spec, decode_crop


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


CAPTIONS = {
    "astronaut": "a woman in a space suit",
    "camera": "a man with a camera",
    "chelsea": "a cat",
    "coffee": "a cup of coffee",
    "horse": "a horse drawing",
    "rocket": "a rocket on a launch pad",
}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """The committed photos as a folder, a webdataset shard (img2dataset's key.jpg/txt/json), and tables."""
    base = tmp_path_factory.mktemp("collection")
    names = sorted(os.listdir(PHOTOS))
    folder = base / "folder"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(_read(os.path.join(PHOTOS, name)))
    shard = base / "shard-00000.tar"
    with tarfile.open(shard, "w") as tar:
        for number, name in enumerate(names):
            stem, ext = os.path.splitext(name)
            key = f"{number:09d}"
            members = {
                f"{key}{ext}": _read(os.path.join(PHOTOS, name)),
                f"{key}.txt": CAPTIONS[stem].encode(),
                f"{key}.json": json.dumps({"url": f"https://example.org/{name}", "similarity": 0.3}).encode(),
            }
            for member, data in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    rows = [
        {"image_path": f"folder/{name}", "caption": CAPTIONS[os.path.splitext(name)[0]], "id": i}
        for i, name in enumerate(names)
    ]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), base / "table.parquet")
    (base / "table.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (base / "table.csv").write_text("filepath,text\n" + "".join(f"{r['image_path']},{r['caption']}\n" for r in rows))
    return base, names


@pytest.mark.parametrize("backend", ["pt", "tf", "flax"])
def test_uint8_crops_normalized_on_the_device_equal_both_processors(backend, encoder):
    """The decode workers' uint8 crops, rescaled and normalized on the model's device (one gather),
    are transformers' CLIPImageProcessor's float32 pixels and ours, on real photos and odd sizes."""
    pytest.importorskip({"pt": "torch", "tf": "tensorflow", "flax": "flax"}[backend])
    transformers = pytest.importorskip("transformers")
    from clip.models import default_model_path
    from clip.tasks import load_encoder
    from clip.tasks.crops import device_pixels

    on_device = encoder if backend == "pt" else load_encoder(backend=backend)
    processor = on_device.processor.image_processor
    reference = transformers.CLIPImageProcessor.from_pretrained(default_model_path())
    spec = crop_spec(processor)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((37, 90), (300, 41), (8, 8))
    ]
    images += [Image.open(os.path.join(PHOTOS, n)).convert("RGB") for n in sorted(os.listdir(PHOTOS))]
    crops = np.zeros((len(images), *spec.shape), np.uint8)
    for image, out in zip(images, crops):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        decode_crop(None, buffer.getvalue(), spec, out)
    for gather in ("framework", "numpy"):  # on an accelerator / on a CPU (the host) by default
        pixels = device_pixels(on_device, gather)(crops)
        pixels = pixels.cpu().numpy() if hasattr(pixels, "cpu") else np.asarray(pixels)
        for expected in (reference(images, return_tensors="np")["pixel_values"], on_device.preprocess(images)):
            assert pixels.dtype == np.float32 and pixels.shape == expected.shape
            assert np.abs(pixels - expected).max() <= 1e-6, gather
    np.testing.assert_allclose(
        on_device.encode_crops(crops), on_device.encode_images(on_device.preprocess(images)), atol=1e-6
    )
    with pytest.raises(ValueError, match=r"crops must be \(N, 48, 48, 3\) uint8"):
        on_device.encode_crops(crops.astype(np.float32))


def _by_key(out, sources_to_names):
    loaded = load_embeddings(out)
    return {sources_to_names(s): v for s, v in zip(loaded.sources, loaded.vectors)}


def test_shards_and_tables_embed_to_the_same_vectors_as_the_folder(encoder, collection, tmp_path):
    base, names = collection
    folder = _by_key(
        embed_to_dir(encoder, base / "folder", tmp_path / "folder.emb", decode="process", workers=2)["out"],
        os.path.basename,
    )
    assert sorted(folder) == names
    reference = np.stack([folder[n] for n in names])
    direct = encoder.encode_images(encoder.preprocess([os.path.join(PHOTOS, n) for n in names]))
    np.testing.assert_allclose(reference, direct, atol=1e-6)  # processes + shared memory = the processor's path

    summary = embed_to_dir(encoder, base / "shard-00000.tar", tmp_path / "wds.emb", texts_too=True, chunk_size=4)
    assert summary["count"] == len(names) and not summary["skipped"]
    shard = load_embeddings(tmp_path / "wds.emb")
    assert shard.sources == [f"shard-00000.tar/{i:09d}{os.path.splitext(n)[1]}" for i, n in enumerate(names)]
    assert np.abs(shard.vectors - reference).max() == 0

    for table in ("table.parquet", "table.jsonl", "table.csv"):
        out = tmp_path / f"{table}.emb"
        embed_to_dir(encoder, base / table, out, texts_too=True)
        got = _by_key(out, os.path.basename)
        assert np.abs(np.stack([got[n] for n in names]) - reference).max() == 0, table
        captions = np.concatenate([np.load(out / "text_emb" / f) for f in sorted(os.listdir(out / "text_emb"))])
        expected = encoder.embed_texts([CAPTIONS[os.path.splitext(n)[0]] for n in names])
        np.testing.assert_allclose(captions.astype(np.float32), expected, atol=2e-3)  # float16 files


def test_clip_retrieval_layout_is_read_by_embedding_reader(encoder, collection, tmp_path):
    from embedding_reader import EmbeddingReader

    base, names = collection
    out = tmp_path / "wds.emb"
    embed_to_dir(encoder, base / "shard-00000.tar", out, chunk_size=4, texts_too=True)
    assert sorted(os.listdir(out / "img_emb")) == ["img_emb_000000.npy", "img_emb_000001.npy"]
    assert sorted(os.listdir(out / "metadata")) == ["metadata_000000.parquet", "metadata_000001.parquet"]
    reader = EmbeddingReader(
        str(out / "img_emb"),
        file_format="parquet_npy",
        metadata_folder=str(out / "metadata"),
        meta_columns=["key", "image_path", "caption", "width", "height", "url", "similarity"],
    )
    assert reader.count == len(names)
    vectors, metadata = [], []
    for batch, meta in reader(batch_size=100, show_progress=False):
        vectors.append(batch)
        metadata.append(meta)
    vectors = np.concatenate(vectors)
    import pandas as pd

    metadata = pd.concat(metadata).reset_index(drop=True)
    ours = load_embeddings(out)
    assert np.load(out / "img_emb" / "img_emb_000000.npy").dtype == np.float16  # clip-retrieval's default
    np.testing.assert_allclose(vectors.astype(np.float32), ours.vectors, atol=1e-3)
    assert list(metadata["key"]) == [f"{i:09d}" for i in range(len(names))]
    assert list(metadata["caption"]) == [CAPTIONS[os.path.splitext(n)[0]] for n in names]
    assert list(metadata["url"]) == [f"https://example.org/{n}" for n in names]
    sizes = [Image.open(os.path.join(PHOTOS, n)).size for n in names]
    assert list(zip(metadata["width"], metadata["height"])) == sizes


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_in_a_folder_is_skipped_and_listed_never_read(tmp_path, encoder):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("rocket.jpg", "chelsea.png"):
        (folder / name).write_bytes(_read(os.path.join(PHOTOS, name)))
    os.mkfifo(folder / "pipe.jpg")  # opening it for reading would block forever
    (folder / "caption.txt").write_text("a sidecar, not an input")
    summary = embed_to_dir(encoder, folder, tmp_path / "e.emb")
    assert summary["count"] == 2
    assert [(e["source"], "named pipe" in e["reason"]) for e in summary["skipped"]] == [("pipe.jpg", True)]
    proc = subprocess.run(
        [sys.executable, "-m", "clip", "zero-shot", str(folder), "--labels", "a cat,a rocket", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "pipe.jpg" in proc.stdout + proc.stderr


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_collections_are_one_line_errors_or_skipped_entries(tmp_path, collection):
    base, _ = collection
    photo = _read(os.path.join(PHOTOS, "rocket.jpg"))
    (tmp_path / "empty.tar").write_bytes(b"")
    (tmp_path / "garbage.tar").write_bytes(b"this is not a tar file" * 40)
    _tar(tmp_path / "members.tar", {})
    errors = {
        "empty.tar": "empty.tar",
        "garbage.tar": "not a readable tar",
        "members.tar": "empty",
        "missing.tar": "no such file",
    }
    for name, message in errors.items():
        proc = run_clip("embed", tmp_path / name, "--out", tmp_path / f"{name}.emb", check=False)
        assert proc.returncode == 2 and message in proc.stderr and name in proc.stderr, (name, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_clip("embed", base / "table.parquet", "--out", tmp_path / "t.emb", "--image-column", "nope", check=False)
    assert proc.returncode == 2 and "no column 'nope'" in proc.stderr and "image_path" in proc.stderr

    # inside a collection: skipped with the reason; nothing embeddable at all is an error, never exit 0
    _tar(tmp_path / "mixed.tar", {"a.jpg": photo, "b.txt": b"a caption without an image", "c.jpg": b"not a jpeg"})
    summary = json.loads(run_clip("embed", tmp_path / "mixed.tar", "--out", tmp_path / "mixed.emb", "--json").stdout)
    reasons = {e["source"]: e["reason"] for e in summary["skipped"]}
    assert summary["count"] == 1 and set(reasons) == {"mixed.tar/b.*", "mixed.tar/c.jpg"}
    assert "no image" in reasons["mixed.tar/b.*"] and "not an image" in reasons["mixed.tar/c.jpg"]
    (tmp_path / "missing.csv").write_text("image_path\nno/such.jpg\n")
    proc = run_clip("embed", tmp_path / "missing.csv", "--out", tmp_path / "m.emb", check=False)
    assert (
        proc.returncode == 2
        and "nothing could be embedded" in proc.stderr
        and "no such file: no/such.jpg" in proc.stderr
    )


def test_a_damaged_directory_is_verified_and_repaired_on_resume(tmp_path, encoder):
    from clip.data import SyntheticShapes

    folder = tmp_path / "shapes"
    folder.mkdir()
    shapes = SyntheticShapes(11, seed=7, image_size=48)
    for i in range(11):
        shapes[i][0].save(folder / f"{i:03d}.png")
    fresh = load_embeddings(embed_to_dir(encoder, folder, tmp_path / "fresh.emb", chunk_size=3)["out"])
    out = tmp_path / "e.emb"
    embed_to_dir(encoder, folder, out, chunk_size=3, storage="npy")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chunk_ranges"] == [[0, 4]]
    files = [out / "chunks" / f"{i:06d}.npy" for i in range(4)]
    os.unlink(files[0])  # a chunk deleted
    data = files[1].read_bytes()
    files[2].write_bytes(data[: len(data) // 2])  # a chunk truncated
    (out / "img_emb" / "img_emb_000001.npy").write_bytes(b"")  # a chunk emptied
    keys_file = out / "chunks" / "000003.json"
    keys = json.loads(keys_file.read_text())
    keys_file.write_text(json.dumps({**keys, "keys": keys["keys"][:1]}))  # a shortened keys file
    manifest["count"] = 99  # a count edited
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "chunks" / ".000009.npy.abc.tmp").write_bytes(b"left by a killed run")
    (out / ".manifest.json.xyz.tmp").write_text("{")

    summary = embed_to_dir(encoder, folder, out, chunk_size=3, storage="npy")
    assert summary["count"] == 11 and summary["embedded"] == 11 and len(summary["repaired"]) == 5
    repaired = load_embeddings(out)
    order = np.argsort(repaired.sources)
    assert [repaired.sources[i] for i in order] == fresh.sources
    np.testing.assert_allclose(repaired.vectors[order], fresh.vectors, atol=1e-6)
    leftovers = [n for d in ("", "chunks", "img_emb", "metadata") for n in os.listdir(out / d) if n.endswith(".tmp")]
    assert leftovers == []
    numbers = [n for a, b in json.loads((out / "manifest.json").read_text())["chunk_ranges"] for n in range(a, b)]
    assert len(numbers) == 4 and sorted(os.listdir(out / "img_emb")) == [f"img_emb_{n:06d}.npy" for n in numbers]
    assert sorted(os.listdir(out / "chunks")) == sorted(f"{n:06d}.{e}" for n in numbers for e in ("json", "npy"))

    # a chunk file that is a link to a file outside the directory is refused, and never read
    (out / "chunks" / f"{numbers[0]:06d}.npy").unlink()
    (out / "chunks" / f"{numbers[0]:06d}.npy").symlink_to("/etc/passwd")
    proc = run_clip("embed", folder, "--out", out, "--format", "npy", "--chunk-size", "3", check=False)
    assert proc.returncode == 2 and "outside the directory" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["chunk_ranges"] = [[0, 10**12]]
    (out / "manifest.json").write_text(json.dumps(manifest))
    proc = run_clip("embed", folder, "--out", out, "--format", "npy", "--chunk-size", "3", check=False)
    assert proc.returncode == 2 and "chunk_ranges" in proc.stderr and "--overwrite" in proc.stderr


def test_without_pyarrow_the_npy_layout_is_still_written_and_resumes(tmp_path, encoder, monkeypatch):
    import clip.tasks.embed.store as store

    monkeypatch.setattr(store, "_have_pyarrow", lambda: False)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # any import of it now fails
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("rocket.jpg", "chelsea.png"):
        (folder / name).write_bytes(_read(os.path.join(PHOTOS, name)))
    out = tmp_path / "e.emb"
    assert embed_to_dir(encoder, folder, out)["count"] == 2
    assert os.listdir(out / "metadata") == [] and os.listdir(out / "img_emb") == ["img_emb_000000.npy"]
    summary = embed_to_dir(encoder, folder, out)
    assert summary["reused"] == 2 and summary["embedded"] == 0 and not summary["repaired"]
