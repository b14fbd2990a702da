"""Fault-injection acceptance tests (issue 5): kills, a PostgreSQL restart, a poison row, a long transaction,
health and metrics, heartbeats. Every test prints what it did and what it checked (see it with `pytest -s`).

`reactor listen` runs as a subprocess against a real PostgreSQL with the fast stand-in models; faults are
injected from outside (signals, pg_ctl, held transactions) or through the stand-in's test hooks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from tests.support.db import (
    analysed,
    assert_consistent,
    assert_invariants,
    insert,
    recount,
    scalar,
    stored_counts,
    wait_until,
    waiting,
)
from tests.support.private_postgres import PrivatePostgres, free_port
from tests.support.processes import run_cli

WORDS = (
    "fast slow price support crash login screen payment refund great awful button update delivery "
    "checkout invoice password upload search filter export dark mode battery sync offline"
).split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


def say(msg: str) -> None:
    print(f"  [faults] {msg}", flush=True)


def queue_depth(url: str) -> int:
    return waiting(url)


def analysed_of(url: str, ids: list[int]) -> int:
    return int(scalar(url, "SELECT count(*) FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s)", [ids]))


def set_config(url: str, **values: object) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE job_configs SET config = config::jsonb || %s::jsonb", [json.dumps(values)])


def status_json(url: str) -> tuple[int, dict]:
    res = run_cli(url, "status", "--json")
    assert res.returncode in (0, 1), f"reactor status failed ({res.returncode}): {res.stderr}"
    return res.returncode, json.loads(res.stdout)


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def assert_all_analysed_once(url: str, expected: int) -> None:
    """The end state every fault test must reach: all rows analysed exactly once, nothing queued or parked."""
    n_feedback = int(scalar(url, "SELECT count(*) FROM feedbacks"))
    assert n_feedback == expected, f"{n_feedback} feedback rows, expected {expected}"
    assert analysed(url) == expected
    assert queue_depth(url) == 0, "queue not empty"
    parked = scalar(url, "SELECT count(*) FROM reactor.failed")
    assert parked == 0, f"{parked} rows parked: {scalar(url, 'SELECT min(error) FROM reactor.failed')}"
    assert_consistent(url)  # no missing analysis, word totals equal a recount (nothing counted twice)
    say(f"checked: {expected} feedback rows, {expected} analyses, queue empty, none parked, word totals == recount")


# --- 1. kill storm -----------------------------------------------------------------------------------------

KILL_ROWS = int(os.environ.get("FAULTS_KILL_ROWS", "10000"))
KILLS = int(os.environ.get("FAULTS_KILLS", "20"))
KILLER = "KILLS-THE-PROCESS"


def _lease_holders(url: str) -> set[int]:
    """Pids of reactors holding a live lease (claim tokens are host:pid:uuid:seq)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT DISTINCT claimed_by FROM reactor.queue WHERE claimed_until >= now()").fetchall()
    return {int(token.split(":")[-3]) for (token,) in rows if token}


