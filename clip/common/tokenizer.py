"""CLIP tokenizers: `CLIPTokenizer` (pure Python BPE) and `CLIPTokenizerFast` (Rust `tokenizers`).

Each gives the ids of the transformers tokenizer of the same name, and reads and writes the files
that transformers reads and writes. The two differ from each other exactly where transformers'
two differ: the slow one cleans text with ftfy (mojibake, HTML entities, ligatures, ...) before
splitting it, the fast one only NFC-normalizes it.

Text that cannot be encoded as UTF-8 (lone surrogates, e.g. from a file decoded with
errors="surrogateescape") is handled the same way by both: each lone surrogate reads as U+FFFD,
the replacement character, which is what ftfy makes of it in transformers' slow tokenizer (its
fast one raises an opaque TypeError); a surrogate pair written as two code units reads as the
character it encodes.

Both are safe to share between threads: a call changes no state of the tokenizer (truncation
and padding are applied in Python to the encoded ids), so concurrent calls with different
settings give the ids a single thread would.

With no arguments both use the original CLIP vocabulary embedded in the package, offline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import regex

from clip.errors import InputError, InputTypeError

from . import _bpe
from ._tokenizer_base import CLIPTokenizerBase, rows_of
from ._tokenizer_fast_backend import build_backend
from ._tokenizer_files import MERGES_FILE, TOKENIZER_FILE, VOCAB_FILE
from .hub import CheckpointNotFoundError, resolve_file
from .io import atomic_write_text

__all__ = ["DEFAULT_MAX_LENGTH", "CLIPTokenizer", "CLIPTokenizerFast"]

DEFAULT_MAX_LENGTH = 77  # CLIP's text model has 77 positions
# Settings transformers' CLIP tokenizers accept that change nothing here: CLIP always lower-cases
# (do_lower_case), and the rest are transformers' own bookkeeping.
_ACCEPTED_NO_EFFECT = (
    "do_lower_case",
    "verbose",
    "add_prefix_space",
    "split_special_tokens",
    "name_or_path",
    "tokenizer_class",
    "added_tokens_decoder",
    "processor_class",
    "use_fast",
    "legacy",
    "spaces_between_special_tokens",
    "model_input_names",
    "extra_special_tokens",
)
_SURROGATES = regex.compile(r"[\ud800-\udfff]")


def utf8_safe(text: str) -> str:
    """Lone surrogates -> U+FFFD and surrogate pairs -> their character (ftfy's fix_surrogates)."""
    if not _SURROGATES.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _default_settings(kwargs) -> dict:
    settings = {
        "bos_token": _bpe.BOS_TOKEN,
        "eos_token": _bpe.EOS_TOKEN,
        "unk_token": _bpe.EOS_TOKEN,
        # transformers' openai checkpoints pad with <|endoftext|>: CLIP's text model pools at the
        # first eos (or the highest id), so what follows it is never read.
        "pad_token": _bpe.EOS_TOKEN,
        "model_max_length": DEFAULT_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "padding_side": "right",
        "truncation_side": "right",
        "additional_special_tokens": None,
        "sep_token": None,
        "cls_token": None,
        "mask_token": None,
    }
    ignored = {k: kwargs.pop(k) for k in list(kwargs) if k in _ACCEPTED_NO_EFFECT}
    chat_template = kwargs.pop("chat_template", None)
    unknown = set(kwargs) - set(settings)
    if unknown:
        raise InputTypeError(f"unexpected keyword arguments {sorted(unknown)}")
    settings.update(kwargs)
    from ._tokenizer_vocab import token_text

    # What the tokenizer was built with, as transformers keeps it (save and train_new_from_iterator read it).
    init_kwargs = {k: (token_text(v) if k.endswith("_token") else v) for k, v in {**kwargs, **ignored}.items()}
    for name in ("bos_token", "eos_token", "unk_token", "pad_token", "model_max_length", "errors"):
        init_kwargs.setdefault(name, token_text(settings[name]) if name.endswith("_token") else settings[name])
    if chat_template is not None:
        init_kwargs["chat_template"] = chat_template
    settings["init_kwargs"] = init_kwargs
    return settings


class CLIPTokenizer(CLIPTokenizerBase):
    """CLIP's byte-level BPE tokenizer in pure Python, with transformers' slow CLIPTokenizer's ids.

    `CLIPTokenizer()` uses the embedded CLIP vocabulary; `CLIPTokenizer(vocab_file, merges_file)`
    reads Hugging Face files. Text is cleaned with ftfy, whitespace-collapsed and lower-cased.
    With truncation, words past what is kept are never merged, and a very long word is merged
    in O(n log n), so a huge input costs little more than the ids it keeps.
    """

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        merges_file: str | os.PathLike | None = None,
        tokenizer_file: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        settings = _default_settings(kwargs)
        if (vocab_file is None) != (merges_file is None):
            raise InputError("pass both vocab_file and merges_file, or neither (for the embedded CLIP vocabulary)")
        if vocab_file is not None:
            vocab, merges = _bpe.read_vocab_files(vocab_file, merges_file)
        elif tokenizer_file is not None:
            with open(tokenizer_file, encoding="utf-8") as f:
                vocab, merges = _bpe.vocab_from_tokenizer_json(json.load(f))
        else:
            vocab, merges = _bpe.embedded_vocabulary()
        self._merge_list = merges
        self._setup(vocab, **settings)
        self.bpe = _bpe.BytePairEncoder(vocab, merges, self.unk_token_id)
        self._on_vocab_change()

    def _on_vocab_change(self):
        # transformers cuts the text at its special and added tokens (exact, case-sensitive) before
        # cleaning each piece; it matters because ftfy's HTML unescaping depends on whether a piece
        # holds '<'.
        tokens = sorted({*self.all_special_tokens, *self._added}, key=len, reverse=True)
        self._special_split = regex.compile("(" + "|".join(regex.escape(t) for t in tokens) + ")")
        self._specials = frozenset(tokens)

    @classmethod
    def _resolve_vocab_files(cls, name_or_path, hub):
        vocab = resolve_file(name_or_path, VOCAB_FILE, required=False, **hub)
        if vocab is not None:
            return {"vocab_file": vocab, "merges_file": resolve_file(name_or_path, MERGES_FILE, **hub)}
        # Some repositories hold only tokenizer.json; its BPE model has the same vocabulary.
        path = resolve_file(name_or_path, TOKENIZER_FILE, required=False, **hub)
        if path is None:
            raise CheckpointNotFoundError(f"{name_or_path}: neither {VOCAB_FILE} + {MERGES_FILE} nor {TOKENIZER_FILE}")
        return {"tokenizer_file": path}

    def _merges(self):
        return self._merge_list

    def clear_cache(self) -> None:
        """Forget the per-word BPE cache (benchmarks use it to time a cold start)."""
        self.bpe.clear_cache()

    def _pieces(self, text):
        """(piece, is_special) in order: the text cut at special and added tokens."""
        if not any(t in text for t in self._specials):
            return [(text, False)]
        return [(p, p in self._specials) for p in self._special_split.split(text) if p]

    def _text_ids(self, text, limit=None, from_end=False) -> list[int]:
        """Content ids of one text; with `limit`, only as much text as gives that many from the start
        (or the end): the rest is cut by truncation anyway."""
        pieces = self._pieces(text)
        out: list = []
        for piece, special in reversed(pieces) if from_end else pieces:
            if special:
                ids = [self._token_id(piece)]
            else:
                ids = self.bpe.ids(_bpe.clean_text(piece), None if limit is None else limit - len(out), from_end)
            out.extend(reversed(ids) if from_end else ids)
            if limit is not None and len(out) >= limit:
                break
        return out[::-1] if from_end else out

    def _content(self, texts, limit, from_end, with_offsets):
        return [(self._text_ids(t, limit, from_end), None) for t in texts]

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        if not isinstance(text, str):
            raise InputTypeError(f"text must be a string, got {type(text).__name__}")
        out: list = []
        for piece, special in self._pieces(text):
            out.extend([piece] if special else self.bpe.tokens(_bpe.clean_text(piece)))
        return out

    def _decode(self, ids, skip_special_tokens):
        if skip_special_tokens:
            special = set(self.all_special_ids)
            ids = [i for i in ids if i not in special]
        # Base tokens are byte symbols; added tokens are text as they were given.
        parts, run = [], []
        added = self._added_decoder() if self._added else {}
        for i in ids:
            token = None if i in added else self.decoder.get(i)
            if token is None:
                if run:
                    parts.append(_bpe.symbols_to_text("".join(run), self.errors))
                    run = []
                parts.append(self._id_token(i))
            else:
                run.append(token)
        if run:
            parts.append(_bpe.symbols_to_text("".join(run), self.errors))
        return " ".join(parts)


class CLIPTokenizerFast(CLIPTokenizerBase):
    """CLIP's tokenizer on Hugging Face's Rust `tokenizers`, with transformers' CLIPTokenizerFast's ids.

    Loads tokenizer.json when there is one; otherwise builds the same pipeline from vocab.json +
    merges.txt, or from the embedded CLIP vocabulary when given no files. Unlike CLIPTokenizer it
    does not run ftfy: text is only NFC-normalized, whitespace-collapsed and lower-cased.

    Calls never reconfigure the Rust tokenizer (it stays without truncation or padding; both are
    applied to the ids afterwards), so threads may share one instance with any settings. Only
    add_tokens / add_special_tokens change it, as in transformers.
    """

    is_fast = True

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        merges_file: str | os.PathLike | None = None,
        tokenizer_file: str | os.PathLike | None = None,
        tokenizer_object: Any = None,  # a tokenizers.Tokenizer (imported when used)
        **kwargs: Any,
    ) -> None:
        from tokenizers import AddedToken, Tokenizer

        settings = _default_settings(kwargs)
        if (vocab_file is None) != (merges_file is None):
            raise InputError("pass both vocab_file and merges_file, or neither")
        if tokenizer_object is not None:
            # transformers' way to wrap a tokenizers.Tokenizer; a copy, so the caller's stays as it is
            backend = Tokenizer.from_str(tokenizer_object.to_str())
        elif tokenizer_file is not None:
            backend = Tokenizer.from_file(os.fspath(tokenizer_file))
            if type(backend.pre_tokenizer).__name__ != "Sequence":
                raise InputError(
                    f"{tokenizer_file} was written for transformers < 4.17, whose CLIP pipeline differs; "
                    "load vocab.json and merges.txt instead"
                )
        else:
            if vocab_file is None:
                vocab, merges = _bpe.embedded_vocabulary()
            else:
                vocab, merges = _bpe.read_vocab_files(vocab_file, merges_file)
            backend = build_backend(vocab, merges, settings)
        backend.no_padding()
        backend.no_truncation()
        self._backend = backend
        base = backend.get_vocab(with_added_tokens=False)
        added = {i: t for i, t in backend.get_added_tokens_decoder().items() if t.content not in base}
        # Tokens a tokenizer.json adds beyond its BPE vocabulary keep their ids as added tokens.
        self._setup(base, added={t.content: (i, t.special) for i, t in sorted(added.items())}, **settings)
        # Special tokens are matched whole before BPE and dropped by skip_special_tokens; a
        # tokenizer.json may not list them all (e.g. a pad token set in tokenizer_config.json).
        present = {t.content for t in backend.get_added_tokens_decoder().values()}
        backend.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in self.all_special_tokens if t not in present]
        )
        self._end_of_word = getattr(backend.model, "end_of_word_suffix", None) or _bpe.END_OF_WORD

    @property
    def backend_tokenizer(self) -> Any:  # a tokenizers.Tokenizer
        """The underlying `tokenizers.Tokenizer`."""
        return self._backend

    def _backend_add(self, token: str, special: bool):
        from tokenizers import AddedToken

        if special:
            self._backend.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        else:
            self._backend.add_tokens([AddedToken(token, special=False, normalized=True)])

    @classmethod
    def _resolve_vocab_files(cls, name_or_path, hub):
        path = resolve_file(name_or_path, TOKENIZER_FILE, required=False, **hub)
        if path is not None:
            return {"tokenizer_file": path}
        vocab = resolve_file(name_or_path, VOCAB_FILE, required=False, **hub)
        if vocab is None:
            raise CheckpointNotFoundError(f"{name_or_path}: neither {TOKENIZER_FILE} nor {VOCAB_FILE} + {MERGES_FILE}")
        return {"vocab_file": vocab, "merges_file": resolve_file(name_or_path, MERGES_FILE, **hub)}

    def _tokenizer_json(self) -> dict:
        data = json.loads(self._backend.to_str())
        data["padding"] = data["truncation"] = None  # per-call settings, not part of the tokenizer
        return data

    def _merges(self):
        return _bpe.vocab_from_tokenizer_json(self._tokenizer_json())[1]

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        legacy_format: bool | None = None,
        filename_prefix: str | None = None,
        push_to_hub: bool = False,
        save_jinja_files: bool = True,
        **kwargs: Any,
    ) -> tuple[str, ...]:
        paths = super().save_pretrained(
            save_directory, legacy_format, filename_prefix, push_to_hub, save_jinja_files, **kwargs
        )
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        path = os.path.join(os.fspath(save_directory), prefix + TOKENIZER_FILE)
        atomic_write_text(path, json.dumps(self._tokenizer_json(), indent=2, ensure_ascii=False) + "\n")
        return (*paths, path)

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        if not isinstance(text, str):
            raise InputTypeError(f"text must be a string, got {type(text).__name__}")
        return self._backend.encode(utf8_safe(text), add_special_tokens=False).tokens

    def _content(self, texts, limit, from_end, with_offsets):
        texts = [utf8_safe(t) for t in texts]
        if with_offsets:
            return [(e.ids, e.offsets) for e in self._backend.encode_batch(texts, add_special_tokens=False)]
        # encode_batch_fast skips offsets; the batch runs in parallel in Rust. The backend has no
        # truncation (Rust would encode the whole text first anyway), so `limit` is not needed.
        return [(e.ids, None) for e in self._backend.encode_batch_fast(texts, add_special_tokens=False)]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        # transformers' fast tokenizers run only the ByteLevel decoder here: "</w>" stays in the text.
        return self._backend.decoder.decode(list(tokens))

    def _decode(self, ids, skip_special_tokens):
        return self._finish_decode(self._backend.decode(ids, skip_special_tokens=skip_special_tokens))

    def _finish_decode(self, text):
        # The ByteLevel decoder knows nothing of BPE's end-of-word suffix; it marks a space.
        return text.replace(self._end_of_word, " ").strip()

    def batch_decode(
        self,
        sequences: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> list[str]:
        rows = [self._check_ids(seq) for seq in rows_of(sequences)]
        texts = self._backend.decode_batch(rows, skip_special_tokens=skip_special_tokens)
        return [self._clean_up(self._finish_decode(t), clean_up_tokenization_spaces) for t in texts]

    def train_new_from_iterator(
        self,
        text_iterator: Iterable,
        vocab_size: int,
        length: int | None = None,
        new_special_tokens: list | None = None,
        special_tokens_map: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> CLIPTokenizerFast:
        """A new CLIPTokenizerFast with CLIP's pipeline and a BPE vocabulary learned from the texts."""
        from ._tokenizer_train import train_backend

        backend = train_backend(self, text_iterator, vocab_size, length, new_special_tokens, special_tokens_map)
        rename = dict(special_tokens_map or {})
        settings = {k: v for k, v in self.init_kwargs.items() if k not in ("chat_template",)}
        settings.update({name: rename.get(token, token) for name, token in self.special_tokens_map.items()})
        if new_special_tokens:
            extra = [str(getattr(t, "content", t)) for t in new_special_tokens]
            settings["additional_special_tokens"] = [*settings.get("additional_special_tokens", []), *extra]
        settings["model_max_length"] = self.model_max_length
        return type(self)(tokenizer_object=backend, **settings)
