"""`reactor` command line: thin click shells over the modules of the data path."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import click

from reactor import config as config_mod
from reactor import logs

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class Fail(click.ClickException):
    """A clean one-line error (no traceback) with a chosen exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = code


def _settings() -> config_mod.Settings:
    try:
        return config_mod.load()
    except config_mod.ConfigError as exc:
        raise Fail(str(exc)) from None


def _url(settings: config_mod.Settings) -> str:
    from reactor.db import DatabaseError, resolve_url

    try:
        return resolve_url(settings.database_url)
    except DatabaseError as exc:
        raise Fail(str(exc)) from None
    except Exception as exc:  # embedded server failed to start
        raise Fail(f"cannot start the embedded PostgreSQL: {logs.redact(str(exc))}") from None


def _connect(url: str, autocommit: bool = True) -> Any:
    from reactor.db import DatabaseError, connect

    try:
        return connect(url, autocommit=autocommit)
    except DatabaseError as exc:
        raise Fail(str(exc)) from None


@click.group(context_settings=CONTEXT)
@click.option(
    "--log-level",
    default=lambda: os.environ.get("REACTOR_LOG_LEVEL", "INFO"),
    show_default="INFO",
    help="Log level of the JSON logs written to stderr.",
)
@click.version_option(package_name="feedback-reactor")
def main(log_level: str) -> None:
    """Feedback Reactor: analyses every committed feedback row (sentiment, topics, word counts).

    Configuration comes from the environment or a .env file: DATABASE_URL (unset: an embedded PostgreSQL
    in ~/.local/share/feedback-reactor), OPENSEARCH_ENDPOINT/USER/PASS, REACTOR_ENV (not `local`: merge the
    AWS Secrets Manager secret REACTOR_SECRET_NAME), REACTOR_MODELS (ONNX folder or `stand-in`).
    """
    logs.setup(log_level)


@main.command("sql", context_settings=CONTEXT)
@click.option("--uninstall", is_flag=True, help="Remove the reactor's triggers and schema (user tables stay).")
@click.option("--force", is_flag=True, help="Re-create functions and triggers even if unchanged.")
@click.option("--no-backfill", is_flag=True, help="Do not enqueue feedback rows that exist already.")
@click.option(
    "--grant-listener",
    "grant_role",
    metavar="ROLE",
    default=None,
    help="Also grant ROLE the least privileges `reactor listen` needs (see reactor/sql/grants.sql).",
)
def sql_cmd(uninstall: bool, force: bool, no_backfill: bool, grant_role: str | None) -> None:
    """Install or upgrade the schema, triggers and backfill (idempotent: safe to run again)."""
    from reactor import sql

    settings = _settings()
    url = _url(settings)
    with _connect(url) as conn:
        if uninstall:
            sql.uninstall(conn)
            click.echo("Removed the reactor schema and triggers; feedbacks, topics, jobs, job_configs untouched.")
            return
        try:
            report = sql.install(conn, job_key=settings.job_key, force=force, backfill=not no_backfill)
        except sql.SchemaError as exc:
            raise Fail(str(exc)) from None
        version = sql.schema_version(conn)
        if grant_role:
            try:
                sql.grant_listener(conn, grant_role)
            except Exception as exc:
                raise Fail(f"cannot grant to role {grant_role!r}: {logs.redact(str(exc)).strip()}") from None
            click.echo(f"granted role {grant_role!r} what `reactor listen` needs")
    if not report.changed:
        click.echo(f"Schema is up to date (version {version}); nothing to do.")
        return
    for name in report.applied_migrations:
        click.echo(f"applied migration {name}")
    if report.triggers_updated:
        click.echo("installed functions and triggers")
    if report.config_created:
        click.echo(f"created job_configs row {settings.job_key!r} (batch_size 10, run_next_job true)")
    if report.backfilled:
        click.echo(f"enqueued {report.backfilled} existing feedback rows")
    click.echo(f"schema version {version}")


