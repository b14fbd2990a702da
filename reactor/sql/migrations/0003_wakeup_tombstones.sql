-- One-time migration 3: the wake-up protocol, delete tombstones, the validated job_configs keys, halving
-- retries after a crash, and a queue whose insert costs the writers a single index.

-- Reactors waiting for work. Writers notify only while some row here is armed (they read it, taking no lock);
-- a reactor killed while armed stops counting once armed_until passes.
CREATE TABLE reactor.sleepers (
    worker_id    text PRIMARY KEY,
    armed_until  timestamptz NOT NULL
);

-- The newest queue id applied for a feedback whose analysis was deleted: a result computed from an older queue
-- row is never applied after the delete (feedback_analysis.source_queue_id does the same while it exists).
CREATE TABLE reactor.tombstones (
    feedback_id  bigint PRIMARY KEY,
    queue_id     bigint NOT NULL,
    deleted_at   timestamptz NOT NULL DEFAULT now()
);

-- The job_configs keys the reactor obeys: the validation trigger checks these rows only.
CREATE TABLE reactor.job_keys (
    key  text PRIMARY KEY
);

-- Rows in the batch that last claimed the row: a batch whose reactor died is retried in halves.
ALTER TABLE reactor.queue ADD COLUMN claim_size integer;

-- The writers' insert maintains one index, the pick order. Lookups by id, by claim token or by feedback only
-- concern leased rows, which the partial indexes cover (the claim's UPDATE writes those, not the writers).
ALTER TABLE reactor.queue DROP CONSTRAINT queue_pkey;
DROP INDEX reactor.queue_feedback_idx;
CREATE INDEX queue_leased_feedback_idx ON reactor.queue (feedback_id) WHERE claimed_by IS NOT NULL;
