"""clip eval-zero-shot: metrics by hand, the embedded model's model-card accuracy, every input
layout giving the same numbers, the class-embedding cache, the command's outputs and errors."""

import json
import os

import numpy as np
import pytest

from clip.tasks.backends import TaskError
from clip.tasks.eval_zero_shot import class_embeddings, classification_metrics, evaluate_zero_shot
from clip.tasks.eval_zero_shot_data import read_classnames
from task_helpers import run_clip, run_json

COMBOS = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star")]


def test_metrics_by_hand():
    # 3 classes, 5 images; scores rank the classes per image as written in the comments
    scores = np.array(
        [
            [0.9, 0.05, 0.05],  # true 0: predicted 0
            [0.2, 0.7, 0.1],  # true 0: predicted 1, 0 second
            [0.1, 0.8, 0.1],  # true 1: predicted 1
            [0.6, 0.3, 0.1],  # true 2: predicted 0, 2 last
            [0.3, 0.2, 0.5],  # true 2: predicted 2
        ]
    )
    targets = [0, 0, 1, 2, 2]
    found = classification_metrics(scores, targets, k=2)
    assert found["acc1"] == pytest.approx(3 / 5)
    assert found["acc2"] == pytest.approx(4 / 5)  # all but image 3 have their class in the top 2
    # recalls: class 0 1/2, class 1 1/1, class 2 1/2 -> mean 2/3
    np.testing.assert_allclose(found["recall"], [0.5, 1.0, 0.5])
    assert found["mean_per_class_recall"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(found["confusion"], [[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    # a class without images does not count in the mean; top-5 of 3 classes is always right
    found = classification_metrics(scores[:3], targets[:3], num_classes=3)
    assert found["mean_per_class_recall"] == pytest.approx((0.5 + 1.0) / 2) and found["acc5"] == 1.0


def _image_folder(root, count, seed, combos=None):
    from clip import data

    images, labels, targets = data.zero_shot_set(count, seed=seed, image_size=48, combos=combos)
    for i, (image, target) in enumerate(zip(images, targets)):
        folder = root / labels[target].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:04d}.png")
    return root, labels, targets


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return _image_folder(tmp_path_factory.mktemp("small") / "shapes", 24, 4243, COMBOS)


def test_the_embedded_model_scores_its_model_card_accuracy(encoder, tmp_path):
    # the model card's zero-shot row: 600 single-shape images (seed 9000001) over all 30 colour x
    # shape labels, 91.7% top-1 (tools/eval_default_model.py), labels used as they are
    root, labels, _ = _image_folder(tmp_path / "shapes", 600, 9_000_001)
    result = evaluate_zero_shot(encoder, root, templates="label", cache=None)
    assert result.count == 600 and sorted(result.classnames) == sorted(labels)
    assert result.metrics["acc1"] == pytest.approx(0.917, abs=0.006)
    assert result.metrics["mean_per_class_recall"] == pytest.approx(0.917, abs=0.006)  # 20 images per class
    assert result.metrics["acc5"] >= result.metrics["acc1"]
    assert sum(row["support"] for row in result.per_class) == 600 and result.confusion.sum() == 600


def test_every_layout_gives_the_same_numbers(encoder, small_set, tmp_path):
    import webdataset as wds

    root, _, _ = small_set
    folder = evaluate_zero_shot(encoder, root, templates="label", cache=None)
    files = sorted(
        (os.path.relpath(os.path.join(d, f), root), os.path.basename(d)) for d, _, fs in os.walk(root) for f in fs
    )
    classes = sorted({name for _, name in files})
    (root / "classes.txt").write_text("\n".join(c.replace("_", " ") for c in classes) + "\n")
    # CSV of names, JSONL of indices into the mapping, and webdataset shards with a cls field
    (root / "labels.csv").write_text("image,label\n" + "".join(f"{p},{n.replace('_', ' ')}\n" for p, n in files))
    (root / "labels.jsonl").write_text(
        "".join(json.dumps({"path": p, "label": classes.index(n)}) + "\n" for p, n in files)
    )
    shards = tmp_path / "shards"
    shards.mkdir()
    for part in range(2):
        with wds.TarWriter(str(shards / f"val-{part:06d}.tar")) as sink:
            for i, (path, name) in enumerate(files[part::2]):
                sink.write(
                    {"__key__": f"{part}_{i:04d}", "png": (root / path).read_bytes(), "cls": str(classes.index(name))}
                )
    results = [
        evaluate_zero_shot(encoder, root / "labels.csv", templates="label", cache=None),
        evaluate_zero_shot(
            encoder, root / "labels.jsonl", templates="label", classnames=root / "classes.txt", cache=None
        ),
        evaluate_zero_shot(encoder, shards, templates="label", classnames=root / "classes.txt", cache=None),
        evaluate_zero_shot(
            encoder,
            str(shards / "val-{000000..000001}.tar"),
            templates="label",
            classnames=root / "classes.txt",
            cache=None,
        ),
    ]
    assert [r.dataset for r in (folder, *results)] == ["shapes", "labels", "labels", "shards", "val"]
    for result in results:
        assert result.count == folder.count == 24 and result.classnames == folder.classnames
        assert result.metrics == pytest.approx(folder.metrics)
        np.testing.assert_array_equal(result.confusion, folder.confusion)


def test_hf_datasets_directory(encoder, small_set, tmp_path):
    datasets = pytest.importorskip("datasets")
    root, _, _ = small_set
    folder = evaluate_zero_shot(encoder, root, templates="label", cache=None)
    files = sorted(
        (os.path.join(d, f), os.path.basename(d)) for d, _, fs in os.walk(root) for f in fs if f.endswith(".png")
    )
    classes = sorted({name for _, name in files})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
    data = datasets.Dataset.from_dict(
        {"image": [p for p, _ in files], "label": [classes.index(n) for _, n in files]}, features=features
    )
    data.save_to_disk(str(tmp_path / "hf"))
    result = evaluate_zero_shot(encoder, tmp_path / "hf", templates="label", cache=None)
    assert result.metrics == pytest.approx(folder.metrics)


def test_class_embeddings_are_cached_per_weights(encoder, tmp_path, monkeypatch):
    names, templates = ["a red circle", "a blue square"], ["{}", "a photo of {}"]
    first = class_embeddings(encoder, names, templates, cache=tmp_path)
    (cached,) = list(tmp_path.iterdir())
    calls = []
    monkeypatch.setattr(type(encoder), "embed_texts", lambda self, *a, **k: calls.append(a) or np.zeros(0))
    np.testing.assert_array_equal(class_embeddings(encoder, names, templates, cache=tmp_path), first)
    assert not calls  # read back, not recomputed
    monkeypatch.undo()
    # other templates or other weights: another key
    class_embeddings(encoder, names, ["{}"], cache=tmp_path)
    monkeypatch.setattr(encoder, "fingerprint", "0" * 64)
    class_embeddings(encoder, names, templates, cache=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3 and cached.exists()
    # a damaged cache file is recomputed
    monkeypatch.undo()
    cached.write_bytes(b"garbage")
    np.testing.assert_allclose(class_embeddings(encoder, names, templates, cache=tmp_path), first, atol=1e-6)


def test_command_writes_benchmark_json_and_confusion_png(small_set, tmp_path):
    from PIL import Image

    root, _, _ = small_set
    out, png = tmp_path / "result.json", tmp_path / "confusion.png"
    env_cache = ["--cache-dir", tmp_path / "cache"]
    table = run_clip(
        "eval-zero-shot", root, "--templates", "label", "--output", out, "--confusion", png, *env_cache
    ).stdout
    assert "top-1" in table and "red circle" in table and f"wrote {png}" in table
    result = json.loads(out.read_text())
    assert set(result) == {"dataset", "model", "pretrained", "task", "metrics", "language"}
    assert result["task"] == "zeroshot_classification" and set(result["metrics"]) == {
        "acc1",
        "acc5",
        "mean_per_class_recall",
    }
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) > 200
    full = run_json("eval-zero-shot", root, "--templates", "label", *env_cache)
    assert (
        full["metrics"] == result["metrics"]
        and len(full["per_class"]) == 4
        and np.array(full["confusion"]).shape == (4, 4)
    )


def test_class_name_files(tmp_path):
    (tmp_path / "a.json").write_text('{"1": "dog", "0": "cat"}')
    (tmp_path / "b.json").write_text('["cat", "dog"]')
    (tmp_path / "c.txt").write_text("cat\n\ndog\n")
    assert (
        read_classnames(tmp_path / "a.json")
        == read_classnames(tmp_path / "b.json")
        == read_classnames(tmp_path / "c.txt")
        == ["cat", "dog"]
    )
    (tmp_path / "d.json").write_text('{"0": "cat", "2": "dog"}')
    with pytest.raises(TaskError, match="without gaps"):
        read_classnames(tmp_path / "d.json")


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda d: None, ["--templates", "none"], "templates 'none'"),
        (
            lambda d: (d / "t.csv").write_text("image,label\n../../etc/passwd,cat\n"),
            ["t.csv"],
            "no usable (image, label) rows",
        ),
        (
            lambda d: (d / "e.jsonl").write_text('{"path": "x.png", "label": "7"}\n'),
            ["e.jsonl", "--classnames", "c.txt"],
            "label '7'",
        ),
        (lambda d: None, ["missing_dir"], "no such file or directory"),
        (lambda d: None, ["--output", "r.txt"], "name it .json"),
    ],
)
def test_command_errors_are_one_line(small_set, tmp_path, setup, args, message):
    root, _, _ = small_set
    work = tmp_path
    (work / "c.txt").write_text("cat\ndog\n")
    setup(work)
    first = [str(work / args[0])] if args and not args[0].startswith("--") else [str(root)]
    rest = args[1:] if args and not args[0].startswith("--") else args
    rest = [str(work / a) if a == "c.txt" else (str(work / a) if a == "r.txt" else a) for a in rest]
    proc = run_clip("eval-zero-shot", *first, *rest, "--no-cache", check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_hf_directory_without_datasets_installed_is_one_clear_line(tmp_path):
    try:
        import datasets  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("datasets is installed")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "dataset_info.json").write_text("{}")
    proc = run_clip("eval-zero-shot", tmp_path / "hf", "--no-cache", check=False)
    assert proc.returncode == 2 and "pip install datasets" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
