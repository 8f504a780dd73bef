-- First attempts and retries are claimed as separate lanes; each lane gets its own partial
-- index, so claiming retries does not scan a backlog of first attempts (and vice versa).
CREATE INDEX webhook_deliveries_due_first ON webhook_deliveries(next_attempt_at, id)
    WHERE status = 'pending' AND attempt_count = 0;
CREATE INDEX webhook_deliveries_due_retry ON webhook_deliveries(next_attempt_at, id)
    WHERE status = 'pending' AND attempt_count > 0;
