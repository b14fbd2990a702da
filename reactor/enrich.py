"""The enrichment step: texts in, analyses out. Pure computation, no database, runs in a worker thread.

`Enricher.enrich(items, labels)` calls sentiment, zero-shot and word counting for a batch. A failure is
isolated: if the batched call raises, every item is retried alone so one poison row never fails its
neighbours; the items that still fail come back as `ItemError` with the reason.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from reactor.nlp.base import SentimentModel, ZeroShotModel
from reactor.nlp.words import count_words

UNKNOWN_TOPIC = "__UNKNOWN__"
DEFAULT_THRESHOLD = 0.7
MAX_TOPICS = 3
DEFAULT_MAX_TEXT_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Item:
    """One feedback to analyse; `text` None or blank means there is nothing to classify."""

    feedback_id: int
    text: str | None


@dataclass(frozen=True)
class Analysis:
    feedback_id: int
    sentiment_label: str | None
    sentiment_score: float | None
    topics: list[tuple[str, float]]
    word_counts: dict[str, int]
    sentiment_model: str
    zero_shot_model: str
    topic_set: str


@dataclass(frozen=True)
class ItemError:
    feedback_id: int
    error: str
    permanent: bool = False  # True: retrying cannot help (e.g. text over the size limit), park at once


Result = Analysis | ItemError


def pick_topics(scores: Sequence[tuple[str, float]], threshold: float = DEFAULT_THRESHOLD) -> list[tuple[str, float]]:
    """Labels scoring ≥ threshold, at most three; else the single best label (the original worker's rule)."""
    ranked = sorted(scores, key=lambda s: -s[1])
    if not ranked:
        return [(UNKNOWN_TOPIC, 0.0)]
    kept = [s for s in ranked if s[1] >= threshold][:MAX_TOPICS]
    return kept or ranked[:1]


def topic_set_id(labels: Sequence[str]) -> str:
    """Short stable id of the active label set, stored with each analysis to find stale ones."""
    return hashlib.sha256("\x1f".join(sorted(labels)).encode()).hexdigest()[:16]


@dataclass
class Timings:
    sentiment_s: float = 0.0
    zero_shot_s: float = 0.0
    words_s: float = 0.0


@dataclass
class Enricher:
    sentiment: SentimentModel
    zero_shot: ZeroShotModel
    threshold: float = DEFAULT_THRESHOLD
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    last_timings: Timings = field(default_factory=Timings)

    @property
    def random_weights(self) -> bool:
        return bool(self.sentiment.random_weights or self.zero_shot.random_weights)

    def warm_up(self) -> None:
        """Load lazy resources (stopword list, model sessions) before the first batch, not during it."""
        count_words("warm up")
        self.enrich([Item(0, "warm up")], ["warm up"])

    def enrich(self, items: Sequence[Item], labels: Sequence[str]) -> list[Result]:
        """Analyse a batch; never raises for a bad row, returns one result per item in order."""
        results: dict[int, Result] = {}
        todo: list[Item] = []
        for item in items:
            size = len(item.text.encode("utf-8", "surrogatepass")) if item.text else 0
            if size > self.max_text_bytes:
                results[item.feedback_id] = ItemError(
                    item.feedback_id, f"text is {size} bytes, over the {self.max_text_bytes}-byte limit", True
                )
            else:
                todo.append(item)
        try:
            results.update((a.feedback_id, a) for a in self._analyse(todo, labels))
        except Exception as batch_exc:
            for item in todo:  # isolate: the poison row fails alone
                try:
                    results[item.feedback_id] = self._analyse([item], labels)[0] if len(todo) > 1 else _raise(batch_exc)
                except Exception as exc:
                    results[item.feedback_id] = ItemError(item.feedback_id, _describe(exc))
        return [results[item.feedback_id] for item in items]

    def _analyse(self, items: Sequence[Item], labels: Sequence[str]) -> list[Analysis]:
        timings = Timings()
        texted = [i for i in items if i.text and i.text.strip()]
        texts = [i.text or "" for i in texted]
        t0 = time.perf_counter()
        sentiments = self.sentiment.predict(texts) if texts else []
        t1 = time.perf_counter()
        topic_scores = self.zero_shot.classify(texts, labels) if texts and labels else [[] for _ in texts]
        t2 = time.perf_counter()
        timings.sentiment_s, timings.zero_shot_s = t1 - t0, t2 - t1
        by_id = {i.feedback_id: (s, t) for i, s, t in zip(texted, sentiments, topic_scores, strict=True)}
        topic_set = topic_set_id(labels)
        out = []
        for item in items:
            if item.feedback_id in by_id:
                (label, score), scores = by_id[item.feedback_id]
                topics = pick_topics(scores, self.threshold)
                sentiment: tuple[str | None, float | None] = (label, float(score))
            else:
                topics, sentiment = [(UNKNOWN_TOPIC, 0.0)], (None, None)
            out.append(
                Analysis(
                    feedback_id=item.feedback_id,
                    sentiment_label=sentiment[0],
                    sentiment_score=sentiment[1],
                    topics=[(lbl, float(s)) for lbl, s in topics],
                    word_counts=count_words(item.text),
                    sentiment_model=self.sentiment.model_id,
                    zero_shot_model=self.zero_shot.model_id,
                    topic_set=topic_set,
                )
            )
        timings.words_s = time.perf_counter() - t2
        self.last_timings = timings
        return out


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _raise(exc: BaseException) -> Analysis:
    raise exc
