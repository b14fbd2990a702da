"""The wake-up protocol against a real PostgreSQL (issue 11): writers notify only while a reactor is armed, an
idle reactor wakes on one insert, and the lost-notification races are forced, not hoped for."""

from __future__ import annotations

import asyncio
import time

import psycopg

from reactor.sql import q, queries
from reactor.store import PgStore
from tests.support.cli import execute
from tests.support.db import assert_consistent, insert, notified_by, scalar
from tests.support.inprocess import running, store_for, until, wakeups

PUBLISH = queries()["publish_armed"]  # what a reactor runs after each change to its reactor.sleepers row


def test_writers_notify_only_while_some_reactor_is_armed(pg_url):
    insert_one = "INSERT INTO feedbacks (text) VALUES ('nobody is waiting')"
    assert notified_by(pg_url, insert_one) == 0
    arm = f"INSERT INTO reactor.sleepers VALUES ('a', now() + interval '30 seconds'); {PUBLISH}"
    assert notified_by(pg_url, arm, insert_one, insert_one) == 2  # one wake-up per notifying transaction
    # a reactor killed while armed: its flag expires, writers stop notifying for it
    expire = f"UPDATE reactor.sleepers SET armed_until = now() - interval '1 second'; {PUBLISH}"
    assert notified_by(pg_url, expire, insert_one, "UPDATE feedbacks SET text = 'x'", "DELETE FROM feedbacks") == 0
    # a dead reactor's stale row never hides a live one's
    arm_b = f"INSERT INTO reactor.sleepers VALUES ('b', now() + interval '30 seconds'); {PUBLISH}"
    assert notified_by(pg_url, arm_b, insert_one) == 1
    # what the reactors publish is the latest deadline of any row, whoever armed or disarmed last
    assert scalar(pg_url, "SELECT reactor.armed()")
    execute(pg_url, "DELETE FROM reactor.sleepers WHERE worker_id = 'b'", PUBLISH)
    assert not scalar(pg_url, "SELECT reactor.armed()")


