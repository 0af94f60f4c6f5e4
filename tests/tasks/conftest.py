"""Fixtures of the task tests: the embedded default model as an in-process encoder, and small
image folders (committed photos, generated coloured shapes)."""

import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from task_helpers import COLOUR_COMBOS, PHOTOS


@pytest.fixture(scope="session")
def encoder():
    pytest.importorskip("torch")
    from clip.tasks import load_encoder

    return load_encoder()  # the embedded default model, whatever its current weights


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """Four circles of different colours, named after their colour."""
    from clip.data import zero_shot_set

    folder = tmp_path_factory.mktemp("shapes")
    images, _, _ = zero_shot_set(len(COLOUR_COMBOS), seed=4242, image_size=48, combos=COLOUR_COMBOS)
    for (colour, shape), image in zip(COLOUR_COMBOS, images):
        image.save(folder / f"{colour}_{shape}.png")
    return folder


@pytest.fixture
def photos_with_junk(tmp_path):
    """The committed photos plus a non-image, a truncated JPEG and an empty file, in a subfolder."""
    folder = tmp_path / "photos"
    shutil.copytree(PHOTOS, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    (folder / "notes.txt").write_text("not an image\n")
    with open(os.path.join(PHOTOS, "rocket.jpg"), "rb") as f:
        (folder / "sub").mkdir()
        (folder / "sub" / "truncated.jpg").write_bytes(f.read()[:4000])
    (folder / "sub" / "empty.png").write_bytes(b"")
    return folder
