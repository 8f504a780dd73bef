-- Issue 14: an Idempotency-Key is bound to the request that first used it. The SHA-256 (hex)
-- of the enrollment's canonical form is kept with the key, so a later request with the same
-- key and a different body is refused (422 idempotency_key_reused) instead of being answered
-- with the first sequence. NULL for sequences enrolled before this column existed (and for
-- those without a key): their keys replay as before.
ALTER TABLE sequences ADD COLUMN idempotency_fingerprint TEXT;
