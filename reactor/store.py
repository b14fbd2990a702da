"""The two short transactions of a batch: `claim` (lease rows, read texts, open the job) and `complete`
(results, word-count deltas, job record, outbox and queue removal, all or nothing).

No transaction is ever open while models run: the lease on the queue rows is what holds the work.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection

from reactor import backoff
from reactor.enrich import Analysis, Item, ItemError, Result
from reactor.sql import q

DEFAULT_BATCH_SIZE = 10
MAX_BATCH_SIZE = 10_000
DEFAULT_MAX_ATTEMPTS = 5
ROW_RETRY_CAP_S = 300.0  # a failing row is retried at least every 5 minutes


@dataclass(frozen=True)
class JobConfig:
    """The reactor's row of `job_configs`, validated (bad values fall back to defaults, with a warning)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    run_next_job: bool = True
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    problems: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Any) -> JobConfig:
        if raw is None:
            return cls(problems=("no job_configs row for this key: using defaults",))
        if not isinstance(raw, dict):
            return cls(problems=(f"config is not a JSON object: {raw!r}",))
        problems = []

        def number(key: str, default: int, lo: int, hi: int) -> int:
            value = raw.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                problems.append(f"{key}={value!r} is not a number")
                return default
            try:
                number = int(value)
            except ValueError:
                problems.append(f"{key}={value!r} is not a number")
                return default
            if not lo <= number <= hi:
                problems.append(f"{key}={number} outside {lo}..{hi}, clamped")
            return min(max(number, lo), hi)

        run = raw.get("run_next_job", True)
        if isinstance(run, str):
            run = run.strip().lower() not in ("false", "0", "no", "off")
        return cls(
            batch_size=number("batch_size", DEFAULT_BATCH_SIZE, 1, MAX_BATCH_SIZE),
            run_next_job=bool(run),
            max_attempts=number("max_attempts", DEFAULT_MAX_ATTEMPTS, 1, 100),
            problems=tuple(problems),
        )


@dataclass
class Claim:
    """A leased batch: queue rows grouped per feedback, with the text as committed at claim time."""

    token: str
    job_id: int
    queue_ids: list[int]
    items: list[Item]
    labels: list[str]
    version: dict[int, int]  # feedback id -> newest queue id in this batch
    enqueued_at: dict[int, datetime]  # feedback id -> oldest enqueue time (latency)
    attempts: dict[int, int]  # feedback id -> highest attempt number
    rows_of: dict[int, list[int]]  # feedback id -> its queue ids in this batch
    deletes: list[int]  # feedback ids whose row no longer exists
    reindex: list[int] = field(default_factory=list)  # text unchanged, other columns changed: search doc only
    started: float = field(default_factory=time.monotonic)

    def only(self, fids: set[int]) -> Claim:
        """The part of this batch that concerns `fids` (to store results one feedback at a time)."""
        return Claim(
            token=self.token,
            job_id=self.job_id,
            queue_ids=[qid for f in sorted(fids) for qid in self.rows_of.get(f, [])],
            items=[i for i in self.items if i.feedback_id in fids],
            labels=self.labels,
            version={f: v for f, v in self.version.items() if f in fids},
            enqueued_at={f: v for f, v in self.enqueued_at.items() if f in fids},
            attempts={f: v for f, v in self.attempts.items() if f in fids},
            rows_of={f: v for f, v in self.rows_of.items() if f in fids},
            deletes=[f for f in self.deletes if f in fids],
            reindex=[f for f in self.reindex if f in fids],
            started=self.started,
        )

    @property
    def feedback_ids(self) -> list[int]:
        return sorted(self.rows_of)


@dataclass
class Outcome:
    """What a completion did; outcomes of parts of one batch add up with `+`."""

    analysed: int = 0
    deleted: int = 0
    stale: int = 0  # dropped: a newer result was already committed, or our lease was taken over
    retried: int = 0
    parked: int = 0
    words_changed: int = 0
    reindexed: int = 0  # search documents re-queued for a metadata-only change (no model run)
    errors: list[str] = field(default_factory=list)

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


async def read_config(conn: AsyncConnection, key: str) -> JobConfig:
    row = await (await conn.execute(q("read_job_config"), {"key": key})).fetchone()
    return JobConfig.parse(row[0] if row else None)


