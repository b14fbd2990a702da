"""A PostgreSQL server owned by one test, which it may stop and start again without disturbing the session's
shared server (fault-injection tests), and a free local TCP port."""

from __future__ import annotations

import socket
from pathlib import Path

from reactor.devtools.postgres import RestartablePostgres


class PrivatePostgres(RestartablePostgres):
    """An embedded PostgreSQL server owned by one test: `stop()` and `start()` restart it in place (same data
    folder, same socket folder, so the reactor's URL stays valid)."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, timeout_s=60)

    @property
    def maintenance_url(self) -> str:
        return self.url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
