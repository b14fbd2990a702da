-- Removes the reactor's triggers and schema; user tables (feedbacks, topics, jobs, job_configs, users) and
-- their rows stay untouched.
DROP TRIGGER IF EXISTS reactor_feedback_insert ON feedbacks;
DROP TRIGGER IF EXISTS reactor_feedback_update ON feedbacks;
DROP TRIGGER IF EXISTS reactor_feedback_delete ON feedbacks;
DROP TRIGGER IF EXISTS reactor_feedback_truncate ON feedbacks;
DROP TRIGGER IF EXISTS reactor_job_configs_notify ON job_configs;
DROP TRIGGER IF EXISTS reactor_job_configs_validate ON job_configs;
DROP TRIGGER IF EXISTS reactor_topics_notify ON topics;
DROP SCHEMA IF EXISTS reactor CASCADE;
