-- An ended sequence's End of Sequence Report (the message, delivered byte for byte and
-- answered by `GET /v1/sequences/{id}`) holds every encounter that had ended by then, each
-- with its whole Call or Sms object, transcript included. The encounter rows kept a second
-- copy that nothing reads once the report exists; new reports drop it in the transaction that
-- queues them (`insert_report_messages`), and this drops it from what is already stored. An
-- encounter that ended after its sequence (a call left to finish after a cancel) is not in
-- the report and keeps its object. The freed pages are reused by later rows; `VACUUM` (with
-- the server stopped) returns them to the file system.
UPDATE encounters SET report = NULL
WHERE status = 'ended' AND report IS NOT NULL
  AND EXISTS (SELECT 1 FROM sequences s
              WHERE s.id = encounters.sequence_id AND s.status = 'ended'
                AND s.ended_at IS NOT NULL AND encounters.ended_at <= s.ended_at)
  AND EXISTS (SELECT 1 FROM webhook_messages m
              WHERE m.sequence_id = encounters.sequence_id AND m.is_test = 0);
