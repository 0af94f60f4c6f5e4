"""CLIP tokenizers: `CLIPTokenizer` (pure Python BPE) and `CLIPTokenizerFast` (Rust `tokenizers`).

Each gives the ids of the transformers tokenizer of the same name, and reads and writes the files
that transformers reads and writes. The two differ from each other exactly where transformers'
two differ: the slow one cleans text with ftfy (mojibake, HTML entities, ligatures, ...) before
splitting it, the fast one only NFC-normalizes it.

With no arguments both use the original CLIP vocabulary embedded in the package, offline.
"""

from __future__ import annotations

import json
import os

import numpy as np
import regex

from . import _bpe
from .batch import BatchEncoding, check_tensor_type, to_numpy, to_tensor
from .hub import CheckpointNotFoundError, resolve_file, split_hub_kwargs
from .io import atomic_write_json, atomic_write_text, read_json_object

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"

DEFAULT_MAX_LENGTH = 77  # CLIP's text model has 77 positions
# transformers writes a huge model_max_length (int(1e30)) for "no limit"; treat it as one.
_UNLIMITED = int(1e20)
_SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
# The tokenizer_config.json keys the constructors take; the rest (tokenizer_class,
# added_tokens_decoder, do_lower_case, ...) describe what the constructors already do.
_CONFIG_KEYS = (*_SPECIAL_TOKEN_NAMES, "model_max_length", "clean_up_tokenization_spaces", "errors")


