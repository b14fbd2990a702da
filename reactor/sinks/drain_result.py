"""What one outbox drain read and decided, row by row: the sink's bookkeeping, kept apart from its I/O."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from reactor.sinks.documents import TOTAL_DOC_ID


@dataclass
class Op:
    outbox_id: int
    kind: str  # 'feedback' | 'word'
    doc_id: str
    attempts: int
    action: str = "delete"  # decided from current state
    source: bytes | None = None
    error: str | None = None  # set before sending → parked without sending


@dataclass
class DrainResult:
    """What one drain decided for each row it read, and the counts; `fetched == limit` means more is waiting."""

    fetched: int = 0
    indexed: int = 0
    deleted: int = 0
    superseded: int = 0  # confirmed, but a newer change bumped the row meanwhile: it stays for the next drain
    locked: bool = False  # another drainer holds the lock
    unavailable: str | None = None  # the cluster is unreachable or refused the request: rows untouched
    cluster_error: str | None = None  # items refused for the cluster's state (429, 503, 403 block): rows held
    index_missing: set[str] = field(default_factory=set)  # kinds whose alias is gone: rebuild, then resend
    elapsed_s: float = 0.0
    confirmed: list[tuple[int, str]] = field(default_factory=list, repr=False)  # (outbox id, kind of doc)
    retry: list[tuple[int, int, str]] = field(default_factory=list, repr=False)  # (outbox id, attempts, error)
    park: list[tuple[int, str]] = field(default_factory=list, repr=False)  # (outbox id, error)
    held: list[tuple[int, str]] = field(default_factory=list, repr=False)  # (outbox id, error): not blamed

    @property
    def done(self) -> int:
        return self.indexed + self.deleted

    @property
    def retried(self) -> int:
        return len(self.retry)

    @property
    def parked(self) -> int:
        return len(self.park)

    def confirm(self, op: Op) -> None:
        self.confirmed.append((op.outbox_id, TOTAL_DOC_ID if op.doc_id == TOTAL_DOC_ID else op.kind))
        self.indexed += op.action == "index"
        self.deleted += op.action == "delete"

    def hold(self, op: Op, error: str) -> None:
        self.held.append((op.outbox_id, error))


def chunk_lines(lines: Iterable[tuple[Op, bytes]], max_docs: int, max_bytes: int) -> Iterator[list[tuple[Op, bytes]]]:
    """Split bulk action lines into requests of at most max_docs items and about max_bytes bytes."""
    chunk: list[tuple[Op, bytes]] = []
    size = 0
    for op, payload in lines:
        if chunk and (len(chunk) >= max_docs or size + len(payload) > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((op, payload))
        size += len(payload)
    if chunk:
        yield chunk
