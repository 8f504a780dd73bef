-- The dashboard's overview (`/ui`): one organisation's last 30 days, each aggregate one range
-- of an index per organisation, whatever the size of its history.
--
-- Encounters that ended, by organisation and end time, covering the outcome counts (per UTC
-- day, channel and outcome); the answer rate and the answered calls' heat map read the same
-- range (the heat map then joins each answered call's sequence for the contact's zone).
CREATE INDEX encounters_org_ended ON encounters(org_id, ended_at, channel, outcome)
    WHERE status = 'ended';

-- Sequences that ended, by organisation and end time: running and paused sequences are
-- counted through `sequences_org_status` (they are the live work), ended ones only in the
-- window.
CREATE INDEX sequences_org_ended ON sequences(org_id, ended_at) WHERE status = 'ended';
