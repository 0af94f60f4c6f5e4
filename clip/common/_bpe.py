"""CLIP's byte-level BPE in pure Python: vocabulary files, text cleaning and the merge loop.

Kept apart from tokenizer.py so that the slow tokenizer's hot path sits in one small module.
Nothing here imports a deep-learning framework.
"""

from __future__ import annotations

import gzip
import heapq
import itertools
import json
import os
from importlib import resources

import regex

from clip.errors import InputError

from .io import atomic_write_json, atomic_write_text

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# CLIP was trained with a 49,408-token vocabulary: 256 bytes, 256 end-of-word bytes, this many
# merges and the two special tokens. The released merges file holds far more merges than that.
NUM_MERGES = 49152 - 256 - 2
EMBEDDED_VOCAB = "bpe_simple_vocab_16e6.txt.gz"
END_OF_WORD = "</w>"


def _byte_encoder() -> dict[int, str]:
    """The printable character that stands for each byte value, in vocabulary order.

    Bytes that are printable Latin-1 stand for themselves; the others (controls, space, soft
    hyphen) are moved to U+0100 onwards, so that no BPE symbol is whitespace or a control.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    shifted = sorted(set(range(256)) - set(printable))
    table = {b: chr(b) for b in printable}
    table.update({b: chr(0x100 + i) for i, b in enumerate(shifted)})
    return table


BYTE_ENCODER = _byte_encoder()
BYTE_DECODER = {symbol: byte for byte, symbol in BYTE_ENCODER.items()}


# ---------------------------------------------------------------------------------------------
# Vocabulary files


def embedded_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges) of the original CLIP vocabulary that ships inside the package."""
    data = resources.files("clip.common").joinpath("data", EMBEDDED_VOCAB)
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        f.readline()  # version header
        merges = [tuple(f.readline().split()) for _ in range(NUM_MERGES)]
    symbols = list(BYTE_ENCODER.values())
    tokens = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}, merges  # type: ignore[return-value]  # pairs


