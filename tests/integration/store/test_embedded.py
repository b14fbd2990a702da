"""With no DATABASE_URL the CLI starts (or reuses) the embedded PostgreSQL in a per-user folder and says where."""

from __future__ import annotations

import os

from tests.support.processes import reactor_env, run_cli


def test_cli_without_database_url_uses_embedded_server(tmp_path):
    home = tmp_path / "home"
    tmp_path.chmod(0o755)  # as root the server runs as its own user and must reach the folder
    env = reactor_env("", REACTOR_HOME=str(home))
    env.pop("DATABASE_URL")
    env.pop("XDG_RUNTIME_DIR", None)  # as in containers and root shells: platformdirs would warn on every command
    try:
        first = run_cli("", "sql", env=env, timeout=120)
        assert first.returncode == 0, first.stderr
        assert f"using the embedded PostgreSQL in {home / 'pgdata'}" in first.stderr
        again = run_cli("", "status", env=env)  # reuses the running server
        assert again.returncode == 0 and "state: running" in again.stdout, again.stderr
        shown = run_cli("", "db", "url", env=env)
        url = shown.stdout.strip()
        assert url.startswith("postgresql://") and str(home) in url
    finally:
        stopped = run_cli("", "db", "stop", env=env)
    assert stopped.stdout.strip() == "stopped"
    assert all("XDG_RUNTIME_DIR" not in done.stderr for done in (first, again, shown, stopped)), stopped.stderr
    assert not (home / "pgdata" / "postmaster.pid").exists()
    assert os.path.isdir(home / "pgdata")
