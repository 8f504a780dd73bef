-- Organisations, API keys, webhook endpoints and the webhook outbox.
-- Times are INTEGER milliseconds since the Unix epoch (UTC).

CREATE TABLE organizations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Only a SHA-256 of each key is kept; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      INTEGER NOT NULL REFERENCES organizations(id),
    key_hash    BLOB    NOT NULL UNIQUE,
    key_prefix  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE webhook_endpoints (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id           INTEGER NOT NULL REFERENCES organizations(id),
    url              TEXT    NOT NULL,
    description      TEXT    NOT NULL DEFAULT '',
    enabled          INTEGER NOT NULL DEFAULT 1,
    disabled_reason  TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    deleted_at       INTEGER
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints(org_id, id);

-- The current secret has expires_at NULL; a rotated-out secret keeps signing until expires_at.
CREATE TABLE webhook_endpoint_secrets (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id  INTEGER NOT NULL REFERENCES webhook_endpoints(id),
    secret       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER
);
CREATE INDEX webhook_endpoint_secrets_endpoint ON webhook_endpoint_secrets(endpoint_id);

-- One message per report (or test report): the exact bytes every attempt sends.
CREATE TABLE webhook_messages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       INTEGER NOT NULL REFERENCES organizations(id),
    webhook_id   TEXT    NOT NULL UNIQUE,
    event_type   TEXT    NOT NULL,
    sequence_id  INTEGER,
    is_test      INTEGER NOT NULL DEFAULT 0,
    body         BLOB    NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX webhook_messages_reports ON webhook_messages(org_id, is_test, id);
CREATE INDEX webhook_messages_sequence ON webhook_messages(sequence_id);

-- One delivery per message and endpoint. A pending delivery is due at next_attempt_at; a
-- dispatcher that claims it holds a lease until lease_expires_at, after which any node may
-- claim it again (the holder crashed). `manual` marks a hand-requested extra attempt, which
-- does not continue the retry schedule when it fails.
CREATE TABLE webhook_deliveries (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id            INTEGER NOT NULL REFERENCES organizations(id),
    message_id        INTEGER NOT NULL REFERENCES webhook_messages(id),
    endpoint_id       INTEGER NOT NULL REFERENCES webhook_endpoints(id),
    status            TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempt_count     INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER,
    manual            INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    UNIQUE (message_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_org ON webhook_deliveries(org_id, id);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, status);

-- Every attempt, kept: when, the answer (NULL status when there was none), how long, the
-- error class, and the first KiB of the response body.
CREATE TABLE webhook_attempts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id    INTEGER NOT NULL REFERENCES webhook_deliveries(id),
    attempt_number INTEGER NOT NULL,
    attempted_at   INTEGER NOT NULL,
    status_code    INTEGER,
    duration_ms    INTEGER NOT NULL,
    error          TEXT,
    response_body  BLOB
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id, id);
