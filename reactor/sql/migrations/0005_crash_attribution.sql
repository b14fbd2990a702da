-- One-time migration 5: a crash is charged to a row only when the row ran alone (issue 21).
--
-- A batch whose reactor died comes back in halves until the row that kills the process runs alone. Before this
-- migration every re-claim of those halves used up an attempt of every row in it, so with a big batch_size the
-- innocent neighbours ran out of attempts before the culprit was alone. Now the claim gives back the attempt of
-- a row whose previous batch held other feedbacks and died, and counts in `crashes` the deaths it saw alone.

-- Times this row's batch died (lease lapsed) while it was the batch's only feedback.
ALTER TABLE reactor.queue ADD COLUMN crashes integer NOT NULL DEFAULT 0;

-- Why a row was parked: 'crash' (its batch died with it alone, max_attempts times in all) or 'error' (its
-- analysis or its stored result failed). `reactor failed` and `reactor show` print it.
ALTER TABLE reactor.failed ADD COLUMN cause text NOT NULL DEFAULT 'error';
ALTER TABLE reactor.failed ADD CONSTRAINT failed_cause_check CHECK (cause IN ('error', 'crash'));
UPDATE reactor.failed SET cause = 'crash' WHERE error LIKE '%(crash or kill)%';
