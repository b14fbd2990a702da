"""The targets check printed at the end: correctness (0 lost, 0 doubled, 0 orphaned: always enforced) and the
issue's performance targets (p99 outside fault windows ≤ 100 ms, table sizes flat after the first 10 minutes,
RSS growth ≤ 10 % after warm-up), enforced only when asked (the full hour), reported always."""

from __future__ import annotations

from dataclasses import dataclass

from .faults import BACKGROUND, in_window
from .monitor import Series, percentile

P99_TARGET_MS = 100.0
SIZE_GROWTH_MAX = 1.25  # median of the last third / median of the first third, after the warm-up
SIZE_SLACK_KB = 2048  # below this absolute growth a table counts as flat (an empty queue flips 8 KB ↔ 64 KB)
RSS_GROWTH_MAX = 0.10
RSS_WARMUP_S = 60.0
RSS_MIN_LIFE_S = 180.0


@dataclass
class Target:
    name: str
    value: str
    ok: bool | None  # None: not measurable in this run
    enforced: bool

    def line(self) -> str:
        mark = "n/a" if self.ok is None else ("ok" if self.ok else ("BREACH" if self.enforced else "missed"))
        return f"  {self.name:<44} {self.value:<44} {mark}"


def targets(
    counts: dict[str, int], series: Series, windows: list[tuple[float, float, str]], t0: float, *, warmup_s: float,
    enforce: bool,
) -> list[Target]:  # fmt: skip
    out = [
        Target(f"{k} (checker)", str(counts.get(k, 0)), counts.get(k, 0) == 0, True)
        for k in ("lost", "doubled", "orphaned")
    ]
    out.append(Target("other breaches (checker)", str(counts.get("other", 0)), counts.get("other", 0) == 0, True))
    all_ms = [(d - c) * 1000 for c, d in series.latency]
    clean = [(d - c) * 1000 for c, d in series.latency if not in_window(c, windows)]
    loaded = [(d - c) * 1000 for c, d in series.latency if not in_window(c, windows, BACKGROUND)]
    p99 = percentile(clean, 99)
    out.append(
        Target(
            "latency p99 outside fault windows ≤ 100 ms",
            f"{p99:.1f} ms (n={len(clean)}; all: p50 {percentile(all_ms, 50):.1f}, p99 {percentile(all_ms, 99):.1f})",
            None if not clean else p99 <= P99_TARGET_MS,
            enforce,
        )
    )
    if loaded:  # for the record: reindex and reprocess counted as load, not as faults
        p99_loaded = percentile(loaded, 99)
        out.append(
            Target(
                "  same, reindex/reprocess counted as load",
                f"{p99_loaded:.1f} ms (n={len(loaded)})",
                p99_loaded <= P99_TARGET_MS,
                False,
            )
        )
    rows = [r for r in series.rows if float(r["t"]) - t0 >= warmup_s and r.get("analysis_kb") not in (None, "")]  # type: ignore[arg-type]
    for name in ("inbox_kb", "queue_kb", "outbox_kb", "analysis_per_row"):
        values = [_size(r, name) for r in rows]
        values = [v for v in values if v == v]
        if len(values) < 6:
            out.append(Target(f"{name} flat after warm-up", "too few samples", None, enforce))
            continue
        first, last = _thirds(values)
        ratio = last / first if first else float("inf") if last else 1.0
        slack = SIZE_SLACK_KB if name != "analysis_per_row" else 0.0
        ok = ratio <= SIZE_GROWTH_MAX or (last - first) <= slack
        unit = "bytes/row" if name == "analysis_per_row" else "KB"
        out.append(Target(f"{name} flat after warm-up", f"{first:.0f} → {last:.0f} {unit} (×{ratio:.2f})", ok, enforce))
    growths = []
    for pid, samples in series.rss.items():
        if samples[-1][0] - samples[0][0] < RSS_MIN_LIFE_S:
            continue
        warm = [mb for t, mb in samples if t - samples[0][0] >= RSS_WARMUP_S]
        if len(warm) >= 3:  # a trend, as for the tables: median of the last third over the first third's
            first, last = _thirds(warm)
            growths.append((last / first - 1, pid, first, last, max(warm)))
    if growths:
        g, pid, warm, last, peak = max(growths)
        out.append(
            Target(
                "reactor RSS growth ≤ 10 % after warm-up",
                f"worst pid {pid}: {warm:.0f} → {last:.0f} MB ({g:+.1%}, peak {peak:.0f}; {len(growths)} processes)",
                g <= RSS_GROWTH_MAX,
                enforce,
            )
        )
    else:
        out.append(
            Target("reactor RSS growth ≤ 10 % after warm-up", f"no process lived {RSS_MIN_LIFE_S:.0f} s", None, enforce)
        )
    return out


def _thirds(values: list[float]) -> tuple[float, float]:
    """Medians of the first and the last third: a trend, not a moment's peak."""
    third = max(1, len(values) // 3)
    return sorted(values[:third])[third // 2], sorted(values[-third:])[third // 2]


def _size(row: dict[str, object], name: str) -> float:
    if name == "analysis_per_row":
        n = float(row.get("analysed_rows") or 0)  # type: ignore[arg-type]
        return float(row["analysis_kb"]) * 1024 / n if n else float("nan")  # type: ignore[arg-type]
    return float(row[name])  # type: ignore[arg-type]
