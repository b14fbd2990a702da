-- Named queries used by the reactor, loaded by reactor.sql.queries(). Each block starts with `-- name: NAME`.
-- `%(name)b` sends a parameter in binary: the batch statements pass arrays of hundreds of texts, which psycopg
-- would otherwise quote and escape one by one (half the time of a completion, measured).

-- name: install_lock
-- Concurrent `reactor sql` runs (and uninstalls) take turns.
SELECT pg_advisory_xact_lock(7305447001);

-- name: feedback_table_columns
-- Columns and (base) types of the original worker's tables, resolved through the search_path as the triggers
-- are; a table that does not exist yet returns nothing (compat.sql creates it).
SELECT t.name, a.attname, format_type(coalesce(nullif(ty.typbasetype, 0), a.atttypid), NULL)
  FROM unnest(%(tables)s::text[]) AS t(name)
  JOIN pg_attribute a ON a.attrelid = to_regclass(t.name) AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type ty ON ty.oid = a.atttypid;

-- name: applied_migrations
SELECT version FROM reactor.schema_version;

-- name: record_migration
INSERT INTO reactor.schema_version (version, name, checksum) VALUES (%(version)s, %(name)s, %(checksum)s);

-- name: installed_checksum
SELECT checksum FROM reactor.installed WHERE name = %(name)s;

-- name: record_installed
INSERT INTO reactor.installed (name, checksum) VALUES (%(name)s, %(checksum)s)
ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, installed_at = now();

-- name: listener_roles
-- Roles `reactor sql --grant-listener` gave rights before: they hold DELETE on reactor.queue (its owner aside).
SELECT DISTINCT r.rolname
  FROM pg_class c, aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
 WHERE c.oid = 'reactor.queue'::regclass AND a.privilege_type = 'DELETE' AND a.grantee <> c.relowner
 ORDER BY 1;

-- name: schema_version
SELECT CASE WHEN to_regclass('reactor.schema_version') IS NULL THEN NULL
            ELSE (SELECT max(version) FROM reactor.schema_version) END;

-- name: jobs_sequence
-- The user's jobs table may use a serial (its sequence needs a grant) or an identity column.
SELECT pg_get_serial_sequence('jobs', 'id');

-- name: register_job_key
-- The validation trigger checks the job_configs rows whose key is registered here.
INSERT INTO reactor.job_keys (key) VALUES (%(key)s) ON CONFLICT DO NOTHING;

-- name: ensure_job_config
-- The reactor's control row, added once when absent (operators own it afterwards).
INSERT INTO job_configs (key, config)
SELECT %(key)s, '{"batch_size": 10, "run_next_job": true}'
 WHERE NOT EXISTS (SELECT 1 FROM job_configs WHERE key = %(key)s);

-- name: read_job_config
-- Effective values through the one definition (reactor.read_job_config); no row reads as the defaults.
SELECT r.running, r.batch_size, r.max_attempts, r.jobs_retention_days, r.problems
  FROM job_configs c, reactor.read_job_config(c.config::text) r
 WHERE c.key = %(key)s ORDER BY c.id LIMIT 1;

-- name: set_run_next_job
-- Works on any stored value: a config that is not a JSON object is replaced by one holding only the flag.
UPDATE job_configs
   SET config = (CASE WHEN jsonb_typeof(reactor.config_or_null(config::text)) = 'object'
                      THEN reactor.config_or_null(config::text) ELSE '{}'::jsonb END
                 || jsonb_build_object('run_next_job', %(run)s::boolean)),
       updated_at = now()
 WHERE key = %(key)s;

-- name: fail_expired_jobs
-- Batches whose reactor died (lease expired) get their `jobs` row closed as failed, so status stays truthful.
WITH dead AS (
    UPDATE reactor.job_runs r
       SET finished_at = clock_timestamp(), error = 'lease expired: the reactor holding this batch stopped'
     WHERE r.finished_at IS NULL AND r.lease_until < now()
    RETURNING r.job_id
)
UPDATE jobs j SET status = 'failed', updated_at = now() FROM dead WHERE j.id = dead.job_id AND j.status = 'processing';

-- name: crashed_batch_size
-- A ready row whose lease expired (the reactor holding it died): how many feedbacks the batch that held it had.
-- Such rows are claimed apart, in half that size, so repeated crashes narrow down to the row that causes them.
SELECT coalesce(q.claim_size, 1)
  FROM reactor.queue q
 WHERE q.claimed_by IS NOT NULL AND q.claimed_until < now() AND q.not_before <= now()
   AND NOT EXISTS (SELECT 1 FROM reactor.queue o
                    WHERE o.feedback_id = q.feedback_id AND o.claimed_by IS NOT NULL AND o.claimed_until >= now())
 ORDER BY q.priority, q.id
 LIMIT 1;

-- name: promote_lock
-- First statement of a promotion's own transaction: false while another reactor promotes (this claim then
-- skips its promotion and takes what is queued; the other one moves the rows). The lock only spares reactors
-- from queueing behind each other's row locks: order does not depend on it (see `promote`).
SELECT pg_try_advisory_xact_lock(hashtextextended('reactor.promote', 0));

