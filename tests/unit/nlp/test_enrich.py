"""The enrichment step alone: topic policy, isolation of poison rows, size limit (model doubles only)."""

from __future__ import annotations

from collections.abc import Sequence

from reactor.enrich import UNKNOWN_TOPIC, Analysis, Enricher, Item, ItemError, pick_topics, topic_set_id
from reactor.nlp.standin import StandInSentiment, StandInZeroShot


def test_pick_topics_keeps_up_to_three_above_threshold():
    scores = [("a", 0.95), ("b", 0.9), ("c", 0.8), ("d", 0.75), ("e", 0.1)]
    assert [label for label, _ in pick_topics(scores)] == ["a", "b", "c"]


def test_pick_topics_falls_back_to_best_label():
    assert pick_topics([("x", 0.2), ("y", 0.6), ("z", 0.1)]) == [("y", 0.6)]


def test_pick_topics_threshold_is_inclusive_and_configurable():
    assert pick_topics([("x", 0.7), ("y", 0.69)]) == [("x", 0.7)]
    assert pick_topics([("x", 0.5), ("y", 0.4)], threshold=0.4) == [("x", 0.5), ("y", 0.4)]


def test_pick_topics_with_no_labels_is_unknown():
    assert pick_topics([]) == [(UNKNOWN_TOPIC, 0.0)]


def test_topic_set_id_ignores_order():
    assert topic_set_id(["b", "a"]) == topic_set_id(["a", "b"]) != topic_set_id(["a"])


class Exploding(StandInZeroShot):
    """Fails the whole call when any text contains 'boom' (a poison row in a batch)."""

    def classify(self, texts: Sequence[str], labels: Sequence[str]) -> list[list[tuple[str, float]]]:
        if any("boom" in t for t in texts):
            raise ValueError("cannot classify boom")
        return super().classify(texts, labels)


def test_poison_row_fails_alone():
    enricher = Enricher(StandInSentiment(), Exploding())
    results = enricher.enrich([Item(1, "fine"), Item(2, "boom here"), Item(3, "also fine")], ["price"])
    assert isinstance(results[0], Analysis) and isinstance(results[2], Analysis)
    assert isinstance(results[1], ItemError)
    assert "cannot classify boom" in results[1].error and not results[1].permanent


def test_single_poison_row_reports_its_error():
    [result] = Enricher(StandInSentiment(), Exploding()).enrich([Item(7, "boom")], ["x"])
    assert isinstance(result, ItemError) and "ValueError" in result.error


def test_empty_and_null_text_are_unknown_without_model_calls():
    enricher = Enricher(StandInSentiment(), Exploding())
    results = enricher.enrich([Item(1, None), Item(2, ""), Item(3, " \n\t")], ["price"])
    for r in results:
        assert isinstance(r, Analysis)
        assert r.topics == [(UNKNOWN_TOPIC, 0.0)] and r.sentiment_label is None and r.word_counts == {}


def test_no_active_topics_gives_unknown():
    [r] = Enricher(StandInSentiment(), StandInZeroShot()).enrich([Item(1, "great product")], [])
    assert isinstance(r, Analysis) and r.topics == [(UNKNOWN_TOPIC, 0.0)] and r.sentiment_label


def test_text_over_limit_is_a_permanent_error():
    enricher = Enricher(StandInSentiment(), StandInZeroShot(), max_text_bytes=10)
    [r] = enricher.enrich([Item(1, "ééééééé")], ["x"])  # 14 bytes in UTF-8
    assert isinstance(r, ItemError) and r.permanent and "14 bytes" in r.error


def test_results_keep_input_order():
    enricher = Enricher(StandInSentiment(), StandInZeroShot())
    items = [Item(i, f"text number {i}") for i in (5, 3, 9)]
    assert [r.feedback_id for r in enricher.enrich(items, ["a", "b"])] == [5, 3, 9]


class PickyZeroShot(StandInZeroShot):
    """Refuses labels longer than 10 characters, like a model whose max length a hypothesis can fill."""

    def __init__(self) -> None:
        self.checks = 0

    def split_labels(self, labels: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        self.checks += 1
        return [lb for lb in labels if len(lb) <= 10], {lb: "too long" for lb in labels if len(lb) > 10}

    def classify(self, texts: Sequence[str], labels: Sequence[str]) -> list[list[tuple[str, float]]]:
        if any(len(lb) > 10 for lb in labels):
            raise ValueError("a label this long fails every row")
        return super().classify(texts, labels)


def test_unusable_labels_are_skipped_and_reported_once_per_label_set():
    model = PickyZeroShot()
    enricher = Enricher(StandInSentiment(), model)
    labels = ["price", "a label far too long", "delivery"]
    for _ in range(3):
        results = enricher.enrich([Item(1, "late and pricey"), Item(2, "fine")], labels)
        assert all(isinstance(r, Analysis) for r in results)
        assert enricher.skipped_labels == {"a label far too long": "too long"}
    assert model.checks == 1  # cached for the label set
    for r in results:
        assert isinstance(r, Analysis)
        assert {label for label, _ in r.topics} <= {"price", "delivery"}
        assert r.topic_set == topic_set_id(labels)  # the set as read from `topics`, skipped label included
    enricher.enrich([Item(3, "ok")], ["price"])
    assert enricher.skipped_labels == {} and model.checks == 2


def test_models_without_label_check_use_every_label():
    enricher = Enricher(StandInSentiment(), StandInZeroShot())
    [r] = enricher.enrich([Item(1, "text")], ["a label far too long"])
    assert isinstance(r, Analysis) and r.topics[0][0] == "a label far too long" and enricher.skipped_labels == {}
