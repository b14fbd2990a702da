"""The capture path with real `reactor listen` processes (issue 11): a reactor killed while armed, two reactors
arming and disarming under an insert storm, the LISTEN connection behind PgBouncer, and (issue 13) a SIGTERM
during a long model call, a config too large to parse, and a feedbacks table the reactor cannot use."""

from __future__ import annotations

import random
import signal
import time

import psycopg
from psycopg.conninfo import make_conninfo

from reactor.sql import q
from tests.support.db import (
    analysed,
    assert_consistent,
    insert,
    notified_by,
    run_writers,
    scalar,
    store_config_bypassing_validation,
    wait_until,
)
from tests.support.processes import run_cli


def armed(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM reactor.sleepers WHERE armed_until > now()"))


def test_a_reactor_killed_while_armed_neither_keeps_writers_notifying_nor_hides_the_others(pg_url, start_reactor):
    a = start_reactor("--poll-interval", "600")
    a.wait_for_log("wakeup.notifications_ok", 60)
    wait_until(lambda: armed(pg_url) == 1, 10, "reactor A armed")
    a.stop(signal.SIGKILL)
    ttl_left = float(scalar(pg_url, "SELECT extract(epoch FROM max(armed_until) - now()) FROM reactor.sleepers"))
    assert 0 < ttl_left <= 30, "a dead reactor's flag lasts one arming TTL at most"
    # until it expires writers still notify (harmless); once expired they stop
    assert notified_by(pg_url, "INSERT INTO feedbacks (text) VALUES ('while the dead flag lasts')", wait_s=0.5) == 1
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE reactor.sleepers SET armed_until = now() - interval '1 second'")  # its TTL passed
        conn.execute(q("publish_armed"))  # as the flag writers read it
    assert notified_by(pg_url, "INSERT INTO feedbacks (text) VALUES ('after it expired')", wait_s=0.5) == 0
    b = start_reactor("--poll-interval", "600")
    b.wait_for_log("wakeup.notifications_ok", 60)
    wait_until(lambda: analysed(pg_url) == 2 and armed(pg_url) == 1, 30, "reactor B caught up and armed")
    insert(pg_url, ["B must wake for this one"])  # the dead row is still there: it must not hide B's
    wait_until(lambda: analysed(pg_url) == 3, 5, "B woken by the insert (its poll is 600 s away)")
    assert b.stop() == 0
    assert_consistent(pg_url)


def test_two_reactors_arm_and_disarm_under_an_insert_storm_and_no_row_waits_past_the_poll(pg_url, start_reactor):
    poll_s = 2.0
    reactors = [start_reactor("--poll-interval", str(poll_s)) for _ in range(2)]
    for r in reactors:
        r.wait_for_log("wakeup.notifications_ok", 60)

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            end = time.monotonic() + 6
            while time.monotonic() < end:
                conn.execute("INSERT INTO feedbacks (text) VALUES (%s)", [f"storm {seed} {rng.random()}"])
                time.sleep(rng.choice([0, 0, 0.001, 0.02, 0.3]))  # bursts and lulls: both reactors go idle

    run_writers(writer, 8)
    total = int(scalar(pg_url, "SELECT count(*) FROM feedbacks"))
    wait_until(lambda: analysed(pg_url) == total, 30, "every storm row analysed")
    worst = float(
        scalar(
            pg_url,
            "SELECT extract(epoch FROM max(a.analyzed_at - f.created_at)) FROM feedbacks f "
            "JOIN reactor.feedback_analysis a ON a.feedback_id = f.id",
        )
    )
    assert worst < poll_s, f"a row waited {worst:.2f}s, longer than the poll interval"
    for r in reactors:
        assert r.stop() == 0
        assert "unexpected_error" not in r.log()
    assert_consistent(pg_url)


def test_behind_pgbouncer_the_reactor_says_notifications_do_not_arrive_and_polls(pg_url, pgbouncer_url, start_reactor):
    pooled = start_reactor("--poll-interval", "0.5", url=pgbouncer_url, REACTOR_PREPARED_STATEMENTS="off")
    pooled.wait_for_log("wakeup.notifications_not_delivered", 60)
    assert "REACTOR_LISTEN_URL" in pooled.log()
    insert(pg_url, [f"through the pool {i}" for i in range(30)])
    wait_until(lambda: analysed(pg_url) == 30, 30, "rows found by polling")
    assert pooled.stop() == 0
    assert "unexpected_error" not in pooled.log() and "prepared statement" not in pooled.log()


def test_behind_pgbouncer_with_a_session_listen_url_notifications_work(pg_url, pgbouncer_url, start_reactor):
    reactor = start_reactor(
        "--poll-interval", "600", url=pgbouncer_url, REACTOR_PREPARED_STATEMENTS="off", REACTOR_LISTEN_URL=pg_url
    )
    reactor.wait_for_log("wakeup.notifications_ok", 60)
    wait_until(lambda: armed(pg_url) == 1, 10, "armed")
    for i in range(20):  # more than psycopg's prepare threshold of repeated queries
        insert(pg_url, [f"woken through the session connection {i}"])
        wait_until(lambda i=i: analysed(pg_url) == i + 1, 5, f"row {i} (the poll is 600 s away)")
    assert reactor.stop() == 0
    assert "unexpected_error" not in reactor.log()
    assert_consistent(pg_url)


def test_sigterm_during_a_long_model_call_exits_after_the_grace_period(pg_url, start_reactor):
    reactor = start_reactor("--grace", "1", REACTOR_STANDIN_DELAY_MS="15000")
    reactor.wait_for_log("reactor.started", 90)  # the warm-up call takes the delay too
    insert(pg_url, ["a text the model takes 15 s over"])
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM reactor.queue WHERE claimed_by IS NOT NULL") == 1, 30)
    started = time.monotonic()
    code = reactor.stop(signal.SIGTERM, timeout=10)
    took = time.monotonic() - started
    assert code == 0 and took < 6, f"exit {code} after {took:.1f}s"
    assert "batch.released" in reactor.log() and "reactor.exit_abandoning_model_call" in reactor.log()
    # the batch was given back untouched: unclaimed, its attempt not counted
    assert scalar(pg_url, "SELECT attempts FROM reactor.queue WHERE claimed_by IS NULL") == 0


def test_a_config_number_too_large_for_python_does_not_stop_the_daemon(pg_url, start_reactor):
    store_config_bypassing_validation(pg_url, '{"batch_size": 1e5000, "run_next_job": true}')
    reactor = start_reactor()
    reactor.wait_for_log("control.invalid_config", 60)
    insert(pg_url, ["analysed with the default batch size"])
    wait_until(lambda: analysed(pg_url) == 1, 30)
    assert reactor.stop() == 0
    assert run_cli(pg_url, "status").returncode == 0


def test_sql_refuses_a_feedbacks_table_it_cannot_use_before_changing_anything(empty_db):
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE feedbacks (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), text text)")
    for args in (("sql",), ("sql", "--no-backfill")):
        out = run_cli(empty_db, *args)
        assert out.returncode != 0 and "Traceback" not in out.stderr
        assert "feedbacks.id is uuid, the reactor needs smallint or integer or bigint" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('reactor')").fetchone()[0] is None  # nothing installed
        conn.execute("INSERT INTO feedbacks (text) VALUES ('the application still writes')")


