-- One-time migration 2: queue op 'reindex' — a feedback row changed but not its text (product_name, sender,
-- updated_at...): its search document is rebuilt from the stored analysis without running the models again.

ALTER TABLE reactor.queue DROP CONSTRAINT IF EXISTS queue_op_check;
ALTER TABLE reactor.queue ADD CONSTRAINT queue_op_check CHECK (op IN ('upsert', 'delete', 'reindex'));
