"""Figures over time: insert → analysed latency samples (every second), and a row every 10 s (metrics.csv):
latency p50/p99, inbox/queue/outbox depth, on-disk size of the reactor's tables, each reactor's RSS, the
writers' tps. `plot` draws them (docs/bench/soak.png for the full run)."""

from __future__ import annotations

import contextlib
import csv
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from .faults import in_window

COLUMNS = [
    "t", "elapsed_s", "changes", "tps", "lat_n", "lat_p50_ms", "lat_p99_ms", "lat_p99_outside_faults_ms",
    "inbox", "queue", "outbox", "inbox_kb", "queue_kb", "outbox_kb", "analysis_kb", "analysed_rows",
    "rss_a_mb", "rss_b_mb", "pid_a", "pid_b", "faults",
]  # fmt: skip
SIZES = (
    "SELECT (SELECT count(*) FROM reactor.inbox), (SELECT count(*) FROM reactor.queue),"
    " (SELECT count(*) FROM reactor.outbox),"
    " pg_total_relation_size('reactor.inbox'), pg_total_relation_size('reactor.queue'),"
    " pg_total_relation_size('reactor.outbox'), pg_total_relation_size('reactor.feedback_analysis'),"
    " (SELECT count(*) FROM reactor.feedback_analysis)"
)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class Series:
    rows: list[dict[str, object]] = field(default_factory=list)
    latency: list[tuple[float, float]] = field(default_factory=list)  # (commit epoch, analysed epoch)
    rss: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # pid -> (epoch, MB)


class Monitor:
    def __init__(
        self,
        url: str,
        path: Path,
        pending: object,
        changes: Callable[[], int],
        pids: Callable[[], list[int | None]],
        windows: Callable[[], list[tuple[float, float, str]]],
        every_s: float = 10.0,
    ) -> None:
        self.url, self.path, self.pending = url, path, pending
        self.changes, self.pids, self.windows, self.every_s = changes, pids, windows, every_s
        self.series = Series()
        self.t0 = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def start(self) -> None:
        self.t0 = time.time()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        last_row, last_changes, interval_lat = time.time(), 0, []
        with self.path.open("w", newline="") as f:
            out = csv.DictWriter(f, COLUMNS)
            out.writeheader()
            while not self._stop.wait(1.0):
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=3)
                    interval_lat += self._latency(conn)
                    sizes = conn.execute(SIZES).fetchone() if time.time() - last_row >= self.every_s else None
                except psycopg.Error:
                    with contextlib.suppress(Exception):
                        conn and conn.close()  # type: ignore[func-returns-value]
                    conn, sizes = None, None
                self._sample_rss()
                now = time.time()
                if now - last_row < self.every_s:
                    continue
                changes = self.changes()
                row = self._row(now, changes, (changes - last_changes) / (now - last_row), interval_lat, sizes)
                out.writerow(row)
                f.flush()
                self.series.rows.append(row)
                last_row, last_changes, interval_lat = now, changes, []
        if conn is not None:
            conn.close()

    def _latency(self, conn: psycopg.Connection) -> list[tuple[float, float]]:
        waiting = self.pending.snapshot()  # type: ignore[attr-defined]
        if not waiting:
            return []
        found = conn.execute(
            "SELECT feedback_id, extract(epoch FROM analyzed_at)::float8 FROM reactor.feedback_analysis"
            " WHERE feedback_id = ANY(%s)",
            [list(waiting)],
        ).fetchall()
        samples = [(waiting[fid], done) for fid, done in found]
        self.pending.discard([fid for fid, _ in found])  # type: ignore[attr-defined]
        self.series.latency += samples
        return samples

    def _sample_rss(self) -> None:
        now = time.time()
        for pid in self.pids():
            if pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                self.series.rss.setdefault(pid, []).append((now, psutil.Process(pid).memory_info().rss / 2**20))

    def _row(
        self, now: float, changes: int, tps: float, lat: list[tuple[float, float]], sizes: tuple | None
    ) -> dict[str, object]:
        ms = [(done - commit) * 1000 for commit, done in lat]
        windows = self.windows()
        clean = [(d - c) * 1000 for c, d in lat if not in_window(c, windows)]
        pids = self.pids()
        rss = [self.series.rss.get(p, [(0, float("nan"))])[-1][1] if p else float("nan") for p in pids]
        active = sorted({kind for start, end, kind in windows if start <= now <= end})
        row: dict[str, object] = {
            "t": round(now, 1), "elapsed_s": round(now - self.t0, 1), "changes": changes, "tps": round(tps, 1),
            "lat_n": len(ms), "lat_p50_ms": _r(percentile(ms, 50)), "lat_p99_ms": _r(percentile(ms, 99)),
            "lat_p99_outside_faults_ms": _r(percentile(clean, 99)),
            "rss_a_mb": _r(rss[0]), "rss_b_mb": _r(rss[1] if len(rss) > 1 else float("nan")),
            "pid_a": pids[0], "pid_b": pids[1] if len(pids) > 1 else None, "faults": "+".join(active),
        }  # fmt: skip
        if sizes is not None:
            names = ("inbox", "queue", "outbox", "inbox_kb", "queue_kb", "outbox_kb", "analysis_kb", "analysed_rows")
            for i, name in enumerate(names):
                row[name] = sizes[i] // 1024 if name.endswith("_kb") else sizes[i]
        return row


