"""The operator's side of the database: every read and write the CLI's commands make, as named queries.

`store.PgStore` is the reactor loop's seam (async, pooled); this is the CLI's (one synchronous connection the
command opened). Each function is one step a command takes, so the command modules only parse options, call
these and print: they hold no SQL and never call `execute`.
"""

from __future__ import annotations

from typing import Any

import psycopg

from reactor.control import JobConfig
from reactor.sql import q

Conn = psycopg.Connection[Any]


def _one(conn: Conn, name: str, params: dict[str, Any] | None = None) -> Any:
    return conn.execute(q(name), params).fetchone()


def _all(conn: Conn, name: str, params: dict[str, Any] | None = None) -> list[Any]:
    return conn.execute(q(name), params).fetchall()


def _count(conn: Conn, name: str, params: dict[str, Any] | None = None) -> int:
    """Rows an UPDATE/INSERT/DELETE touched."""
    return conn.execute(q(name), params).rowcount


def job_config(conn: Conn, key: str) -> JobConfig:
    """The job_configs row `key`, read through the one definition (reactor.read_job_config)."""
    return JobConfig().updated(_one(conn, "read_job_config", {"key": key}))


def set_run_next_job(conn: Conn, key: str, run: bool) -> bool:
    """`reactor stop|resume`: False when there is no job_configs row `key`."""
    return bool(_count(conn, "set_run_next_job", {"run": run, "key": key}))


def active_topics(conn: Conn) -> list[str]:
    return [r[0] for r in _all(conn, "active_topics")]


def wake_reactors(conn: Conn) -> None:
    """Wake sleeping reactors now, for work this command queued (they would find it at their next poll)."""
    conn.execute(q("wake_reactors"))


def status(conn: Conn, job_key: str, job_name: str) -> dict[str, Any]:
    """Everything `reactor status` shows, as plain data (its --json document)."""
    from reactor.enrich import topic_set_id

    counts = _one(conn, "status_counts")
    assert counts is not None
    stale = _one(conn, "status_stale", {"topic_set": topic_set_id(active_topics(conn))})
    last = _one(conn, "last_job", {"job_name": job_name})
    workers = _all(conn, "workers")
    (queue, in_flight, retrying, failed, analysed, outbox, outbox_retrying, outbox_error, parked) = counts[:9]
    incomplete, abandoned, topics = counts[9:]
    cfg = job_config(conn, job_key)  # an invalid value shows the default a starting reactor uses
    warnings = [f"job_configs {job_key!r}: {p}" for p in cfg.problems]
    if not topics:
        warnings.append("no active topics: every analysis gets the topic __UNKNOWN__ (INSERT INTO topics (label) ...)")
    return {
        "connected": True,
        "state": "running" if cfg.run_next_job else "paused",
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if k != "problems"},
        "warnings": warnings,
        "queue_depth": queue,
        "in_flight": in_flight,
        "retrying": retrying,
        "failed_rows": failed,
        "analysed": analysed,
        "stale": {"rows": stale[2], "topics_changed": stale[0], "models_changed": stale[1]} if stale else None,
        "active_topics": topics,
        "outbox_depth": outbox,
        "outbox_retrying": outbox_retrying,
        "outbox_last_error": outbox_error,
        "outbox_parked": parked,
        "incomplete_jobs": incomplete,
        "abandoned_jobs": abandoned,
        "last_batch": None
        if not last
        else {
            "job_id": last[0],
            "status": last[1],
            "last_processed_id": last[2],
            "at": last[3].isoformat() if last[3] else None,
            "rows": last[4],
            "duration_ms": last[5],
            "error": last[6],
        },
        "workers": [
            {
                "id": w[0],
                "host": w[1],
                "pid": w[2],
                "started_at": w[3].isoformat(),
                "last_seen": w[4].isoformat(),
                "state": w[5],
            }
            for w in workers
        ],
    }


def show(conn: Conn, feedback_id: int) -> dict[str, Any]:
    """`reactor show ID`: the row, its analysis, queued or parked work and search document (None where absent)."""
    row = _one(conn, "show_feedback", {"id": feedback_id})
    assert row is not None
    parts = ("feedback", "analysis", "queue", "failed", "search_document")
    return {"id": feedback_id, **dict(zip(parts, row, strict=True))}


def failed(conn: Conn, limit: int) -> dict[str, Any]:
    """`reactor failed`: totals and the newest `limit` parked rows and parked search documents."""
    row_keys = ("feedback_id", "op", "attempts", "cause", "error", "enqueued_at", "failed_at")
    doc_keys = ("index_kind", "doc_id", "action", "attempts", "error", "parked_at")
    rows = _all(conn, "failed_rows", {"limit": limit})
    docs = _all(conn, "parked_documents", {"limit": limit})
    totals = _one(conn, "failed_totals")
    assert totals is not None
    return {
        "rows_total": totals[0],
        "rows_crashed": totals[2],  # parked for killing the process (cause 'crash'); the rest for an error
        "documents_total": totals[1],
        "rows": [dict(zip(row_keys, r, strict=True)) for r in rows],
        "documents": [dict(zip(doc_keys, d, strict=True)) for d in docs],
    }


def retry_failed(conn: Conn, *, rows: bool, documents: bool) -> tuple[int, int]:
    """Parked feedback rows back into the queue and parked search documents back into the outbox drain."""
    moved = _count(conn, "retry_failed") if rows else 0
    docs = _count(conn, "retry_parked_outbox") if documents else 0
    wake_reactors(conn)
    return moved, docs


def reprocess_count(conn: Conn, params: dict[str, Any]) -> int:
    row = _one(conn, "reprocess_count", params)
    return int(row[0]) if row else 0


def reprocess_in_flight(conn: Conn) -> int:
    """Requeue rows a batch is computing right now (with the old topics or models); wakes the reactors."""
    moved = _count(conn, "reprocess_in_flight")
    if moved:
        wake_reactors(conn)
    return moved


def reprocess_chunk(conn: Conn, params: dict[str, Any]) -> tuple[int, int, int] | None:
    """Requeue the next chunk after params["after"]: (last id, rows seen, rows added), None when done."""
    row = _one(conn, "reprocess_chunk", params)
    if not row or not row[1]:
        return None
    wake_reactors(conn)
    return row[0], row[1], row[2]


def reprocess_waiting(conn: Conn, cap: int) -> int:
    """Low-priority rows still queued, counted up to `cap`."""
    row = _one(conn, "reprocess_waiting", {"cap": cap})
    return int(row[0]) if row else 0


def prune_count(conn: Conn, params: dict[str, Any]) -> int:
    row = _one(conn, "prune_jobs_count", params)
    return int(row[0]) if row else 0


def prune_batch(conn: Conn, params: dict[str, Any]) -> int:
    """Delete one batch of old jobs rows; the number deleted."""
    row = _one(conn, "prune_jobs", params)
    return int(row[0]) if row else 0
