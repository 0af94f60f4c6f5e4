"""Datasets: the synthetic shapes are deterministic and honour the held-out combinations; caption
files report unusable rows and skip them; digits are captioned scans."""

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from clip import data
from clip.data import synthetic


def test_synthetic_is_deterministic_and_seeded():
    a, b = data.SyntheticShapes(50, seed=1, image_size=32), data.SyntheticShapes(50, seed=1, image_size=32)
    for i in (0, 7, 49):
        (ia, ca), (ib, cb) = a[i], b[i]
        assert ca == cb and np.array_equal(np.asarray(ia), np.asarray(ib))
        assert ia.size == (32, 32) and ia.mode == "RGB"
    other = data.SyntheticShapes(50, seed=2, image_size=32)
    assert [a[i][1] for i in range(50)] != [other[i][1] for i in range(50)]
    with pytest.raises(IndexError):
        a[50]


def test_synthetic_captions_describe_the_scene():
    ds = data.SyntheticShapes(400, seed=0)
    singles = doubles = 0
    for i in range(len(ds)):
        scene = ds.scene(i)
        words = scene["caption"].split()
        for item in scene["shapes"]:
            assert item["colour"] in words and item["shape"] in words
            assert (item["colour"], item["shape"]) not in synthetic.HELD_OUT_COMBOS
        if len(scene["shapes"]) == 1:
            singles += 1
        else:
            doubles += 1
            assert any(rel in scene["caption"] for rel in synthetic.RELATIONS)
    assert singles > 100 and doubles > 100


def test_synthetic_relation_matches_positions():
    ds = data.SyntheticShapes(200, seed=4)
    for i in range(len(ds)):
        scene = ds.scene(i)
        if len(scene["shapes"]) == 2:
            a, b = scene["shapes"]
            caption = scene["caption"]
            if " left of " in caption:
                assert a["x"] < b["x"]
            elif " right of " in caption:
                assert a["x"] > b["x"]
            elif " above " in caption:
                assert a["y"] < b["y"]
            else:
                assert a["y"] > b["y"]


def test_synthetic_colour_is_where_the_shape_is():
    ds = data.SyntheticShapes(20, seed=0, image_size=64, two_shape_fraction=0.0)
    for i in range(20):
        image, _ = ds[i]
        item = ds.scene(i)["shapes"][0]
        pixel = np.asarray(image)[int(item["y"] * 64), int(item["x"] * 64)].astype(int)
        assert np.abs(pixel - np.asarray(item["rgb"])).max() < 40


def test_zero_shot_set_targets():
    images, labels, targets = data.zero_shot_set(10, combos=synthetic.HELD_OUT_COMBOS, image_size=32)
    assert len(labels) == len(synthetic.COLOURS) * len(synthetic.SHAPES) and len(images) == 10
    assert {labels[t] for t in targets} == {f"a {c} {s}" for c, s in synthetic.HELD_OUT_COMBOS}


def _png(path, colour=(255, 0, 0)):
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def test_csv_reports_and_skips_unusable_rows(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", (0, 255, 0))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    rows = [
        "image,caption",
        "a.png,a red square",
        "missing.png,a ghost",
        "broken.png,a broken file",
        "b.png,",
        "onlyonecolumn",
        f"{tmp_path / 'b.png'},a green square",
    ]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match="skipped 4 unusable row") as record:
        ds = data.load_captions(tmp_path / "pairs.csv")
    message = str(record[0].message)
    assert "missing.png not found" in message and "cannot be decoded" in message
    assert "empty caption" in message and "pairs.csv:6" in message
    assert len(ds) == 2 and len(ds.problems) == 4
    image, caption = ds[1]
    assert caption == "a green square" and image.getpixel((0, 0)) == (0, 255, 0)


def test_csv_without_header_and_jsonl_and_folder(tmp_path):
    _png(tmp_path / "a.png")
    (tmp_path / "plain.csv").write_text("a.png,a red square\n")
    assert data.load_captions(tmp_path / "plain.csv")[0][1] == "a red square"

    lines = [json.dumps({"image": "a.png", "text": "red"}), "{not json", json.dumps({"caption": "no image"})]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="skipped 2"):
        ds = data.load_captions(tmp_path / "pairs.jsonl")
    assert len(ds) == 1 and ds[0][1] == "red"

    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    _png(folder / "x.png")
    (folder / "x.txt").write_text("a red square\n")
    _png(folder / "sub" / "y.png")  # no caption beside it
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = data.load_captions(folder)
    assert [c for _, c in ds.rows] == ["a red square"]


def test_no_usable_rows_is_an_error(tmp_path):
    (tmp_path / "bad.csv").write_text("image,caption\nnope.png,x\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no usable"):
            data.load_captions(tmp_path / "bad.csv")


def test_split_indices_partition():
    train, val = data.split_indices(100, 0.1, seed=0)
    assert len(val) == 10 and len(train) == 90
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert np.array_equal(val, data.split_indices(100, 0.1, seed=0)[1])


def test_digits():
    pytest.importorskip("sklearn")
    ds = data.DigitsDataset(image_size=24)
    image, caption = ds[0]
    assert len(ds) == 1797 and image.size == (24, 24)
    assert caption == f"a handwritten digit {ds.labels[0]}"
    assert ds.zero_shot_labels()[7] == "a handwritten digit 7"


def test_digits_without_scikit_learn_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.DigitsDataset()
