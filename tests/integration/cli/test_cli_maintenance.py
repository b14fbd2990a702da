"""Issue 14, points 3, 9 and 10: `sql --uninstall` says what it drops and asks first; `show` and `failed`
tell one row's story and list what is parked; `prune` enforces the jobs retention in small batches."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from tests.support.cli import assert_clean_error, execute, invoke
from tests.support.db import assert_consistent, insert, scalar
from tests.support.processes import ROOT, reactor_env, run_cli


def _analysed(url: str, texts: list[str | None]) -> list[int]:
    ids = insert(url, texts)
    out = run_cli(url, "listen", "--exit-when-idle")
    assert out.returncode == 0, out.stderr
    return ids


# --- sql --uninstall ---------------------------------------------------------------------------------------


def test_uninstall_off_a_terminal_needs_yes_and_says_what_it_would_drop(pg_url: str) -> None:
    _analysed(pg_url, ["great delivery", "slow support"])
    out = assert_clean_error(invoke(pg_url, "sql", "--uninstall"))
    assert "pass --yes" in out
    assert "reactor.feedback_analysis" in out and "2 rows" in out and "re-analysing costs model time" in out
    assert "reactor.word_counts" in out and "reactor.queue" in out and "reactor.outbox" in out
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 2  # nothing dropped
    done = invoke(pg_url, "sql", "--uninstall", "--yes")
    assert done.exit_code == 0, done.output
    assert "Removed the reactor schema" in done.output
    assert scalar(pg_url, "SELECT to_regnamespace('reactor')") is None
    assert scalar(pg_url, "SELECT count(*) FROM feedbacks") == 2
    again = invoke(pg_url, "sql", "--uninstall")
    assert again.exit_code == 0 and "nothing to drop" in again.output


def _on_a_terminal(url: str, answer: str) -> str:
    """`reactor sql --uninstall` with its stdin on a pseudo-terminal, answering the question with `answer`."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactor", "sql", "--uninstall"],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=reactor_env(url),
        cwd=ROOT,
    )
    os.close(follower)
    os.write(leader, answer.encode() + b"\n")
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    return out.decode()


def test_uninstall_on_a_terminal_asks_first(pg_url: str) -> None:
    _analysed(pg_url, ["keep my analysis"])
    out = _on_a_terminal(pg_url, "n")
    assert "Drop all of this? [y/N]" in out and "Aborted" in out, out
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 1
    out = _on_a_terminal(pg_url, "y")
    assert "Removed the reactor schema" in out, out
    assert scalar(pg_url, "SELECT to_regnamespace('reactor')") is None


# --- show and failed ----------------------------------------------------------------------------------------


def test_show_tells_one_rows_story(pg_url: str) -> None:
    execute(pg_url, "INSERT INTO topics (label) VALUES ('delivery'), ('price')")
    (fid,) = _analysed(pg_url, ["The delivery was quick and the delivery man friendly"])
    result = invoke(pg_url, "show", str(fid))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"feedback {fid}: The delivery was quick" in out
    assert "sentiment: " in out and "topics: " in out and "words: delivery 2" in out
    assert "models: sentiment stand-in/sentiment, zero-shot stand-in/zero-shot" in out
    assert "queue: nothing waiting" in out and "search document: nothing pending" in out
    doc = json.loads(invoke(pg_url, "show", str(fid), "--json").stdout)
    assert doc["analysis"]["word_counts"]["delivery"] == 2
    assert {t["label"] for t in doc["analysis"]["topics"]} <= {"delivery", "price"}
    assert doc["feedback"]["text"].startswith("The delivery") and doc["queue"] == [] and doc["failed"] == []


def test_show_queue_parked_and_search_states(pg_url: str) -> None:
    execute(
        pg_url,
        "INSERT INTO reactor.queue (feedback_id, op, attempts, last_error, crashes)"
        " VALUES (77, 'upsert', 2, 'model crashed', 1)",
        "INSERT INTO reactor.failed (queue_id, feedback_id, op, attempts, error, enqueued_at)"
        " VALUES (-5, 77, 'upsert', 5, 'text too long', now())",
        "INSERT INTO reactor.failed (queue_id, feedback_id, op, attempts, error, enqueued_at, cause)"
        " VALUES (-6, 77, 'upsert', 3, 'killed the process each of the 2 times it ran alone', now(), 'crash')",
        "INSERT INTO reactor.outbox (index_kind, doc_id, action, attempts, last_error, parked_at)"
        " VALUES ('feedback', '77', 'index', 3, 'mapper_parsing_exception', now())",
    )
    out = invoke(pg_url, "show", "77").stdout
    assert "feedback 77: the row no longer exists" in out and "analysis: none yet" in out
    assert "queue: upsert waiting, attempt 2" in out and "last error: model crashed" in out
    assert "its batch died with it alone 1x" in out
    assert "parked (error): upsert after 5 attempts" in out and "text too long" in out
    assert "parked (killed the process): upsert after 3 attempts" in out
    assert "search document: parked at" in out and "mapper_parsing_exception" in out
    missing = invoke(pg_url, "show", "123456")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_show_a_change_still_in_the_writers_inbox(pg_url: str) -> None:
    (fid,) = insert(pg_url, ["captured, no reactor has claimed it yet"])
    out = invoke(pg_url, "show", str(fid)).stdout
    assert "analysis: none yet" in out and "queue: upsert captured at " in out and "waiting for a reactor" in out
    assert "queue: 1 waiting (0 leased, 0 retrying)" in invoke(pg_url, "status").stdout  # the inbox counts


