#!/usr/bin/env python3
"""Soak test: real components under a fault schedule, then a checker that proves nothing was lost, doubled or
orphaned (issue 22).

An embedded PostgreSQL, the soak's own OpenSearch when a JDK is present, two `reactor listen` processes kept
alive like systemd's Restart=always, an application load (inserts, text and metadata updates, deletes,
multi-row transactions, bursts, topic edits) and the faults: SIGKILL of a reactor every 60 s, a PostgreSQL
fast restart every 10 min, OpenSearch frozen (SIGSTOP) or stopped for 30–90 s every 7 min and read-only once,
`reactor stop`/`resume` every 2 min, a row that kills the process every 5 min (stand-in models only: the
ONNX models have no such hook), one `reactor reindex` and one `reactor reprocess --stale`. Shorter runs get
as many of each as fit (at least one PostgreSQL restart, one OpenSearch outage, four kills).

Example:
    python scripts/soak.py --minutes 60 --plot docs/bench/soak.png      # the full hour (make soak MINUTES=60)
    python scripts/soak.py --minutes 4 --profile ci                      # what `make test` runs
    python scripts/soak.py --minutes 10 --models fixtures/tiny-models    # the committed tiny ONNX models

Outputs in --out: faults.jsonl, writes.csv (what the application wrote to each id), metrics.csv (a row per
10 s), reactor-*.log, summary.json, the plot. Exit 0: no breach (and, with --enforce-targets, every target
met); 1: a breach (each printed with its feedback id and history); 2: the soak itself could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from soaklib.actions import KILLER, Actions, run_cli  # noqa: E402
from soaklib.check import SearchTarget, check  # noqa: E402
from soaklib.cluster import OpenSearch, Postgres, Supervisor, free_port, java_present  # noqa: E402
from soaklib.faults import FaultLog, build_schedule  # noqa: E402
from soaklib.history import history  # noqa: E402
from soaklib.load import AppLog, Pending, Pool, Rate, Topics, Writers  # noqa: E402
from soaklib.monitor import Monitor, plot  # noqa: E402
from soaklib.report import targets  # noqa: E402

PROFILES = {  # rate: changes/s outside bursts; the full hour needs ≥ 280 on average (bursts included)
    "full": {"rate": 260.0, "writers": 6, "lease": 5.0, "batch_size": 100, "delay_ms": 5.0},
    "ci": {"rate": 40.0, "writers": 2, "lease": 3.0, "batch_size": 8, "delay_ms": 5.0},
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--minutes", type=float, default=60.0, help="length of the load (default 60)")
    p.add_argument("--seed", type=int, default=1, help="seed of the load and the fault times (default 1)")
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="full: 260 changes/s steady (~310/s with bursts), 6 writers, lease 5 s, batch_size 100; ci: 40/s, "
        "2 writers, lease 3 s, batch_size 8; both stand-in 5 ms per batch (default: full for ≥ 30 min, else ci)",
    )
    p.add_argument("--rows-per-s", type=float, help="steady changes/s (bursts ×4 for 4 s every 60 s)")
    p.add_argument("--writers", type=int, help="writer threads")
    p.add_argument("--batch-size", type=int, help="job_configs batch_size (any size: a killer parks only itself)")
    p.add_argument("--max-attempts", type=int, default=5, help="job_configs max_attempts (default 5)")
    p.add_argument("--lease", type=float, help="reactor --lease seconds")
    p.add_argument("--delay-ms", type=float, help="stand-in latency per batch (REACTOR_STANDIN_DELAY_MS)")
    p.add_argument("--models", default="stand-in", help="stand-in (default) or an ONNX folder: fixtures/tiny-models")
    p.add_argument("--opensearch", choices=("auto", "on", "off"), default="auto", help="auto: when a JDK is present")
    p.add_argument(
        "--opensearch-port",
        type=int,
        default=int(os.environ.get("OPENSEARCH_PORT") or 9250),
        help="port of the soak's own OpenSearch (default OPENSEARCH_PORT, else 9250)",
    )
    p.add_argument("--no-faults", default="", help="comma-separated fault kinds to leave out (e.g. kill,pg_restart)")
    p.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to wait for the drain after the load")
    p.add_argument("--enforce-targets", action=argparse.BooleanOptionalAction, default=None,
                   help="fail on missed performance targets (default: on for runs of ≥ 30 min)")  # fmt: skip
    p.add_argument("--out", type=Path, help="output folder (default .cache/soak/<time>)")
    p.add_argument("--plot", type=Path, help="PNG path (default OUT/soak.png)")
    args = p.parse_args(argv)
    prof = PROFILES[args.profile or ("full" if args.minutes >= 30 else "ci")]
    for key, name in (("rate", "rows_per_s"), ("writers", "writers"), ("lease", "lease"), ("batch_size", "batch_size"),
                      ("delay_ms", "delay_ms")):  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, prof[key])
    if args.enforce_targets is None:
        args.enforce_targets = args.minutes >= 30
    args.out = args.out or ROOT / ".cache" / "soak" / time.strftime("%Y%m%d-%H%M%S")
    args.plot = args.plot or args.out / "soak.png"
    return args


def reactor_env(url: str, args: argparse.Namespace, search: SearchTarget | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REACTOR_", "OPENSEARCH_"))}
    env.update(DATABASE_URL=url, REACTOR_ENV="local", REACTOR_DOTENV="/nonexistent", REACTOR_LOG_LEVEL="info")
    env.update(REACTOR_MODELS=args.models, REACTOR_RETRY_BASE_S="0.2", PYTHONUNBUFFERED="1")
    if search is not None:
        env.update(OPENSEARCH_ENDPOINT=search.url, OPENSEARCH_FEEDBACK_INDEX=search.feedback_index)
        env["OPENSEARCH_WORD_INDEX"] = search.word_index
    return env


def wait_for(what: str, done: object, timeout: float, every: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if done():  # type: ignore[operator]
                return True
        except psycopg.Error:
            pass
        time.sleep(every)
    print(f"[soak] timed out after {timeout:.0f} s waiting for {what}", flush=True)
    return False


def drained(url: str, killers: set[int]) -> bool:
    with psycopg.connect(url, connect_timeout=5) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM reactor.inbox) + (SELECT count(*) FROM reactor.queue)"
            " + (SELECT count(*) FROM reactor.outbox WHERE parked_at IS NULL)"
            " + (SELECT count(*) FROM reactor.job_runs WHERE finished_at IS NULL)"
            " + (SELECT count(*) FROM jobs WHERE status = 'processing'),"
            " (SELECT count(DISTINCT feedback_id) FROM reactor.failed)"
        ).fetchone()
    return left[0] == 0 and left[1] >= len(killers)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    standin = args.models == "stand-in"
    use_os = args.opensearch == "on" or (args.opensearch == "auto" and java_present())
    load_s = args.minutes * 60
    print(
        f"[soak] {args.minutes:g} min, seed {args.seed}, {args.rows_per_s:g} changes/s steady, "
        f"{args.writers} writers, batch_size {args.batch_size}, max_attempts {args.max_attempts}, "
        f"lease {args.lease:g} s, models {args.models}, OpenSearch {'on' if use_os else 'off'}; output {args.out}",
        flush=True,
    )
    log = FaultLog(args.out / "faults.jsonl", lease_s=args.lease, restart_s=1.0)
    pg = Postgres(Path(tempfile.mkdtemp(prefix="soak-pg-")))
    opensearch: OpenSearch | None = None
    search: SearchTarget | None = None
    supervisor: Supervisor | None = None
    try:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_connections = 200")
        pg.restart()
        if use_os:
            port = args.opensearch_port or free_port()
            opensearch = OpenSearch(port)
            opensearch.start()
            prefix = f"soak{args.seed}-{os.getpid()}"
            search = SearchTarget(opensearch.url, f"{prefix}-feedback-analysis", f"{prefix}-wordcount-analysis")
        env = reactor_env(pg.url, args, search)
        res = run_cli(env, "sql")
        if res.returncode != 0:
            print(f"[soak] reactor sql failed: {res.stderr.strip()}", flush=True)
            return 2
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(
                "UPDATE job_configs SET config = config || jsonb_build_object('batch_size', %s::int, 'max_attempts',"
                " %s::int, 'run_next_job', true) WHERE key = 'feedback_analysis'",
                [args.batch_size, args.max_attempts],
            )
        topics = Topics(pg.url, args.seed)
        topics.install()
        app = AppLog(args.out / "writes.csv")
        pending, pool = Pending(), Pool()
        daemon_env = {**env, "REACTOR_STANDIN_DELAY_MS": str(args.delay_ms)}
        if standin:
            daemon_env["REACTOR_STANDIN_EXIT_ON"] = KILLER
        daemon_args = ["--lease", str(args.lease), "--poll-interval", "1", "--max-wait-ms", "5", "--grace", "5"]
        supervisor = Supervisor(["a", "b"], daemon_args, daemon_env, args.out, log.log, restart_s=1.0)
        supervisor.start()
        if not wait_for("both reactors registered", lambda: _registered(pg.url, supervisor), 180):
            return 2
        writer_errors: list[str] = []
        writers = Writers(
            pg.url, args.writers, Rate(args.rows_per_s), args.seed, app, pending, pool, writer_errors.append
        )
        monitor = Monitor(pg.url, args.out / "metrics.csv", pending, lambda: writers.changes,
                          lambda: [s.pid for s in supervisor.slots], log.windows)  # fmt: skip
        plan = build_schedule(
            args.minutes, seed=args.seed, opensearch=use_os, killers=standin,
            exclude=frozenset(k for k in args.no_faults.split(",") if k),
        )  # fmt: skip
        (args.out / "schedule.json").write_text(json.dumps([[p.at, p.kind, p.params] for p in plan], indent=0))
        actions = Actions(pg.url, env, log, app, pg, supervisor, topics, opensearch,
                          [search.feedback_index, search.word_index] if search else [], args.seed)  # fmt: skip
        t0 = time.time()
        log.log("load", "start", rate=args.rows_per_s, planned_faults=len(plan))
        monitor.start()
        writers.start()
        stop = threading.Event()
        firing = threading.Thread(target=actions.fire, args=(plan, t0, stop), daemon=True)
        firing.start()
        while time.time() - t0 < load_s:
            time.sleep(min(60.0, max(0.1, t0 + load_s - time.time())))
            print(f"[soak] {(time.time() - t0) / 60:.1f} min: {writers.changes} changes committed", flush=True)
        writers.stop()
        log.log("load", "end", changes=writers.changes, unknown_outcome=writers.unknown)
        firing.join(5)
        actions.join(300)
        ok_drain = wait_for("the drain", lambda: drained(pg.url, actions.killers), args.drain_timeout)
        log.log("drain", "end" if ok_drain else "timeout", seconds=round(time.time() - t0 - load_s, 1))
        monitor.stop()
        codes = supervisor.stop()
        log.log("reactors.stopped", exit_codes=codes)
        result = check(pg.url, killers=actions.killers, topic_sets=topics.sets if standin else None, search=search)
        return report(args, result, log, app, supervisor, monitor, writers, actions, t0, writer_errors, codes)
    finally:
        if supervisor is not None:
            supervisor.stop(10)
        if opensearch is not None:
            try:
                opensearch.close()
            except Exception as exc:
                print(f"[soak] could not stop OpenSearch: {exc}", flush=True)
        pg.close()
        log.close()


def _registered(url: str, supervisor: Supervisor) -> bool:
    pids = [s.pid for s in supervisor.slots]
    with psycopg.connect(url) as conn:
        n = conn.execute("SELECT count(*) FROM reactor.workers WHERE pid = ANY(%s)", [pids]).fetchone()[0]
    return n == len(pids)


def report(args, result, log, app, supervisor, monitor, writers, actions, t0, writer_errors, codes) -> int:
    windows = log.windows()
    counts = result.counts()
    for b in result.breaches:
        print(f"BREACH {b.line()}", flush=True)
    for fid in list(dict.fromkeys(b.feedback_id for b in result.breaches if b.feedback_id is not None))[:10]:
        print("\n".join(history(args_url(supervisor), fid, app_lines=app.history(fid), faults_near=log.near,
                                slot_of_pid=supervisor.slot_of_pid)), flush=True)  # fmt: skip
    kinds = ("kill", "reactor.exit", "pg_restart", "os_outage", "os_read_only", "stop_resume", "killer_row",
             "reindex", "reprocess", "topics_edit")  # fmt: skip
    faults = {k: sum(1 for e in log.events if e["kind"] == k and e["phase"] in ("start", "point")) for k in kinds}
    goals = targets(counts, monitor.series, windows, t0, warmup_s=min(600.0, args.minutes * 60 / 3),
                    enforce=args.enforce_targets)  # fmt: skip
    print(f"\n[soak] changes committed: {writers.changes} ({writers.changes / (args.minutes * 60):.0f}/s), "
          f"{writers.unknown} transactions of unknown outcome (connection lost at commit)")  # fmt: skip
    print(f"[soak] faults: {faults}")
    print(f"[soak] checked: {result.feedbacks} feedback rows, {result.analysed} analysed, {result.killers} killer rows "
          f"({result.parked} parked), {result.words} words, {result.documents} search documents")  # fmt: skip
    print("[soak] targets:")
    for g in goals:
        print(g.line())
    problems = list(actions.errors) + [f"writer error: {e}" for e in writer_errors[:20]]
    problems += [f"reactor {k} exited {rc} on SIGTERM" for k, rc in codes.items() if rc not in (0, None)]
    for p in problems:
        print(f"[soak] problem: {p}")
    plot(monitor.series, windows, t0, args.plot, f"soak {args.minutes:g} min, seed {args.seed}, models {args.models}")
    failed = bool(result.breaches) or any(g.ok is False and g.enforced for g in goals) or bool(actions.errors)
    summary = {
        "ok": not failed, "minutes": args.minutes, "seed": args.seed, "changes": writers.changes,
        "changes_per_s": writers.changes / (args.minutes * 60), "breaches": len(result.breaches), "counts": counts,
        "faults": faults, "feedbacks": result.feedbacks, "analysed": result.analysed, "killers": result.killers,
        "parked": result.parked, "documents": result.documents, "problems": problems,
        "targets": [{"name": g.name, "value": g.value, "ok": g.ok, "enforced": g.enforced} for g in goals],
    }  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"[soak] {'PASS' if not failed else 'FAIL'}: summary in {args.out / 'summary.json'}, plot {args.plot}")
    return 1 if failed else 0


def args_url(supervisor: Supervisor) -> str:
    return supervisor.env["DATABASE_URL"]


if __name__ == "__main__":
    sys.exit(main())
