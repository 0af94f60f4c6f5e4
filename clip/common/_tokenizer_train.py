"""Training a new BPE vocabulary with CLIP's fast-tokenizer pipeline (train_new_from_iterator).

The new tokenizer keeps the old one's normalizer, pre-tokenizer, decoder and post-processor;
only the BPE vocabulary and merges are learned, by the Rust trainer, from the given texts. The
special tokens come first in the new vocabulary and the post-processor points at their new ids.
"""

from __future__ import annotations

import json

from clip.errors import InputError


def train_backend(
    tokenizer, text_iterator, vocab_size: int, length=None, new_special_tokens=None, special_tokens_map=None
):
    """A trained `tokenizers.Tokenizer` with `tokenizer`'s pipeline and a vocabulary of `vocab_size`."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise InputError(f"vocab_size must be a positive int, got {vocab_size!r}")
    rename = dict(special_tokens_map or {})
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data["model"]
    model["vocab"], model["merges"] = {}, []
    if model.get("unk_token") in rename:
        model["unk_token"] = rename[model["unk_token"]]
    specials = [rename.get(t["content"], t["content"]) for t in data.pop("added_tokens", []) if t.get("special")]
    specials += [str(getattr(t, "content", t)) for t in (new_special_tokens or [])]
    post = data.pop("post_processor", None)
    data["padding"] = data["truncation"] = None
    backend = Tokenizer.from_str(json.dumps(data))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(dict.fromkeys(specials)),
        # every byte symbol stays encodable, whatever the texts hold
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        continuing_subword_prefix=model.get("continuing_subword_prefix") or "",
        end_of_word_suffix=model.get("end_of_word_suffix") or "",
    )
    backend.train_from_iterator(text_iterator, trainer=trainer, length=length)
    if post is not None:
        for entry in (post.get("special_tokens") or {}).values():
            entry["tokens"] = [rename.get(t, t) for t in entry["tokens"]]
            entry["ids"] = [_token_id(backend, t) for t in entry["tokens"]]
        trained = json.loads(backend.to_str())
        trained["post_processor"] = post
        backend = Tokenizer.from_str(json.dumps(trained))
    return backend


def _token_id(backend, token: str) -> int:
    found = backend.token_to_id(token)
    if found is None:
        raise InputError(f"the post-processor's token {token!r} is not in the trained vocabulary")
    return found
