-- Each endpoint subscribes to event types (a JSON array of names, e.g. `["sequence.ended",
-- "encounter.ended"]`); a message is fanned out only to the endpoints subscribed to its type.
-- Existing endpoints keep what they had: the End of Sequence Report alone. Test reports go
-- to the one endpoint they were sent to, whatever it subscribes to.
ALTER TABLE webhook_endpoints ADD COLUMN event_types TEXT NOT NULL DEFAULT '["sequence.ended"]';
