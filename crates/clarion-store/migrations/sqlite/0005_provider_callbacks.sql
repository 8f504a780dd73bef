-- Provider callbacks find their encounter by the provider's id (a Vapi call id).
CREATE INDEX encounters_provider_ref ON encounters(provider_ref) WHERE provider_ref IS NOT NULL;
-- The provider's latest status of an encounter in progress (a call's queued, ringing,
-- in-progress, forwarding), for the report of a running sequence.
ALTER TABLE encounters ADD COLUMN provider_status TEXT;
