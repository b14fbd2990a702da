"""`/health` and `/metrics` for `reactor listen --http HOST:PORT` (Prometheus text format).

A tiny asyncio HTTP server (two GET routes) keeps the daemon free of a web framework. Health is 200
`{"status": "UP"}` (the original service's shape) when the database answers, the LISTEN connection is up
and the queue is not stalled; otherwise 503 with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from reactor import logs

log = logging.getLogger("reactor.http")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """One registry per reactor process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("reactor_queue_depth", "Rows waiting in reactor.queue", registry=r)
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


Health = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


async def serve(host: str, port: int, metrics: Metrics, health: Health, stop: asyncio.Event) -> None:
    """Serve until `stop` is set."""

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

    server = await asyncio.start_server(handle, host, port)
    logs.event(log, "http.listening", address=f"http://{host}:{port}", routes=["/health", "/metrics"])
    async with server:
        await stop.wait()


def parse_address(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `PORT` → (host, port); defaults to 127.0.0.1."""
    host, _, port = value.rpartition(":")
    return (host or "127.0.0.1"), int(port)


def age_s(since: float | None) -> float | None:
    return None if since is None else round(time.monotonic() - since, 1)
