"""The soak's checker: once everything drained, prove the end state from PostgreSQL and OpenSearch alone.

- every feedback (but the killer rows) is analysed, and for its current text: the stored word counts equal
  `count_words(text)` of the text as it is now (every text the load writes carries random words and a tag, so
  two versions of a row differ there); with the stand-in models also the sentiment label and score (a hash of
  the exact text) and the topics recomputed for the label set the analysis names;
- no analysis without its feedback; `reactor.word_counts` equals the sum of the per-row counts;
- nothing left in the inbox, queue or outbox; no `jobs` row processing, no `job_runs` row open;
- `reactor.failed` holds exactly the killer rows;
- OpenSearch (when given) holds exactly the analysed rows (same ids, text, columns, sentiment, topics, words,
  models) and one document per word, and `accumulated_word_counts` equals `reactor.word_counts`.

Each breach names its feedback id where it has one; the caller prints that id's history.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from reactor.enrich import UNKNOWN_TOPIC, pick_topics
from reactor.nlp.standin import StandInSentiment, StandInZeroShot
from reactor.nlp.words import count_words
from reactor.sinks.documents import TOTAL_DOC_ID

# breach kind -> the target it counts against
CATEGORY = {
    "lost": "lost",
    "stale": "lost",
    "index_missing": "lost",
    "index_stale": "lost",
    "not_drained": "lost",
    "orphaned": "orphaned",
    "index_extra": "orphaned",
    "doubled": "doubled",
    "word_doc": "doubled",
    "accumulated": "doubled",
    "parked_innocent": "lost",
    "killer_not_parked": "other",
    "open_job": "other",
    "outbox_parked": "lost",
}


@dataclass
class Breach:
    kind: str
    feedback_id: int | None
    detail: str

    def line(self) -> str:
        who = f"feedback {self.feedback_id}" if self.feedback_id is not None else "-"
        return f"{self.kind}: {who}: {self.detail}"


@dataclass
class SearchTarget:
    """Where the reactors indexed: the OpenSearch URL and the two aliases."""

    url: str
    feedback_index: str
    word_index: str


@dataclass
class CheckResult:
    breaches: list[Breach] = field(default_factory=list)
    feedbacks: int = 0
    analysed: int = 0
    killers: int = 0
    parked: int = 0
    words: int = 0
    documents: int | None = None

    def counts(self) -> dict[str, int]:
        out = Counter({"lost": 0, "doubled": 0, "orphaned": 0, "other": 0})
        out.update(CATEGORY.get(b.kind, "other") for b in self.breaches)
        return dict(out)

    @property
    def ok(self) -> bool:
        return not self.breaches


def float32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


class StandInModel:
    """What the stand-in models give for a text and a label set (the reactor's own classes and topic rule)."""

    sentiment_id = StandInSentiment.model_id
    zero_shot_id = StandInZeroShot.model_id

    def __init__(self) -> None:
        self.sentiment, self.zero_shot = StandInSentiment(), StandInZeroShot()

    def expected(self, text: str | None, labels: list[str]) -> tuple[str | None, float | None, list[tuple[str, float]]]:
        if not text or not text.strip():
            return None, None, [(UNKNOWN_TOPIC, 0.0)]
        label, score = self.sentiment.predict([text])[0]
        scores = self.zero_shot.classify([text], labels)[0] if labels else []
        return label, score, pick_topics(scores)


def check(
    url: str,
    *,
    killers: set[int],
    topic_sets: dict[str, list[str]] | None,
    search: SearchTarget | None = None,
    max_breaches: int = 200,
) -> CheckResult:
    """Every check above; `topic_sets` (topic_set id -> labels) enables the stand-in recomputation."""
    res = CheckResult(killers=len(killers))
    model = StandInModel() if topic_sets is not None else None

    def breach(kind: str, fid: int | None, detail: str) -> None:
        if len(res.breaches) < max_breaches:
            res.breaches.append(Breach(kind, fid, detail))

    expected_docs: dict[str, tuple[Any, ...]] = {}
    summed: Counter[str] = Counter()
    with psycopg.connect(url) as conn:
        _check_drained(conn, breach)
        parked = {fid for (fid,) in conn.execute("SELECT DISTINCT feedback_id FROM reactor.failed")}
        res.parked = len(parked)
        for fid in sorted(parked - killers):
            breach("parked_innocent", fid, "parked in reactor.failed but not a killer row")
        for fid in sorted(killers - parked):
            breach("killer_not_parked", fid, "a killer row that is not in reactor.failed")
        with conn.cursor(name="soak_check") as cur:
            cur.itersize = 5000
            cur.execute(
                "SELECT f.id, f.text, f.product_name, f.sender, a.feedback_id IS NOT NULL, a.word_counts,"
                " a.sentiment_label, a.sentiment_score, a.topics, a.topic_set, a.sentiment_model,"
                " a.zero_shot_model FROM feedbacks f LEFT JOIN reactor.feedback_analysis a ON a.feedback_id = f.id"
            )
            for fid, text, product, sender, has, words, label, score, topics, topic_set, s_model, z_model in cur:
                res.feedbacks += 1
                if fid in killers:
                    if has:
                        breach("killer_not_parked", fid, "a killer row has an analysis")
                    continue
                if not has:
                    breach("lost", fid, "no analysis")
                    continue
                res.analysed += 1
                summed.update(words)
                problem = _row_problem(
                    text, words, label, score, topics, topic_set, s_model, z_model, model, topic_sets
                )
                if problem:
                    breach("stale", fid, problem)
                if search is not None:
                    expected_docs[str(fid)] = _doc_key(text, product, sender, label, score, topics, words)
        for (fid,) in conn.execute(
            "SELECT a.feedback_id FROM reactor.feedback_analysis a"
            " WHERE NOT EXISTS (SELECT 1 FROM feedbacks f WHERE f.id = a.feedback_id) ORDER BY 1"
        ):
            breach("orphaned", fid, "analysis without its feedback")
        stored = dict(conn.execute("SELECT word, count FROM reactor.word_counts").fetchall())
        pairs = conn.execute(
            "SELECT DISTINCT sentiment_model, zero_shot_model FROM reactor.feedback_analysis"
        ).fetchall()
        if len(pairs) > 1:  # one model set for the whole run: a second pair means a result from elsewhere
            breach("stale", None, f"analyses name {len(pairs)} model pairs: {pairs[:5]}")
    res.words = len(stored)
    summed = Counter({w: c for w, c in summed.items() if c})
    for word in sorted(set(stored) | set(summed)):
        if stored.get(word, 0) != summed.get(word, 0):
            breach(
                "doubled", None, f"word {word!r}: reactor.word_counts {stored.get(word, 0)}, rows sum {summed[word]}"
            )
    if search is not None:
        _check_search(search, expected_docs, stored, breach, res)
    return res


def _check_drained(conn: psycopg.Connection, breach: Any) -> None:
    inbox, queued, outbox, parked_docs, processing, open_runs = conn.execute(
        "SELECT (SELECT count(*) FROM reactor.inbox), (SELECT count(*) FROM reactor.queue),"
        " (SELECT count(*) FROM reactor.outbox WHERE parked_at IS NULL),"
        " (SELECT count(*) FROM reactor.outbox WHERE parked_at IS NOT NULL),"
        " (SELECT count(*) FROM jobs WHERE status = 'processing'),"
        " (SELECT count(*) FROM reactor.job_runs WHERE finished_at IS NULL)"
    ).fetchone()
    if inbox or queued:
        rows = conn.execute("SELECT feedback_id, op, attempts, last_error FROM reactor.queue LIMIT 20").fetchall()
        for fid, op, attempts, error in rows:
            breach("not_drained", fid, f"still queued: op {op}, {attempts} attempts, last error {error!r}")
        breach("not_drained", None, f"{inbox} inbox rows and {queued} queue rows left after the drain")
    if outbox:
        breach("not_drained", None, f"{outbox} outbox rows not sent after the drain")
    for kind, doc_id, error in conn.execute(
        "SELECT index_kind, doc_id, last_error FROM reactor.outbox WHERE parked_at IS NOT NULL LIMIT 20"
    ):
        fid = int(doc_id) if kind == "feedback" and doc_id.isdigit() else None
        breach("outbox_parked", fid, f"search document {kind}/{doc_id} parked: {error}")
    if parked_docs > 20:
        breach("outbox_parked", None, f"{parked_docs} search documents parked in all")
    if processing or open_runs:
        breach("open_job", None, f"{processing} jobs still 'processing', {open_runs} job_runs not finished")


def _row_problem(
    text: str | None,
    words: dict[str, int],
    label: str | None,
    score: float | None,
    topics: list[dict[str, Any]],
    topic_set: str | None,
    s_model: str | None,
    z_model: str | None,
    model: StandInModel | None,
    topic_sets: dict[str, list[str]] | None,
) -> str | None:
    """Why this analysis is not the analysis of `text` (None when it is)."""
    want_words = count_words(text)
    if words != want_words:
        return f"word counts {_diff(words, want_words)} differ from the current text's {text!r}"
    if model is None or topic_sets is None:  # real models: no recomputation, but the shape must fit the text
        if (label is None) != (not text or not text.strip()) or (label is None) != (score is None):
            return f"sentiment {label} {score} for the text {text!r}"
        if not s_model or not z_model or not topics:
            return f"models {s_model}/{z_model}, topics {topics}: incomplete analysis"
        return None
    if (s_model, z_model) != (model.sentiment_id, model.zero_shot_id):
        return f"models {s_model}/{z_model}, expected the stand-in's"
    labels = topic_sets.get(topic_set or "")
    if labels is None:
        return f"topic_set {topic_set} is none of the label sets the soak ever had"
    want_label, want_score, want_topics = model.expected(text, labels)
    if label != want_label or (want_score is None) != (score is None):
        return f"sentiment {label} {score}, the current text gives {want_label} {want_score}"
    if want_score is not None and abs(float(score) - float32(want_score)) > 1e-6:  # type: ignore[arg-type]
        return f"sentiment score {score} differs from the current text's {float32(want_score)}"
    got = [(t.get("label"), float(t.get("score") or 0)) for t in topics]
    if [g[0] for g in got] != [w[0] for w in want_topics] or any(
        abs(g[1] - w[1]) > 1e-5 for g, w in zip(got, want_topics, strict=True)
    ):
        return f"topics {got} differ from {want_topics} (labels {labels})"
    return None


def _diff(got: dict[str, int], want: dict[str, int]) -> str:
    extra = {k: v for k, v in got.items() if want.get(k) != v}
    missing = {k: v for k, v in want.items() if got.get(k) != v}
    return f"(stored has {extra}, the text has {missing})"


def _doc_key(
    text: str | None, product: str | None, sender: str | None, label: str | None, score: float | None,
    topics: list[dict[str, Any]], words: dict[str, int],
) -> tuple[Any, ...]:  # fmt: skip
    labels = tuple(t.get("label") for t in topics)
    return (
        text,
        product,
        sender,
        label,
        None if score is None else round(float(score), 5),
        labels,
        sum(words.values()),
    )


def _check_search(
    search: SearchTarget, expected: dict[str, tuple[Any, ...]], stored: dict[str, int], breach: Any, res: CheckResult
) -> None:
    from opensearchpy import OpenSearch, helpers

    client = OpenSearch(hosts=[search.url], timeout=120)
    try:
        client.indices.refresh(index=f"{search.feedback_index},{search.word_index}")
        seen: set[str] = set()
        for hit in helpers.scan(client, index=search.feedback_index, query={"query": {"match_all": {}}}, size=5000):
            doc_id, src = hit["_id"], hit["_source"]
            seen.add(doc_id)
            want = expected.get(doc_id)
            fid = int(doc_id) if doc_id.isdigit() else None
            if want is None:
                breach("index_extra", fid, "a search document without an analysed feedback")
                continue
            score = src.get("sentiment", {}).get("score")
            got = (
                src.get("text"),
                src.get("product_name"),
                src.get("sender"),
                src.get("sentiment", {}).get("label"),
                None if score is None else round(float(score), 5),
                tuple(src.get("topic_labels") or ()),
                src.get("word_total"),
            )
            if got != want:
                breach("index_stale", fid, f"document {got} differs from PostgreSQL {want}")
        res.documents = len(seen)
        for doc_id in sorted(set(expected) - seen, key=int):
            breach("index_missing", int(doc_id), "analysed in PostgreSQL, no search document")
        words: dict[str, int] = {}
        total: dict[str, Any] | None = None
        for hit in helpers.scan(client, index=search.word_index, query={"query": {"match_all": {}}}, size=5000):
            if hit["_id"] == TOTAL_DOC_ID:
                total = hit["_source"]
            else:
                words[hit["_id"]] = hit["_source"].get("count")
        for word in sorted(set(words) | set(stored)):
            if words.get(word) != stored.get(word):
                breach("word_doc", None, f"word document {word!r}: {words.get(word)}, PostgreSQL {stored.get(word)}")
        if total is None:
            if stored:
                breach("accumulated", None, f"no {TOTAL_DOC_ID} document")
        elif (total.get("word_counts"), total.get("vocabulary"), total.get("total")) != (
            stored,
            len(stored),
            sum(stored.values()),
        ):
            diff = {
                w
                for w in set(stored) | set(total.get("word_counts") or {})
                if stored.get(w) != (total.get("word_counts") or {}).get(w)
            }
            breach("accumulated", None, f"{TOTAL_DOC_ID} differs from reactor.word_counts on {sorted(diff)[:10]}")
    finally:
        client.close()
