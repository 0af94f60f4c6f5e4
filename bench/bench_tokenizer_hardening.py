"""Tokenizers under hostile input: one long word with truncation, and one instance shared by threads.

Rows: seconds for `tokenizer(word, truncation=True, max_length=77)` on a word of N random letters
(ours slow vs transformers' slow, side by side in this process; transformers' slow is quadratic so
it is only run up to 40k letters), and calls per second of a fast tokenizer shared by 8 threads
with mixed truncation/padding settings against the same calls in one thread.

    python bench/bench_tokenizer_hardening.py [--quick]
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clip.common.tokenizer import CLIPTokenizer, CLIPTokenizerFast  # noqa: E402

SETTINGS = [
    {},
    {"truncation": True, "max_length": 8},
    {"padding": "max_length", "truncation": True, "max_length": 16},
    {"padding": True},
]


def _word(letters: int) -> str:
    rng = random.Random(letters)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(letters))


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def long_word_rows(quick: bool) -> list[dict]:
    import transformers

    transformers.logging.set_verbosity_error()
    ours = CLIPTokenizer()
    with tempfile.TemporaryDirectory() as directory:
        ours.save_pretrained(directory)
        ref = transformers.CLIPTokenizer.from_pretrained(directory)
    rows = []
    for letters in (10_000, 40_000) if quick else (10_000, 40_000, 100_000, 1_000_000):
        word = _word(letters)
        ours.clear_cache()
        row = {"letters": letters, "ours_slow_s": _seconds(lambda w=word: ours(w, truncation=True, max_length=77))}
        if letters <= 40_000:
            ref.cache = {}
            row["transformers_slow_s"] = _seconds(lambda w=word: ref(w, truncation=True, max_length=77))
        rows.append(row)
    return rows


def thread_rows(quick: bool) -> list[dict]:
    from bench_tokenizer import captions

    tokenizer = CLIPTokenizerFast()
    texts = captions(400 if quick else 2000)
    jobs = [(texts[i : i + 8], SETTINGS[i % len(SETTINGS)]) for i in range(0, len(texts), 8)]
    single = _seconds(lambda: [tokenizer(batch, **options) for batch, options in jobs])
    errors = []

    def worker(offset):
        try:
            for step in range(len(jobs)):
                batch, options = jobs[(step + offset) % len(jobs)]
                tokenizer(batch, **options)
        except Exception as err:  # noqa: BLE001 - counted in the row
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]

    def run_all():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    eight = _seconds(run_all)
    return [
        {"threads": 1, "calls": len(jobs), "seconds": single, "errors": 0},
        {"threads": 8, "calls": 8 * len(jobs), "seconds": eight, "errors": len(errors)},
    ]


def main():
    quick = "--quick" in sys.argv
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    for row in long_word_rows(quick):
        print("long word", row)
    for row in thread_rows(quick):
        print("threads", row)


if __name__ == "__main__":
    main()
