"""Encoder.encode: a mixed list of images (PIL, numpy arrays, paths) and texts, in order, as
sentence-transformers' model.encode; numpy image arrays wherever images are taken."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from clip.tasks import ZeroShotClassifier, embed_images, embed_texts
from clip.tasks.backends import TaskError


def _reference(encoder, image_paths, texts):
    # the low-level calls the encoder has always had: preprocess + encode_images, tokenize + encode_texts
    images = encoder.encode_images(encoder.preprocess([Image.open(p).convert("RGB") for p in image_paths]))
    tokens = encoder.tokenize(texts)
    return images, encoder.encode_texts(tokens["input_ids"], tokens["attention_mask"])


def test_encode_a_mixed_list_in_order(encoder, shapes_dir):
    red, blue = str(shapes_dir / "red_circle.png"), shapes_dir / "blue_circle.png"
    images, texts = _reference(encoder, [red, blue, red], ["a red circle", "a blue square"])
    array = np.asarray(Image.open(red).convert("RGB"))  # HxWx3 uint8
    got = encoder.encode(["a red circle", red, Image.open(blue), "a blue square", array, blue])
    assert got.dtype == np.float32 and got.shape == (6, encoder.dim)
    expected = np.stack([texts[0], images[0], images[1], texts[1], images[2], images[1]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(encoder.encode("a red circle"), texts[0], atol=1e-5)  # one item, one vector
    np.testing.assert_allclose(encoder.encode(array), images[0], atol=1e-5)
    np.testing.assert_allclose(encoder.encode(np.stack([array, array])), images[[0, 2]], atol=1e-5)  # NHWC: N images


def test_float_arrays_in_zero_to_one_are_images_too(encoder, shapes_dir):
    path = str(shapes_dir / "yellow_circle.png")
    uint8 = np.asarray(Image.open(path).convert("RGB"))
    # transformers' rule for float pixels in [0, 1]: x 255 then 8 bits; exact for values k/255
    got = encoder.encode([uint8.astype(np.float32) / 255, uint8])
    np.testing.assert_allclose(got[0], got[1], atol=1e-5)


def test_framework_tensors_on_request(encoder):
    torch = pytest.importorskip("torch")
    vectors = encoder.encode(["a red circle", "a blue square"], return_tensors="pt")
    assert isinstance(vectors, torch.Tensor) and vectors.dtype == torch.float32
    np.testing.assert_allclose(vectors.numpy(), encoder.encode(["a red circle", "a blue square"]), atol=1e-6)
    with pytest.raises(TaskError, match="return_tensors"):
        encoder.encode(["x"], return_tensors="mx")


def test_both_embed_texts_return_the_same_type(encoder):
    texts = ["a red circle", "a green star", "a purple cross"]
    method, function = encoder.embed_texts(texts), embed_texts(encoder, texts, batch_size=2)
    assert type(method) is type(function) is np.ndarray
    np.testing.assert_allclose(function, method, atol=1e-6)


def test_numpy_arrays_wherever_images_go(encoder, shapes_dir):
    paths = sorted(str(p) for p in shapes_dir.iterdir())
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    from_paths, from_arrays = embed_images(encoder, paths), embed_images(encoder, arrays)
    assert from_arrays.sources == [f"image {i}" for i in range(len(paths))] and not from_arrays.skipped
    np.testing.assert_allclose(from_arrays.vectors, from_paths.vectors, atol=1e-5)
    classifier = ZeroShotClassifier(encoder, ["a red circle", "a blue circle"], templates="label")
    np.testing.assert_allclose(classifier.classify(arrays).probs, classifier.classify(paths).probs, atol=1e-5)


def test_what_is_neither_text_nor_image_is_one_clear_error(encoder, tmp_path):
    with pytest.raises(TaskError, match=r"item 1: int"):
        encoder.encode(["a text", 3])
    with pytest.raises(TaskError, match=r"item 0: ndarray of shape \(2, 2, 2, 2\)"):
        encoder.encode([np.zeros((2, 2, 2, 2), np.uint8)])
    missing = pathlib.Path(tmp_path) / "missing.png"
    with pytest.raises(TaskError, match="missing.png"):  # a Path is always an image: missing is an error
        encoder.encode([missing])
