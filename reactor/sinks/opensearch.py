"""OpenSearch sink: drains `reactor.outbox` into the search indices, at least once, never losing a change.

Why this shape:
- The outbox row is committed with the analysis, so no change can be missed; the sink only has to drain it.
- Documents are built from CURRENT Postgres state at drain time (a missing row means delete), so a resend is
  always safe and a stale outbox action can never resurrect or lose a document.
- A row is deleted only by the id that was read; a change committed meanwhile bumped the id, so it stays and
  is sent again.
- One drain at a time across all processes (a transaction-level advisory lock): two drainers could otherwise
  send an older state after a newer one and delete both outbox rows, leaving a stale document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError

from reactor import backoff, logs

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    from reactor.config import Settings

log = logging.getLogger(__name__)

FEEDBACK_INDEX = "feedback-analysis"
WORD_INDEX = "wordcount-analysis"
SCHEMA_VERSION = 1  # stored in each index's mapping `_meta`; a mismatch means `reactor reindex`
DRAIN_LOCK_KEY = 0x5EAC7042  # pg advisory lock: one drainer (sink or reindex) at a time
MAX_ID_BYTES = 512  # OpenSearch's _id limit

# Item errors that no retry can fix: the document itself is wrong for the mapping.
PERMANENT_ERRORS = frozenset(
    {
        "mapper_parsing_exception",
        "strict_dynamic_mapping_exception",
        "illegal_argument_exception",
        "document_parsing_exception",
        "parse_exception",
        "json_parse_exception",
        "x_content_parse_exception",
        "action_request_validation_exception",
    }
)
# Whole-request statuses that mean "the cluster is busy or away": back off, touch no rows.
UNAVAILABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_KEYWORD = {"type": "keyword", "ignore_above": 1024}

FEEDBACK_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "_meta": {"reactor_schema": SCHEMA_VERSION},
    "properties": {
        "feedback_id": {"type": "long"},
        "text": {"type": "text"},
        "product_name": _KEYWORD,
        "sender": _KEYWORD,
        "created_at": {"type": "date"},
        "updated_at": {"type": "date"},
        "sentiment": {
            "properties": {"label": {"type": "keyword"}, "score": {"type": "float"}},
        },
        "topics": {
            "type": "nested",
            "properties": {"label": {"type": "keyword"}, "score": {"type": "float"}},
        },
        "topic_labels": {"type": "keyword"},  # flat copy for simple terms aggregations
        "word_total": {"type": "integer"},
        "analyzed_at": {"type": "date"},
        "models": {
            "properties": {"sentiment": {"type": "keyword"}, "zero_shot": {"type": "keyword"}},
        },
        "topic_set": {"type": "keyword"},
    },
}
WORD_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "_meta": {"reactor_schema": SCHEMA_VERSION},
    "properties": {"word": {"type": "keyword"}, "count": {"type": "long"}},
}
INDEX_SETTINGS: dict[str, Any] = {"index": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"}}


def index_body(kind: str) -> dict[str, Any]:
    """Create-index body (settings + explicit strict mapping) for 'feedback' or 'word'."""
    return {"settings": INDEX_SETTINGS, "mappings": FEEDBACK_MAPPING if kind == "feedback" else WORD_MAPPING}


@dataclass
class DrainResult:
    """What one drain did; `fetched == limit` means there is probably more to do right away."""

    fetched: int = 0
    indexed: int = 0
    deleted: int = 0
    retried: int = 0
    parked: int = 0
    superseded: int = 0  # confirmed, but a newer change bumped the row meanwhile: it stays for the next drain
    locked: bool = False  # another drainer holds the lock
    unavailable: str | None = None  # OpenSearch unreachable/busy: rows untouched, back off
    elapsed_s: float = 0.0

    @property
    def done(self) -> int:
        return self.indexed + self.deleted


@dataclass
class _Op:
    outbox_id: int
    kind: str  # 'feedback' | 'word'
    doc_id: str
    attempts: int
    action: str = "delete"  # decided from current state
    source: bytes | None = None
    error: str | None = None  # set before sending → parked without sending


@dataclass
class _Outcome:
    confirmed: list[int] = field(default_factory=list)
    retry: list[tuple[int, int, str]] = field(default_factory=list)  # (outbox id, attempts, error)
    park: list[tuple[int, str]] = field(default_factory=list)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def feedback_doc(row: dict[str, Any]) -> dict[str, Any]:
    """The feedback-analysis document for one feedback_analysis ⋈ feedbacks row."""
    topics = row.get("topics") or []
    labels = [t.get("label") for t in topics if isinstance(t, dict) and t.get("label") is not None]
    counts = row.get("word_counts") or {}
    total = sum(v for v in counts.values() if isinstance(v, int)) if isinstance(counts, dict) else 0
    return {
        "feedback_id": row["feedback_id"],
        "text": row.get("text"),
        "product_name": row.get("product_name"),
        "sender": row.get("sender"),
        "created_at": _iso(row.get("created_at")),
        "updated_at": _iso(row.get("updated_at")),
        "sentiment": {"label": row.get("sentiment_label"), "score": row.get("sentiment_score")},
        "topics": topics,
        "topic_labels": labels,
        "word_total": total,
        "analyzed_at": _iso(row.get("analyzed_at")),
        "models": {"sentiment": row.get("sentiment_model"), "zero_shot": row.get("zero_shot_model")},
        "topic_set": row.get("topic_set"),
    }


FEEDBACK_SQL = """
SELECT fa.feedback_id, fa.sentiment_label, fa.sentiment_score, fa.topics, fa.word_counts, fa.sentiment_model,
       fa.zero_shot_model, fa.topic_set, fa.analyzed_at, f.text, f.product_name, f.sender, f.created_at, f.updated_at