def test_arming_and_disarming_publish_the_flag_one_at_a_time(pg_url):
    """Forced: reactor B arms while reactor A's disarm has not committed. B's publication waits for A's commit,
    so A's disarm can never overwrite B's deadline with its older view of reactor.sleepers."""

    async def go() -> None:
        a, b = store_for(pg_url, "a"), store_for(pg_url, "b")
        await a.open()
        await b.open()
        try:
            await a.arm(30)
            async with a.pool.connection() as conn, conn.transaction():  # A's disarm, held open before its commit
                await conn.execute(q("sleepers_lock"))
                await conn.execute(q("disarm"), {"id": "a"})
                await conn.execute(q("publish_armed"))
                arming = asyncio.create_task(b.arm(30))
                waiters = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
                await until(lambda: scalar(pg_url, waiters) == 1, what="B's arm to wait for A's disarm")
                assert not arming.done()
            await arming
            assert scalar(pg_url, "SELECT reactor.armed()")  # B's deadline, published after A's commit
            await b.disarm()
            assert not scalar(pg_url, "SELECT reactor.armed()")
            await b.arm(30)
            await b.worker_gone()  # a clean exit while armed: writers stop notifying at once, not after the TTL
            assert not scalar(pg_url, "SELECT reactor.armed()")
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_control_and_topic_changes_notify_whatever_the_flag(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as listen, psycopg.connect(pg_url, autocommit=True) as writer:
        listen.execute("LISTEN reactor_control")
        writer.execute("UPDATE job_configs SET config = config || '{\"batch_size\": 20}'")
        writer.execute("INSERT INTO topics (label) VALUES ('delivery')")
        payloads = [n.payload.rpartition("|")[0] for n in listen.notifies(timeout=0.5)]
    assert payloads == ["feedback_analysis", "topics"]


def held_locks(url: str, statement: str) -> set[tuple[str, str]]:
    """(relation or lock type, mode) of every lock the writer's open transaction holds after `statement`."""
    with psycopg.connect(url) as writer, psycopg.connect(url, autocommit=True) as watcher:
        writer.execute(statement)  # type: ignore[arg-type]
        pid = writer.info.backend_pid
        rows = watcher.execute(
            "SELECT coalesce(l.relation::regclass::text, l.locktype), l.mode FROM pg_locks l WHERE l.pid = %s",
            [pid],
        ).fetchall()
        writer.rollback()
    return {(what, mode) for what, mode in rows if what not in ("virtualxid", "transactionid")}


def test_the_writers_hot_path_locks_only_what_it_writes_and_reads_the_flag_shared(pg_url):
    """Issue 11, point 2: the control and topic triggers live on their own tables, and the capture trigger
    takes no lock a writer could wait on: row-exclusive on the inbox it writes and on the flag sequence it
    reads (as every sequence function does; writers and setval never conflict on it, only DDL on the sequence
    would), nothing on job_configs or topics, no advisory lock."""
    insert_locks = held_locks(pg_url, "INSERT INTO feedbacks (text) VALUES ('a writer on the hot path')")
    assert {mode for _, mode in insert_locks} == {"RowExclusiveLock"}
    # beside the application's own table, index and sequence: the inbox and the flag, no index or sequence of ours
    assert {what for what, _ in insert_locks} >= {"reactor.inbox", "reactor.armed_until_ms"}
    assert {what for what, _ in insert_locks} <= {
        "feedbacks",
        "feedbacks_pkey",
        "feedbacks_id_seq",
        "reactor.inbox",
        "reactor.armed_until_ms",
    }
    update_locks = held_locks(pg_url, "UPDATE job_configs SET config = config || '{\"batch_size\": 21}'")
    touched = {what for what, _ in update_locks}
    assert not touched & {"feedbacks", "reactor.inbox", "reactor.queue", "reactor.armed_until_ms", "advisory"}


def test_an_idle_reactor_wakes_on_one_insert(pg_url):
    async def go():
        async with running(pg_url) as reactor:
            await until(lambda: reactor.doorbell.armed, what="the reactor to arm")
            for n in range(1, 4):
                await asyncio.to_thread(insert, pg_url, [f"insert number {n} into an idle system"])
                await until(lambda n=n: wakeups(reactor, "notify") == n, what=f"row {n}")
                await until(lambda: reactor.doorbell.armed, what="the reactor to arm again")
            assert wakeups(reactor, "notify") == 3  # polls are 600 s apart: only a notification could do it
            assert wakeups(reactor, "recheck") == 0 and wakeups(reactor, "poll") == 0

    asyncio.run(go())
    assert_consistent(pg_url)


class ArmingHook(PgStore):
    """A PgStore that runs `before_arm` just before arming, and `at_look` right after its `look_number`-th look
    at the queue after that arming (1 = the hand-off look, 2 = the first re-check, ...)."""

    before_arm = None
    at_look = None
    look_number = 1
    looks = 0  # looks at the queue since the hooked arming

    async def arm(self, ttl_s: float) -> None:
        if self.before_arm is not None:
            hook, self.before_arm = self.before_arm, None
            await hook()
            self.looks = 0
        await super().arm(ttl_s)

    async def ready_rows(self) -> bool:
        found = await super().ready_rows()
        self.looks += 1
        if self.at_look is not None and self.looks == self.look_number:
            hook, self.at_look = self.at_look, None
            await hook()
        return found


async def _writer_held_open_across_arming(url: str, store: ArmingHook, reactor, commit_after_look: int) -> None:
    """A writer inserts while the reactor is not armed (so its trigger reads the flag down and will not notify),
    the reactor arms and looks at the queue `commit_after_look` times (the row is not committed yet), then the
    writer commits: the interleaving is forced by the hooks, not left to timing."""
    writer = await psycopg.AsyncConnection.connect(url)

    async def insert_uncommitted() -> None:
        await writer.execute("INSERT INTO feedbacks (text) VALUES ('committed after the look')")

    async def commit() -> None:
        await writer.commit()
        await writer.close()

    store.before_arm, store.at_look, store.look_number = insert_uncommitted, commit, commit_after_look
    reactor.doorbell.kick()  # end the current sleep: drain (nothing), then arm through the hooks


def test_a_writer_held_open_across_the_arming_step_is_found_by_a_recheck(pg_url):
    async def go():
        store = store_for(pg_url, store_class=ArmingHook)
        async with running(pg_url, store=store, rechecks_s=(0.05, 0.2, 0.5)) as reactor:
            await until(lambda: reactor.doorbell.armed)
            await reactor.doorbell.disarm()
            await _writer_held_open_across_arming(pg_url, store, reactor, commit_after_look=1)  # after the hand-off
            await until(lambda: wakeups(reactor, "recheck") == 1, what="a recheck to find the late row")
            assert reactor.rows == 1 and wakeups(reactor, "notify") == 0

    asyncio.run(go())
    assert_consistent(pg_url)


def test_a_writer_held_open_past_every_recheck_is_found_by_the_poll(pg_url):
    async def go():
        store = store_for(pg_url, store_class=ArmingHook)
        async with running(pg_url, store=store, rechecks_s=(0.02,), poll_s=1.5) as reactor:
            await until(lambda: reactor.doorbell.armed)
            await reactor.doorbell.disarm()
            started = time.monotonic()
            await _writer_held_open_across_arming(pg_url, store, reactor, commit_after_look=2)  # after the recheck
            await until(lambda: wakeups(reactor, "poll") == 1, what="the poll to find the late row")
            assert reactor.rows == 1 and wakeups(reactor, "notify") == 0
            assert time.monotonic() - started < 1.5 + 1.0  # never later than one poll interval after its commit

    asyncio.run(go())
    assert_consistent(pg_url)
