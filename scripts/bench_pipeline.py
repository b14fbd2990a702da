#!/usr/bin/env python
"""Pipelined drain vs the serial loop on CPU: the stand-in model given a latency per batch equal to claim + complete.

  1. claim + complete: PgStore claims and completes --probe batches of --batch-size rows in-process (stand-in
     results computed in between, not timed); the median of claim time + complete time per batch;
  2. that time becomes the stand-in model's latency per batch (REACTOR_STANDIN_DELAY_MS: one sleep per model
     call, in the sentiment call only, so one per batch);
  3. `reactor listen --batches-in-flight 1` (the serial loop) and `--batches-in-flight 2` each drain a backlog of
     --rows rows, alternating, --rounds times each, in this run; rows/s from the resume to the last analysis;
     after every drain the invariants are checked exactly (every feedback analysed once, word totals equal to the
     sum of the per-row counts and to a recount from the texts, nothing left queued).
Prints each drain, the claim + complete time and the ratio K=2 / K=1 (issue 20 asks ≥ 1.7×).
Usage: python scripts/bench_pipeline.py [--rows 5000] [--batch-size 100] [--probe 20] [--rounds 2]
Starts a throwaway embedded PostgreSQL unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import Counter

import psycopg
from benchlib import database_server, machine, set_config, start_reactor, stop_reactor, wait_drained

from reactor.db import make_pool
from reactor.enrich import Enricher
from reactor.nlp.standin import StandInSentiment, StandInZeroShot
from reactor.nlp.words import count_words
from reactor.store import PgStore

TEXT = "'pipeline row ' || g || ' slow checkout payment failed, great support though'"


def add_backlog(url: str, rows: int) -> int:
    """Insert `rows` feedback rows in one transaction; returns the analyses expected once they are drained."""
    with psycopg.connect(url, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM reactor.feedback_analysis").fetchone()[0]
        conn.execute(f"INSERT INTO feedbacks (text) SELECT {TEXT} FROM generate_series(1, %s) g", [rows])
    return before + rows


def claim_complete_ms(url: str, batches: int, batch_size: int) -> tuple[float, float, float]:
    """Median (claim + complete, claim, complete) milliseconds per batch, PgStore in-process."""
    add_backlog(url, batches * batch_size)
    enricher = Enricher(StandInSentiment(), StandInZeroShot())

    async def go() -> list[tuple[float, float]]:
        pool = make_pool(url, max_size=2)
        store = PgStore(pool, worker_id="probe", job_key="feedback_analysis", job_name="probe", outbox=False)
        await store.open()
        out = []
        try:
            for n in range(batches):
                t0 = time.perf_counter()
                claimed = (await store.claim(token=f"probe:{n}", limit=batch_size, lease_s=30, max_attempts=5)).claim
                t1 = time.perf_counter()
                assert claimed is not None and claimed.size == batch_size
                results = enricher.enrich(claimed.items, claimed.labels)
                t2 = time.perf_counter()
                await store.complete(claimed, results, max_attempts=5)
                out.append((t1 - t0, time.perf_counter() - t2))
        finally:
            await store.close()
        return out

    times = asyncio.run(go())[2:]  # the first two warm the pool and the plans (and promote the inbox)
    return (
        statistics.median(c + p for c, p in times) * 1000,
        statistics.median(c for c, _ in times) * 1000,
        statistics.median(p for _, p in times) * 1000,
    )


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


def drain(url: str, k: int, rows: int, delay_ms: float) -> float:
    """rows/s of one `reactor listen --batches-in-flight k` draining a fresh backlog of `rows`."""
    set_config(url, run_next_job=False)
    expected = add_backlog(url, rows)
    proc = start_reactor(
        url, "--batches-in-flight", str(k), env={"REACTOR_STANDIN_DELAY_MS": f"{delay_ms:.3f}"}, timeout=60
    )
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
    ap.add_argument("--rows", type=int, default=5000, help="backlog rows per drain")
    ap.add_argument("--batch-size", type=int, default=100, help="job_configs batch_size")
    ap.add_argument("--probe", type=int, default=20, help="batches timed for claim + complete")
    ap.add_argument("--rounds", type=int, default=2, help="drains per K, alternating K=1 and K=2")
    ap.add_argument("--delay-ms", type=float, default=None, help="model latency per batch (default: measured)")
    args = ap.parse_args()
    if args.probe < 3:
        ap.error("--probe must be at least 3 (the first two batches are not counted)")

    from reactor import sql

    with database_server() as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            sql.install(conn, job_key="feedback_analysis")
            version = conn.info.server_version
        set_config(url, batch_size=args.batch_size)
        m = machine()
        print(f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, PostgreSQL {version}")
        both, claim_ms, complete_ms = claim_complete_ms(url, args.probe, args.batch_size)
        delay = both if args.delay_ms is None else args.delay_ms
        print(
            f"claim + complete per batch of {args.batch_size} rows (median of {args.probe}): {both:.1f} ms "
            f"(claim {claim_ms:.1f} ms, complete {complete_ms:.1f} ms) -> stand-in latency per batch {delay:.1f} ms"
        )
        rates: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.rounds):
            for k in (1, 2):
                rates[k].append(drain(url, k, args.rows, delay))
                print(
                    f"  round {r + 1}, --batches-in-flight {k}: {args.rows} rows in "
                    f"{args.rows / rates[k][-1]:.2f} s = {rates[k][-1]:.0f} rows/s (invariants exact)",
                    flush=True,
                )
        serial, piped = statistics.median(rates[1]), statistics.median(rates[2])
        ratios = ", ".join(f"{b / a:.2f}x" for a, b in zip(rates[1], rates[2], strict=True))
        print(
            f"K=1 (serial) {serial:.0f} rows/s, K=2 {piped:.0f} rows/s (medians): K=2 / K=1 = {piped / serial:.2f}x "
            f"(per round: {ratios}; goal >= 1.7x)"
        )


if __name__ == "__main__":
    main()
