-- Idempotent objects (functions and triggers), re-created by every `reactor sql` whose checksum changed.
-- Statement-level triggers with transition tables: a 1M-row COPY costs one INSERT into the inbox.
-- Capture writes reactor.inbox, a narrow table without sequence or index (the cheapest durable row a writer can
-- leave); a reactor promotes its rows into reactor.queue before it claims (queries.sql `promote`).
-- Wake-ups: a transaction that called pg_notify takes a database-wide lock from pre-commit through its WAL
-- flush, so notifying commits run one at a time. The triggers therefore notify only while a reactor is armed
-- in reactor.sleepers (it arms before it sleeps and disarms when it drains), as published in a sequence.
-- A busy reactor needs no wake-up: it drains until the queue is empty, then arms and re-checks.
-- The payload never carries data: NOTIFY's 8000-byte limit would abort the user's INSERT. SECURITY DEFINER
-- with a fixed search_path: roles that write feedbacks need no rights on schema reactor.

-- Whether some reactor sleeps and wants a NOTIFY: the deadline the reactors publish (migration 0004) lies ahead.
-- A plain SQL expression, so the planner inlines it into the triggers' IF: no query, no lock but the sequence's.
-- VOLATILE like the sequence read inside it (a STABLE wrapper would not be inlined).
CREATE OR REPLACE FUNCTION reactor.armed() RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT pg_catalog.pg_sequence_last_value('reactor.armed_until_ms'::pg_catalog.regclass)
           > pg_catalog.date_part('epoch', pg_catalog.now()) * 1000
$$;

CREATE OR REPLACE FUNCTION reactor.enqueue_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO reactor.inbox (feedback_id, op) SELECT n.id, 'upsert' FROM new_rows n;
    IF FOUND AND reactor.armed() THEN
        PERFORM pg_notify('reactor_work', '');
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION reactor.enqueue_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Only text changes matter for analysis; a changed id counts as delete of the old plus insert of the new.
    -- Other columns of an analysed row (product_name, sender, updated_at...) only re-index its search document.
    -- Compared as jsonb so any feedbacks table shape works (only id and text are required).
    INSERT INTO reactor.inbox (feedback_id, op)
    SELECT n.id, 'upsert'
      FROM new_rows n LEFT JOIN old_rows o ON o.id = n.id
     WHERE o.id IS NULL OR o.text IS DISTINCT FROM n.text
    UNION ALL
    SELECT o.id, 'delete'
      FROM old_rows o LEFT JOIN new_rows n ON n.id = o.id
     WHERE n.id IS NULL
    UNION ALL
    SELECT n.id, 'reindex'
      FROM new_rows n JOIN old_rows o ON o.id = n.id
     WHERE o.text IS NOT DISTINCT FROM n.text
       AND to_jsonb(o) - 'text' IS DISTINCT FROM to_jsonb(n) - 'text'
       AND EXISTS (SELECT 1 FROM reactor.feedback_analysis a WHERE a.feedback_id = n.id);
    IF FOUND AND reactor.armed() THEN
        PERFORM pg_notify('reactor_work', '');
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION reactor.enqueue_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO reactor.inbox (feedback_id, op) SELECT o.id, 'delete' FROM old_rows o;
    IF FOUND AND reactor.armed() THEN
        PERFORM pg_notify('reactor_work', '');
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION reactor.enqueue_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO reactor.inbox (feedback_id, op) SELECT a.feedback_id, 'delete' FROM reactor.feedback_analysis a;
    IF FOUND AND reactor.armed() THEN
        PERFORM pg_notify('reactor_work', '');
    END IF;
    RETURN NULL;
END $$;

