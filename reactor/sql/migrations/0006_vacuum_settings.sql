-- One-time migration 6: autovacuum that keeps up with the reactor's churn, and room for in-place updates
-- (issue 22: table sizes stay flat over an hour of load and faults).
--
-- feedback_analysis: every re-analysis (a text update, `reactor reprocess`) rewrites its row. PostgreSQL's
-- default lets 20 % of a table be dead rows before autovacuum runs: on a table of millions of rows that is a
-- standing 20 % of bloat, more after a reprocess. 2 % keeps the table near its live size. Free space in each
-- page (fillfactor 90) lets a rewrite stay in its page as a HOT update (no new index entry: only feedback_id is
-- indexed), and lets vacuum's work be undone by the next rewrite without the table growing.
ALTER TABLE reactor.feedback_analysis
  SET (fillfactor = 90, autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.05);

-- word_counts: a few thousand rows, many of them updated by every batch: room in each page keeps those updates
-- in place.
ALTER TABLE reactor.word_counts SET (fillfactor = 50);

-- inbox, queue, outbox: each row lives a fraction of a second (inserted, claimed, deleted). Vacuum them without
-- the cost delay that paces vacuum on big tables: these are small, and dead rows left behind a slow vacuum sit
-- in front of every claim's index scan.
ALTER TABLE reactor.inbox SET (autovacuum_vacuum_cost_delay = 0);
ALTER TABLE reactor.queue SET (autovacuum_vacuum_cost_delay = 0);
ALTER TABLE reactor.outbox SET (autovacuum_vacuum_cost_delay = 0);
