-- An SMS conversation through a provider (Twilio): its messages so far and what the
-- scripted assistant needs to answer the next inbound text, as JSON.
ALTER TABLE encounters ADD COLUMN conversation TEXT;
-- Inbound texts find the conversation running with their sender's number.
CREATE INDEX encounters_open_sms ON encounters(phone_number, id)
    WHERE channel = 'sms' AND status = 'requested';
