-- The pre-contact eligibility hook, per organisation (README, "Eligibility hook").
-- Its settings: JSON {"url", "timeout_ms", "on_error"}, validated by the API; NULL: no hook.
ALTER TABLE organizations ADD COLUMN eligibility_hook TEXT;
-- Its signing secret (`whsec_…`), sealed like webhook endpoint secrets (src/secret_keys.rs,
-- bound to the organisation), and the id of the key that sealed it. NULL with no hook.
ALTER TABLE organizations ADD COLUMN eligibility_hook_secret TEXT;
ALTER TABLE organizations ADD COLUMN eligibility_hook_key_id TEXT;