FROM reactor.feedback_analysis fa JOIN public.feedbacks f ON f.id = fa.feedback_id
"""


async def fetch_feedback_docs(conn: AsyncConnection[Any], ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    from psycopg.rows import dict_row

    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(FEEDBACK_SQL + " WHERE fa.feedback_id = ANY(%s)", (list(ids),))
        return {row["feedback_id"]: feedback_doc(row) async for row in cur}


async def fetch_word_counts(conn: AsyncConnection[Any], words: Sequence[str]) -> dict[str, int]:
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT word, count FROM reactor.word_counts WHERE word = ANY(%s) AND count > 0", (list(words),)
        )
        return {word: count async for word, count in cur}


def make_client(settings: Settings, *, timeout: float = 30.0, max_retries: int = 0) -> AsyncOpenSearch:
    """AsyncOpenSearch from Settings: basic auth, TLS verification options, or SigV4 when a region is set."""
    endpoint = settings.opensearch_endpoint
    if not endpoint:
        raise ValueError("OPENSEARCH_ENDPOINT is not set")
    if "://" not in endpoint:  # the original worker's bare host name: an AWS domain on 443
        endpoint = f"https://{endpoint}"
    parts = urlsplit(endpoint)
    use_ssl = parts.scheme == "https"
    host: dict[str, Any] = {"host": parts.hostname, "port": parts.port or (443 if use_ssl else 9200)}
    if parts.path and parts.path != "/":
        host["url_prefix"] = parts.path
    kwargs: dict[str, Any] = {
        "hosts": [host],
        "use_ssl": use_ssl,
        "verify_certs": settings.opensearch_verify_certs,
        "ssl_show_warn": False,
        "timeout": timeout,
        "max_retries": max_retries,
        "retry_on_timeout": max_retries > 0,
    }
    if use_ssl and settings.opensearch_ca_certs:
        kwargs["ca_certs"] = settings.opensearch_ca_certs
    if settings.opensearch_aws_region:
        import boto3
        from opensearchpy import AsyncHttpConnection, AWSV4SignerAsyncAuth

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise ValueError("OPENSEARCH_AWS_REGION is set but boto3 found no AWS credentials")
        service = str(settings.extra.get("opensearch_aws_service") or os.environ.get("OPENSEARCH_AWS_SERVICE", "es"))
        kwargs["http_auth"] = AWSV4SignerAsyncAuth(credentials, settings.opensearch_aws_region, service)
        kwargs["connection_class"] = AsyncHttpConnection  # the default aiohttp class cannot take a signer
    elif settings.opensearch_user:
        kwargs["http_auth"] = (settings.opensearch_user, settings.opensearch_pass or "")
    elif parts.username:
        kwargs["http_auth"] = (parts.username, parts.password or "")
    return AsyncOpenSearch(**kwargs)


def describe_error(exc: BaseException) -> str:
    """Short, secret-free text for logs and last_error."""
    if isinstance(exc, TransportError):
        info = exc.info if isinstance(exc.info, dict) else {}
        err = info.get("error") if isinstance(info, dict) else None
        reason = err.get("reason") if isinstance(err, dict) else (err or exc.error)
        return logs.redact(f"{type(exc).__name__}({exc.status_code}): {reason}")[:500]
    return logs.redact(f"{type(exc).__name__}: {exc}")[:500]


def is_unavailable(exc: BaseException) -> bool:
    """True when the whole cluster is away or busy (retry later, don't blame the rows)."""
    if isinstance(exc, OSConnectionError | asyncio.TimeoutError | OSError):
        return True
    return isinstance(exc, TransportError) and (exc.status_code in UNAVAILABLE_STATUSES or exc.status_code == "N/A")


def chunk_lines(lines: Iterable[tuple[_Op, bytes]], max_docs: int, max_bytes: int) -> Iterator[list[tuple[_Op, bytes]]]:
    """Split bulk action lines into requests of at most max_docs items and about max_bytes bytes."""
    chunk: list[tuple[_Op, bytes]] = []
    size = 0
    for op, payload in lines:
        if chunk and (len(chunk) >= max_docs or size + len(payload) > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((op, payload))
        size += len(payload)
    if chunk:
        yield chunk


class OpenSearchSink:
    """Outbox → OpenSearch. Start `run(stop)` as a task; call `wake()` after committing outbox rows."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[Any],
        *,
        feedback_index: str | None = None,
        word_index: str | None = None,
        client: AsyncOpenSearch | None = None,
        batch_size: int = 2000,
        bulk_max_docs: int = 500,
        bulk_max_bytes: int = 5 * 1024 * 1024,
        poll_interval: float = 1.0,
        max_outage_backoff: float = 10.0,
        retry_base: float = 1.0,
        retry_cap: float = 300.0,
        timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.indices = {
            "feedback": feedback_index or os.environ.get("OPENSEARCH_FEEDBACK_INDEX") or FEEDBACK_INDEX,
            "word": word_index or os.environ.get("OPENSEARCH_WORD_INDEX") or WORD_INDEX,
        }
        self.client = client or make_client(settings, timeout=timeout)
        self.batch_size = batch_size
        self.bulk_max_docs = bulk_max_docs
        self.bulk_max_bytes = bulk_max_bytes
        self.poll_interval = poll_interval
        self.max_outage_backoff = max_outage_backoff
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._indices_ready = False
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    # -- indices ---------------------------------------------------------------------------------------------

    async def ensure_indices(self) -> None:
        """Create each index (or alias target) with the explicit mapping when it does not exist yet."""
        for kind, name in self.indices.items():
            if await self.client.indices.exists(index=name):
                await self._check_schema(kind, name)
                continue
            try:
                await self.client.indices.create(index=name, body=index_body(kind))
                logs.event(log, "opensearch.index_created", index=name)
            except TransportError as exc:
                if exc.error != "resource_already_exists_exception":  # a concurrent starter won
                    raise
        self._indices_ready = True

    async def _check_schema(self, kind: str, name: str) -> None:
        with contextlib.suppress(Exception):
            mappings = await self.client.indices.get_mapping(index=name)
            for concrete, body in mappings.items():
                meta = (body.get("mappings") or {}).get("_meta") or {}
                if meta.get("reactor_schema") != SCHEMA_VERSION:
                    logs.event(
                        log,
                        "opensearch.mapping_outdated",
                        logging.WARNING,
                        index=concrete,
                        kind=kind,
                        hint="run `reactor reindex` to rebuild it with the current mapping",
                    )

    # -- draining --------------------------------------------------------------------------------------------

    async def drain_once(self, limit: int | None = None) -> DrainResult:
        """Send up to `limit` ready outbox rows; confirmed ones are deleted, failed ones retried or parked.

        Raises only on Postgres errors; an unreachable/busy OpenSearch is reported in `result.unavailable`.
        """
        limit = limit or self.batch_size
        started = time.perf_counter()
        result = DrainResult()
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (DRAIN_LOCK_KEY,))
            row = await cur.fetchone()
            if not row or not row[0]:
                result.locked = True
                return result
            cur = await conn.execute(
                "SELECT id, index_kind, doc_id, attempts FROM reactor.outbox"
                " WHERE parked_at IS NULL AND not_before <= now() ORDER BY id LIMIT %s",
                (limit,),
            )
            ops = [_Op(outbox_id=i, kind=k, doc_id=d, attempts=a) for i, k, d, a in await cur.fetchall()]
            result.fetched = len(ops)
            if not ops:
                return result
            await self._build(conn, ops)
            outcome = _Outcome()
            for op in ops:
                if op.error is not None:
                    outcome.park.append((op.outbox_id, op.error))
            sendable = [(op, self._action_lines(op)) for op in ops if op.error is None]
            for chunk in chunk_lines(sendable, self.bulk_max_docs, self.bulk_max_bytes):
                try:
                    await self._send(chunk, outcome, result)
                except Exception as exc:
                    if not is_unavailable(exc):
                        # The request as a whole was refused (not the cluster being away): blame its rows.
                        msg = describe_error(exc)
                        outcome.retry.extend((op.outbox_id, op.attempts, msg) for op, _ in chunk)
                        logs.event(log, "opensearch.bulk_failed", logging.WARNING, error=msg, items=len(chunk))
                        continue
                    result.unavailable = describe_error(exc)
                    break  # leave the rest untouched; the caller backs off
            await self._settle(conn, outcome, result)
        result.elapsed_s = time.perf_counter() - started
        if result.fetched:
            logs.event(
                log,
                "opensearch.drained",
                fetched=result.fetched,
                indexed=result.indexed,
                deleted=result.deleted,
                retried=result.retried,
                parked=result.parked,
                superseded=result.superseded,
                unavailable=result.unavailable,
                ms=round(result.elapsed_s * 1000, 1),
            )
        return result

    async def _build(self, conn: AsyncConnection[Any], ops: list[_Op]) -> None:
        """Decide each op's action and document from current Postgres state."""
        fb_ids: list[int] = []
        for op in ops:
            if op.kind == "feedback":
                try:
                    fb_ids.append(int(op.doc_id))
                except ValueError:
                    op.error = f"invalid feedback doc_id {op.doc_id!r}"
            elif len(op.doc_id.encode()) > MAX_ID_BYTES:
                op.error = f"word longer than OpenSearch's {MAX_ID_BYTES}-byte _id limit"
        words = [op.doc_id for op in ops if op.kind == "word" and op.error is None]
        docs = await fetch_feedback_docs(conn, fb_ids) if fb_ids else {}
        counts = await fetch_word_counts(conn, words) if words else {}
        for op in ops:
            if op.error is not None:
                continue
            if op.kind == "feedback":
                doc = docs.get(int(op.doc_id))
                if doc is not None:
                    op.action, op.source = "index", orjson.dumps(doc)
            elif op.doc_id in counts:
                op.action, op.source = "index", orjson.dumps({"word": op.doc_id, "count": counts[op.doc_id]})

    def _action_lines(self, op: _Op) -> bytes:
        meta = orjson.dumps({op.action: {"_index": self.indices[op.kind], "_id": op.doc_id}})
        return meta + b"\n" + op.source + b"\n" if op.source is not None else meta + b"\n"

    async def _send(self, chunk: list[tuple[_Op, bytes]], outcome: _Outcome, result: DrainResult) -> None:
        body = b"".join(payload for _, payload in chunk)
        resp = await self.client.bulk(body=body, params={"filter_path": "errors,items.*.status,items.*.error"})
        items = resp.get("items") or []
        if not resp.get("errors") and len(items) in (0, len(chunk)):
            for op, _ in chunk:
                outcome.confirmed.append(op.outbox_id)
                result.indexed += op.action == "index"
                result.deleted += op.action == "delete"
            return
        if len(items) != len(chunk):
            raise TransportError(500, "bulk_mismatch", f"{len(items)} items for {len(chunk)} actions")
        for (op, _), item in zip(chunk, items, strict=True):
            info = next(iter(item.values()))
            status = int(info.get("status", 500))
            error = info.get("error")
            if status < 300 or (op.action == "delete" and status == 404):
                outcome.confirmed.append(op.outbox_id)
                result.indexed += op.action == "index"
                result.deleted += op.action == "delete"
                continue
            etype = error.get("type") if isinstance(error, dict) else str(error)
            reason = error.get("reason") if isinstance(error, dict) else None
            msg = f"{status} {etype}: {reason}"[:1000]
            if etype == "index_not_found_exception":
                self._indices_ready = False  # someone removed it: recreate before the retry
            if status == 400 or (etype in PERMANENT_ERRORS and status not in UNAVAILABLE_STATUSES):
                outcome.park.append((op.outbox_id, msg))
                logs.event(log, "opensearch.item_parked", logging.WARNING, kind=op.kind, doc_id=op.doc_id, error=msg)
            else:
                outcome.retry.append((op.outbox_id, op.attempts, msg))

    async def _settle(self, conn: AsyncConnection[Any], outcome: _Outcome, result: DrainResult) -> None:
        """Record the outcome; every statement matches the id that was read, so bumped rows are left alone."""
        if outcome.confirmed:
            cur = await conn.execute("DELETE FROM reactor.outbox WHERE id = ANY(%s)", (outcome.confirmed,))
            result.superseded = len(outcome.confirmed) - cur.rowcount
        if outcome.retry:
            ids = [i for i, _, _ in outcome.retry]
            delays = [backoff.delay(a + 1, base=self.retry_base, cap=self.retry_cap) for _, a, _ in outcome.retry]
            errors = [e for _, _, e in outcome.retry]
            await conn.execute(
                "UPDATE reactor.outbox o SET attempts = o.attempts + 1, last_error = v.err,"
                " not_before = now() + make_interval(secs => v.delay)"
                " FROM unnest(%s::bigint[], %s::float8[], %s::text[]) AS v(id, delay, err) WHERE o.id = v.id",
                (ids, delays, errors),
            )
            result.retried = len(ids)
        if outcome.park:
            await conn.execute(
                "UPDATE reactor.outbox o SET attempts = o.attempts + 1, last_error = v.err, parked_at = now()"
                " FROM unnest(%s::bigint[], %s::text[]) AS v(id, err) WHERE o.id = v.id",
                ([i for i, _ in outcome.park], [e for _, e in outcome.park]),
            )
            result.parked = len(outcome.park)

    # -- daemon loop -----------------------------------------------------------------------------------------

    def wake(self) -> None:
        """Ask the loop to drain now (safe from any thread); the listener calls it after a commit."""
        loop = self._loop
        if loop is None or self._thread == threading.get_ident():
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._wake.set)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Wait for stop, wake() or the timeout, whichever comes first."""
        if stop.is_set():
            return
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        self._wake.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until `stop` is set. Never raises for OpenSearch or Postgres trouble: logs and backs off."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        outage = 0.0
        logs.event(log, "opensearch.sink_started", indices=self.indices)
        while not stop.is_set():
            try:
                if not self._indices_ready:
                    await self.ensure_indices()
                self._wake.clear()
                res = await self.drain_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outage = min(self.max_outage_backoff, max(0.5, outage * 2))
                unavailable = is_unavailable(exc)
                logs.event(
                    log,
                    "opensearch.unavailable" if unavailable else "opensearch.drain_error",
                    logging.WARNING,
                    error=describe_error(exc),
                    retry_in_s=round(outage, 2),
                )
                await self._sleep(stop, outage)
                continue
            if res.unavailable:
                outage = min(self.max_outage_backoff, max(0.5, outage * 2))
                logs.event(
                    log, "opensearch.unavailable", logging.WARNING, error=res.unavailable, retry_in_s=round(outage, 2)
                )
                await self._sleep(stop, outage * (0.75 + random.random() / 2))
                continue
            if outage:
                logs.event(log, "opensearch.recovered")
                outage = 0.0
            if res.fetched >= self.batch_size:
                continue  # more is probably waiting
            await self._sleep(stop, self.poll_interval)
        logs.event(log, "opensearch.sink_stopped")

    async def close(self) -> None:
        await self.client.close()


def make_sink(settings: Settings, pool: AsyncConnectionPool[Any], **kwargs: Any) -> OpenSearchSink | None:
    """The sink when OPENSEARCH_ENDPOINT is configured, else None (indexing is optional)."""
    if not settings.opensearch_enabled:
        return None
    return OpenSearchSink(settings, pool, **kwargs)
