-- Caller numbers (`/v1/caller-numbers`): an organisation's own numbers to call (a Vapi
-- phoneNumberId each) and text (a Twilio From number each) from. Each call or first text of a
-- conversation picks one at its claim: the contact's area code first, then the least recently
-- chosen, within `daily_cap` contacts per rolling 24 hours (NULL: no cap). `last_chosen_at`
-- is the round robin's order. With no enabled number for a channel, the configured single
-- number is used as before.
CREATE TABLE caller_numbers (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id          INTEGER NOT NULL REFERENCES organizations(id),
    channel         TEXT    NOT NULL CHECK (channel IN ('call', 'sms')),
    number          TEXT    NOT NULL,
    provider_id     TEXT,
    daily_cap       INTEGER CHECK (daily_cap IS NULL OR daily_cap >= 1),
    enabled         INTEGER NOT NULL DEFAULT 1,
    last_chosen_at  INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (org_id, channel, number)
);

-- The number an encounter was placed or begun from, recorded in its claim's transaction:
-- the caller number's id (no foreign key: deleting a number leaves its history), the number
-- itself (the report's `source_number`), the provider's id for it (a Vapi phoneNumberId) and
-- when it was chosen (what a number's daily cap counts).
ALTER TABLE encounters ADD COLUMN caller_number_id INTEGER;
ALTER TABLE encounters ADD COLUMN caller_number TEXT;
ALTER TABLE encounters ADD COLUMN caller_provider_id TEXT;
ALTER TABLE encounters ADD COLUMN caller_number_at INTEGER;
-- A number's contacts of the last 24 hours, for its cap.
CREATE INDEX encounters_by_caller_number ON encounters(caller_number_id, caller_number_at)
    WHERE caller_number_id IS NOT NULL;
-- Texts sent from a number (deleted since, maybe): an inbound text to it is still ours.
CREATE INDEX encounters_sms_caller_number ON encounters(caller_number)
    WHERE channel = 'sms' AND caller_number IS NOT NULL;
