"""Text arguments of the tokenizers' __call__ as batches, and the offsets truncation keeps."""

from __future__ import annotations

from clip.errors import InputTypeError


def keep_offsets(offsets, kept_ids, side):
    """The offsets of the ids truncation kept."""
    if offsets is None or kept_ids is None:
        return None
    return offsets[len(offsets) - len(kept_ids) :] if side == "left" else offsets[: len(kept_ids)]


def as_batch(text, name: str, split_into_words: bool) -> tuple[list[str], bool]:
    """(texts, batched). Pre-split words are joined by spaces: CLIP splits words at whitespace anyway."""
    if split_into_words:
        if isinstance(text, (list, tuple)) and text and all(isinstance(t, (list, tuple)) for t in text):
            return [" ".join(_check_words(t, name)) for t in text], True
        return [" ".join(_check_words(text, name))], False
    if isinstance(text, str):
        return [text], False
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return list(text), True
    kind = type(text).__name__
    if isinstance(text, (list, tuple)):
        kind = f"{kind} holding {sorted({type(t).__name__ for t in text if not isinstance(t, str)})}"
    raise InputTypeError(f"{name} must be a string or a list of strings, got {kind}")


def _check_words(words, name):
    if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
        raise InputTypeError(f"{name} with is_split_into_words=True must be a list of strings (or a list of those)")
    return words
