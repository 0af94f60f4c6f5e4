"""The encoder's fast paths give the eager path's vectors: torch.compile (pt), the Flax attention
kernels, and the host-side text trimming; each checked against an independent computation."""

import importlib.util

import numpy as np
import pytest

from clip.common import checks
from clip.tasks import compiled, load_encoder
from clip.tasks.backends import TaskError

RNG = np.random.default_rng(16)
TEXTS = ["a red circle", "a photo of a big blue square on a wooden table", "x"]
needs_flax = pytest.mark.skipif(importlib.util.find_spec("flax") is None, reason="flax not installed")


def _padded_tokens(encoder):
    """Texts padded to the model's full length, as a caller with fixed-size batches sends them."""
    return encoder.processor(
        text=TEXTS, padding="max_length", truncation=True, max_length=encoder.max_text_length, return_tensors="np"
    )


def test_trim_texts_keeps_up_to_the_last_pooled_token(encoder):
    config = load_config()
    tokens = _padded_tokens(encoder)
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    trimmed_ids, trimmed_mask = compiled.trim_texts(ids, mask, config)
    # the longest text's end token is its last kept column (counted by hand from the mask)
    assert trimmed_ids.shape[1] == int(mask.sum(axis=1).max())
    assert trimmed_mask is not None and (trimmed_mask == mask[:, : trimmed_ids.shape[1]]).all()
    # one text, nothing padded after trimming: the mask is dropped (the causal kernel's case)
    one_ids, one_mask = compiled.trim_texts(ids[:1], mask[:1], config)
    assert one_mask is None and one_ids.shape[1] == int(mask[0].sum())


def test_pad_texts_never_moves_the_pooled_token():
    config = load_config()
    ids = np.array([[49406, 320, 49407, 49407], [49406, 320, 1125, 49407]])  # pad == eos in the first row
    padded, mask = compiled.pad_texts(ids, None, 8, config)
    assert padded.shape == (2, 8) and mask[:, 4:].sum() == 0 and mask[:, :4].all()
    assert (checks.pooled_token_positions(padded, config) == checks.pooled_token_positions(ids, config)).all()
    assert [compiled.padded_batch(n) for n in (1, 2, 3, 5, 17, 32)] == [1, 2, 4, 8, 32, 32]


def test_text_vectors_of_full_length_padding_match_transformers(encoder):
    """The trimmed, mask-less host path gives transformers' features of the untrimmed batch."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from clip.models import default_model_path

    reference = transformers.CLIPModel.from_pretrained(default_model_path(), dtype=torch.float32).eval()
    tokens = _padded_tokens(encoder)
    with torch.no_grad():
        expected = reference.get_text_features(
            input_ids=torch.from_numpy(tokens["input_ids"]), attention_mask=torch.from_numpy(tokens["attention_mask"])
        )
    expected = getattr(expected, "pooler_output", expected).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = encoder.encode_texts(tokens["input_ids"], tokens["attention_mask"])
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow  # inductor compiles on the CPU: ~40 s on 2 cores
def test_compiled_pt_encoder_matches_eager(encoder):
    fast = load_encoder(compile=True)
    for batch in (5, 3):  # a second batch size: the recompile with a symbolic batch dimension
        pixels = RNG.standard_normal((batch, 3, 48, 48)).astype(np.float32)
        np.testing.assert_allclose(fast.encode_images(pixels), encoder.encode_images(pixels), atol=1e-5)
    tokens = _padded_tokens(encoder)
    np.testing.assert_allclose(
        fast.encode_texts(tokens["input_ids"], tokens["attention_mask"]),
        encoder.encode_texts(tokens["input_ids"], tokens["attention_mask"]),
        atol=1e-5,
    )


@needs_flax
@pytest.mark.parametrize("implementation", ["xla", "auto"])
def test_flax_attention_kernels_match_the_matmul_path(implementation, monkeypatch):
    from clip.flax import layers

    traced = []  # the fused kernel's calls while jax traces: proof that the fused path runs
    original = layers.fused_attention
    monkeypatch.setattr(layers, "fused_attention", lambda *args: traced.append(args[-1]) or original(*args))
    plain = load_encoder(backend="flax", device="cpu")
    fused = load_encoder(backend="flax", device="cpu", flax_attention=implementation)
    pixels = RNG.standard_normal((3, 3, 48, 48)).astype(np.float32)
    np.testing.assert_allclose(fused.encode_images(pixels), plain.encode_images(pixels), atol=1e-5)
    tokens = plain.tokenize(TEXTS)  # padded to the longest: a mask-ful batch
    np.testing.assert_allclose(
        fused.encode_texts(tokens["input_ids"], tokens["attention_mask"]),
        plain.encode_texts(tokens["input_ids"], tokens["attention_mask"]),
        atol=1e-5,
    )
    assert traced and set(traced) == {implementation}  # every layer of both towers (the plain encoder: none)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backend": "tf", "compile": True}, "compile is for the pt backend"),
        ({"flax_attention": "fast"}, "unknown flax_attention 'fast'"),
    ],
)
def test_bad_fast_path_options_are_task_errors(kwargs, message):
    with pytest.raises(TaskError, match=message):
        load_encoder(**kwargs)


def load_config():
    from clip.common.config import CLIPConfig
    from clip.models import default_model_path

    return CLIPConfig.from_pretrained(default_model_path()).text_config


def test_pt_image_call_takes_pixels_already_on_the_device(encoder):
    """gpu_decode's crops become model input where they were decoded; the pt call takes them there."""
    torch = pytest.importorskip("torch")
    from clip.tasks import gpu_decode

    crops = RNG.integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    on_device = gpu_decode.pixels_from_crops(torch.from_numpy(crops), encoder.processor.image_processor)
    in_numpy = gpu_decode.pixels_from_crops(crops, encoder.processor.image_processor)
    np.testing.assert_array_equal(encoder._image_fn(on_device), encoder._image_fn(in_numpy))