class _CLIPTokenizerBase:
    """Everything but turning text into ids and ids into text, shared by both tokenizers."""

    model_input_names = ["input_ids", "attention_mask"]

    def _setup(self, vocab, *, bos_token, eos_token, unk_token, pad_token, model_max_length,
               clean_up_tokenization_spaces, errors):
        self.encoder = vocab
        self.decoder = {i: token for token, i in vocab.items()}
        tokens = {"bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token, "pad_token": pad_token}
        for name, token in tokens.items():
            if token is None and name == "pad_token":
                continue
            if not isinstance(token, str):
                raise TypeError(f"{name} must be a string, got {type(token).__name__}")
            if token not in vocab:
                raise ValueError(f"{name} {token!r} is not in the vocabulary")
        self.bos_token, self.eos_token, self.unk_token, self.pad_token = bos_token, eos_token, unk_token, pad_token
        if not _positive_int(model_max_length):
            raise ValueError(f"model_max_length must be a positive int, got {model_max_length!r}")
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.errors = errors

    # -- vocabulary and special tokens ---------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def __len__(self):
        return len(self.encoder)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder)

    @property
    def bos_token_id(self) -> int:
        return self.encoder[self.bos_token]

    @property
    def eos_token_id(self) -> int:
        return self.encoder[self.eos_token]

    @property
    def unk_token_id(self) -> int:
        return self.encoder[self.unk_token]

    @property
    def pad_token_id(self) -> int | None:
        return None if self.pad_token is None else self.encoder[self.pad_token]

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = (getattr(self, name) for name in _SPECIAL_TOKEN_NAMES)
        return list(dict.fromkeys(t for t in tokens if t is not None))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.encoder[t] for t in self.all_special_tokens]

    def convert_tokens_to_ids(self, tokens):
        """Token or list of tokens -> id(s); unknown tokens map to the unk token's id."""
        if isinstance(tokens, str):
            return self.encoder.get(tokens, self.unk_token_id)
        tokens = list(tokens)
        if not all(isinstance(t, str) for t in tokens):
            raise TypeError("tokens must be a string or a list of strings")
        unk = self.unk_token_id
        return [self.encoder.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            return self.decoder[self._check_ids([int(ids)])[0]]
        ids = self._check_ids(ids)
        if skip_special_tokens:
            special = set(self.all_special_ids)
            ids = [i for i in ids if i not in special]
        return [self.decoder[i] for i in ids]

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None) -> list[int]:
        bos, eos = [self.bos_token_id], [self.eos_token_id]
        if token_ids_1 is None:
            return bos + list(token_ids_0) + eos
        # CLIP has no pair format; this is the one transformers uses (no separator token).
        return bos + list(token_ids_0) + eos + eos + list(token_ids_1) + eos

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False) -> list[int]:
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when already_has_special_tokens=True")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in token_ids_0]
        mask = [1] + [0] * len(token_ids_0) + [1]
        if token_ids_1 is None:
            return mask
        return mask + [1] + [0] * len(token_ids_1) + [1]

    def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None) -> list[int]:
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    # -- encoding ------------------------------------------------------------------------------

    def __call__(
        self,
        text,
        *,
        add_special_tokens: bool = True,
        padding=False,
        truncation=None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str = "right",
        return_tensors=None,
        return_attention_mask: bool | None = None,
    ) -> BatchEncoding:
        """Tokenize a string or a list of strings, as transformers' tokenizer __call__ does.

        Without return_tensors a single string gives flat lists and a list gives lists of lists;
        with it, arrays or tensors of shape (batch, length).
        """
        texts, batched = _as_batch(text)
        check_tensor_type(return_tensors)
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        pad_mode, truncate_to, max_length = self._plan(
            padding, truncation, max_length, pad_to_multiple_of, 2 if add_special_tokens else 0
        )
        rows = self._encode_rows(texts, add_special_tokens, truncate_to)
        lengths = [len(row) for row in rows]
        width = None  # the length rows are padded to (they may be longer)
        if pad_mode is not None and rows:
            width = max(lengths) if pad_mode == "longest" else max_length
            if pad_to_multiple_of and width % pad_to_multiple_of:
                width += pad_to_multiple_of - width % pad_to_multiple_of
        left = padding_side == "left"
        out = BatchEncoding()
        keep_mask = return_attention_mask is None or return_attention_mask
        if return_tensors is None:
            ids, masks = _pad_lists(rows, width, self.pad_token_id, left)
            out["input_ids"] = ids if batched else ids[0]
            if keep_mask:
                out["attention_mask"] = masks if batched else masks[0]
            return out
        padded = {max(n, width or 0) for n in lengths}
        if len(padded) > 1:
            raise ValueError(
                f"return_tensors={return_tensors!r} needs sequences of one length, but these have lengths "
                f"{sorted(padded)}: pass padding=True or padding='max_length' (with truncation=True for "
                "texts longer than max_length)"
            )
        ids, mask = _pad_array(rows, lengths, padded.pop() if padded else 0, self.pad_token_id, left)
        out["input_ids"] = to_tensor(ids, return_tensors)
        if keep_mask:
            out["attention_mask"] = to_tensor(mask, return_tensors)
        return out

    def encode(self, text, *, add_special_tokens=True, padding=False, truncation=None, max_length=None,
               return_tensors=None) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__} (use __call__ for batches)")
        return self(text, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                    max_length=max_length, return_tensors=return_tensors, return_attention_mask=False)["input_ids"]

    def _plan(self, padding, truncation, max_length, pad_to_multiple_of, num_special):
        """(pad mode, length to truncate to, length to pad to), by transformers' rules."""
        if padding is True or padding == "longest":
            pad_mode = "longest"
        elif padding is False or padding == "do_not_pad":
            pad_mode = None
        elif padding == "max_length":
            pad_mode = "max_length"
        else:
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        # transformers' backward-compatible rule: max_length alone switches truncation on.
        if max_length is not None and padding is False and truncation is None:
            truncation = True
        if truncation is True or truncation in ("longest_first", "only_first"):
            truncate = True
        elif truncation is None or truncation is False or truncation == "do_not_truncate":
            truncate = False
        else:
            raise ValueError(
                f"truncation must be True, False, None, 'longest_first', 'only_first' or 'do_not_truncate', "
                f"got {truncation!r}"
            )
        if max_length is not None and not _positive_int(max_length):
            raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
        if pad_to_multiple_of is not None and not _positive_int(pad_to_multiple_of):
            raise ValueError(f"pad_to_multiple_of must be a positive int or None, got {pad_to_multiple_of!r}")
        if max_length is None and (truncate or pad_mode == "max_length"):
            if self.model_max_length >= _UNLIMITED:
                truncate = False
                pad_mode = None if pad_mode == "max_length" else pad_mode
            else:
                max_length = self.model_max_length
        if pad_mode and self.pad_token is None:
            raise ValueError("padding needs a pad token, and this tokenizer has none (pass pad_token=...)")
        if truncate and pad_mode and pad_to_multiple_of and max_length % pad_to_multiple_of:
            raise ValueError(
                f"truncation length {max_length} is not a multiple of pad_to_multiple_of {pad_to_multiple_of}"
            )
        if truncate and max_length < num_special:
            raise ValueError(f"max_length={max_length} leaves no room for the {num_special} special tokens")
        return pad_mode, (max_length if truncate else None), max_length

    # -- decoding ------------------------------------------------------------------------------

    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None) -> str:
        text = self._decode(self._check_ids(token_ids), skip_special_tokens)
        return self._clean_up(text, clean_up_tokenization_spaces)

    def batch_decode(self, sequences, skip_special_tokens=False, clean_up_tokenization_spaces=None) -> list[str]:
        return [self.decode(seq, skip_special_tokens, clean_up_tokenization_spaces) for seq in _rows(sequences)]

    def _check_ids(self, token_ids) -> list[int]:
        array = to_numpy(token_ids)
        if array.size == 0:
            return []
        if array.ndim > 1 or array.dtype.kind not in "iu":
            raise TypeError(
                f"token_ids must be an int or a 1-D sequence of ints, got {array.ndim}-D values of dtype {array.dtype}"
            )
        ids = array.reshape(-1).tolist()
        bad = [i for i in ids if not 0 <= i < len(self.encoder) or i not in self.decoder]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are not in the vocabulary (size {len(self.encoder)})")
        return ids

    def _clean_up(self, text, clean_up_tokenization_spaces):
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if not clean_up_tokenization_spaces:
            return text
        # transformers' English clean-up of spaces before punctuation and contractions
        for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                              (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
            text = text.replace(before, after)
        return text

    # -- files ---------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path, **kwargs):
        """Load from a local directory or hub id (tokenizer_config.json and special_tokens_map.json
        are optional). Keyword arguments override the saved configuration."""
        hub = split_hub_kwargs(kwargs)
        settings = {}
        for filename in (CONFIG_FILE, SPECIAL_TOKENS_FILE):  # the special tokens map wins, as in transformers
            path = resolve_file(name_or_path, filename, required=False, **hub)
            if path is None:
                continue
            config = read_json_object(path)  # depth-limited, errors name the file
            for key in _CONFIG_KEYS:
                if key in config:
                    value = config[key]
                    settings[key] = value["content"] if isinstance(value, dict) and "content" in value else value
        if isinstance(settings.get("model_max_length"), float):
            settings["model_max_length"] = int(settings["model_max_length"])
        settings.update(kwargs)
        return cls(**cls._resolve_vocab_files(name_or_path, hub), **settings)

    @classmethod
    def _resolve_vocab_files(cls, name_or_path, hub) -> dict:
        raise NotImplementedError

    def save_pretrained(self, save_directory, filename_prefix: str | None = None) -> tuple[str, ...]:
        """Write the files transformers' tokenizers load (vocab.json, merges.txt, tokenizer_config.json,
        special_tokens_map.json, and tokenizer.json for the fast tokenizer)."""
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise NotADirectoryError(f"{save_directory} is a file; save_pretrained needs a directory")
        os.makedirs(save_directory, exist_ok=True)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        config_path = os.path.join(save_directory, prefix + CONFIG_FILE)
        special_path = os.path.join(save_directory, prefix + SPECIAL_TOKENS_FILE)
        added = {
            str(self.encoder[token]): {"content": token, "lstrip": False, "normalized": True, "rstrip": False,
                                       "single_word": False, "special": True}
            for token in self.all_special_tokens
        }
        special = {name: getattr(self, name) for name in _SPECIAL_TOKEN_NAMES}
        atomic_write_json(config_path, {
            **special,
            "added_tokens_decoder": added,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "errors": self.errors,
            "model_max_length": self.model_max_length,
            "tokenizer_class": "CLIPTokenizer",
        })
        atomic_write_json(special_path, {k: v for k, v in special.items() if v is not None})
        return (config_path, special_path, *self.save_vocabulary(save_directory, filename_prefix))

    def save_vocabulary(self, save_directory, filename_prefix: str | None = None) -> tuple[str, ...]:
        save_directory = os.fspath(save_directory)
        if not os.path.isdir(save_directory):
            raise NotADirectoryError(f"{save_directory} is not a directory")
        return _bpe.write_vocab_files(save_directory, self.encoder, self._merges(), filename_prefix)

    def __repr__(self):
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
                f"pad_token={self.pad_token!r})")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _as_batch(text) -> tuple[list[str], bool]:
    if isinstance(text, str):
        return [text], False
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return list(text), True
    kind = type(text).__name__
    if isinstance(text, (list, tuple)):
        kind = f"{kind} holding {sorted({type(t).__name__ for t in text if not isinstance(t, str)})}"
    raise TypeError(f"text must be a string or a list of strings, got {kind}")