def load_enricher(settings: config_mod.Settings, models: str | None = None) -> Any:
    """The Enricher for `models` (ONNX folder, or `stand-in`), with a clear error for a missing folder."""
    from reactor.enrich import Enricher

    source = models or settings.models
    if source in ("stand-in", "standin"):
        from reactor.nlp.standin import StandInSentiment, StandInZeroShot

        return Enricher(StandInSentiment(), StandInZeroShot(), max_text_bytes=_max_text_bytes())
    try:
        from reactor.nlp.onnx import ModelLoadError, load_models
    except ImportError as exc:
        raise Fail(f"the ONNX runtime models are not available ({exc}); use --models stand-in") from None
    try:
        sentiment, zero_shot = load_models(source, precision=settings.precision, device=settings.device)
    except ModelLoadError as exc:
        raise Fail(str(exc)) from None
    return Enricher(sentiment, zero_shot, max_text_bytes=_max_text_bytes())


def _max_text_bytes() -> int:
    from reactor.enrich import DEFAULT_MAX_TEXT_BYTES

    return int(os.environ.get("REACTOR_MAX_TEXT_BYTES") or DEFAULT_MAX_TEXT_BYTES)


@main.command(context_settings=CONTEXT)
@click.option(
    "--models", default=None, help="ONNX model folder (default: REACTOR_MODELS, else models_onnx), or `stand-in`."
)
@click.option("--max-wait-ms", default=50.0, show_default=True, help="Debounce: wait this long for a full batch.")
@click.option("--poll-interval", default=5.0, show_default=True, help="Seconds between polls when no wake-up comes.")
@click.option(
    "--lease",
    "lease_s",
    default=30.0,
    show_default=True,
    help="Seconds a batch stays leased (extended while it runs); a dead reactor's rows return after it.",
)
@click.option(
    "--grace",
    "grace_s",
    default=30.0,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds to finish the batch in flight before giving it back.",
)
@click.option("--exit-when-idle", is_flag=True, help="Exit once the queue is empty (demos and one-off catch-up).")
@click.option("--no-opensearch", is_flag=True, help="Do not index into OpenSearch even if OPENSEARCH_ENDPOINT is set.")
@click.option(
    "--http",
    "http",
    default=None,
    metavar="HOST:PORT",
    help="Serve /health and /metrics (Prometheus) here, e.g. 127.0.0.1:9187.",
)
def listen(
    models: str | None,
    max_wait_ms: float,
    poll_interval: float,
    lease_s: float,
    grace_s: float,
    exit_when_idle: bool,
    no_opensearch: bool,
    http: str | None,
) -> None:
    """Run the reactor daemon: LISTEN for new feedback, analyse it, write results back."""
    from reactor.worker import Options

    settings = _settings()
    if no_opensearch:
        settings = config_mod.Settings(**{**settings.__dict__, "opensearch_endpoint": None})
    url = _url(settings)
    _connect(url).close()  # fail fast with a readable error on a wrong DATABASE_URL
    enricher = load_enricher(settings, models)
    if enricher.random_weights:
        click.echo(
            "NOTE: these models have RANDOM weights (built locally): their labels are not real analysis.", err=True
        )
    options = Options(
        max_wait_ms=max_wait_ms,
        poll_s=poll_interval,
        lease_s=lease_s,
        grace_s=grace_s,
        exit_when_idle=exit_when_idle,
        http=http,
        retry_base_s=float(os.environ.get("REACTOR_RETRY_BASE_S") or 1.0),
    )
    sys.exit(asyncio.run(_serve(settings, url, enricher, options)))


async def _serve(settings: config_mod.Settings, url: str, enricher: Any, options: Any) -> int:
    from reactor.worker import Reactor

    sink = None
    reactor = Reactor(settings, url, enricher, options)
    if settings.opensearch_enabled:
        from reactor.sinks.opensearch import make_sink

        sink = make_sink(settings, reactor.pool)
        reactor.sink = sink
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, reactor.request_stop, sig.name)
    code = await reactor.run()
    if sink is not None:
        await sink.close()
    return code