-- name: promote
-- Moves captured changes from the writers' inbox into the queue. A change gets its queue id only once it has
-- committed, so for ids a < b, change a committed before b was numbered, hence before b can be claimed: a
-- claim of the higher id reads a text at least as new as every lower id's change, which the per-feedback
-- comparison of queue ids (tombstones, source_queue_id) relies on. A change committed after this statement's
-- snapshot waits in the inbox for the next promotion; a row another promotion deleted first is skipped.
WITH moved AS (
    DELETE FROM reactor.inbox
     WHERE ctid = ANY (ARRAY(SELECT i.ctid FROM reactor.inbox i LIMIT %(n)b))
 RETURNING feedback_id, op, enqueued_at
)
INSERT INTO reactor.queue (feedback_id, op, enqueued_at)
SELECT feedback_id, op, enqueued_at FROM moved ORDER BY enqueued_at;

-- name: claim
-- Leases up to n ready rows: only rows of crashed batches when `crashed_only`, only rows no crashed batch held
-- when `fresh_only`. Gated in the same statement on the one definition of "stopped" (reactor.read_job_config):
-- once a stop commits, no claim that starts afterwards takes work. Rows of a feedback already leased by another
-- batch are left alone.
-- Attempts: a row re-claimed after its batch died (claimed_by still set, lease lapsed) gets that attempt back
-- when the batch held other feedbacks too (claim_size > 1): the death is not yet its own, and bisection will
-- tell. A death with the row alone stays counted, and adds to `crashes`. `beside`: the tokens of the claiming
-- process's other batches in flight (a pipeline), so claim_size counts every feedback that would die with it.
WITH gate AS (
    SELECT coalesce((SELECT r.running FROM job_configs c, reactor.read_job_config(c.config::text) r
                      WHERE c.key = %(key)b ORDER BY c.id LIMIT 1), true) AS running
), picked AS (
    SELECT q.ctid AS row_id, q.feedback_id
      FROM reactor.queue q, gate
     WHERE gate.running
       AND q.not_before <= now()
       AND (q.claimed_until IS NULL OR q.claimed_until < now())
       AND (NOT %(crashed_only)b OR q.claimed_by IS NOT NULL)
       AND (NOT %(fresh_only)b OR q.claimed_by IS NULL)
       AND NOT EXISTS (SELECT 1 FROM reactor.queue o
                        WHERE o.feedback_id = q.feedback_id AND o.claimed_by IS NOT NULL
                          AND o.claimed_until >= now())
     ORDER BY q.priority, q.id
     LIMIT %(n)b
       FOR UPDATE OF q SKIP LOCKED
)
UPDATE reactor.queue q
   SET claimed_by = %(token)b,
       claimed_until = now() + make_interval(secs => %(lease)b),
       attempts = q.attempts + CASE WHEN q.claimed_by IS NOT NULL AND coalesce(q.claim_size, 1) > 1 THEN 0 ELSE 1 END,
       crashes = q.crashes + CASE WHEN q.claimed_by IS NOT NULL AND coalesce(q.claim_size, 1) = 1 THEN 1 ELSE 0 END,
       claim_size = (SELECT count(DISTINCT feedback_id) FROM picked)
                  + (SELECT count(DISTINCT o.feedback_id) FROM reactor.queue o WHERE o.claimed_by = ANY(%(beside)b))
 WHERE q.ctid = ANY (ARRAY(SELECT row_id FROM picked))
RETURNING q.id, q.feedback_id, q.op, q.attempts, q.enqueued_at, q.last_error, q.crashes;

-- name: widen_in_flight
-- A pipelined process claimed another batch: its batches already in flight now share their fate with n more
-- feedbacks, so a death is not charged to a row that looked alone when it was claimed.
UPDATE reactor.queue SET claim_size = claim_size + %(n)s WHERE claimed_by = ANY(%(tokens)s);

-- name: read_feedbacks
SELECT id, text FROM feedbacks WHERE id = ANY(%(ids)b);

-- name: active_topics
SELECT label FROM topics WHERE is_active ORDER BY label;

-- name: open_job
INSERT INTO jobs (job_name, status, created_at, updated_at)
VALUES (%(job_name)s, 'processing', now(), now())
RETURNING id;

-- name: open_job_run
INSERT INTO reactor.job_runs (job_id, claim_token, worker_id, rows, lease_until)
VALUES (%(job_id)s, %(token)s, %(worker)s, %(rows)s, now() + make_interval(secs => %(lease)s));

-- name: extend_lease
WITH q AS (
    UPDATE reactor.queue SET claimed_until = now() + make_interval(secs => %(lease)s)
     WHERE claimed_by = %(token)s
)
UPDATE reactor.job_runs SET lease_until = now() + make_interval(secs => %(lease)s) WHERE claim_token = %(token)s;

