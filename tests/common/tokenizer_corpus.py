"""A deterministic corpus of awkward texts for the tokenizer tests.

Hand-written cases cover each feature once; the generated part combines building blocks with a
fixed seed, so that the tests see thousands of interactions without a data file.
"""

from __future__ import annotations

import random

HAND_WRITTEN = [
    "",
    " ",
    "a photo of a cat",
    "A photo of a dog.",
    "a diagram",
    "Two people riding horses on a beach at sunset.",
    # contractions, in both cases, and the long s that case-folds to s
    "it's the dog's bone, isn't it? they're here, we've seen, I'm sure, you'll see, he'd go",
    "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D",
    "it'S rock'n'roll ''quoted'' 'single'",
    "it\u2019s a \u201ccurly\u201d quote",
    "it'\u017f",
    # punctuation and numbers
    "!!!???...,,,;;;:::",
    "--- *** ### @@@ $$$ %%% ^^^ ~~~ ``` ||| \\\\ // <> [] {} ()",
    "1234567890 3.14159 1,000,000 -42 +7 1e10 0x1F 2024-01-01 12:30pm",
    "\u0661\u0662\u0663 \u00bd \u2167 \u2460\u2461 \uff11\uff12\uff13",
    # accents and scripts
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe \u00c5ngstr\u00f6m",
    "cafe\u0301 (decomposed) vs caf\u00e9",
    "\u0130stanbul \u0130I\u0131i \u03a3\u039f\u03a3 \u1e9e \ufb01sh \ufb02ow",
    "\u4e00\u53ea\u732b\u5750\u5728\u6905\u5b50\u4e0a",
    "\u732b\u306e\u5199\u771f\u3067\u3059 \u30ab\u30bf\u30ab\u30ca \ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440 \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd"
    " \u0928\u092e\u0938\u094d\u0924\u0947 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    # emoji, including ZWJ sequences, skin tones, flags and variation selectors
    "\U0001f431\U0001f436\U0001f600 \U0001f468\u200d\U0001f469\u200d\U0001f467"
    " \U0001f44d\U0001f3fd \U0001f1fa\U0001f1f8 \u2764\ufe0f",
    "a cat \U0001f408 on a mat\U0001f9f6",
    # HTML entities, once and twice escaped, named and numeric, with and without a '<'
    "Tom &amp; Jerry",
    "Tom &amp;amp; Jerry",
    "&lt;b&gt;bold&lt;/b&gt; &#39;quoted&#39; &#x27;hex&#x27; &quot;dq&quot;",
    "non&nbsp;breaking&nbsp;space &copy; &eacute; &hellip;",
    "&amp;lt;double&amp;gt;",
    "<b>tags</b> &amp; entities together",
    "AT&T R&D & co &",
    "&notanentity; &#99999999; &#;",
    # control characters and odd whitespace
    "tab\there\nnewline\r\ncrlf\rcr",
    "nul\x00byte bell\x07 esc\x1b[31mred\x1b[0m del\x7f",
    "form\x0cfeed vtab\x0b unit\x1fsep file\x1csep",
    "ideographic\u3000space non\xa0breaking thin\u2009space zero\u200bwidth",
    "line\u2028separator para\u2029graph next\x85line",
    "   leading and trailing   ",
    "\t\n\r \u3000\xa0",
    "soft\xadhyphen BOM\ufeffinside",
    "c1\x80\x9dcontrols",
    # mojibake that ftfy repairs (UTF-8 read as cp1252 / latin-1)
    "caf\u00c3\u00a9",
    "\u00e2\u20ac\u0153quoted\u00e2\u20ac\u009d",
    "The Mona Lisa doesn\u00e2\u20ac\u2122t have eyebrows.",
    "\u00c3\u00bcber m\u00c3\u00bcnchen",
    "\u00c2\u00a0nbsp mojibake",
    "l\u00e2\u20ac\u2122h\u00c3\u00b4tel",
    # fullwidth and ligatures
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \uff54\uff45\uff58\uff54\uff01",
    "\ufb00 \ufb03 \ufb04 \ufb05 \ufb06",
    # the special tokens, whole, in other cases, glued to words and split by spaces
    "<|startoftext|>",
    "<|endoftext|>",
    "hello<|endoftext|>world",
    "<|startoftext|>a photo<|endoftext|>",
    "<|ENDOFTEXT|> upper case special",
    "< |endoftext| > spaced",
    "<|endoftext|><|endoftext|>",
    "&amp; <|endoftext|> &amp;",
    "<|startoftext|>&amp;",
    # surrogate-free unusual code points
    "\U0001d400\U0001d401 math bold \u2102\u211d",
    "\U00020000\U0002a6d6 rare cjk",
    "\ue000 private use \U000f0000",
    "\ufffd replacement",
    # long texts, far past 77 tokens
    " ".join(["word"] * 200),
    "supercalifragilisticexpialidocious" * 30,
    "a" * 1000,
    "!" * 300,
    "1" * 300,
    " ".join(f"token{i}" for i in range(150)),
]

