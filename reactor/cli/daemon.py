"""`reactor listen`: the daemon. Everything that can be refused is refused before a model loads."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
from typing import Any

import click

from reactor import config as config_mod
from reactor import logs
from reactor.cli.common import CONTEXT, Fail, connect, database_url, load_enricher, settings_from_env
from reactor.db import make_pool
from reactor.listener import Listener
from reactor.observability import HttpAddressError, Metrics, bind_http
from reactor.store import PgStore
from reactor.worker import Options, Reactor, new_worker_id

DEFAULTS = Options()  # the CLI shows and passes the reactor's own defaults, never copies of them
SECONDS = click.FloatRange(min=0.0, max=24 * 3600.0)
log = logging.getLogger("reactor.cli")


@click.command(context_settings=CONTEXT, short_help="Run the daemon: analyse feedback as it is committed.")
@click.option(
    "--models",
    metavar="DIR|stand-in",
    default=None,
    help="ONNX model folder (default: REACTOR_MODELS, else models_onnx), or `stand-in` (fast fake models).",
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(min=0.0, max=60_000.0),
    metavar="MS",
    default=DEFAULTS.max_wait_ms,
    show_default=True,
    help="Debounce: after a wake-up, wait up to this long for a full batch.",
)
@click.option(
    "--poll-interval",
    metavar="SECONDS",
    type=click.FloatRange(min=0.05, max=3600.0),
    default=DEFAULTS.poll_s,
    show_default=True,
    help="Seconds between polls when no wake-up comes (a lost notification costs at most this).",
)
@click.option(
    "--lease",
    "lease_s",
    metavar="SECONDS",
    type=click.FloatRange(min=1.0, max=24 * 3600.0),
    default=DEFAULTS.lease_s,
    show_default=True,
    help="Seconds a batch stays leased (extended while it runs); a dead reactor's rows return after it.",
)
@click.option(
    "--grace",
    "grace_s",
    metavar="SECONDS",
    type=SECONDS,
    default=DEFAULTS.grace_s,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds to finish the batches in flight before giving them back.",
)
@click.option(
    "--batches-in-flight",
    "in_flight",
    metavar="K",
    type=click.IntRange(min=0, max=16),
    default=DEFAULTS.in_flight,
    show_default=True,
    help="Batches in flight at once: while one is on the model, the next is claimed and the previous one "
    "completes, so the model need not wait for PostgreSQL. 1 is the serial loop; 0 (auto): 2 when the models "
    "run on CUDA, 1 on CPU (the model and PostgreSQL share the cores there).",
)
@click.option("--exit-when-idle", is_flag=True, help="Exit once the queue is empty (demos and one-off catch-up).")
@click.option("--no-opensearch", is_flag=True, help="Do not index into OpenSearch even if OPENSEARCH_ENDPOINT is set.")
@click.option(
    "--http",
    "http",
    default=None,
    metavar="HOST:PORT",
    help="Serve /health and /metrics (Prometheus) here, e.g. 127.0.0.1:9187 (port 0: any free port).",
)
def listen(
    models: str | None,
    max_wait_ms: float,
    poll_interval: float,
    lease_s: float,
    grace_s: float,
    in_flight: int,
    exit_when_idle: bool,
    no_opensearch: bool,
    http: str | None,
) -> None:
    """Run the reactor daemon: LISTEN for new feedback, analyse it, write results back.

    Order at start: the --http address is bound, settings are checked, the database is reached, then the
    models load; a problem with any of them stops it with one line. SIGTERM finishes the batches in flight.

    \b
    Example:
      reactor listen --http 127.0.0.1:9187
    """
    http_socket = _bind(http)
    settings = settings_from_env()
    if no_opensearch:
        settings = dataclasses.replace(settings, opensearch_endpoint=None)
    if settings.opensearch_enabled:
        from reactor.sinks.endpoint import EndpointError, parse_endpoint

        try:
            parse_endpoint(settings.opensearch_endpoint)
        except EndpointError as exc:
            raise Fail(str(exc), code=2) from None
    url = database_url(settings)
    connect(url).close()  # fail fast with a readable error on a wrong DATABASE_URL
    enricher = load_enricher(settings, models)
    if enricher.random_weights:
        logs.event(
            log,
            "models.random_weights",
            logging.WARNING,
            note="NOTE: these models have RANDOM weights (built locally): their labels are not real analysis.",
        )
    options = dataclasses.replace(
        DEFAULTS,
        max_wait_ms=max_wait_ms,
        poll_s=poll_interval,
        lease_s=lease_s,
        grace_s=grace_s,
        in_flight=in_flight,
        exit_when_idle=exit_when_idle,
        http=http_socket,
        retry_base_s=DEFAULTS.retry_base_s if settings.retry_base_s is None else settings.retry_base_s,
    )
    reactor = build_reactor(settings, url, enricher, options)
    code = asyncio.run(_serve(reactor))
    if reactor.model_call_running:  # SIGTERM past the grace period: the batches were given back, don't wait
        logs.event(log, "reactor.exit_abandoning_model_call", logging.WARNING, grace_s=options.grace_s)
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


def _bind(address: str | None) -> socket.socket | None:
    if address is None:
        return None
    try:
        return bind_http(address)
    except HttpAddressError as exc:
        raise Fail(str(exc)) from None


def build_reactor(settings: config_mod.Settings, url: str, enricher: Any, options: Options) -> Reactor:
    """Wire the loop to PostgreSQL: the work pool and store, the LISTEN connection (REACTOR_LISTEN_URL when
    DATABASE_URL goes through a transaction pool), the optional search sink."""
    worker_id = new_worker_id()
    pool = make_pool(url, max_size=options.pool_size)
    store = PgStore(
        pool,
        worker_id=worker_id,
        job_key=settings.job_key,
        job_name=settings.job_name,
        outbox=settings.opensearch_enabled,
    )
    metrics = Metrics()
    sink = None
    if settings.opensearch_enabled:
        from reactor.sinks.opensearch import make_sink

        sink = make_sink(settings, pool, metrics=metrics)
    listener = Listener(settings.listen_url or url, keepalive_s=options.keepalive_s)
    return Reactor(
        store,
        listener,
        enricher,
        worker_id=worker_id,
        job_key=settings.job_key,
        options=options,
        sink=sink,
        metrics=metrics,
    )


async def _serve(reactor: Reactor) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, reactor.request_stop, sig.name)
    code = await reactor.run()
    if reactor.sink is not None:
        await reactor.sink.close()
    return code