def _orphaned_tokens(url: str, pid: int) -> set[str]:
    """Claim tokens of a killed reactor that still hold queue rows (its batch was in flight)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT claimed_by FROM reactor.queue WHERE claimed_by LIKE %s", [f"%:{pid}:%"]
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.slow
def test_kill_storm_3_reactors_10000_rows_every_row_once(pg_url, start_reactor):
    say(f"3 reactors (--lease 2), batch_size 50, max_attempts 100, {KILL_ROWS} rows, >= {KILLS} SIGKILLs")
    set_config(pg_url, batch_size=50, max_attempts=100)
    args = ("--lease", "2", "--poll-interval", "1")
    env = {"REACTOR_STANDIN_DELAY_MS": "40", "REACTOR_STANDIN_EXIT_ON": KILLER}
    live = [start_reactor(*args, **env) for _ in range(3)]
    for r in live:
        r.wait_for_log("reactor.started", 60)

    # rows arrive while the storm runs, so the reactors are busy (mid-batch) when the kills land
    errors: list[BaseException] = []
    inserted = threading.Event()

    def writer() -> None:
        rng = random.Random(5)
        try:
            left, chunk = KILL_ROWS, max(1, KILL_ROWS // 40)
            while left > 0:
                n = min(chunk, left)
                insert(pg_url, [sentence(rng) for _ in range(n)])
                left -= n
                time.sleep(0.4)
        except BaseException as exc:
            errors.append(exc)
        finally:
            inserted.set()

    t = threading.Thread(target=writer, daemon=True)
    t0 = time.monotonic()
    t.start()
    rng = random.Random(7)
    kills = mid_batch = 0
    orphans: set[str] = set()
    while kills < KILLS or not inserted.is_set():
        time.sleep(rng.uniform(0.4, 1.0))
        look_until = time.monotonic() + 1.0  # prefer a reactor that holds a lease right now: a mid-batch kill
        while not (holders := _lease_holders(pg_url) & {r.proc.pid for r in live}) and time.monotonic() < look_until:
            time.sleep(0.02)
        candidates = [r for r in live if r.proc.pid in holders] or live
        victim = rng.choice(candidates)
        pid = victim.proc.pid
        victim.stop(signal.SIGKILL)
        kills += 1
        orphaned = _orphaned_tokens(pg_url, pid)
        if orphaned:
            mid_batch += 1
            orphans |= orphaned
        live.remove(victim)
        live.append(start_reactor(*args, **env))
    t.join(120)
    assert not errors, errors
    say(
        f"did: {kills} SIGKILLs in {time.monotonic() - t0:.1f}s, {mid_batch} left an orphaned lease (mid-batch); "
        f"analysed so far {analysed(pg_url)}, queue {queue_depth(pg_url)}"
    )
    assert kills >= KILLS
    assert mid_batch >= KILLS // 2, f"only {mid_batch} of {kills} kills landed mid-batch"

    wait_until(lambda: analysed(pg_url) == KILL_ROWS and queue_depth(pg_url) == 0, 180, "all rows analysed")
    say(f"drained {time.monotonic() - t0:.1f}s after the first insert")
    assert_all_analysed_once(pg_url, KILL_ROWS)

    # batches of killed reactors are closed as failed by the next claim after their lease expired
    def status_ok() -> bool:
        return run_cli(pg_url, "status").returncode == 0

    wait_until(status_ok, 30, "`reactor status` exit 0 (no 'processing' job left)")
    processing = scalar(pg_url, "SELECT count(*) FROM jobs WHERE status = 'processing'")
    with psycopg.connect(pg_url) as conn:  # the batches the kills interrupted, as their job_runs ended
        ends = conn.execute(
            "SELECT claim_token, finished_at IS NOT NULL, coalesce(error, '') FROM reactor.job_runs"
            " WHERE claim_token = ANY(%s)",
            [sorted(orphans)],
        ).fetchall()
    expired = sum(1 for _, _, error in ends if error.startswith("lease expired"))
    say(
        f"checked: `reactor status` exit 0, {processing} jobs processing; of {len(orphans)} interrupted batches "
        f"{expired} were closed as lease-expired (the rest committed as the kill landed)"
    )
    assert processing == 0
    assert len(ends) == len(orphans) and all(finished for _, finished, _ in ends)  # none left open
    # A kill can land while the batch's COMMIT is already on its way: the rows looked orphaned an instant
    # before the commit removed them. Most kills must still have been closed by lease expiry.
    assert expired >= KILLS // 2
    _, info = status_json(pg_url)
    live_pids = {r.proc.pid for r in live}
    listed = {w["pid"] for w in info["workers"]}
    say(f"status lists {len(listed)} workers ({len(listed - live_pids)} of them killed reactors)")
    assert live_pids <= listed

    # A row that kills the process itself, in one batch with 9 innocent rows: the crashed batch comes back in
    # halves, so only the culprit reaches max_attempts and is parked; a supervisor restarts dead reactors.
    set_config(pg_url, batch_size=10, max_attempts=5)
    neighbours = insert(
        pg_url,
        [f"innocent neighbour {i}" for i in range(4)]
        + [f"the {KILLER} row"]
        + [f"innocent neighbour {i}" for i in range(4, 9)],
    )
    killer = neighbours.pop(4)
    deaths = 0
    deadline = time.monotonic() + 180
    while scalar(pg_url, "SELECT count(*) FROM reactor.failed") == 0 or queue_depth(pg_url):
        assert time.monotonic() < deadline, "the killer row was not isolated in time"
        for r in list(live):
            if r.proc.poll() is not None:  # died on the killer row: restart it, as systemd would
                assert r.proc.returncode == 70, r.log()[-2000:]
                deaths += 1
                live.remove(r)
                live.append(start_reactor(*args, **env))
        time.sleep(0.1)
    parked = [row[0] for row in psycopg.connect(pg_url).execute("SELECT feedback_id FROM reactor.failed")]
    say(f"did: a row that kills the process, with 9 neighbours: {deaths} deaths, parked {parked}")
    assert parked == [killer]
    assert (
        scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s)", [neighbours]) == 9
    )
    assert_invariants(pg_url)
    for r in live:
        assert r.stop(signal.SIGTERM) == 0, r.log()[-3000:]
        assert "unexpected_error" not in r.log(), r.log()[-4000:]
    say("checked: the 3 surviving reactors stop cleanly on SIGTERM (exit 0)")


# --- 2. PostgreSQL restart ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_postgres_restart_mid_run_reactor_recovers_nothing_lost(
    private_pg: PrivatePostgres, private_url, start_reactor
):
    url = private_url
    reactor = start_reactor("--poll-interval", "1", url=url)
    reactor.wait_for_log("reactor.started", 60)
    rng = random.Random(11)
    before = insert(url, [sentence(rng) for _ in range(200)])
    wait_until(lambda: analysed(url) == 200, 60, "rows inserted before the restart")
    say("did: 200 rows inserted and analysed before the restart")

    stop_writing = threading.Event()
    during: list[int] = []
    failed_attempts = [0]

    def writer() -> None:
        wrng = random.Random(12)
        while not stop_writing.is_set():
            text = sentence(wrng)
            while True:  # retried until the server is back: a user's insert must not be lost either
                try:
                    with psycopg.connect(url, connect_timeout=2) as conn:
                        row = conn.execute("INSERT INTO feedbacks (text) VALUES (%s) RETURNING id", [text]).fetchone()
                    # counted once committed: the id RETURNING gave is not a row if the shutdown cuts the commit
                    during.append(row[0])
                    break
                except psycopg.Error:
                    failed_attempts[0] += 1
                    time.sleep(0.2)
            time.sleep(0.05)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    time.sleep(1)
    took = private_pg.stop()
    say(f"did: PostgreSQL stopped (fast shutdown, {took:.1f}s) while rows were being inserted")
    time.sleep(4)
    took = private_pg.start()
    say(f"did: PostgreSQL started again ({took:.1f}s)")
    time.sleep(2)
    stop_writing.set()
    t.join(30)
    assert failed_attempts[0] > 0, "no insert hit the outage: the restart did not happen mid-run"
    after = insert(url, [sentence(rng) for _ in range(100)])
    total = len(before) + len(during) + len(after)
    say(f"did: {len(during)} rows inserted around the outage ({failed_attempts[0]} attempts refused), 100 after")

    reactor.wait_for_log("listener.reconnected", 60)
    try:
        wait_until(lambda: analysed(url) >= total and queue_depth(url) == 0, 90, "all rows after the restart")
    except AssertionError as exc:  # say where it stuck: the rows still waiting and what the reactor last did
        with psycopg.connect(url) as conn:
            waiting = conn.execute("SELECT * FROM reactor.queue ORDER BY feedback_id LIMIT 20").fetchall()
        raise AssertionError(
            f"{exc}: {analysed(url)} of {total} analysed ({scalar(url, 'SELECT count(*) FROM feedbacks')} feedbacks), "
            f"queue {waiting}, exit {reactor.proc.poll()}, "
            f"log tail:\n{reactor.log()[-6000:]}"
        ) from None
    assert reactor.proc.poll() is None, "the reactor exited instead of recovering"
    assert_all_analysed_once(url, int(scalar(url, "SELECT count(*) FROM feedbacks")))
    with psycopg.connect(url) as conn:
        missing = conn.execute(
            "SELECT count(*) FROM unnest(%s::bigint[]) AS t(id) "
            "LEFT JOIN reactor.feedback_analysis a ON a.feedback_id = t.id WHERE a.feedback_id IS NULL",
            [before + during + after],
        ).fetchone()[0]
    assert missing == 0
    assert "unexpected_error" not in reactor.log(), reactor.log()[-4000:]
    say("checked: the same reactor process logged listener.reconnected and analysed rows from before, during, after")
    assert reactor.stop() == 0


# --- 3. poison row -----------------------------------------------------------------------------------------


def test_poison_row_parked_after_max_attempts_rest_of_batch_completes(pg_url, start_reactor):
    set_config(pg_url, batch_size=50, max_attempts=3)
    reactor = start_reactor(
        "--poll-interval", "0.5", REACTOR_STANDIN_FAIL_ON="POISON-PILL", REACTOR_RETRY_BASE_S="0.05"
    )
    reactor.wait_for_log("reactor.started", 60)
    rng = random.Random(3)
    texts: list[str | None] = [sentence(rng) for _ in range(20)]
    texts[7] = "this one contains POISON-PILL and always fails"
    ids = insert(pg_url, texts)  # one transaction: one batch
    poison = ids[7]
    say(f"did: 20 rows in one transaction, row {poison} makes the stand-in model raise; max_attempts=3")

    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM reactor.failed") == 1, 60, "the poison row parked")
    wait_until(lambda: queue_depth(pg_url) == 0, 30, "queue drained")
    with psycopg.connect(pg_url) as conn:
        fid, attempts, error = conn.execute("SELECT feedback_id, attempts, error FROM reactor.failed").fetchone()
        first = conn.execute(
            "SELECT r.rows, r.error, j.status FROM reactor.job_runs r JOIN jobs j ON j.id = r.job_id "
            "ORDER BY r.job_id LIMIT 1"
        ).fetchone()
        others = conn.execute(
            "SELECT count(*) FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s)",
            [[i for i in ids if i != poison]],
        ).fetchone()[0]
        poison_analysed = conn.execute(
            "SELECT count(*) FROM reactor.feedback_analysis WHERE feedback_id = %s", [poison]
        ).fetchone()[0]
        runs = conn.execute("SELECT count(*) FROM reactor.job_runs").fetchone()[0]
    say(f"parked row {fid}: attempts={attempts}, error={error!r}")
    say(f"first batch: {first[0]} rows, status {first[2]}, error {first[1]!r}; {runs} batches in total")
    assert fid == poison
    assert attempts == 3
    assert "POISON-PILL" in error and "RuntimeError" in error
    assert first[0] == 20 and first[2] == "completed", "the whole batch was claimed, its other rows completed"
    assert "1 of 20 rows failed" in (first[1] or "")
    assert others == 19
    assert poison_analysed == 0
    assert runs == 3, "the poison row was tried exactly max_attempts times"
    assert stored_counts(pg_url) == {w: c for w, c in recount_without(pg_url, poison).items()}, (
        "word totals count every row but the parked one"
    )
    code, info = status_json(pg_url)
    assert code == 0 and info["failed_rows"] == 1
    say("checked: parked with attempts=3 and its error, 19 neighbours analysed in the first batch, status exit 0")
    reactor.stop()


def recount_without(url: str, feedback_id: int) -> dict[str, int]:
    from collections import Counter

    from reactor.nlp.words import count_words

    total: Counter[str] = Counter()
    with psycopg.connect(url) as conn:
        for (text,) in conn.execute("SELECT text FROM feedbacks WHERE id <> %s", [feedback_id]):
            total.update(count_words(text))
    return dict(total)


# --- 4. long transaction -----------------------------------------------------------------------------------

LONG_TX_S = float(os.environ.get("FAULTS_LONG_TX_S", "60"))


@pytest.mark.parametrize("hold_s", [5.0, pytest.param(LONG_TX_S, marks=pytest.mark.slow, id="long")])
def test_transaction_held_open_is_processed_when_it_commits(pg_url, start_reactor, hold_s):
    reactor = start_reactor("--poll-interval", "1")
    reactor.wait_for_log("reactor.started", 60)
    rng = random.Random(4)
    held_conn = psycopg.connect(pg_url)
    try:
        held_ids = [
            held_conn.execute("INSERT INTO feedbacks (text) VALUES (%s) RETURNING id", [sentence(rng)]).fetchone()[0]
            for _ in range(5)
        ]
        say(f"did: transaction inserted ids {held_ids} and stays open for {hold_s:.0f}s")
        later: list[int] = []
        deadline = time.monotonic() + hold_s
        rounds = 0
        while time.monotonic() < deadline:
            new = insert(pg_url, [sentence(rng) for _ in range(10)])
            later += new
            rounds += 1
            expect = list(later)
            wait_until(
                lambda expect=expect: analysed_of(pg_url, expect) == len(expect),
                30,
                "later ids analysed while the old transaction is open",
            )
            assert not scalar(
                pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s)", [held_ids]
            )
            time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
        assert min(later) > max(held_ids)
        last_processed = scalar(pg_url, "SELECT max(last_processed_id) FROM jobs")
        say(
            f"checked: {len(later)} later ids ({min(later)}..{max(later)}) committed in {rounds} rounds and analysed "
            f"while ids {held_ids[0]}..{held_ids[-1]} were uncommitted (jobs.last_processed_id={last_processed})"
        )
        assert last_processed > max(held_ids)
        committed_at = held_conn.execute("SELECT clock_timestamp()").fetchone()[0]
        held_conn.commit()
    finally:
        held_conn.close()
    say("did: the long transaction committed")
    wait_until(
        lambda: (
            scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s)", [held_ids])
            == len(held_ids)
        ),
        30,
        "held rows analysed after their commit",
    )
    with psycopg.connect(pg_url) as conn:
        held_at = conn.execute(
            "SELECT min(analyzed_at) FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s)", [held_ids]
        ).fetchone()[0]
        later_at = conn.execute(
            "SELECT max(analyzed_at) FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s)", [later]
        ).fetchone()[0]
    assert later_at < committed_at <= held_at
    wait_until(lambda: queue_depth(pg_url) == 0, 30, "queue drained")
    assert_all_analysed_once(pg_url, len(held_ids) + len(later))
    say("checked: held rows analysed after the commit, every later row before it")
    reactor.stop()


# --- 5. /health and /metrics -------------------------------------------------------------------------------

REQUIRED_METRICS = (
    "reactor_queue_depth",
    "reactor_batches_total",
    "reactor_rows_total",
    "reactor_paused",
    "reactor_outbox_depth",
    "reactor_insert_to_commit_seconds",
    "reactor_inference_seconds",
    "reactor_failures_total",
)


def _metric_names(text: str) -> tuple[set[str], dict[str, list]]:
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    families: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names.add(f"{fam.name}_total" if fam.type == "counter" else fam.name)
        families[fam.name] = fam.samples
        for s in fam.samples:
            names.add(s.name)
    return names, families


@pytest.mark.slow
def test_health_flips_while_postgres_is_down_and_metrics_parse(private_pg: PrivatePostgres, private_url, start_reactor):
    url = private_url
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    reactor = start_reactor("--http", f"127.0.0.1:{port}", "--poll-interval", "1", url=url)
    reactor.wait_for_log("reactor.started", 60)
    wait_until(lambda: _health(base)[0] == 200, 30, "/health 200")
    code, body = _health(base)
    assert json.loads(body)["status"] == "UP"
    say(f"checked: /health {code} {body.strip()[:200]}")

    ids = insert(url, [sentence(random.Random(i)) for i in range(30)])
    wait_until(lambda: analysed(url) == len(ids), 30, "rows analysed")
    code, text = http_get(f"{base}/metrics")
    assert code == 200
    names, families = _metric_names(text)
    missing = [m for m in REQUIRED_METRICS if m not in names]
    assert not missing, f"metrics missing: {missing}\n{text[:3000]}"
    inference_models = {s.labels.get("model") for s in families["reactor_inference_seconds"]} - {None}
    assert inference_models, "reactor_inference_seconds has no `model` label"
    rows = sum(s.value for s in families["reactor_rows"] if s.name == "reactor_rows_total")
    assert rows >= len(ids)
    say(f"checked: /metrics parses, has {', '.join(REQUIRED_METRICS)}; models {sorted(inference_models)}, rows {rows}")

    private_pg.stop()
    say("did: PostgreSQL stopped")
    wait_until(lambda: _health(base)[0] == 503, 45, "/health 503 while PostgreSQL is down")
    code, body = _health(base)
    down = json.loads(body)
    say(f"checked: /health {code} {body.strip()[:300]}")
    assert down["status"] == "DOWN" and down.get("reason")
    mcode, _ = http_get(f"{base}/metrics")
    say(f"/metrics while down: HTTP {mcode}")

    private_pg.start()
    say("did: PostgreSQL started again")
    wait_until(lambda: _health(base)[0] == 200, 60, "/health 200 after the restart")
    code, body = _health(base)
    assert json.loads(body)["status"] == "UP"
    more = insert(url, [sentence(random.Random(100 + i)) for i in range(10)])
    wait_until(lambda: analysed(url) == len(ids) + len(more), 60, "rows after the restart")
    say(f"checked: /health back to {code} UP, rows inserted after the restart analysed")
    assert reactor.stop() == 0


def _health(base: str) -> tuple[int, str]:
    try:
        return http_get(f"{base}/health", timeout=5)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return -1, str(exc)


# --- 6. heartbeats -----------------------------------------------------------------------------------------


def test_heartbeats_list_live_workers_and_sigterm_removes_its_row(pg_url, start_reactor):
    a = start_reactor()
    b = start_reactor()
    a.wait_for_log("reactor.started", 60)
    b.wait_for_log("reactor.started", 60)

    def pids() -> set[int]:
        return {w["pid"] for w in status_json(pg_url)[1]["workers"]}

    wait_until(lambda: pids() == {a.proc.pid, b.proc.pid}, 30, "both reactors in `status --json` workers")
    _, info = status_json(pg_url)
    say(f"checked: status --json lists workers {[(w['pid'], w['state'], w['host']) for w in info['workers']]}")
    for w in info["workers"]:
        assert w["state"] == "running" and w["host"] and w["started_at"] and w["last_seen"]
    assert a.stop(signal.SIGTERM) == 0
    say(f"did: SIGTERM to {a.proc.pid}")
    assert pids() == {b.proc.pid}, "the stopped reactor's heartbeat row is still listed"
    say(f"checked: only {b.proc.pid} is listed after the SIGTERM")
    insert(pg_url, ["still working after the other reactor stopped"])
    wait_until(lambda: analysed(pg_url) == 1, 30, "the remaining reactor processes")
    assert stored_counts(pg_url) == recount(pg_url)
    b.stop()
