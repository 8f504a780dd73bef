-- Due sequences are claimed by a lock held to the end of the claiming transaction (SQLite: the
-- IMMEDIATE transaction's write lock; PostgreSQL: FOR UPDATE SKIP LOCKED), which moves them
-- before it commits: the work on a claimed sequence never outlives that transaction, and a
-- lock dies with its connection, so no lease is needed. The never-used lease columns go.
ALTER TABLE sequences DROP COLUMN lease_owner;
ALTER TABLE sequences DROP COLUMN lease_expires_at;