def _rows(sequences) -> list:
    if isinstance(sequences, (list, tuple)):
        return list(sequences)
    array = to_numpy(sequences)
    if array.ndim != 2:
        raise TypeError(f"sequences must be a list of id sequences or a 2-D array, got {array.ndim}-D")
    return list(array)


def _pad_lists(rows, width, pad_id, left):
    """(ids, attention masks) as lists, rows shorter than `width` padded (None: no padding)."""
    ids, masks = [], []
    for row in rows:
        n = (width or 0) - len(row)
        mask = [1] * len(row)
        if n > 0:
            row, mask = ([pad_id] * n + row, [0] * n + mask) if left else (row + [pad_id] * n, mask + [0] * n)
        ids.append(row)
        masks.append(mask)
    return ids, masks


def _pad_array(rows, lengths, width, pad_id, left):
    """(ids, attention mask) as (batch, width) int64 arrays, built at once rather than row by row."""
    import itertools

    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1, 1)
    columns = np.arange(width)
    mask = columns >= width - lengths if left else columns < lengths
    ids = np.full(mask.shape, 0 if pad_id is None else pad_id, dtype=np.int64)
    # Boolean assignment fills row by row, left to right: exactly the tokens' order.
    ids[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return ids, mask.astype(np.int64)


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
    }
    unknown = set(kwargs) - set(settings)
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    settings.update(kwargs)
    return settings


