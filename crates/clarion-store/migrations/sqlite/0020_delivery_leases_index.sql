-- Deliveries under a lease (in flight on some process, or a lease not yet reclaimed), per
-- endpoint: the claim counts an endpoint's live leases against its concurrency cap, so the
-- cap holds whoever holds the leases. Only leased rows are indexed: a backlog costs nothing.
CREATE INDEX webhook_deliveries_endpoint_leased
    ON webhook_deliveries(endpoint_id, lease_expires_at)
    WHERE status = 'pending' AND lease_expires_at IS NOT NULL;
