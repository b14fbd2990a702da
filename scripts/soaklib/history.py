"""A breached feedback's history: what the application wrote to it, what the reactor holds about it, which
batches (job_runs, reactor, pid, slot) were running when it was analysed, and which faults were near."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg


def history(
    url: str,
    fid: int,
    *,
    app_lines: list[str],
    faults_near: Callable[[float, float], list[dict[str, Any]]],
    slot_of_pid: Callable[[int], str | None],
) -> list[str]:
    out = [f"--- history of feedback {fid} ---", "application writes (t, writer, op, id, detail):"]
    out += [f"  {line}" for line in app_lines[-30:]] or ["  (none logged)"]
    times = [float(line.split(",", 1)[0]) for line in app_lines[-30:] if line[:1].isdigit()]
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT source_queue_id, extract(epoch FROM analyzed_at)::float8, topic_set, word_counts"
            " FROM reactor.feedback_analysis WHERE feedback_id = %s",
            [fid],
        ).fetchone()
        if row:
            out.append(
                f"analysis: source_queue_id {row[0]}, analyzed_at {_ts(row[1])}, topic_set {row[2]}, words {row[3]}"
            )
            times.append(row[1])
            runs = conn.execute(
                "SELECT r.job_id, r.claim_token, r.worker_id, r.rows, extract(epoch FROM r.started_at)::float8,"
                " extract(epoch FROM r.finished_at)::float8, r.error FROM reactor.job_runs r"
                " WHERE r.started_at <= to_timestamp(%s) + interval '1 second'"
                "   AND coalesce(r.finished_at, now()) >= to_timestamp(%s) - interval '1 second' ORDER BY r.job_id",
                [row[1], row[1]],
            ).fetchall()
            out.append("batches open when it was analysed (job_id, worker, slot, rows, started, finished, error):")
            for job_id, _token, worker, rows, started, finished, error in runs:
                pid = int(worker.split(":")[1]) if worker.count(":") >= 2 else -1
                out.append(
                    f"  job {job_id} {worker} slot={slot_of_pid(pid)} rows={rows} {_ts(started)} → {_ts(finished)}"
                    + (f" error={error}" if error else "")
                )
        else:
            out.append("analysis: none")
        for what, query in (
            ("queue", "SELECT id, op, attempts, claimed_by, last_error FROM reactor.queue WHERE feedback_id = %s"),
            ("failed", "SELECT queue_id, op, attempts, error, failed_at FROM reactor.failed WHERE feedback_id = %s"),
            ("tombstone", "SELECT queue_id, deleted_at FROM reactor.tombstones WHERE feedback_id = %s"),
            ("feedback", "SELECT text, product_name, sender FROM feedbacks WHERE id = %s"),
        ):
            for r in conn.execute(query, [fid]).fetchall():  # type: ignore[arg-type]
                out.append(f"{what}: {r}")
    near: dict[tuple[float, str], dict[str, Any]] = {}
    for t in times:
        for e in faults_near(t, 30.0):
            near[(e["t"], e["kind"])] = e
    out.append("faults within 30 s of those times:")
    out += [f"  {_ts(e['t'])} {e['kind']} {e['phase']} {_fields(e)}" for _, e in sorted(near.items())] or ["  none"]
    return out


def _ts(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


def _fields(e: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in e.items() if k not in ("t", "kind", "phase"))
