"""`start_reactor`: `reactor listen` subprocesses for acceptance tests, killed at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import ReactorProcess


@pytest.fixture
def start_reactor(pg_url: str, tmp_path: Path) -> Iterator[Callable[..., ReactorProcess]]:
    """Factory: start_reactor(*cli_args, **env) -> a running ReactorProcess (stopped at teardown)."""
    started: list[ReactorProcess] = []

    def start(*args: str, url: str | None = None, **env: str) -> ReactorProcess:
        proc = ReactorProcess(url or pg_url, tmp_path, *args, **env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(9)