def test_failed_lists_parked_rows_and_documents(pg_url: str) -> None:
    empty = invoke(pg_url, "failed")
    assert empty.exit_code == 0 and "parked feedback rows: 0" in empty.stdout
    execute(
        pg_url,
        "INSERT INTO reactor.failed (queue_id, feedback_id, op, attempts, error, enqueued_at) VALUES"
        " (-1, 11, 'upsert', 5, 'tokenizer exploded', now())",
        "INSERT INTO reactor.failed (queue_id, feedback_id, op, attempts, error, enqueued_at, cause) VALUES"
        " (-2, 12, 'upsert', 6, 'killed the process each of the 5 times it ran alone', now() - interval '1 s',"
        " 'crash')",
        "INSERT INTO reactor.outbox (index_kind, doc_id, action, attempts, last_error, parked_at) VALUES"
        " ('word', 'hello', 'index', 3, 'illegal_argument_exception', now()),"
        " ('feedback', '13', 'index', 0, NULL, NULL)",
    )
    out = invoke(pg_url, "failed").stdout
    assert "parked feedback rows: 2 (1 killed the process, 1 failed)" in out
    assert "feedback 11 (error; upsert, 5 attempts" in out and "tokenizer exploded" in out
    assert "feedback 12 (killed the process; upsert, 6 attempts" in out
    assert "parked search documents: 1" in out and "word hello" in out and "illegal_argument_exception" in out
    assert "reactor retry-failed" in out
    limited = invoke(pg_url, "failed", "--limit", "1").stdout
    assert "parked feedback rows: 2 (1 killed the process, 1 failed), newest 1 below" in limited
    doc = json.loads(invoke(pg_url, "failed", "--json").stdout)
    assert doc["rows_total"] == 2 and doc["rows_crashed"] == 1 and doc["documents_total"] == 1
    assert {r["feedback_id"]: r["cause"] for r in doc["rows"]} == {11: "error", 12: "crash"}
    assert {r["feedback_id"] for r in doc["rows"]} == {11, 12} and doc["documents"][0]["error"].startswith("illegal")


# --- prune -----------------------------------------------------------------------------------------------


def _jobs(url: str) -> None:
    """Old finished jobs (ids 1-5, with job_runs), an old running one, recent ones, another job's old one."""
    execute(
        url,
        "INSERT INTO jobs (id, job_name, status, updated_at) SELECT g, 'feedback_analysis', 'completed',"
        " now() - interval '40 days' FROM generate_series(1, 5) g",
        "INSERT INTO reactor.job_runs (job_id, claim_token, worker_id, rows, lease_until)"
        " SELECT g, 't' || g, 'w', 1, now() FROM generate_series(1, 5) g",
        "INSERT INTO jobs (id, job_name, status, updated_at) VALUES"
        " (6, 'feedback_analysis', 'processing', now() - interval '40 days'),"
        " (7, 'another_job', 'failed', now() - interval '40 days'),"
        " (8, 'feedback_analysis', 'failed', now() - interval '2 days'),"
        " (9, 'feedback_analysis', 'completed', now())",
    )


def test_prune_deletes_old_finished_jobs_in_batches(pg_url: str) -> None:
    _jobs(pg_url)
    dry = invoke(pg_url, "prune", "--dry-run")
    assert dry.exit_code == 0 and "5 jobs rows of 'feedback_analysis' are older than 30 days" in dry.stdout
    assert scalar(pg_url, "SELECT count(*) FROM jobs") == 9
    done = invoke(pg_url, "prune", "--batch", "2")
    assert done.exit_code == 0, done.output
    assert "deleted 5 jobs rows of 'feedback_analysis' older than 30 days" in done.stdout
    assert scalar(pg_url, "SELECT array_agg(id ORDER BY id) FROM jobs") == [6, 7, 8, 9]
    assert scalar(pg_url, "SELECT count(*) FROM reactor.job_runs") == 0
    assert "deleted 1 jobs rows" in invoke(pg_url, "prune", "--days", "1").stdout  # job 8
    assert scalar(pg_url, "SELECT array_agg(id ORDER BY id) FROM jobs") == [6, 7, 9]


def test_prune_keeps_the_newest_job_even_when_old(pg_url: str) -> None:
    execute(
        pg_url,
        "INSERT INTO jobs (job_name, status, updated_at) SELECT 'feedback_analysis', 'completed',"
        " now() - interval '90 days' FROM generate_series(1, 3)",
    )
    assert "deleted 2 jobs rows" in invoke(pg_url, "prune").stdout
    assert scalar(pg_url, "SELECT count(*) FROM jobs") == 1
    assert "last batch: job" in invoke(pg_url, "status").stdout


def test_prune_default_is_the_configured_retention(pg_url: str) -> None:
    _jobs(pg_url)
    execute(pg_url, """UPDATE job_configs SET config = config || '{"jobs_retention_days": 60}'""")
    assert "0 jobs rows of 'feedback_analysis' are older than 60 days" in invoke(pg_url, "prune", "--dry-run").stdout


def test_prune_leaves_analysis_consistent(pg_url: str) -> None:
    _analysed(pg_url, ["first", "second batch text"])
    execute(pg_url, "UPDATE jobs SET updated_at = now() - interval '100 days'")
    assert invoke(pg_url, "prune").exit_code == 0
    assert scalar(pg_url, "SELECT count(*) FROM jobs") == 1
    assert_consistent(pg_url)
