"""A fast, deterministic stand-in for the two models: plumbing tests and benchmarks, never analysis.

Scores come from a hash of the text, so they are stable across runs and processes but mean nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _unit(*parts: str) -> float:
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class StandInSentiment:
    """Hash-based POSITIVE/NEGATIVE; satisfies ``SentimentModel``."""

    model_id = "stand-in/sentiment"
    random_weights = True

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        out = []
        for text in texts:
            p = _unit("sentiment", text)
            out.append(("POSITIVE", 0.5 + p / 2) if p >= 0.5 else ("NEGATIVE", 1.0 - p / 2))
        return out


class StandInZeroShot:
    """Hash-based label scores; satisfies ``ZeroShotModel``."""

    model_id = "stand-in/zero-shot"
    random_weights = True

    def classify(self, texts: Sequence[str], labels: Sequence[str]) -> list[list[tuple[str, float]]]:
        return [
            sorted(((label, _unit("topic", label, text)) for label in labels), key=lambda x: -x[1])
            for text in texts
        ]
