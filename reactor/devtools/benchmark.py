"""Fair timing of several candidates on a noisy shared machine: round-robin rounds, medians, same-run ratios.

Timing candidates one after another lets a burst of someone else's work land on one of them only. Here
every round runs each candidate once (the order reversed every other round), so noise hits all alike,
and a ratio is taken within each round before the median is taken.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """A candidate's median rate (units/s) and CPU cost (CPU-s of this process per unit); when a baseline
    was named, the medians of its per-round speed ratio (rate / baseline's) and CPU ratio (baseline's CPU
    per unit / its own: above 1 is cheaper). CPU time is the steadier figure on a shared machine: time spent
    descheduled does not count."""

    per_s: float
    cpu_s_per_unit: float
    ratio: float | None
    cpu_ratio: float | None
    rounds: int


def interleaved(
    runs: Mapping[str, Callable[[], int]], rounds: int = 5, warmup: int = 1, baseline: str | None = None
) -> dict[str, Rate]:
    """Call each ``runs[name]()`` (returning how many units it processed) once per round, round-robin."""
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            c0, t0 = time.process_time(), time.perf_counter()
            units = runs[name]()
            t1, c1 = time.perf_counter(), time.process_time()
            wall[name].append(units / (t1 - t0))
            cpu[name].append((c1 - c0) / units)
    out = {}
    for name in names:
        ratio = cpu_ratio = None
        if baseline is not None:
            ratio = statistics.median(a / b for a, b in zip(wall[name], wall[baseline], strict=True))
            cpu_ratio = statistics.median(b / a for a, b in zip(cpu[name], cpu[baseline], strict=True))
        out[name] = Rate(statistics.median(wall[name]), statistics.median(cpu[name]), ratio, cpu_ratio, rounds)
    return out
