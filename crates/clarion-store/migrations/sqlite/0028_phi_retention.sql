-- PHI retention and erasure (src/phi.rs says what counts as PHI in stored rows).
-- An organisation's retention period in days: an ended sequence's PHI is purged that long
-- after it ended. NULL: kept forever (the default).
ALTER TABLE organizations ADD COLUMN retention_days INTEGER;
-- When the sequence's PHI was purged (retention) or erased (a contact's erasure); NULL: kept.
ALTER TABLE sequences ADD COLUMN phi_purged_at INTEGER;
-- The retention job's look-up: an organisation's ended sequences not purged yet, by end time.
-- Purged rows leave the index, so a pass never scans what earlier passes purged.
CREATE INDEX sequences_phi_retained ON sequences(org_id, ended_at)
    WHERE status = 'ended' AND phi_purged_at IS NULL;
