-- Organisation settings. NULL means "the deployment's default" (`[compliance]` in the
-- configuration); 0 means "no cap".
ALTER TABLE organizations ADD COLUMN max_contacts_per_day INTEGER;
ALTER TABLE organizations ADD COLUMN max_contacts_per_week INTEGER;
-- The answer to an SMS HELP: who is texting and how to reach them.
ALTER TABLE organizations ADD COLUMN sms_help_text TEXT;
