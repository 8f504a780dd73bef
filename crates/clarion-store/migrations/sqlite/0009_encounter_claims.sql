-- Contact is decided twice: when the encounter row is committed, and again in the
-- transaction just before the provider (Vapi, Twilio) is asked, which sets `claimed_at`.
-- Unclaimed (`status = 'created' AND claimed_at IS NULL`): certainly not sent yet, so the
-- provider worker may send it, and a cancel may withdraw it. Claimed but not yet requested:
-- the request may have gone out, so it is never sent again, only reconciled.
ALTER TABLE encounters ADD COLUMN claimed_at INTEGER;
-- The provider worker's queue: encounters committed for a provider and not yet claimed.
CREATE INDEX encounters_unclaimed ON encounters(id)
    WHERE status = 'created' AND claimed_at IS NULL;
