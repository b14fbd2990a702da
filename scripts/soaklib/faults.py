"""The fault schedule and its log.

The full hour uses the issue's periods (a SIGKILL every 60 s, a PostgreSQL restart every 10 min, an OpenSearch
outage every 7 min, stop/resume every 2 min, a killer row every 5 min); shorter runs get as many of each as
fit, never fewer than the minimum below, spread evenly over the load (seeded jitter). Every event is logged
with wall-clock timestamps (faults.jsonl) so latency samples and breaches can be read against it.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# kind: (period in the full hour, s; minimum count in any run); None: exactly once
PERIODS: dict[str, tuple[float | None, int]] = {
    "kill": (60, 4),
    "pg_restart": (600, 1),
    "os_outage": (420, 1),
    "os_read_only": (None, 1),
    "stop_resume": (120, 2),
    "killer_row": (300, 1),
    "reindex": (None, 1),
    "reprocess": (None, 1),
    "topics_edit": (90, 3),
}
ONCE_AT = {"os_read_only": 0.55, "reindex": 0.35, "reprocess": 0.75}  # fraction of the load window
NEEDS_OPENSEARCH = {"os_outage", "os_read_only", "reindex"}


@dataclass(order=True)
class Planned:
    at: float  # seconds after the load started
    kind: str = field(compare=False)
    params: dict[str, Any] = field(default_factory=dict, compare=False)


def count_for(kind: str, minutes: float) -> int:
    period, minimum = PERIODS[kind]
    if period is None:
        return minimum
    return max(minimum, int(minutes * 60 // period))


def build_schedule(
    minutes: float, *, seed: int, opensearch: bool, killers: bool, exclude: frozenset[str] = frozenset()
) -> list[Planned]:
    """Every fault of a run of `minutes`, in time order (seconds from the start of the load)."""
    rng = random.Random(seed)
    load_s = minutes * 60
    plan: list[Planned] = []
    for kind in PERIODS:
        if kind in exclude or (kind in NEEDS_OPENSEARCH and not opensearch) or (kind == "killer_row" and not killers):
            continue
        n = count_for(kind, minutes)
        if kind in ONCE_AT:
            times = [ONCE_AT[kind] * load_s]
        else:
            lo, hi = 0.06 * load_s, 0.86 * load_s  # after warm-up; the last fault ends before the load stops
            step = (hi - lo) / n
            times = [lo + step * (i + rng.uniform(0.15, 0.85)) for i in range(n)]
        for i, at in enumerate(times):
            params: dict[str, Any] = {}
            if kind == "os_outage":
                params = {"mode": "freeze" if i % 2 == 0 else "stop", "seconds": outage_seconds(rng, load_s)}
            elif kind == "os_read_only":
                params = {"seconds": 45.0 if load_s >= 1200 else 25.0}
            elif kind == "stop_resume":
                params = {"seconds": rng.uniform(3, 10)}
            plan.append(Planned(at, kind, params))
    return sorted(plan)


def outage_seconds(rng: random.Random, load_s: float) -> float:
    """30–90 s (the issue's range); never more than 15 % of a short run."""
    return rng.uniform(30, max(30.0, min(90.0, 0.15 * load_s)))


# settle time after a fault's end during which latency samples count as "in a fault window"
SETTLE_S = {"kill": 3.0, "reactor.exit": 3.0, "pg_restart": 5.0, "os_outage": 5.0, "os_read_only": 5.0}


class FaultLog:
    """Thread-safe JSONL log of faults and reactor starts/exits: one object per line with `t` (epoch s)."""

    def __init__(self, path: Path, *, lease_s: float, restart_s: float) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._file = path.open("a", buffering=1)
        self.lease_s, self.restart_s = lease_s, restart_s

    def next_id(self) -> int:
        return next(self._ids)

    def log(self, kind: str, phase: str = "point", **fields: Any) -> dict[str, Any]:
        event = {"t": round(time.time(), 3), "kind": kind, "phase": phase, **fields}
        with self._lock:
            self.events.append(event)
            self._file.write(json.dumps(event, default=str) + "\n")
        print(f"[soak {time.strftime('%H:%M:%S')}] {kind} {phase} {_short(fields)}", flush=True)
        return event

    def close(self) -> None:
        self._file.close()

    def windows(self) -> list[tuple[float, float, str]]:
        """(start, end, kind) of every fault, end including the settle time: a killed reactor's batch waits for
        its lease, a restarted one for its start."""
        out: list[tuple[float, float, str]] = []
        opened: dict[int, dict[str, Any]] = {}
        recovery = self.lease_s + self.restart_s + 3.0
        for e in self.events:
            kind = e["kind"]
            if kind in ("reactor.start", "topics_edit", "load"):
                continue
            if e["phase"] == "start":
                opened[e["id"]] = e
            elif e["phase"] == "end" and e.get("id") in opened:
                begin = opened.pop(e["id"])["t"]
                out.append((begin, e["t"] + SETTLE_S.get(kind, 5.0), kind))
            elif e["phase"] == "point":
                out.append((e["t"], e["t"] + recovery, kind))
        out += [(e["t"], float("inf"), e["kind"]) for e in opened.values()]  # never ended: the rest of the run
        return sorted(out)

    def near(self, t: float, seconds: float = 30.0) -> list[dict[str, Any]]:
        return [e for e in self.events if abs(e["t"] - t) <= seconds and e["kind"] != "load"]


# operations an operator runs under load: the issue schedules them with the faults (so the target leaves their
# windows out), and the report also gives the latency with them counted as load
BACKGROUND = frozenset({"reindex", "reprocess"})


def in_window(t: float, windows: list[tuple[float, float, str]], ignore: frozenset[str] = frozenset()) -> bool:
    """In the window of a fault whose kind is not in `ignore`."""
    return any(start <= t <= end for start, end, kind in windows if kind not in ignore)


def _short(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items() if k != "id")[:200]
