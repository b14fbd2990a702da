"""Reprocessing after a topic change: stale analyses are requeued at low priority, fresh work goes first."""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg

from reactor.enrich import topic_set_id
from tests.support.db import assert_invariants, scalar, wait_until
from tests.support.processes import ROOT, reactor_env, run_cli

WAITING = "SELECT count(*) FROM reactor.queue WHERE priority = 2"  # rows a reprocess queued


def _seed(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO topics (label) VALUES ('price'), ('delivery')")
        conn.execute(
            "INSERT INTO feedbacks (text) SELECT 'row ' || g || ' late parcel' FROM generate_series(1, %s) g", [n]
        )


def _analysed_then_topic_added(url: str, start_reactor) -> None:
    """30 rows analysed with two topics, then a third: all 30 stale."""
    _seed(url, 30)
    start_reactor("--exit-when-idle").proc.wait(60)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO topics (label) VALUES ('support')")


def _paced_reprocess(url: str) -> subprocess.Popen[str]:
    """`reactor reprocess` with at most 10 rows waiting (chunks of 5), running in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "reactor", "reprocess", "--max-waiting", "10", "--chunk", "100"],
        env=reactor_env(url),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
    backlog = scalar(pg_url, WAITING)
    assert backlog > 100, f"fresh rows should jump the reprocessing backlog (left: {backlog})"


def test_reprocess_queues_at_most_max_waiting_rows_and_goes_on_as_the_reactor_takes_them(pg_url, start_reactor):
    _analysed_then_topic_added(pg_url, start_reactor)
    # No reactor runs: the command must stop at its limit (10 rows, chunks of 5) and wait, not queue all 30.
    cli = _paced_reprocess(pg_url)
    try:
        wait_until(lambda: scalar(pg_url, WAITING) == 10, 30, "the first two chunks queued")
        time.sleep(1.5)  # several polls of the command: it must still be waiting, with no more rows queued
        assert cli.poll() is None and scalar(pg_url, WAITING) == 10
        start_reactor()
        out, err = cli.communicate(timeout=60)
    finally:
        cli.kill()
    assert cli.returncode == 0 and "requeued 30 of 30 rows (stale)" in out, out + err
    new_set = topic_set_id(["delivery", "price", "support"])
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE topic_set = %s", [new_set]) == 30,
        30,
        "all rows re-analysed with the new topic set",
    )
    assert_invariants(pg_url)


def test_reprocess_goes_on_with_topics_edited_while_it_runs(pg_url, start_reactor):
    """Rows analysed with topics edited mid-run are not stale: the command reads the topic set per chunk."""
    _analysed_then_topic_added(pg_url, start_reactor)
    cli = _paced_reprocess(pg_url)
    newest = topic_set_id(["delivery", "price", "refund", "support"])
    try:
        # The command waits with the first 10 rows queued; meanwhile the topics change again and the last 10 rows
        # carry an analysis made with them (as a reactor serving fresh work would have left them).
        wait_until(lambda: scalar(pg_url, WAITING) == 10, 30, "the first two chunks queued")
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("INSERT INTO topics (label) VALUES ('refund')")
            conn.execute(
                "UPDATE reactor.feedback_analysis SET topic_set = %s WHERE feedback_id IN "
                "(SELECT feedback_id FROM reactor.feedback_analysis ORDER BY feedback_id OFFSET 20)",
                [newest],
            )
        start_reactor()
        out, err = cli.communicate(timeout=60)
    finally:
        cli.kill()
    assert cli.returncode == 0 and "requeued 20 of 30 rows (stale)" in out, out + err
    assert "the topics changed while it ran" in out, out
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE topic_set = %s", [newest]) == 30,
        30,
        "every row analysed with the newest topic set",
    )
    assert_invariants(pg_url)
