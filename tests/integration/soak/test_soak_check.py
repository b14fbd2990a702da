"""The soak checker (scripts/soaklib/check.py) against a real PostgreSQL: a state the real reactor drained
passes, and each kind of breach it exists for is found and named with its feedback id."""

from __future__ import annotations

import psycopg
import pytest

from reactor.enrich import topic_set_id
from scripts.soaklib.check import check
from scripts.soaklib.history import history
from tests.support.db import insert
from tests.support.processes import run_cli

LABELS = ["delivery", "price", "support"]
KILLER_TEXT = "a row the soak marks as a killer"


def _drained(url: str) -> tuple[list[int], int]:
    """Rows analysed by a real `reactor listen --exit-when-idle` (stand-in models), and one parked killer row."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO topics (label) SELECT unnest(%s::text[])", [LABELS])
    ids = insert(url, ["parcel arrived late again", "great price great value", None, "", "support never answered"])
    res = run_cli(url, "listen", "--exit-when-idle", "--poll-interval", "0.2")
    assert res.returncode == 0, res.stderr
    killer = insert(url, [KILLER_TEXT])[0]
    with psycopg.connect(url, autocommit=True) as conn:  # parked as max_attempts would park it
        conn.execute("DELETE FROM reactor.inbox WHERE feedback_id = %s", [killer])
        conn.execute(
            "INSERT INTO reactor.failed (queue_id, feedback_id, op, attempts, error, enqueued_at)"
            " VALUES (-1, %s, 'upsert', 5, 'lease expired', now())",
            [killer],
        )
    return ids, killer


def _kinds(result) -> dict[str, set[int | None]]:
    out: dict[str, set[int | None]] = {}
    for b in result.breaches:
        out.setdefault(b.kind, set()).add(b.feedback_id)
    return out


def test_a_drained_state_passes_every_check(pg_url):
    _, killer = _drained(pg_url)
    result = check(pg_url, killers={killer}, topic_sets={topic_set_id(LABELS): LABELS})
    assert result.ok, [b.line() for b in result.breaches]
    assert (result.feedbacks, result.analysed, result.parked) == (6, 5, 1)
    assert check(pg_url, killers={killer}, topic_sets=None).ok  # the real-models path: words and shape only


@pytest.mark.seeds_partial_state
def test_each_breach_is_found_with_its_feedback_id(pg_url):
    ids, killer = _drained(pg_url)
    stale, lost, wrong_score, innocent = ids[0], ids[1], ids[4], ids[2]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE feedbacks DISABLE TRIGGER USER")  # changes the reactor never hears of
        conn.execute("UPDATE feedbacks SET text = 'parcel arrived on time' WHERE id = %s", [stale])
        conn.execute("ALTER TABLE feedbacks ENABLE TRIGGER USER")
        conn.execute("DELETE FROM reactor.feedback_analysis WHERE feedback_id = %s", [lost])
        conn.execute("UPDATE reactor.feedback_analysis SET sentiment_score = 0.5 WHERE feedback_id = %s", [wrong_score])
        conn.execute(
            "INSERT INTO reactor.feedback_analysis (feedback_id, word_counts, source_queue_id)"
            " VALUES (999999, '{\"ghost\": 1}', 1)"
        )
        conn.execute(
            "INSERT INTO reactor.failed (queue_id, feedback_id, op, attempts, error, enqueued_at)"
            " VALUES (-2, %s, 'upsert', 5, 'lease expired', now())",
            [innocent],
        )
        conn.execute("INSERT INTO reactor.queue (feedback_id, op) VALUES (%s, 'upsert')", [ids[3]])
    result = check(pg_url, killers={killer}, topic_sets={topic_set_id(LABELS): LABELS})
    kinds = _kinds(result)
    assert stale in kinds["stale"] and wrong_score in kinds["stale"]
    assert kinds["lost"] == {lost}
    assert kinds["orphaned"] == {999999}
    assert kinds["parked_innocent"] == {innocent}
    assert ids[3] in kinds["not_drained"]
    assert None in kinds["doubled"]  # word_counts still holds the deleted analysis' words and lacks the ghost's
    counts = result.counts()
    assert counts["lost"] >= 4 and counts["orphaned"] == 1 and counts["doubled"] >= 1
    unknown_set = check(pg_url, killers={killer}, topic_sets={})
    assert any("none of the label sets" in b.detail for b in unknown_set.breaches)


def test_a_breached_id_is_told_with_its_batches_and_the_faults_near(pg_url):
    ids, _ = _drained(pg_url)
    fid = ids[0]
    analysed_at = float(
        psycopg.connect(pg_url)
        .execute("SELECT extract(epoch FROM analyzed_at) FROM reactor.feedback_analysis WHERE feedback_id = %s", [fid])
        .fetchone()[0]
    )
    kill = {"t": analysed_at - 2, "kind": "kill", "phase": "point", "slot": "a", "pid": 4242}
    lines = history(
        pg_url,
        fid,
        app_lines=[f'{analysed_at - 1:.3f},w0,insert,{fid},"parcel arrived late again"'],
        faults_near=lambda t, s: [kill] if abs(t - kill["t"]) <= s else [],
        slot_of_pid=lambda pid: "a",
    )
    text = "\n".join(lines)
    assert f"history of feedback {fid}" in text and ",w0,insert," in text
    assert "slot=a rows=" in text  # the job_runs row of the batch that analysed it, with its reactor
    assert "kill point slot=a pid=4242" in text
