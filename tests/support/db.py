"""Data and assertions shared by the integration and acceptance tests: inserts, the invariants, small queries."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from reactor.nlp.words import count_words


def recount(url: str) -> dict[str, int]:
    """Word totals recomputed from scratch from the feedback texts as they are now."""
    total: Counter[str] = Counter()
    with psycopg.connect(url) as conn:
        for (text,) in conn.execute("SELECT text FROM feedbacks"):
            total.update(count_words(text))
    return dict(total)


def stored_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT word, count FROM reactor.word_counts").fetchall())


def assert_invariants(url: str) -> None:
    """What must hold after anything wrote: reactor.word_counts equals the sum of the per-row counts in
    feedback_analysis, and every analysis has its feedback. (pg_url checks it after every test.)"""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('reactor.word_counts') IS NULL").fetchone()[0]:
            return  # uninstalled: nothing of the reactor's is left to be inconsistent
        orphans = conn.execute(
            "SELECT count(*) FROM reactor.feedback_analysis a WHERE NOT EXISTS "
            "(SELECT 1 FROM feedbacks f WHERE f.id = a.feedback_id)"
        ).fetchone()[0]
        summed = dict(
            conn.execute(
                "SELECT w.key, sum(w.value::bigint) FROM reactor.feedback_analysis a, jsonb_each_text(a.word_counts) w"
                " GROUP BY w.key HAVING sum(w.value::bigint) <> 0"
            ).fetchall()
        )
    assert orphans == 0, f"{orphans} analyses belong to deleted feedback"
    assert stored_counts(url) == summed, "reactor.word_counts differs from the sum of the per-row counts"


def assert_consistent(url: str) -> None:
    """Every feedback analysed once, none extra, word totals equal a recount (and the invariants hold)."""
    assert_invariants(url)
    with psycopg.connect(url) as conn:
        missing = conn.execute(
            "SELECT count(*) FROM feedbacks f LEFT JOIN reactor.feedback_analysis a ON a.feedback_id = f.id "
            "WHERE a.feedback_id IS NULL"
        ).fetchone()[0]
        orphans = conn.execute(
            "SELECT count(*) FROM reactor.feedback_analysis a LEFT JOIN feedbacks f ON f.id = a.feedback_id "
            "WHERE f.id IS NULL"
        ).fetchone()[0]
    assert missing == 0, f"{missing} feedback rows have no analysis"
    assert orphans == 0, f"{orphans} analyses belong to deleted feedback"
    assert stored_counts(url) == recount(url)


def insert(url: str, texts: list[str | None]) -> list[int]:
    with psycopg.connect(url) as conn:
        cur = conn.cursor()
        cur.executemany("INSERT INTO feedbacks (text) VALUES (%s) RETURNING id", [(t,) for t in texts], returning=True)
        ids = []
        while True:
            ids.append(cur.fetchone()[0])
            if not cur.nextset():
                break
        return ids


def word_counts_of(url: str, fid: int) -> dict[str, int] | None:
    """The per-row word counts stored with a feedback's analysis (None when it has none)."""
    return scalar(url, "SELECT word_counts FROM reactor.feedback_analysis WHERE feedback_id = %s", [fid])  # type: ignore[return-value]


def waiting(url: str) -> int:
    """Feedback changes not handled yet: captured in the inbox or waiting in the queue."""
    return int(scalar(url, "SELECT (SELECT count(*) FROM reactor.queue) + (SELECT count(*) FROM reactor.inbox)"))


def promote(url: str) -> int:
    """What every claim does first: move the writers' inbox rows into reactor.queue. Returns the rows moved."""
    from reactor.sql import q

    with psycopg.connect(url) as conn:
        if not conn.execute(q("promote_lock")).fetchone()[0]:  # type: ignore[index]
            return 0  # another promotion is open: it moves the rows
        return conn.execute(q("promote"), {"n": 100_000}).rowcount


def store_config_bypassing_validation(url: str, config: str, key: str = "feedback_analysis") -> None:
    """Store a job config the validation trigger would refuse, as a row written before `reactor sql` installed it."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE job_configs DISABLE TRIGGER reactor_job_configs_validate")
        conn.execute("UPDATE job_configs SET config = %s::jsonb WHERE key = %s", [config, key])
        conn.execute("ALTER TABLE job_configs ENABLE TRIGGER reactor_job_configs_validate")


def wait_until(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def scalar(url: str, query: str, params: object = None) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        return row[0] if row else None


def with_db(url: str, dbname: str) -> str:
    """`url` with another database name (a conninfo string)."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def run_writers(writer: Callable[[int], None], count: int) -> None:
    """Run writer(0) … writer(count - 1) in threads at once (concurrent application sessions) and re-raise the
    first error any of them hit, once all are done."""
    import threading

    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            writer(n)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def analysed(url: str) -> int:
    """Rows in reactor.feedback_analysis."""
    return int(scalar(url, "SELECT count(*) FROM reactor.feedback_analysis"))  # type: ignore[arg-type]


def notified_by(url: str, *statements: str, wait_s: float = 0.3) -> int:
    """How many reactor_work notifications a listening session gets while `statements` run (autocommit)."""
    with psycopg.connect(url, autocommit=True) as listen, psycopg.connect(url, autocommit=True) as writer:
        listen.execute("LISTEN reactor_work")
        for statement in statements:
            writer.execute(statement)  # type: ignore[arg-type]
        return sum(1 for _ in listen.notifies(timeout=wait_s))
