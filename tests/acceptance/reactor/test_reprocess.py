"""Reprocessing after a topic change: stale analyses are requeued at low priority, fresh work goes first."""

from __future__ import annotations

import psycopg

from reactor.enrich import topic_set_id
from tests.support.db import scalar, wait_until
from tests.support.processes import run_cli


def _seed(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO topics (label) VALUES ('price'), ('delivery')")
        conn.execute(
            "INSERT INTO feedbacks (text) SELECT 'row ' || g || ' late parcel' FROM generate_series(1, %s) g", [n]
        )


def test_topic_change_makes_rows_stale_and_reprocess_requeues_them(pg_url, start_reactor):
    _seed(pg_url, 40)
    first = start_reactor("--exit-when-idle")
    first.proc.wait(60)
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 40
    assert run_cli(pg_url, "reprocess", "--dry-run").stdout.startswith("0 analysed rows match")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO topics (label) VALUES ('support')")
    dry = run_cli(pg_url, "reprocess", "--dry-run")
    assert dry.stdout.startswith("40 analysed rows match (stale)"), dry.stdout + dry.stderr
    out = run_cli(pg_url, "reprocess", "--chunk", "7")
    assert out.returncode == 0 and "requeued 40 of 40" in out.stdout, out.stderr
    assert scalar(pg_url, "SELECT count(*) FROM reactor.queue WHERE priority = 2") == 40
    start_reactor()
    new_set = topic_set_id(["delivery", "price", "support"])
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE topic_set = %s", [new_set]) == 40,
        30,
        "all rows re-analysed with the new topic set",
    )
    assert run_cli(pg_url, "reprocess", "--dry-run").stdout.startswith("0 analysed rows match")


def test_reprocess_does_not_starve_fresh_inserts(pg_url, start_reactor):
    _seed(pg_url, 300)
    start_reactor("--exit-when-idle").proc.wait(60)
    assert run_cli(pg_url, "reprocess", "--all").returncode == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE job_configs SET config = config || '{\"batch_size\": 5}'")
    start_reactor(REACTOR_STANDIN_DELAY_MS="30")
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM reactor.queue WHERE priority = 2") < 290,
        30,
        "reprocessing under way",
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        fresh = [
            r[0]
            for r in conn.execute(
                "INSERT INTO feedbacks (text) SELECT 'fresh ' || g FROM generate_series(1, 5) g RETURNING id"
            )
        ]
    wait_until(
        lambda: (
            scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s)", [fresh]) == 5
        ),
        30,
        "fresh rows analysed",
    )
    backlog = scalar(pg_url, "SELECT count(*) FROM reactor.queue WHERE priority = 2")
    assert backlog > 100, f"fresh rows should jump the reprocessing backlog (left: {backlog})"
