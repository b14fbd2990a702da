-- Least privilege for a role that runs `reactor listen` (and stop/resume/status/retry-failed/reprocess).
-- Applied by `reactor sql --grant-listener ROLE`; {role} is quoted with psycopg.sql.Identifier.
-- `reactor sql` itself (DDL) needs the owner of the tables, or CREATE on the database plus ownership of
-- feedbacks/topics/jobs/job_configs to attach triggers. Writers of feedbacks need no rights on schema
-- reactor: the trigger functions are SECURITY DEFINER.
GRANT USAGE ON SCHEMA reactor TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON reactor.queue, reactor.inbox, reactor.failed, reactor.feedback_analysis,
      reactor.word_counts, reactor.job_runs, reactor.workers, reactor.outbox, reactor.sleepers,
      reactor.tombstones TO {role};
GRANT SELECT ON reactor.schema_version, reactor.installed, reactor.job_keys TO {role};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA reactor TO {role};
GRANT UPDATE ON SEQUENCE reactor.armed_until_ms TO {role};  -- setval: publishing the armed flag
GRANT SELECT ON feedbacks, topics TO {role};
GRANT SELECT, UPDATE ON job_configs TO {role};
GRANT SELECT, INSERT, UPDATE ON jobs TO {role};
