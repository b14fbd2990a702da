"""The application's load: writer threads doing INSERTs, text UPDATEs, metadata UPDATEs, DELETEs and multi-row
transactions at a steady rate with bursts, topic edits, and the application's own log of what it wrote to
each id (writes.csv: the history a breach is read against).

A statement whose connection dies (a PostgreSQL restart) is retried on a new connection; one that died during
COMMIT has an unknown outcome and is logged as such: the checker compares the reactor's results with what
PostgreSQL holds, never with this log, which is only the history.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

WORDS = (
    "fast slow price support crash login screen payment refund great awful button update delivery checkout "
    "invoice password upload search filter export dark mode battery sync offline parcel courier tracking "
    "discount coupon subscription cancel renewal account profile avatar notification email receipt warranty "
    "return exchange size colour fabric stitching zipper pocket sleeve collar laptop charger cable adapter "
    "keyboard mouse monitor speaker headphones microphone camera lens tripod printer scanner router modem "
    "signal latency outage reboot firmware driver install uninstall license activation trial premium basic "
    "family sharing storage backup restore migrate import calendar reminder alarm timer widget theme font "
    "layout gesture swipe scroll zoom rotate crop filter sticker emoji friendly rude helpful useless cheap "
    "expensive reliable flaky smooth laggy broken fixed"
).split()
TAGS = [f"tag{a}{b}" for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"]  # 676 tags
PRODUCTS = [f"product-{i}" for i in range(25)]
INITIAL_TOPICS = ["price", "delivery", "support", "quality", "app", "billing"]
EXTRA_TOPICS = ["battery", "design", "security", "speed", "refunds", "accessibility", "shipping", "returns"]


def text_for(rng: random.Random) -> str | None:
    """Random words and a tag: two versions of one row differ in their word counts (the fingerprint the checker
    reads); 1 % empty or NULL texts (no classification: the `__UNKNOWN__` path)."""
    roll = rng.random()
    if roll < 0.005:
        return None
    if roll < 0.01:
        return ""
    return " ".join([*(rng.choice(WORDS) for _ in range(rng.randint(3, 14))), rng.choice(TAGS)])


class AppLog:
    """writes.csv: epoch, thread, op, feedback id, detail (the text written, or the columns): appended as each
    transaction commits (`?` ops: the connection died during COMMIT, outcome unknown)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", buffering=1 << 16)
        self._lock = threading.Lock()
        self._file.write("t,writer,op,feedback_id,detail\n")

    def write(self, writer: str, entries: list[tuple[str, int, str]], t: float | None = None) -> None:
        stamp = f"{t or time.time():.3f}"
        lines = "".join(f"{stamp},{writer},{op},{fid},{_csv(detail)}\n" for op, fid, detail in entries)
        with self._lock:
            self._file.write(lines)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def history(self, fid: int) -> list[str]:
        self.flush()
        needle = f",{fid},"
        with self.path.open() as f:
            return [line.rstrip("\n") for line in f if needle in line and line.split(",")[3] == str(fid)]


def _csv(value: object) -> str:
    text = "NULL" if value is None else str(value)
    return '"' + text.replace('"', '""') + '"'


