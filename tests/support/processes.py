"""The reactor as a user runs it: `reactor ...` commands and `reactor listen` daemons in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def reactor_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REACTOR_", "OPENSEARCH_"))}
    env.update(
        {
            "DATABASE_URL": url,
            "REACTOR_ENV": "local",
            "REACTOR_MODELS": "stand-in",
            "REACTOR_DOTENV": "/nonexistent",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_cli(
    url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `reactor ARGS` as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "reactor", *args],
        env=env or reactor_env(url),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


class ReactorProcess:
    """A `reactor listen` subprocess whose JSON log goes to a file the test can read."""

    def __init__(self, url: str, log_dir: Path, *args: str, **env: str) -> None:
        self.log_path = log_dir / f"reactor-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reactor", "listen", *args],
            env=reactor_env(url, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def wait_for_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"reactor exited ({self.proc.returncode}) before {needle!r}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, sig: int = 15, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
