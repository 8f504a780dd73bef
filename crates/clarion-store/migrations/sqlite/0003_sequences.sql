-- Assistants, versioned sequence templates, sequences, encounters, history, suppressions.

CREATE TABLE assistants (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id         INTEGER NOT NULL REFERENCES organizations(id),
    name           TEXT    NOT NULL,
    channel        TEXT    NOT NULL CHECK (channel IN ('call', 'sms')),
    config         TEXT    NOT NULL,            -- provider configuration, JSON
    custom_fields  TEXT    NOT NULL,            -- analysis fields the assistant extracts, JSON array
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX assistants_org ON assistants(org_id, id);

-- A template is a name and a pointer to its current version; every edit adds a version and a
-- running sequence keeps the version it was enrolled on.
CREATE TABLE sequence_templates (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id           INTEGER NOT NULL REFERENCES organizations(id),
    name             TEXT    NOT NULL,
    current_version  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX sequence_templates_org ON sequence_templates(org_id, id);

CREATE TABLE sequence_template_versions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id  INTEGER NOT NULL REFERENCES sequence_templates(id),
    version      INTEGER NOT NULL,
    definition   TEXT    NOT NULL,              -- steps, stop_on, calling_hours, sms_timeout: JSON
    created_at   INTEGER NOT NULL,
    UNIQUE (template_id, version)
);

-- A sequence: one contact enrolled in one template version. `state` is the engine's state
-- (JSON); `next_wake_at` is when the scheduler must wake it; a worker that claims it holds a
-- lease until lease_expires_at.
CREATE TABLE sequences (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id               INTEGER NOT NULL REFERENCES organizations(id),
    template_id          INTEGER NOT NULL REFERENCES sequence_templates(id),
    template_version_id  INTEGER NOT NULL REFERENCES sequence_template_versions(id),
    phone_number         TEXT    NOT NULL,
    contact              TEXT    NOT NULL,      -- phone_number, time_zone, name, external_id: JSON
    variables            TEXT    NOT NULL,      -- JSON object
    simulation           TEXT,                  -- JSON or NULL
    status               TEXT    NOT NULL CHECK (status IN ('active', 'paused', 'ended')),
    state                TEXT    NOT NULL,
    next_wake_at         INTEGER,
    lease_owner          TEXT,
    lease_expires_at     INTEGER,
    outcome_description  TEXT,
    allow_concurrent     INTEGER NOT NULL DEFAULT 0,
    idempotency_key      TEXT,
    created_at           INTEGER NOT NULL,
    last_updated         INTEGER NOT NULL,
    ended_at             INTEGER
);
CREATE INDEX sequences_due ON sequences(next_wake_at) WHERE status = 'active' AND next_wake_at IS NOT NULL;
CREATE INDEX sequences_org ON sequences(org_id, id);
CREATE INDEX sequences_org_status ON sequences(org_id, status, id);
CREATE UNIQUE INDEX sequences_idempotency ON sequences(org_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- A number is never in two running sequences of one template unless enrolled with allow_concurrent.
CREATE UNIQUE INDEX sequences_one_running_per_template ON sequences(org_id, template_id, phone_number)
    WHERE status != 'ended' AND allow_concurrent = 0;

-- One row per contact attempt, committed before the provider is asked (at most once): the
-- unique key makes a second start of the same step attempt impossible.
CREATE TABLE encounters (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id        INTEGER NOT NULL REFERENCES organizations(id),
    sequence_id   INTEGER NOT NULL REFERENCES sequences(id),
    step          INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    channel       TEXT    NOT NULL CHECK (channel IN ('call', 'sms')),
    assistant_id  INTEGER NOT NULL REFERENCES assistants(id),
    phone_number  TEXT    NOT NULL,
    -- created: committed, provider not yet asked (or the answer was lost in a crash)
    -- requested: the provider accepted it; ended: the outcome is known
    status        TEXT    NOT NULL CHECK (status IN ('created', 'requested', 'ended')),
    provider_ref  TEXT,
    outcome       TEXT,
    report        TEXT,                          -- the Call or Sms object of the report, JSON
    ends_at       INTEGER,                       -- when a requested encounter is due to end
    created_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    UNIQUE (sequence_id, step, attempt)
);
CREATE INDEX encounters_due ON encounters(ends_at) WHERE status = 'requested';
CREATE INDEX encounters_created ON encounters(created_at) WHERE status = 'created';
CREATE INDEX encounters_contact ON encounters(org_id, phone_number, created_at);

-- A sequence's history: starts, deferrals and skips with their reasons, endings.
CREATE TABLE sequence_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    sequence_id  INTEGER NOT NULL REFERENCES sequences(id),
    at           INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    detail       TEXT    NOT NULL                -- JSON
);
CREATE INDEX sequence_events_sequence ON sequence_events(sequence_id, id);

-- The organisation's do-not-contact list.
CREATE TABLE suppressions (
    org_id        INTEGER NOT NULL REFERENCES organizations(id),
    phone_number  TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (org_id, phone_number)
);