class Pending:
    """Inserted ids waiting for their first analysis, with their commit time: the monitor turns them into
    insert→analysed latency samples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ids: dict[int, float] = {}

    def add(self, fids: list[int], t: float) -> None:
        with self._lock:
            for fid in fids:
                self.ids[fid] = t

    def discard(self, fids: list[int]) -> None:
        with self._lock:
            for fid in fids:
                self.ids.pop(fid, None)

    def snapshot(self, limit: int = 20000) -> dict[int, float]:
        with self._lock:
            return dict(list(self.ids.items())[:limit])


class Pool:
    """Ids the application may update or delete (killer rows never enter it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[int] = []

    def add(self, fids: list[int]) -> None:
        with self._lock:
            self._ids.extend(fids)

    def pick(self, rng: random.Random) -> int | None:
        with self._lock:
            return rng.choice(self._ids) if self._ids else None

    def take(self, rng: random.Random) -> int | None:
        """Remove and return a random id (for a delete)."""
        with self._lock:
            if len(self._ids) < 50:
                return None
            i = rng.randrange(len(self._ids))
            self._ids[i], self._ids[-1] = self._ids[-1], self._ids[i]
            return self._ids.pop()

    def __len__(self) -> int:
        return len(self._ids)


@dataclass
class Rate:
    """Changes per second over time: steady, with a burst of `burst_x` for `burst_s` every `burst_every_s`."""

    base: float
    burst_x: float = 4.0
    burst_every_s: float = 60.0
    burst_s: float = 4.0

    def at(self, elapsed: float) -> float:
        in_burst = elapsed % self.burst_every_s >= self.burst_every_s - self.burst_s
        return self.base * (self.burst_x if in_burst else 1.0)


class Writers:
    """`n` writer threads sharing `rate`; counts committed changes (rows the triggers capture)."""

    MIX = (("insert", 0.42), ("text", 0.22), ("meta", 0.16), ("delete", 0.08), ("multi", 0.12))

    def __init__(
        self, url: str, n: int, rate: Rate, seed: int, log: AppLog, pending: Pending, pool: Pool,
        on_error: Callable[[str], None],
    ) -> None:  # fmt: skip
        self.url, self.n, self.rate, self.seed = url, n, rate, seed
        self.log, self.pending, self.pool, self.on_error = log, pending, pool, on_error
        self.changes = 0
        self.unknown = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._local = threading.local()  # each writer's transaction in flight (logged as unknown if it dies)
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        for i in range(self.n):
            t = threading.Thread(target=self._run, args=(i,), name=f"writer-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
        self.log.flush()

    def _run(self, i: int) -> None:
        rng = random.Random(self.seed * 1000 + i)
        name = f"w{i}"
        conn: psycopg.Connection | None = None
        next_t = time.monotonic()
        while not self._stop.is_set():
            rate = self.rate.at(time.monotonic() - self.t0) / self.n
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                kind = _choose(rng, self.MIX)
                done = self._one(conn, rng, name, kind)
                with self._lock:
                    self.changes += done
                next_t += max(done, 1) / rate
            except psycopg.OperationalError as exc:  # the server restarts: reconnect and go on
                self._lost_connection(conn, name, exc)
                conn = None
                self._stop.wait(0.2)
                next_t = time.monotonic()
            except psycopg.Error as exc:
                self.on_error(f"{name}: {type(exc).__name__}: {str(exc).strip()[:200]}")
                next_t = time.monotonic()
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -1:
                next_t = time.monotonic()  # fell behind (a restart): do not catch up in one go
        if conn is not None:
            conn.close()

    def _lost_connection(self, conn: psycopg.Connection | None, name: str, exc: Exception) -> None:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        inflight = getattr(self._local, "inflight", [])
        if inflight:
            with self._lock:
                self.unknown += 1
            self.log.write(name, [(f"{op}?", fid, d) for op, fid, d in inflight])
        self._local.inflight = []

    def _one(self, conn: psycopg.Connection, rng: random.Random, name: str, kind: str) -> int:
        """One transaction; returns the changes it committed."""
        if kind == "multi":
            return self._multi(conn, rng, name)
        if kind == "insert" or len(self.pool) < 50:
            text = text_for(rng)
            fid = conn.execute(
                "INSERT INTO feedbacks (text, product_name, sender) VALUES (%s, %s, %s) RETURNING id",
                [text, rng.choice(PRODUCTS), f"user{rng.randrange(5000)}"],
            ).fetchone()[0]
            t = time.time()
            self.pending.add([fid], t)
            self.pool.add([fid])
            self.log.write(name, [("insert", fid, text)], t)
            return 1
        if kind == "delete":
            fid = self.pool.take(rng)
            if fid is None:
                return 0
            n = conn.execute("DELETE FROM feedbacks WHERE id = %s", [fid]).rowcount
            self.pending.discard([fid])
            self.log.write(name, [("delete", fid, n)])
            return n
        fid = self.pool.pick(rng)
        if fid is None:
            return 0
        if kind == "text":
            text = text_for(rng)
            n = conn.execute("UPDATE feedbacks SET text = %s, updated_at = now() WHERE id = %s", [text, fid]).rowcount
            self.log.write(name, [("text" if n else "text-noop", fid, text)])
            return n
        product = rng.choice(PRODUCTS)
        n = conn.execute("UPDATE feedbacks SET product_name = %s WHERE id = %s", [product, fid]).rowcount
        self.log.write(name, [("meta" if n else "meta-noop", fid, product)])
        return n

    def _multi(self, conn: psycopg.Connection, rng: random.Random, name: str) -> int:
        """A transaction of 2–12 inserts (one multi-row statement), a text update and a metadata update of other
        rows, sometimes a delete: the statement-level triggers see several rows at once."""
        texts = [text_for(rng) for _ in range(rng.randint(2, 12))]
        entries: list[tuple[str, int, str]] = []
        upd, meta = self.pool.pick(rng), self.pool.pick(rng)
        gone = self.pool.take(rng) if rng.random() < 0.3 else None
        with conn.transaction():
            cur = conn.execute(
                "INSERT INTO feedbacks (text, product_name, sender) SELECT t, %s, %s FROM unnest(%s::text[]) "
                "WITH ORDINALITY AS v(t, n) ORDER BY n RETURNING id",
                [rng.choice(PRODUCTS), f"user{rng.randrange(5000)}", texts],
            )
            ids = [r[0] for r in cur.fetchall()]
            entries += [("insert", fid, text) for fid, text in zip(ids, texts, strict=True)]
            if upd is not None:
                text = text_for(rng)
                conn.execute("UPDATE feedbacks SET text = %s WHERE id = %s", [text, upd])
                entries.append(("text", upd, text))
            if meta is not None:
                sender = f"user{rng.randrange(5000)}"
                conn.execute("UPDATE feedbacks SET sender = %s WHERE id = %s", [sender, meta])
                entries.append(("meta", meta, sender))
            if gone is not None:
                conn.execute("DELETE FROM feedbacks WHERE id = %s", [gone])
                entries.append(("delete", gone, ""))
            self._local.inflight = [(f"tx-{op}", fid, d) for op, fid, d in entries]
        self._local.inflight = []
        t = time.time()
        self.pending.add(ids, t)
        if gone is not None:
            self.pending.discard([gone])
        self.pool.add(ids)
        self.log.write(name, [(f"tx-{op}", fid, d) for op, fid, d in entries], t)
        return len(entries)


def _choose(rng: random.Random, mix: tuple[tuple[str, float], ...]) -> str:
    roll = rng.random()
    for kind, p in mix:
        roll -= p
        if roll < 0:
            return kind
    return mix[-1][0]


class Topics:
    """The topics table as the soak edits it, and every active label set it ever had (by topic_set id), so the
    checker can recompute the stand-in's topics for whichever set an analysis was made with."""

    def __init__(self, url: str, seed: int) -> None:
        from reactor.enrich import topic_set_id

        self.url, self._id = url, topic_set_id
        self.rng = random.Random(seed + 7)
        self.sets: dict[str, list[str]] = {}

    def install(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO topics (label) SELECT unnest(%s::text[]) ON CONFLICT (label) DO NOTHING", [INITIAL_TOPICS]
            )
            self._record(conn)

    def edit(self) -> str:
        """Deactivate, activate or add one label (at least two stay active); returns what it did."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute("SELECT label, is_active FROM topics ORDER BY label").fetchall()
            active = [label for label, on in rows if on]
            inactive = [label for label, on in rows if not on]
            new = [t for t in EXTRA_TOPICS if t not in {label for label, _ in rows}]
            roll = self.rng.random()
            if roll < 0.35 and len(active) > 2:
                label, what = self.rng.choice(active), "deactivate"
                conn.execute("UPDATE topics SET is_active = false, updated_at = now() WHERE label = %s", [label])
            elif roll < 0.7 and inactive:
                label, what = self.rng.choice(inactive), "activate"
                conn.execute("UPDATE topics SET is_active = true, updated_at = now() WHERE label = %s", [label])
            elif new:
                label, what = new[0], "add"
                conn.execute("INSERT INTO topics (label) VALUES (%s)", [label])
            else:
                label, what = self.rng.choice(active), "touch"
                conn.execute("UPDATE topics SET description = %s WHERE label = %s", [str(time.time()), label])
            self._record(conn)
            return f"{what} {label}"

    def _record(self, conn: psycopg.Connection) -> None:
        labels = [r[0] for r in conn.execute("SELECT label FROM topics WHERE is_active ORDER BY label")]
        self.sets[self._id(labels)] = labels