async def claim(
    conn: AsyncConnection,
    *,
    token: str,
    worker_id: str,
    key: str,
    job_name: str,
    limit: int,
    lease_s: float,
    max_attempts: int,
) -> Claim | None:
    """Lease up to `limit` rows in one short transaction; rows past `max_attempts` are parked, not retried."""
    async with conn.transaction():
        await conn.execute(q("fail_expired_jobs"))
        rows = await (
            await conn.execute(q("claim"), {"key": key, "n": limit, "token": token, "lease": lease_s})
        ).fetchall()
        if not rows:
            return None
        exhausted = [r for r in rows if r[3] > max_attempts]
        if exhausted:
            await conn.execute(
                q("park"),
                {
                    "token": token,
                    "ids": [r[0] for r in exhausted],
                    "errors": [
                        f"gave up after {r[3] - 1} attempts; last error: "
                        f"{r[5] or 'the reactor stopped while processing it (crash or kill)'}"
                        for r in exhausted
                    ],
                },
            )
        rows = [r for r in rows if r[3] <= max_attempts]
        if not rows:
            return None
        fids = sorted({r[1] for r in rows})
        texts = dict(await (await conn.execute(q("read_feedbacks"), {"ids": fids})).fetchall())
        labels = [r[0] for r in await (await conn.execute(q("active_topics"))).fetchall()]
        job_id = (await (await conn.execute(q("open_job"), {"job_name": job_name})).fetchone())[0]
        await conn.execute(
            q("open_job_run"),
            {"job_id": job_id, "token": token, "worker": worker_id, "rows": len(rows), "lease": lease_s},
        )
    version: dict[int, int] = {}
    enqueued: dict[int, datetime] = {}
    attempts: dict[int, int] = {}
    rows_of: dict[int, list[int]] = {}
    analyse: set[int] = set()  # feedbacks with at least one upsert/delete row: the models run for these
    for qid, fid, op, att, enq, _err in rows:
        if op != "reindex":
            analyse.add(fid)
        version[fid] = max(version.get(fid, 0), qid)
        enqueued[fid] = min(enqueued.get(fid, enq), enq)
        attempts[fid] = max(attempts.get(fid, 0), att)
        rows_of.setdefault(fid, []).append(qid)
    # The row as committed now decides the operation: gone means delete, present means (re)analyse.
    return Claim(
        token=token,
        job_id=job_id,
        queue_ids=[r[0] for r in rows],
        items=[Item(fid, texts[fid]) for fid in fids if fid in texts and fid in analyse],
        labels=labels,
        version=version,
        enqueued_at=enqueued,
        attempts=attempts,
        rows_of=rows_of,
        deletes=[fid for fid in fids if fid not in texts],
        reindex=[fid for fid in fids if fid in texts and fid not in analyse],
    )


async def extend_lease(conn: AsyncConnection, token: str, lease_s: float) -> None:
    await conn.execute(q("extend_lease"), {"token": token, "lease": lease_s})


