-- The operator dashboard (`/ui`).
--
-- Sign-in sessions: the cookie's random token is stored only as its SHA-256, so a copy of the
-- database signs nobody in. A row lives until sign-out, its idle expiry or its absolute
-- lifetime; expired rows are purged whenever a session is created.
CREATE TABLE ui_sessions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id        INTEGER NOT NULL REFERENCES organizations(id),
    api_key_id    INTEGER NOT NULL REFERENCES api_keys(id),
    token_hash    BLOB    NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);

-- The PHI access log: every view of a sequence's detail and every export, by whom
-- ('ui-session:<id> api-key:<id>' or 'api-key:<id>'), what and when. Rows are only ever
-- inserted. `sequence_id` has no foreign key on purpose: the record of an access must
-- outlive an erasure of the data it names.
CREATE TABLE access_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       INTEGER NOT NULL REFERENCES organizations(id),
    at           INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    sequence_id  INTEGER,
    detail       TEXT    NOT NULL
);
CREATE INDEX access_log_by_org ON access_log (org_id, id);