def read_vocab_files(vocab_path, merges_path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Hugging Face vocab.json + merges.txt. Like transformers, only CLIP's merges are used."""
    with open(vocab_path, encoding="utf-8") as f:
        vocab = json.load(f)
    if not isinstance(vocab, dict):
        raise InputError(f"{vocab_path}: expected a JSON object of token -> id")
    with open(merges_path, encoding="utf-8") as f:
        lines = f.read().strip().split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = []
    for number, line in enumerate(lines[:NUM_MERGES], start=2):
        pair = tuple(line.split())
        if len(pair) != 2:
            raise InputError(f"{merges_path}:{number}: expected two symbols, got {line!r}")
        merges.append(pair)
    return vocab, merges


def vocab_from_tokenizer_json(data: dict) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab and merges of a tokenizer.json's BPE model (merges are "a b" strings or pairs)."""
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise InputError(f"tokenizer.json holds a {model.get('type')!r} model, not a BPE model")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges  # type: ignore[return-value]  # pairs, checked by the caller


def write_vocab_files(directory, vocab, merges, filename_prefix=None) -> tuple[str, str]:
    prefix = f"{filename_prefix}-" if filename_prefix else ""
    vocab_path = os.path.join(directory, prefix + "vocab.json")
    merges_path = os.path.join(directory, prefix + "merges.txt")
    atomic_write_json(vocab_path, vocab)
    atomic_write_text(merges_path, "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return vocab_path, merges_path


# ---------------------------------------------------------------------------------------------
# Text cleaning, as transformers' slow CLIPTokenizer does it with ftfy installed

_WHITESPACE = regex.compile(r"\s+")
# Text that ftfy.fix_text returns unchanged: printable ASCII, tab and newline, without '&'
# (HTML entities). Carriage returns, escape sequences, other controls and every non-ASCII
# character may be rewritten, so they take the slow path. The tests check this on the corpus
# and on random strings over this alphabet.
_FTFY_IDENTITY = regex.compile(r"[\t\n\x20-\x25\x27-\x7e]*")


def clean_text(text: str) -> str:
    if _FTFY_IDENTITY.fullmatch(text):
        # str.split() and regex's \s agree on this alphabet, and split() is much faster.
        return " ".join(text.split()).lower()
    import ftfy

    return _WHITESPACE.sub(" ", ftfy.fix_text(text)).strip().lower()


# ---------------------------------------------------------------------------------------------
# BPE

# The pre-tokenizer: contractions, letter runs, single digits, and runs of anything else.
WORD_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
# IGNORECASE matters although the text is already lower case: it lets "'ſ" (long s) match the
# contraction "'s", as transformers' slow tokenizer (but not its fast one) does.
_WORDS = regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|" + WORD_PATTERN, regex.IGNORECASE)
# A word cache that outgrows this is dropped whole: simpler and faster than an LRU, and a
# caption corpus rarely has more distinct words.
_CACHE_LIMIT = 500_000
# Words longer than this (in symbols) are merged with the heap; shorter ones with the plain loop,
# which is faster on the short words that make up almost all text.
_LONG_WORD = 64


class BytePairEncoder:
    """Cleaned text -> token ids (or token strings) with CLIP's merges."""

    def __init__(self, vocab: dict[str, int], merges, unk_id: int):
        self.vocab = vocab
        self.ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
        self.unk_id = unk_id
        self._cache: dict[str, tuple[int, ...]] = {}

    def clear_cache(self):
        self._cache.clear()

    def merge(self, word: str) -> list[str]:
        """BPE symbols of one pre-tokenized word (already mapped to byte symbols)."""
        if word in (BOS_TOKEN, EOS_TOKEN):
            return [word]
        symbols = [*word[:-1], word[-1] + END_OF_WORD]
        if len(symbols) > _LONG_WORD:
            return _merge_long(symbols, self.ranks)
        ranks = self.ranks
        while len(symbols) > 1:
            best = None
            best_rank = len(ranks)
            for pair in itertools.pairwise(symbols):
                rank = ranks.get(pair, best_rank)
                if rank < best_rank:
                    best, best_rank = pair, rank
            if best is None:
                break
            first, second = best
            merged = []
            i, n = 0, len(symbols)
            while i < n:
                if i < n - 1 and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def tokens(self, text: str, limit: int | None = None, from_end: bool = False) -> list[str]:
        """Token strings of cleaned text; with `limit`, at least the first (or last) `limit` of them."""
        out: list[str] = []
        for word in _words(text, from_end, limit):
            symbols = self.merge(_to_symbols(word))
            out.extend(reversed(symbols) if from_end else symbols)
            if limit is not None and len(out) >= limit:
                break
        return out[::-1] if from_end else out

    def ids(self, text: str, limit: int | None = None, from_end: bool = False) -> list[int]:
        """Token ids of cleaned text. With `limit`, words are read only until `limit` ids are
        found from the start (or, `from_end`, from the end): truncation keeps no more, and the
        words past it need no BPE. The ids found are those of the whole text, cut."""
        cache = self._cache
        out: list[int] = []
        for word in _words(text, from_end, limit):
            ids = cache.get(word)
            if ids is None:
                get, unk = self.vocab.get, self.unk_id
                ids = tuple(get(token, unk) for token in self.merge(_to_symbols(word)))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                if len(word) <= _LONG_WORD:  # a huge word would pin its memory in the cache
                    cache[word] = ids
            out.extend(reversed(ids) if from_end else ids)
            if limit is not None and len(out) >= limit:
                break
        return out[::-1] if from_end else out


def _words(text: str, from_end: bool, limit):
    """The pre-tokenized words of `text`, in order or last first (lazily when a limit may stop early)."""
    if not from_end:
        return _WORDS.findall(text) if limit is None else (m.group() for m in _WORDS.finditer(text))
    # The word pattern has no look-around, so the words found scanning the whole text are the
    # same whatever direction they are consumed in; finditer is lazy only forwards, so collect.
    return reversed(_WORDS.findall(text))


def _merge_long(symbols: list[str | None], ranks: dict) -> list[str]:
    """The same merges as BytePairEncoder.merge's loop, in O(n log n) for a long word.

    The loop merges, round after round, every occurrence (left to right, not overlapping) of the
    lowest-ranked adjacent pair. Here the symbols form a linked list and candidate pairs wait in
    a heap ordered by (rank, position): a round pops every entry of the lowest rank in position
    order, skips entries whose symbols have changed since, and queues the pairs a merge creates
    until the round ends, exactly as the loop only sees them in its next round.
    """
    n = len(symbols)
    nxt = list(range(1, n)) + [-1]
    prv = list(range(-1, n - 1))
    heap = [(ranks[pair], i) for i, pair in enumerate(itertools.pairwise(symbols)) if pair in ranks]
    heapq.heapify(heap)
    while heap:
        round_rank = heap[0][0]
        created = []
        while heap and heap[0][0] == round_rank:
            _, left = heapq.heappop(heap)
            right = nxt[left]
            # Stale if `left` was merged away (symbols[left] None) or either symbol changed.
            if right < 0 or symbols[left] is None or ranks.get((symbols[left], symbols[right])) != round_rank:
                continue
            symbols[left] += symbols[right]  # type: ignore[operator]  # both live: checked above
            symbols[right] = None
            after = nxt[right]
            nxt[left] = after
            if after >= 0:
                prv[after] = left
            before = prv[left]
            for a, b in ((before, left), (left, after)):
                if a >= 0 and b >= 0:
                    rank = ranks.get((symbols[a], symbols[b]))
                    if rank is not None:
                        created.append((rank, a))
        for entry in created:
            heapq.heappush(heap, entry)
    return [s for s in symbols if s is not None]


def _to_symbols(word: str) -> str:
    # latin-1 turns each UTF-8 byte into the code point of the same value, so one C-level
    # translate maps all bytes to their symbols.
    return word.encode("utf-8").decode("latin-1").translate(BYTE_ENCODER)


def symbols_to_text(symbols: str, errors: str = "replace") -> str:
    """Concatenated BPE symbols -> text, end-of-word markers as spaces (transformers' slow decode)."""
    data = bytes(BYTE_DECODER[c] for c in symbols)
    return data.decode("utf-8", errors=errors).replace(END_OF_WORD, " ").strip()
