-- Webhook endpoint secrets are sealed at rest (see src/secret_keys.rs): the column holds the
-- sealed text and `key_id` names the key that sealed it. Rows written before this migration
-- hold the secret itself with `key_id` NULL; the store re-seals them when it next connects
-- (the key is not available to SQL).
ALTER TABLE webhook_endpoint_secrets RENAME COLUMN secret TO sealed_secret;
ALTER TABLE webhook_endpoint_secrets ADD COLUMN key_id TEXT;

-- A deleted endpoint's secrets serve no one: erase them (deleting an endpoint now does so).
DELETE FROM webhook_endpoint_secrets
WHERE endpoint_id IN (SELECT id FROM webhook_endpoints WHERE deleted_at IS NOT NULL);
