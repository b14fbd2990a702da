"""Word counting with NLTK's English stopword list, shipped in the package (``nltk.download`` fails offline)."""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
MIN_LENGTH = 3
MAX_LENGTH = 64  # longer "words" are noise (hashes, base64, a key held down); also keeps index rows small
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


@cache
def stopwords() -> frozenset[str]:
    """NLTK's English stopwords, loaded through NLTK's own corpus reader from the shipped data folder."""
    import nltk

    if str(DATA_DIR) not in nltk.data.path:
        nltk.data.path.insert(0, str(DATA_DIR))
    from nltk.corpus import stopwords as corpus

    return frozenset(corpus.words("english"))


def tokens(text: str | None) -> list[str]:
    """Lower-case word tokens (letters/digits, inner apostrophes kept) of 3..64 characters, no stopwords."""
    if not text:
        return []
    stop = stopwords()
    return [
        t
        for t in _TOKEN.findall(text.lower())
        if MIN_LENGTH <= len(t) <= MAX_LENGTH and t not in stop and not t.isdigit()
    ]


def count_words(text: str | None) -> dict[str, int]:
    """Counts of ``tokens(text)``; the reactor stores these per row so deltas stay exact."""
    return dict(Counter(tokens(text)))
