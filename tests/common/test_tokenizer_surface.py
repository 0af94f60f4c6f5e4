"""The tokenizers' transformers surface, exercised the way transformers' tokenizer test mixin does.

Each call runs on ours and on transformers 4.57's tokenizer of the same name (same vocabulary);
the results must be equal, or both must raise the same exception type. DIFFERENCES lists the
few calls where we deliberately differ, each with the reason, and checks what ours do there.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from clip.common.tokenizer import CLIPTokenizer, CLIPTokenizerFast  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from test_tokenizer import write_reference_files  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Keyword arguments:UserWarning"),
]
CLASSES = {"slow": (CLIPTokenizer, "CLIPTokenizer"), "fast": (CLIPTokenizerFast, "CLIPTokenizerFast")}


@pytest.fixture(scope="module")
def ref_files(tmp_path_factory):
    transformers.logging.set_verbosity_error()
    return write_reference_files(tmp_path_factory.mktemp("clip_vocab"))


CHANGING = {"mutating", "save_and_reload", "save_added_and_reload", "save_jinja_false"}


@pytest.fixture(scope="module")
def shared(ref_files):
    return {kind: make(kind, ref_files) for kind in CLASSES}


def make(kind, ref_files):
    """(ours, transformers') fresh tokenizers of one kind."""
    ours_cls, name = CLASSES[kind]
    return ours_cls(), getattr(transformers, name)(*ref_files, model_max_length=77)


def norm(value):
    """Results of either library -> plain comparable values (arrays keep their dtype)."""
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return ("array", str(value.dtype), value.tolist())
    if isinstance(value, dict) or (hasattr(value, "keys") and hasattr(value, "items")):
        return {k: norm(x) for k, x in dict(value.items()).items()}
    if isinstance(value, (list, tuple)):
        return [norm(x) for x in value]
    if type(value).__name__ == "AddedToken":
        return ("token", value.content, value.special)
    return value


def outcome(fn, tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ("ok", norm(fn(tokenizer)))
        except Exception as err:  # noqa: BLE001 - the exception type is the result compared
            # the builtin a user's `except` sees: ours are clip.errors subclasses of the one transformers raises
            return ("error", next(c for c in type(err).__mro__ if c.__module__ == "builtins").__name__)


TEXTS = ["A photo of a CAT.", "hi", "", "naïve café — 東京 😀 e\u0301", "<|endoftext|> inside", "long " * 30]
CALLS = {
    "call_single": lambda t: t(TEXTS[0]),
    "call_batch": lambda t: t(TEXTS),
    "pair": lambda t: t("a cat", "a dog"),
    "pair_batch": lambda t: t(["a cat", "x"], ["a dog", "y y y"]),
    "pair_trunc_longest": lambda t: t("a b c d e f g", "h i j", truncation=True, max_length=8),
    "pair_trunc_only_first": lambda t: t("a b c d e f g", "h i j", truncation="only_first", max_length=8),
    "pair_trunc_only_second": lambda t: t("a b", "h i j k l m n", truncation="only_second", max_length=8),
    "no_special": lambda t: t(TEXTS, add_special_tokens=False),
    "token_type_ids": lambda t: t(TEXTS, return_token_type_ids=True),
    "special_mask": lambda t: t(TEXTS, return_special_tokens_mask=True),
    "special_mask_padded": lambda t: t(TEXTS, return_special_tokens_mask=True, padding=True),
    "special_mask_nospecial": lambda t: t(TEXTS, return_special_tokens_mask=True, add_special_tokens=False),
    "length": lambda t: t(TEXTS, return_length=True),
    "length_padded": lambda t: t(TEXTS, return_length=True, padding="max_length", max_length=40, truncation=True),
    "length_single": lambda t: t(TEXTS[0], return_length=True),
    "offsets": lambda t: t(TEXTS, return_offsets_mapping=True),
    "offsets_trunc": lambda t: t(TEXTS, return_offsets_mapping=True, truncation=True, max_length=5, padding=True),
    "multiple_of_trunc": lambda t: t(TEXTS, padding=True, truncation=True, max_length=16, pad_to_multiple_of=8),
    "multiple_of": lambda t: t(TEXTS, padding=True, pad_to_multiple_of=8),
    "multiple_of_bad": lambda t: t(TEXTS, padding="max_length", truncation=True, max_length=10, pad_to_multiple_of=8),
    "padding_side_call": lambda t: t(TEXTS, padding=True, padding_side="left"),
    "overflow_stride": lambda t: t(TEXTS, truncation=True, max_length=6, return_overflowing_tokens=True, stride=2),
    "overflow_stride_pad": lambda t: t(
        TEXTS, truncation=True, max_length=6, return_overflowing_tokens=True, stride=1, padding=True
    ),
    "overflow_single": lambda t: t(TEXTS[5], truncation=True, max_length=10, return_overflowing_tokens=True),
    "verbose": lambda t: t(TEXTS, verbose=False),
    "unknown_kw": lambda t: t(TEXTS, foo_bar=1),
    "tensors_np": lambda t: t(TEXTS, padding=True, return_tensors="np"),
    "tensors_pt": lambda t: t(
        TEXTS, padding=True, return_tensors="pt", return_special_tokens_mask=True, return_token_type_ids=True
    ),
    "tensors_tf": lambda t: t(TEXTS, padding=True, return_tensors="tf"),
    "tensors_single_np": lambda t: t(TEXTS[0], return_tensors="np"),
    "tensors_ragged": lambda t: t(TEXTS, return_tensors="np"),
    "no_attention": lambda t: t(TEXTS, return_attention_mask=False),
    "split_words": lambda t: t(["a", "photo", "of", "cats"], is_split_into_words=True),
    "encode": lambda t: t.encode(TEXTS[0]),
    "encode_pair": lambda t: t.encode("a cat", "a dog"),
    "encode_nospecial": lambda t: t.encode(TEXTS[3], add_special_tokens=False),
    "encode_tensor": lambda t: t.encode(TEXTS[0], return_tensors="np"),
    "encode_plus": lambda t: t.encode_plus(TEXTS[0], return_special_tokens_mask=True),
    "batch_encode_plus": lambda t: t.batch_encode_plus(TEXTS, padding=True),
    "batch_encode_plus_pairs": lambda t: t.batch_encode_plus([("a", "b"), ("c d", "e")]),
    "tokenize": lambda t: [t.tokenize(x) for x in TEXTS],
    "convert_tokens_to_ids": lambda t: t.convert_tokens_to_ids(t.tokenize(TEXTS[0])),
    "convert_ids_to_tokens": lambda t: t.convert_ids_to_tokens(t.encode(TEXTS[0])),
    "convert_ids_to_tokens_skip": lambda t: t.convert_ids_to_tokens(t.encode(TEXTS[0]), skip_special_tokens=True),
    "convert_tokens_to_string": lambda t: t.convert_tokens_to_string(t.tokenize(TEXTS[0])),
    "decode": lambda t: t.decode(t.encode(TEXTS[3])),
    "decode_skip": lambda t: t.decode(t.encode(TEXTS[3]), skip_special_tokens=True),
    "batch_decode": lambda t: t.batch_decode(t(TEXTS, padding=True)["input_ids"], skip_special_tokens=True),
    "decode_cleanup": lambda t: t.decode(
        t.encode("hello , world !"), clean_up_tokenization_spaces=True, skip_special_tokens=True
    ),
    "pad_dict": lambda t: t.pad({"input_ids": [[1, 2, 3], [4]]}),
    "pad_list_of_dicts": lambda t: t.pad([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}], return_tensors="np"),
    "pad_max_length": lambda t: t.pad({"input_ids": [[1, 2, 3], [4]]}, padding="max_length", max_length=6),
    "pad_multiple": lambda t: t.pad({"input_ids": [[1, 2, 3], [4]]}, pad_to_multiple_of=4),
    "pad_left": lambda t: t.pad({"input_ids": [[1, 2, 3], [4]]}, padding_side="left"),
    "pad_with_mask": lambda t: t.pad(
        {"input_ids": [[1, 2, 3], [4]], "attention_mask": [[1, 1, 1], [1]], "special_tokens_mask": [[1, 0, 1], [0]]}
    ),
    "pad_single": lambda t: t.pad({"input_ids": [1, 2, 3]}, padding="max_length", max_length=5),
    "pad_no_mask": lambda t: t.pad({"input_ids": [[1, 2, 3], [4]]}, return_attention_mask=False),
    "truncate_sequences": lambda t: t.truncate_sequences([1, 2, 3, 4, 5], num_tokens_to_remove=2, stride=1),
    "truncate_sequences_pair": lambda t: t.truncate_sequences([1, 2, 3, 4, 5], [6, 7], num_tokens_to_remove=3),
    "truncate_sequences_only_second": lambda t: t.truncate_sequences(
        [1, 2], [6, 7, 8, 9], num_tokens_to_remove=2, truncation_strategy="only_second"
    ),
    "num_special": lambda t: (t.num_special_tokens_to_add(), t.num_special_tokens_to_add(pair=True)),
    "build_inputs": lambda t: (
        t.build_inputs_with_special_tokens([5, 6]),
        t.build_inputs_with_special_tokens([5], [6]),
    ),
    "special_tokens_mask_fn": lambda t: (
        t.get_special_tokens_mask([5, 6]),
        t.get_special_tokens_mask([5], [6]),
        t.get_special_tokens_mask([49406, 5, 49407], already_has_special_tokens=True),
    ),
    "token_type_fn": lambda t: t.create_token_type_ids_from_sequences([5, 6], [7]),
    "vocab_size": lambda t: (t.vocab_size, len(t)),
    "get_vocab": lambda t: t.get_vocab() == {**t.get_vocab()} and len(t.get_vocab()),
    "special_attrs": lambda t: (
        t.bos_token,
        t.eos_token,
        t.unk_token,
        t.pad_token,
        t.sep_token,
        t.cls_token,
        t.mask_token,
        t.additional_special_tokens,
    ),
    "special_ids": lambda t: (
        t.bos_token_id,
        t.eos_token_id,
        t.unk_token_id,
        t.pad_token_id,
        t.sep_token_id,
        t.cls_token_id,
        t.mask_token_id,
        t.pad_token_type_id,
    ),
    "all_special": lambda t: (t.all_special_tokens, t.all_special_ids),
    "special_tokens_map": lambda t: t.special_tokens_map,
    "added_tokens": lambda t: (t.added_tokens_encoder, t.added_tokens_decoder),
    "is_fast": lambda t: t.is_fast,
    "lengths_and_flags": lambda t: (
        t.max_len_single_sentence,
        t.max_len_sentences_pair,
        t.split_special_tokens,
        t.name_or_path,
        t.get_added_vocab(),
    ),
    "text_missing": lambda t: t(None),
    "text_target_only": lambda t: t(text_target="a cat"),
    "text_and_target": lambda t: t(["a cat", "b"], text_target=["a dog", "c d"], padding=True),
    "model_max_length": lambda t: t.model_max_length,
    "model_input_names": lambda t: t.model_input_names,
    "sides": lambda t: (t.padding_side, t.truncation_side),
    "init_kwargs": lambda t: {
        k: str(getattr(v, "content", v))
        for k, v in t.init_kwargs.items()
        if k in ("bos_token", "eos_token", "unk_token", "pad_token", "model_max_length")
    },
    "chat_template_missing": lambda t: t.apply_chat_template([{"role": "user", "content": "hi"}]),
    "chat_template_given": lambda t: t.apply_chat_template(
        [{"role": "user", "content": "hi there"}],
        chat_template="{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
    ),
    "chat_template_text": lambda t: t.apply_chat_template(
        [{"role": "user", "content": "hi"}],
        chat_template="{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
        tokenize=False,
    ),
}


def mutating(t):
    out = []
    out.append(t.add_tokens(["newtokenx", "zzqq", "a"]))
    out.append(len(t))
    out.append(t("hello newtokenx zzqq")["input_ids"])
    out.append(t.add_special_tokens({"additional_special_tokens": ["<extra>"]}))
    out.append((t.additional_special_tokens, t.all_special_tokens, t.all_special_ids))
    ids = t("a <extra> b newtokenx")["input_ids"]
    out.append(ids)
    out.append(t.decode(ids, skip_special_tokens=True))
    out.append(t.convert_ids_to_tokens(ids))
    out.append({k: v for k, v in t.added_tokens_encoder.items()})
    t.pad_token = "!"
    out.append((t.pad_token, t.pad_token_id))
    t.sep_token = "<|endoftext|>"
    out.append((t.sep_token, t.sep_token_id))
    t.padding_side = "left"
    out.append(t(["a", "b c"], padding=True)["input_ids"])
    t.truncation_side = "left"
    out.append(t(["a b c d e"], truncation=True, max_length=4)["input_ids"])
    t.model_max_length = 5
    out.append(t(["a b c d e f"], truncation=True)["input_ids"])
    return out


def save_and_reload(kind):
    def fn(tokenizer):
        with tempfile.TemporaryDirectory() as directory:
            tokenizer.chat_template = "{{ messages[0]['content'] }}"
            tokenizer.save_pretrained(directory)
            back = getattr(transformers, CLASSES[kind][1]).from_pretrained(directory)
            return (sorted(os.listdir(directory)), back("a cat")["input_ids"], back.chat_template)

    return fn


def save_added_and_reload(kind):
    """Added and additional special tokens keep their ids through save/load, in both libraries."""

    def fn(tokenizer):
        tokenizer.add_tokens(["newtokenx", "zzqq"])
        tokenizer.add_special_tokens({"additional_special_tokens": ["<extra>"]})
        text = "hello newtokenx <extra> zzqq"
        with tempfile.TemporaryDirectory() as directory:
            tokenizer.save_pretrained(directory)
            loaded = [
                CLASSES[kind][0].from_pretrained(directory),
                getattr(transformers, CLASSES[kind][1]).from_pretrained(directory),
            ]
            return [
                (t(text)["input_ids"], len(t), t.all_special_tokens, t.decode(t(text)["input_ids"])) for t in loaded
            ]

    return fn


def save_jinja_false(tokenizer):
    with tempfile.TemporaryDirectory() as directory:
        tokenizer.chat_template = "{{ messages[0]['content'] }}"
        tokenizer.save_pretrained(directory, save_jinja_files=False)
        with open(os.path.join(directory, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        return (sorted(os.listdir(directory)), config.get("chat_template"))


def train_new(tokenizer):
    corpus = ["a photo of a cat", "a dog on the grass", "two birds flying"] * 20
    trained = tokenizer.train_new_from_iterator(iter(corpus), 300)
    # The Rust trainer orders equally frequent symbols by hash: compare what does not depend on it.
    return (
        sorted(trained.get_vocab()),
        trained.decode(trained("a photo of two dogs")["input_ids"]),
        trained.all_special_tokens,
        len(trained),
    )


CALLS.update(
    {"mutating": mutating, "save_and_reload": None, "save_added_and_reload": None, "save_jinja_false": save_jinja_false}
)
FAST_ONLY = {"train_new_from_iterator": train_new}

# Where ours differ from transformers on purpose: kind -> call -> (reason, check of ours' result).
DIFFERENCES = {
    "both": {
        "tensors_ragged": (
            (
                "transformers returns numpy object arrays of ragged rows (torch and TF raise); "
                "ours raise the clear ValueError for every tensor type"
            ),
            lambda result: result == ("error", "ValueError"),
        )
    },
    "fast": {
        "unknown_kw": (
            (
                "transformers' fast tokenizers raise TypeError on an unknown keyword, its slow ones "
                "warn and ignore it; ours warn and ignore it in both"
            ),
            lambda result: result[0] == "ok",
        ),
        "special_tokens_mask_fn": (
            (
                "transformers' fast CLIP tokenizer asserts already_has_special_tokens=True; "
                "ours answer as its slow one does"
            ),
            lambda result: result == ("ok", [[1, 0, 0, 1], [1, 0, 1, 1, 0, 1], [1, 0, 1]]),
        ),
    },
}


def _cases():
    for kind in ("slow", "fast"):
        names = [*CALLS, *(FAST_ONLY if kind == "fast" else {})]
        for name in names:
            yield pytest.param(kind, name, id=f"{kind}-{name}")


@pytest.mark.parametrize(("kind", "name"), list(_cases()))
def test_call_matches_transformers(ref_files, shared, kind, name):
    builders = {"save_and_reload": save_and_reload, "save_added_and_reload": save_added_and_reload}
    fn = CALLS.get(name) or FAST_ONLY.get(name) or builders[name](kind)
    # Calls that change the tokenizer get fresh ones; the rest share a pair per kind.
    ours, ref = make(kind, ref_files) if name in CHANGING else shared[kind]
    got, want = outcome(fn, ours), outcome(fn, ref)
    difference = DIFFERENCES.get(kind, {}).get(name) or DIFFERENCES["both"].get(name)
    if difference is not None:
        reason, check = difference
        assert check(got), f"{name}: {reason}; got {got}"
        return
    assert got == want


def test_unknown_keyword_warns(ref_files):
    ours, _ = make("slow", ref_files)
    with pytest.warns(UserWarning, match="not recognized"):
        ours("a cat", foo_bar=1)


def test_return_tensors_tf_is_int32(ref_files):
    pytest.importorskip("tensorflow")
    for kind in ("slow", "fast"):
        ours, ref = make(kind, ref_files)
        got, want = (
            ours(["a", "b c"], padding=True, return_tensors="tf"),
            ref(["a", "b c"], padding=True, return_tensors="tf"),
        )
        assert got["input_ids"].dtype == want["input_ids"].dtype
        assert got["input_ids"].dtype.name == "int32"
