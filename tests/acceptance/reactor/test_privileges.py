"""Least privilege: the application writes feedbacks without rights on schema reactor, and `reactor listen`
runs as a role holding only what `reactor sql --grant-listener` gives it."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.db import scalar, wait_until
from tests.support.processes import run_cli


def _as(url: str, user: str) -> str:
    params = conninfo_to_dict(url)
    params["user"] = user
    return make_conninfo("", **params)


def test_listener_role_and_app_role_with_least_privilege(pg_url, start_reactor):
    suffix = uuid.uuid4().hex[:6]
    worker, app = f"reactor worker {suffix}", f"app_{suffix}"  # a name that must be quoted
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for role in (worker, app):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT INSERT, UPDATE, DELETE, SELECT ON feedbacks TO {}").format(sql.Identifier(app)))
        conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE feedbacks_id_seq TO {}").format(sql.Identifier(app)))
    out = run_cli(pg_url, "sql", "--grant-listener", worker)
    assert out.returncode == 0 and "granted role" in out.stdout, out.stderr
    start_reactor(url=_as(pg_url, worker))
    # arming publishes the flag writers read (setval on reactor.armed_until_ms): the grant must allow it
    wait_until(lambda: scalar(pg_url, "SELECT reactor.armed()"), 30, "the least-privilege worker to arm")
    with psycopg.connect(_as(pg_url, app), autocommit=True) as conn:
        conn.execute("INSERT INTO feedbacks (text) VALUES ('written by the app role')")
        assert conn.execute("SELECT has_schema_privilege(current_user, 'reactor', 'USAGE')").fetchone()[0] is False
    wait_until(
        lambda: scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 1,
        30,
        "analysis written by the least-privilege worker",
    )
    status = run_cli(_as(pg_url, worker), "status")
    assert status.returncode == 0, status.stderr


def test_an_upgrade_grants_its_new_objects_to_roles_granted_before(pg_url):
    """A listener role granted by an older version holds rights on the tables of that time only: `reactor sql`
    gives it the new ones (here the inbox and the armed-flag sequence of migration 4), or its reactor would stop
    at the first claim with `permission denied`."""
    role = f"old listener {uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA reactor TO {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON reactor.queue TO {}").format(sql.Identifier(role))
        )
    checks = (
        "SELECT has_table_privilege(%(r)s, 'reactor.inbox', 'DELETE')"
        " AND has_sequence_privilege(%(r)s, 'reactor.armed_until_ms', 'UPDATE')"
        " AND has_table_privilege(%(r)s, 'reactor.sleepers', 'INSERT')"
    )
    assert scalar(pg_url, checks, {"r": role}) is False
    out = run_cli(pg_url, "sql")
    assert out.returncode == 0, out.stderr
    assert scalar(pg_url, checks, {"r": role}) is True
