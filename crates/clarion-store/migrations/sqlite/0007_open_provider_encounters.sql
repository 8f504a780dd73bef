-- Encounters a provider has not reported on yet (no outcome), by when their report is due:
-- the scheduler looks for overdue ones on every pass. Simulated encounters carry their outcome
-- from the start and never enter this index, so the look-up stays as small as the number of
-- calls and conversations actually open with Vapi or Twilio.
CREATE INDEX encounters_open_due ON encounters(ends_at)
    WHERE status = 'requested' AND outcome IS NULL;
