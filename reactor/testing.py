"""In-process fakes of the loop's ports, for unit tests of `worker.Reactor` that run in milliseconds.

Deliberately dumb: `InMemoryStore` replays scripted claims and records what the loop asked for; it does not
imitate the SQL (claim ordering, leases, deltas stay tested against PostgreSQL in tests/integration).
Interleavings are forced, not timed: `InMemoryStore.hold` makes a store call wait for the test, and
`HeldSentiment` makes each model call wait until the test lets it return.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reactor.batch import Claim, ClaimResult, Outcome, QueueRow
from reactor.control import JobConfig
from reactor.enrich import Analysis, ItemError, Result
from reactor.nlp.standin import StandInSentiment
from reactor.ports import ListenHandler
from reactor.store import Gauges

_queue_ids = itertools.count(1)


def make_claim(*texts: str | None, token: str = "t", job_id: int = 1, labels: Sequence[str] = ("a", "b")) -> Claim:
    """A claim of one fresh upsert row per text, feedback ids 1..n."""
    now = datetime.now(UTC)
    rows = [QueueRow(next(_queue_ids), fid, "upsert", 1, now) for fid in range(1, len(texts) + 1)]
    return Claim.from_rows(token, job_id, rows, dict(zip(range(1, len(texts) + 1), texts, strict=True)), list(labels))


@dataclass
class InMemoryStore:
    """Scripted answers, recorded calls. `fail(name, exc)` makes the next call of `name` raise `exc`."""

    config: JobConfig = field(default_factory=JobConfig)
    claims: deque[ClaimResult] = field(default_factory=deque)
    ready: deque[bool] = field(default_factory=deque)  # answers of ready_rows(); False when empty
    empty: bool = True  # answer of queue_empty()
    echo: ListenHandler | None = None  # where send_probe delivers its payload (None: probes get lost)
    calls: list[str] = field(default_factory=list)
    completes: list[tuple[Claim, list[Result]]] = field(default_factory=list)
    released: list[Claim] = field(default_factory=list)
    leases: list[str] = field(default_factory=list)
    errors: dict[str, deque[BaseException]] = field(default_factory=lambda: defaultdict(deque))
    armed: bool = False
    may_vacuum: bool = True  # answer of vacuum_queues() (False: the role does not own the tables)
    complete_hook: Any = None  # optional callable(claim, results) run inside complete (raise to fail it)
    holds: dict[tuple[str, int], asyncio.Event] = field(default_factory=dict)  # (name, nth call) -> go-ahead
    outstanding: set[str] = field(default_factory=set)  # tokens claimed and not completed or released yet
    most_outstanding: int = 0  # the most claims ever outstanding at once
    beside_seen: list[list[str]] = field(default_factory=list)  # each claim's `beside`: tokens in flight

    def script(self, *claims: Claim | ClaimResult) -> None:
        for c in claims:
            self.claims.append(c if isinstance(c, ClaimResult) else ClaimResult(c))

    def fail(self, name: str, exc: BaseException, times: int = 1) -> None:
        self.errors[name].extend([exc] * times)

    def hold(self, name: str, call: int | None = None) -> asyncio.Event:
        """The `call`-th call of `name` (1-based; default: the next one) is recorded, then waits until the test
        sets the returned event. A held claim reads the config (the stop gate) only once let go, as the claim's
        statement would if it ran after a stop committed."""
        event = asyncio.Event()
        self.holds[(name, call or self.count(name) + 1)] = event
        return event

    def count(self, name: str) -> int:
        return self.calls.count(name)

    async def _held(self, name: str) -> None:
        self._call(name)
        event = self.holds.pop((name, self.count(name)), None)
        if event is not None:
            await event.wait()

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.errors[name]:
            raise self.errors[name].popleft()

    async def open(self) -> None:
        self._call("open")

    async def close(self) -> None:
        self._call("close")

    async def read_config(self, last: JobConfig) -> JobConfig:
        self._call("read_config")
        return self.config

    async def ping(self) -> None:
        self._call("ping")

    async def heartbeat(self, state: str, host: str, pid: int) -> None:
        self._call("heartbeat")

    async def worker_gone(self) -> None:
        self._call("worker_gone")

    async def gauges(self) -> Gauges:
        self._call("gauges")
        return Gauges(len(self.claims), 0, 0, None)

    async def prune(self, *, retention_days: int, batch: int = 1000) -> dict[str, int]:
        self._call("prune")
        return {"jobs": 0, "tombstones": 0}

    async def vacuum_queues(self) -> bool:
        self._call("vacuum_queues")
        return self.may_vacuum

    async def arm(self, ttl_s: float) -> None:
        self._call("arm")
        self.armed = True

    async def disarm(self) -> None:
        self._call("disarm")
        self.armed = False

    async def ready_rows(self) -> bool:
        self._call("ready_rows")
        return self.ready.popleft() if self.ready else False

    async def queue_empty(self) -> bool:
        self._call("queue_empty")
        return self.empty and not self.claims

    async def send_probe(self, payload: str) -> None:
        self._call("send_probe")
        if self.echo is not None:
            asyncio.get_running_loop().call_soon(self.echo.on_work, payload)

    async def claim(
        self, *, token: str, limit: int, lease_s: float, max_attempts: int, beside: Sequence[str] = ()
    ) -> ClaimResult:
        await self._held("claim")
        self.beside_seen.append(list(beside))
        if not self.config.run_next_job or not self.claims:
            return ClaimResult()
        result = self.claims.popleft()
        if result.claim is None:
            return result
        self.outstanding.add(token)
        self.most_outstanding = max(self.most_outstanding, len(self.outstanding))
        return dataclasses.replace(result, claim=dataclasses.replace(result.claim, token=token))  # the token asked

    async def extend_lease(self, token: str, lease_s: float) -> None:
        self._call("extend_lease")
        self.leases.append(token)

    async def release(self, claim: Claim) -> None:
        await self._held("release")
        self.outstanding.discard(claim.token)
        self.released.append(claim)

    async def complete(
        self, claim: Claim, results: Sequence[Result], *, max_attempts: int, retry_base_s: float = 1.0
    ) -> Outcome:
        await self._held("complete")
        if self.complete_hook is not None:
            self.complete_hook(claim, list(results))
        self.outstanding.discard(claim.token)
        self.completes.append((claim, list(results)))
        failed = [r for r in results if isinstance(r, ItemError)]
        return Outcome(
            analysed=sum(isinstance(r, Analysis) for r in results),
            retried=sum(1 for r in failed if claim.attempts.get(r.feedback_id, 1) < max_attempts),
            parked=sum(1 for r in failed if claim.attempts.get(r.feedback_id, 1) >= max_attempts),
            errors=[f"{r.feedback_id}: {r.error}" for r in failed],
        )


class FakeListener:
    """Connects at once; a test delivers notifications with `work()` and `control()`."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.queue_usage = 0.0
        self.handler: ListenHandler | None = None

    async def run(self, stop: asyncio.Event, handler: ListenHandler) -> None:
        self.handler = handler
        self.connected.set()
        await handler.on_connect()
        await stop.wait()

    def work(self, payload: str = "") -> None:
        assert self.handler is not None, "the reactor has not started listening"
        self.handler.on_work(payload)

    def control(self, payload: str) -> None:
        assert self.handler is not None, "the reactor has not started listening"
        self.handler.on_control(payload)


class HeldSentiment(StandInSentiment):
    """The stand-in sentiment model whose every batch waits on the model thread until the test lets it go:
    `started` lists each call's texts as it begins, `go()` lets the oldest waiting call return, `open()` lets
    every call through from now on (call it before the test ends: a held thread would keep the process up).
    `prepared` lists the batches tokenized ahead (`prepare`), which never waits."""

    def __init__(self) -> None:
        self.started: list[list[str]] = []
        self.prepared: list[list[str]] = []  # each `prepare` call's texts (tokenized ahead, reactor.pipeline)
        self._turns = threading.Semaphore(0)
        self._open = False

    def prepare(self, texts: Sequence[str]) -> None:
        self.prepared.append(list(texts))

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        if list(texts) != ["warm up"]:
            self.started.append(list(texts))
            if not self._open:
                self._turns.acquire()
        return super().predict(texts)

    def go(self, calls: int = 1) -> None:
        self._turns.release(calls)

    def open(self) -> None:
        self._open = True
        self._turns.release(1000)