class CLIPTokenizer(_CLIPTokenizerBase):
    """CLIP's byte-level BPE tokenizer in pure Python, with transformers' slow CLIPTokenizer's ids.

    `CLIPTokenizer()` uses the embedded CLIP vocabulary; `CLIPTokenizer(vocab_file, merges_file)`
    reads Hugging Face files. Text is cleaned with ftfy, whitespace-collapsed and lower-cased.
    """

    def __init__(self, vocab_file=None, merges_file=None, tokenizer_file=None, **kwargs):
        settings = _default_settings(kwargs)
        if (vocab_file is None) != (merges_file is None):
            raise ValueError("pass both vocab_file and merges_file, or neither (for the embedded CLIP vocabulary)")
        if vocab_file is not None:
            vocab, merges = _bpe.read_vocab_files(vocab_file, merges_file)
        elif tokenizer_file is not None:
            with open(tokenizer_file, encoding="utf-8") as f:
                vocab, merges = _bpe.vocab_from_tokenizer_json(json.load(f))
        else:
            vocab, merges = _bpe.embedded_vocabulary()
        self._setup(vocab, **settings)
        self.bpe = _bpe.BytePairEncoder(vocab, merges, self.unk_token_id)
        self._merge_list = merges
        # transformers cuts the text at its special tokens (exact, case-sensitive) before cleaning
        # each piece; it matters because ftfy's HTML unescaping depends on whether a piece holds '<'.
        specials = sorted(self.all_special_tokens, key=len, reverse=True)
        self._special_split = regex.compile("(" + "|".join(regex.escape(t) for t in specials) + ")")
        self._specials = frozenset(specials)

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

    def clear_cache(self):
        """Forget the per-word BPE cache (benchmarks use it to time a cold start)."""
        self.bpe.clear_cache()

    def _pieces(self, text):
        """(piece, is_special) in order: the text cut at special tokens."""
        if not any(t in text for t in self._specials):
            return [(text, False)]
        return [(p, p in self._specials) for p in self._special_split.split(text) if p]

    def _text_ids(self, text) -> list[int]:
        out = []
        for piece, special in self._pieces(text):
            if special:
                out.append(self.encoder[piece])
            else:
                out.extend(self.bpe.ids(_bpe.clean_text(piece)))
        return out

    def tokenize(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        out = []
        for piece, special in self._pieces(text):
            out.extend([piece] if special else self.bpe.tokens(_bpe.clean_text(piece)))
        return out

    def _encode_rows(self, texts, add_special_tokens, truncate_to):
        rows = [self._text_ids(t) for t in texts]
        if truncate_to is not None:
            keep = truncate_to - (2 if add_special_tokens else 0)
            rows = [row[:keep] if len(row) > keep else row for row in rows]
        if add_special_tokens:
            bos, eos = self.bos_token_id, self.eos_token_id
            rows = [[bos, *row, eos] for row in rows]
        return rows

    def _decode(self, ids, skip_special_tokens):
        if skip_special_tokens:
            special = set(self.all_special_ids)
            ids = [i for i in ids if i not in special]
        return _bpe.symbols_to_text("".join(self.decoder[i] for i in ids), self.errors)


class CLIPTokenizerFast(_CLIPTokenizerBase):
    """CLIP's tokenizer on Hugging Face's Rust `tokenizers`, with transformers' CLIPTokenizerFast's ids.

    Loads tokenizer.json when there is one; otherwise builds the same pipeline from vocab.json +
    merges.txt, or from the embedded CLIP vocabulary when given no files. Unlike CLIPTokenizer it
    does not run ftfy: text is only NFC-normalized, whitespace-collapsed and lower-cased.

    Calls configure the Rust tokenizer's truncation in place (as transformers does), so share one
    instance between threads only if they ask for the same truncation.
    """

    def __init__(self, vocab_file=None, merges_file=None, tokenizer_file=None, **kwargs):
        from tokenizers import AddedToken, Tokenizer

        settings = _default_settings(kwargs)
        if (vocab_file is None) != (merges_file is None):
            raise ValueError("pass both vocab_file and merges_file, or neither")
        if tokenizer_file is not None:
            backend = Tokenizer.from_file(os.fspath(tokenizer_file))
            if type(backend.pre_tokenizer).__name__ != "Sequence":
                raise ValueError(
                    f"{tokenizer_file} was written for transformers < 4.17, whose CLIP pipeline differs; "
                    "load vocab.json and merges.txt instead"
                )
        else:
            if vocab_file is None:
                vocab, merges = _bpe.embedded_vocabulary()
            else:
                vocab, merges = _bpe.read_vocab_files(vocab_file, merges_file)
            backend = _build_backend(vocab, merges, settings)
        backend.no_padding()
        backend.no_truncation()
        self._setup(backend.get_vocab(with_added_tokens=True), **settings)
        # Special tokens are matched whole before BPE and dropped by skip_special_tokens; a
        # tokenizer.json may not list them all (e.g. a pad token set in tokenizer_config.json).
        present = {t.content for t in backend.get_added_tokens_decoder().values()}
        backend.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in self.all_special_tokens if t not in present]
        )
        self._backend = backend
        self._end_of_word = getattr(backend.model, "end_of_word_suffix", None) or _bpe.END_OF_WORD

    @property
    def backend_tokenizer(self):
        """The underlying `tokenizers.Tokenizer`."""
        return self._backend

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

    def save_pretrained(self, save_directory, filename_prefix: str | None = None) -> tuple[str, ...]:
        paths = super().save_pretrained(save_directory, filename_prefix)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        path = os.path.join(os.fspath(save_directory), prefix + TOKENIZER_FILE)
        atomic_write_text(path, json.dumps(self._tokenizer_json(), indent=2, ensure_ascii=False) + "\n")
        return (*paths, path)

    def tokenize(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        return self._backend.encode(text, add_special_tokens=False).tokens

    def _encode_rows(self, texts, add_special_tokens, truncate_to):
        backend = self._backend
        if truncate_to is None:
            backend.no_truncation()
        else:
            backend.enable_truncation(truncate_to)
        # Padding is left to the caller, which builds padded arrays in numpy at once; offsets,
        # which encode_batch_fast skips, are never returned. The batch runs in parallel in Rust.
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]

    def _decode(self, ids, skip_special_tokens):
        return self._finish_decode(self._backend.decode(ids, skip_special_tokens=skip_special_tokens))

    def _finish_decode(self, text):
        # The ByteLevel decoder knows nothing of BPE's end-of-word suffix; it marks a space.
        return text.replace(self._end_of_word, " ").strip()

    def batch_decode(self, sequences, skip_special_tokens=False, clean_up_tokenization_spaces=None) -> list[str]:
        rows = [self._check_ids(seq) for seq in _rows(sequences)]
        texts = self._backend.decode_batch(rows, skip_special_tokens=skip_special_tokens)
        return [self._clean_up(self._finish_decode(t), clean_up_tokenization_spaces) for t in texts]


def _build_backend(vocab, merges, settings):
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
