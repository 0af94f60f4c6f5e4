"""The `tokenizers` (Rust) pipeline of CLIPTokenizerFast, built from a vocabulary and merges.

`tokenizers` is imported when a pipeline is built, so importing clip.common never needs it.
"""

from __future__ import annotations

from typing import Any

from . import _bpe


def build_backend(vocab: dict[str, int], merges: list, settings: dict) -> Any:  # a tokenizers.Tokenizer
    """The Rust pipeline equivalent to transformers' conversion of the slow CLIP tokenizer."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    bos, eos = settings["bos_token"], settings["eos_token"]
    backend = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix=_bpe.END_OF_WORD,
            fuse_unk=False,
            unk_token=settings["unk_token"],
        )
    )
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_bpe.WORD_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])],
    )
    # normalized=True as transformers writes them: "<|ENDOFTEXT|>" is lower-cased, then matched.
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=True) for t in dict.fromkeys((bos, eos, settings["unk_token"]))]
    )
    return backend
