"""Tokenizer throughput: clip's CLIPTokenizer / CLIPTokenizerFast against transformers' on captions.

Each pair runs side by side in this process on the same deterministic captions, with the call
CLIP models use (pad to 77, truncate, numpy arrays). Every repeat starts from a cold BPE word
cache, for ours and transformers' slow tokenizer alike, so the slow rows include the BPE work for
each distinct word once; the best of the repeats is reported.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clip.common.tokenizer import CLIPTokenizer, CLIPTokenizerFast  # noqa: E402

_ADJECTIVES = "red small old young wooden shiny fluffy crowded empty bright dark tiny huge striped rusty".split()
_NOUNS = (
    "cat dog man woman child car bus train bicycle horse bird kite boat plate pizza sandwich table "
    "chair laptop phone clock umbrella giraffe elephant zebra skateboard surfboard street beach "
    "kitchen mountain field river bridge building tower market garden"
).split()
_VERBS = (
    "sitting on|standing next to|riding|holding|looking at|walking along|parked near|lying on|"
    "flying over|eating|playing with|crossing"
).split("|")
_TAILS = [
    "",
    ".",
    " at night.",
    " on a sunny day.",
    " in the snow",
    ", close up.",
    " in black and white",
    " with a blue sky.",
    " near the water.",
    "!",
]


def captions(count: int, seed: int = 0) -> list[str]:
    """`count` caption-like sentences, the same on every call."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        start = rng.choice(["A", "The", "Two", "Some", "An image of a"])
        first = f"{start} {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
        text = f"{first} {rng.choice(_VERBS)} a {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}{rng.choice(_TAILS)}"
        if rng.random() < 0.3:
            text += f" There's a {rng.choice(_NOUNS)} and {rng.randint(2, 12)} {rng.choice(_NOUNS)}s in the background."
        out.append(text)
    return out


def _best_of(repeats, fn, before=None) -> float:
    best = float("inf")
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _clear_transformers_cache(tokenizer):
    # transformers' slow CLIPTokenizer memoizes BPE per word in .cache, seeded with its specials.
    tokenizer.cache = {t: t for t in ("<|startoftext|>", "<|endoftext|>")}


def rows(quick: bool = False) -> list[dict]:
    import transformers

    transformers.logging.set_verbosity_error()
    texts = captions(500 if quick else 10_000)
    repeats = 2 if quick else 3
    kwargs = {"padding": "max_length", "truncation": True, "return_tensors": "np"}
    ours_slow, ours_fast = CLIPTokenizer(), CLIPTokenizerFast()
    with tempfile.TemporaryDirectory() as directory:
        ours_slow.save_pretrained(directory)
        ref_slow = transformers.CLIPTokenizer.from_pretrained(directory)
        ref_fast = transformers.CLIPTokenizerFast.from_pretrained(directory)

    def cold_start():
        ours_slow.clear_cache()
        _clear_transformers_cache(ref_slow)

    pairs = [("slow", ours_slow, ref_slow, ">= 3.0x", cold_start), ("fast", ours_fast, ref_fast, ">= 0.9x", None)]
    out = []
    for kind, ours, ref, target, before in pairs:
        # Warm-up (imports, compiled regexes, Rust thread pool) and a check that both agree.
        same = (ours(texts[:200], **kwargs)["input_ids"] == ref(texts[:200], **kwargs)["input_ids"]).all()
        ours_s = _best_of(repeats, lambda: ours(texts, **kwargs), before)
        baseline_s = _best_of(repeats, lambda: ref(texts, **kwargs), before)
        cache = "cold BPE cache each repeat" if kind == "slow" else "Rust, encode_batch"
        out.append(
            {
                "name": f"tokenizer {kind}, {len(texts)} captions",
                "ours_s": round(ours_s, 4),
                "baseline_s": round(baseline_s, 4),
                "ratio": round(baseline_s / ours_s, 2),
                "target": target,
                "note": f"vs transformers {transformers.__version__} CLIPTokenizer{'Fast' if kind == 'fast' else ''}; "
                f"padding=max_length, truncation, np; best of {repeats}; {cache}; ids equal: {bool(same)}",
            }
        )
    return out


if __name__ == "__main__":
    for row in rows(quick="--quick" in sys.argv):
        print(row)
