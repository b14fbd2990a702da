"""The reactor process: wake-ups → claim → enrich (worker thread) → complete, obeying job_configs.

Exactly-once effects come from `store.complete`; this module decides *when* to claim, keeps leases alive
while models run, reacts to control messages, retries transient database failures and shuts down
gracefully (finish the batch in flight, or give it back after the grace period).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import resource
import shutil
import socket
import time
import uuid
from dataclasses import dataclass

import psycopg

from reactor import backoff, logs, store
from reactor.batching import Debouncer, sleep_unless
from reactor.config import Settings
from reactor.db import make_pool
from reactor.enrich import Enricher, ItemError, Result
from reactor.listener import Listener
from reactor.observability import Metrics, age_s, serve
from reactor.sql import q

log = logging.getLogger("reactor.worker")
TRANSIENT = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    OSError,
    TimeoutError,
)


@dataclass
class Options:
    max_wait_ms: float = 50.0  # debounce after the first wake-up
    poll_s: float = 5.0  # fallback when no notification arrives
    lease_s: float = 30.0  # a dead reactor's rows are reclaimed after this
    keepalive_s: float = 10.0  # LISTEN connection check
    grace_s: float = 30.0  # SIGTERM: time to finish the batch in flight before giving it back
    heartbeat_s: float = 5.0
    retry_base_s: float = 1.0  # backoff base for a row whose analysis failed
    exit_when_idle: bool = False  # stop once the queue is drained (demo, scripts)
    pool_size: int = 4
    http: socket.socket | None = None  # /health and /metrics, bound by observability.bind_http at start
    stall_s: float = 120.0  # /health says DOWN when ready rows wait this long with no progress


@dataclass
class Stats:
    """What the stop log and /health read; everything else is counted in `Metrics`."""

    batches: int = 0
    rows: int = 0
    parked: int = 0
    last_batch_at: float | None = None


class Reactor:
    def __init__(
        self,
        settings: Settings,
        url: str,
        enricher: Enricher,
        options: Options | None = None,
        sink: object | None = None,
    ) -> None:
        self.settings, self.url, self.enricher = settings, url, enricher
        self.opt = options or Options()
        self.sink = sink
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.config = store.JobConfig()
        self.stats = Stats()
        self.debouncer = Debouncer()
        self.stop_event = asyncio.Event()
        self.stop_deadline: float | None = None
        self.pool = make_pool(url, max_size=self.opt.pool_size)
        self.listener = Listener(
            url,
            on_work=self.debouncer.notify,
            on_control=self._on_control,
            on_connect=self._on_connect,
            keepalive_s=self.opt.keepalive_s,
        )
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="enrich")
        self.in_flight: store.Claim | None = None
        self._control_tasks: set[asyncio.Task[None]] = set()
        self._seq = 0
        self.metrics = Metrics()
        self.oldest_ready_s: float | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def request_stop(self, reason: str = "signal") -> None:
        """SIGTERM/SIGINT: stop claiming, let the batch in flight finish within the grace period."""
        if not self.stop_event.is_set():
            logs.event(log, "reactor.stopping", reason=reason, in_flight=bool(self.in_flight), grace_s=self.opt.grace_s)
            self.stop_deadline = time.monotonic() + self.opt.grace_s
            self.stop_event.set()
            self.debouncer.notify(0)

    @property
    def state(self) -> str:
        if self.stop_event.is_set():
            return "stopping"
        return "running" if self.config.run_next_job else "paused"

    async def run(self) -> int:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.enricher.warm_up)
        await self.pool.open(wait=False)
        with contextlib.suppress(*TRANSIENT):  # obey job_configs from the first claim on (the listener re-reads it)
            await self._reload_config(source="start")
        self.debouncer.notify(0)  # catch-up pass at start
        tasks = [
            asyncio.create_task(self.listener.run(self.stop_event), name="listener"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._gauges(), name="gauges"),
        ]
        if self.opt.http is not None:
            tasks.append(asyncio.create_task(serve(self.opt.http, self.metrics, self.health, self.stop_event)))
        if self.sink is not None:
            tasks.append(asyncio.create_task(self.sink.run(self.stop_event), name="sink"))  # type: ignore[attr-defined]
        logs.event(
            log,
            "reactor.started",
            worker=self.id,
            sentiment=self.enricher.sentiment.model_id,
            zero_shot=self.enricher.zero_shot.model_id,
            random_weights=self.enricher.random_weights,
            lease_s=self.opt.lease_s,
            poll_s=self.opt.poll_s,
            max_wait_ms=self.opt.max_wait_ms,
        )
        try:
            await self._loop()
        finally:
            self.stop_event.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                async with self.pool.connection(timeout=2) as conn:
                    await conn.execute(q("worker_gone"), {"id": self.id})
            await self.pool.close(timeout=2)
            self.executor.shutdown(wait=False, cancel_futures=True)
            logs.event(
                log,
                "reactor.stopped",
                worker=self.id,
                batches=self.stats.batches,
                rows=self.stats.rows,
                parked=self.stats.parked,
            )
        return 0

    # --- the loop ---------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            reason = await self.debouncer.wait(
                batch_size=self.config.batch_size, max_wait_s=self.opt.max_wait_ms / 1000, poll_s=self.opt.poll_s
            )
            if self.stop_event.is_set():
                break
            try:
                if reason == "poll":
                    await self._reload_config(source="poll")
                await self._drain()
                failures = 0
            except TRANSIENT as exc:
                failures += 1
                self.metrics.failures.labels("database").inc()
                delay = backoff.delay(failures, base=0.4, cap=30.0)
                logs.event(log, "reactor.db_error", logging.WARNING, error=logs.redact(str(exc)), retry_in_s=delay)
                await sleep_unless(self.stop_event, delay)
                self.debouncer.notify(0)
                continue
            except Exception as exc:  # a bug must not kill the daemon: its rows retry after their lease
                failures += 1
                self.metrics.failures.labels("unexpected").inc()
                log.exception("reactor.unexpected_error", extra={"fields": {"error": logs.redact(repr(exc))}})
                self.in_flight = None
                await sleep_unless(self.stop_event, backoff.delay(failures, base=1.0, cap=30.0))
                continue
            if self.opt.exit_when_idle and await self._queue_empty():
                logs.event(log, "reactor.idle_exit")
                break

    async def _drain(self) -> None:
        """Claim and process batches until the queue has no ready rows (or we are paused/stopping)."""
        while not self.stop_event.is_set() and self.config.run_next_job:
            if await self._one_batch(self.config) == 0:
                break

    async def _one_batch(self, cfg: store.JobConfig) -> int:
        self._seq += 1
        token = f"{self.id}:{self._seq}"
        t0 = time.monotonic()
        async with self.pool.connection() as conn:
            claim = await store.claim(
                conn,
                token=token,
                worker_id=self.id,
                key=self.settings.job_key,
                job_name=self.settings.job_name,
                limit=cfg.batch_size,
                lease_s=self.opt.lease_s,
                max_attempts=cfg.max_attempts,
            )
        if claim is None:
            return 0
        self.in_flight = claim
        t1 = time.monotonic()
        results = await self._enrich(claim)
        if results is None:  # shutdown grace elapsed: give the batch back untouched
            await self._with_retries(lambda conn: store.release(conn, claim.token, claim.job_id))
            self.in_flight = None
            logs.event(log, "batch.released", job_id=claim.job_id, rows=len(claim.queue_ids))
            self.stop_event.set()
            return 0
        t2 = time.monotonic()
        try:
            outcome = await self._complete(claim, results, cfg)
        except TRANSIENT:
            raise
        except psycopg.Error as exc:  # e.g. a value the database rejects: isolate the row that causes it
            logs.event(
                log,
                "batch.complete_failed",
                logging.WARNING,
                job_id=claim.job_id,
                error=logs.redact(str(exc)),
                action="storing results one feedback at a time",
            )
            outcome = await self._complete_singly(claim, results, cfg)
        self.in_flight = None
        t3 = time.monotonic()
        self._account(claim, outcome, (t1 - t0, t2 - t1, t3 - t2))
        if self.sink is not None:
            self.sink.wake()  # type: ignore[attr-defined]
        return len(claim.queue_ids)

    async def _complete(self, claim: store.Claim, results: list[Result], cfg: store.JobConfig) -> store.Outcome:
        return await self._with_retries(
            lambda conn: store.complete(
                conn,
                claim,
                results,
                max_attempts=cfg.max_attempts,
                outbox=self.settings.opensearch_enabled,
                retry_base_s=self.opt.retry_base_s,
            )
        )

    async def _complete_singly(self, claim: store.Claim, results: list[Result], cfg: store.JobConfig) -> store.Outcome:
        """One transaction per feedback; a result the database refuses becomes that row's error (retry, then
        park) while its neighbours commit normally."""
        by_id = {r.feedback_id: r for r in results}
        total = store.Outcome()
        for fid in claim.feedback_ids:
            part = claim.only({fid})
            mine = [by_id[fid]] if fid in by_id else []
            try:
                total += await self._complete(part, mine, cfg)
            except TRANSIENT:
                raise
            except psycopg.Error as exc:
                error = ItemError(fid, f"could not store the result: {logs.redact(str(exc)).strip()}"[:2000])
                total += await self._complete(part, [error], cfg)
        return total

    def _past_deadline(self) -> bool:
        return self.stop_deadline is not None and time.monotonic() > self.stop_deadline

    async def _enrich(self, claim: store.Claim) -> list[Result] | None:
        """Run the models in the worker thread, extending the lease meanwhile; None if shutdown gave up."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, self.enricher.enrich, claim.items, claim.labels)
        next_extend = time.monotonic() + self.opt.lease_s / 3
        while True:
            done, _ = await asyncio.wait({future}, timeout=0.5)
            if done:
                return future.result()
            if self.stop_event.is_set() and self._past_deadline():
                return None
            if time.monotonic() >= next_extend:
                next_extend = time.monotonic() + self.opt.lease_s / 3
                with contextlib.suppress(*TRANSIENT):
                    async with self.pool.connection(timeout=5) as conn:
                        await store.extend_lease(conn, claim.token, self.opt.lease_s)

    async def _with_retries(self, action, attempts: int = 6):  # type: ignore[no-untyped-def]
        """Run a transaction, retrying transient failures (the work is idempotent by construction)."""
        for n in range(1, attempts + 1):
            try:
                async with self.pool.connection(timeout=30) as conn:
                    return await action(conn)
            except TRANSIENT as exc:
                if n == attempts:
                    raise
                delay = backoff.delay(n, base=0.2, cap=10.0)
                logs.event(
                    log, "reactor.retry", logging.WARNING, error=logs.redact(str(exc)), attempt=n, retry_in_s=delay
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _account(self, claim: store.Claim, out: store.Outcome, phases: tuple[float, float, float]) -> None:
        s = self.stats
        s.batches += 1
        s.rows += len(claim.queue_ids)
        s.parked += out.parked
        s.last_batch_at = time.monotonic()
        now = time.time()
        lat = [now - t.timestamp() for t in claim.enqueued_at.values()]
        timings = self.enricher.last_timings
        m = self.metrics
        m.batches.inc()
        m.batch_seconds.observe(sum(phases))
        for outcome in ("analysed", "deleted", "reindexed", "retried", "parked", "stale"):
            if getattr(out, outcome):
                m.rows.labels(outcome).inc(getattr(out, outcome))
        if out.retried:
            m.failures.labels("enrichment").inc(out.retried)
        if out.parked:
            m.failures.labels("parked").inc(out.parked)
        for seconds in lat:
            m.latency.observe(seconds)
        m.inference.labels(self.enricher.sentiment.model_id).observe(timings.sentiment_s)
        m.inference.labels(self.enricher.zero_shot.model_id).observe(timings.zero_shot_s)
        logs.event(
            log,
            "batch.completed",
            job_id=claim.job_id,
            rows=len(claim.queue_ids),
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
            errors=out.errors or None,
        )

    async def _queue_empty(self) -> bool:
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT NOT EXISTS (SELECT 1 FROM reactor.queue)")).fetchone()
            return bool(row and row[0])

    # --- control -----------------------------------------------------------------------------------------

    def _on_control(self, payload: str) -> None:
        key, _, stamp = payload.rpartition("|")
        if key not in (self.settings.job_key, "topics"):
            return
        try:
            sent = float(stamp)
        except ValueError:
            sent = None
        task = asyncio.create_task(self._reload_config(source="notify", sent_at=sent))
        self._control_tasks.add(task)
        task.add_done_callback(self._control_tasks.discard)

    async def _on_connect(self) -> None:
        """After every (re)connect of the listener: re-read control state and run a catch-up pass."""
        with contextlib.suppress(*TRANSIENT):
            await self._reload_config(source="connect")
        self.debouncer.notify(0)

    async def _reload_config(self, *, source: str, sent_at: float | None = None) -> None:
        async with self.pool.connection(timeout=10) as conn:
            cfg = await store.read_config(conn, self.settings.job_key)
        old, self.config = self.config, cfg
        latency_ms = round((time.time() - sent_at) * 1000, 2) if sent_at else None
        for problem in cfg.problems:
            if problem not in old.problems:
                logs.event(log, "control.invalid_config", logging.WARNING, problem=problem)
        if old.run_next_job != cfg.run_next_job:
            logs.event(
                log,
                "control.resumed" if cfg.run_next_job else "control.paused",
                source=source,
                latency_ms=latency_ms,
                in_flight=bool(self.in_flight),
            )
            if cfg.run_next_job:
                self.debouncer.notify(0)  # drain the backlog
        if old.batch_size != cfg.batch_size:
            logs.event(
                log, "control.batch_size", old=old.batch_size, new=cfg.batch_size, source=source, latency_ms=latency_ms
            )
        if old.max_attempts != cfg.max_attempts:
            logs.event(log, "control.max_attempts", old=old.max_attempts, new=cfg.max_attempts, source=source)

    async def health(self) -> tuple[bool, dict[str, object]]:
        """UP when the database answers, the LISTEN connection is up and ready rows are moving."""
        info: dict[str, object] = {
            "worker": self.id,
            "state": self.state,
            "queue_wait_s": self.oldest_ready_s,
            "last_batch_s_ago": age_s(self.stats.last_batch_at),
        }
        reason = None
        try:
            async with self.pool.connection(timeout=2) as conn:
                await asyncio.wait_for(conn.execute("SELECT 1"), 2)
        except Exception as exc:
            reason = f"database unreachable: {logs.redact(str(exc)).strip() or type(exc).__name__}"
        if reason is None and not self.listener.connected.is_set():
            reason = "LISTEN connection is down (reconnecting)"
        if reason is None and self.state == "running" and (self.oldest_ready_s or 0) > self.opt.stall_s:
            last = self.stats.last_batch_at
            if last is None or time.monotonic() - last > self.opt.stall_s:
                reason = f"stalled: ready rows have waited {self.oldest_ready_s:.0f}s with no batch completed"
        if reason:
            return False, {"status": "DOWN", "reason": reason, **info}
        return True, {"status": "UP", **info}

    async def _gauges(self) -> None:
        """Refresh queue/outbox/failed gauges every few seconds (cheap counts, never on the hot path)."""
        while not self.stop_event.is_set():
            with contextlib.suppress(*TRANSIENT):
                async with self.pool.connection(timeout=5) as conn:
                    row = await (await conn.execute(q("gauges"))).fetchone()
                if row:
                    queue, failed, outbox, oldest = row
                    self.metrics.queue_depth.set(queue)
                    self.metrics.failed_rows.set(failed)
                    self.metrics.outbox_depth.set(outbox)
                    self.oldest_ready_s = float(oldest) if oldest is not None else None
            self.metrics.paused.set(0 if self.config.run_next_job else 1)
            self.metrics.notify_queue.set(self.listener.queue_usage)
            await sleep_unless(self.stop_event, 2.0)

    async def _heartbeat(self) -> None:
        host, pid = socket.gethostname(), os.getpid()
        while not self.stop_event.is_set():
            with contextlib.suppress(*TRANSIENT):
                async with self.pool.connection(timeout=5) as conn:
                    await conn.execute(q("heartbeat"), {"id": self.id, "host": host, "pid": pid, "state": self.state})
            await sleep_unless(self.stop_event, self.opt.heartbeat_s)
