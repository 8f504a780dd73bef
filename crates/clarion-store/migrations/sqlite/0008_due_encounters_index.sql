-- Encounters whose end is known and due by `ends_at` (the simulator's, and a provider's once it
-- reported). With the outcome in the index, the scheduler reads the ids of due encounters
-- from the index alone. Encounters still waiting on a provider are in `encounters_open_due`.
DROP INDEX encounters_due;
CREATE INDEX encounters_due ON encounters(ends_at, outcome)
    WHERE status = 'requested' AND outcome IS NOT NULL;
