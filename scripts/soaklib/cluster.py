"""The soak's real components: an embedded PostgreSQL it may restart, an OpenSearch it may freeze or stop, and
`reactor listen` processes kept alive the way systemd's Restart=always would keep them.

Every start, exit and fault is written to the fault log (faults.FaultLog) so a breach can be read against it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reactor.devtools.postgres import RestartablePostgres

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres(RestartablePostgres):
    """The soak's embedded PostgreSQL: `restart()` restarts it in place (pg_ctl -m fast: clients are cut off,
    as in a deploy); its URL (a Unix socket) stays valid across restarts."""


def java_present() -> bool:
    return all(shutil.which(tool) for tool in ("java", "curl", "unzip"))


class OpenSearch:
    """A single-node OpenSearch of the soak's own (scripts/opensearch.sh on `port`), so that freezing or stopping
    it disturbs nobody else."""

    def __init__(self, port: int, heap: str = "384m") -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "OPENSEARCH_PORT": str(port), "OPENSEARCH_HEAP": heap}
        base = Path(os.environ.get("OPENSEARCH_HOME_DIR") or ROOT / ".cache" / "opensearch")
        self.pidfile = base / f"run-{port}" / "opensearch.pid"
        self.frozen = False

    def _script(self, action: str, timeout: float = 300) -> None:
        subprocess.run(
            [str(ROOT / "scripts" / "opensearch.sh"), action],
            env=self.env,
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        if self.frozen:
            self.thaw()
        self._script("stop", timeout=120)

    def close(self) -> None:
        """Stop it and delete its data folder (run-PORT): every soak starts from empty indices."""
        self.stop()
        shutil.rmtree(self.pidfile.parent, ignore_errors=True)

    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a GC pause or a hung node)."""
        os.kill(self.pid(), signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)
        self.frozen = False

    def request(self, method: str, path: str, body: object | None = None, timeout: float = 30) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")

    def set_read_only(self, aliases: list[str], on: bool) -> list[str]:
        """index.blocks.read_only_allow_delete on the indices behind `aliases` (the disk-watermark block); the
        soak's indices only, never the cluster-wide block."""
        indices = sorted({name for alias in aliases for name in self.request("GET", f"/_alias/{alias}")})
        self.request("PUT", f"/{','.join(indices)}/_settings", {"index.blocks.read_only_allow_delete": on or None})
        return indices


@dataclass
class Slot:
    """One supervised `reactor listen`: its current process and the history of the ones before it."""

    name: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    pids: dict[int, tuple[float, float | None, int | None]] = field(default_factory=dict)  # pid: start, end, rc

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


class Supervisor:
    """Restart=always, RestartSec=`restart_s`: each slot's `reactor listen` is started again whenever it exits
    (SIGKILL, a killer row, a crash), until `stop()`; starts and exits go to `on_event`."""

    def __init__(
        self,
        names: list[str],
        args: list[str],
        env: dict[str, str],
        log_dir: Path,
        on_event: Callable[..., None],
        restart_s: float = 1.0,
    ) -> None:
        self.slots = [Slot(n) for n in names]
        self.args, self.env, self.log_dir = args, env, log_dir
        self.on_event, self.restart_s = on_event, restart_s
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)
            t = threading.Thread(target=self._watch, args=(slot,), name=f"supervise-{slot.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _spawn(self, slot: Slot) -> None:
        with (self.log_dir / f"reactor-{slot.name}.log").open("ab") as log:
            slot.proc = subprocess.Popen(
                [sys.executable, "-m", "reactor", "listen", *self.args],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        slot.started = time.time()
        slot.pids[slot.proc.pid] = (slot.started, None, None)
        self.on_event("reactor.start", slot=slot.name, pid=slot.proc.pid)

    def _watch(self, slot: Slot) -> None:
        while True:
            assert slot.proc is not None
            rc = slot.proc.wait()
            pid = slot.proc.pid
            slot.pids[pid] = (slot.pids[pid][0], time.time(), rc)
            if self._stopping.is_set():
                return
            self.on_event("reactor.exit", slot=slot.name, pid=pid, rc=rc)
            if self._stopping.wait(self.restart_s):
                return
            self._spawn(slot)

    def kill(self, slot: Slot) -> int | None:
        pid = slot.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pid

    def slot_of_pid(self, pid: int) -> str | None:
        return next((s.name for s in self.slots if pid in s.pids), None)

    def stop(self, timeout: float = 60) -> dict[str, int | None]:
        """SIGTERM every live reactor (it finishes its batch), SIGKILL after `timeout`; their exit codes."""
        self._stopping.set()
        codes: dict[str, int | None] = {}
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)
        for slot in self.slots:
            if slot.proc is None:
                continue
            try:
                codes[slot.name] = slot.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                slot.proc.kill()
                codes[slot.name] = slot.proc.wait()
        for t in self._threads:
            t.join(5)
        return codes
