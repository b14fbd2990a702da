"""`/health` and `/metrics` for `reactor listen --http HOST:PORT` (Prometheus text format).

A tiny asyncio HTTP server (two GET routes) keeps the daemon free of a web framework. Health is 200
`{"status": "UP"}` (the original service's shape) when the database answers, the LISTEN connection is up
and the queue is not stalled; otherwise 503 with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from reactor import logs

if TYPE_CHECKING:
    from reactor.batch import Claim, Outcome
    from reactor.enrich import Enricher, Timings

log = logging.getLogger("reactor.http")
batch_log = logging.getLogger("reactor.worker")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """One registry per reactor process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            "reactor_queue_depth", "Feedback changes waiting (reactor.queue and reactor.inbox)", registry=r
        )
        self.failed_rows = Gauge("reactor_failed_rows", "Rows parked in reactor.failed", registry=r)
        self.outbox_depth = Gauge("reactor_outbox_depth", "Search documents waiting in the outbox", registry=r)
        self.paused = Gauge("reactor_paused", "1 while job_configs.run_next_job is false", registry=r)
        self.notify_queue = Gauge("reactor_notification_queue_usage", "pg_notification_queue_usage()", registry=r)
        self.batches = Counter("reactor_batches_total", "Completed batches", registry=r)
        self.rows = Counter("reactor_rows_total", "Queue rows handled", ["outcome"], registry=r)
        self.failures = Counter("reactor_failures_total", "Failures by kind", ["kind"], registry=r)
        self.latency = Histogram(
            "reactor_insert_to_commit_seconds",
            "Feedback enqueue to analysis commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "reactor_inference_seconds", "Model time per batch", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "reactor_batch_seconds", "Claim to commit per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.topics_skipped = Gauge(
            "reactor_topics_skipped", "Active topic labels the zero-shot model cannot score (left out)", registry=r
        )
        self.wakeups = Counter(
            "reactor_wakeups_total",
            "Wake-ups that found work, by what found it: notify, handoff (the look right after arming), kick "
            "(start, resume, reconnect); recheck and poll mean a notification was missed",
            ["by"],
            registry=r,
        )
        self.search_documents = Counter(
            "reactor_search_documents_total", "Outbox rows the search sink handled, by outcome", ["outcome"], registry=r
        )
        self.search_rebuilds = Counter(
            "reactor_search_index_rebuilds_total",
            "Search indices rebuilt from PostgreSQL (missing, auto-created by OpenSearch, or the old layout)",
            ["kind", "reason"],
            registry=r,
        )
        self.search_backoff = Gauge(
            "reactor_search_backoff_seconds", "Current pause of the search endpoint (0: none)", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


NOTIFICATIONS = {True: "ok", False: "not delivered: polling", None: "unknown"}  # what the start-up probe found


def judge_health(
    *,
    database_problem: str | None,
    listening: bool,
    state: str,
    waited_s: float | None,
    last_batch_at: float | None,
    stall_s: float,
    info: dict[str, Any],
) -> tuple[bool, dict[str, Any]]:
    """/health's verdict: DOWN with the first reason found (database, LISTEN connection, a stalled queue)."""
    body: dict[str, Any] = {
        **info,
        "state": state,
        "queue_wait_s": waited_s,
        "last_batch_s_ago": age_s(last_batch_at),
        "notifications": NOTIFICATIONS.get(info.get("notifications"), info.get("notifications")),
    }
    reason = database_problem
    if reason is None and not listening:
        reason = "LISTEN connection is down (reconnecting)"
    waited = waited_s or 0
    idle_for = None if last_batch_at is None else time.monotonic() - last_batch_at
    if reason is None and state == "running" and waited > stall_s and (idle_for is None or idle_for > stall_s):
        reason = f"stalled: ready rows have waited {waited:.0f}s with no batch completed"
    if reason:
        return False, {"status": "DOWN", "reason": reason, **body}
    return True, {"status": "UP", **body}


OUTCOMES = ("analysed", "deleted", "reindexed", "retried", "parked", "stale")


def report_batch(
    metrics: Metrics,
    claim: Claim,
    out: Outcome,
    phases: tuple[float, float, float],
    enricher: Enricher,
    timings: Timings | None = None,
) -> None:
    """Metrics and the log line of one completed batch; rows that failed get a WARNING with their errors.
    `timings`: this batch's model times (default: the enricher's last call's, right only when serial)."""
    now = time.time()
    lat = [now - t.timestamp() for t in claim.enqueued_at.values()]
    timings = timings or enricher.last_timings
    metrics.batches.inc()
    metrics.batch_seconds.observe(sum(phases))
    for outcome in OUTCOMES:
        if getattr(out, outcome):
            metrics.rows.labels(outcome).inc(getattr(out, outcome))
    if out.retried:
        metrics.failures.labels("enrichment").inc(out.retried)
    if out.parked:
        metrics.failures.labels("parked").inc(out.parked)
    for seconds in lat:
        metrics.latency.observe(seconds)
    metrics.inference.labels(enricher.sentiment.model_id).observe(timings.sentiment_s)
    metrics.inference.labels(enricher.zero_shot.model_id).observe(timings.zero_shot_s)
    if out.retried or out.parked:
        logs.event(
            batch_log,
            "batch.rows_failed",
            logging.WARNING,
            job_id=claim.job_id,
            retried=out.retried,
            parked=out.parked,
            errors=out.errors,
            hint="parked rows: `reactor failed`, then `reactor retry-failed` once fixed" if out.parked else None,
        )
    logs.event(
        batch_log,
        "batch.completed",
        job_id=claim.job_id,
        rows=claim.size,
        analysed=out.analysed,
        deleted=out.deleted,
        reindexed=out.reindexed,
        retried=out.retried,
        parked=out.parked,
        stale=out.stale,
        words_changed=out.words_changed,
        claim_ms=round(phases[0] * 1000, 2),
        enrich_ms=round(phases[1] * 1000, 2),
        complete_ms=round(phases[2] * 1000, 2),
        sentiment_ms=round(timings.sentiment_s * 1000, 2),
        zero_shot_ms=round(timings.zero_shot_s * 1000, 2),
        latency_max_ms=round(max(lat) * 1000, 1) if lat else None,
        max_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        disk_free_mb=round(shutil.disk_usage(".").free / 2**20),
    )


Health = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


class HttpAddressError(Exception):
    """An `--http` address that cannot be served; the message is one line naming the address."""


def parse_address(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT`, `PORT` or `[IPv6]:PORT` → (host, port); the host defaults to 127.0.0.1."""
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if not sep and text.isdigit():
        host, port = "", text
    elif not sep or not port:
        raise HttpAddressError(f"--http {value!r}: give HOST:PORT, e.g. 127.0.0.1:9187 (port 0: any free port)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise HttpAddressError(f"--http {value!r}: the port must be a number from 0 to 65535")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def bind_http(value: str) -> socket.socket:
    """Parse and bind `--http` at once, so a wrong address or a port in use stops the daemon at start."""
    host, port = parse_address(value)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise HttpAddressError(f"--http {value!r}: unknown host {host!r} ({exc.strerror or exc})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise HttpAddressError(f"--http {value!r}: cannot listen there: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def http_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(sock: socket.socket, metrics: Metrics, health: Health, stop: asyncio.Event) -> None:
    """Serve on the socket `bind_http` bound until `stop` is set."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"only GET\n"
            elif path == "/metrics":
                status, ctype, body = 200, CONTENT_TYPE_LATEST, metrics.render()
            elif path in ("/health", "/healthz", "/"):
                ok, info = await health()
                status, ctype, body = (200 if ok else 503), "application/json", orjson.dumps(info)
            else:
                status, ctype, body = 404, "text/plain", b"not found\n"
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
            head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            writer.write((head + "Connection: close\r\n\r\n").encode() + (body if parts[0] != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, sock=sock)
    logs.event(log, "http.listening", address=http_url(sock), routes=["/health", "/metrics"])
    async with server:
        await stop.wait()


def age_s(since: float | None) -> float | None:
    return None if since is None else round(time.monotonic() - since, 1)
