#!/usr/bin/env python
"""Pipelined drain vs the serial loop on CPU: the stand-in model given a latency per batch equal to claim + complete.

  1. claim + complete: the serial loop (K=1) drains a first backlog of --rows rows with no model latency; the
     median of claim time + complete time per batch of --batch-size rows, as the reactor logs them;
  2. that time becomes the stand-in model's latency per batch (REACTOR_STANDIN_DELAY_MS: one sleep per model
     call, in the sentiment call only, so one per batch);
  3. `reactor listen --batches-in-flight 1` (the serial loop) and `--batches-in-flight 2` each drain a backlog of
     --rows rows, alternating, --rounds times each, in this run; rows/s from the resume to the last analysis;
     after every drain the invariants are checked exactly (every feedback analysed once, word totals equal to the
     sum of the per-row counts and to a recount from the texts, nothing left queued).
Prints each drain, the claim + complete time and the ratio K=2 / K=1 (issue 20 asks ≥ 1.7×).
Usage: python scripts/bench_pipeline.py [--rows 10000] [--batch-size 100] [--rounds 3]
Starts a throwaway embedded PostgreSQL unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
import psycopg
from benchlib import database_server, machine, set_config, start_reactor, stop_reactor, wait_drained

from reactor.nlp.words import count_words

TEXT = "'pipeline row ' || g || ' slow checkout payment failed, great support though'"


def add_backlog(url: str, rows: int) -> int:
    """Insert `rows` feedback rows in one transaction; returns the analyses expected once they are drained."""
    with psycopg.connect(url, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM reactor.feedback_analysis").fetchone()[0]
        conn.execute(f"INSERT INTO feedbacks (text) SELECT {TEXT} FROM generate_series(1, %s) g", [rows])
    return before + rows


def claim_complete_ms(url: str, rows: int) -> tuple[float, float, float, int]:
    """Median (claim + complete, claim, complete) milliseconds per batch and the batches seen, as the reactor
    itself logs them (`batch.completed`) while the serial loop drains `rows` with no model latency."""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        log = Path(tmp) / "reactor.log"
        drain(url, 1, rows, 0.0, log=log)
        batches = [orjson.loads(line) for line in log.read_text().splitlines() if '"batch.completed"' in line]
    if len(batches) < 3:
        raise SystemExit(f"only {len(batches)} batches logged: raise --rows")
    claim = [b["claim_ms"] for b in batches[1:]]  # the first one also promoted the whole backlog
    complete = [b["complete_ms"] for b in batches[1:]]
    both = [c + p for c, p in zip(claim, complete, strict=True)]
    return statistics.median(both), statistics.median(claim), statistics.median(complete), len(batches)


def check_exact(url: str) -> None:
    """Every feedback analysed exactly once, none extra, word totals exact, nothing left to do; else exit."""
    with psycopg.connect(url) as conn:
        missing, extra, left = conn.execute(
            "SELECT (SELECT count(*) FROM feedbacks f WHERE NOT EXISTS "
            "        (SELECT 1 FROM reactor.feedback_analysis a WHERE a.feedback_id = f.id)),"
            "       (SELECT count(*) FROM reactor.feedback_analysis a WHERE NOT EXISTS "
            "        (SELECT 1 FROM feedbacks f WHERE f.id = a.feedback_id)),"
            "       (SELECT count(*) FROM reactor.queue) + (SELECT count(*) FROM reactor.inbox)"
        ).fetchone()
        stored = dict(conn.execute("SELECT word, count FROM reactor.word_counts").fetchall())
        summed = dict(
            conn.execute(
                "SELECT w.key, sum(w.value::bigint) FROM reactor.feedback_analysis a, jsonb_each_text(a.word_counts) w"
                " GROUP BY w.key HAVING sum(w.value::bigint) <> 0"
            ).fetchall()
        )
        recount: Counter[str] = Counter()
        for (text,) in conn.execute("SELECT text FROM feedbacks"):
            recount.update(count_words(text))
    problems = [
        f"{missing} feedbacks without analysis" if missing else "",
        f"{extra} analyses without feedback" if extra else "",
        f"{left} rows still queued" if left else "",
        "word_counts differ from the sum of per-row counts" if stored != summed else "",
        "word_counts differ from a recount of the texts" if stored != dict(recount) else "",
    ]
    if any(problems):
        raise SystemExit("INVARIANTS BROKEN: " + "; ".join(p for p in problems if p))


def drain(url: str, k: int, rows: int, delay_ms: float, log: Path | None = None) -> float:
    """rows/s of one `reactor listen --batches-in-flight k` draining a fresh backlog of `rows` (INFO log to
    `log` when given)."""
    set_config(url, run_next_job=False)
    expected = add_backlog(url, rows)
    env = {"REACTOR_STANDIN_DELAY_MS": f"{delay_ms:.3f}"}
    level = "INFO" if log else "WARNING"
    proc = start_reactor(url, "--batches-in-flight", str(k), env=env, timeout=60, log=log, level=level)
    try:
        t0 = time.monotonic()
        set_config(url, run_next_job=True)
        t1 = wait_drained(url, expected, timeout=300)
    finally:
        stop_reactor(proc)
    check_exact(url)
    return rows / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000, help="backlog rows per drain")
    ap.add_argument("--batch-size", type=int, default=100, help="job_configs batch_size")
    ap.add_argument("--rounds", type=int, default=3, help="drains per K, alternating K=1 and K=2")
    ap.add_argument("--ks", default="1,2", help="batches in flight to compare, the first one 1 (e.g. 1,2,3)")
    ap.add_argument("--delay-ms", type=float, default=None, help="model latency per batch (default: measured)")
    args = ap.parse_args()
    if not args.ks.startswith("1,"):
        ap.error("--ks starts with 1 (the serial loop: the baseline)")

    from reactor import sql

    with database_server() as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            sql.install(conn, job_key="feedback_analysis")
            version = conn.info.server_version
        set_config(url, batch_size=args.batch_size)
        m = machine()
        print(f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, PostgreSQL {version}")
        both, claim_ms, complete_ms, seen = claim_complete_ms(url, args.rows)
        delay = both if args.delay_ms is None else args.delay_ms
        print(
            f"claim + complete per batch of {args.batch_size} rows (serial loop, no model latency, median of "
            f"{seen - 1} batches): {both:.1f} ms (claim {claim_ms:.1f} ms, complete {complete_ms:.1f} ms) "
            f"-> stand-in latency per batch {delay:.1f} ms"
        )
        ks = [int(k) for k in args.ks.split(",")]
        rates: dict[int, list[float]] = {k: [] for k in ks}
        for r in range(args.rounds):
            for k in ks:
                rates[k].append(drain(url, k, args.rows, delay))
                print(
                    f"  round {r + 1}, --batches-in-flight {k}: {args.rows} rows in "
                    f"{args.rows / rates[k][-1]:.2f} s = {rates[k][-1]:.0f} rows/s (invariants exact)",
                    flush=True,
                )
        serial = statistics.median(rates[1])
        for k in ks[1:]:
            piped = statistics.median(rates[k])
            ratios = ", ".join(f"{b / a:.2f}x" for a, b in zip(rates[1], rates[k], strict=True))
            print(
                f"K=1 (serial) {serial:.0f} rows/s, K={k} {piped:.0f} rows/s (medians): K={k} / K=1 = "
                f"{piped / serial:.2f}x (per round: {ratios}; goal for K=2 >= 1.7x)"
            )


if __name__ == "__main__":
    main()
