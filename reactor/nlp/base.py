"""Protocols every model implementation follows, so the reactor never depends on one runtime.

The ONNX Runtime models (``reactor.nlp.onnx``) and the fast stand-in (``reactor.nlp.standin``) both
satisfy them; tests may swap in any object of this shape for the model calls only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class SentimentModel(Protocol):
    """Binary sentiment like the transformers ``sentiment-analysis`` pipeline: (label, score) per text."""

    model_id: str
    random_weights: bool

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]: ...


@runtime_checkable
class ZeroShotModel(Protocol):
    """Multi-label zero-shot classification: every label's entailment probability per text.

    Returns, per text, ``(label, score)`` for *all* labels sorted by score descending; choosing which to
    keep (threshold, at most three) is the caller's policy (``reactor.enrich.pick_topics``).
    """

    model_id: str
    random_weights: bool

    def classify(self, texts: Sequence[str], labels: Sequence[str]) -> list[list[tuple[str, float]]]: ...