-- The one definition of the reactor's job_configs row, used by the claim's stop gate, the validation trigger,
-- the reactor's reading of its config and `reactor status`. run_next_job: JSON true/false (absent = true);
-- anything else is invalid and counts as stopped (an invalid config never makes a reactor run). Numbers: JSON
-- integers in range; an invalid one reads as NULL, and the reactor keeps its last valid value.
-- The stored config as jsonb, or NULL when it is not valid JSON (json, jsonb and text columns alike).
CREATE OR REPLACE FUNCTION reactor.config_or_null(raw text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN raw::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION reactor.job_config_keys(OUT key text, OUT lo bigint, OUT hi bigint, OUT dflt integer)
RETURNS SETOF record LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES ('batch_size', 1, 10000, 10), ('jobs_retention_days', 1, 36500, 30), ('max_attempts', 1, 100, 5)
$$;

-- The key's value when it is a JSON integer within its bounds; its default when absent; NULL when invalid.
CREATE OR REPLACE FUNCTION reactor.job_config_int(cfg jsonb, name text) RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN NOT cfg ? name THEN k.dflt
                WHEN jsonb_typeof(cfg -> name) = 'number'
                 AND (cfg ->> name)::numeric = trunc((cfg ->> name)::numeric)
                 AND (cfg ->> name)::numeric BETWEEN k.lo AND k.hi
                -- clamped although the test above already bounds it: the planner may fold this branch on its
                -- own for a constant config, and must not raise "integer out of range" doing so
                THEN least(greatest((cfg ->> name)::numeric, k.lo), k.hi)::integer END
      FROM reactor.job_config_keys() k WHERE k.key = name
$$;

-- NULL when the key is valid (or absent), else the sentence an operator reads.
CREATE OR REPLACE FUNCTION reactor.job_config_problem(cfg jsonb, name text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN NOT cfg ? name THEN NULL
        WHEN name = 'run_next_job' THEN
            CASE WHEN jsonb_typeof(cfg -> name) <> 'boolean'
                 THEN format('run_next_job must be true or false, not %s', left((cfg -> name)::text, 60)) END
        ELSE (SELECT CASE WHEN reactor.job_config_int(cfg, name) IS NULL
                          THEN format('%s must be an integer from %s to %s, not %s', name, k.lo, k.hi,
                                      left((cfg -> name)::text, 60)) END
                FROM reactor.job_config_keys() k WHERE k.key = name)
    END
$$;

-- Problems of `cfg`, limited to the keys whose value differs from `old_cfg` (all keys when old_cfg is NULL).
CREATE OR REPLACE FUNCTION reactor.job_config_problems(cfg jsonb, old_cfg jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(p ORDER BY k), '{}')
      FROM unnest(ARRAY['batch_size', 'jobs_retention_days', 'max_attempts', 'run_next_job']) AS k,
           LATERAL reactor.job_config_problem(cfg, k) AS p
     WHERE p IS NOT NULL
       AND (jsonb_typeof(old_cfg) IS DISTINCT FROM 'object' OR (old_cfg -> k) IS DISTINCT FROM (cfg -> k))
$$;

-- Effective values (NULL where invalid: the reactor keeps its last valid one), whether claiming is allowed,
-- and every problem found, from the stored text (json, jsonb or text columns alike).
CREATE OR REPLACE FUNCTION reactor.read_job_config(raw text,
    OUT running boolean, OUT batch_size integer, OUT max_attempts integer, OUT jobs_retention_days integer,
    OUT problems text[])
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg jsonb := reactor.config_or_null(raw);
BEGIN
    running := false;
    IF cfg IS NULL AND raw IS NOT NULL THEN
        problems := ARRAY['config is not valid JSON'];
        RETURN;
    END IF;
    IF cfg IS NULL OR jsonb_typeof(cfg) <> 'object' THEN
        problems := ARRAY[format('config must be a JSON object, not %s', left(coalesce(cfg::text, 'NULL'), 60))];
        RETURN;
    END IF;
    problems := reactor.job_config_problems(cfg, NULL);
    running := coalesce(cfg -> 'run_next_job', 'true') = 'true';
    batch_size := reactor.job_config_int(cfg, 'batch_size');
    max_attempts := reactor.job_config_int(cfg, 'max_attempts');
    jobs_retention_days := reactor.job_config_int(cfg, 'jobs_retention_days');
END $$;

-- Refuses an invalid value where the operator writes it: only keys whose value this write changes are checked,
-- so `reactor stop` works even on a row that holds an old invalid value. Other job_configs rows stay free.
CREATE OR REPLACE FUNCTION reactor.validate_job_config() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg jsonb := reactor.config_or_null(NEW.config::text);
    old_cfg jsonb;
    bad text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM reactor.job_keys k WHERE k.key = NEW.key) THEN
        RETURN NEW;
    END IF;
    IF cfg IS NULL OR jsonb_typeof(cfg) <> 'object' THEN
        RAISE EXCEPTION 'job_configs row %: config must be a JSON object such as {"batch_size": 10, "run_next_job": true}',
            NEW.key USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        old_cfg := reactor.config_or_null(OLD.config::text);
    END IF;
    bad := reactor.job_config_problems(cfg, old_cfg);
    IF cardinality(bad) > 0 THEN
        RAISE EXCEPTION 'job_configs row %: %', NEW.key, array_to_string(bad, '; ')
            USING ERRCODE = 'check_violation',
                  HINT = 'allowed: run_next_job true or false; '
                         || (SELECT string_agg(format('%s an integer %s..%s', k.key, k.lo, k.hi), '; ')
                               FROM reactor.job_config_keys() k);
    END IF;
    RETURN NEW;
END $$;

-- Control: the payload is the config key and the statement's clock (for the control-latency log), never data.
CREATE OR REPLACE FUNCTION reactor.notify_control() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify('reactor_control',
                      left(coalesce(NEW.key, OLD.key), 200) || '|' || extract(epoch FROM clock_timestamp())::text);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION reactor.notify_topics() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify('reactor_control', 'topics|' || extract(epoch FROM clock_timestamp())::text);
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER reactor_feedback_insert AFTER INSERT ON feedbacks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION reactor.enqueue_inserted();
CREATE OR REPLACE TRIGGER reactor_feedback_update AFTER UPDATE ON feedbacks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION reactor.enqueue_updated();
CREATE OR REPLACE TRIGGER reactor_feedback_delete AFTER DELETE ON feedbacks
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION reactor.enqueue_deleted();
CREATE OR REPLACE TRIGGER reactor_feedback_truncate AFTER TRUNCATE ON feedbacks
    FOR EACH STATEMENT EXECUTE FUNCTION reactor.enqueue_truncated();
CREATE OR REPLACE TRIGGER reactor_job_configs_validate BEFORE INSERT OR UPDATE ON job_configs
    FOR EACH ROW EXECUTE FUNCTION reactor.validate_job_config();
CREATE OR REPLACE TRIGGER reactor_job_configs_notify AFTER INSERT OR UPDATE OR DELETE ON job_configs
    FOR EACH ROW EXECUTE FUNCTION reactor.notify_control();
CREATE OR REPLACE TRIGGER reactor_topics_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON topics
    FOR EACH STATEMENT EXECUTE FUNCTION reactor.notify_topics();
