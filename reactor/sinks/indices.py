"""Index lifecycle: every index name is an alias the reactor owns, rebuilt from PostgreSQL when it must be.

Layout: `feedback-analysis` and `wordcount-analysis` are ALIASES to concrete `<alias>-<UTC timestamp>` indices.
The sink writes with `require_alias=true`, so a deleted index makes its writes fail instead of letting
OpenSearch auto-create a dynamically mapped index under the alias's name (its default, and Amazon OpenSearch
Service's). `rebuild` is the one way an index is (re)made, used by `reactor reindex` and by the sink when an
index is missing, auto-created by someone else, or a concrete index of the old layout: it fills a new concrete
index from one PostgreSQL snapshot, then moves the alias in one atomic call.

Why the rebuild holds the drain lock from BEFORE its snapshot: drains are paused meanwhile (the outbox just
grows), and every change the snapshot does not hold still has its outbox row, which the sink sends through the
alias into the new index afterwards. A lock taken after the snapshot would let a drain that committed in
between delete outbox rows whose newer state the new index never gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import TransportError

from reactor import backoff, logs
from reactor.sinks.client import describe_error, is_unavailable, item_error
from reactor.sinks.documents import SCHEMA_VERSION, index_body, iter_docs
from reactor.sql import q

if TYPE_CHECKING:
    from reactor.observability import Metrics

log = logging.getLogger("reactor.sinks.opensearch")

DRAIN_LOCK_KEY = 0x5EAC7042  # pg advisory lock: one drainer (sink drain or rebuild) at a time
FETCH_ROWS = 2000


@dataclass
class IndexState:
    """What stands behind one alias name."""

    alias: str
    concrete: list[str]  # the indices the name resolves to
    schemas: dict[str, int | None]  # `_meta.reactor_schema` of each (None: not made by the reactor)

    @property
    def is_alias(self) -> bool:
        return self.alias not in self.concrete


async def inspect(client: AsyncOpenSearch, alias: str) -> IndexState | None:
    """The state behind `alias`, or None when neither an alias nor an index has that name."""
    mappings = await client.indices.get_mapping(index=alias, ignore_unavailable=True)  # missing: {} (no 404 log)
    if not mappings:
        return None
    schemas = {
        name: ((body.get("mappings") or {}).get("_meta") or {}).get("reactor_schema") for name, body in mappings.items()
    }
    return IndexState(alias=alias, concrete=sorted(mappings), schemas=schemas)


def rebuild_reason(state: IndexState | None) -> str | None:
    """Why the index must be rebuilt from PostgreSQL, or None when it is usable as it is."""
    if state is None:
        return "missing"
    if state.is_alias:
        return None
    return "legacy" if state.schemas.get(state.alias) is not None else "auto_created"


async def upgrade_mapping(client: AsyncOpenSearch, kind: str, state: IndexState) -> str:
    """Bring an older reactor mapping up to date in place when the change only adds fields.

    Returns 'current', 'upgraded', 'outdated' (needs `reactor reindex`), 'newer' or 'foreign'.
    """
    verdict = "current"
    for name, schema in state.schemas.items():
        if schema is None:
            verdict = "foreign"
        elif schema > SCHEMA_VERSION:
            verdict = "newer"
        elif schema < SCHEMA_VERSION:
            try:
                await client.indices.put_mapping(index=name, body=index_body(kind)["mappings"])
                verdict = "upgraded" if verdict == "current" else verdict
            except TransportError as exc:
                if is_unavailable(exc):
                    raise
                logs.event(
                    log, "opensearch.mapping_upgrade_refused", logging.WARNING, index=name, error=describe_error(exc)
                )
                verdict = "outdated"
    return verdict


@dataclass
class Rebuilt:
    """One rebuilt index."""

    alias: str
    index: str
    docs: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (doc id, error): queued in the outbox
    old: list[str] = field(default_factory=list)
    reason: str | None = None


Needed = Callable[[str, str], Awaitable[str | None]]  # (kind, alias) → reason to rebuild, or None


async def rebuild(
    conninfo: str,
    client: AsyncOpenSearch,
    targets: dict[str, str],
    *,
    wait: bool = True,
    needed: Needed | None = None,
    keep_old: bool = False,
    bulk_docs: int = 1000,
    progress: Callable[[str, int], Any] | None = None,
) -> dict[str, Rebuilt] | None:
    """Rebuild the indices of `targets` ({kind: alias}) from one snapshot and swap their aliases.

    `wait=False` gives up (returns None) when another drainer holds the lock. `needed`, when given, is asked
    again under the lock which targets still need it (another process may have fixed them meanwhile).
    `progress(kind, docs)` is called after each batch. Documents that cannot be built or are refused are
    queued in the outbox (where the sink parks them with their error).
    """
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        lock = q("drain_lock_session" if wait else "drain_try_lock_session")
        row = await (await conn.execute(lock, {"key": DRAIN_LOCK_KEY})).fetchone()
        if not wait and not (row and row[0]):
            return None
        try:
            return await _rebuild_locked(conn, client, targets, needed, keep_old, bulk_docs, progress)
        finally:  # unlock explicitly: a closed connection's lock lingers until its backend has exited
            with contextlib.suppress(psycopg.Error):
                await conn.execute(q("drain_unlock_session"), {"key": DRAIN_LOCK_KEY})


async def _rebuild_locked(
    conn: psycopg.AsyncConnection[Any],
    client: AsyncOpenSearch,
    targets: dict[str, str],
    needed: Needed | None,
    keep_old: bool,
    bulk_docs: int,
    progress: Callable[[str, int], Any] | None,
) -> dict[str, Rebuilt]:
    reasons: dict[str, str | None] = {}
    if needed is not None:
        reasons = {kind: await needed(kind, alias) for kind, alias in targets.items()}
        targets = {kind: alias for kind, alias in targets.items() if reasons[kind]}
    suffix = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    done: dict[str, Rebuilt] = {}
    await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
    async with conn.transaction():  # one snapshot for every index
        for kind, alias in targets.items():
            done[kind] = await _rebuild_one(conn, client, kind, alias, f"{alias}-{suffix}", bulk_docs, progress)
            done[kind].reason = reasons.get(kind)
            done[kind].old = await swap(client, alias, done[kind].index, keep_old)
    await conn.set_isolation_level(None)
    # Outside the snapshot (a repeatable-read write could fail on a row changed since), still under the lock.
    for kind, result in done.items():
        if result.failed:
            ids = [doc_id for doc_id, _ in result.failed]
            await conn.execute(
                q("outbox_upsert"), {"kinds": [kind] * len(ids), "doc_ids": ids, "actions": ["index"] * len(ids)}
            )
    if done:
        await conn.execute(q("outbox_unpark_kinds"), {"kinds": list(done)})
    return done


async def _rebuild_one(
    conn: psycopg.AsyncConnection[Any],
    client: AsyncOpenSearch,
    kind: str,
    alias: str,
    new: str,
    bulk_docs: int,
    progress: Callable[[str, int], Any] | None,
) -> Rebuilt:
    body = index_body(kind)
    body["settings"] = {"index": {**body["settings"]["index"], "refresh_interval": "-1"}}
    await client.indices.create(index=new, body=body)
    result = Rebuilt(alias=alias, index=new)
    try:
        async for batch in iter_docs(conn, kind, FETCH_ROWS):
            good = [(doc_id, src) for doc_id, src in batch if isinstance(src, bytes)]
            result.failed += [(doc_id, err) for doc_id, err in batch if isinstance(err, str)]
            result.failed += await bulk_index(client, new, good, bulk_docs)
            result.docs += len(batch)
            if progress is not None:
                progress(kind, len(batch))
        await client.indices.put_settings(index=new, body={"index": {"refresh_interval": "1s"}})
        await client.indices.refresh(index=new)
    except BaseException:
        await asyncio.shield(client.indices.delete(index=new, ignore_unavailable=True))
        raise
    result.docs -= len(result.failed)
    return result


async def bulk_index(
    client: AsyncOpenSearch, index: str, docs: list[tuple[str, bytes]], max_docs: int
) -> list[tuple[str, str]]:
    """Index docs into a concrete index in requests of max_docs, waiting out a busy cluster; returns the
    (doc id, error) of items refused for their own sake."""
    failed: list[tuple[str, str]] = []
    for start in range(0, len(docs), max_docs):
        part = docs[start : start + max_docs]
        attempt = 0
        while part:
            body = b"".join(
                orjson.dumps({"index": {"_index": index, "_id": i}}) + b"\n" + src + b"\n" for i, src in part
            )
            try:
                resp = await client.bulk(body=body, params={"filter_path": "errors,items.*.status,items.*.error"})
            except Exception as exc:
                attempt += 1
                if not is_unavailable(exc) or attempt >= 8:
                    raise
                await asyncio.sleep(backoff.delay(attempt, base=0.5, cap=10.0))
                continue
            busy: list[tuple[str, bytes]] = []
            for (doc_id, src), item in zip(part, resp.get("items") or [{}] * len(part), strict=True):
                error = item_error(next(iter(item.values()), {})) if resp.get("errors") else None
                if error is None:
                    continue
                if error.cluster_wide:  # busy, unavailable or blocked: as the drain decides (ItemError)
                    busy.append((doc_id, src))
                else:
                    failed.append((doc_id, error.text))
            if busy:
                attempt += 1
                if attempt >= 8:
                    raise TransportError(429, "busy", f"{len(busy)} items still refused after {attempt} tries")
                await asyncio.sleep(backoff.delay(attempt, base=0.5, cap=10.0))
            part = busy
    return failed


async def swap(client: AsyncOpenSearch, alias: str, new: str, keep_old: bool) -> list[str]:
    """Point `alias` at `new` atomically; drop what it pointed to before (or a concrete index of that name)."""
    actions: list[dict[str, Any]] = []
    old: list[str] = []
    if await client.indices.exists_alias(name=alias):
        old = sorted((await client.indices.get_alias(name=alias)).keys())
        actions += [{"remove": {"index": o, "alias": alias}} for o in old]
    elif await client.indices.exists(index=alias):
        actions.append({"remove_index": {"index": alias}})  # legacy or auto-created index → alias, same call
    actions.append({"add": {"index": new, "alias": alias, "is_write_index": True}})
    await client.indices.update_aliases(body={"actions": actions})
    if old and not keep_old:
        await client.indices.delete(index=",".join(old), ignore_unavailable=True)
    return old


class IndexGuard:
    """The sink's side of the lifecycle: before a drain, make sure each alias in `pending` is usable.

    A missing, auto-created or old-layout index is rebuilt from PostgreSQL (logged at WARNING, counted in
    `reactor_search_index_rebuilds_total`); an older reactor mapping is extended in place when it only lacks
    fields, else the log asks for `reactor reindex`.
    """

    def __init__(
        self, client: AsyncOpenSearch, aliases: dict[str, str], conninfo: str, *, metrics: Metrics | None = None
    ) -> None:
        self.client = client
        self.aliases = aliases
        self.conninfo = conninfo
        self.metrics = metrics
        self.pending: set[str] = set(aliases)
        self.seen: set[str] = set()  # kinds found in place at least once by this process
        self._verdicts: dict[str, str] = {}

    async def check(self) -> bool:
        """True when every pending index is usable; False when a rebuild must wait for another drainer."""
        broken: dict[str, str] = {}
        for kind in sorted(self.pending):
            state = await inspect(self.client, self.aliases[kind])
            if rebuild_reason(state) is not None:
                broken[kind] = self.aliases[kind]
                continue
            assert state is not None
            self._mapping_verdict(kind, await upgrade_mapping(self.client, kind, state), state)
            self.seen.add(kind)
            self.pending.discard(kind)
        if not broken:
            return True
        started = time.perf_counter()

        async def still_needed(kind: str, alias: str) -> str | None:
            return rebuild_reason(await inspect(self.client, alias))

        done = await rebuild(self.conninfo, self.client, broken, wait=False, needed=still_needed)
        if done is None:
            return False
        for kind, result in done.items():
            reason = result.reason or "missing"
            empty = result.docs <= (1 if kind == "word" else 0)  # the word index always gets its total document
            quiet = reason == "missing" and empty and kind not in self.seen
            logs.event(
                log,
                "opensearch.index_created" if quiet else "opensearch.index_rebuilt",
                logging.INFO if quiet else logging.WARNING,
                kind=kind,
                alias=result.alias,
                index=result.index,
                reason="created" if quiet else reason,
                backfilled=result.docs,
                refused=len(result.failed),
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
            if self.metrics is not None:
                self.metrics.search_rebuilds.labels(kind, "created" if quiet else reason).inc()
        self.seen.update(broken)
        self.pending.difference_update(broken)
        return True

    def _mapping_verdict(self, kind: str, verdict: str, state: IndexState) -> None:
        """Log what the mapping check found, once per change of verdict (the check repeats every interval)."""
        if self._verdicts.get(kind) == verdict:
            return
        self._verdicts[kind] = verdict
        if verdict == "upgraded":
            logs.event(log, "opensearch.mapping_upgraded", kind=kind, indices=state.concrete, schema=SCHEMA_VERSION)
        elif verdict != "current":
            hints = {
                "outdated": "its mapping predates this reactor and cannot be extended in place: run `reactor reindex`",
                "newer": "it was written by a newer reactor: upgrade this one",
                "foreign": "the alias points at an index the reactor did not create: run `reactor reindex`",
            }
            logs.event(
                log,
                "opensearch.mapping_outdated",
                logging.WARNING,
                kind=kind,
                indices=state.concrete,
                hint=hints[verdict],
            )