-- name: release
-- Gives a claimed batch back untouched (graceful shutdown): the attempt does not count.
UPDATE reactor.queue
   SET claimed_by = NULL, claimed_until = NULL, attempts = greatest(attempts - 1, 0)
 WHERE claimed_by = %(token)s;

-- name: take_owned
-- First statement of `complete`: removes our queue rows. Rows whose lease another batch took are not ours any
-- more, so their results are dropped (the other batch's result wins).
DELETE FROM reactor.queue WHERE id = ANY(%(ids)b) AND claimed_by = %(token)b RETURNING id, feedback_id;

-- name: lock_feedbacks
-- Serialises concurrent completions of the same feedback so word-count deltas are computed on committed state.
SELECT pg_advisory_xact_lock(hashtextextended('reactor.feedback:' || id::text, 0))
  FROM unnest(%(ids)b::bigint[]) AS t(id) ORDER BY id;

-- name: present_feedbacks
-- Read after the per-feedback locks: a DELETE or TRUNCATE committed since the claim wins over the result. (A
-- TRUNCATE waits for this read's lock on feedbacks, then its trigger sees the committed analysis and queues
-- its delete; one that committed first leaves nothing for this read to find.)
SELECT id FROM feedbacks WHERE id = ANY(%(ids)b);

-- name: previous_analysis
SELECT feedback_id, word_counts, source_queue_id FROM reactor.feedback_analysis
 WHERE feedback_id = ANY(%(ids)b) ORDER BY feedback_id FOR UPDATE;

-- name: tombstones
SELECT feedback_id, queue_id FROM reactor.tombstones WHERE feedback_id = ANY(%(ids)b);

-- name: write_tombstones
INSERT INTO reactor.tombstones AS t (feedback_id, queue_id)
SELECT * FROM unnest(%(ids)b::bigint[], %(queue_ids)b::bigint[])
ON CONFLICT (feedback_id) DO UPDATE SET queue_id = greatest(t.queue_id, excluded.queue_id), deleted_at = now();

-- name: drop_tombstones
DELETE FROM reactor.tombstones WHERE feedback_id = ANY(%(ids)b);

-- name: prune_tombstones
-- A tombstone matters only while an older queue row of its feedback can still complete.
DELETE FROM reactor.tombstones
 WHERE feedback_id IN (SELECT t.feedback_id FROM reactor.tombstones t
                        WHERE t.deleted_at < now() - interval '1 minute'
                          AND NOT EXISTS (SELECT 1 FROM reactor.queue q
                                           WHERE q.feedback_id = t.feedback_id AND q.id < t.queue_id)
                        LIMIT %(batch)s);

-- name: upsert_analysis
INSERT INTO reactor.feedback_analysis AS a
       (feedback_id, sentiment_label, sentiment_score, topics, word_counts, sentiment_model, zero_shot_model,
        topic_set, source_queue_id, enqueued_at, analyzed_at)
SELECT * , clock_timestamp()
  FROM unnest(%(feedback_id)b::bigint[], %(sentiment_label)b::text[], %(sentiment_score)b::real[],
              %(topics)b::jsonb[], %(word_counts)b::jsonb[], %(sentiment_model)b::text[], %(zero_shot_model)b::text[],
              %(topic_set)b::text[], %(source_queue_id)b::bigint[], %(enqueued_at)b::timestamptz[])
ON CONFLICT (feedback_id) DO UPDATE
   SET sentiment_label = excluded.sentiment_label, sentiment_score = excluded.sentiment_score,
       topics = excluded.topics, word_counts = excluded.word_counts, sentiment_model = excluded.sentiment_model,
       zero_shot_model = excluded.zero_shot_model, topic_set = excluded.topic_set,
       source_queue_id = excluded.source_queue_id, enqueued_at = excluded.enqueued_at,
       analyzed_at = excluded.analyzed_at;

-- name: delete_analysis
DELETE FROM reactor.feedback_analysis WHERE feedback_id = ANY(%(ids)b);

-- name: apply_word_deltas
-- Sorted input keeps lock order stable across concurrent reactors (no deadlocks on hot words).
INSERT INTO reactor.word_counts AS w (word, count)
SELECT word, delta FROM unnest(%(words)b::text[], %(deltas)b::bigint[]) AS t(word, delta) ORDER BY word
ON CONFLICT (word) DO UPDATE SET count = w.count + excluded.count;

-- name: drop_zero_words
DELETE FROM reactor.word_counts WHERE word = ANY(%(words)b) AND count = 0 RETURNING word;

-- name: retry_later
UPDATE reactor.queue
   SET claimed_by = NULL, claimed_until = NULL, last_error = t.error,
       not_before = now() + make_interval(secs => t.delay)
  FROM unnest(%(ids)b::bigint[], %(errors)b::text[], %(delays)b::float8[]) AS t(id, error, delay)
 WHERE queue.id = t.id AND queue.claimed_by = %(token)b;

-- name: park
WITH gone AS (
    DELETE FROM reactor.queue q
     USING unnest(%(ids)b::bigint[], %(errors)b::text[]) AS t(id, error)
     WHERE q.id = t.id AND q.claimed_by = %(token)b
    RETURNING q.id, q.feedback_id, q.op, q.attempts, q.enqueued_at, t.error
)
INSERT INTO reactor.failed (queue_id, feedback_id, op, attempts, error, enqueued_at, cause)
SELECT id, feedback_id, op, attempts, error, enqueued_at, %(cause)s::text FROM gone
ON CONFLICT (queue_id) DO UPDATE
   SET attempts = excluded.attempts, error = excluded.error, cause = excluded.cause, failed_at = now();

-- name: outbox_upsert
-- Rows are taken in (index_kind, length(doc_id), doc_id) order (numeric ids in numeric order), the order the
-- drain locks them in (outbox_lock_settled): two orders would deadlock on shared word documents, which
-- PostgreSQL breaks only after deadlock_timeout (1 s).
INSERT INTO reactor.outbox (index_kind, doc_id, action)
SELECT * FROM unnest(%(kinds)b::text[], %(doc_ids)b::text[], %(actions)b::text[]) AS d(kind, doc_id, action)
 ORDER BY d.kind, length(d.doc_id), d.doc_id
ON CONFLICT (index_kind, doc_id) DO UPDATE
   SET action = excluded.action, id = nextval('reactor.outbox_id_seq'), attempts = 0,
       not_before = '-infinity', last_error = NULL, parked_at = NULL;

-- name: close_job
UPDATE jobs SET status = %(status)s, last_processed_id = %(last_id)s, updated_at = now() WHERE id = %(job_id)s;

-- name: close_job_run
UPDATE reactor.job_runs
   SET finished_at = clock_timestamp(), duration_ms = %(ms)s, error = %(error)s
 WHERE job_id = %(job_id)s;

-- name: heartbeat
-- Also forgets reactors that stopped beating (killed, machine lost) a minute ago, and expired sleeper rows.
WITH gone AS (DELETE FROM reactor.workers WHERE last_seen < now() - interval '1 minute' AND id <> %(id)s),
     expired AS (DELETE FROM reactor.sleepers WHERE armed_until < now() - interval '1 minute')
INSERT INTO reactor.workers (id, host, pid, state) VALUES (%(id)s, %(host)s, %(pid)s, %(state)s)
ON CONFLICT (id) DO UPDATE SET last_seen = now(), state = excluded.state;

-- name: worker_gone
WITH asleep AS (DELETE FROM reactor.sleepers WHERE worker_id = %(id)s)
DELETE FROM reactor.workers WHERE id = %(id)s;

-- name: sleepers_lock
-- First statement of arm, disarm and worker_gone: one at a time, so the deadline each of them publishes
-- counts every other reactor's committed row. A holder that hangs cannot stall the others for long: the wait
-- ends after 5 s with a lock timeout, which the reactor retries like any transient error.
SELECT set_config('lock_timeout', '5s', true), pg_advisory_xact_lock(hashtextextended('reactor.sleepers', 0));

-- name: publish_armed
-- Last statement of arm, disarm and worker_gone: the flag writers read (reactor.armed()), the latest armed_until,
-- in epoch milliseconds. setval is not transactional: writers see it at once, and one whose transaction then
-- fails to commit costs at most one arming TTL of needless notifications.
SELECT setval('reactor.armed_until_ms',
              coalesce((SELECT (extract(epoch FROM max(armed_until)) * 1000)::bigint FROM reactor.sleepers), 0));

-- name: arm
-- The wake-up protocol: this reactor is about to sleep; writers notify while armed_until lies ahead.
INSERT INTO reactor.sleepers (worker_id, armed_until) VALUES (%(id)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (worker_id) DO UPDATE SET armed_until = excluded.armed_until;

-- name: disarm
DELETE FROM reactor.sleepers WHERE worker_id = %(id)s;

-- name: ready_rows
-- Cheap re-check after arming: a row committed by a writer that read the flag just before it was set. Ready
-- means what the claim could take: a row of a feedback another batch holds waits for that batch (which
-- claims it next), or a sleeping reactor would hand straight back to a claim that finds nothing, in a loop.
SELECT EXISTS (SELECT 1 FROM reactor.inbox)
    OR EXISTS (SELECT 1 FROM reactor.queue q
                WHERE q.not_before <= now() AND (q.claimed_until IS NULL OR q.claimed_until < now())
                  AND NOT EXISTS (SELECT 1 FROM reactor.queue o
                                   WHERE o.feedback_id = q.feedback_id AND o.claimed_by IS NOT NULL
                                     AND o.claimed_until >= now()));

-- name: send_probe
-- Sent through the work connection at each LISTEN (re)connect: it must arrive on the LISTEN connection.
SELECT pg_notify('reactor_work', %(payload)s);

-- name: notification_queue_usage
-- The LISTEN connection's keep-alive: proves the connection alive and watches PostgreSQL's notification queue.
SELECT pg_notification_queue_usage();

-- name: queue_empty
SELECT NOT EXISTS (SELECT 1 FROM reactor.queue) AND NOT EXISTS (SELECT 1 FROM reactor.inbox);

-- name: schema_present
SELECT to_regclass('reactor.queue') IS NOT NULL AND to_regclass('reactor.sleepers') IS NOT NULL
   AND to_regclass('reactor.inbox') IS NOT NULL;

-- name: retry_failed
WITH back AS (DELETE FROM reactor.failed RETURNING feedback_id, op, enqueued_at)
INSERT INTO reactor.queue (feedback_id, op, enqueued_at) SELECT feedback_id, op, enqueued_at FROM back;

-- name: retry_parked_outbox
-- Search documents parked after a permanent error (e.g. a mapping conflict fixed since) go back to the drain.
UPDATE reactor.outbox SET parked_at = NULL, attempts = 0, not_before = '-infinity', last_error = NULL
 WHERE parked_at IS NOT NULL;

-- name: last_job
SELECT j.id, j.status, j.last_processed_id, j.updated_at, r.rows, r.duration_ms, r.error
  FROM jobs j LEFT JOIN reactor.job_runs r ON r.job_id = j.id
 WHERE j.job_name = %(job_name)s ORDER BY j.id DESC LIMIT 1;

-- name: workers
-- A reactor that missed its heartbeats for 20 s is shown as stale until a live one prunes it.
SELECT id, host, pid, started_at, last_seen,
       CASE WHEN last_seen < now() - interval '20 seconds' THEN 'stale' ELSE state END
  FROM reactor.workers ORDER BY started_at;

-- name: gauges
-- Waiting work counts the inbox (captured, not yet promoted) with the queue.
SELECT (SELECT count(*) FROM reactor.queue) + (SELECT count(*) FROM reactor.inbox),
       (SELECT count(*) FROM reactor.failed),
       (SELECT count(*) FROM reactor.outbox WHERE parked_at IS NULL),
       (SELECT extract(epoch FROM now() - min(t)) FROM (
            SELECT min(enqueued_at) FROM reactor.queue
             WHERE not_before <= now() AND (claimed_until IS NULL OR claimed_until < now())
            UNION ALL SELECT min(enqueued_at) FROM reactor.inbox) AS oldest(t));

-- name: reprocess_chunk
-- Requeue analysed rows at low priority (fresh inserts are served first), one chunk of ids at a time.
-- mode: 'all'; 'stale' (topic set or a model differs from the current ones); 'since' (analysed before a date).
WITH chosen AS (
    SELECT a.feedback_id
      FROM reactor.feedback_analysis a
     WHERE a.feedback_id > %(after)s
       AND (%(mode)s = 'all'
            OR (%(mode)s = 'stale' AND (a.topic_set IS DISTINCT FROM %(topic_set)s
                                        OR a.sentiment_model IS DISTINCT FROM %(sentiment_model)s
                                        OR a.zero_shot_model IS DISTINCT FROM %(zero_shot_model)s))
            OR (%(mode)s = 'since' AND a.analyzed_at < %(since)s))
     ORDER BY a.feedback_id
     LIMIT %(chunk)s
), queued AS (
    -- A feedback is skipped only while an unclaimed upsert/delete row waits for it (that row reads the current
    -- topics and models when claimed). A 'reindex' row never runs the models, and a claimed row may be computing
    -- with the old topics: both get a fresh row.
    INSERT INTO reactor.queue (feedback_id, op, priority)
    SELECT c.feedback_id, 'upsert', 2 FROM chosen c
     WHERE NOT EXISTS (SELECT 1 FROM reactor.queue q
                        WHERE q.feedback_id = c.feedback_id AND q.op <> 'reindex' AND q.claimed_by IS NULL)
       AND NOT EXISTS (SELECT 1 FROM reactor.inbox i WHERE i.feedback_id = c.feedback_id AND i.op <> 'reindex')
    RETURNING 1
)
SELECT (SELECT max(feedback_id) FROM chosen), (SELECT count(*) FROM chosen), (SELECT count(*) FROM queued);

-- name: may_vacuum
-- Whether this role may VACUUM those tables (their owner, a member of its role, a superuser). A listener role
-- granted only their rows (`reactor sql --grant-listener`) leaves them to autovacuum.
SELECT bool_and(pg_has_role(c.relowner, 'USAGE')) FROM pg_class c
 WHERE c.oid IN ('reactor.inbox'::regclass, 'reactor.queue'::regclass, 'reactor.outbox'::regclass,
                 'reactor.feedback_analysis'::regclass);

-- name: vacuum_queue_tables
-- The reactor helping autovacuum (reactor.housekeeping): rows of inbox, queue and outbox live a fraction of a
-- second, and in a burst (a reprocess, an outbox catch-up) more die between two autovacuum runs (a minute
-- apart) than the tables hold live, so they would grow to that burst's size and stay there. feedback_analysis
-- too: a reprocess rewrites every row within minutes, and space freed while it runs is reused by the rewrites
-- that follow rather than added to. Cheap when nothing burst: vacuum skips the all-visible pages. SKIP_LOCKED:
-- a table another vacuum holds is left to it.
VACUUM (SKIP_LOCKED) reactor.inbox, reactor.queue, reactor.outbox, reactor.feedback_analysis;

-- name: reprocess_waiting
-- Low-priority rows still in the queue, counted up to `cap` (the CLI only asks whether its limit leaves room).
SELECT count(*) FROM (SELECT 1 FROM reactor.queue WHERE priority > 0 LIMIT %(cap)s) w;

-- name: reprocess_in_flight
-- A batch computing now may use the topics and models that were current at its claim: each of its feedbacks gets
-- a fresh low-priority row too, unless an unclaimed upsert/delete row already waits for it.
INSERT INTO reactor.queue (feedback_id, op, priority)
SELECT DISTINCT q.feedback_id, 'upsert', 2
  FROM reactor.queue q
 WHERE q.claimed_by IS NOT NULL AND q.op <> 'delete'
   AND NOT EXISTS (SELECT 1 FROM reactor.queue w
                    WHERE w.feedback_id = q.feedback_id AND w.op <> 'reindex' AND w.claimed_by IS NULL)
   AND NOT EXISTS (SELECT 1 FROM reactor.inbox i WHERE i.feedback_id = q.feedback_id AND i.op <> 'reindex');

-- name: reprocess_count
SELECT count(*) FROM reactor.feedback_analysis a
 WHERE %(mode)s = 'all'
    OR (%(mode)s = 'stale' AND (a.topic_set IS DISTINCT FROM %(topic_set)s
                                OR a.sentiment_model IS DISTINCT FROM %(sentiment_model)s
                                OR a.zero_shot_model IS DISTINCT FROM %(zero_shot_model)s))
    OR (%(mode)s = 'since' AND a.analyzed_at < %(since)s);

-- ============================================================================================================
-- Operator commands (reactor/cli): wake-ups, status, show, failed, prune, uninstall counts.
-- ============================================================================================================

-- name: wake_reactors
-- A wake-up for idle reactors after work was queued by a command (the payload is never data).
SELECT pg_notify('reactor_work', '');

-- name: status_counts
-- `reactor status`: one read-only snapshot. A `processing` job whose batch lease expired belongs to a reactor
-- that stopped: it is counted apart as abandoned (the next claim closes it as failed), not as incomplete.
WITH open_jobs AS (
    SELECT j.id,
           EXISTS (SELECT 1 FROM reactor.job_runs r
                    WHERE r.job_id = j.id AND r.finished_at IS NULL AND r.lease_until < now()) AS abandoned
      FROM jobs j
     WHERE j.status = 'processing'
)
SELECT
    (SELECT count(*) FROM reactor.queue) + (SELECT count(*) FROM reactor.inbox)             AS queue_depth,
    (SELECT count(*) FROM reactor.queue WHERE claimed_until >= now())                       AS in_flight,
    (SELECT count(*) FROM reactor.queue WHERE last_error IS NOT NULL)                       AS retrying,
    (SELECT count(*) FROM reactor.failed)                                                   AS failed_rows,
    (SELECT count(*) FROM reactor.feedback_analysis)                                        AS analysed,
    (SELECT count(*) FROM reactor.outbox WHERE parked_at IS NULL)                           AS outbox_depth,
    (SELECT count(*) FROM reactor.outbox WHERE parked_at IS NULL AND last_error IS NOT NULL) AS outbox_retrying,
    (SELECT last_error FROM reactor.outbox WHERE parked_at IS NULL AND last_error IS NOT NULL
      ORDER BY not_before DESC, id DESC LIMIT 1)                                            AS outbox_last_error,
    (SELECT count(*) FROM reactor.outbox WHERE parked_at IS NOT NULL)                       AS outbox_parked,
    (SELECT count(*) FROM open_jobs WHERE NOT abandoned)                                    AS incomplete_jobs,
    (SELECT count(*) FROM open_jobs WHERE abandoned)                                        AS abandoned_jobs,
    (SELECT count(*) FROM topics WHERE is_active)                                           AS active_topics;

-- name: status_stale
-- Analysed rows `reactor reprocess --stale` would requeue: another topic set than the active one, or other
-- models than those of the newest analysis (the models the reactors run now).
WITH newest AS (
    SELECT sentiment_model, zero_shot_model FROM reactor.feedback_analysis ORDER BY analyzed_at DESC LIMIT 1
)
SELECT count(*) FILTER (WHERE a.topic_set IS DISTINCT FROM %(topic_set)s)                       AS topics_changed,
       count(*) FILTER (WHERE a.sentiment_model IS DISTINCT FROM n.sentiment_model
                           OR a.zero_shot_model IS DISTINCT FROM n.zero_shot_model)            AS models_changed,
       count(*) FILTER (WHERE a.topic_set IS DISTINCT FROM %(topic_set)s
                           OR a.sentiment_model IS DISTINCT FROM n.sentiment_model
                           OR a.zero_shot_model IS DISTINCT FROM n.zero_shot_model)            AS stale
  FROM reactor.feedback_analysis a CROSS JOIN newest n;

-- name: show_feedback
-- `reactor show ID`: everything about one feedback as JSON documents (all columns, whatever the migrations add).
SELECT (SELECT to_jsonb(f) FROM feedbacks f WHERE f.id = %(id)s)                                  AS feedback,
       (SELECT to_jsonb(a) - 'feedback_id' FROM reactor.feedback_analysis a WHERE a.feedback_id = %(id)s) AS analysis,
       (SELECT coalesce(jsonb_agg(to_jsonb(q) - 'feedback_id' ORDER BY q.id), '[]')
          FROM reactor.queue q WHERE q.feedback_id = %(id)s)
       || (SELECT coalesce(jsonb_agg(to_jsonb(i) - 'feedback_id' ORDER BY i.enqueued_at), '[]')
             FROM reactor.inbox i WHERE i.feedback_id = %(id)s)                                   AS queue,
       (SELECT coalesce(jsonb_agg(to_jsonb(x) - 'feedback_id' ORDER BY x.queue_id), '[]')
          FROM reactor.failed x WHERE x.feedback_id = %(id)s)                                     AS failed,
       (SELECT to_jsonb(o) - 'index_kind' - 'doc_id' FROM reactor.outbox o
         WHERE o.index_kind = 'feedback' AND o.doc_id = %(id)s::text)                             AS search_document;

-- name: failed_rows
-- `reactor failed`: feedback rows parked after max_attempts, newest first.
SELECT feedback_id, op, attempts, cause, error, enqueued_at, failed_at
  FROM reactor.failed ORDER BY failed_at DESC, queue_id DESC LIMIT %(limit)s;

-- name: parked_documents
-- `reactor failed`: search documents the sink parked after a permanent error, newest first.
SELECT index_kind, doc_id, action, attempts, last_error, parked_at
  FROM reactor.outbox WHERE parked_at IS NOT NULL ORDER BY parked_at DESC, id DESC LIMIT %(limit)s;

-- name: failed_totals
SELECT (SELECT count(*) FROM reactor.failed), (SELECT count(*) FROM reactor.outbox WHERE parked_at IS NOT NULL),
       (SELECT count(*) FROM reactor.failed WHERE cause = 'crash');

-- name: prune_jobs
-- Retention: one small batch of this reactor's finished `jobs` rows older than `days`, with their
-- reactor.job_runs rows; never a 'processing' job and never the newest one (status shows it). Returns the
-- number of jobs deleted: loop until it returns less than `batch`. Params: job_name, days, batch.
WITH old AS (
    SELECT j.id FROM jobs j
     WHERE j.job_name = %(job_name)s AND j.status <> 'processing'
       AND j.updated_at < now() - make_interval(days => %(days)s)
       AND j.id < (SELECT max(id) FROM jobs WHERE job_name = %(job_name)s)
     ORDER BY j.id
     LIMIT %(batch)s
       FOR UPDATE SKIP LOCKED
), runs AS (
    DELETE FROM reactor.job_runs r USING old WHERE r.job_id = old.id
), gone AS (
    DELETE FROM jobs j USING old WHERE j.id = old.id RETURNING 1
)
SELECT count(*) FROM gone;

-- name: prune_jobs_count
-- What prune_jobs would delete in all (`reactor prune --dry-run`, and the progress bar's total).
SELECT count(*) FROM jobs j
 WHERE j.job_name = %(job_name)s AND j.status <> 'processing'
   AND j.updated_at < now() - make_interval(days => %(days)s)
   AND j.id < (SELECT max(id) FROM jobs WHERE job_name = %(job_name)s);

-- name: reactor_tables
-- What `reactor sql --uninstall` drops: every table of schema reactor (counted one by one).
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'reactor' AND c.relkind IN ('r', 'p') ORDER BY c.relname;
-- ======================================================================================================
-- OpenSearch sink (reactor/sinks): the outbox drain, the documents it builds, index rebuilds.
-- One drainer at a time across processes (sink drains and rebuilds share one advisory lock key): two
-- drainers could send an older state after a newer one and delete both outbox rows.
-- ======================================================================================================

-- name: drain_try_lock
SELECT pg_try_advisory_xact_lock(%(key)s);

-- name: drain_lock_session
-- Rebuilds take the lock for the session BEFORE their snapshot: a drain that committed after the snapshot
-- was taken could otherwise have deleted outbox rows whose state the rebuilt index does not hold.
SELECT pg_advisory_lock(%(key)s);

-- name: drain_try_lock_session
SELECT pg_try_advisory_lock(%(key)s);

-- name: drain_unlock_session
SELECT pg_advisory_unlock(%(key)s);

-- name: outbox_ready
SELECT id, index_kind, doc_id, attempts FROM reactor.outbox
 WHERE parked_at IS NULL AND not_before <= now() ORDER BY id LIMIT %(limit)s;

-- name: outbox_lock_settled
-- First statement of a drain's settlement: every row it will delete or update, locked in the order completing
-- batches upsert them in (outbox_upsert), so neither waits on the other in a cycle. A row a newer change bumped
-- meanwhile has a new id and is not taken.
SELECT 1 FROM reactor.outbox WHERE id = ANY(%(ids)s) ORDER BY index_kind, length(doc_id), doc_id FOR UPDATE;

-- name: outbox_confirm
-- Only the ids that were read: a row bumped by a newer change meanwhile stays and is sent again.
DELETE FROM reactor.outbox WHERE id = ANY(%(ids)s);

-- name: outbox_retry
UPDATE reactor.outbox o
   SET attempts = o.attempts + 1, last_error = v.err, not_before = now() + make_interval(secs => v.delay)
  FROM unnest(%(ids)s::bigint[], %(delays)s::float8[], %(errors)s::text[]) AS v(id, delay, err)
 WHERE o.id = v.id;

-- name: outbox_park
UPDATE reactor.outbox o
   SET attempts = o.attempts + 1, last_error = v.err, parked_at = now()
  FROM unnest(%(ids)s::bigint[], %(errors)s::text[]) AS v(id, err)
 WHERE o.id = v.id;

-- name: outbox_hold
-- Held back by a cluster-wide condition (busy, blocked, index missing): not the row's fault, so no attempt is
-- counted and no per-row delay set; the error is kept for `reactor status`.
UPDATE reactor.outbox o SET last_error = v.err
  FROM unnest(%(ids)s::bigint[], %(errors)s::text[]) AS v(id, err)
 WHERE o.id = v.id;

-- name: outbox_bump_word_total
-- Word totals changed: (re)queue the accumulated_word_counts document, built at drain time from current state.
-- A row already pending keeps its place and time (a steady stream of changes must not postpone it forever).
INSERT INTO reactor.outbox AS o (index_kind, doc_id, action, not_before)
VALUES ('word', %(doc_id)s, 'index', now() + make_interval(secs => %(delay)s))
ON CONFLICT (index_kind, doc_id) DO UPDATE
   SET id = nextval('reactor.outbox_id_seq'), action = 'index', attempts = 0, last_error = NULL,
       parked_at = NULL, not_before = excluded.not_before
 WHERE o.parked_at IS NOT NULL;

-- name: outbox_unpark_kinds
-- After `reactor reindex` rebuilt these indices: send their parked documents once more (a new mapping may
-- take them; those still refused are parked again with their error).
UPDATE reactor.outbox SET parked_at = NULL, attempts = 0, not_before = '-infinity', last_error = NULL
 WHERE parked_at IS NOT NULL AND index_kind = ANY(%(kinds)s);

-- name: outbox_empty
-- For the loop and the CLI: nothing left to send (parked rows wait for an operator and do not count).
SELECT NOT EXISTS (SELECT 1 FROM reactor.outbox WHERE parked_at IS NULL);

-- name: outbox_retrying
-- Search documents still retrying, with their last error (for `reactor status` / `reactor failed`).
-- retry_at is NULL when due now (not_before is '-infinity' then, which psycopg cannot load as a datetime).
SELECT index_kind, doc_id, attempts, last_error, CASE WHEN not_before > now() THEN not_before END AS retry_at
  FROM reactor.outbox
 WHERE parked_at IS NULL AND last_error IS NOT NULL ORDER BY id DESC LIMIT %(limit)s;

-- name: sink_feedback_docs
-- Rows as JSON text made by PostgreSQL (never loaded as Python datetimes: `infinity` and year 10000 would raise).
-- `feedbacks` is unqualified: the connection's search_path finds it, as for every other query.
SELECT fa.feedback_id, to_jsonb(fa)::text, to_jsonb(f)::text
  FROM reactor.feedback_analysis fa JOIN feedbacks f ON f.id = fa.feedback_id
 WHERE fa.feedback_id = ANY(%(ids)s);

-- name: sink_all_feedback_docs
SELECT fa.feedback_id, to_jsonb(fa)::text, to_jsonb(f)::text
  FROM reactor.feedback_analysis fa JOIN feedbacks f ON f.id = fa.feedback_id
 ORDER BY fa.feedback_id;

-- name: sink_word_counts
SELECT word, count FROM reactor.word_counts WHERE word = ANY(%(words)s) AND count > 0;

-- name: sink_all_word_counts
SELECT word, count FROM reactor.word_counts WHERE count > 0 ORDER BY word;

-- name: sink_word_total
SELECT coalesce(json_object_agg(word, count ORDER BY word), '{}')::text, count(*), coalesce(sum(count), 0)
  FROM reactor.word_counts WHERE count > 0;

-- name: sink_doc_totals
-- What a rebuild will index (dry run and progress bars).
SELECT (SELECT count(*) FROM reactor.feedback_analysis fa JOIN feedbacks f ON f.id = fa.feedback_id),
       (SELECT count(*) FROM reactor.word_counts WHERE count > 0);
