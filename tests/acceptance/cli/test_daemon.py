"""`reactor listen` as a process, seen from the command line: what an operator sees in `status`, on the
/health port it asked for, and on stderr."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import psycopg

from tests.support.db import insert, scalar, wait_until
from tests.support.processes import run_cli


def test_dead_workers_are_flagged_stale_then_pruned(pg_url, start_reactor):
    import orjson

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO reactor.workers (id, host, pid, state, last_seen) VALUES "
            "('dead-1', 'h', 1, 'running', now() - interval '30 seconds'), "
            "('dead-2', 'h', 2, 'running', now() - interval '5 minutes')"
        )
    states = {w["id"]: w["state"] for w in orjson.loads(run_cli(pg_url, "status", "--json").stdout)["workers"]}
    assert states == {"dead-1": "stale", "dead-2": "stale"}
    reactor = start_reactor()
    reactor.wait_for_log("reactor.started")
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM reactor.workers WHERE id = 'dead-2'") == 0,
        15,
        "long-dead worker pruned by a live heartbeat",
    )
    assert scalar(pg_url, "SELECT count(*) FROM reactor.workers WHERE id = 'dead-1'") == 1


def test_http_serves_on_the_socket_bound_at_start(pg_url: str, start_reactor) -> None:
    """Port 0 takes a free port; the log line says which, and /health answers there."""
    reactor = start_reactor("--http", "127.0.0.1:0")
    reactor.wait_for_log("http.listening")
    line = next(json.loads(x) for x in reactor.log().splitlines() if '"http.listening"' in x)
    try:  # UP once the first heartbeat is in, DOWN (503) just before: either proves it serves there
        with urllib.request.urlopen(line["address"] + "/health", timeout=10) as resp:
            status, body = resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        status, body = err.code, json.load(err)
    assert status in (200, 503) and "status" in body


def test_daemon_stderr_is_json_lines_with_libraries_folded(pg_url: str, start_reactor) -> None:
    insert(pg_url, ["indexed later, OpenSearch is down"])
    reactor = start_reactor(OPENSEARCH_ENDPOINT="http://127.0.0.1:9")
    reactor.wait_for_log('"logger":"opensearch"')  # opensearch-py's own warning for a failed request
    reactor.wait_for_log("batch.completed")
    assert reactor.stop() == 0
    lines = [json.loads(line) for line in reactor.log().splitlines()]  # every line parses
    assert all(len(json.dumps(line)) < 2000 for line in lines)
    note = next(line for line in lines if line["event"] == "models.random_weights")
    assert note["level"] == "warning" and "RANDOM weights" in note["note"]
    library = [line for line in lines if line["logger"] == "opensearch"]
    assert library and all("error" in line and "exception" not in line for line in library)
    assert all("Traceback" not in line["error"] for line in library)
