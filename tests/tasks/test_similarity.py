"""`clip similarity`: the matrix matches the encoder, the PNG has the size its layout gives."""

import os

import numpy as np
import pytest
from PIL import Image

from task_helpers import PHOTOS, run_clip, run_json

pytest.importorskip("matplotlib")


def test_heatmap_png_and_values(tmp_path, encoder):
    images = [os.path.join(PHOTOS, n) for n in ("chelsea.png", "rocket.jpg", "horse.png")]
    texts = ["a red circle", "a blue square"]
    out = tmp_path / "map.png"
    result = run_json("similarity", *images, "--texts", *texts, "--out", out)
    with Image.open(out) as png:
        # 320 px of labels + 3 columns of 96 + 96 px of colour bar; 24 + 96 thumbnails + 2 rows of 96 + 24
        assert png.format == "PNG" and png.size == (320 + 3 * 96 + 96, 24 + 96 + 2 * 96 + 24)
    expected = encoder.encode_images(encoder.preprocess(images)) @ encoder.embed_texts(texts).T
    np.testing.assert_allclose(result["similarity"], expected, atol=1e-5)

    out2 = tmp_path / "big.png"
    table = run_clip(
        "similarity", images[0], "--texts", "a cat", "--out", out2, "--cell", "128", subprocess_=True
    ).stdout
    assert "wrote" in table and "T1: a cat" in table
    with Image.open(out2) as png:
        assert png.size == (320 + 128 + 96, 24 + 128 + 128 + 24)


def test_texts_file_and_unreadable_image_in_a_folder(tmp_path, photos_with_junk):
    texts = tmp_path / "texts.txt"
    texts.write_text("a dog\na rocket\n")
    result = run_json("similarity", photos_with_junk, "--texts-file", texts, "--out", tmp_path / "m.png")
    assert (
        np.array(result["similarity"]).shape == (6, 2) and len(result["skipped"]) == 2
    )  # truncated.jpg, empty.png (notes.txt is no image name)


def test_unreadable_named_image_is_one_line(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    proc = run_clip("similarity", bad, "--texts", "a", "--out", tmp_path / "m.png", check=False)
    assert proc.returncode == 2 and "bad.png" in proc.stderr
