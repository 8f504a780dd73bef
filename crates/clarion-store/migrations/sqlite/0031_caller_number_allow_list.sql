-- The numbers each organisation may call and text from. Every organisation's calls go through
-- the deployment's one Vapi account and its texts through its Twilio account, so a number,
-- and a Vapi phoneNumberId, is a deployment resource: a caller number (`/v1/caller-numbers`)
-- is accepted, and chosen at a claim, only while the operator allows it to that organisation
-- (`clarion org allow-caller-number`, never the tenant API). A number is allowed to one
-- organisation only (the primary key), and so is a provider id (the unique index), so one
-- clinic never calls or texts as another. A call number's provider id (its Vapi
-- phoneNumberId) is required; a text number's is optional (set, the organisation's caller
-- number must carry the same).
CREATE TABLE organization_caller_numbers (
    org_id       INTEGER NOT NULL REFERENCES organizations(id),
    channel      TEXT    NOT NULL CHECK (channel IN ('call', 'sms')),
    number       TEXT    NOT NULL,
    provider_id  TEXT    CHECK (channel = 'sms' OR provider_id IS NOT NULL),
    added_at     INTEGER NOT NULL,
    PRIMARY KEY (channel, number)
);
CREATE UNIQUE INDEX organization_caller_numbers_provider_id
    ON organization_caller_numbers(channel, provider_id) WHERE provider_id IS NOT NULL;
CREATE INDEX organization_caller_numbers_by_org ON organization_caller_numbers(org_id);
