-- SMS encounters whose opening text is being sent (claimed, not yet recorded as requested):
-- an inbound reply that finds no conversation looks here before giving up on one (a patient,
-- or an auto-responder, can answer before the send's record commits).
CREATE INDEX encounters_sms_in_flight ON encounters(phone_number)
    WHERE channel = 'sms' AND status = 'created' AND claimed_at IS NOT NULL;
