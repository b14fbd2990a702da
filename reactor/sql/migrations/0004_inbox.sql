-- One-time migration 4: what capture costs a writer, halved: the writers' inbox and the published armed flag.
--
-- The inbox. The feedbacks triggers append one narrow row here (no sequence, no
-- index, no constraint to check) instead of a full queue row: that halves what capture adds to a writer's
-- transaction. A reactor promotes inbox rows into reactor.queue right before it claims; a change gets its queue
-- id only after it committed, so queue ids follow the order in which the changes committed.
CREATE TABLE reactor.inbox (
    feedback_id  bigint NOT NULL,
    op           text NOT NULL,                            -- 'upsert', 'delete' or 'reindex' (see reactor.queue)
    enqueued_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Rows captured before this migration stay in reactor.queue, where they are served as before.

-- The armed flag as writers read it (reactor.armed()): the latest armed_until in reactor.sleepers, in epoch
-- milliseconds, published by the reactors after each arm and disarm (queries.sql `publish_armed`). Reading a
-- sequence is a function call where reading a table is a query: in the writer's trigger that is most of the
-- flag's cost. reactor.sleepers stays the truth, one row per reactor.
CREATE SEQUENCE reactor.armed_until_ms MINVALUE 0 START 0;
SELECT setval('reactor.armed_until_ms', 0);
