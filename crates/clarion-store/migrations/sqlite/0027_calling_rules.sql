-- An organisation's own calling rules (JSON array, validated by the API): windows and attempt
-- limits applied on top of every template's calling hours and the built-in state table.
-- NULL: none.
ALTER TABLE organizations ADD COLUMN calling_rules TEXT;
