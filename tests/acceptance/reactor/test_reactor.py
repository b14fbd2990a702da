"""The reactor end to end against a real PostgreSQL: `reactor listen` runs as a subprocess, as in production,
with the fast stand-in models (Postgres is never faked)."""

from __future__ import annotations

import random
import time

import psycopg

from tests.support.db import (
    analysed,
    assert_consistent,
    insert,
    recount,
    run_writers,
    scalar,
    stored_counts,
    wait_until,
    waiting,
)
from tests.support.processes import run_cli

WORDS = ("fast slow price support crash login screen payment refund great awful button update delivery").split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


def queue_empty(url: str) -> bool:
    return waiting(url) == 0


def test_1000_rows_from_8_connections_with_out_of_order_commits(pg_url, start_reactor):
    """Late-committing transactions (lower ids committing after higher ones were processed) are not skipped."""
    reactor = start_reactor()
    reactor.wait_for_log("reactor.started")

    def writer(n: int) -> None:
        rng = random.Random(n)
        with psycopg.connect(pg_url) as conn:
            done = 0
            while done < 125:
                chunk = rng.randint(1, 10)
                chunk = min(chunk, 125 - done)
                with conn.transaction():
                    for _ in range(chunk):
                        conn.execute("INSERT INTO feedbacks (text) VALUES (%s)", [sentence(rng)])
                    if n % 3 == 0 and rng.random() < 0.3:
                        time.sleep(0.3)  # hold low ids while other writers commit higher ones
                done += chunk

    run_writers(writer, 8)
    assert scalar(pg_url, "SELECT count(*) FROM feedbacks") == 1000
    wait_until(lambda: analysed(pg_url) == 1000 and queue_empty(pg_url), 60, "1000 analyses")
    assert_consistent(pg_url)
    # exactly once: the completed batches together handled exactly 1000 queue rows
    assert scalar(pg_url, "SELECT sum(rows) FROM reactor.job_runs WHERE error IS NULL") == 1000
    assert scalar(pg_url, "SELECT count(*) FROM jobs WHERE status <> 'completed'") == 0
    assert scalar(pg_url, "SELECT max(last_processed_id) FROM jobs") == scalar(pg_url, "SELECT max(id) FROM feedbacks")


def test_sigkill_mid_batch_then_restart_loses_nothing_and_counts_once(pg_url, start_reactor):
    insert(pg_url, [sentence(random.Random(i)) for i in range(60)])
    first = start_reactor("--lease", "2", REACTOR_STANDIN_DELAY_MS="1500")
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM reactor.queue WHERE claimed_by IS NOT NULL") > 0,
        30,
        "a claimed batch",
    )
    first.stop(9)  # SIGKILL while the batch is in the models
    leased = scalar(pg_url, "SELECT count(*) FROM reactor.queue WHERE claimed_by IS NOT NULL")
    assert leased > 0
    second = start_reactor("--lease", "2")
    wait_until(lambda: analysed(pg_url) == 60 and queue_empty(pg_url), 60, "all rows after restart")
    assert_consistent(pg_url)
    # the killed batch's job row was closed as failed, so `status` does not report it incomplete forever
    assert scalar(pg_url, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 0
    assert scalar(pg_url, "SELECT count(*) FROM jobs WHERE status = 'failed'") >= 1
    second.stop()


def test_rows_inserted_while_down_are_processed_on_start(pg_url, start_reactor):
    ids = insert(pg_url, ["service was down when I wrote this"] * 25)
    reactor = start_reactor("--poll-interval", "600")
    wait_until(lambda: analysed(pg_url) == len(ids), 30, "catch-up on start")
    reactor.stop()


def test_rows_inserted_during_listen_reconnect_are_not_lost(pg_url, start_reactor):
    # no poll fallback: only the catch-up after the reconnect can find these rows
    reactor = start_reactor("--poll-interval", "600")
    reactor.wait_for_log("reactor.started")
    insert(pg_url, ["before the cut"])
    wait_until(lambda: analysed(pg_url) == 1, 30, "first row")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'reactor-listener'"
        ).fetchone()[0]
        assert killed >= 1
        # inserted while the listener is disconnected: the NOTIFY reaches nobody
        conn.execute("INSERT INTO feedbacks (text) SELECT 'written during the reconnect' FROM generate_series(1, 20)")
    reactor.wait_for_log("listener.reconnected", 30)
    wait_until(lambda: analysed(pg_url) == 21, 30, "rows from the reconnect window")
    reactor.stop()


