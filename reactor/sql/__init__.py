"""Schema management: one-time numbered migrations plus idempotent objects, and the named queries.

`install` applies, in one transaction under an advisory lock: compat.sql (user tables when absent), every
migration not yet recorded in reactor.schema_version, triggers.sql when its checksum changed, the default
job_configs row and the backfill. A second run therefore changes nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import LiteralString, cast

import psycopg
from psycopg import sql

# What the reactor needs of the original worker's tables: column -> accepted types, checked before anything is
# written (any integer id, any text-like text: the triggers, queue and documents work with those).
INTEGER = ("smallint", "integer", "bigint")
TEXT_LIKE = ("text", "character varying", "character", "citext", "name")
REQUIRED_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "feedbacks": {"id": INTEGER, "text": TEXT_LIKE},
    "topics": {"label": TEXT_LIKE, "is_active": ("boolean",)},
    "jobs": {
        "id": INTEGER,
        "job_name": TEXT_LIKE,
        "status": TEXT_LIKE,
        "last_processed_id": INTEGER,
        "created_at": (),
        "updated_at": (),
    },
    "job_configs": {"key": TEXT_LIKE, "config": ("jsonb", "json", "text")},
}


class SchemaError(Exception):
    """The database cannot host the reactor as it is; the message says why."""


def read(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, sql) of every numbered migration, in order."""
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_[\w-]+\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


@cache
def queries() -> dict[str, LiteralString]:
    """The `-- name:` blocks of queries.sql, by name."""
    out: dict[str, LiteralString] = {}
    for block in re.split(r"^-- name: ", read("queries.sql"), flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        out[name.strip()] = cast(LiteralString, body.strip())
    return out


def q(name: str) -> sql.SQL:
    return sql.SQL(queries()[name])


@dataclass
class InstallReport:
    applied_migrations: list[str] = field(default_factory=list)
    triggers_updated: bool = False
    backfilled: int = 0
    config_created: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.applied_migrations or self.triggers_updated or self.backfilled or self.config_created)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _check_columns(conn: psycopg.Connection) -> None:
    """Refuse, in one line and before any DDL, tables that exist but cannot host the reactor (a missing table is
    created by compat.sql). Tables resolve through the connection's search_path, as the triggers do."""
    rows = conn.execute(q("feedback_table_columns"), {"tables": list(REQUIRED_COLUMNS)}).fetchall()
    have: dict[str, dict[str, str]] = {}
    for table, column, type_name in rows:
        have.setdefault(table, {})[column] = type_name
    problems = []
    for table, needed in REQUIRED_COLUMNS.items():
        if table not in have:
            continue
        missing = sorted(set(needed) - set(have[table]))
        if missing:
            problems.append(f"{table} lacks {', '.join(missing)}")
        for column, accepted in needed.items():
            actual = have[table].get(column)
            if actual and accepted and actual not in accepted:
                problems.append(f"{table}.{column} is {actual}, the reactor needs {' or '.join(accepted)}")
    if problems:
        raise SchemaError("existing tables do not fit the reactor: " + "; ".join(problems) + " (nothing was changed)")


def install(conn: psycopg.Connection, *, job_key: str, force: bool = False, backfill: bool = True) -> InstallReport:
    """Bring the database to the current schema; safe to run any number of times."""
    report = InstallReport()
    with conn.transaction():
        conn.execute(q("install_lock"))
        _check_columns(conn)
        conn.execute(cast(LiteralString, read("compat.sql")))
        conn.execute(cast(LiteralString, read("bootstrap.sql")))
        done = {row[0] for row in conn.execute(q("applied_migrations"))}
        for version, name, body in migrations():
            if version in done:
                continue
            conn.execute(cast(LiteralString, body))
            conn.execute(q("record_migration"), {"version": version, "name": name, "checksum": _digest(body)})
            report.applied_migrations.append(name)
        triggers = read("triggers.sql")
        row = conn.execute(q("installed_checksum"), {"name": "triggers"}).fetchone()
        if force or not row or row[0] != _digest(triggers):
            conn.execute(cast(LiteralString, triggers))
            conn.execute(q("record_installed"), {"name": "triggers", "checksum": _digest(triggers)})
            report.triggers_updated = True
        for (role,) in conn.execute(q("listener_roles")).fetchall():
            grant_listener(conn, role)  # a migration's new tables and sequences, for reactors already granted
        conn.execute(q("register_job_key"), {"key": job_key})
        report.config_created = conn.execute(q("ensure_job_config"), {"key": job_key}).rowcount > 0
        if backfill:
            report.backfilled = conn.execute(cast(LiteralString, read("backfill.sql"))).rowcount
            if report.backfilled:
                conn.execute(q("wake_reactors"))
    return report


def grant_listener(conn: psycopg.Connection, role: str) -> None:
    """Give `role` exactly what `reactor listen` needs (grants.sql); the role name is quoted, never formatted."""
    with conn.transaction():
        for statement in _statements(read("grants.sql")):
            conn.execute(sql.SQL(statement).format(role=sql.Identifier(role)))  # type: ignore[arg-type]
        row = conn.execute(q("jobs_sequence")).fetchone()
        if row and row[0]:
            schema, _, name = row[0].rpartition(".")
            conn.execute(
                sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                    sql.Identifier(schema.strip('"'), name.strip('"')), sql.Identifier(role)
                )
            )


def _statements(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def uninstall_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Rows in every table of schema `reactor`: what `uninstall` drops (empty when nothing is installed)."""
    tables = [row[0] for row in conn.execute(q("reactor_tables"))]
    counts = {}
    for table in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM reactor.{}").format(sql.Identifier(table))).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def uninstall(conn: psycopg.Connection) -> None:
    """Drop triggers and the reactor schema (analyses and word counts with it); user tables and rows stay."""
    with conn.transaction():
        conn.execute(q("install_lock"))
        conn.execute(cast(LiteralString, read("uninstall.sql")))


def schema_version(conn: psycopg.Connection) -> int | None:
    row = conn.execute(q("schema_version")).fetchone()
    return row[0] if row else None
