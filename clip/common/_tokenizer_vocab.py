"""The vocabulary side of both CLIP tokenizers: special tokens, added tokens, id <-> token.

transformers' tokenizers keep the base vocabulary (vocab.json) apart from tokens added later
(add_tokens, add_special_tokens); ids of added tokens follow the base ones. Special tokens are
named roles (bos, eos, unk, pad, sep, cls, mask) plus a list of additional ones; CLIP sets the
first four, and the rest are None until a user sets them, as in transformers.
"""

from __future__ import annotations

import numpy as np

from clip.errors import InputError, InputTypeError

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# The roles CLIP's files and constructors set; the others stay None unless a user sets them.
CLIP_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def token_text(token) -> str | None:
    """A token given as a string or as an AddedToken (anything with .content) -> its text."""
    if token is None or isinstance(token, str):
        return token
    content = getattr(token, "content", None)
    if isinstance(content, str):
        return content
    raise InputTypeError(f"a token must be a string or an AddedToken, got {type(token).__name__}")


def _role_property(name: str):
    def get(self):
        return self._special[name]

    def set_(self, value):
        self._special[name] = token_text(value)
        self._on_vocab_change()

    def get_id(self):
        token = self._special[name]
        return None if token is None else self.convert_tokens_to_ids(token)

    def set_id(self, value):
        self._special[name] = None if value is None else self.convert_ids_to_tokens(value)
        self._on_vocab_change()

    return property(get, set_), property(get_id, set_id)


