-- One-time migration 1: the reactor's own objects, all inside schema `reactor`.

CREATE SCHEMA IF NOT EXISTS reactor;

-- Work written by the feedback triggers in the user's own transaction: visible exactly when the feedback is.
CREATE TABLE reactor.queue (
    id             bigserial PRIMARY KEY,
    feedback_id    bigint NOT NULL,
    op             text NOT NULL CHECK (op IN ('upsert', 'delete')),
    priority       smallint NOT NULL DEFAULT 0,          -- 0 fresh work, higher = reprocessing (served later)
    enqueued_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    not_before     timestamptz NOT NULL DEFAULT now(),  -- retry backoff
    attempts       integer NOT NULL DEFAULT 0,
    claimed_by     text,                                  -- claim token of the batch holding the lease
    claimed_until  timestamptz,                           -- lease end; an expired lease may be reclaimed
    last_error     text
);
CREATE INDEX queue_pick_idx ON reactor.queue (priority, id);
CREATE INDEX queue_feedback_idx ON reactor.queue (feedback_id);
CREATE INDEX queue_claim_idx ON reactor.queue (claimed_by) WHERE claimed_by IS NOT NULL;

-- Rows that failed max_attempts times, parked with their error until `reactor retry-failed`.
CREATE TABLE reactor.failed (
    queue_id     bigint PRIMARY KEY,
    feedback_id  bigint NOT NULL,
    op           text NOT NULL,
    attempts     integer NOT NULL,
    error        text NOT NULL,
    enqueued_at  timestamptz NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX failed_feedback_idx ON reactor.failed (feedback_id);

-- One row per analysed feedback; word_counts of the row itself make re-analysis and delete deltas exact.
CREATE TABLE reactor.feedback_analysis (
    feedback_id        bigint PRIMARY KEY,
    sentiment_label    text,
    sentiment_score    real,
    topics             jsonb NOT NULL DEFAULT '[]',   -- [{"label": ..., "score": ...}, ...]
    word_counts        jsonb NOT NULL DEFAULT '{}',   -- {"word": count, ...}
    sentiment_model    text,
    zero_shot_model    text,
    topic_set          text,                          -- hash of the active labels used
    source_queue_id    bigint NOT NULL,               -- newest queue row applied; older results never overwrite
    enqueued_at        timestamptz,
    analyzed_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Accumulated word counts: always equal to the sum of feedback_analysis.word_counts.
CREATE TABLE reactor.word_counts (
    word   text PRIMARY KEY,
    count  bigint NOT NULL
);

-- Per-batch details beside the original `jobs` row (kept apart so user tables keep their columns).
CREATE TABLE reactor.job_runs (
    job_id       bigint PRIMARY KEY,
    claim_token  text NOT NULL,
    worker_id    text NOT NULL,
    rows         integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_until  timestamptz NOT NULL,
    finished_at  timestamptz,
    duration_ms  double precision,
    error        text
);
CREATE INDEX job_runs_open_idx ON reactor.job_runs (lease_until) WHERE finished_at IS NULL;

-- Live reactor processes (heartbeats); `reactor status` lists them.
CREATE TABLE reactor.workers (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    state       text NOT NULL
);

-- Search-index work committed with the analysis: at-least-once delivery, documents built from current state.
-- One row per document; a newer change bumps `id`, so a drain that read an older id deletes nothing.
CREATE TABLE reactor.outbox (
    id          bigserial PRIMARY KEY,
    index_kind  text NOT NULL CHECK (index_kind IN ('feedback', 'word')),
    doc_id      text NOT NULL,
    action      text NOT NULL CHECK (action IN ('index', 'delete')),
    attempts    integer NOT NULL DEFAULT 0,
    not_before  timestamptz NOT NULL DEFAULT '-infinity',
    last_error  text,
    parked_at   timestamptz,                  -- set when the item failed permanently (e.g. mapping error)
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (index_kind, doc_id)
);
CREATE INDEX outbox_ready_idx ON reactor.outbox (id) WHERE parked_at IS NULL;
