//! The webhook outbox (PostgreSQL): messages, deliveries, leases and attempts.
//!
//! Batches travel as arrays (`UNNEST`), one statement per batch: the rows of a batch and
//! their order cost one round trip whatever their number.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{IdOrder, PgStore, PgTx, inserting, to_u32};
use crate::model::*;
use crate::secret_keys::STORED_SECRET_SQL;
use crate::wakeup::Wakeup;
use crate::{
    AfterAttempt, Attempt, AttemptOutcome, ClaimRequest, ClaimedDelivery, Delivery, DeliveryFilter,
    DeliveryId, DeliveryStatus, EndpointId, MessageId, Millis, NewMessage, OrgId, QueueStats,
    Result, StoreError, StoredReport,
};

/// Messages per statement in a batch of reports (arrays have no parameter limit; this bounds
/// one statement's memory).
const MESSAGES_PER_STATEMENT: usize = 5_000;

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, d.message_id, m.webhook_id, m.event_type, \
     m.sequence_id, m.is_test, d.status, d.attempt_count, d.next_attempt_at, d.created_at";

fn delivery_from_row(row: &PgRow) -> Result<Delivery> {
    let status: String = row.try_get("status")?;
    Ok(Delivery {
        id: DeliveryId(row.try_get("id")?),
        endpoint_id: EndpointId(row.try_get("endpoint_id")?),
        message_id: MessageId(row.try_get("message_id")?),
        webhook_id: row.try_get("webhook_id")?,
        event_type: row.try_get("event_type")?,
        sequence_id: row.try_get("sequence_id")?,
        is_test: row.try_get("is_test")?,
        status: status.parse()?,
        attempt_count: to_u32(row.try_get("attempt_count")?),
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        attempts: Vec::new(),
    })
}