class VocabularyMixin:
    """Special and added tokens over a base vocabulary `self.encoder` (token -> id)."""

    is_fast: bool  # set by the concrete tokenizer class: the fast one counts re-added tokens as added

    def _init_vocabulary(self, vocab: dict, special: dict):
        self.encoder = vocab
        self.decoder = {i: token for token, i in vocab.items()}
        self._added: dict[str, int] = {}  # tokens added after loading -> id
        self._added_special: set[str] = set()
        self._special = {name: token_text(special.get(name)) for name in SPECIAL_TOKEN_NAMES}
        self._additional: list[str] = []

    def _on_vocab_change(self):
        """Called when special or added tokens change (the slow tokenizer rebuilds its splitter)."""

    # -- sizes -----------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens (transformers' meaning)."""
        return len(self.encoder)

    def __len__(self):
        # An added token may be a base token made to match whole (it keeps its id).
        return len(self.encoder) + sum(1 for i in self._added.values() if i >= len(self.encoder))

    def get_vocab(self) -> dict[str, int]:
        return {**self.encoder, **self._added}

    # -- special tokens --------------------------------------------------------------------------

    bos_token, bos_token_id = _role_property("bos_token")
    eos_token, eos_token_id = _role_property("eos_token")
    unk_token, unk_token_id = _role_property("unk_token")
    sep_token, sep_token_id = _role_property("sep_token")
    pad_token, pad_token_id = _role_property("pad_token")
    cls_token, cls_token_id = _role_property("cls_token")
    mask_token, mask_token_id = _role_property("mask_token")

    @property
    def pad_token_type_id(self) -> int:
        return 0

    @property
    def additional_special_tokens(self) -> list[str]:
        return list(self._additional)

    @additional_special_tokens.setter
    def additional_special_tokens(self, tokens):
        self._additional = [token_text(t) for t in (tokens or [])]
        self._on_vocab_change()

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self._additional)

    @property
    def special_tokens_map(self) -> dict:
        out: dict[str, object] = {name: token for name, token in self._special.items() if token is not None}
        if self._additional:
            out["additional_special_tokens"] = list(self._additional)
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = [t for t in self._special.values() if t is not None] + self._additional
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        """Special tokens of the base vocabulary and every added token -> id, by id."""
        specials = {t: self.encoder[t] for t in self.all_special_tokens if t in self.encoder}
        return dict(sorted({**specials, **self._added}.items(), key=lambda item: item[1]))

    @property
    def added_tokens_decoder(self) -> dict:
        from tokenizers import AddedToken

        special = set(self.all_special_tokens) | self._added_special
        return {
            i: AddedToken(token, special=token in special, normalized=token not in self._added_special)
            for token, i in self.added_tokens_encoder.items()
        }

    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Add tokens to the vocabulary (after the base ids); returns how many were new."""
        if new_tokens is None:
            return 0
        if isinstance(new_tokens, (str, bytes)) or not isinstance(new_tokens, (list, tuple)):
            new_tokens = [new_tokens]
        added = 0
        for token in new_tokens:
            special = special_tokens or bool(getattr(token, "special", False))
            text = token_text(token)
            if not text:
                raise InputError(f"cannot add an empty token (got {token!r})")
            if special:
                self._added_special.add(text)
            if text in self._added or (special and text in self.encoder):
                continue
            # A token of the base vocabulary keeps its id but is now matched whole before BPE, as
            # in transformers (whose fast tokenizers count it as added, the slow ones do not).
            known = text in self.encoder
            self._added[text] = self.encoder[text] if known else len(self)
            self._backend_add(text, special)
            added += 1 if not known or self.is_fast else 0
        self._on_vocab_change()
        return added

    def _backend_add(self, token: str, special: bool):
        """Hook: the fast tokenizer registers the token with its Rust backend."""

    def add_special_tokens(self, special_tokens_dict: dict, replace_additional_special_tokens: bool = True) -> int:
        """Set special token roles (and additional_special_tokens); returns how many tokens were new."""
        if not isinstance(special_tokens_dict, dict):
            raise InputTypeError("special_tokens_dict must be a dict of role -> token")
        added = 0
        for name, value in special_tokens_dict.items():
            if name == "additional_special_tokens":
                tokens = [token_text(t) for t in value]
                added += self.add_tokens(tokens, special_tokens=True)
                if replace_additional_special_tokens:
                    self._additional = tokens  # type: ignore[assignment]  # token_text is None only for None
                else:
                    self._additional += [t for t in tokens if t not in self._additional]  # type: ignore[misc]
            elif name in SPECIAL_TOKEN_NAMES:
                text = token_text(value)
                added += self.add_tokens([text], special_tokens=True)
                self._special[name] = text
            else:
                raise InputError(f"{name!r} is not a special token role; known: {[*SPECIAL_TOKEN_NAMES]}")
        self._on_vocab_change()
        return added

    # -- conversion ------------------------------------------------------------------------------

    def _token_id(self, token: str):
        found = self.encoder.get(token)
        return self._added.get(token) if found is None else found

    def convert_tokens_to_ids(self, tokens):
        """Token or list of tokens -> id(s); unknown tokens map to the unk token's id."""
        if isinstance(tokens, str):
            found = self._token_id(tokens)
            return self.unk_token_id if found is None else found
        tokens = list(tokens)
        if not all(isinstance(t, str) for t in tokens):
            raise InputTypeError("tokens must be a string or a list of strings")
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def _id_token(self, i: int) -> str | None:
        token = self.decoder.get(i)
        if token is None:
            token = self._added_decoder().get(i)
        return token

    def _added_decoder(self) -> dict[int, str]:
        return {i: t for t, i in self._added.items()}

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            return self._id_token(self._check_ids([int(ids)])[0])
        ids = self._check_ids(ids)
        if skip_special_tokens:
            special = set(self.all_special_ids)
            ids = [i for i in ids if i not in special]
        return [self._id_token(i) for i in ids]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 4 if pair else 2

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None) -> list[int]:
        bos, eos = [self.bos_token_id], [self.eos_token_id]
        if token_ids_1 is None:
            return bos + list(token_ids_0) + eos
        # CLIP has no pair format; this is the one transformers uses (no separator token).
        return bos + list(token_ids_0) + eos + eos + list(token_ids_1) + eos

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False) -> list[int]:
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise InputError("token_ids_1 must be None when already_has_special_tokens=True")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in token_ids_0]
        mask = [1] + [0] * len(token_ids_0) + [1]
        if token_ids_1 is None:
            return mask
        return mask + [1] + [0] * len(token_ids_1) + [1]

    def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None) -> list[int]:
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def _check_ids(self, token_ids) -> list[int]:
        array = np.asarray(token_ids) if isinstance(token_ids, (list, tuple)) else _numpy(token_ids)
        if array.size == 0:
            return []
        if array.ndim > 1 or array.dtype.kind not in "iu":
            raise InputTypeError(
                f"token_ids must be an int or a 1-D sequence of ints, got {array.ndim}-D values of dtype {array.dtype}"
            )
        ids = array.reshape(-1).tolist()
        size = len(self)
        bad = [i for i in ids if not 0 <= i < size or self._id_token(i) is None]
        if bad:
            raise InputError(f"token ids {bad[:5]} are not in the vocabulary (size {size})")
        return ids


def _numpy(value):
    from .batch import to_numpy

    return to_numpy(value)
