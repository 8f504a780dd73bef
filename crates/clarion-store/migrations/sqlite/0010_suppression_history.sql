-- The suppression list's history: every entry added or removed, by whom, and for a removed
-- opt-out the new consent that allowed it. Rows are only ever inserted.

CREATE TABLE suppression_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id        INTEGER NOT NULL REFERENCES organizations(id),
    phone_number  TEXT    NOT NULL,
    action        TEXT    NOT NULL CHECK (action IN ('added', 'removed')),
    reason        TEXT    NOT NULL,            -- the entry's reason at the time of the change
    actor         TEXT    NOT NULL,            -- 'patient', 'system', or 'api-key:<id>'
    at            INTEGER NOT NULL,
    consent       TEXT                         -- JSON, the consent recorded with a removal
);

CREATE INDEX suppression_history_by_number ON suppression_history (org_id, phone_number, id);

-- Entries that existed before the history did get their addition recorded, so the history of
-- every listed number starts with how it got there.
INSERT INTO suppression_history (org_id, phone_number, action, reason, actor, at)
SELECT org_id, phone_number, 'added', reason,
       CASE WHEN reason = 'opt-out' THEN 'patient' ELSE 'unknown' END, created_at
FROM suppressions ORDER BY created_at;
