"""The enrichment step: texts in, analyses out. Pure computation, no database, runs in a worker thread.

`Enricher.enrich(items, labels)` calls sentiment, zero-shot and word counting for a batch. A failure is
isolated: if the batched call raises, every item is retried alone so one poison row never fails its
neighbours; the items that still fail come back as `ItemError` with the reason.

A topic label the zero-shot model cannot score (its hypothesis alone fills the model's max length) would
fail every row: it is left out of the analysis and reported in `Enricher.skipped_labels` (label -> why),
so the caller can warn and count it while the other labels keep working.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class LabelValidator(Protocol):
    """A zero-shot model that can tell which labels it cannot score (``OnnxZeroShot`` can)."""

    def split_labels(self, labels: Sequence[str]) -> tuple[list[str], dict[str, str]]: ...


@dataclass
class Enricher:
    sentiment: SentimentModel
    zero_shot: ZeroShotModel
    threshold: float = DEFAULT_THRESHOLD
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    last_timings: Timings = field(default_factory=Timings)
    # label -> why it was left out, for the label set of the last batch (empty when every label is usable)
    skipped_labels: dict[str, str] = field(default_factory=dict)
    _labels_seen: tuple[tuple[str, ...], list[str], dict[str, str]] | None = field(default=None, init=False, repr=False)

    @property
    def random_weights(self) -> bool:
        return bool(self.sentiment.random_weights or self.zero_shot.random_weights)

    def warm_up(self) -> None:
        """Load lazy resources (stopword list, model sessions) before the first batch, not during it."""
        count_words("warm up")
        self.enrich([Item(0, "warm up")], ["warm up"])

    def usable_labels(self, labels: Sequence[str]) -> list[str]:
        """The labels the zero-shot model can score; sets `skipped_labels`. Checked once per label set."""
        key = tuple(labels)
        if self._labels_seen is None or self._labels_seen[0] != key:
            if isinstance(self.zero_shot, LabelValidator):
                usable, skipped = self.zero_shot.split_labels(key)
            else:
                usable, skipped = list(key), {}
            self._labels_seen = (key, usable, skipped)
        self.skipped_labels = dict(self._labels_seen[2])
        return list(self._labels_seen[1])

    def prepare(self, items: Sequence[Item]) -> None:
        """Tokenize a batch ahead of its `enrich`, on another thread while the model runs the batch before it
        (reactor.pipeline). Models without `prepare` (the stand-in) need nothing; a failure here is left for
        `enrich` to meet and report per row."""
        texts = [i.text for i in items if i.text and i.text.strip()]
        for model in (self.sentiment, self.zero_shot):
            prepare = getattr(model, "prepare", None)
            if prepare is not None and texts:
                with contextlib.suppress(Exception):
                    prepare(texts)

    def enrich(self, items: Sequence[Item], labels: Sequence[str]) -> list[Result]:
        """Analyse a batch; never raises for a bad row, returns one result per item in order.
        `topic_set` of each analysis identifies `labels` as given (skipped ones included)."""
        topic_set = topic_set_id(labels)
        labels = self.usable_labels(labels)
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
            results.update((a.feedback_id, a) for a in self._analyse(todo, labels, topic_set))
        except Exception as batch_exc:
            for item in todo:  # isolate: the poison row fails alone
                try:
                    results[item.feedback_id] = (
                        self._analyse([item], labels, topic_set)[0] if len(todo) > 1 else _raise(batch_exc)
                    )
                except Exception as exc:
                    results[item.feedback_id] = ItemError(item.feedback_id, _describe(exc))
        return [results[item.feedback_id] for item in items]

    def _analyse(self, items: Sequence[Item], labels: Sequence[str], topic_set: str) -> list[Analysis]:
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
        self.last_timings = timings
        return out


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _raise(exc: BaseException) -> Analysis:
    raise exc
