-- Bulk recovery (`POST /v1/webhook-endpoints/{id}/recover`): one row per request, the
-- background job's state. `cursor` is the highest delivery id looked at, so a job that a node
-- stopped mid-way resumes where it was; `requeued` counts the failed deliveries it queued
-- again. `finished_at` is NULL while the job runs.
CREATE TABLE webhook_recoveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       INTEGER NOT NULL REFERENCES organizations(id),
    endpoint_id  INTEGER NOT NULL REFERENCES webhook_endpoints(id),
    since        INTEGER NOT NULL,
    until        INTEGER NOT NULL,
    cursor       INTEGER NOT NULL DEFAULT 0,
    requeued     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);
-- The jobs still running, for the dispatcher's look at each round.
CREATE INDEX webhook_recoveries_running ON webhook_recoveries(id) WHERE finished_at IS NULL;
-- A recovery reads an endpoint's failed deliveries in id order.
CREATE INDEX webhook_deliveries_endpoint_failed
    ON webhook_deliveries(endpoint_id, id) WHERE status = 'failed';

-- Endpoint health: when the endpoint's current run of failed attempts began (NULL after a
-- 2xx, or before any attempt). An endpoint whose every attempt has failed since longer than
-- `webhooks.disable_after` is disabled.
ALTER TABLE webhook_endpoints ADD COLUMN failing_since INTEGER;