def test_stop_pauses_claiming_and_resume_drains_backlog(pg_url, start_reactor):
    reactor = start_reactor("--poll-interval", "0.2")
    reactor.wait_for_log("reactor.started")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE job_configs SET config = config || '{\"run_next_job\": false}'")
        committed_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    reactor.wait_for_log("control.paused", 10)
    insert(pg_url, ["arrives while paused"] * 30)
    time.sleep(1.5)  # several poll intervals and notifications: none may claim
    assert analysed(pg_url) == 0
    assert scalar(pg_url, "SELECT count(*) FROM jobs WHERE created_at > %s", [committed_at]) == 0
    assert run_cli(pg_url, "resume").returncode == 0
    reactor.wait_for_log("control.resumed", 10)
    wait_until(lambda: analysed(pg_url) == 30, 30, "backlog drained after resume")
    assert '"latency_ms"' in reactor.log()


def test_stop_takes_effect_without_notification(pg_url, start_reactor):
    """Even if the control NOTIFY were lost, the claim statement itself refuses work once stop committed."""
    reactor = start_reactor("--poll-interval", "600")  # no poll: the reactor keeps believing it runs
    reactor.wait_for_log("reactor.started")
    insert(pg_url, ["processed while running"])
    wait_until(lambda: analysed(pg_url) == 1, 30, "first row")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE job_configs DISABLE TRIGGER reactor_job_configs_notify")
        conn.execute("UPDATE job_configs SET config = config || '{\"run_next_job\": false}'")
    insert(pg_url, ["no claim while stopped"] * 5)  # wakes the reactor, which tries to claim
    time.sleep(1.0)
    assert analysed(pg_url) == 1
    assert "control.paused" not in reactor.log()  # it never heard of the stop: the SQL gate refused the claims
    assert scalar(pg_url, "SELECT count(*) FROM jobs") == 1


def test_batch_size_change_applies_to_next_claim(pg_url, start_reactor):
    reactor = start_reactor("--poll-interval", "0.2")
    reactor.wait_for_log("reactor.started")
    assert run_cli(pg_url, "stop").returncode == 0
    reactor.wait_for_log("control.paused", 10)
    insert(pg_url, ["one of many"] * 90)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute('UPDATE job_configs SET config = config || \'{"batch_size": 45, "run_next_job": true}\'')
    wait_until(lambda: analysed(pg_url) == 90, 30, "drain with batch 45")
    assert scalar(pg_url, "SELECT max(rows) FROM reactor.job_runs") == 45


def test_update_reanalyses_and_delete_subtracts(pg_url, start_reactor):
    reactor = start_reactor()
    reactor.wait_for_log("reactor.started")
    [a, b] = insert(pg_url, ["banana banana cherry", "cherry durian"])
    wait_until(lambda: analysed(pg_url) == 2, 30, "two analyses")
    assert stored_counts(pg_url) == {"banana": 2, "cherry": 2, "durian": 1}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE feedbacks SET text = 'elderberry cherry' WHERE id = %s", [a])
        conn.execute("UPDATE feedbacks SET product_name = 'not text' WHERE id = %s", [b])  # no re-analysis
    wait_until(lambda: stored_counts(pg_url) == {"cherry": 2, "durian": 1, "elderberry": 1}, 30, "update delta")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM feedbacks WHERE id = %s", [b])
    wait_until(lambda: stored_counts(pg_url) == {"cherry": 1, "elderberry": 1}, 30, "delete delta")
    assert analysed(pg_url) == 1
    assert stored_counts(pg_url) == recount(pg_url)
    assert scalar(pg_url, "SELECT count(*) FROM reactor.queue") == 0


def test_many_updates_of_one_row_end_with_the_last_text(pg_url, start_reactor):
    reactor = start_reactor()
    reactor.wait_for_log("reactor.started")
    [fid] = insert(pg_url, ["version zero"])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for n in range(1, 40):
            conn.execute("UPDATE feedbacks SET text = %s WHERE id = %s", [f"version{n} apple", fid])
    wait_until(lambda: queue_empty(pg_url), 30, "queue drained")
    assert stored_counts(pg_url) == {"version39": 1, "apple": 1}
    assert_consistent(pg_url)


def test_bad_input_is_processed_or_parked_without_hurting_the_batch(pg_url, start_reactor):
    huge = ("word " * 210_000)[:1_050_000]  # ~1 MB
    texts = [
        None,
        "",
        "   ",
        huge,
        "emoji 😀🔥 café naïve",
        "control \x01\x02\x1b[31m chars\u200b",
        "</s> [SEP] <s> [CLS] tags",
        "x" * 100 + " normal words here",
    ]
    ids = insert(pg_url, texts)
    reactor = start_reactor()
    wait_until(lambda: queue_empty(pg_url), 60, "everything handled")
    with psycopg.connect(pg_url) as conn:
        rows = dict(conn.execute("SELECT feedback_id, topics FROM reactor.feedback_analysis").fetchall())
    for fid in ids[:3]:
        assert rows[fid] == [{"label": "__UNKNOWN__", "score": 0.0}]
    assert set(ids) == set(rows)  # 1 MB text is under the default 2 MiB limit: processed
    assert_consistent(pg_url)
    reactor.stop()


