-- The deployment's secret: one row, written at the first start (random bytes, drawn by the
-- process), read by every node on this database. Public ids are derived from it (see
-- public_id.rs): it must never change, or every id handed out so far would name nothing.
CREATE TABLE deployment_secret (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    id_key  BLOB NOT NULL CHECK (length(id_key) = 32)
);