def test_sql_accepts_a_minimal_table_in_another_schema(empty_db):
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA app")
        conn.execute(
            "CREATE TABLE app.feedbacks (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, text varchar(500))"
        )
        conn.execute("INSERT INTO app.feedbacks (text) VALUES ('before the install')")
    url = make_conninfo(empty_db, options="-csearch_path=app,public")
    out = run_cli(url, "sql")
    assert out.returncode == 0, out.stderr
    listen = run_cli(url, "listen", "--exit-when-idle", "--poll-interval", "1")
    assert listen.returncode == 0, listen.stderr[-3000:]
    assert analysed(url) == 1
    assert_consistent(url)
    with psycopg.connect(url, autocommit=True) as conn:  # the triggers work on the table in schema app
        conn.execute("INSERT INTO feedbacks (text) VALUES ('after the install')")
        assert conn.execute("SELECT count(*) FROM reactor.inbox").fetchone()[0] == 1


def test_health_is_down_with_the_fix_while_the_schema_is_missing_and_recovers(pg_url, start_reactor):
    import json
    import urllib.error
    import urllib.request

    from tests.support.private_postgres import free_port

    port = free_port()

    def health() -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    reactor = start_reactor("--http", f"127.0.0.1:{port}", "--poll-interval", "1")
    reactor.wait_for_log("reactor.started", 60)
    wait_until(lambda: health()[0] == 200, 30, "/health UP")
    assert run_cli(pg_url, "sql", "--uninstall", "--yes").returncode == 0
    wait_until(lambda: health()[0] == 503, 30, "/health DOWN")
    body = health()[1]
    assert "run `reactor sql`" in body["reason"], body
    time.sleep(7)  # long enough for several loop retries, heartbeats and gauge refreshes
    assert "Traceback" not in reactor.log() and "UndefinedTable" not in reactor.log()
    assert run_cli(pg_url, "sql").returncode == 0
    wait_until(lambda: health()[0] == 200, 60, "/health UP after `reactor sql`")
    insert(pg_url, ["after the reinstall"])
    wait_until(lambda: analysed(pg_url) == 1, 60, "analysed after the reinstall")
    assert reactor.stop() == 0
