"""Recall@K and MRR against values worked out by hand; `clip eval-retrieval` against the encoder."""

import csv
import os

import numpy as np
import pytest

from clip.tasks.retrieval import ranks_of_targets, retrieval_metrics
from task_helpers import PHOTOS, run_clip, run_json


def test_metrics_by_hand():
    # 3 images (unit axes), 4 captions; caption j describes image text_to_image[j]
    images = np.eye(3, dtype=np.float32)
    texts = np.array(
        [
            [0.9, 0.1, 0.0],  # image 0: rank 1
            [0.5, 0.2, 0.3],  # image 1: scores 0.5, 0.2, 0.3 -> rank 3
            [0.1, 0.6, 0.3],  # image 2: scores 0.1, 0.6, 0.3 -> rank 2
            [0.0, 0.2, 0.8],  # image 2: rank 1
        ],
        dtype=np.float32,
    )
    result = retrieval_metrics(images, texts, [0, 1, 2, 2], ks=(1, 2))
    t2i = result["text_to_image"]
    assert t2i["R@1"] == pytest.approx(2 / 4) and t2i["R@2"] == pytest.approx(3 / 4)
    assert t2i["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1) / 4)
    # image 0 column: captions score 0.9, 0.5, 0.1, 0.0 -> its caption 0 is first: rank 1
    # image 1 column: 0.1, 0.2, 0.6, 0.2 -> caption 1 (0.2) is behind 0.6 only (tie with 0.2 counts for it): rank 2
    # image 2 column: 0.0, 0.3, 0.3, 0.8 -> its captions 2 and 3; caption 3 is first: rank 1
    i2t = result["image_to_text"]
    assert i2t["R@1"] == pytest.approx(2 / 3) and i2t["R@2"] == pytest.approx(1.0)
    assert i2t["MRR"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert result["images"] == 3 and result["texts"] == 4


def test_ranks_with_several_targets():
    scores = np.array([[0.1, 0.9, 0.5, 0.7]])
    assert ranks_of_targets(scores, [[0, 2]]).tolist() == [3]
    assert ranks_of_targets(scores, [1]).tolist() == [1]


def test_command_on_a_captions_file(tmp_path, encoder):
    rows = [
        ("chelsea.png", "a red circle"),
        ("rocket.jpg", "a blue square"),
        ("horse.png", "a green star"),
        ("horse.png", "a yellow cross"),
        ("coffee.png", "a purple triangle"),
        ("missing.png", "gone"),
    ]
    path = tmp_path / "captions.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerows(
            (os.path.join(PHOTOS, image) if image != "missing.png" else image, caption) for image, caption in rows
        )
    result = run_json("eval-retrieval", path, "--ks", "1,2")
    assert [s["source"] for s in result["skipped"]] == [f"{path}:7"]

    names = ["chelsea.png", "rocket.jpg", "horse.png", "coffee.png"]
    images = encoder.encode_images(encoder.preprocess([os.path.join(PHOTOS, n) for n in names]))
    texts = encoder.embed_texts([caption for _, caption in rows[:5]])
    expected = retrieval_metrics(images, texts, [0, 1, 2, 2, 3], ks=(1, 2))
    for direction in ("text_to_image", "image_to_text"):
        for name, value in expected[direction].items():
            assert result[direction][name] == pytest.approx(value, abs=1e-6)

    table = run_clip("eval-retrieval", path).stdout
    assert "text->image" in table and "R@10" in table and "4 images, 5 captions" in table


def test_missing_captions_file_is_one_line(tmp_path):
    proc = run_clip("eval-retrieval", tmp_path / "nope.csv", check=False, subprocess_=True)
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