async def release(conn: AsyncConnection, token: str, job_id: int) -> None:
    """Give a batch back untouched (shutdown before it finished): attempts are not consumed."""
    async with conn.transaction():
        await conn.execute(q("release"), {"token": token})
        await conn.execute(q("close_job"), {"status": "failed", "last_id": None, "job_id": job_id})
        await conn.execute(q("close_job_run"), {"job_id": job_id, "ms": None, "error": "released at shutdown"})


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def complete(
    conn: AsyncConnection,
    claim_: Claim,
    results: Sequence[Result],
    *,
    max_attempts: int,
    outbox: bool,
    retry_base_s: float = 1.0,
) -> Outcome:
    """Commit a batch's effects in one transaction. Safe to call again after a lost commit acknowledgement:
    the queue rows are then gone, nothing matches, and nothing is applied twice."""
    out = Outcome()
    deletes = claim_.deletes
    ok: dict[int, Analysis] = {r.feedback_id: r for r in results if isinstance(r, Analysis)}
    failed: dict[int, ItemError] = {r.feedback_id: r for r in results if isinstance(r, ItemError)}
    async with conn.transaction():
        if failed:
            retry = {f: e for f, e in failed.items() if not e.permanent and claim_.attempts[f] < max_attempts}
            park = {f: e for f, e in failed.items() if f not in retry}
            fq = claim_.rows_of
            if retry:
                ids = [qid for f in retry for qid in fq.get(f, [])]
                await conn.execute(
                    q("retry_later"),
                    {
                        "token": claim_.token,
                        "ids": ids,
                        "errors": [failed[f].error for f in retry for _ in fq.get(f, [])],
                        "delays": [
                            backoff.delay(claim_.attempts[f], base=retry_base_s, cap=ROW_RETRY_CAP_S)
                            for f in retry
                            for _ in fq.get(f, [])
                        ],
                    },
                )
                out.retried = len(retry)
            if park:
                await conn.execute(
                    q("park"),
                    {
                        "token": claim_.token,
                        "ids": [qid for f in park for qid in fq.get(f, [])],
                        "errors": [park[f].error for f in park for _ in fq.get(f, [])],
                    },
                )
                out.parked = len(park)
            out.errors = [f"{f}: {e.error}" for f, e in list(failed.items())[:5]]
        owned_rows = await (
            await conn.execute(q("take_owned"), {"ids": claim_.queue_ids, "token": claim_.token})
        ).fetchall()
        owned = {fid for _qid, fid in owned_rows}
        targets = sorted((set(ok) | set(deletes)) & owned)
        out.stale += len((set(ok) | set(deletes)) - owned)
        words: Counter[str] = Counter()
        docs: list[tuple[str, str, str]] = []  # search-index work: (kind, doc id, action)
        if targets:
            await conn.execute(q("lock_feedbacks"), {"ids": targets})
            prev = {
                fid: (counts or {}, src)
                for fid, counts, src in await (await conn.execute(q("previous_analysis"), {"ids": targets})).fetchall()
            }
            upserts: list[Analysis] = []
            removals: list[int] = []
            for fid in targets:
                old_counts, old_version = prev.get(fid, ({}, 0))
                if old_version > claim_.version[fid]:
                    out.stale += 1  # a newer text's analysis is already committed
                    continue
                words.subtract(old_counts)
                if fid in ok:
                    words.update(ok[fid].word_counts)
                    upserts.append(ok[fid])
                elif fid in prev:
                    removals.append(fid)
            if upserts:
                await conn.execute(q("upsert_analysis"), _analysis_columns(upserts, claim_))
            if removals:
                await conn.execute(q("delete_analysis"), {"ids": removals})
            out.analysed, out.deleted = len(upserts), len(removals)
            changed = sorted(w for w, d in words.items() if d)
            zeroed: list[str] = []
            if changed:
                await conn.execute(q("apply_word_deltas"), {"words": changed, "deltas": [words[w] for w in changed]})
                zeroed = [r[0] for r in await (await conn.execute(q("drop_zero_words"), {"words": changed})).fetchall()]
            out.words_changed = len(changed)
            docs += [("feedback", str(a.feedback_id), "index") for a in upserts]
            docs += [("feedback", str(f), "delete") for f in targets if f in deletes]
            gone = set(zeroed)
            docs += [("word", w, "delete" if w in gone else "index") for w in changed]
        # Metadata-only changes: the sink rebuilds the document from the stored analysis (or deletes it if none).
        reindex = sorted(set(claim_.reindex) & owned)
        docs += [("feedback", str(f), "index") for f in reindex]
        if outbox and docs:
            kinds, doc_ids, actions = (list(x) for x in zip(*docs, strict=True))
            await conn.execute(q("outbox_upsert"), {"kinds": kinds, "doc_ids": doc_ids, "actions": actions})
            out.reindexed = len(reindex)
        all_ids = [i.feedback_id for i in claim_.items] + deletes + claim_.reindex
        status = "failed" if all_ids and len(failed) == len(all_ids) else "completed"
        await conn.execute(
            q("close_job"),
            {"status": status, "last_id": max(all_ids) if all_ids else None, "job_id": claim_.job_id},
        )
        error = f"{len(failed)} of {len(all_ids)} rows failed: " + "; ".join(out.errors) if failed else None
        await conn.execute(
            q("close_job_run"),
            {"job_id": claim_.job_id, "ms": (time.monotonic() - claim_.started) * 1000, "error": error},
        )
    return out


def _analysis_columns(rows: Sequence[Analysis], claim_: Claim) -> dict[str, list[Any]]:
    return {
        "feedback_id": [a.feedback_id for a in rows],
        "sentiment_label": [a.sentiment_label for a in rows],
        "sentiment_score": [a.sentiment_score for a in rows],
        "topics": [_json([{"label": lbl, "score": round(s, 6)} for lbl, s in a.topics]) for a in rows],
        "word_counts": [_json(a.word_counts) for a in rows],
        "sentiment_model": [a.sentiment_model for a in rows],
        "zero_shot_model": [a.zero_shot_model for a in rows],
        "topic_set": [a.topic_set for a in rows],
        "source_queue_id": [claim_.version[a.feedback_id] for a in rows],
        "enqueued_at": [claim_.enqueued_at[a.feedback_id] for a in rows],
    }
