"""Issue 14, points 4 and 6: every bad option or environment value is refused at start with one line, no
traceback; `--http` is parsed and bound before the database is contacted or a model loads."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support.cli import assert_clean_error, invoke
from tests.support.processes import reactor_env, run_cli

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nowhere"  # a command that got past validation fails here


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--log-level", "bogus", "status"), {}, "'bogus' is not one of"),
        (("status",), {"REACTOR_LOG_LEVEL": "bogus"}, "REACTOR_LOG_LEVEL='bogus' is not one of debug"),
        (("stop",), {"REACTOR_LOG_LEVEL": "bogus"}, "REACTOR_LOG_LEVEL='bogus'"),
        (("reprocess", "--chunk", "-5"), {}, "'--chunk': -5 is not in the range"),
        (("reprocess", "--all", "--chunk", "0"), {}, "'--chunk': 0 is not in the range"),
        (("reprocess", "--since", "yesterday"), {}, "YYYY-MM-DD"),
        (("reprocess", "--all", "--since", "2024-01-01"), {}, "--all and --since exclude each other"),
        (("listen", "--lease", "0"), {}, "'--lease'"),
        (("listen", "--grace", "-1"), {}, "'--grace'"),
        (("listen", "--max-wait-ms", "abc"), {}, "'--max-wait-ms': 'abc' is not a valid float"),
        (("listen", "--poll-interval", "0"), {}, "'--poll-interval'"),
        (("listen", "--batches-in-flight", "-1"), {}, "'--batches-in-flight': -1 is not in the range"),
        (("prune", "--days", "-1"), {}, "'--days'"),
        (("failed", "--limit", "0"), {}, "'--limit'"),
        (("show", "abc"), {}, "'abc' is not a valid integer"),
        (("retry-failed", "--only", "everything"), {}, "'everything' is not one of"),
    ],
)
def test_bad_option_values_are_usage_errors(args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    out = assert_clean_error(invoke(UNREACHABLE, *args, **env), code=2)
    assert message in out, out
    assert "cannot connect" not in out  # refused before the database was contacted


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REACTOR_MAX_TEXT_BYTES": "abc"}, "REACTOR_MAX_TEXT_BYTES='abc' is not a number of bytes"),
        ({"REACTOR_MAX_TEXT_BYTES": "0"}, "REACTOR_MAX_TEXT_BYTES='0'"),
        ({"REACTOR_RETRY_BASE_S": "soon"}, "REACTOR_RETRY_BASE_S='soon' is not a number of seconds"),
        ({"REACTOR_RETRY_BASE_S": "nan"}, "REACTOR_RETRY_BASE_S='nan'"),
        ({"REACTOR_PRECISION": "int4"}, "REACTOR_PRECISION='int4' is not one of fp32"),
        ({"REACTOR_DEVICE": "tpu"}, "REACTOR_DEVICE='tpu' is not one of auto, cpu, cuda"),
    ],
)
def test_bad_environment_values_are_one_line_errors(env: dict[str, str], message: str) -> None:
    for args in (("listen", "--models", "stand-in"), ("stop",), ("reprocess", "--all")):
        out = assert_clean_error(invoke(UNREACHABLE, *args, **env), code=2)
        assert message in out, (args, out)


def test_bad_log_level_in_a_subprocess_is_one_line() -> None:
    out = run_cli("", "listen", env=reactor_env(UNREACHABLE, REACTOR_LOG_LEVEL="bogus"))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "Error: REACTOR_LOG_LEVEL='bogus' is not one of debug, info, warning, error, critical"
    ), out.stderr


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("localhost", "give HOST:PORT"),
        (":99999", "the port must be a number from 0 to 65535"),
        ("127.0.0.1:http", "the port must be a number"),
        ("no-such-host.invalid:9187", "unknown host"),
    ],
)
def test_http_address_is_refused_before_anything_else(address: str, message: str) -> None:
    started = time.monotonic()
    out = assert_clean_error(invoke(UNREACHABLE, "listen", "--models", "/nonexistent", "--http", address))
    assert message in out and "cannot connect" not in out and "nonexistent" not in out, out
    assert time.monotonic() - started < 10


def test_http_port_in_use_stops_the_daemon_at_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli("", "listen", "--models", "stand-in", "--http", f"127.0.0.1:{port}", env=reactor_env(UNREACHABLE))
    assert out.returncode == 1
    assert out.stderr.strip() == f"Error: --http '127.0.0.1:{port}': cannot listen there: Address already in use"