def _r(x: float) -> float:
    return round(x, 1) if x == x else float("nan")


def plot(series: Series, windows: list[tuple[float, float, str]], t0: float, path: Path, title: str) -> None:
    """Four panels over the run's minutes, fault windows shaded (PostgreSQL restarts red, OpenSearch orange,
    kills as ticks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = series.rows
    x = [(float(r["t"]) - t0) / 60 for r in rows]  # type: ignore[arg-type]

    def col(name: str) -> list[float]:
        return [float(r[name]) if r.get(name) not in (None, "") else float("nan") for r in rows]  # type: ignore[arg-type]

    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    ax = axes[0]
    ax.plot(x, col("lat_p50_ms"), label="p50")
    ax.plot(x, col("lat_p99_ms"), label="p99")
    ax.plot(x, col("lat_p99_outside_faults_ms"), label="p99 outside fault windows", linestyle="--")
    ax.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    ax.set_yscale("log")
    ax.set_ylabel("insert → analysed, ms")
    ax = axes[1]
    for name in ("inbox", "queue", "outbox"):
        ax.plot(x, col(name), label=name)
    ax.set_ylabel("rows waiting")
    ax = axes[2]
    for name in ("inbox_kb", "queue_kb", "outbox_kb", "analysis_kb"):
        ax.plot(x, [v / 1024 for v in col(name)], label=name.replace("_kb", ""))
    ax.set_ylabel("on-disk size, MB")
    ax.set_yscale("symlog", linthresh=1)
    ax = axes[3]
    ax.plot(x, col("rss_a_mb"), label="reactor a RSS")
    ax.plot(x, col("rss_b_mb"), label="reactor b RSS")
    ax.set_ylabel("RSS, MB")
    tps = ax.twinx()
    tps.plot(x, col("tps"), color="grey", linewidth=0.8, label="writers' changes/s")
    tps.set_ylabel("changes/s")
    for ax in axes:
        for start, end, kind in windows:
            s, e = (start - t0) / 60, (min(end, start + 600) - t0) / 60
            if kind == "pg_restart":
                ax.axvspan(s, e, color="red", alpha=0.12)
            elif kind.startswith("os_"):
                ax.axvspan(s, e, color="orange", alpha=0.10)
            elif kind in ("kill", "reactor.exit"):
                ax.axvline(s, color="black", alpha=0.15, linewidth=0.6)
        ax.legend(loc="upper left", fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes (red: PostgreSQL restart, orange: OpenSearch fault, lines: reactor deaths)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
