"""PostgreSQL behind the reactor loop: every SQL call the loop makes, through named queries only.

The two transactions of a batch are short: `claim` (lease rows, read texts, open the job) and `complete`
(results, word-count deltas, job record, outbox and queue removal, all or nothing). No transaction is ever open
while models run: the lease on the queue rows is what holds the work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from reactor import backoff
from reactor.batch import Applied, Claim, ClaimResult, Outcome, QueueRow, failed_results, park_message, plan
from reactor.control import JobConfig
from reactor.enrich import Analysis, Result
from reactor.sql import q

ROW_RETRY_CAP_S = 300.0  # a failing row is retried at least every 5 minutes
PROMOTE_CHUNK = 5000  # inbox rows moved into the queue per claim: well above what a burst of writers adds


class SchemaMissing(Exception):
    """The reactor's schema is not installed in this database (`reactor sql` was not run, or was undone)."""


@dataclass(frozen=True)
class Gauges:
    queue: int
    failed: int
    outbox: int
    oldest_ready_s: float | None


class PgStore:
    """The loop's view of PostgreSQL. Connections come from `pool` (autocommit; each method is one transaction)."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], *, worker_id: str, job_key: str, job_name: str, outbox: bool
    ) -> None:
        self.pool, self.worker_id = pool, worker_id
        self.job_key, self.job_name, self.outbox = job_key, job_name, outbox
        # Crash bisection takes turns with fresh work: after a claim of a dead batch's rows (and at start, right
        # after a restart), the next claim serves rows no dead batch held, so new changes keep flowing.
        self._fresh_turn = True
        self._may_vacuum: bool | None = None  # asked once, at the first vacuum_queues

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close(timeout=2)

    async def _one(self, name: str, params: dict[str, Any] | None = None) -> Any:
        async with self.pool.connection(timeout=10) as conn:
            row = await (await conn.execute(q(name), params)).fetchone()
        return row[0] if row else None

    async def _run(self, name: str, params: dict[str, Any] | None = None) -> None:
        async with self.pool.connection(timeout=10) as conn:
            await conn.execute(q(name), params)

    # --- control and liveness -----------------------------------------------------------------------------

    async def read_config(self, last: JobConfig) -> JobConfig:
        async with self.pool.connection(timeout=10) as conn:
            row = await (await conn.execute(q("read_job_config"), {"key": self.job_key})).fetchone()
        return last.updated(row)

    async def ping(self) -> None:
        """Raises SchemaMissing when the schema is gone, a psycopg error when the database does not answer."""
        if not await self._one("schema_present"):
            raise SchemaMissing("the reactor schema is not installed in this database: run `reactor sql`")

    async def heartbeat(self, state: str, host: str, pid: int) -> None:
        await self._run("heartbeat", {"id": self.worker_id, "host": host, "pid": pid, "state": state})

    async def worker_gone(self) -> None:
        await self._sleepers("worker_gone", {"id": self.worker_id})

    async def gauges(self) -> Gauges:
        async with self.pool.connection(timeout=5) as conn:
            queue, failed, outbox, oldest = await (await conn.execute(q("gauges"))).fetchone()  # type: ignore[misc]
        return Gauges(queue, failed, outbox, float(oldest) if oldest is not None else None)

    async def vacuum_queues(self) -> bool:
        """VACUUM the inbox, queue, outbox and analysis table now (housekeeping decides when: after enough rows
        went through). False, with nothing run, when this role does not own them."""
        if self._may_vacuum is None:
            self._may_vacuum = bool(await self._one("may_vacuum"))
        if self._may_vacuum:
            # A connection of its own: a vacuum of the analysis table can take seconds under load, and holding
            # one of the pool's few connections that long starved the claims (the soak saw 30 s stalls).
            async with await AsyncConnection.connect(
                self.pool.conninfo, autocommit=True, application_name="reactor-vacuum"
            ) as conn:
                await conn.execute(q("vacuum_queue_tables"))
        return self._may_vacuum

    async def prune(self, *, retention_days: int, batch: int = 1000) -> dict[str, int]:
        """One small batch of housekeeping: `jobs` rows past the retention (with their job_runs) and tombstones
        no older queue row can need any more. Call again while anything was removed."""
        async with self.pool.connection(timeout=10) as conn:
            jobs = await (
                await conn.execute(q("prune_jobs"), {"job_name": self.job_name, "days": retention_days, "batch": batch})
            ).fetchone()
            tombstones = (await conn.execute(q("prune_tombstones"), {"batch": batch})).rowcount
        return {"jobs": int(jobs[0]) if jobs else 0, "tombstones": tombstones}

    # --- the wake-up protocol ---------------------------------------------------------------------------------

    async def arm(self, ttl_s: float) -> None:
        await self._sleepers("arm", {"id": self.worker_id, "ttl": ttl_s})

    async def disarm(self) -> None:
        await self._sleepers("disarm", {"id": self.worker_id})

    async def _sleepers(self, name: str, params: dict[str, Any]) -> None:
        """A change to our reactor.sleepers row, then the armed flag writers read, republished: one at a time."""
        async with self.pool.connection(timeout=10) as conn, conn.transaction():
            await conn.execute(q("sleepers_lock"))
            await conn.execute(q(name), params)
            await conn.execute(q("publish_armed"))

    async def ready_rows(self) -> bool:
        return bool(await self._one("ready_rows"))

    async def queue_empty(self) -> bool:
        return bool(await self._one("queue_empty"))

    async def send_probe(self, payload: str) -> None:
        await self._run("send_probe", {"payload": payload})

    # --- a batch --------------------------------------------------------------------------------------------

    async def claim(
        self, *, token: str, limit: int, lease_s: float, max_attempts: int, beside: Sequence[str] = ()
    ) -> ClaimResult:
        """Lease up to `limit` rows in one short transaction; rows past `max_attempts` are parked, not retried.
        Rows of a batch whose reactor died are claimed apart, in half that batch's size, taking turns with fresh
        rows, and only when this process has nothing else in flight (`beside`: the tokens of its other batches
        in flight): a death is charged to a row only when it was the one feedback the process held, so each
        batch's claim_size counts the feedbacks of the batches beside it too. Captured changes are
        promoted from the inbox first, in a transaction of their own (they wait for no stop gate)."""
        async with self.pool.connection(timeout=30) as conn:
            async with conn.transaction():
                free = await (await conn.execute(q("promote_lock"))).fetchone()
                if free and free[0]:
                    await conn.execute(q("promote"), {"n": PROMOTE_CHUNK})
            return await self._claim(
                conn, token=token, limit=limit, lease_s=lease_s, max_attempts=max_attempts, beside=beside
            )

    async def _claim(
        self,
        conn: AsyncConnection[Any],
        *,
        token: str,
        limit: int,
        lease_s: float,
        max_attempts: int,
        beside: Sequence[str],
    ) -> ClaimResult:
        async with conn.transaction():
            await conn.execute(q("fail_expired_jobs"))
            crashed = await (await conn.execute(q("crashed_batch_size"))).fetchone()
            params = {"key": self.job_key, "token": token, "lease": lease_s, "n": limit, "beside": list(beside)}
            rows: list[QueueRow] = []
            if crashed is None or self._fresh_turn or beside:
                fresh_only = crashed is not None
                params |= {"crashed_only": False, "fresh_only": fresh_only}
                rows = [QueueRow(*r) for r in await (await conn.execute(q("claim"), params)).fetchall()]
                self._fresh_turn = not (fresh_only and rows)  # fresh rows taken: the dead batch's turn next
            isolated = crashed is not None and not rows and not beside
            if isolated:
                assert crashed is not None
                params |= {"crashed_only": True, "fresh_only": False, "n": max(1, crashed[0] // 2)}
                rows = [QueueRow(*r) for r in await (await conn.execute(q("claim"), params)).fetchall()]
                self._fresh_turn = True
            exhausted = [r for r in rows if r.attempts > max_attempts]
            if exhausted:  # only a death with the row alone is counted, so these rows kill the process
                await conn.execute(
                    q("park"),
                    {
                        "token": token,
                        "ids": [r.queue_id for r in exhausted],
                        "errors": [park_message(r) for r in exhausted],
                        "cause": "crash",
                    },
                )
            rows = [r for r in rows if r.attempts <= max_attempts]
            if rows and beside:  # the batches in flight would die with this one too
                n = len({r.feedback_id for r in rows})
                await conn.execute(q("widen_in_flight"), {"tokens": list(beside), "n": n})
            if not rows:
                return ClaimResult(None, parked=len(exhausted))
            fids = sorted({r.feedback_id for r in rows})
            texts = dict(await (await conn.execute(q("read_feedbacks"), {"ids": fids})).fetchall())
            labels = [r[0] for r in await (await conn.execute(q("active_topics"))).fetchall()]
            job = await (await conn.execute(q("open_job"), {"job_name": self.job_name})).fetchone()
            assert job is not None
            await conn.execute(
                q("open_job_run"),
                {"job_id": job[0], "token": token, "worker": self.worker_id, "rows": len(rows), "lease": lease_s},
            )
        claim = Claim.from_rows(token, job[0], rows, texts, labels)
        return ClaimResult(claim, parked=len(exhausted), isolated=isolated)

    async def extend_lease(self, token: str, lease_s: float) -> None:
        await self._run("extend_lease", {"token": token, "lease": lease_s})

    async def release(self, claim: Claim) -> None:
        """Give a batch back untouched (shutdown before it finished): attempts are not consumed."""
        async with self.pool.connection(timeout=30) as conn, conn.transaction():
            await conn.execute(q("release"), {"token": claim.token})
            await conn.execute(q("close_job"), {"status": "failed", "last_id": None, "job_id": claim.job_id})
            await conn.execute(
                q("close_job_run"), {"job_id": claim.job_id, "ms": None, "error": "released at shutdown"}
            )

    async def complete(
        self, claim: Claim, results: Sequence[Result], *, max_attempts: int, retry_base_s: float = 1.0
    ) -> Outcome:
        """Commit a batch's effects in one transaction. Safe to call again after a lost commit acknowledgement:
        the queue rows are then gone, nothing matches, and nothing is applied twice."""
        async with self.pool.connection(timeout=30) as conn, conn.transaction():
            return await _complete(conn, claim, results, max_attempts, retry_base_s, self.outbox)


async def _complete(
    conn: AsyncConnection[Any],
    claim: Claim,
    results: Sequence[Result],
    max_attempts: int,
    retry_base_s: float,
    outbox: bool,
) -> Outcome:
    out = Outcome()
    failed = failed_results(results)
    if failed:
        await _retry_or_park(conn, claim, failed, max_attempts, retry_base_s, out)
    owned_rows = await (await conn.execute(q("take_owned"), {"ids": claim.queue_ids, "token": claim.token})).fetchall()
    owned = {fid for _qid, fid in owned_rows}
    candidates = sorted(({r.feedback_id for r in results if isinstance(r, Analysis)} | set(claim.deletes)) & owned)
    applied = Applied(frozenset(), {}, {})
    if candidates:
        ids = {"ids": candidates}
        await conn.execute(q("lock_feedbacks"), ids)
        present = frozenset(r[0] for r in await (await conn.execute(q("present_feedbacks"), ids)).fetchall())
        previous = {
            fid: (counts or {}, src)
            for fid, counts, src in await (await conn.execute(q("previous_analysis"), ids)).fetchall()
        }
        tombs = dict(await (await conn.execute(q("tombstones"), ids)).fetchall())
        applied = Applied(present, previous, tombs)
    decided = plan(claim, results, owned, applied)
    out.stale += decided.stale
    if decided.upserts:
        await conn.execute(q("upsert_analysis"), _analysis_columns(decided.upserts, claim))
    if decided.removals:
        await conn.execute(q("delete_analysis"), {"ids": decided.removals})
    if decided.tombstones:
        tombstones = sorted(decided.tombstones.items())
        await conn.execute(
            q("write_tombstones"), {"ids": [f for f, _ in tombstones], "queue_ids": [v for _, v in tombstones]}
        )
    if decided.revived:
        await conn.execute(q("drop_tombstones"), {"ids": decided.revived})
    out.analysed, out.deleted = len(decided.upserts), len(decided.removals)
    changed = decided.changed_words
    docs = decided.docs
    if changed:
        deltas = [decided.word_deltas[w] for w in changed]
        await conn.execute(q("apply_word_deltas"), {"words": changed, "deltas": deltas})
        zeroed = {r[0] for r in await (await conn.execute(q("drop_zero_words"), {"words": changed})).fetchall()}
        docs = docs + [("word", w, "delete" if w in zeroed else "index") for w in changed]
    out.words_changed = len(changed)
    if outbox and docs:
        kinds, doc_ids, actions = (list(x) for x in zip(*docs, strict=True))
        await conn.execute(q("outbox_upsert"), {"kinds": kinds, "doc_ids": doc_ids, "actions": actions})
        out.reindexed = len(set(claim.reindex) & owned)
    all_ids = [i.feedback_id for i in claim.items] + claim.deletes + claim.reindex
    status = "failed" if all_ids and len(failed) == len(all_ids) else "completed"
    await conn.execute(
        q("close_job"), {"status": status, "last_id": max(all_ids) if all_ids else None, "job_id": claim.job_id}
    )
    error = f"{len(failed)} of {len(all_ids)} rows failed: " + "; ".join(out.errors) if failed else None
    await conn.execute(
        q("close_job_run"),
        {"job_id": claim.job_id, "ms": (time.monotonic() - claim.started) * 1000, "error": error},
    )
    return out


async def _retry_or_park(
    conn: AsyncConnection[Any],
    claim: Claim,
    failed: dict[int, Any],
    max_attempts: int,
    retry_base_s: float,
    out: Outcome,
) -> None:
    """Failed rows: retried later with backoff, or parked with their error once attempts are used up."""
    retry = {f: e for f, e in failed.items() if not e.permanent and claim.attempts[f] < max_attempts}
    park = {f: e for f, e in failed.items() if f not in retry}
    rows = claim.rows_of
    if retry:
        await conn.execute(
            q("retry_later"),
            {
                "token": claim.token,
                "ids": [qid for f in retry for qid in rows.get(f, [])],
                "errors": [failed[f].error for f in retry for _ in rows.get(f, [])],
                "delays": [
                    backoff.delay(claim.attempts[f], base=retry_base_s, cap=ROW_RETRY_CAP_S)
                    for f in retry
                    for _ in rows.get(f, [])
                ],
            },
        )
        out.retried = len(retry)
    if park:
        await conn.execute(
            q("park"),
            {
                "token": claim.token,
                "ids": [qid for f in park for qid in rows.get(f, [])],
                "errors": [park[f].error for f in park for _ in rows.get(f, [])],
                "cause": "error",
            },
        )
        out.parked = len(park)
    out.errors = [f"{f}: {e.error}" for f, e in list(failed.items())[:5]]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _analysis_columns(rows: Sequence[Analysis], claim: Claim) -> dict[str, list[Any]]:
    return {
        "feedback_id": [a.feedback_id for a in rows],
        "sentiment_label": [a.sentiment_label for a in rows],
        "sentiment_score": [a.sentiment_score for a in rows],
        "topics": [_json([{"label": lbl, "score": round(s, 6)} for lbl, s in a.topics]) for a in rows],
        "word_counts": [_json(a.word_counts) for a in rows],
        "sentiment_model": [a.sentiment_model for a in rows],
        "zero_shot_model": [a.zero_shot_model for a in rows],
        "topic_set": [a.topic_set for a in rows],
        "source_queue_id": [claim.newest_queue_id[a.feedback_id] for a in rows],
        "enqueued_at": [claim.enqueued_at[a.feedback_id] for a in rows],
    }
