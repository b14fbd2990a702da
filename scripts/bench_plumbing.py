#!/usr/bin/env python
"""Plumbing benchmark: insert→committed-result latency and sustained rows/s with the fast stand-in model.

Measures the reactor itself (triggers, NOTIFY, debounce, claim, complete), not the models:
  1. latency: rows inserted one per transaction at a steady rate; latency = analysis commit time
     (reactor.feedback_analysis.analyzed_at) minus the client's commit time; p50/p95/p99;
  2. throughput: a backlog of N rows drained by one reactor at a given batch_size; rows/s.
Usage: python scripts/bench_plumbing.py [--rate 200] [--seconds 20] [--backlog 50000] [--batch-size 500]
Starts a throwaway embedded PostgreSQL unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import time

import psycopg
from benchlib import database_server, latency_run, machine, set_config, start_reactor, stop_reactor, wait_drained

from reactor.worker import Options

DEFAULT_MAX_WAIT_MS = Options().max_wait_ms  # each checkout measured with its own default


def throughput_run(url: str, backlog: int, batch_size: int) -> dict[str, float]:
    set_config(url, batch_size=batch_size, run_next_job=False)
    with psycopg.connect(url, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM reactor.feedback_analysis").fetchone()[0]
        conn.execute(
            "INSERT INTO feedbacks (text) SELECT 'backlog row ' || g || ' slow checkout payment failed' "
            "FROM generate_series(1, %s) g",
            [backlog],
        )
    proc = start_reactor(url)
    try:
        t0 = time.monotonic()
        set_config(url, run_next_job=True)
        t1 = wait_drained(url, before + backlog)
    finally:
        stop_reactor(proc)
    return {"rows": backlog, "seconds": t1 - t0, "rows_per_s": backlog / (t1 - t0), "batch_size": batch_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200.0, help="inserts per second for the latency run")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--latency-batch-size", type=int, default=10, help="job_configs batch_size during latency run")
    ap.add_argument(
        "--max-wait-ms",
        type=float,
        default=DEFAULT_MAX_WAIT_MS,
        help="reactor debounce (default: reactor listen's own)",
    )
    ap.add_argument("--backlog", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=500, help="job_configs batch_size during throughput run")
    args = ap.parse_args()

    from reactor import sql

    with database_server() as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            sql.install(conn, job_key="feedback_analysis")
            version = conn.info.server_version
        m = machine()
        print(f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, PostgreSQL {version}")
        lat = latency_run(url, args.rate, args.seconds, args.latency_batch_size, args.max_wait_ms)
        print(
            f"latency  @ {lat['rate']:.0f} rows/s offered ({lat['rows']} rows, batch_size {args.latency_batch_size}, "
            f"max_wait {args.max_wait_ms:.0f} ms): p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  "
            f"p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms"
        )
        thr = throughput_run(url, args.backlog, args.batch_size)
        print(
            f"throughput: {thr['rows']} backlog rows in {thr['seconds']:.2f} s = {thr['rows_per_s']:.0f} rows/s "
            f"(batch_size {thr['batch_size']}, one reactor)"
        )


if __name__ == "__main__":
    main()
