"""Zero-shot classification: prompt ensembling by hand, templates, the command, three backends."""

import json
import os

import numpy as np
import pytest

from clip.tasks.templates import IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, get_templates
from clip.tasks.zero_shot import ZeroShotClassifier, ensemble_embeddings
from task_helpers import COLOUR_COMBOS, PHOTOS, run_clip, run_json


def test_ensembling_by_hand():
    # label 0: prompts (3, 4) and (0, 2) -> unit (0.6, 0.8), (0, 1) -> mean (0.3, 0.9) -> /sqrt(0.9)
    # label 1: prompts (1, 0) and (2, 0) -> unit (1, 0) twice -> (1, 0)
    prompts = np.array([[[3, 4], [0, 2]], [[1, 0], [2, 0]]], dtype=np.float32)
    expected = np.array([[0.3, 0.9] / np.sqrt(0.9), [1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(ensemble_embeddings(prompts), expected, atol=1e-7)


def test_the_paper_templates_ship():
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert "itap of a {}." in IMAGENET_TEMPLATES and SIMPLE_TEMPLATES == ("a photo of a {}.",)
    assert get_templates("imagenet") == IMAGENET_TEMPLATES and get_templates(None) == ("This is a photo of {}.",)
    assert get_templates("label") == ("{}",)


def test_templates_from_a_file_or_a_string(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("# my prompts\na {} on a table\n\nthe {}, seen from above\n")
    assert get_templates(str(path)) == ("a {} on a table", "the {}, seen from above")
    assert get_templates("a drawing of a {}") == ("a drawing of a {}",)
    with pytest.raises(ValueError, match="placeholder"):
        get_templates("no placeholder")
    path.write_text("two {} {}\n")
    with pytest.raises(ValueError, match="exactly one"):
        get_templates(str(path))


def test_classifier_matches_a_hand_computation(encoder, shapes_dir):
    labels = ["circle", "square"]
    templates = ["a red {}", "a small {}", "a {} on grey"]
    classifier = ZeroShotClassifier(encoder, labels, templates)
    images = sorted(str(p) for p in shapes_dir.iterdir())
    result = classifier.classify(images)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    classes = []
    for label in labels:
        tokens = encoder.tokenize([t.replace("{}", label) for t in templates])
        classes.append(unit(unit(encoder.encode_texts(tokens["input_ids"], tokens["attention_mask"])).mean(0)))
    image_embeds = unit(encoder.encode_images(encoder.preprocess(images)))
    logits = np.exp(encoder.logit_scale) * image_embeds @ np.stack(classes).T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(result.probs, probs, atol=1e-5)
    assert result.sources == images
    assert [top[0][0] for top in result.top(1)] == [labels[i] for i in probs.argmax(1)]


def test_command_table_and_templates(shapes_dir):
    labels = [f"a {colour} circle" for colour, _ in COLOUR_COMBOS]
    red = str(shapes_dir / "red_circle.png")
    table = run_clip(
        "zero-shot", red, "--labels", ",".join(labels), "--templates", "label", "--top-k", "2", subprocess_=True
    ).stdout
    lines = table.splitlines()
    assert lines[0] == red and lines[1].strip().endswith("a red circle") and "%" in lines[1] and len(lines) == 3
    # colour words, ensembled over the paper's templates: the red one still comes first
    result = run_json(
        "zero-shot", red, "--labels", "red,blue,yellow,green", "--templates", "a {} circle", "--top-k", "1"
    )
    assert result[0]["labels"][0]["label"] == "red"


def test_folder_with_unreadable_files_is_classified_and_they_are_listed(photos_with_junk):
    proc = run_clip("zero-shot", photos_with_junk, "--labels", "a,b", "--json")
    results = json.loads(proc.stdout)
    assert sorted(os.path.basename(r["image"]) for r in results) == sorted(os.listdir(PHOTOS))
    for name in ("truncated.jpg", "empty.png"):
        assert name in proc.stderr
    assert "notes.txt" not in proc.stderr  # not an image name: not an input (sidecars are not listed)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, message, subprocess_",
    [
        (["--labels", ","], "--labels is empty", False),
        (["--labels", "a", "--model", "/no/such/model"], "no such directory", True),
        (["--labels", "a", "--templates", "nonsense"], "templates 'nonsense'", False),
    ],
)
def test_bad_input_is_one_line(args, message, subprocess_):
    proc = run_clip("zero-shot", PHOTOS, *args, check=False, subprocess_=subprocess_)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_same_probabilities_from_all_three_backends(shapes_dir):
    pytest.importorskip("tensorflow")
    pytest.importorskip("clip.flax")
    labels = ",".join(f"a {colour} circle" for colour, _ in COLOUR_COMBOS)
    probs = {}
    for backend in ("pt", "tf", "flax"):
        results = run_json(
            "zero-shot",
            shapes_dir,
            "--labels",
            labels,
            "--templates",
            "simple",
            "--top-k",
            "4",
            "--backend",
            backend,
            subprocess_=True,
        )
        probs[backend] = np.array(
            [[x["probability"] for x in sorted(r["labels"], key=lambda x: x["label"])] for r in results]
        )
    np.testing.assert_allclose(probs["tf"], probs["pt"], atol=1e-4)
    np.testing.assert_allclose(probs["flax"], probs["pt"], atol=1e-4)
