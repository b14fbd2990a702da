"""What each planned fault does, and the thread that fires them on time (each in its own thread, so faults
overlap as they would in production). Operator commands run as users run them: `reactor ...` subprocesses."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg

from .cluster import ROOT, OpenSearch, Postgres, Supervisor
from .faults import FaultLog, Planned
from .load import AppLog, Topics

KILLER = "SOAK-KILLS-THE-PROCESS"
T = TypeVar("T")


def run_cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reactor", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@dataclass
class Actions:
    url: str
    cli_env: dict[str, str]
    log: FaultLog
    app: AppLog
    pg: Postgres
    supervisor: Supervisor
    topics: Topics
    opensearch: OpenSearch | None
    aliases: list[str]
    seed: int
    killers: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _kills: int = 0

    def fire(self, plan: list[Planned], t0: float, stop: threading.Event) -> None:
        """Start each planned fault at t0 + at (a thread each); returns when all have been started."""
        for event in plan:
            if stop.wait(max(0.0, t0 + event.at - time.time())):
                return
            t = threading.Thread(target=self._guarded, args=(event,), name=f"fault-{event.kind}", daemon=True)
            t.start()
            self._threads.append(t)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))

    def _guarded(self, event: Planned) -> None:
        try:
            getattr(self, event.kind)(**event.params)
        except Exception as exc:  # a fault that could not be applied is a soak error, reported at the end
            msg = f"{event.kind} failed: {type(exc).__name__}: {str(exc).strip()[:300]}"
            self.errors.append(msg)
            self.log.log("soak.error", error=msg)

    # --- the faults ---------------------------------------------------------------------------------------

    def kill(self) -> None:
        # every 5th kill hits slot a, the others b: a lives long enough between deaths for its RSS trend
        slots = self.supervisor.slots
        slot = slots[0] if self._kills % 5 == 4 or len(slots) == 1 else slots[1]
        self._kills += 1
        pid = self.supervisor.kill(slot)
        self.log.log("kill", slot=slot.name, pid=pid, signal="SIGKILL")

    def pg_restart(self) -> None:
        i = self.log.next_id()
        self.log.log("pg_restart", "start", id=i, how="pg_ctl stop -m fast; pg_ctl start")
        down = self.pg.restart()
        self.log.log("pg_restart", "end", id=i, unavailable_s=round(down, 2))

    def os_outage(self, mode: str, seconds: float) -> None:
        assert self.opensearch is not None
        i = self.log.next_id()
        self.log.log("os_outage", "start", id=i, mode=mode, seconds=round(seconds, 1))
        try:
            if mode == "freeze":
                self.opensearch.freeze()
                time.sleep(seconds)
                self.opensearch.thaw()
            else:
                self.opensearch.stop()
                time.sleep(seconds)
                self.opensearch.start()
        finally:
            self.log.log("os_outage", "end", id=i, mode=mode)

    def os_read_only(self, seconds: float) -> None:
        assert self.opensearch is not None
        i = self.log.next_id()
        indices = self._retry(lambda: self.opensearch.set_read_only(self.aliases, True))  # an outage may be on
        self.log.log("os_read_only", "start", id=i, indices=",".join(indices), block="read_only_allow_delete")
        try:
            time.sleep(seconds)
        finally:
            self._retry(lambda: self.opensearch.set_read_only(self.aliases, False))  # type: ignore[union-attr]
            self.log.log("os_read_only", "end", id=i)

    def _retry(self, call: Callable[[], T], tries: int = 40) -> T:
        """`call` until it succeeds: OpenSearch may be frozen or restarting by another fault right now."""
        for n in range(tries):
            try:
                return call()
            except Exception as exc:
                if n == tries - 1:
                    raise
                self.log.log("os.retry", error=f"{type(exc).__name__}: {str(exc)[:200]}", attempt=n + 1)
                time.sleep(5)
        raise AssertionError("unreachable")

    def stop_resume(self, seconds: float) -> None:
        i = self.log.next_id()
        self.log.log("stop_resume", "start", id=i, paused_s=round(seconds, 1))
        self._cli_until_ok("stop")
        time.sleep(seconds)
        self._cli_until_ok("resume")
        self.log.log("stop_resume", "end", id=i)

    def killer_row(self) -> None:
        text = f"this row kills the model runtime {KILLER} {random.Random(self.seed + len(self.killers)).random()}"
        for _ in range(60):
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    fid = conn.execute("INSERT INTO feedbacks (text) VALUES (%s) RETURNING id", [text]).fetchone()[0]
                break
            except psycopg.OperationalError:
                time.sleep(1)
        else:
            raise RuntimeError("could not insert the killer row")
        self.killers.add(fid)
        self.app.write("faults", [("killer", fid, text)])
        self.log.log("killer_row", feedback_id=fid)

    def reindex(self) -> None:
        i = self.log.next_id()
        self.log.log("reindex", "start", id=i)
        res = self._cli_until_ok("reindex", "--no-progress", tries=20)
        self.log.log("reindex", "end", id=i, rc=res.returncode, out=res.stdout.strip()[-200:])

    def reprocess(self) -> None:
        i = self.log.next_id()
        self.log.log("reprocess", "start", id=i, args="--stale")
        res = self._cli_until_ok("reprocess", "--stale", tries=20)
        self.log.log("reprocess", "end", id=i, rc=res.returncode, out=res.stdout.strip()[-200:])

    def topics_edit(self) -> None:
        for _ in range(30):
            with contextlib.suppress(psycopg.OperationalError):
                self.log.log("topics_edit", did=self.topics.edit())
                return
            time.sleep(1)

    def _cli_until_ok(self, *args: str, tries: int = 60) -> subprocess.CompletedProcess[str]:
        """A command retried while it fails (PostgreSQL restarting, OpenSearch down): an operator would retry."""
        for n in range(tries):
            res = run_cli(self.cli_env, *args, timeout=3600 if args[0] == "reprocess" else 600)  # paced: minutes
            if res.returncode == 0:
                return res
            self.log.log(f"cli.{args[0]}", error=(res.stderr or res.stdout).strip()[-300:], attempt=n + 1)
            time.sleep(5 if args[0] in ("reindex", "reprocess") else 1)
        raise RuntimeError(f"reactor {' '.join(args)} failed {tries} times")