def _set_run(run: bool) -> None:
    from reactor.sql import q

    settings = _settings()
    with _connect(_url(settings)) as conn:
        changed = conn.execute(q("set_run_next_job"), {"run": run, "key": settings.job_key}).rowcount
    if not changed:
        raise Fail(f"no job_configs row with key {settings.job_key!r}: run `reactor sql` first")
    click.echo(f"run_next_job = {str(run).lower()} for {settings.job_key!r}")


@main.command(context_settings=CONTEXT)
def stop() -> None:
    """Pause processing (UPDATE job_configs SET run_next_job=false): the batch in flight finishes."""
    _set_run(False)


@main.command(context_settings=CONTEXT)
def resume() -> None:
    """Resume processing (run_next_job=true): the backlog is drained."""
    _set_run(True)


@main.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Show queue, failures, workers, last batch. Exit 1 if a job is incomplete, 0 if none (or no
    connection), 2 on a query error — the original worker's contract."""
    import orjson
    import psycopg

    from reactor.db import DatabaseError, connect, resolve_url
    from reactor.sql import q

    settings = _settings()
    try:
        url = resolve_url(settings.database_url, announce=False)
        conn = connect(url, autocommit=True)
    except (DatabaseError, Exception) as exc:
        click.echo(f"no connection: {logs.redact(str(exc))}", err=True)
        sys.exit(0)
    try:
        with conn:
            row = conn.execute(q("status"), {"key": settings.job_key}).fetchone()
            last = conn.execute(q("last_job"), {"job_name": settings.job_name}).fetchone()
            workers = conn.execute(q("workers")).fetchall()
    except psycopg.Error as exc:
        click.echo(f"status query failed: {logs.redact(str(exc)).strip()}", err=True)
        sys.exit(2)
    assert row is not None
    queue_depth, in_flight, failed, analysed, outbox, outbox_parked, incomplete, cfg = row
    cfg = cfg or {}
    info = {
        "state": "running" if cfg.get("run_next_job", True) not in (False, "false") else "paused",
        "batch_size": cfg.get("batch_size"),
        "queue_depth": queue_depth,
        "in_flight": in_flight,
        "failed_rows": failed,
        "analysed": analysed,
        "outbox_depth": outbox,
        "outbox_parked": outbox_parked,
        "incomplete_jobs": incomplete,
        "last_batch": None
        if not last
        else {
            "job_id": last[0],
            "status": last[1],
            "last_processed_id": last[2],
            "at": last[3].isoformat(),
            "rows": last[4],
            "duration_ms": last[5],
            "error": last[6],
        },
        "workers": [
            {
                "id": w[0],
                "host": w[1],
                "pid": w[2],
                "started_at": w[3].isoformat(),
                "last_seen": w[4].isoformat(),
                "state": w[5],
            }
            for w in workers
        ],
    }
    if as_json:
        click.echo(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(f"state: {info['state']} (batch_size {info['batch_size']})")
        click.echo(
            f"queue: {queue_depth} waiting ({in_flight} leased), {failed} failed, {analysed} analysed, outbox {outbox}"
            + (f" ({outbox_parked} parked: reactor retry-failed --only outbox)" if outbox_parked else "")
        )
        if info["last_batch"]:
            lb = info["last_batch"]
            click.echo(
                f"last batch: job {lb['job_id']} {lb['status']}, {lb['rows']} rows, "
                f"{(lb['duration_ms'] or 0):.1f} ms, last id {lb['last_processed_id']}"
                + (f", error: {lb['error']}" if lb["error"] else "")
            )
        click.echo(f"workers: {len(workers)}")
        for w in info["workers"]:
            click.echo(f"  {w['id']} {w['state']} last seen {w['last_seen']}")
        click.echo(f"incomplete jobs: {incomplete}")
    sys.exit(1 if incomplete else 0)


@main.command("retry-failed", context_settings=CONTEXT)
@click.option(
    "--only",
    type=click.Choice(["queue", "outbox"]),
    default=None,
    help="Only feedback rows parked by the reactor (queue) or only search documents parked by the sink (outbox).",
)
def retry_failed(only: str | None) -> None:
    """Give parked work another go: failed feedback rows back into the queue, and OpenSearch documents
    parked after a permanent error back into the outbox drain (after you fixed the cause)."""
    from reactor.sql import q

    settings = _settings()
    with _connect(_url(settings)) as conn:
        if only != "outbox":
            moved = conn.execute(q("retry_failed")).rowcount
            click.echo(f"requeued {moved} failed rows")
        if only != "queue":
            docs = conn.execute(q("retry_parked_outbox")).rowcount
            click.echo(f"requeued {docs} parked search documents")
        conn.execute("SELECT pg_notify('reactor_work', '')")


@main.command(context_settings=CONTEXT)
@click.option(
    "--stale",
    "mode",
    flag_value="stale",
    default=True,
    help="Rows analysed with another topic set or other models than the current ones (default).",
)
@click.option("--all", "mode", flag_value="all", help="Every analysed row.")
@click.option(
    "--since",
    "since",
    type=click.DateTime(),
    default=None,
    help="Rows analysed before this date/time (e.g. after a fix deployed then).",
)
@click.option("--models", default=None, help="Model folder whose ids count as current (default REACTOR_MODELS).")
@click.option("--chunk", default=5000, show_default=True, help="Rows requeued per transaction.")
@click.option("--dry-run", is_flag=True, help="Only count the rows.")
def reprocess(mode: str, since: Any, models: str | None, chunk: int, dry_run: bool) -> None:
    """Requeue analysed rows for a fresh analysis at low priority (new feedback is always served first)."""
    from tqdm import tqdm

    from reactor.enrich import topic_set_id
    from reactor.sql import q

    if since is not None:
        mode = "since"
    settings = _settings()
    url = _url(settings)
    enricher = load_enricher(settings, models) if mode == "stale" else None
    with _connect(url) as conn:
        labels = [r[0] for r in conn.execute(q("active_topics")).fetchall()]
        params = {
            "mode": mode,
            "since": since,
            "topic_set": topic_set_id(labels),
            "chunk": chunk,
            "after": -1,
            "sentiment_model": enricher.sentiment.model_id if enricher else None,
            "zero_shot_model": enricher.zero_shot.model_id if enricher else None,
        }
        total = conn.execute(q("reprocess_count"), params).fetchone()[0]
        if dry_run or not total:
            click.echo(f"{total} analysed rows match ({mode})")
            return
        queued = 0
        with tqdm(total=total, unit="row", desc="requeue", disable=None) as bar:
            while True:
                last, seen, added = conn.execute(q("reprocess_chunk"), params).fetchone()
                if not seen:
                    break
                conn.execute("SELECT pg_notify('reactor_work', '')")
                queued += added
                params["after"] = last
                bar.update(seen)
    click.echo(f"requeued {queued} of {total} rows ({mode}); rows already waiting were left as they are")


@main.group(context_settings=CONTEXT)
def db() -> None:
    """The embedded PostgreSQL used when DATABASE_URL is unset."""


@db.command("url", context_settings=CONTEXT)
def db_url() -> None:
    """Start the embedded server if needed and print its connection URL."""
    click.echo(_url(_settings()))


@db.command("stop", context_settings=CONTEXT)
def db_stop() -> None:
    """Stop the embedded server."""
    from reactor.db import data_dir, stop_embedded

    click.echo("stopped" if stop_embedded() else f"not running ({data_dir() / 'pgdata'})")


def _register_optional() -> None:
    """Commands whose modules come with optional parts (models export, search sink)."""
    try:
        from reactor.nlp.export_cli import export_models

        main.add_command(export_models, "export-models")
    except ImportError:
        pass
    try:
        from reactor.sinks.reindex import reindex

        main.add_command(reindex, "reindex")
    except ImportError:
        pass


_register_optional()
