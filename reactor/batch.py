"""A claimed batch and what completing it does, as plain data and pure decisions.

`plan` decides, from what the completing transaction read under its locks, which results apply, which analyses
are removed and the exact word-count delta. The rules live here, free of I/O, so they are tested without a
database; `store.PgStore.complete` only reads, calls `plan` and writes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime

from reactor.enrich import Analysis, Item, ItemError, Result


@dataclass(frozen=True)
class QueueRow:
    """One leased row of reactor.queue, as the claim returned it."""

    queue_id: int
    feedback_id: int
    op: str  # 'upsert' | 'delete' | 'reindex' (the claim decides the real operation from the row as committed)
    attempts: int
    enqueued_at: datetime
    last_error: str | None = None
    crashes: int = 0  # deaths of its batch while it was the batch's only feedback


def park_message(row: QueueRow) -> str:
    """Why a row whose batch died is parked at its next claim: said plainly when every counted attempt was a
    death with the row alone (the row kills the process), else with the last error it had."""
    tried = row.attempts - 1
    if row.crashes >= tried:
        return f"killed the process each of the {tried} times it ran alone (crash or kill); parked after {tried}"
    return (
        f"gave up after {tried} attempts; the last one killed the process with the row alone (crash or kill); "
        f"earlier error: {row.last_error or 'none recorded'}"
    )


@dataclass
class Claim:
    """A leased batch: queue rows grouped per feedback, with the text as committed at claim time."""

    token: str
    job_id: int
    queue_ids: list[int]
    items: list[Item]  # feedbacks whose models run
    labels: list[str]
    newest_queue_id: dict[int, int]  # feedback id -> newest queue id in this batch: the version its result carries
    enqueued_at: dict[int, datetime]  # feedback id -> oldest enqueue time (latency)
    attempts: dict[int, int]  # feedback id -> highest attempt number
    rows_of: dict[int, list[int]]  # feedback id -> its queue ids in this batch
    deletes: list[int]  # feedback ids whose row no longer exists
    reindex: list[int] = field(default_factory=list)  # text unchanged, other columns changed: search doc only
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def from_rows(
        cls, token: str, job_id: int, rows: Iterable[QueueRow], texts: Mapping[int, str | None], labels: list[str]
    ) -> Claim:
        """Group leased rows per feedback. The row as committed decides: gone means delete, present means
        analyse, unless every row of that feedback is a metadata-only 'reindex'."""
        rows = list(rows)
        newest: dict[int, int] = {}
        enqueued: dict[int, datetime] = {}
        attempts: dict[int, int] = {}
        rows_of: dict[int, list[int]] = {}
        analyse: set[int] = set()
        for r in rows:
            if r.op != "reindex":
                analyse.add(r.feedback_id)
            newest[r.feedback_id] = max(newest.get(r.feedback_id, 0), r.queue_id)
            enqueued[r.feedback_id] = min(enqueued.get(r.feedback_id, r.enqueued_at), r.enqueued_at)
            attempts[r.feedback_id] = max(attempts.get(r.feedback_id, 0), r.attempts)
            rows_of.setdefault(r.feedback_id, []).append(r.queue_id)
        fids = sorted(rows_of)
        return cls(
            token=token,
            job_id=job_id,
            queue_ids=[r.queue_id for r in rows],
            items=[Item(f, texts[f]) for f in fids if f in texts and f in analyse],
            labels=labels,
            newest_queue_id=newest,
            enqueued_at=enqueued,
            attempts=attempts,
            rows_of=rows_of,
            deletes=[f for f in fids if f not in texts],
            reindex=[f for f in fids if f in texts and f not in analyse],
        )

    def only(self, fids: set[int]) -> Claim:
        """The part of this batch that concerns `fids` (to store results one feedback at a time)."""
        return Claim(
            token=self.token,
            job_id=self.job_id,
            queue_ids=[qid for f in sorted(fids) for qid in self.rows_of.get(f, [])],
            items=[i for i in self.items if i.feedback_id in fids],
            labels=self.labels,
            newest_queue_id={f: v for f, v in self.newest_queue_id.items() if f in fids},
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

    @property
    def size(self) -> int:
        return len(self.queue_ids)


@dataclass
class ClaimResult:
    """A claim's answer: the batch (None when nothing was ready) and the rows it parked as exhausted."""

    claim: Claim | None = None
    parked: int = 0
    isolated: bool = False  # rows of a dead batch: run with nothing else in flight, so a death is theirs


@dataclass
class Outcome:
    """What a completion did; outcomes of parts of one batch add up with `+`."""

    analysed: int = 0
    deleted: int = 0
    stale: int = 0  # dropped: something newer about the feedback was applied, or our lease was taken over
    retried: int = 0
    parked: int = 0
    words_changed: int = 0
    reindexed: int = 0  # search documents re-queued for a metadata-only change (no model run)
    errors: list[str] = field(default_factory=list)

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class Applied:
    """What the completing transaction reads under the per-feedback locks, for the feedbacks it may change."""

    present: frozenset[int]  # feedbacks that still exist now
    previous: Mapping[int, tuple[Mapping[str, int], int]]  # analysed: (word counts, source queue id)
    tombstones: Mapping[int, int]  # deleted: newest queue id applied


@dataclass
class Plan:
    """The writes of one completion."""

    upserts: list[Analysis] = field(default_factory=list)
    removals: list[int] = field(default_factory=list)  # analyses to delete
    tombstones: dict[int, int] = field(default_factory=dict)  # feedback id -> queue id of the delete applied
    revived: list[int] = field(default_factory=list)  # tombstones an applied upsert makes obsolete
    word_deltas: Counter[str] = field(default_factory=Counter)
    docs: list[tuple[str, str, str]] = field(default_factory=list)  # search-index work: (kind, doc id, action)
    stale: int = 0

    @property
    def changed_words(self) -> list[str]:
        return sorted(w for w, d in self.word_deltas.items() if d)


def plan(claim: Claim, results: Iterable[Result], owned: set[int], applied: Applied) -> Plan:
    """Decide a completion. Rules: a result carries the newest queue id of its feedback in the batch, and is
    dropped when something newer about that feedback was already applied (an analysis or a delete: the
    tombstone survives the delete); a result for a feedback that no longer exists applies as its delete."""
    out = Plan()
    ok = {r.feedback_id: r for r in results if isinstance(r, Analysis)}
    targets = sorted((set(ok) | set(claim.deletes)) & owned)
    out.stale = len((set(ok) | set(claim.deletes)) - owned)
    for fid in targets:
        old_counts, old_version = applied.previous.get(fid, ({}, 0))
        version = claim.newest_queue_id[fid]
        if max(old_version, applied.tombstones.get(fid, 0)) > version:
            out.stale += 1
            continue
        out.word_deltas.subtract(old_counts)
        if fid in ok and fid in applied.present:
            out.word_deltas.update(ok[fid].word_counts)
            out.upserts.append(ok[fid])
            out.docs.append(("feedback", str(fid), "index"))
            if fid in applied.tombstones:
                out.revived.append(fid)
            continue
        if fid in applied.previous:
            out.removals.append(fid)
        out.tombstones[fid] = version
        out.docs.append(("feedback", str(fid), "delete"))
    for fid in sorted(set(claim.reindex) & owned):  # the sink rebuilds the document (or deletes it if none)
        out.docs.append(("feedback", str(fid), "index"))
    return out


def failed_results(results: Iterable[Result]) -> dict[int, ItemError]:
    return {r.feedback_id: r for r in results if isinstance(r, ItemError)}
