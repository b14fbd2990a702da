"""What a row parked at its claim says: the claim parks only rows whose batch died with them alone (issue 21)."""

from __future__ import annotations

from datetime import UTC, datetime

from reactor.batch import QueueRow, park_message

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def test_a_row_that_died_alone_every_time_says_it_kills_the_process() -> None:
    row = QueueRow(7, 42, "upsert", attempts=6, enqueued_at=NOW, crashes=5)
    assert park_message(row) == ("killed the process each of the 5 times it ran alone (crash or kill); parked after 5")


def test_a_row_with_earlier_errors_keeps_the_last_one_in_its_message() -> None:
    row = QueueRow(7, 42, "upsert", attempts=4, enqueued_at=NOW, last_error="RuntimeError: boom", crashes=1)
    message = park_message(row)
    assert message.startswith("gave up after 3 attempts; the last one killed the process with the row alone")
    assert message.endswith("earlier error: RuntimeError: boom")