impl PgStore {
    pub(crate) async fn subscribed_organizations(
        &self,
        tx: &mut PgTx,
        orgs: &[OrgId],
        event_type: &str,
    ) -> Result<Vec<OrgId>> {
        if orgs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = orgs.iter().map(|o| o.0).collect();
        let found: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT e.org_id FROM webhook_endpoints e \
             WHERE e.org_id = ANY($1) AND e.deleted_at IS NULL AND e.enabled \
               AND e.event_types::jsonb ? $2 \
             ORDER BY e.org_id",
        )
        .bind(&ids)
        .bind(event_type)
        .fetch_all(&mut *tx.inner)
        .await?;
        Ok(found.into_iter().map(OrgId).collect())
    }

    pub(crate) async fn insert_message(
        &self,
        tx: &mut PgTx,
        message: &NewMessage<'_>,
        recipients: Recipients,
        first_attempt_at: Millis,
    ) -> Result<(MessageId, u64)> {
        inserting(tx, IdOrder::Messages).await?;
        let message_id: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_messages \
             (org_id, webhook_id, event_type, sequence_id, is_test, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(message.org_id.0)
        .bind(message.webhook_id)
        .bind(message.event_type)
        .bind(message.sequence_id)
        .bind(message.is_test)
        .bind(message.body)
        .bind(message.created_at)
        .fetch_one(&mut *tx.inner)
        .await?;
        let only_endpoint = match recipients {
            Recipients::AllEnabled => None,
            Recipients::One(id) => Some(id.0),
        };
        let created = sqlx::query(
            "INSERT INTO webhook_deliveries \
             (org_id, message_id, endpoint_id, status, attempt_count, next_attempt_at, created_at, updated_at) \
             SELECT org_id, $1, id, 'pending', 0, $2, $3, $3 FROM webhook_endpoints \
             WHERE org_id = $4 AND deleted_at IS NULL \
               AND (($5::bigint IS NULL AND enabled AND event_types::jsonb ? $6) \
                    OR id = $5::bigint)",
        )
        .bind(message_id)
        .bind(first_attempt_at)
        .bind(message.created_at)
        .bind(message.org_id.0)
        .bind(only_endpoint)
        .bind(message.event_type)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        if created > 0 {
            tx.wake_nodes(Wakeup::Deliveries);
        }
        Ok((MessageId(message_id), created))
    }

    pub(crate) async fn insert_report_messages(
        &self,
        tx: &mut PgTx,
        messages: &[NewMessage<'_>],
        first_attempt_at: Millis,
    ) -> Result<u64> {
        if messages.is_empty() {
            return Ok(0);
        }
        inserting(tx, IdOrder::Messages).await?;
        let mut created = 0;
        for chunk in messages.chunks(MESSAGES_PER_STATEMENT) {
            let orgs: Vec<i64> = chunk.iter().map(|m| m.org_id.0).collect();
            let webhook_ids: Vec<&str> = chunk.iter().map(|m| m.webhook_id).collect();
            let event_types: Vec<&str> = chunk.iter().map(|m| m.event_type).collect();
            let sequences: Vec<Option<i64>> =
                chunk.iter().map(|m| m.sequence_id.map(|s| s.0)).collect();
            let tests: Vec<bool> = chunk.iter().map(|m| m.is_test).collect();
            let bodies: Vec<&[u8]> = chunk.iter().map(|m| m.body).collect();
            let created_ats: Vec<i64> = chunk.iter().map(|m| m.created_at).collect();
            let ids: Vec<i64> = sqlx::query_scalar(
                "INSERT INTO webhook_messages \
                 (org_id, webhook_id, event_type, sequence_id, is_test, body, created_at) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
                                      $5::boolean[], $6::bytea[], $7::bigint[]) \
                 RETURNING id",
            )
            .bind(&orgs)
            .bind(&webhook_ids)
            .bind(&event_types)
            .bind(&sequences)
            .bind(&tests)
            .bind(&bodies)
            .bind(&created_ats)
            .fetch_all(&mut *tx.inner)
            .await?;
            let now = chunk.first().map_or(first_attempt_at, |m| m.created_at);
            created += sqlx::query(
                "INSERT INTO webhook_deliveries \
                 (org_id, message_id, endpoint_id, status, attempt_count, next_attempt_at, created_at, updated_at) \
                 SELECT m.org_id, m.id, e.id, 'pending', 0, $1, $2, $2 \
                 FROM webhook_messages m JOIN webhook_endpoints e ON e.org_id = m.org_id \
                 WHERE m.id = ANY($3) AND e.deleted_at IS NULL AND e.enabled \
                   AND e.event_types::jsonb ? m.event_type \
                 ORDER BY m.id, e.id",
            )
            .bind(first_attempt_at)
            .bind(now)
            .bind(&ids)
            .execute(&mut *tx.inner)
            .await?
            .rows_affected();
            // The report holds each ended encounter's object from now on: the encounter
            // rows' copies are dropped (see the SQLite backend).
            let sequences = reported_sequences(chunk);
            if !sequences.is_empty() {
                sqlx::query(
                    "UPDATE encounters SET report = NULL \
                     WHERE sequence_id = ANY($1) AND status = 'ended' AND report IS NOT NULL",
                )
                .bind(sequences)
                .execute(&mut *tx.inner)
                .await?;
            }
        }
        if created > 0 {
            tx.wake_nodes(Wakeup::Deliveries);
        }
        Ok(created)
    }

    pub(crate) async fn claim_due(
        &self,
        request: &ClaimRequest<'_>,
    ) -> Result<Vec<ClaimedDelivery>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let in_flight_endpoints: Vec<i64> = request.in_flight.iter().map(|(e, _)| e.0).collect();
        let in_flight_counts: Vec<i64> = request
            .in_flight
            .iter()
            .map(|(_, n)| i64::from(*n))
            .collect();
        let (limited_endpoints, endpoint_limits): (Vec<i64>, Vec<i64>) = request
            .endpoint_limits
            .iter()
            .map(|(e, limit)| (e.0, i64::from(*limit)))
            .unzip();
        let in_flight_orgs: Vec<i64> = request
            .in_flight_per_organization
            .iter()
            .map(|(o, _)| o.0)
            .collect();
        let in_flight_org_counts: Vec<i64> = request
            .in_flight_per_organization
            .iter()
            .map(|(_, n)| i64::from(*n))
            .collect();
        // The lane condition is written out (not bound) so the planner uses the lane's
        // partial index.
        let lane = if request.first_attempts {
            "d.attempt_count = 0"
        } else {
            "d.attempt_count > 0"
        };
        // Per endpoint, due work goes out in message order: a first attempt waits while an
        // earlier message's retry to the same endpoint is due and unclaimed (the retry lane
        // takes it in the same round). This is what makes a re-enabled endpoint's backlog,
        // all of it due at once, come out in message order.
        let in_order = if request.first_attempts {
            "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries r \
               WHERE r.endpoint_id = e.id AND r.status = 'pending' AND r.attempt_count > 0 \
                 AND r.next_attempt_at <= $3 \
                 AND (r.lease_expires_at IS NULL OR r.lease_expires_at <= $3) AND r.id < d.id)"
        } else {
            ""
        };
        // Candidates are taken per enabled endpoint, its earliest due rows (at most what its
        // cap has room for now) from its range of the lane's index, so one endpoint's backlog
        // never hides another's due work. The room is worked out before the rows are locked:
        // locking rows a full endpoint cannot take (each lock writes the row and the WAL) made
        // every claim of a node pay for a black-hole endpoint's backlog, and at 500 reports/s
        // held a healthy endpoint's reports up for seconds (BENCHMARKS.md). They are locked with SKIP LOCKED (another node's claim in
        // flight is passed over; a row it claimed and committed is re-checked against its new version and
        // left out), ranked per endpoint (its cap, counting the endpoint's live leases on every
        // node), then per
        // organisation (its cap; organisations take turns, the one with the fewest in flight
        // first, as on SQLite), and the lease is written by the same statement. The outer
        // WHERE repeats the due condition, so the UPDATE alone decides.
        let claim_sql = format!(
            "WITH leased AS ( \
               SELECT x.endpoint_id, COUNT(*) AS n FROM webhook_deliveries x \
               WHERE x.endpoint_id = ANY($14) AND x.status = 'pending' \
                 AND x.lease_expires_at > $3 \
               GROUP BY x.endpoint_id \
             ), candidates AS ( \
               SELECT c.id, c.endpoint_id, e.org_id, c.next_attempt_at FROM webhook_endpoints e \
               LEFT JOIN UNNEST($7::bigint[], $8::bigint[]) AS f(endpoint_id, n) \
                 ON f.endpoint_id = e.id \
               LEFT JOIN leased k ON k.endpoint_id = e.id \
               LEFT JOIN UNNEST($12::bigint[], $13::bigint[]) AS l(endpoint_id, cap) \
                 ON l.endpoint_id = e.id \
               CROSS JOIN LATERAL ( \
                 SELECT d.id, d.endpoint_id, d.next_attempt_at FROM webhook_deliveries d \
                 WHERE d.endpoint_id = e.id AND d.status = 'pending' AND {lane} \
                   AND d.next_attempt_at <= $3 \
                   AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $3) {in_order} \
                 ORDER BY d.next_attempt_at, d.id \
                 LIMIT LEAST($4, GREATEST(COALESCE(l.cap, $5) \
                   - GREATEST(COALESCE(f.n, 0), COALESCE(k.n, 0)), 0)) \
                 FOR UPDATE OF d SKIP LOCKED \
               ) c \
               WHERE e.enabled AND e.id = ANY($14) \
             ), ranked AS ( \
               SELECT c.id, c.org_id, c.next_attempt_at, \
                 ROW_NUMBER() OVER (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at, c.id) \
                 + GREATEST(COALESCE(f.n, 0), COALESCE(k.n, 0)) AS endpoint_rank, \
                 COALESCE(l.cap, $5) AS endpoint_cap \
               FROM candidates c \
               LEFT JOIN UNNEST($7::bigint[], $8::bigint[]) AS f(endpoint_id, n) \
                 ON f.endpoint_id = c.endpoint_id \
               LEFT JOIN leased k ON k.endpoint_id = c.endpoint_id \
               LEFT JOIN UNNEST($12::bigint[], $13::bigint[]) AS l(endpoint_id, cap) \
                 ON l.endpoint_id = c.endpoint_id \
             ), org_ranked AS ( \
               SELECT r.id, r.next_attempt_at, \
                 ROW_NUMBER() OVER (PARTITION BY r.org_id \
                   ORDER BY r.endpoint_rank, r.next_attempt_at, r.id) \
                 + COALESCE(g.n, 0) AS org_rank \
               FROM ranked r \
               LEFT JOIN UNNEST($9::bigint[], $10::bigint[]) AS g(org_id, n) \
                 ON g.org_id = r.org_id \
               WHERE r.endpoint_rank <= r.endpoint_cap \
             ), picked AS ( \
               SELECT id FROM org_ranked WHERE org_rank <= $11 \
               ORDER BY org_rank, next_attempt_at, id LIMIT $6 \
             ) \
             UPDATE webhook_deliveries d \
             SET lease_owner = $1 || ':' || substr(md5(gen_random_uuid()::text), 1, 16), \
                 lease_expires_at = $2 \
             FROM picked WHERE d.id = picked.id AND d.status = 'pending' \
               AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $3) \
             RETURNING d.id, d.attempt_count, d.manual, d.lease_owner"
        );
        let mut tx = self.begin().await?;
        // The endpoints with due work in this lane, locked to this transaction's end (another
        // node's claim skips them meanwhile): counting an endpoint's live leases and taking
        // more is then one step across nodes, so its cap holds over the whole cluster. The
        // claim is a statement of its own, after the lock, so that its snapshot sees every
        // lease committed before it (READ COMMITTED). NO KEY UPDATE leaves the foreign-key
        // checks of reports being queued to these endpoints unblocked.
        let endpoints: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT e.id FROM webhook_endpoints e WHERE e.enabled AND EXISTS ( \
               SELECT 1 FROM webhook_deliveries d \
               WHERE d.endpoint_id = e.id AND d.status = 'pending' AND {lane} \
                 AND d.next_attempt_at <= $1 \
                 AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $1)) \
             ORDER BY e.id FOR NO KEY UPDATE OF e SKIP LOCKED"
        ))
        .bind(request.now)
        .fetch_all(&mut *tx.inner)
        .await?;
        if endpoints.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let claimed: Vec<(i64, i64, bool, String)> = sqlx::query_as(&claim_sql)
            .bind(request.owner)
            .bind(request.lease_until)
            .bind(request.now)
            .bind(i64::from(request.candidates_per_endpoint()))
            .bind(i64::from(request.per_endpoint_limit))
            .bind(i64::from(request.limit))
            .bind(&in_flight_endpoints)
            .bind(&in_flight_counts)
            .bind(&in_flight_orgs)
            .bind(&in_flight_org_counts)
            .bind(i64::from(request.per_organization_limit))
            .bind(&limited_endpoints)
            .bind(&endpoint_limits)
            .bind(&endpoints)
            .fetch_all(&mut *tx.inner)
            .await?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
        let details = sqlx::query(&format!(
            "SELECT d.id, d.endpoint_id, e.org_id, e.url, m.webhook_id, m.event_type, m.body, \
               ARRAY(SELECT {STORED_SECRET_SQL} FROM webhook_endpoint_secrets s \
                     WHERE s.endpoint_id = d.endpoint_id \
                       AND (s.expires_at IS NULL OR s.expires_at > $1) \
                     ORDER BY s.expires_at IS NOT NULL, s.id DESC LIMIT $2) AS secrets \
             FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             JOIN webhook_messages m ON m.id = d.message_id \
             WHERE d.id = ANY($3) ORDER BY d.next_attempt_at, d.id"
        ))
        .bind(request.now)
        .bind(crate::MAX_SIGNING_SECRETS)
        .bind(&ids)
        .fetch_all(&mut *tx.inner)
        .await?;
        tx.commit().await?;

        details
            .iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                let (_, attempt_count, manual, lease) = claimed
                    .iter()
                    .find(|c| c.0 == id)
                    .ok_or(StoreError::Corrupt("claimed delivery vanished"))?;
                let endpoint_id = EndpointId(row.try_get("endpoint_id")?);
                Ok(ClaimedDelivery {
                    id: DeliveryId(id),
                    endpoint_id,
                    org_id: OrgId(row.try_get("org_id")?),
                    url: row.try_get("url")?,
                    webhook_id: row.try_get("webhook_id")?,
                    event_type: row.try_get("event_type")?,
                    body: row.try_get("body")?,
                    signing_secrets: self.keys.open_signing(endpoint_id, row.try_get("secrets")?),
                    attempt_count: to_u32(*attempt_count),
                    manual: *manual,
                    lease: lease.clone(),
                })
            })
            .collect()
    }

    pub(crate) async fn record_outcomes(
        &self,
        outcomes: &[AttemptOutcome],
        now: Millis,
    ) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let len = outcomes.len();
        let mut deliveries = Vec::with_capacity(len);
        let mut leases = Vec::with_capacity(len);
        let mut numbers = Vec::with_capacity(len);
        let mut attempted = Vec::with_capacity(len);
        let mut codes: Vec<Option<i64>> = Vec::with_capacity(len);
        let mut durations = Vec::with_capacity(len);
        let mut errors: Vec<Option<&str>> = Vec::with_capacity(len);
        let mut bodies: Vec<Option<&[u8]>> = Vec::with_capacity(len);
        let mut statuses = Vec::with_capacity(len);
        let mut nexts: Vec<Option<i64>> = Vec::with_capacity(len);
        for outcome in outcomes {
            let attempt = &outcome.attempt;
            let (status, next_attempt_at) = match outcome.next {
                AfterAttempt::Delivered => (DeliveryStatus::Delivered, None),
                AfterAttempt::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
                AfterAttempt::Failed => (DeliveryStatus::Failed, None),
            };
            deliveries.push(outcome.delivery_id.0);
            leases.push(outcome.lease.as_str());
            numbers.push(i64::from(attempt.attempt_number));
            attempted.push(attempt.attempted_at);
            codes.push(attempt.status_code.map(i64::from));
            durations.push(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX));
            errors.push(attempt.error.as_deref());
            bodies.push(attempt.response_body.as_deref());
            statuses.push(status.as_str());
            nexts.push(next_attempt_at);
        }

        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts \
             (delivery_id, endpoint_id, attempt_number, attempted_at, status_code, duration_ms, \
              error, response_body) \
             SELECT u.d, (SELECT w.endpoint_id FROM webhook_deliveries w WHERE w.id = u.d), \
                    u.n, u.at, u.s, u.ms, u.e, u.b \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
                         $5::bigint[], $6::text[], $7::bytea[]) AS u(d, n, at, s, ms, e, b)",
        )
        .bind(&deliveries)
        .bind(&numbers)
        .bind(&attempted)
        .bind(&codes)
        .bind(&durations)
        .bind(&errors)
        .bind(&bodies)
        .execute(&mut *tx.inner)
        .await?;
        // The token condition is in the UPDATE itself: a stale claim's outcome changes nothing.
        sqlx::query(
            "UPDATE webhook_deliveries d SET status = u.st, \
             attempt_count = GREATEST(d.attempt_count, u.n), next_attempt_at = u.next, \
             manual = FALSE, lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
             FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[]) \
                  AS u(id, lease, n, st, next) \
             WHERE d.id = u.id AND d.lease_owner = u.lease",
        )
        .bind(now)
        .bind(&deliveries)
        .bind(&leases)
        .bind(&numbers)
        .bind(&statuses)
        .bind(&nexts)
        .execute(&mut *tx.inner)
        .await?;
        // Endpoint health, one statement for the batch: an endpoint whose latest attempt here
        // succeeded is healthy again, unless a failure followed (then its run of failures
        // starts there); one with failures only keeps the start of its run, or starts one.
        // Only rows whose value changes are locked, in id order (two nodes' writers never
        // wait on each other in a cycle), and written.
        sqlx::query(
            "WITH a AS ( \
               SELECT (SELECT w.endpoint_id FROM webhook_deliveries w WHERE w.id = u.d) AS ep, \
                      u.at, COALESCE(u.s BETWEEN 200 AND 299, FALSE) AS ok \
               FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS u(d, at, s)), \
             k AS (SELECT ep, MAX(CASE WHEN ok THEN at END) AS last_ok FROM a GROUP BY ep), \
             h AS (SELECT k.ep, k.last_ok, \
                     MIN(CASE WHEN NOT a.ok AND (k.last_ok IS NULL OR a.at > k.last_ok) \
                         THEN a.at END) AS first_failed \
                   FROM k JOIN a ON a.ep = k.ep GROUP BY k.ep, k.last_ok), \
             changing AS ( \
               SELECT e.id FROM webhook_endpoints e JOIN h ON h.ep = e.id \
               WHERE e.failing_since IS DISTINCT FROM CASE WHEN h.last_ok IS NULL \
                   THEN COALESCE(e.failing_since, h.first_failed) ELSE h.first_failed END \
               ORDER BY e.id FOR NO KEY UPDATE OF e) \
             UPDATE webhook_endpoints e SET failing_since = CASE WHEN h.last_ok IS NULL \
                 THEN COALESCE(e.failing_since, h.first_failed) ELSE h.first_failed END \
             FROM h WHERE e.id = h.ep AND e.id IN (SELECT id FROM changing)",
        )
        .bind(&deliveries)
        .bind(&attempted)
        .bind(&codes)
        .execute(&mut *tx.inner)
        .await?;
        for outcome in outcomes {
            if let Some((endpoint, reason)) = &outcome.disable_endpoint {
                sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $1, \
                     updated_at = $2 WHERE id = $3",
                )
                .bind(reason)
                .bind(now)
                .bind(endpoint.0)
                .execute(&mut *tx.inner)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn endpoint_attempt_stats(
        &self,
        org: OrgId,
        endpoint: EndpointId,
        since: Millis,
    ) -> Result<AttemptStats> {
        // One range of the covering index `webhook_attempts_endpoint`, grouped by duration:
        // the answer has one row per distinct duration, whatever the number of attempts.
        let groups: Vec<AttemptGroup> = sqlx::query_as(
            "SELECT duration_ms, COUNT(*) AS n, \
                    COUNT(*) FILTER (WHERE status_code BETWEEN 200 AND 299) AS ok, \
                    MAX(attempted_at) FILTER (WHERE status_code BETWEEN 200 AND 299) AS last_ok, \
                    MAX(attempted_at) FILTER (WHERE status_code IS NULL \
                                              OR status_code NOT BETWEEN 200 AND 299) AS last_failed \
             FROM webhook_attempts \
             WHERE endpoint_id = $1 AND attempted_at >= $2 \
               AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $1 AND org_id = $3) \
             GROUP BY duration_ms ORDER BY duration_ms",
        )
        .bind(endpoint.0)
        .bind(since)
        .bind(org.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(AttemptStats::from_groups(groups))
    }

    pub(crate) async fn release_leases(&self, claims: &[(DeliveryId, &str)]) -> Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = claims.iter().map(|(id, _)| id.0).collect();
        let leases: Vec<&str> = claims.iter().map(|(_, lease)| *lease).collect();
        sqlx::query(
            "UPDATE webhook_deliveries d SET lease_owner = NULL, lease_expires_at = NULL \
             FROM UNNEST($1::bigint[], $2::text[]) AS r(id, lease) \
             WHERE d.id = r.id AND d.lease_owner = r.lease",
        )
        .bind(&ids)
        .bind(&leases)
        .execute(&self.pool)
        .await?;
        // Given back unattempted: any node may take them now.
        self.notify_nodes(Wakeup::Deliveries);
        Ok(())
    }

    pub(crate) async fn next_due_after(&self, now: Millis) -> Result<Option<Millis>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at > $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(next)
    }

    /// Newest first, below the cursor: a delivery committed late with an id below the cursor
    /// lands on a later page, never on one already read, so no ordered read is needed.
    pub(crate) async fn list_deliveries(
        &self,
        org: OrgId,
        filter: &DeliveryFilter,
        before: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             JOIN webhook_messages m ON m.id = d.message_id \
             WHERE d.org_id = $1 AND d.id < $2 \
               AND ($3::bigint IS NULL OR m.sequence_id = $3::bigint) \
               AND ($4::bigint IS NULL OR d.endpoint_id = $4::bigint) \
               AND ($5::text IS NULL OR d.status = $5::text) \
             ORDER BY d.id DESC LIMIT $6"
        ))
        .bind(org.0)
        .bind(before.map_or(i64::MAX, |b| b.0))
        .bind(filter.sequence_id.map(|s| s.0))
        .bind(filter.endpoint_id.map(|e| e.0))
        .bind(filter.status.map(DeliveryStatus::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut deliveries = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>>>()?;
        self.attach_attempts(&mut deliveries).await?;
        Ok(deliveries)
    }

    pub(crate) async fn get_delivery(
        &self,
        org: OrgId,
        id: DeliveryId,
    ) -> Result<Option<Delivery>> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             JOIN webhook_messages m ON m.id = d.message_id WHERE d.id = $1 AND d.org_id = $2"
        ))
        .bind(id.0)
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut deliveries = vec![delivery_from_row(&row)?];
        self.attach_attempts(&mut deliveries).await?;
        Ok(deliveries.pop())
    }

    async fn attach_attempts(&self, deliveries: &mut [Delivery]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = deliveries.iter().map(|d| d.id.0).collect();
        let rows = sqlx::query(
            "SELECT delivery_id, attempt_number, attempted_at, status_code, duration_ms, error, \
             response_body FROM webhook_attempts WHERE delivery_id = ANY($1) ORDER BY id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let delivery_id = DeliveryId(row.try_get("delivery_id")?);
            let status_code: Option<i64> = row.try_get("status_code")?;
            let attempt = Attempt {
                attempt_number: to_u32(row.try_get("attempt_number")?),
                attempted_at: row.try_get("attempted_at")?,
                status_code: status_code.and_then(|s| u16::try_from(s).ok()),
                duration_ms: u64::try_from(row.try_get::<i64, _>("duration_ms")?).unwrap_or(0),
                error: row.try_get("error")?,
                response_body: row.try_get("response_body")?,
            };
            if let Some(delivery) = deliveries.iter_mut().find(|d| d.id == delivery_id) {
                delivery.attempts.push(attempt);
            }
        }
        Ok(())
    }

    pub(crate) async fn retry_delivery(
        &self,
        org: OrgId,
        id: DeliveryId,
        now: Millis,
    ) -> Result<Option<Delivery>> {
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET \
                manual = CASE WHEN status = 'pending' THEN manual ELSE TRUE END, \
                status = 'pending', next_attempt_at = $1, updated_at = $1 \
             WHERE id = $2 AND org_id = $3 AND endpoint_id IN \
               (SELECT e.id FROM webhook_endpoints e WHERE e.deleted_at IS NULL AND e.enabled)",
        )
        .bind(now)
        .bind(id.0)
        .bind(org.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        self.notify_nodes(Wakeup::Deliveries);
        self.get_delivery(org, id).await
    }

    pub(crate) async fn list_reports(
        &self,
        org: OrgId,
        event_type: &str,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<StoredReport>> {
        // The pull API's cursor: read in commit order (see `IdOrder`).
        let mut tx = self.ordered_read(IdOrder::Messages).await?;
        let rows = sqlx::query(
            "SELECT id, webhook_id, body FROM webhook_messages \
             WHERE org_id = $1 AND NOT is_test AND event_type = $2 AND id > $3 \
             ORDER BY id LIMIT $4",
        )
        .bind(org.0)
        .bind(event_type)
        .bind(after.map_or(0, |a| a.0))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(StoredReport {
                    message_id: MessageId(row.try_get("id")?),
                    webhook_id: row.try_get("webhook_id")?,
                    body: row.try_get("body")?,
                })
            })
            .collect()
    }

    pub(crate) async fn queue_stats(&self) -> Result<QueueStats> {
        let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueStats {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest_pending_created_at: oldest,
        })
    }
}
