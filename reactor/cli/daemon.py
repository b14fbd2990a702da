"""`reactor listen`: the daemon."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import click

from reactor import config as config_mod
from reactor.cli.common import CONTEXT, connect, database_url, load_enricher, settings_from_env


@click.command(context_settings=CONTEXT)
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

    settings = settings_from_env()
    if no_opensearch:
        settings = config_mod.Settings(**{**settings.__dict__, "opensearch_endpoint": None})
    url = database_url(settings)
    connect(url).close()  # fail fast with a readable error on a wrong DATABASE_URL
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
