-- The provider capacity governor (issue 13): calls in progress at Vapi are counted from the
-- database, so a restart or a second node sees the same count, and every wait for a free
-- slot (or a paced send) is recorded once.
--
-- When the encounter first waited for provider capacity (engine time); NULL while it has not.
-- Set once per wait: a re-queued encounter (the provider proved it was not started for lack of
-- capacity) sets it again, so its history shows that wait too.
ALTER TABLE encounters ADD COLUMN capacity_wait_at INTEGER;
-- Encounters holding a provider slot: claimed for their request and not ended (requested,
-- or claimed and still being asked). Counted, per organisation, before every claim.
CREATE INDEX encounters_holding_slots ON encounters(channel, org_id)
    WHERE claimed_at IS NOT NULL AND status != 'ended';
