"""Issue 14, point 12: the systemd unit under deploy/ parses cleanly (`systemd-analyze verify`), and the
`.env.example` names only variables the settings loader reads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

UNIT = ROOT / "deploy" / "feedback-reactor.service"
VENV_REACTOR = "/opt/feedback-reactor/.venv/bin/reactor"


def _verify(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # verify also checks that ExecStart exists: point it at this interpreter (`python -m reactor`)
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(VENV_REACTOR, f"{sys.executable} -m reactor"))
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package `systemd`; .ci/run installs it)",
)
def test_systemd_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert VENV_REACTOR in text and "KillSignal=SIGTERM" in text and "EnvironmentFile=" in text
    ok = _verify(text, tmp_path)
    assert ok.returncode == 0 and ok.stdout + ok.stderr == "", ok.stdout + ok.stderr
    broken = _verify(text.replace("Restart=on-failure", "Restart=sometimes"), tmp_path)  # the check can fail
    assert "Failed to parse service restart specifier" in broken.stdout + broken.stderr


def test_env_example_names_what_the_settings_loader_reads() -> None:
    example = (ROOT / ".env.example").read_text()
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    assert {"DATABASE_URL", "OPENSEARCH_ENDPOINT", "FLASK_ENV", "REACTOR_LOG_LEVEL"} <= names
    source = "".join(p.read_text() for p in (ROOT / "reactor").rglob("*.py"))
    unknown = {n for n in names if f'"{n}"' not in source and not n.startswith("AWS_")}
    assert not unknown, f".env.example names variables nothing reads: {unknown}"
