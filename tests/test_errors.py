"""One exception family: `except clip.errors.ClipError` catches the errors of bad input, and each is
still the builtin exception transformers raises for the same input (the drop-in promise)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from clip import errors
from clip.common.config import CLIPConfig, CLIPTextConfig
from clip.common.image_processor import CLIPImageProcessor
from clip.common.tokenizer import CLIPTokenizerFast

transformers = pytest.importorskip("transformers")


def _raised(call) -> BaseException:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except Exception as err:  # noqa: BLE001 - the exception is the result
            return err
    raise AssertionError(f"{call} raised nothing")


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Ours and transformers' fast tokenizer over the same vocabulary files."""
    transformers.logging.set_verbosity_error()
    ours = CLIPTokenizerFast()
    folder = tmp_path_factory.mktemp("tokenizer")
    ours.save_pretrained(folder)
    return ours, transformers.CLIPTokenizerFast.from_pretrained(folder)


def _cases(tokenizers, missing):
    ours_tok, their_tok = tokenizers
    image = np.zeros((8, 8, 3), np.uint8)
    return {
        "tokenizer: token ids of the wrong type": (lambda t: t.decode([1.5, 2.0]), ours_tok, their_tok),
        "tokenizer: unknown padding": (lambda t: t("a", padding="maximum"), ours_tok, their_tok),
        "tokenizer: unknown truncation": (lambda t: t("a", truncation="sideways"), ours_tok, their_tok),
        "tokenizer: missing directory": (
            lambda cls: cls.from_pretrained(missing),
            CLIPTokenizerFast,
            transformers.CLIPTokenizerFast,
        ),
        "image processor: unknown return_tensors": (
            lambda p: p(images=image, return_tensors="torchy"),
            CLIPImageProcessor(),
            transformers.CLIPImageProcessor(),
        ),
        "image processor: missing directory": (
            lambda cls: cls.from_pretrained(missing),
            CLIPImageProcessor,
            transformers.CLIPImageProcessor,
        ),
        "config: sub-config of the wrong type": (lambda cls: cls(text_config=5), CLIPConfig, transformers.CLIPConfig),
        "config: missing directory": (
            lambda cls: cls.from_pretrained(missing),
            CLIPTextConfig,
            transformers.CLIPTextConfig,
        ),
    }


CASES = [
    "tokenizer: token ids of the wrong type",
    "tokenizer: unknown padding",
    "tokenizer: unknown truncation",
    "tokenizer: missing directory",
    "image processor: unknown return_tensors",
    "image processor: missing directory",
    "config: sub-config of the wrong type",
    "config: missing directory",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_a_clip_error_and_the_builtin_transformers_raises(case, tokenizers, tmp_path):
    call, ours, theirs = _cases(tokenizers, str(tmp_path / "missing"))[case]
    mine, reference = _raised(lambda: call(ours)), _raised(lambda: call(theirs))
    assert isinstance(mine, errors.ClipError), f"{case}: {type(mine).__mro__}"
    builtin = next(c for c in type(reference).__mro__ if c.__module__ == "builtins")
    assert isinstance(mine, builtin), f"{case}: ours {type(mine).__mro__}, transformers raises {builtin.__name__}"


def test_embed_task_errors_are_clip_errors_and_value_errors(tmp_path):
    from clip.tasks.embed import embed_to_dir

    (tmp_path / "photos").mkdir()
    for kwargs in ({"chunk_size": 0}, {"storage": "floppy"}, {"shard": (2, 2)}):
        err = _raised(lambda kwargs=kwargs: embed_to_dir(None, tmp_path / "photos", tmp_path / "out", **kwargs))
        assert isinstance(err, errors.TaskError) and isinstance(err, errors.ClipError) and isinstance(err, ValueError)
    err = _raised(lambda: embed_to_dir(None, tmp_path / "nothing-here", tmp_path / "out2"))
    assert isinstance(err, errors.ClipError) and isinstance(err, ValueError), type(err).__mro__


def test_each_family_member_is_the_builtin_it_promises():
    promised = {
        errors.InputError: ValueError,
        errors.InputTypeError: TypeError,
        errors.TaskError: ValueError,
        errors.UnreadableFileError: OSError,
        errors.InputFileNotFoundError: FileNotFoundError,
        errors.CheckpointNotFoundError: OSError,
        errors.CheckpointShapeError: (ValueError, RuntimeError),
        errors.ConversionError: ValueError,
    }
    assert set(promised) | {errors.ClipError} == {getattr(errors, name) for name in errors.__all__}
    for member, builtin in promised.items():
        assert issubclass(member, errors.ClipError) and issubclass(member, builtin), member
