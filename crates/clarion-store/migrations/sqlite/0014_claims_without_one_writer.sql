-- Claims that hold without SQLite's single writer (issue 10, item 2).

-- One row per (organisation, number) that was ever about to be contacted. A transaction that
-- checks contact caps or suppression before a contact first upserts this row
-- (`Store::lock_contacts`); on a backend with row locks (PostgreSQL) the upsert's row lock is
-- held to commit, so two nodes' checks for one number run one after the other and the second
-- sees the first one's encounter. On SQLite the write lock already serialises them.
CREATE TABLE contact_locks (
    org_id        INTEGER NOT NULL,
    phone_number  TEXT    NOT NULL,
    locked_at     INTEGER NOT NULL,
    PRIMARY KEY (org_id, phone_number)
) WITHOUT ROWID;

-- The delivery claim takes each endpoint's earliest due rows up to its cap (so one endpoint's
-- deep backlog cannot hide another's due deliveries): one partial index per lane, led by the
-- endpoint. They replace the lane indexes of 0002, which only the old claim read, so a
-- delivery still enters the same number of indexes.
DROP INDEX webhook_deliveries_due_first;
DROP INDEX webhook_deliveries_due_retry;
CREATE INDEX webhook_deliveries_endpoint_due_first
    ON webhook_deliveries(endpoint_id, next_attempt_at, id)
    WHERE status = 'pending' AND attempt_count = 0;
CREATE INDEX webhook_deliveries_endpoint_due_retry
    ON webhook_deliveries(endpoint_id, next_attempt_at, id)
    WHERE status = 'pending' AND attempt_count > 0;
