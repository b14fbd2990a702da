-- Enqueue feedback rows that existed before the reactor was installed: neither analysed nor waiting nor parked.
-- Idempotent: a second run finds nothing to add.
INSERT INTO reactor.queue (feedback_id, op, priority)
SELECT f.id, 'upsert', 1
  FROM feedbacks f
 WHERE NOT EXISTS (SELECT 1 FROM reactor.feedback_analysis a WHERE a.feedback_id = f.id)
   AND NOT EXISTS (SELECT 1 FROM reactor.queue q WHERE q.feedback_id = f.id)
   AND NOT EXISTS (SELECT 1 FROM reactor.inbox i WHERE i.feedback_id = f.id)
   AND NOT EXISTS (SELECT 1 FROM reactor.failed d WHERE d.feedback_id = f.id)
 ORDER BY f.id;
