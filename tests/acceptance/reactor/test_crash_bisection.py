"""A row that SIGKILLs `reactor listen` in a batch of 1,000 parks only itself, and fresh rows keep flowing
while the dead batch is bisected (issue 21). Real processes, restarted after each death as systemd would.

`pytest -s` prints how long the fresh rows waited: the figure the README quotes next to the promise.
"""

from __future__ import annotations

import signal
import statistics
import time

import psycopg
import pytest

from tests.acceptance.reactor.test_faults import say, set_config
from tests.support.db import assert_consistent, insert, scalar, waiting

KILLER = "SIGKILLS-THE-PROCESS"


@pytest.mark.slow
def test_a_sigkill_row_in_a_batch_of_1000_parks_only_itself_while_fresh_rows_flow(pg_url, start_reactor):
    set_config(pg_url, batch_size=1000, max_attempts=2)
    texts = [f"innocent feedback about the checkout page number {i}" for i in range(999)]
    ids = insert(pg_url, [*texts[:500], f"the {KILLER} row", *texts[500:]])  # one transaction: one batch
    killer = ids[500]
    args = ("--lease", "1", "--poll-interval", "0.2")
    env = {"REACTOR_STANDIN_KILL_ON": KILLER}
    reactor = start_reactor(*args, **env)
    say("did: 1,000 rows in one batch (batch_size 1000, max_attempts 2), the middle one SIGKILLs the reactor")

    fresh: list[tuple[int, float]] = []  # (feedback id, time.monotonic() of its commit)
    deaths, last_death, next_write = 0, 0.0, 0.0
    deadline = time.monotonic() + 240
    while not scalar(pg_url, "SELECT count(*) FROM reactor.failed"):
        assert time.monotonic() < deadline, f"the killer was not isolated in time ({deaths} deaths)"
        if reactor.proc.poll() is not None:
            assert reactor.proc.returncode == -signal.SIGKILL, reactor.log()[-3000:]
            deaths += 1
            last_death = time.monotonic()
            reactor = start_reactor(*args, **env)  # Restart=always
        if time.monotonic() >= next_write:  # a steady trickle of new feedback during the bisection
            fresh.append((insert(pg_url, [f"fresh feedback {len(fresh)} while bisecting"])[0], time.monotonic()))
            next_write = time.monotonic() + 0.25
        time.sleep(0.02)
    parked_at = time.monotonic()
    deadline = time.monotonic() + 60
    while waiting(pg_url):
        assert time.monotonic() < deadline, "queue not drained after the park"
        time.sleep(0.1)

    with psycopg.connect(pg_url) as conn:
        parked = conn.execute("SELECT feedback_id, cause, error FROM reactor.failed").fetchall()
        waits = dict(
            conn.execute(
                "SELECT feedback_id, extract(epoch FROM analyzed_at - enqueued_at)::float8 "
                "FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s)",
                [[f for f, _ in fresh]],
            ).fetchall()
        )
        first_analysed = {
            f: t
            for f, t in conn.execute(
                "SELECT a.feedback_id, a.analyzed_at < x.failed_at FROM reactor.feedback_analysis a, reactor.failed x "
                "WHERE a.feedback_id = ANY(%s)",
                [[f for f, _ in fresh]],
            ).fetchall()
        }
    say(f"{deaths} SIGKILLs until the killer ran alone twice; parked: {parked}")
    assert [(f, c) for f, c, _ in parked] == [(killer, "crash")]
    assert "killed the process each of the 2 times it ran alone" in parked[0][2]
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE feedback_id = ANY(%s)", [ids]) == 999
    assert len(waits) == len(fresh), "every fresh row analysed"
    during = [f for f, t in fresh if t < last_death]
    assert during and all(first_analysed[f] for f in during), "fresh rows waited for the end of the bisection"
    values = sorted(waits[f] for f in during)
    say(
        f"fresh rows committed during the bisection ({len(values)} of them, {deaths} deaths in "
        f"{parked_at - fresh[0][1]:.1f} s): wait p50 {statistics.median(values):.2f} s, max {values[-1]:.2f} s"
    )
    execute_delete(pg_url, killer)
    assert_consistent(pg_url)
    assert reactor.stop(signal.SIGTERM) == 0, reactor.log()[-3000:]


def execute_delete(url: str, feedback_id: int) -> None:
    """assert_consistent wants every feedback analysed: the parked one goes (its delete is then applied)."""
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM feedbacks WHERE id = %s", [feedback_id])
    deadline = time.monotonic() + 30
    while waiting(url):
        assert time.monotonic() < deadline
        time.sleep(0.1)
