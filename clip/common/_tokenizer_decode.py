"""Decoding shared by both CLIP tokenizers: ids -> text, batches of id rows, transformers' clean-up.

A concrete tokenizer supplies `_decode(ids, skip_special_tokens)`; the vocabulary (VocabularyMixin)
checks the ids and maps tokens to ids.
"""

from __future__ import annotations

from clip.errors import InputTypeError

from ._tokenizer_vocab import VocabularyMixin
from .batch import to_numpy


class DecodingMixin(VocabularyMixin):
    """decode, batch_decode and convert_tokens_to_string over a subclass's `_decode`."""

    clean_up_tokenization_spaces: bool  # the default of decode's argument, set by the tokenizer's __init__

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        raise NotImplementedError  # each tokenizer (slow BPE, fast `tokenizers` backend) decodes its own way

    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs) -> str:
        text = self._decode(self._check_ids(token_ids), skip_special_tokens)
        return self._clean_up(text, clean_up_tokenization_spaces)

    def batch_decode(
        self, sequences, skip_special_tokens=False, clean_up_tokenization_spaces=None, **kwargs
    ) -> list[str]:
        return [self.decode(seq, skip_special_tokens, clean_up_tokenization_spaces) for seq in rows_of(sequences)]

    def convert_tokens_to_string(self, tokens) -> str:
        return self._decode(self.convert_tokens_to_ids(list(tokens)), False)

    def _clean_up(self, text, clean_up_tokenization_spaces):
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if not clean_up_tokenization_spaces:
            return text
        # transformers' English clean-up of spaces before punctuation and contractions
        for before, after in (
            (" .", "."),
            (" ?", "?"),
            (" !", "!"),
            (" ,", ","),
            (" ' ", "'"),
            (" n't", "n't"),
            (" 'm", "'m"),
            (" 's", "'s"),
            (" 've", "'ve"),
            (" 're", "'re"),
        ):
            text = text.replace(before, after)
        return text


def rows_of(sequences) -> list:
    if isinstance(sequences, (list, tuple)):
        return list(sequences)
    array = to_numpy(sequences)
    if array.ndim != 2:
        raise InputTypeError(f"sequences must be a list of id sequences or a 2-D array, got {array.ndim}-D")
    return list(array)
