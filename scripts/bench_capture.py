#!/usr/bin/env python
"""Capture variants (issue 11): what each shape of the feedbacks INSERT trigger costs the writers.

The evidence behind BENCHMARKS §6 "why (b) stays just under 0.8×": the shipped trigger against the variants
one would try to make it cheaper, pgbench single-row INSERT transactions (bench_writers' script), nobody
listening. Every cell gets a fresh database copied from a template and starts after a CHECKPOINT; each round
runs the variants in order, the next round in reverse; printed: median tps and its ratio to `bare`.

  bare            only the original worker's tables (compat.sql)
  floor           an empty statement trigger of the shipped shape (transition table, SECURITY DEFINER,
                  fixed search_path): what any capture by trigger costs at least
  shipped         `reactor sql` as installed: one narrow reactor.inbox row, then the armed check
  queue-row       the capture before the inbox: the writer wrote the full reactor.queue row (its sequence,
                  pick index, partial indexes, CHECK and defaults), then the armed check
  invoker         shipped, but SECURITY INVOKER without the fixed search_path (not shippable: the writer's
                  role would need rights on schema reactor, and its search_path could redirect operators)
  row-level       shipped, but a FOR EACH ROW trigger inserting NEW.id (no transition table)
  insert-only     shipped without the armed check: the inbox row alone (what the wake-up protocol adds is
                  the difference to `shipped`; without the check nobody could ever be woken)

    python scripts/bench_capture.py                                   # 8 and 32 clients, 10 s, 3 rounds
    python scripts/bench_capture.py --variants bare,shipped --clients 32 --rounds 5
    python scripts/bench_capture.py --clients 1 --synchronous-commit off   # CPU cost: µs per transaction
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from bench_writers import Writers, load, setup_template
from benchlib import database_server, machine

# The capture of 85aaff6..c90c1d5: a full reactor.queue row (sequence, pick index, two partial indexes, CHECK,
# defaults) written by the writer, then the armed check.
QUEUE_ROW = """
CREATE OR REPLACE FUNCTION reactor.enqueue_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO reactor.queue (feedback_id, op) SELECT n.id, 'upsert' FROM new_rows n;
    IF FOUND AND EXISTS (SELECT 1 FROM reactor.sleepers s WHERE s.armed_until > now()) THEN
        PERFORM pg_notify('reactor_work', '');
    END IF;
    RETURN NULL;
END $$;
"""
ROW_LEVEL = """
DROP TRIGGER reactor_feedback_insert ON feedbacks;
CREATE FUNCTION reactor.enqueue_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO reactor.inbox (feedback_id, op) VALUES (NEW.id, 'upsert');
    IF EXISTS (SELECT 1 FROM reactor.sleepers s WHERE s.armed_until > now()) THEN
        PERFORM pg_notify('reactor_work', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER bench_row AFTER INSERT ON feedbacks FOR EACH ROW EXECUTE FUNCTION reactor.enqueue_row();
"""
INSERT_ONLY = """
CREATE OR REPLACE FUNCTION reactor.enqueue_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO reactor.inbox (feedback_id, op) SELECT n.id, 'upsert' FROM new_rows n;
    RETURN NULL;
END $$;
"""
INVOKER = """
ALTER FUNCTION reactor.enqueue_inserted() RESET search_path;
ALTER FUNCTION reactor.enqueue_inserted() SECURITY INVOKER;
"""


EXTRA_SQL = {"queue-row": QUEUE_ROW, "row-level": ROW_LEVEL, "invoker": INVOKER, "insert-only": INSERT_ONLY}
VARIANTS = ("bare", "floor", "shipped", *EXTRA_SQL)


def setup_variant(conn: psycopg.Connection, variant: str) -> None:
    """bench_writers' template of the variant's kind, then the variant's own change to the shipped trigger."""
    setup_template(conn, variant if variant in ("bare", "floor") else "reactor")
    if variant in EXTRA_SQL:
        conn.execute(EXTRA_SQL[variant])  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.epilog = "\n".join(__doc__.splitlines()[2:])
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list; the first is the baseline")
    ap.add_argument("--clients", default="8,32", help="pgbench client counts")
    ap.add_argument("--seconds", type=float, default=10.0, help="pgbench seconds per cell")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each cell (alternating order)")
    ap.add_argument(
        "--synchronous-commit",
        choices=("on", "off"),
        default="on",
        help="the writers' setting; off takes the WAL flush out, so 1 client measures CPU time per transaction",
    )
    a = ap.parse_args()
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = set(names) - set(VARIANTS)
    if unknown or not names or a.rounds < 1:
        raise SystemExit(f"--variants takes {', '.join(VARIANTS)}; --rounds ≥ 1 (got {', '.join(sorted(unknown))})")
    clients = [int(x) for x in a.clients.split(",") if x.strip()]
    os.environ["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} -c synchronous_commit={a.synchronous_commit}"

    tmp = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    with database_server("bench-capture-pg-") as (url, _):
        w = Writers(url, tmp, a)
        w.templates = {name: f"bench_w_{w.tag}_{name.replace('-', '_')}" for name in names}
        m = machine()
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {m['cpu']}, {m['cores']} cores · load average {load()}")
        try:
            w.create_templates(setup_variant)
            tps: dict[tuple[str, int], list[float]] = {}
            for n in clients:
                for r in range(a.rounds):
                    for name in names if r % 2 == 0 else reversed(names):
                        with w.database(name) as db:
                            w.checkpoint()
                            tps.setdefault((name, n), []).append(w.run_pgbench(db, n, a.seconds)["tps"])
            print(
                f"pgbench single-row INSERT transactions, {a.seconds:g} s per cell, median of {a.rounds}, "
                f"synchronous_commit={a.synchronous_commit}"
            )
            for n in clients:
                base = statistics.median(tps[(names[0], n)])
                for name in names:
                    runs = tps[(name, n)]
                    med = statistics.median(runs)
                    spread = f"[{min(runs):,.0f}–{max(runs):,.0f}]"
                    cost = f"  {1e6 / med - 1e6 / base:+5.1f} µs/tx vs {names[0]}" if n == 1 else ""
                    print(f"  {n:3d} clients  {name:14s} {med:9,.0f} tps ({med / base:.2f}×)  {spread}{cost}")
        finally:
            w.drop_templates()
    print(f"load average now {load()}")


if __name__ == "__main__":
    main()
