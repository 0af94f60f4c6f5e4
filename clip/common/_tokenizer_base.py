"""What both CLIP tokenizers share: transformers' __call__, encode and pad (decode: _tokenizer_decode).

A tokenizer subclass supplies `_content(texts, limit, from_end, with_offsets)` (the ids of each
text without special tokens, and their character offsets when asked) and `_decode`; everything
else is per-call arithmetic on lists (see _tokenizer_encode), so calls never change the
tokenizer's state and one instance can serve many threads.
"""

from __future__ import annotations

from clip.errors import InputError, InputTypeError

from . import _tokenizer_encode as enc
from ._tokenizer_decode import DecodingMixin, rows_of
from ._tokenizer_files import FilesMixin
from ._tokenizer_inputs import as_batch, keep_offsets
from .batch import BatchEncoding

__all__ = ["CLIPTokenizerBase", "rows_of"]  # rows_of: imported from here by clip.common.tokenizer
# MRO: CLIPTokenizerBase, DecodingMixin, FilesMixin, VocabularyMixin (no method name is defined in two of them).


class CLIPTokenizerBase(DecodingMixin, FilesMixin):
    """Everything but turning text into ids and ids into text, shared by both tokenizers."""

    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"
    truncation_side = "right"
    is_fast = False

    def _content(self, texts: list[str], limit: int | None, from_end: bool, with_offsets: bool) -> list[tuple]:
        """[(ids, offsets or None)] of each text, no special tokens; at most `limit` ids, the last ones if from_end."""
        raise NotImplementedError  # each tokenizer (slow BPE, fast `tokenizers` backend) tokenizes its own way

    def _setup(
        self,
        vocab,
        *,
        bos_token,
        eos_token,
        unk_token,
        pad_token,
        model_max_length,
        clean_up_tokenization_spaces,
        errors,
        padding_side="right",
        truncation_side="right",
        additional_special_tokens=None,
        init_kwargs=None,
        added=None,
        **roles,
    ):
        self._init_vocabulary(
            vocab,
            {"bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token, "pad_token": pad_token, **roles},
        )
        for token, (i, special) in (added or {}).items():
            self._added[token] = i
            if special:
                self._added_special.add(token)
        if pad_token is not None and not isinstance(pad_token, str) and not hasattr(pad_token, "content"):
            raise InputTypeError(f"pad_token must be a string, got {type(pad_token).__name__}")
        if not enc.positive_int(model_max_length):
            raise InputError(f"model_max_length must be a positive int, got {model_max_length!r}")
        for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in ("right", "left"):
                raise InputError(f"{name} must be 'right' or 'left', got {side!r}")
        self.padding_side, self.truncation_side = padding_side, truncation_side
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.errors = errors
        self.init_kwargs = dict(init_kwargs or {})
        self.name_or_path = ""  # from_pretrained sets the directory or hub id, as transformers does
        self.split_special_tokens = False
        self.chat_template = self.init_kwargs.get("chat_template")
        if additional_special_tokens:
            self.add_special_tokens({"additional_special_tokens": list(additional_special_tokens)})
        # A special token the vocabulary lacks is added to it after the base ids, as transformers does.
        for token in self._special.values():
            if token is not None and self._token_id(token) is None:
                self.add_tokens([token], special_tokens=True)

    @property
    def max_len_single_sentence(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=False)

    @property
    def max_len_sentences_pair(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=True)

    def get_added_vocab(self) -> dict[str, int]:
        return self.added_tokens_encoder

    # -- encoding ------------------------------------------------------------------------------

    def __call__(self, text=None, text_pair=None, text_target=None, text_pair_target=None, **kwargs) -> BatchEncoding:
        """Tokenize a string or a list of strings (and optional pairs), as transformers' __call__ does.

        Without return_tensors a single string gives flat lists and a list gives lists of lists;
        with it, arrays or tensors of shape (batch, length). Unknown keywords are ignored with a
        warning, as transformers' slow tokenizers do. `text_target` alone is tokenized like
        `text`; given with `text`, its input_ids come back as `labels` (transformers' seq2seq form).
        """
        if text is None and text_target is None:
            raise InputError("You need to specify either `text` or `text_target`.")
        if text is None:
            return self._encode(text_target, text_pair_target, **kwargs)
        out = self._encode(text, text_pair, **kwargs)
        if text_target is not None:
            out["labels"] = self._encode(text_target, text_pair_target, **kwargs)["input_ids"]
        return out

    def _encode(
        self,
        text=None,
        text_pair=None,
        *,
        add_special_tokens: bool = True,
        padding=False,
        truncation=None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        truncation_side: str | None = None,
        return_tensors=None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        **kwargs,
    ) -> BatchEncoding:
        enc.warn_unknown(kwargs)
        texts, batched = as_batch(text, "text", is_split_into_words)
        pairs = None
        if text_pair is not None:
            pairs, pair_batched = as_batch(text_pair, "text_pair", is_split_into_words)
            if pair_batched != batched or len(pairs) != len(texts):
                raise InputError(f"text_pair must match text: {len(texts)} text(s) but {len(pairs)} pair(s)")
        num_special = self.num_special_tokens_to_add(pair=pairs is not None) if add_special_tokens else 0
        plan = enc.make_plan(
            self,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            truncation_side=truncation_side,
            stride=stride,
            num_special=num_special,
        )
        if return_token_type_ids and not add_special_tokens and not self.is_fast:
            # transformers' slow tokenizers refuse this pair; its fast ones return zeros
            raise InputError(
                "return_token_type_ids=True with add_special_tokens=False is undefined for CLIPTokenizer; "
                "set add_special_tokens=True or return_token_type_ids=None"
            )
        if return_offsets_mapping and not self.is_fast:
            raise NotImplementedError(
                "return_offsets_mapping is not available with the Python tokenizer CLIPTokenizer; use CLIPTokenizerFast"
            )
        overflow = return_overflowing_tokens and plan.truncate_to is not None
        windows = overflow and self.is_fast
        if windows and pairs is not None:
            raise NotImplementedError("return_overflowing_tokens with text pairs is not supported")
        # Truncation keeps at most this many content ids: the tokenizer may stop reading there.
        limit = None if plan.truncate_to is None or pairs or overflow else plan.truncate_to - num_special
        from_end = plan.truncation_side == "left"
        content = self._content(texts, limit, from_end, return_offsets_mapping)
        plain = not (
            pairs
            or overflow
            or return_tensors is None
            or return_offsets_mapping
            or return_length
            or return_token_type_ids
            or return_special_tokens_mask
            or return_overflowing_tokens
        )
        if plain:  # the common call, in numpy at once
            return self._plain_arrays(
                content, plan, num_special, add_special_tokens, return_attention_mask, return_tensors
            )
        pair_content = self._content(pairs, None, False, return_offsets_mapping) if pairs else [None] * len(texts)
        wanted = {
            "token_type_ids": bool(return_token_type_ids),
            "special_tokens_mask": return_special_tokens_mask,
            "offset_mapping": return_offsets_mapping,
            "overflowing_tokens": overflow and not self.is_fast,
            "num_truncated_tokens": overflow and not self.is_fast,
            "overflow_to_sample_mapping": return_overflowing_tokens and self.is_fast,
            "attention_mask": return_attention_mask is None or bool(return_attention_mask),
        }
        fields = self._fields(content, pair_content, plan, wanted, num_special, add_special_tokens, windows)
        fields = {name: rows for name, rows in fields.items() if wanted.get(name, True)}
        # transformers' slow tokenizers count a batch's lengths before padding, one text's after
        length_before_padding = not self.is_fast and batched
        if return_length and length_before_padding:
            fields["length"] = [len(row) for row in fields["input_ids"]]
        fields, _ = enc.pad_rows(fields, plan, self.pad_token_id)
        if return_length and not length_before_padding:
            fields["length"] = [len(row) for row in fields["input_ids"]]
        keep_batch = self.is_fast and return_overflowing_tokens
        out = enc.finish(fields, return_tensors, batched, keep_batch_axis=keep_batch)
        if self.is_fast and not batched and return_tensors is None and "length" in out:
            out["length"] = fields["length"]  # transformers' fast tokenizers keep it a list
        return out

    def _plain_arrays(self, content, plan, num_special, add_special_tokens, return_attention_mask, return_tensors):
        rows = [ids for ids, _ in content]
        if plan.truncate_to is not None:
            keep = plan.truncate_to - num_special
            from_end = plan.truncation_side == "left"
            rows = [(r[len(r) - keep :] if from_end else r[:keep]) if len(r) > keep else r for r in rows]
        special = (self.bos_token_id, self.eos_token_id) if add_special_tokens else None
        arrays = enc.id_arrays(rows, plan, special, self.pad_token_id, return_tensors)
        if return_attention_mask is not None and not return_attention_mask:
            del arrays["attention_mask"]
        return BatchEncoding({k: enc.to_tensor(v, return_tensors) for k, v in arrays.items()})

    def _fields(self, content, pair_content, plan, wanted, num_special, add_special_tokens, windows) -> dict:
        """Every field's rows, truncated (or cut into overflow windows), before padding."""
        fields: dict[str, list] = {
            "input_ids": [],
            "token_type_ids": [],
            "special_tokens_mask": [],
            "offset_mapping": [],
            "overflowing_tokens": [],
            "num_truncated_tokens": [],
            "overflow_to_sample_mapping": [],
        }
        for sample, ((ids, offsets), pair) in enumerate(zip(content, pair_content)):
            pair_ids, pair_offsets = pair if pair is not None else (None, None)
            total = len(ids) + (len(pair_ids) if pair_ids is not None else 0) + num_special
            if windows:
                keep = plan.truncate_to - num_special
                spans = (
                    enc.overflow_windows(ids, keep, plan.stride, plan.truncation_side)
                    if len(ids) > keep
                    else [(0, len(ids))]
                )
                for start, end in spans:
                    self._add_row(
                        fields, wanted, ids[start:end], None, offsets and offsets[start:end], None, add_special_tokens
                    )
                    fields["overflow_to_sample_mapping"].append(sample)
                continue
            dropped = []
            if plan.truncate_to is not None:
                remove = total - plan.truncate_to
                ids, pair_ids, dropped = enc.truncate_pair(
                    ids, pair_ids, remove, plan.strategy, plan.truncation_side, plan.stride
                )
                offsets = keep_offsets(offsets, ids, plan.truncation_side)
                pair_offsets = keep_offsets(pair_offsets, pair_ids, plan.truncation_side)
            self._add_row(fields, wanted, ids, pair_ids, offsets, pair_offsets, add_special_tokens)
            fields["overflowing_tokens"].append(dropped)
            fields["num_truncated_tokens"].append(total - (plan.truncate_to or 0))
            fields["overflow_to_sample_mapping"].append(sample)
        fields["attention_mask"] = [[1] * len(row) for row in fields["input_ids"]]
        return fields

    def _add_row(self, fields, wanted, ids, pair_ids, offsets, pair_offsets, add_special_tokens):
        """Append one encoded row to each wanted field (work on unwanted ones is skipped)."""
        if add_special_tokens:
            row = self.build_inputs_with_special_tokens(ids, pair_ids)
        else:
            row = list(ids) + (list(pair_ids) if pair_ids is not None else [])
        fields["input_ids"].append(row)
        if wanted["token_type_ids"]:
            fields["token_type_ids"].append([0] * len(row))
        if wanted["special_tokens_mask"]:
            # Only the tokens added here count: transformers marks none found inside the text.
            fields["special_tokens_mask"].append(
                self.get_special_tokens_mask(ids, pair_ids) if add_special_tokens else [0] * len(row)
            )
        if offsets is not None:
            none = (0, 0)
            if add_special_tokens:
                spans = [none, *offsets, none]
                if pair_offsets is not None:
                    spans += [none, *pair_offsets, none]
            else:
                spans = [*offsets, *(pair_offsets or [])]
            fields["offset_mapping"].append(spans)

    def encode(
        self,
        text,
        text_pair=None,
        *,
        add_special_tokens=True,
        padding=False,
        truncation=None,
        max_length=None,
        return_tensors=None,
        **kwargs,
    ) -> list[int]:
        if not isinstance(text, str) and not (kwargs.get("is_split_into_words") and isinstance(text, (list, tuple))):
            raise InputTypeError(f"text must be a string, got {type(text).__name__} (use __call__ for batches)")
        return self(
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_tensors=return_tensors,
            return_attention_mask=False,
            **kwargs,
        )["input_ids"]

    def encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        """transformers' older name for __call__ on one text."""
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs, **kwargs) -> BatchEncoding:
        """transformers' older name for __call__ on a batch (pairs given as tuples)."""
        items = list(batch_text_or_text_pairs)
        if (
            items
            and all(isinstance(t, (tuple, list)) and len(t) == 2 for t in items)
            and not kwargs.get("is_split_into_words")
        ):
            return self([a for a, _ in items], [b for _, b in items], **kwargs)
        return self(items, **kwargs)

    def truncate_sequences(
        self, ids, pair_ids=None, num_tokens_to_remove: int = 0, truncation_strategy="longest_first", stride: int = 0
    ):
        """(ids, pair_ids, overflowing ids), by transformers' rules and this tokenizer's truncation_side."""
        strategy = getattr(truncation_strategy, "value", truncation_strategy)
        if strategy in ("do_not_truncate", False, None):
            return list(ids), pair_ids, []
        if strategy not in ("longest_first", "only_first", "only_second"):
            raise InputError(f"unknown truncation strategy {truncation_strategy!r}")
        return enc.truncate_pair(ids, pair_ids, num_tokens_to_remove, strategy, self.truncation_side, stride)

    def pad(
        self,
        encoded_inputs,
        padding=True,
        max_length=None,
        pad_to_multiple_of=None,
        padding_side=None,
        return_attention_mask=None,
        return_tensors=None,
        verbose=True,
    ) -> BatchEncoding:
        """Pad encodings (a dict of lists, a list of dicts, arrays or tensors) as transformers does."""
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], dict):
            encoded_inputs = {k: [example[k] for example in encoded_inputs] for k in encoded_inputs[0]}
        if not isinstance(encoded_inputs, dict) or "input_ids" not in encoded_inputs:
            raise InputError("pad needs an encoding or a list of encodings that includes input_ids")
        if return_tensors is None:
            first = encoded_inputs["input_ids"]
            first = first[0] if isinstance(first, (list, tuple)) and first else first
            module = type(first).__module__.split(".")[0]
            return_tensors = {"torch": "pt", "tensorflow": "tf", "numpy": "np"}.get(module)
        rows, batched = enc.as_id_rows(encoded_inputs["input_ids"], "input_ids")
        fields = {"input_ids": rows}
        for name, value in encoded_inputs.items():
            if name != "input_ids":
                fields[name] = enc.as_id_rows(value, name)[0] if name in enc.PAD_VALUES else value
        if (return_attention_mask is None or return_attention_mask) and "attention_mask" not in fields:
            fields["attention_mask"] = [[1] * len(r) for r in rows]
        elif return_attention_mask is False:
            fields.pop("attention_mask", None)
        plan = enc.make_plan(
            self,
            padding=padding,
            truncation=False,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            truncation_side=None,
            stride=0,
            num_special=0,
        )
        fields, _ = enc.pad_rows(fields, plan, self.pad_token_id)
        return enc.finish(fields, return_tensors, batched)

    def __repr__(self):
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
            f"pad_token={self.pad_token!r})"
        )
