-- Idempotent objects (functions and triggers), re-created by every `reactor sql` whose checksum changed.
-- Statement-level triggers with transition tables: a 1M-row COPY costs one INSERT into the queue, and the
-- constant NOTIFY payload is merged by PostgreSQL into one wake-up per transaction. The payload never
-- carries data: NOTIFY's 8000-byte limit would abort the user's INSERT. SECURITY DEFINER with a fixed
-- search_path: roles that write feedbacks need no rights on schema reactor.

CREATE OR REPLACE FUNCTION reactor.enqueue_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO reactor.queue (feedback_id, op) SELECT n.id, 'upsert' FROM new_rows n;
    IF FOUND THEN
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
    INSERT INTO reactor.queue (feedback_id, op)
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
    IF FOUND THEN
        PERFORM pg_notify('reactor_work', '');
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION reactor.enqueue_deleted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO reactor.queue (feedback_id, op) SELECT o.id, 'delete' FROM old_rows o;
    IF FOUND THEN
        PERFORM pg_notify('reactor_work', '');
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION reactor.enqueue_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO reactor.queue (feedback_id, op) SELECT a.feedback_id, 'delete' FROM reactor.feedback_analysis a;
    IF FOUND THEN
        PERFORM pg_notify('reactor_work', '');
    END IF;
    RETURN NULL;
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
CREATE OR REPLACE TRIGGER reactor_job_configs_notify AFTER INSERT OR UPDATE OR DELETE ON job_configs
    FOR EACH ROW EXECUTE FUNCTION reactor.notify_control();
CREATE OR REPLACE TRIGGER reactor_topics_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON topics
    FOR EACH STATEMENT EXECUTE FUNCTION reactor.notify_topics();
