"""The reactor loop: wake-up → claim → enrich (worker thread) → complete, obeying job_configs.

Exactly-once effects come from the store's `complete`; this module decides *when* to claim, keeps leases alive
while models run, reacts to control messages, retries transient database failures and shuts down gracefully
(finish the batch in flight, or give it back after the grace period). It holds no pool and runs no SQL: the
store, listener and sink are injected (`reactor.ports`), so the loop is tested in-process (`reactor.testing`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from reactor import backoff, logs
from reactor.batch import Claim, Outcome
from reactor.batching import sleep_unless
from reactor.control import JobConfig
from reactor.db import TRANSIENT
from reactor.enrich import Enricher, ItemError, Result
from reactor.housekeeping import Housekeeping
from reactor.observability import Metrics, judge_health, report_batch, serve
from reactor.ports import Listener, Sink, Store
from reactor.store import SchemaMissing
from reactor.wakeup import Doorbell

log = logging.getLogger("reactor.worker")
T = TypeVar("T")


@dataclass
class Options:
    max_wait_ms: float = 10.0  # debounce after the first wake-up (an idle reactor claims within this)
    poll_s: float = 5.0  # the last net when no notification arrives
    lease_s: float = 30.0  # a dead reactor's rows are reclaimed after this
    keepalive_s: float = 10.0  # LISTEN connection check
    grace_s: float = 30.0  # SIGTERM: time to finish the batch in flight before giving it back
    heartbeat_s: float = 5.0
    prune_s: float = 60.0  # housekeeping: jobs retention and tombstones
    retry_base_s: float = 1.0  # backoff base for a row whose analysis failed
    db_retry_base_s: float = 0.2  # backoff base for a transaction that failed transiently
    exit_when_idle: bool = False  # stop once the queue is drained (demo, scripts)
    pool_size: int = 4
    http: socket.socket | None = None  # /health and /metrics, bound by observability.bind_http at start
    stall_s: float = 120.0  # /health says DOWN when ready rows wait this long with no progress


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Reactor:
    def __init__(
        self,
        store: Store,
        listener: Listener,
        enricher: Enricher,
        *,
        worker_id: str,
        job_key: str,
        options: Options | None = None,
        sink: Sink | None = None,
        metrics: Metrics | None = None,
        doorbell: Doorbell | None = None,
    ) -> None:
        self.store, self.listener, self.enricher, self.sink = store, listener, enricher, sink
        self.id, self.job_key = worker_id, job_key
        self.opt = options or Options()
        self.metrics = metrics or Metrics()
        self.doorbell = doorbell or Doorbell(store)
        self.config = JobConfig()
        self.stop_event = asyncio.Event()
        self.stop_deadline: float | None = None
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="enrich")
        self.housekeeping = Housekeeping(
            store,
            listener,
            self.metrics,
            lambda: self.state,
            lambda: self.config,
            heartbeat_s=self.opt.heartbeat_s,
            prune_s=self.opt.prune_s,
        )
        self.in_flight: Claim | None = None
        self.model_call_running = False  # true while a model call runs (SIGTERM past the grace period leaves it)
        self.batches = self.rows = self.parked = 0
        self.last_batch_at: float | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._skipped_labels: dict[str, str] = {}
        self._seq = 0

    # --- lifecycle -------------------------------------------------------------------------------------

    def request_stop(self, reason: str = "signal") -> None:
        """SIGTERM/SIGINT: stop claiming, let the batch in flight finish within the grace period."""
        if not self.stop_event.is_set():
            logs.event(log, "reactor.stopping", reason=reason, in_flight=bool(self.in_flight), grace_s=self.opt.grace_s)
            self.stop_deadline = time.monotonic() + self.opt.grace_s
            self.stop_event.set()
            self.doorbell.kick()

    @property
    def state(self) -> str:
        if self.stop_event.is_set():
            return "stopping"
        return "running" if self.config.run_next_job else "paused"

    async def run(self) -> int:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.enricher.warm_up)
        await self.store.open()
        await self._reload_quietly(source="start")  # obey job_configs from the first claim on
        self.doorbell.kick()  # catch-up pass at start
        tasks = [asyncio.create_task(self.listener.run(self.stop_event, self), name="listener")]
        tasks += self.housekeeping.tasks(self.stop_event)
        if self.opt.http is not None:
            tasks.append(asyncio.create_task(serve(self.opt.http, self.metrics, self.health, self.stop_event)))
        if self.sink is not None:
            tasks.append(asyncio.create_task(self.sink.run(self.stop_event), name="sink"))
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
            for t in [*tasks, *self._background]:
                t.cancel()
            await asyncio.gather(*tasks, *self._background, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.worker_gone(), 2)
            await self.store.close()
            self.executor.shutdown(wait=False, cancel_futures=True)
            logs.event(log, "reactor.stopped", worker=self.id, batches=self.batches, rows=self.rows, parked=self.parked)
        return 0

    # --- the loop ---------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        failures = 0
        reason = "kick"
        while not self.stop_event.is_set():
            try:
                if reason == "poll":
                    await self._reload_config(source="poll")
                handled = await self._drain()
                failures = 0
                if handled:
                    self.metrics.wakeups.labels(reason).inc()
                if self.stop_event.is_set():
                    break
                if self.opt.exit_when_idle and await self.store.queue_empty():
                    logs.event(log, "reactor.idle_exit")
                    break
                reason = await self.doorbell.sleep(
                    self.stop_event,
                    poll_s=self.opt.poll_s,
                    batch_size=self.config.batch_size,
                    max_wait_s=self.opt.max_wait_ms / 1000,
                    may_arm=self.config.run_next_job and self.listener.connected.is_set(),
                )
            except (*TRANSIENT, SchemaMissing, psycopg.errors.UndefinedTable) as exc:
                failures += 1
                self.metrics.failures.labels("database").inc()
                delay = backoff.delay(failures, base=self.opt.db_retry_base_s, cap=30.0)
                logs.event(log, "reactor.db_error", logging.WARNING, error=logs.redact(str(exc)), retry_in_s=delay)
                await sleep_unless(self.stop_event, delay)
                reason = "kick"
            except Exception as exc:  # a bug must not kill the daemon: its rows retry after their lease
                failures += 1
                self.metrics.failures.labels("unexpected").inc()
                log.exception("reactor.unexpected_error", extra={"fields": {"error": logs.redact(repr(exc))}})
                self.in_flight = None
                await sleep_unless(self.stop_event, backoff.delay(failures, base=1.0, cap=30.0))
                reason = "kick"
        with contextlib.suppress(*TRANSIENT, psycopg.errors.UndefinedTable):
            await self.doorbell.disarm()

    async def _drain(self) -> int:
        """Claim and process batches until no row is ready (or we are paused/stopping); rows handled."""
        handled = 0
        while not self.stop_event.is_set() and self.config.run_next_job:
            rows, parked = await self._one_batch(self.config)
            if rows:
                await self.doorbell.disarm()  # busy now: writers need not wake us
            handled += rows + parked
            if not rows and not parked:
                break
        return handled

    async def _one_batch(self, cfg: JobConfig) -> tuple[int, int]:
        """One claim → enrich → complete; returns (rows processed, rows parked by the claim as exhausted)."""
        self._seq += 1
        t0 = time.monotonic()
        result = await self.store.claim(
            token=f"{self.id}:{self._seq}",
            limit=cfg.batch_size,
            lease_s=self.opt.lease_s,
            max_attempts=cfg.max_attempts,
        )
        if result.parked:
            self.parked += result.parked
            self.metrics.rows.labels("parked").inc(result.parked)
            logs.event(log, "rows.parked", logging.WARNING, rows=result.parked, reason="max_attempts used up")
        claim = result.claim
        if claim is None:
            return 0, result.parked
        self.in_flight = claim
        t1 = time.monotonic()
        results = await self._enrich(claim)
        if results is None:  # shutdown grace elapsed: give the batch back untouched
            await self._with_retries(lambda: self.store.release(claim))
            self.in_flight = None
            logs.event(log, "batch.released", job_id=claim.job_id, rows=claim.size)
            self.stop_event.set()
            return 0, result.parked
        t2 = time.monotonic()
        self._report_skipped_labels()
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
        self._account(claim, outcome, (t1 - t0, t2 - t1, time.monotonic() - t2))
        if self.sink is not None:
            self.sink.wake()
        return claim.size, result.parked

    async def _complete(self, claim: Claim, results: list[Result], cfg: JobConfig) -> Outcome:
        return await self._with_retries(
            lambda: self.store.complete(
                claim, results, max_attempts=cfg.max_attempts, retry_base_s=self.opt.retry_base_s
            )
        )

    async def _complete_singly(self, claim: Claim, results: list[Result], cfg: JobConfig) -> Outcome:
        """One transaction per feedback; a result the database refuses becomes that row's error (retry, then
        park) while its neighbours commit normally."""
        by_id = {r.feedback_id: r for r in results}
        total = Outcome()
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

    async def _enrich(self, claim: Claim) -> list[Result] | None:
        """Run the models in the worker thread, extending the lease meanwhile; None if shutdown gave up."""
        future = asyncio.get_running_loop().run_in_executor(self.executor, self._call_models, claim)
        next_extend = time.monotonic() + self.opt.lease_s / 3
        stopping = asyncio.ensure_future(self.stop_event.wait())
        try:
            while True:
                timeout = max(0.0, next_extend - time.monotonic())
                if self.stop_deadline is not None:
                    timeout = min(timeout, max(0.0, self.stop_deadline - time.monotonic()))
                waiters = {future} if stopping.done() else {future, stopping}  # a stop wakes the wait once
                done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if future in done:
                    return future.result()
                if self._past_deadline():
                    return None
                if time.monotonic() >= next_extend:
                    next_extend = time.monotonic() + self.opt.lease_s / 3
                    with contextlib.suppress(*TRANSIENT):
                        await asyncio.wait_for(self.store.extend_lease(claim.token, self.opt.lease_s), 5)
        finally:
            stopping.cancel()

    def _call_models(self, claim: Claim) -> list[Result]:
        self.model_call_running = True
        try:
            return self.enricher.enrich(claim.items, claim.labels)
        finally:
            self.model_call_running = False

    def _report_skipped_labels(self) -> None:
        """Topic labels the zero-shot model cannot score are left out (the others keep working): say so once
        per change of that set, and keep /metrics current."""
        skipped = dict(self.enricher.skipped_labels)
        self.metrics.topics_skipped.set(len(skipped))
        if skipped != self._skipped_labels:
            self._skipped_labels = skipped
            if skipped:
                logs.event(log, "topics.skipped", logging.WARNING, labels=skipped, hint="shorten these topic labels")

    async def _with_retries(self, action: Callable[[], Awaitable[T]], attempts: int = 6) -> T:
        """Run a transaction, retrying transient failures (the work is idempotent by construction)."""
        for n in range(1, attempts + 1):
            try:
                return await action()
            except TRANSIENT as exc:
                if n == attempts:
                    raise
                delay = backoff.delay(n, base=self.opt.db_retry_base_s, cap=10.0)
                logs.event(
                    log, "reactor.retry", logging.WARNING, error=logs.redact(str(exc)), attempt=n, retry_in_s=delay
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _account(self, claim: Claim, out: Outcome, phases: tuple[float, float, float]) -> None:
        self.batches += 1
        self.rows += claim.size
        self.parked += out.parked
        self.last_batch_at = time.monotonic()
        report_batch(self.metrics, claim, out, phases, self.enricher)

    # --- listener callbacks (ports.ListenHandler) ----------------------------------------------------------

    def on_work(self, payload: str) -> None:
        self.doorbell.ring(payload)

    def on_control(self, payload: str) -> None:
        key, _, stamp = payload.rpartition("|")
        if key not in (self.job_key, "topics"):
            return
        try:
            sent: float | None = float(stamp)
        except ValueError:
            sent = None
        self._spawn(self._reload_quietly(source="notify", sent_at=sent))

    async def on_connect(self) -> None:
        """After every (re)connect of the listener: re-read control state, catch up, probe notifications."""
        await self._reload_quietly(source="connect")
        self.doorbell.kick()
        self._spawn(self._probe())

    async def _probe(self) -> None:
        with contextlib.suppress(*TRANSIENT, psycopg.errors.UndefinedTable):
            await self.doorbell.probe()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reload_quietly(self, *, source: str, sent_at: float | None = None) -> None:
        """Reload outside the loop (start, connect, a control notification): a database that is down or not
        installed yet is the loop's to report; its next poll reloads anyway."""
        with contextlib.suppress(*TRANSIENT, SchemaMissing, psycopg.errors.UndefinedTable):
            await self._reload_config(source=source, sent_at=sent_at)

    async def _reload_config(self, *, source: str, sent_at: float | None = None) -> None:
        old = self.config
        self.config = cfg = await self.store.read_config(old)
        latency_ms = round((time.time() - sent_at) * 1000, 2) if sent_at else None
        for problem in cfg.problems:
            if problem not in old.problems:
                logs.event(log, "control.invalid_config", logging.WARNING, problem=problem, keeps="last valid value")
        for name, fields in old.changes(cfg):
            logs.event(log, name, source=source, latency_ms=latency_ms, in_flight=bool(self.in_flight), **fields)
        if old.run_next_job != cfg.run_next_job:
            self.housekeeping.beat_now()
            if cfg.run_next_job:
                self.doorbell.kick()  # drain the backlog

    # --- health -------------------------------------------------------------------------------------------

    async def health(self) -> tuple[bool, dict[str, object]]:
        """UP when the database answers with the schema installed, the LISTEN connection is up and ready rows
        are moving (the verdict itself: observability.judge_health)."""
        problem = None
        try:
            await asyncio.wait_for(self.store.ping(), 2)
        except SchemaMissing as exc:
            problem = str(exc)
        except Exception as exc:
            problem = f"database unreachable: {logs.redact(str(exc)).strip() or type(exc).__name__}"
        return judge_health(
            database_problem=problem,
            listening=self.listener.connected.is_set(),
            state=self.state,
            waited_s=self.housekeeping.oldest_ready_s,
            last_batch_at=self.last_batch_at,
            stall_s=self.opt.stall_s,
            info={"worker": self.id, "notifications": self.doorbell.notifications_ok},
        )
