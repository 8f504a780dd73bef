-- One patient's sequences in one organisation: a right-of-erasure request
-- (DELETE /v1/contacts/{phone_number}) reads them in id order, a page at a time, without
-- scanning the organisation's other sequences.
CREATE INDEX sequences_org_phone ON sequences(org_id, phone_number, id);