def test_text_over_size_limit_is_parked_with_clear_error(pg_url, start_reactor):
    ids = insert(pg_url, ["a" * 5000 + " big", "small and fine"])
    reactor = start_reactor(REACTOR_MAX_TEXT_BYTES="4096")
    wait_until(lambda: queue_empty(pg_url), 30, "queue drained")
    assert analysed(pg_url) == 1
    error = scalar(pg_url, "SELECT error FROM reactor.failed WHERE feedback_id = %s", [ids[0]])
    assert "over the 4096-byte limit" in error
    reactor.stop()


def test_poison_row_is_retried_then_parked_and_neighbours_complete(pg_url, start_reactor):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE job_configs SET config = config || '{\"max_attempts\": 3}'")
    ids = insert(pg_url, ["good one", "POISON pill", "good two", "good three"])
    reactor = start_reactor("--poll-interval", "0.2", REACTOR_STANDIN_FAIL_ON="POISON", REACTOR_RETRY_BASE_S="0.05")
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM reactor.failed") == 1, 30, "poison parked")
    assert analysed(pg_url) == 3
    attempts, error = (
        psycopg.connect(pg_url)
        .execute("SELECT attempts, error FROM reactor.failed WHERE feedback_id = %s", [ids[1]])
        .fetchone()
    )
    assert attempts == 3
    assert "refused a text containing 'POISON'" in error
    # operator fixes the row and requeues
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE feedbacks SET text = 'fixed pill' WHERE id = %s", [ids[1]])
    assert run_cli(pg_url, "retry-failed").returncode == 0
    wait_until(lambda: analysed(pg_url) == 4 and queue_empty(pg_url), 30, "requeued row analysed")
    assert_consistent(pg_url)
    reactor.stop()


def test_sigterm_finishes_batch_in_flight_and_exits_zero(pg_url, start_reactor):
    insert(pg_url, ["slow batch row"] * 5)
    reactor = start_reactor(REACTOR_STANDIN_DELAY_MS="800")
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM reactor.queue WHERE claimed_by IS NOT NULL") > 0,
        30,
        "batch in flight",
    )
    assert reactor.stop(15) == 0
    assert analysed(pg_url) == 5
    assert "reactor.stopping" in reactor.log()
    assert scalar(pg_url, "SELECT count(*) FROM reactor.workers") == 0


def test_sigterm_past_grace_releases_batch_untouched(pg_url, start_reactor):
    insert(pg_url, ["very slow row"] * 3)
    reactor = start_reactor("--grace", "0.2", REACTOR_STANDIN_DELAY_MS="5000")
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM reactor.queue WHERE claimed_by IS NOT NULL") > 0,
        30,
        "batch in flight",
    )
    assert reactor.stop(15, timeout=10) == 0
    assert "batch.released" in reactor.log()
    assert scalar(pg_url, "SELECT count(*) FROM reactor.queue WHERE claimed_by IS NULL AND attempts = 0") == 3
    assert scalar(pg_url, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 0


def test_metadata_change_reindexes_without_running_the_models(pg_url, start_reactor):
    """product_name/sender changes queue a 'reindex' (search document only); text changes re-analyse."""
    ids = insert(pg_url, ["parcel arrived late", "great price"])
    reactor = start_reactor()
    wait_until(lambda: analysed(pg_url) == 2 and queue_empty(pg_url), 30, "first analyses")
    reactor.stop()
    before = dict(psycopg.connect(pg_url).execute("SELECT feedback_id, analyzed_at FROM reactor.feedback_analysis"))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE feedbacks SET product_name = product_name")  # nothing changed: nothing queued
        assert queue_empty(pg_url)
        conn.execute("UPDATE feedbacks SET product_name = 'renamed', sender = 'x' WHERE id = %s", [ids[0]])
        conn.execute("UPDATE feedbacks SET text = 'great price, fast too' WHERE id = %s", [ids[1]])
        ops = conn.execute("SELECT feedback_id, op FROM reactor.inbox ORDER BY enqueued_at").fetchall()
    assert ops == [(ids[0], "reindex"), (ids[1], "upsert")]
    reactor = start_reactor()
    wait_until(lambda: queue_empty(pg_url), 30, "queue drained")
    after = dict(psycopg.connect(pg_url).execute("SELECT feedback_id, analyzed_at FROM reactor.feedback_analysis"))
    assert after[ids[0]] == before[ids[0]]  # not analysed again
    assert after[ids[1]] > before[ids[1]]
    assert_consistent(pg_url)
    reactor.stop()
