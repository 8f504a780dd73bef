-- Each attempt names its endpoint, so that an endpoint's stats (`GET
-- /v1/webhook-endpoints/{id}/stats`: attempts, results, latency percentiles and the latest
-- success and failure over 24 hours and 7 days) read one range of one index instead of every
-- delivery the endpoint ever had. A copy of the delivery's `endpoint_id` (deliveries never
-- change endpoint), filled by the insert; no foreign key, the delivery's already holds.
ALTER TABLE webhook_attempts ADD COLUMN endpoint_id INTEGER;

UPDATE webhook_attempts
SET endpoint_id = (SELECT d.endpoint_id FROM webhook_deliveries d WHERE d.id = webhook_attempts.delivery_id);

-- Covering: the stats query groups the window's durations and results from the index alone.
CREATE INDEX webhook_attempts_endpoint
    ON webhook_attempts(endpoint_id, attempted_at, duration_ms, status_code);
