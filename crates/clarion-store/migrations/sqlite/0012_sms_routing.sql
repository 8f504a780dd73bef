-- The sender an SMS conversation was begun from (our number, or the Messaging Service sid):
-- an inbound text reaches only a conversation begun from the number (or service) it was sent
-- to, so a patient's reply never lands in another organisation's conversation. NULL for rows
-- written before this column existed (they match any sender).
ALTER TABLE encounters ADD COLUMN sender TEXT;

-- Every inbound Twilio text processed, by MessageSid: Twilio's signatures carry no timestamp,
-- so a captured request could be replayed; a repeat is refused. Kept for a bounded time.
CREATE TABLE twilio_inbound_messages (
    message_sid  TEXT    PRIMARY KEY,
    received_at  INTEGER NOT NULL
);
CREATE INDEX twilio_inbound_messages_age ON twilio_inbound_messages(received_at);
