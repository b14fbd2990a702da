"""A row that kills the process parks only itself (issue 21), forced through PgStore against real PostgreSQL.

No process dies here: a "crash" is what a dead reactor leaves behind, a batch whose lease lapsed (its rows
still carry the dead claim's token). Each crash is followed by a fresh PgStore, as a restarted reactor has.
The driver decides per claim whether it dies: a claim holding a killer row always does, as the model runtime
would. That makes every crash sequence (killer first, in the middle, last, two killers, mixed operations)
exact and repeatable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import pytest

from reactor.batch import Claim
from reactor.enrich import Enricher
from reactor.nlp.standin import StandInSentiment, StandInZeroShot
from reactor.store import PgStore
from tests.support.cli import execute
from tests.support.db import assert_consistent, insert, scalar
from tests.support.inprocess import store_for

ENRICHER = Enricher(StandInSentiment(), StandInZeroShot())


@dataclass
class Run:
    """What a crash sequence did: the claims in order (size, crashed) and the deaths."""

    claims: list[tuple[int, bool]] = field(default_factory=list)
    contents: list[set[int]] = field(default_factory=list)  # feedback ids of each claim
    deaths: int = 0
    parked_by_claims: int = 0


def lapse(url: str, token: str) -> None:
    """The reactor holding `token` is dead and its lease has run out."""
    execute(
        url,
        f"UPDATE reactor.queue SET claimed_until = now() - interval '1 second' WHERE claimed_by = '{token}'",
        f"UPDATE reactor.job_runs SET lease_until = now() - interval '1 second' WHERE claim_token = '{token}'",
    )


def dies_on(claim: Claim, killers: set[int]) -> bool:
    return any(item.feedback_id in killers for item in claim.items)


async def run_until_drained(
    url: str,
    killers: set[int],
    *,
    batch_size: int,
    max_attempts: int,
    before_claim: Callable[[int, Run], None] | None = None,
    limit: int = 200,
) -> Run:
    """Claim → (die | complete) until nothing is left, restarting the 'reactor' (a new PgStore) after each death."""
    run = Run()
    store: PgStore | None = None
    for n in range(limit):
        if store is None:
            store = store_for(url, worker_id=f"w{run.deaths}")
            await store.open()
        if before_claim is not None:
            before_claim(n, run)
        result = await store.claim(token=f"t{n}", limit=batch_size, lease_s=30, max_attempts=max_attempts)
        run.parked_by_claims += result.parked
        c = result.claim
        if c is None:
            if result.parked:
                continue
            break
        crashed = dies_on(c, killers)
        run.claims.append((c.size, crashed))
        run.contents.append(set(c.feedback_ids))
        if crashed:
            run.deaths += 1
            lapse(url, c.token)
            await store.close()
            store = None
        else:
            await store.complete(c, ENRICHER.enrich(c.items, c.labels), max_attempts=max_attempts)
    else:
        raise AssertionError(f"not drained after {limit} claims: {run.claims}")
    if store is not None:
        await store.close()
    return run


def parked(url: str) -> list[tuple[int, str, int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT feedback_id, cause, attempts, error FROM reactor.failed ORDER BY 1").fetchall()


@pytest.mark.parametrize("position", [0, 500, 999], ids=["first", "middle", "last"])
def test_one_killer_in_a_batch_of_1000_parks_only_itself(pg_url, position):
    ids = insert(pg_url, [f"innocent row number {i}" for i in range(1000)])  # one transaction: one batch
    killer = ids[position]
    execute(pg_url, """UPDATE job_configs SET config = '{"batch_size": 1000, "max_attempts": 2}'""")

    run = asyncio.run(run_until_drained(pg_url, {killer}, batch_size=1000, max_attempts=2))

    assert run.claims[0] == (1000, True)
    rows = parked(pg_url)
    assert [r[:3] for r in rows] == [(killer, "crash", 3)], rows
    assert rows[0][3] == "killed the process each of the 2 times it ran alone (crash or kill); parked after 2"
    solo = [size for size, crashed in run.claims if crashed and size == 1]
    assert len(solo) == 2, run.claims  # charged only for the deaths with it alone: max_attempts of them
    assert run.deaths <= 13, run.claims  # log2(1000) + 1 halvings, then max_attempts - 1 more alone
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 999
    assert scalar(pg_url, "SELECT count(*) FROM reactor.queue") == 0
    assert scalar(pg_url, "SELECT count(*) FROM reactor.job_runs WHERE finished_at IS NULL") == 0
    with psycopg.connect(pg_url) as conn:
        conn.execute("DELETE FROM feedbacks WHERE id = %s", [killer])  # assert_consistent: every feedback analysed
    asyncio.run(run_until_drained(pg_url, set(), batch_size=1000, max_attempts=2))
    assert_consistent(pg_url)


def test_two_killers_in_one_batch_park_exactly_those_two(pg_url):
    ids = insert(pg_url, [f"innocent row number {i}" for i in range(1000)])
    killers = {ids[123], ids[876]}

    run = asyncio.run(run_until_drained(pg_url, killers, batch_size=1000, max_attempts=2))

    assert {r[0] for r in parked(pg_url)} == killers
    assert {r[1] for r in parked(pg_url)} == {"crash"}
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 998
    assert len([1 for size, crashed in run.claims if crashed and size == 1]) == 4, run.claims


def test_a_killer_batch_holding_a_delete_and_a_reindex_row(pg_url):
    before = insert(pg_url, [f"analysed before the crashes {i}" for i in range(20)])
    asyncio.run(run_until_drained(pg_url, set(), batch_size=1000, max_attempts=3))
    gone, metadata = before[3], before[7]
    with psycopg.connect(pg_url) as conn:  # one batch: 300 inserts with the killer, a delete and a re-index
        conn.execute("DELETE FROM feedbacks WHERE id = %s", [gone])
        conn.execute("UPDATE feedbacks SET sender = 'someone else' WHERE id = %s", [metadata])
    texts = [f"innocent row number {i}" for i in range(299)]
    killer = insert(pg_url, [*texts[:150], "this text kills the model", *texts[150:]])[150]

    run = asyncio.run(run_until_drained(pg_url, {killer}, batch_size=1000, max_attempts=3))

    assert run.claims[0] == (302, True), run.claims
    assert [r[:2] for r in parked(pg_url)] == [(killer, "crash")]
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE feedback_id = %s", [gone]) == 0
    assert scalar(pg_url, "SELECT count(*) FROM reactor.tombstones WHERE feedback_id = %s", [gone]) == 1
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis WHERE feedback_id = %s", [metadata]) == 1
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 19 + 299
    assert scalar(pg_url, "SELECT count(*) FROM reactor.queue") == 0
    execute(pg_url, f"DELETE FROM feedbacks WHERE id = {killer}")
    asyncio.run(run_until_drained(pg_url, set(), batch_size=1000, max_attempts=3))
    assert_consistent(pg_url)


def test_fresh_rows_take_turns_with_the_bisection(pg_url):
    """A change committed during a bisection waits for one claim of the dead batch at most, not for all of
    them: after every death (a restart) the first claim serves fresh rows, then the halves and fresh rows
    alternate."""
    ids = insert(pg_url, [f"innocent row number {i}" for i in range(64)])
    killer = ids[40]
    written_before: dict[int, int] = {}  # fresh feedback id -> index of the first claim after its commit

    def write_one(n: int, run: Run) -> None:
        if n and len(written_before) < 10:
            written_before[insert(pg_url, [f"fresh change {n}"])[0]] = len(run.claims)

    run = asyncio.run(run_until_drained(pg_url, {killer}, batch_size=64, max_attempts=2, before_claim=write_one))

    assert [r[:2] for r in parked(pg_url)] == [(killer, "crash")]
    halves = [size for size, crashed in run.claims if crashed]
    assert halves[:4] == [64, 32, 16, 8], run.claims
    for fid, first in written_before.items():
        served = next(i for i, ids_ in enumerate(run.contents) if fid in ids_)
        assert served <= first + 1, f"fresh row {fid} waited {served - first} claims: {run.claims}"
        between = run.claims[first:served]
        assert all(not crashed for _, crashed in between) or len(between) <= 1
    assert scalar(pg_url, "SELECT count(*) FROM reactor.feedback_analysis") == 63 + len(written_before)


def test_with_other_batches_in_flight_a_death_is_nobodys_alone(pg_url):
    """A pipelined reactor (issue 20) holds several batches: it claims a dead batch's rows only when nothing
    else is in flight, and one-row batches in flight together are not charged when the process dies: neither
    the one claimed beside the other (`beside`) nor the one claimed first."""
    first, second = insert(pg_url, ["dies in a batch of two", "dies beside it"])

    async def go() -> list[tuple[int, bool]]:
        store = store_for(pg_url)
        await store.open()
        try:
            a = (await store.claim(token="a", limit=1, lease_s=30, max_attempts=2)).claim
            b = (await store.claim(token="b", limit=1, lease_s=30, max_attempts=2, beside=["a"])).claim
            assert a is not None and b is not None
            lapse(pg_url, "a")
            lapse(pg_url, "b")  # the process died holding both
            fresh = insert(pg_url, ["committed after the death"])
            answers = []
            for beside in (["x"], [], []):  # beside others: no crashed row; alone: one, run isolated
                r = await store.claim(token=f"c{len(answers)}", limit=10, lease_s=30, max_attempts=2, beside=beside)
                assert r.claim is not None
                answers.append((r.claim.feedback_ids, r.isolated, r.claim.attempts))
                await store.complete(r.claim, ENRICHER.enrich(r.claim.items, r.claim.labels), max_attempts=2)
            assert answers[0] == (fresh, False, {fresh[0]: 1})
            return answers
        finally:
            await store.close()

    answers = asyncio.run(go())
    # attempt 1 again for both: the death with two feedbacks in the process was charged to neither
    assert answers[1:] == [([first], True, {first: 1}), ([second], True, {second: 1})]
    assert scalar(pg_url, "SELECT count(*) FROM reactor.failed") == 0
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM reactor.feedback_analysis").fetchone()[0] == 3