SUBJECTS = [
    "a cat",
    "two dogs",
    "an old man",
    "the woman",
    "a red car",
    "three birds",
    "a plate of food",
    "a giraffe",
    "children",
    "a skateboarder",
    "a train",
    "the Eiffel Tower",
    "a bowl of ramen",
    "a vintage bicycle",
    "an astronaut",
    "a jazz band",
    "Mount Fuji",
    "a tabby kitten",
    "New York",
]
VERBS = [
    "sitting on",
    "running across",
    "looking at",
    "standing next to",
    "flying over",
    "parked near",
    "eating",
    "holding",
    "jumping over",
    "lying under",
    "walking through",
    "riding",
]
OBJECTS = [
    "a wooden table",
    "the beach",
    "a snowy mountain",
    "a busy street",
    "a green field",
    "the kitchen",
    "a pile of books",
    "the ocean",
    "a brick wall",
    "a city skyline at night",
    "a small boat",
]
EXTRAS = [
    "",
    ".",
    "!",
    "?",
    "...",
    ", in black and white",
    " (blurry)",
    " - close up",
    " #nofilter",
    " on a sunny day",
    " at 5:30pm",
    " in 1999",
    " @home",
    " :)",
    " ;-)",
    " 100%",
    " $20",
]
DECORATIONS = [
    "&amp;",
    "&lt;",
    "&gt;",
    "&#39;",
    "&nbsp;",
    "&amp;amp;",
    "&quot;",
    "\u00e9",
    "\u00c3\u00a9",
    "\u00e2\u20ac\u2122",
    "\U0001f600",
    "\U0001f408",
    "\u732b",
    "\u5199\u771f",
    "\u3000",
    "\xa0",
    "\t",
    "\n",
    "\r\n",
    "\x1b[1m",
    "\x00",
    "\u200b",
    "\ufb01",
    "\uff21",
    "'s",
    "'S",
    "'ll",
    "'D",
    "n't",
    "<|endoftext|>",
    "<|startoftext|>",
    "<b>",
    "\u0130",
    "\u03a3",
    "\u00df",
    "caf\u00e9",
    "\u00ad",
    "--",
    "!!",
    "...",
    "1/2",
    "3",
    "\\",
    '"',
    "\u00a9",
    "\u2122",
    "\u00b0C",
]


def _caption(rng: random.Random) -> str:
    caption = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(EXTRAS)}"
    return caption.capitalize() if rng.random() < 0.5 else caption


def _decorated(rng: random.Random) -> str:
    words = _caption(rng).split(" ")
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(len(words) + 1)
        glue = rng.choice(["", " "])
        words.insert(position, glue + rng.choice(DECORATIONS) + glue)
    text = " ".join(words)
    if rng.random() < 0.2:
        text = text.upper()
    if rng.random() < 0.1:
        text = "  " + text.replace(" ", rng.choice(["  ", "\t", "\n", " \u3000 "])) + "  "
    return text


def _random_unicode(rng: random.Random) -> str:
    # Printable code points from several blocks, to reach corners no one writes by hand.
    blocks = [
        (0x20, 0x7E),
        (0xA0, 0x17F),
        (0x370, 0x3FF),
        (0x400, 0x4FF),
        (0x3040, 0x30FF),
        (0x4E00, 0x4F00),
        (0xAC00, 0xAD00),
        (0x1F300, 0x1F64F),
        (0x2000, 0x206F),
        (0xFF00, 0xFFEF),
    ]
    chars = []
    for _ in range(rng.randint(1, 30)):
        lo, hi = rng.choice(blocks)
        chars.append(chr(rng.randint(lo, hi)))
    return "".join(chars)


def _long(rng: random.Random) -> str:
    return " ".join(_caption(rng) for _ in range(rng.randint(8, 20)))


def build_corpus(size: int = 1200, seed: int = 1234) -> list[str]:
    """HAND_WRITTEN followed by generated texts, `size` in all (same list on every call)."""
    rng = random.Random(seed)
    makers = [_caption] * 4 + [_decorated] * 4 + [_random_unicode] * 2 + [_long]
    texts = list(HAND_WRITTEN)
    while len(texts) < size:
        texts.append(rng.choice(makers)(rng))
    return texts
