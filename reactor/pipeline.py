"""The loop's batch plumbing: up to K batches in flight, one model thread, every lease kept, the stop obeyed.

While batch N is on the model, batch N+1 is claimed and tokenized (its model call queued behind N's) and batch
N-1 completes: PostgreSQL, the tokenizer and the model overlap instead of waiting for each other. K = 1 is the
serial loop (claim → model → complete → claim). What holds at every K:
- exactly-once effects: each batch completes in its own transaction (`Store.complete`), as before;
- the model is not re-entrant: its calls run one at a time, in claim order, on the single executor thread;
- each batch's lease is extended from its claim until its model call returned (waiting in line included);
- no claim starts once the gate is closed (a stop or pause seen, or SIGTERM): batches in flight still finish;
- SIGTERM: every batch in flight finishes, or is given back untouched when `deadline` passes (its queued model
  call is cancelled, a running one abandoned);
- a batch that fails (a bug, a database gone for good) does not take the others down: they finish first, then
  the error reaches the loop, and the failed batch's rows come back after their lease like a crash's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import psycopg

from reactor import backoff, logs
from reactor.batch import Claim, Outcome
from reactor.control import JobConfig
from reactor.db import TRANSIENT
from reactor.enrich import Enricher, ItemError, Result, Timings
from reactor.observability import Metrics, report_batch
from reactor.ports import Store

log = logging.getLogger("reactor.worker")
T = TypeVar("T")
CUDA_DEPTH = 2  # batches in flight on a GPU: one on the model while the previous completes and the next waits


def model_device(enricher: Enricher) -> str:
    """'cuda' when a model of `enricher` runs on a GPU (an ONNX session on CUDA), else 'cpu'."""
    for model in (enricher.sentiment, enricher.zero_shot):
        session = getattr(model, "session", None)
        if getattr(model, "device", None) == "cuda" or getattr(session, "cuda", False):
            return "cuda"
    return "cpu"


def depth_for(enricher: Enricher, asked: int = 0) -> int:
    """Batches in flight: `asked` when set (≥ 1); else 2 on CUDA, where the GPU would wait for PostgreSQL,
    and 1 on CPU, where the model and PostgreSQL share the same cores anyway."""
    if asked > 0:
        return asked
    return CUDA_DEPTH if model_device(enricher) == "cuda" else 1


class Pipeline:
    """Claims, runs and completes batches for `worker.Reactor`, which decides when (`drain`'s gate)."""

    def __init__(
        self,
        store: Store,
        enricher: Enricher,
        metrics: Metrics,
        *,
        worker_id: str,
        depth: int,
        lease_s: float,
        retry_base_s: float,
        db_retry_base_s: float,
        stop: asyncio.Event,
        on_claimed: Callable[[], Awaitable[None]],
        on_completed: Callable[[], None],
    ) -> None:
        self.store, self.enricher, self.metrics, self.id = store, enricher, metrics, worker_id
        self.depth = max(1, depth)
        self.lease_s, self.retry_base_s, self.db_retry_base_s = lease_s, retry_base_s, db_retry_base_s
        self.stop = stop
        self.on_claimed, self.on_completed = on_claimed, on_completed
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="enrich")
        # with batches in flight, the next batch is tokenized here while the model thread runs the one before
        self.tokenizer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")
        self.deadline: float | None = None  # SIGTERM: batches not finished by then are given back
        self.in_flight: dict[str, Claim] = {}  # token -> batch, from its claim until completed or given back
        self.model_call_running = False  # true while a model call runs (SIGTERM past the deadline leaves it)
        self.batches = self.rows = self.parked = 0
        self.last_batch_at: float | None = None
        self._skipped_labels: dict[str, str] = {}
        self._seq = 0

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.tokenizer.shutdown(wait=False, cancel_futures=True)

    async def warm_up(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.enricher.warm_up)

    # --- the pipeline -----------------------------------------------------------------------------------------

    async def drain(self, gate: Callable[[], JobConfig | None]) -> int:
        """Claim and process batches, at most `depth` at once, until a claim finds nothing ready and nothing is
        in flight, or `gate()` (asked before every claim) returns None; returns rows handled (done + parked).
        An error is raised once every other batch in flight has finished."""
        handled = 0
        running: set[asyncio.Task[int]] = set()
        error: Exception | None = None
        look = True  # an empty claim is repeated only once a batch finished (its rows' followers may be ready)
        alone: asyncio.Task[int] | None = None  # a dead batch's rows: nothing else is claimed while they run
        try:
            while True:
                cfg = gate() if error is None else None
                if cfg is not None and look and len(running) < self.depth and alone not in running:
                    try:
                        task, parked, isolated = await self._claim(cfg)
                        handled += parked
                        look = task is not None or parked > 0
                        if task is not None:
                            running.add(task)
                            alone = task if isolated else alone
                            await self.on_claimed()
                    except Exception as exc:
                        error = exc
                    continue
                if not running:
                    break
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                look = True
                for task in done:
                    try:
                        handled += task.result()
                    except Exception as exc:
                        if error is None:
                            error = exc
                        else:
                            log.error("batch.failed", exc_info=exc, extra={"fields": {"error": logs.redact(repr(exc))}})
        finally:
            for task in running:  # only when drain itself is cancelled: the batches' leases then lapse
                task.cancel()
        if error is not None:
            raise error
        return handled

    async def _claim(self, cfg: JobConfig) -> tuple[asyncio.Task[int] | None, int, bool]:
        """One claim; its batch starts at once (model call queued in order). Returns (batch task, rows parked,
        whether the batch must run alone). The store learns how many feedbacks are in flight already: a death
        of the process is charged to a row only when it was the only one (crash bisection, issue 21)."""
        self._seq += 1
        t0 = time.monotonic()
        result = await self.store.claim(
            token=f"{self.id}:{self._seq}",
            limit=cfg.batch_size,
            lease_s=self.lease_s,
            max_attempts=cfg.max_attempts,
            beside=list(self.in_flight),
        )
        if result.parked:
            self.parked += result.parked
            self.metrics.rows.labels("parked").inc(result.parked)
            logs.event(log, "rows.parked", logging.WARNING, rows=result.parked, reason="max_attempts used up")
        claim = result.claim
        if claim is None:
            return None, result.parked, False
        self.in_flight[claim.token] = claim
        task = asyncio.create_task(self._batch(claim, cfg, time.monotonic() - t0), name=f"batch {claim.token}")
        return task, result.parked, result.isolated

    async def _batch(self, claim: Claim, cfg: JobConfig, claim_s: float) -> int:
        """Model, then complete (or give back past the deadline); rows done."""
        try:
            t1 = time.monotonic()
            if self.depth > 1:  # overlaps the model call of the batch before (serial: nothing to overlap)
                await asyncio.get_running_loop().run_in_executor(self.tokenizer, self.enricher.prepare, claim.items)
            ran = await self._enrich(claim)
            if ran is None:  # shutdown grace elapsed: give the batch back untouched
                await self._with_retries(lambda: self.store.release(claim))
                logs.event(log, "batch.released", job_id=claim.job_id, rows=claim.size)
                self.stop.set()
                return 0
            results, timings, skipped = ran
            t2 = time.monotonic()
            self._report_skipped_labels(skipped)
            outcome = await self._complete_batch(claim, results, cfg)
            self._account(claim, outcome, (claim_s, t2 - t1, time.monotonic() - t2), timings)
            self.on_completed()
            return claim.size
        finally:
            self.in_flight.pop(claim.token, None)

    # --- one batch ------------------------------------------------------------------------------------------

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    async def _enrich(self, claim: Claim) -> tuple[list[Result], Timings, dict[str, str]] | None:
        """The batch's model call on the model thread (after those claimed before it), its lease extended
        meanwhile; None if shutdown gave up on it (a call still waiting its turn is cancelled)."""
        future = asyncio.get_running_loop().run_in_executor(self.executor, self._call_models, claim)
        next_extend = time.monotonic() + self.lease_s / 3
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            while True:
                timeout = max(0.0, next_extend - time.monotonic())
                if self.deadline is not None:
                    timeout = min(timeout, max(0.0, self.deadline - time.monotonic()))
                waiters = {future} if stopping.done() else {future, stopping}  # a stop wakes the wait once
                done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if future in done:
                    return future.result()
                if self._past_deadline():
                    future.cancel()
                    return None
                if time.monotonic() >= next_extend:
                    next_extend = time.monotonic() + self.lease_s / 3
                    with contextlib.suppress(*TRANSIENT):
                        await asyncio.wait_for(self.store.extend_lease(claim.token, self.lease_s), 5)
        finally:
            stopping.cancel()

    def _call_models(self, claim: Claim) -> tuple[list[Result], Timings, dict[str, str]]:
        """On the model thread: the results with this call's timings and skipped labels, read before the next
        batch's call replaces them."""
        self.model_call_running = True
        try:
            results = self.enricher.enrich(claim.items, claim.labels)
            return results, replace(self.enricher.last_timings), dict(self.enricher.skipped_labels)
        finally:
            self.model_call_running = False

    async def _complete_batch(self, claim: Claim, results: list[Result], cfg: JobConfig) -> Outcome:
        try:
            return await self._complete(claim, results, cfg)
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
            return await self._complete_singly(claim, results, cfg)

    async def _complete(self, claim: Claim, results: list[Result], cfg: JobConfig) -> Outcome:
        return await self._with_retries(
            lambda: self.store.complete(claim, results, max_attempts=cfg.max_attempts, retry_base_s=self.retry_base_s)
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

    async def _with_retries(self, action: Callable[[], Awaitable[T]], attempts: int = 6) -> T:
        """Run a transaction, retrying transient failures (the work is idempotent by construction)."""
        for n in range(1, attempts + 1):
            try:
                return await action()
            except TRANSIENT as exc:
                if n == attempts:
                    raise
                delay = backoff.delay(n, base=self.db_retry_base_s, cap=10.0)
                logs.event(
                    log, "reactor.retry", logging.WARNING, error=logs.redact(str(exc)), attempt=n, retry_in_s=delay
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _report_skipped_labels(self, skipped: dict[str, str]) -> None:
        """Topic labels the zero-shot model cannot score are left out (the others keep working): say so once
        per change of that set, and keep /metrics current."""
        self.metrics.topics_skipped.set(len(skipped))
        if skipped != self._skipped_labels:
            self._skipped_labels = skipped
            if skipped:
                logs.event(log, "topics.skipped", logging.WARNING, labels=skipped, hint="shorten these topic labels")

    def _account(self, claim: Claim, out: Outcome, phases: tuple[float, float, float], timings: Timings) -> None:
        self.batches += 1
        self.rows += claim.size
        self.parked += out.parked
        self.last_batch_at = time.monotonic()
        report_batch(self.metrics, claim, out, phases, self.enricher, timings)
