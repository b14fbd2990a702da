"""Issue 14, point 11: `reactor` alone prints help (exit 0); every command's help has an example and a
summary that is not cut in the command list; option values read well; shell completion works."""

from __future__ import annotations

import os
import subprocess
import sys

import click
from click.testing import CliRunner

from reactor.cli import main
from tests.support.processes import ROOT


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
    return found


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reactor", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "REACTOR_DOTENV": "/nonexistent", **env},
        timeout=60,
    )


def test_reactor_alone_prints_help_and_exits_0() -> None:
    out = _run()
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: reactor [OPTIONS] [COMMAND]") and "Commands:" in out.stdout


def test_command_list_summaries_are_not_cut() -> None:
    listing = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    rows = listing.split("Commands:")[1].strip().splitlines()
    assert len(rows) == len(main.commands)
    assert not [r for r in rows if r.rstrip().endswith("...")], listing


def test_every_command_has_help_with_an_example() -> None:
    commands = _commands(main)
    assert {"listen", "status", "show", "failed", "prune", "reindex", "export-models", "db url"} <= {
        " ".join(c) for c in commands
    }
    for path in commands:
        result = CliRunner().invoke(main, [*path, "--help"], terminal_width=80)
        assert result.exit_code == 0, path
        assert "Usage: " in result.output and "Example" in result.output, (path, result.output)
        summary = main.get_command(click.Context(main), path[0]).get_short_help_str(limit=60)  # type: ignore[union-attr]
        assert not summary.endswith("..."), (path, summary)


def test_option_values_read_well() -> None:
    reprocess = CliRunner().invoke(main, ["reprocess", "--help"], terminal_width=100).output
    assert "--since YYYY-MM-DD[THH:MM]" in reprocess and "%Y" not in reprocess
    listen = CliRunner().invoke(main, ["listen", "--help"], terminal_width=100).output
    assert "--lease SECONDS" in listen and "--http HOST:PORT" in listen and "FLOAT RANGE" not in listen
    assert "--batches-in-flight K" in listen and "INTEGER RANGE" not in listen
    top = CliRunner().invoke(main, ["--help"], terminal_width=100).output
    assert "--log-level LEVEL" in top


def test_shell_completion() -> None:
    script = _run(_REACTOR_COMPLETE="bash_source")
    assert script.returncode == 0 and "_reactor_completion" in script.stdout and "complete " in script.stdout
    words = _run(_REACTOR_COMPLETE="bash_complete", COMP_WORDS="reactor st", COMP_CWORD="1")
    assert words.stdout.split() == ["plain,status", "plain,stop"], words.stdout
