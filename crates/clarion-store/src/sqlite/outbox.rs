//! The webhook outbox: messages, deliveries, leases and attempts.

use std::fmt::Write as _;

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{SqliteStore, SqliteTx, to_u32};
use crate::model::*;
use crate::secret_keys::STORED_SECRET_SQL;
use crate::{
    AfterAttempt, Attempt, AttemptOutcome, ClaimRequest, ClaimedDelivery, Delivery, DeliveryFilter,
    DeliveryId, DeliveryStatus, EndpointId, MessageId, Millis, NewMessage, OrgId, QueueStats,
    Result, StoreError, StoredReport,
};

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, d.message_id, m.webhook_id, m.event_type, \
     m.sequence_id, m.is_test, d.status, d.attempt_count, d.next_attempt_at, d.created_at";

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery> {
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

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A JSON array of ids, for `json_each` (SQLite has no array parameters).
fn json_ids(ids: impl IntoIterator<Item = i64>) -> String {
    let mut text = String::from("[");
    for (i, id) in ids.into_iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "{id}");
    }
    text.push(']');
    text
}

/// The claim's `UPDATE` for one lane (`d.attempt_count = 0` or `> 0`, written out so that
/// SQLite can use the lane's partial index).
fn claim_statement(lane: &str) -> String {
    // Per endpoint, due work goes out in message order: a first attempt waits while an
    // earlier message's retry to the same endpoint is due and unclaimed (the retry lane takes
    // it in the same round). This is what makes a re-enabled endpoint's backlog, all of it
    // due at once, come out in message order.
    let in_order = if lane.ends_with("= 0") {
        "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries r \
           WHERE r.endpoint_id = e.id AND r.status = 'pending' AND r.attempt_count > 0 \
             AND r.next_attempt_at <= ?4 \
             AND (r.lease_expires_at IS NULL OR r.lease_expires_at <= ?4) AND r.id < d.id)"
    } else {
        ""
    };
    // Candidates are taken per endpoint: each enabled endpoint's earliest due rows, at
    // most `take` of them (an index range on `webhook_deliveries_endpoint_due_*`), so a
    // deep backlog of one endpoint due earlier never hides another endpoint's rows.
    // `endpoint_rank` applies the per-endpoint cap, counting what is in flight: the
    // endpoint's live leases, whichever process holds them (never less than what the
    // claiming node says it has in flight), so the cap holds over every claimer of the
    // database (the IMMEDIATE transaction makes count and claim one step). `org_rank` then numbers each organisation's candidates, its least busy
    // endpoints' first, after what the organisation already has in flight here; it applies
    // the per-organisation cap, and the batch is taken in `org_rank` order: organisations
    // take turns, the one with the fewest in flight first (water-filling), so one with many
    // slow endpoints cannot take the slots another's due work needs. Ties go to the
    // earliest due. The outer WHERE repeats every claim condition, so the statement that
    // sets the lease is the one that checks it: a backend whose subquery may see rows
    // another claimer took meanwhile (PostgreSQL under READ COMMITTED re-checks the outer
    // WHERE on the row it locks) still never takes a live lease. `CROSS JOIN` keeps the
    // endpoints as the outer loop: left to itself, SQLite scanned every delivery and tested
    // it against each endpoint's list.
    format!(
        "UPDATE webhook_deliveries AS d \
         SET lease_owner = ?1 || ':' || lower(hex(randomblob(8))), lease_expires_at = ?2 \
         WHERE d.id IN ( \
           SELECT id FROM ( \
             SELECT id, next_attempt_at, \
               ROW_NUMBER() OVER (PARTITION BY org_id ORDER BY endpoint_rank, next_attempt_at, id) \
               + COALESCE((SELECT j.value FROM json_each(?8) j WHERE j.key = CAST(org_id AS TEXT)), 0) \
               AS org_rank \
             FROM ( \
               SELECT c.id, c.endpoint_id, e.org_id, c.next_attempt_at, \
                 ROW_NUMBER() OVER (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at, c.id) \
                 + MAX(COALESCE((SELECT j.value FROM json_each(?3) j WHERE j.key = CAST(c.endpoint_id AS TEXT)), 0), \
                       (SELECT COUNT(*) FROM webhook_deliveries x WHERE x.endpoint_id = c.endpoint_id \
                          AND x.status = 'pending' AND x.lease_expires_at > ?4)) \
                 AS endpoint_rank \
               FROM webhook_endpoints e CROSS JOIN webhook_deliveries c ON c.id IN ( \
                 SELECT d.id FROM webhook_deliveries d \
                 WHERE d.endpoint_id = e.id AND d.status = 'pending' AND {lane} \
                   AND d.next_attempt_at <= ?4 \
                   AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= ?4) {in_order} \
                 ORDER BY d.next_attempt_at, d.id LIMIT ?5) \
               WHERE e.enabled = 1 \
             ) WHERE endpoint_rank <= COALESCE( \
                 (SELECT j.value FROM json_each(?10) j WHERE j.key = CAST(endpoint_id AS TEXT)), ?6) \
           ) WHERE org_rank <= ?9 ORDER BY org_rank, next_attempt_at, id LIMIT ?7 \
         ) \
         AND d.status = 'pending' AND {lane} AND d.next_attempt_at <= ?4 \
         AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= ?4) \
         RETURNING id, attempt_count, manual, lease_owner"
    )
}

/// A JSON object of counts by id (`{"7":3}`), for the claim's `json_each` look-ups.
fn json_counts(counts: impl IntoIterator<Item = (i64, u32)>) -> String {
    let mut text = String::from("{");
    for (i, (id, count)) in counts.into_iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "\"{id}\":{count}");
    }
    text.push('}');
    text
}

impl SqliteStore {
    pub(crate) async fn subscribed_organizations(
        &self,
        tx: &mut SqliteTx,
        orgs: &[OrgId],
        event_type: &str,
    ) -> Result<Vec<OrgId>> {
        if orgs.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT e.org_id FROM webhook_endpoints e \
             WHERE e.org_id IN (SELECT value FROM json_each(?)) \
               AND e.deleted_at IS NULL AND e.enabled = 1 \
               AND EXISTS (SELECT 1 FROM json_each(e.event_types) j WHERE j.value = ?) \
             ORDER BY e.org_id",
        )
        .bind(json_ids(orgs.iter().map(|o| o.0)))
        .bind(event_type)
        .fetch_all(&mut *tx.inner)
        .await?;
        Ok(found.into_iter().map(OrgId).collect())
    }

    pub(crate) async fn insert_message(
        &self,
        tx: &mut SqliteTx,
        message: &NewMessage<'_>,
        recipients: Recipients,
        first_attempt_at: Millis,
    ) -> Result<(MessageId, u64)> {
        let message_id: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_messages \
             (org_id, webhook_id, event_type, sequence_id, is_test, body, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
             SELECT org_id, ?, id, 'pending', 0, ?, ?, ? FROM webhook_endpoints \
             WHERE org_id = ? AND deleted_at IS NULL AND (? IS NULL AND enabled = 1 \
               AND EXISTS (SELECT 1 FROM json_each(event_types) j WHERE j.value = ?) OR id = ?)",
        )
        .bind(message_id)
        .bind(first_attempt_at)
        .bind(message.created_at)
        .bind(message.created_at)
        .bind(message.org_id.0)
        .bind(only_endpoint)
        .bind(message.event_type)
        .bind(only_endpoint)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        Ok((MessageId(message_id), created))
    }

    pub(crate) async fn insert_report_messages(
        &self,
        tx: &mut SqliteTx,
        messages: &[NewMessage<'_>],
        first_attempt_at: Millis,
    ) -> Result<u64> {
        // SQLite allows 32,766 bound parameters per statement; 7 per row.
        const ROWS_PER_STATEMENT: usize = 2_000;
        let mut created = 0;
        for chunk in messages.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO webhook_messages \
                 (org_id, webhook_id, event_type, sequence_id, is_test, body, created_at) VALUES ",
            );
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 {
                    "(?, ?, ?, ?, ?, ?, ?)"
                } else {
                    ", (?, ?, ?, ?, ?, ?, ?)"
                });
            }
            sql.push_str(" RETURNING id");
            // Statements of every batch size would crowd the statement cache.
            let mut insert = sqlx::query_scalar::<_, i64>(&sql).persistent(false);
            for message in chunk {
                insert = insert
                    .bind(message.org_id.0)
                    .bind(message.webhook_id)
                    .bind(message.event_type)
                    .bind(message.sequence_id)
                    .bind(message.is_test)
                    .bind(message.body)
                    .bind(message.created_at);
            }
            let ids = insert.fetch_all(&mut *tx.inner).await?;
            let now = chunk.first().map_or(first_attempt_at, |m| m.created_at);
            created += sqlx::query(
                "INSERT INTO webhook_deliveries \
                 (org_id, message_id, endpoint_id, status, attempt_count, next_attempt_at, created_at, updated_at) \
                 SELECT m.org_id, m.id, e.id, 'pending', 0, ?, ?, ? \
                 FROM webhook_messages m JOIN webhook_endpoints e ON e.org_id = m.org_id \
                 WHERE m.id IN (SELECT value FROM json_each(?)) \
                 AND e.deleted_at IS NULL AND e.enabled = 1 \
                 AND EXISTS (SELECT 1 FROM json_each(e.event_types) j WHERE j.value = m.event_type) \
                 ORDER BY m.id, e.id",
            )
            .bind(first_attempt_at)
            .bind(now)
            .bind(now)
            .bind(json_ids(ids))
            .execute(&mut *tx.inner)
            .await?
            .rows_affected();
            // The report holds each ended encounter's object (its Call or Sms, transcript
            // included) from now on: the encounter rows' copies are dropped, so that an
            // ended sequence's transcripts are stored once. `GET /v1/sequences/{id}` of an
            // ended sequence answers the message's bytes.
            let sequences = reported_sequences(chunk);
            if !sequences.is_empty() {
                sqlx::query(
                    "UPDATE encounters SET report = NULL \
                     WHERE sequence_id IN (SELECT value FROM json_each(?)) \
                     AND status = 'ended' AND report IS NOT NULL",
                )
                .bind(json_ids(sequences))
                .execute(&mut *tx.inner)
                .await?;
            }
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
        let in_flight = json_counts(request.in_flight.iter().map(|(e, n)| (e.0, *n)));
        let endpoint_limits = json_counts(request.endpoint_limits.iter().map(|(e, n)| (e.0, *n)));
        let in_flight_per_organization = json_counts(
            request
                .in_flight_per_organization
                .iter()
                .map(|(o, n)| (o.0, *n)),
        );

        let mut tx = self.begin().await?;
        // The lane condition is written out (not bound) so SQLite can use the lane's partial
        // index.
        let lane = if request.first_attempts {
            "d.attempt_count = 0"
        } else {
            "d.attempt_count > 0"
        };
        let claim_sql = claim_statement(lane);
        let claimed: Vec<(i64, i64, bool, String)> = sqlx::query_as(&claim_sql)
            .bind(request.owner)
            .bind(request.lease_until)
            .bind(&in_flight)
            .bind(request.now)
            .bind(i64::from(request.candidates_per_endpoint()))
            .bind(i64::from(request.per_endpoint_limit))
            .bind(i64::from(request.limit))
            .bind(&in_flight_per_organization)
            .bind(i64::from(request.per_organization_limit))
            .bind(&endpoint_limits)
            .fetch_all(&mut *tx.inner)
            .await?;
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let details = sqlx::query(&format!(
            "SELECT d.id, d.endpoint_id, e.org_id, e.url, m.webhook_id, m.event_type, m.body, \
               (SELECT json_group_array(stored) FROM ( \
                  SELECT {STORED_SECRET_SQL} AS stored FROM webhook_endpoint_secrets s \
                  WHERE s.endpoint_id = d.endpoint_id AND (s.expires_at IS NULL OR s.expires_at > ?) \
                  ORDER BY s.expires_at IS NOT NULL, s.id DESC LIMIT ?)) AS secrets \
             FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             JOIN webhook_messages m ON m.id = d.message_id \
             WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY d.next_attempt_at, d.id"
        ))
        .bind(request.now)
        .bind(crate::MAX_SIGNING_SECRETS)
        .bind(json_ids(claimed.iter().map(|c| c.0)))
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
                let stored: Vec<String> =
                    serde_json::from_str(&row.try_get::<String, _>("secrets")?)
                        .map_err(|_| StoreError::Corrupt("endpoint secrets"))?;
                Ok(ClaimedDelivery {
                    id: DeliveryId(id),
                    endpoint_id,
                    org_id: OrgId(row.try_get("org_id")?),
                    url: row.try_get("url")?,
                    webhook_id: row.try_get("webhook_id")?,
                    event_type: row.try_get("event_type")?,
                    body: row.try_get("body")?,
                    signing_secrets: self.keys.open_signing(endpoint_id, stored),
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
        // Two statements for the whole batch: SQLite statements are cheap, but each one is a
        // round trip to the connection's thread.
        let mut batch = String::with_capacity(outcomes.len() * 160);
        batch.push('[');
        for (i, outcome) in outcomes.iter().enumerate() {
            let attempt = &outcome.attempt;
            let (status, next_attempt_at) = match outcome.next {
                AfterAttempt::Delivered => (DeliveryStatus::Delivered, None),
                AfterAttempt::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
                AfterAttempt::Failed => (DeliveryStatus::Failed, None),
            };
            let row = serde_json::json!({
                "d": outcome.delivery_id.0,
                "o": outcome.lease,
                "n": attempt.attempt_number,
                "at": attempt.attempted_at,
                "s": attempt.status_code,
                "ms": attempt.duration_ms,
                "e": attempt.error,
                "b": attempt.response_body.as_deref().map(hex),
                "st": status.as_str(),
                "next": next_attempt_at,
            });
            if i > 0 {
                batch.push(',');
            }
            batch.push_str(&row.to_string());
        }
        batch.push(']');

        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts \
             (delivery_id, endpoint_id, attempt_number, attempted_at, status_code, duration_ms, \
              error, response_body) \
             SELECT j.value->>'d', \
                    (SELECT d.endpoint_id FROM webhook_deliveries d WHERE d.id = j.value->>'d'), \
                    j.value->>'n', j.value->>'at', j.value->>'s', j.value->>'ms', \
                    j.value->>'e', unhex(j.value->>'b') \
             FROM json_each(?) j",
        )
        .bind(&batch)
        .execute(&mut *tx.inner)
        .await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = u.st, attempt_count = MAX(attempt_count, u.n), \
             next_attempt_at = u.next, manual = 0, lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = ? \
             FROM (SELECT j.value->>'d' AS d, j.value->>'o' AS o, j.value->>'n' AS n, \
                          j.value->>'st' AS st, j.value->>'next' AS next FROM json_each(?) j) AS u \
             WHERE webhook_deliveries.id = u.d AND webhook_deliveries.lease_owner = u.o",
        )
        .bind(now)
        .bind(&batch)
        .execute(&mut *tx.inner)
        .await?;
        // Endpoint health, one statement for the batch: an endpoint whose latest attempt here
        // succeeded is healthy again, unless a failure followed (then its run of failures
        // starts there); one with failures only keeps the start of its run, or starts one.
        // Rows whose value stays are not written.
        sqlx::query(
            "WITH a AS ( \
               SELECT (SELECT d.endpoint_id FROM webhook_deliveries d WHERE d.id = j.value->>'d') AS ep, \
                      j.value->>'at' AS at, \
                      COALESCE(j.value->>'s' BETWEEN 200 AND 299, 0) AS ok \
               FROM json_each(?) j), \
             k AS (SELECT ep, MAX(CASE WHEN ok THEN at END) AS last_ok FROM a GROUP BY ep), \
             h AS (SELECT k.ep, k.last_ok, \
                     MIN(CASE WHEN NOT a.ok AND (k.last_ok IS NULL OR a.at > k.last_ok) \
                         THEN a.at END) AS first_failed \
                   FROM k JOIN a ON a.ep = k.ep GROUP BY k.ep, k.last_ok) \
             UPDATE webhook_endpoints SET failing_since = CASE WHEN h.last_ok IS NULL \
                 THEN COALESCE(webhook_endpoints.failing_since, h.first_failed) \
                 ELSE h.first_failed END \
             FROM h WHERE webhook_endpoints.id = h.ep \
               AND webhook_endpoints.failing_since IS NOT CASE WHEN h.last_ok IS NULL \
                 THEN COALESCE(webhook_endpoints.failing_since, h.first_failed) \
                 ELSE h.first_failed END",
        )
        .bind(&batch)
        .execute(&mut *tx.inner)
        .await?;
        for outcome in outcomes {
            if let Some((endpoint, reason)) = &outcome.disable_endpoint {
                sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? \
                     WHERE id = ?",
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
                    SUM(CASE WHEN status_code BETWEEN 200 AND 299 THEN 1 ELSE 0 END) AS ok, \
                    MAX(CASE WHEN status_code BETWEEN 200 AND 299 THEN attempted_at END) AS last_ok, \
                    MAX(CASE WHEN status_code BETWEEN 200 AND 299 THEN NULL ELSE attempted_at END) AS last_failed \
             FROM webhook_attempts \
             WHERE endpoint_id = ? AND attempted_at >= ? \
               AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = ? AND org_id = ?) \
             GROUP BY duration_ms ORDER BY duration_ms",
        )
        .bind(endpoint.0)
        .bind(since)
        .bind(endpoint.0)
        .bind(org.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(AttemptStats::from_groups(groups))
    }

    pub(crate) async fn release_leases(&self, claims: &[(DeliveryId, &str)]) -> Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let pairs = serde_json::Value::Array(
            claims
                .iter()
                .map(|(id, lease)| serde_json::json!({ "d": id.0, "o": lease }))
                .collect(),
        );
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = NULL, lease_expires_at = NULL \
             FROM (SELECT j.value->>'d' AS d, j.value->>'o' AS o FROM json_each(?) j) AS r \
             WHERE webhook_deliveries.id = r.d AND webhook_deliveries.lease_owner = r.o",
        )
        .bind(pairs.to_string())
        .execute(&mut *tx.inner)
        .await?;
        tx.commit().await
    }

    pub(crate) async fn next_due_after(&self, now: Millis) -> Result<Option<Millis>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at > ?",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(next)
    }

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
             WHERE d.org_id = ? AND d.id < ? \
               AND (? IS NULL OR m.sequence_id = ?) \
               AND (? IS NULL OR d.endpoint_id = ?) \
               AND (? IS NULL OR d.status = ?) \
             ORDER BY d.id DESC LIMIT ?"
        ))
        .bind(org.0)
        .bind(before.map_or(i64::MAX, |b| b.0))
        .bind(filter.sequence_id)
        .bind(filter.sequence_id)
        .bind(filter.endpoint_id.map(|e| e.0))
        .bind(filter.endpoint_id.map(|e| e.0))
        .bind(filter.status.map(DeliveryStatus::as_str))
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
             JOIN webhook_messages m ON m.id = d.message_id WHERE d.id = ? AND d.org_id = ?"
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
        let rows = sqlx::query(
            "SELECT delivery_id, attempt_number, attempted_at, status_code, duration_ms, error, \
             response_body FROM webhook_attempts \
             WHERE delivery_id IN (SELECT value FROM json_each(?)) ORDER BY id",
        )
        .bind(json_ids(deliveries.iter().map(|d| d.id.0)))
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
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET \
                manual = CASE WHEN status = 'pending' THEN manual ELSE 1 END, \
                status = 'pending', next_attempt_at = ?, updated_at = ? \
             WHERE id = ? AND org_id = ? AND endpoint_id IN \
               (SELECT e.id FROM webhook_endpoints e WHERE e.deleted_at IS NULL AND e.enabled = 1)",
        )
        .bind(now)
        .bind(now)
        .bind(id.0)
        .bind(org.0)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        tx.commit().await?;
        if updated == 0 {
            return Ok(None);
        }
        self.get_delivery(org, id).await
    }

    pub(crate) async fn list_reports(
        &self,
        org: OrgId,
        event_type: &str,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<StoredReport>> {
        let rows = sqlx::query(
            "SELECT id, webhook_id, body FROM webhook_messages \
             WHERE org_id = ? AND is_test = 0 AND event_type = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(org.0)
        .bind(event_type)
        .bind(after.map_or(0, |a| a.0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Store;

    const NODE: &str = "node_same";

    /// A real SQLite file with one organisation, one endpoint and one pending delivery due at 0.
    async fn one_pending_delivery() -> (tempfile::TempDir, Store, OrgId, DeliveryId) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
        let store = Store::connect(&url).await.unwrap();
        let org = store.create_org("lease test", 0).await.unwrap().id;
        store
            .create_endpoint(
                org,
                "https://receiver.example/hook",
                "",
                crate::DEFAULT_EVENT_TYPES,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                0,
            )
            .await
            .unwrap();
        let mut tx = store.begin().await.unwrap();
        let message = NewMessage {
            org_id: org,
            webhook_id: "msg_lease",
            event_type: "sequence.ended",
            sequence_id: None,
            is_test: false,
            body: b"{}",
            created_at: 0,
        };
        let (_, created) = store
            .insert_message(&mut tx, &message, Recipients::AllEnabled, 0)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(created, 1);
        let deliveries = store
            .list_deliveries(org, &DeliveryFilter::default(), None, 10)
            .await
            .unwrap();
        (dir, store, org, deliveries[0].id)
    }

    async fn claim(store: &Store, now: Millis, lease_until: Millis) -> Vec<ClaimedDelivery> {
        store
            .claim_due(&ClaimRequest {
                owner: NODE,
                now,
                lease_until,
                limit: 10,
                first_attempts: true,
                per_endpoint_limit: 10,
                in_flight: &[],
                endpoint_limits: &[],
                per_organization_limit: 10,
                in_flight_per_organization: &[],
            })
            .await
            .unwrap()
    }

    fn delivered(claim: &ClaimedDelivery, attempted_at: Millis) -> AttemptOutcome {
        AttemptOutcome {
            delivery_id: claim.id,
            lease: claim.lease.clone(),
            attempt: Attempt {
                attempt_number: claim.attempt_count + 1,
                attempted_at,
                status_code: Some(200),
                duration_ms: 5,
                error: None,
                response_body: None,
            },
            next: AfterAttempt::Delivered,
            disable_endpoint: None,
        }
    }

    async fn lease_of(store: &Store, id: DeliveryId) -> (Option<String>, Option<Millis>) {
        sqlx::query_as("SELECT lease_owner, lease_expires_at FROM webhook_deliveries WHERE id = ?")
            .bind(id.0)
            .fetch_one(&store.sqlite().pool)
            .await
            .unwrap()
    }

    /// Issue 18 defect 7: the same node claims a delivery, the lease expires, the node claims
    /// it again. The first claim's outcome arriving late is recorded as an attempt (it
    /// happened) but must not move the delivery nor clear the second claim's lease; the second
    /// claim's outcome then lands.
    #[tokio::test]
    async fn a_stale_claims_outcome_does_not_land_on_the_claim_that_replaced_it() {
        let (_dir, store, org, id) = one_pending_delivery().await;

        let first = claim(&store, 1_000, 2_000).await;
        assert_eq!(first.len(), 1);
        assert!(claim(&store, 1_500, 2_500).await.is_empty(), "still leased");
        // The first claim's lease runs out; the same node claims the delivery again.
        let second = claim(&store, 3_000, 4_000).await;
        assert_eq!(second.len(), 1);

        // The first (stale) claim's outcome is refused.
        store
            .record_outcomes(&[delivered(&first[0], 1_100)], 3_100)
            .await
            .unwrap();
        let after_stale = store.get_delivery(org, id).await.unwrap().unwrap();
        assert_eq!(after_stale.status, DeliveryStatus::Pending);
        assert_eq!(after_stale.attempt_count, 0);
        assert_eq!(
            after_stale.attempts.len(),
            1,
            "the stale attempt is history"
        );
        assert_eq!(
            lease_of(&store, id).await,
            (Some(second[0].lease.clone()), Some(4_000)),
            "the second claim keeps its lease"
        );

        // Releasing under the stale token leaves the second claim's lease alone too.
        store
            .release_leases(&[(id, first[0].lease.as_str())])
            .await
            .unwrap();
        assert_eq!(lease_of(&store, id).await.0, Some(second[0].lease.clone()));

        // The second claim's outcome lands.
        store
            .record_outcomes(&[delivered(&second[0], 3_200)], 3_300)
            .await
            .unwrap();
        let after = store.get_delivery(org, id).await.unwrap().unwrap();
        assert_eq!(after.status, DeliveryStatus::Delivered);
        assert_eq!(after.attempt_count, 1);
        assert_eq!(after.attempts.len(), 2);
        assert_eq!(lease_of(&store, id).await, (None, None));
        assert_ne!(
            first[0].lease, second[0].lease,
            "each claim has its own token"
        );
        assert!(first[0].lease.starts_with("node_same:"));
    }

    /// The claim reads each endpoint's due rows from its lane's index and looks deliveries up
    /// by id: it never scans the backlog (a scan made `bench delivery` crawl).
    #[tokio::test]
    async fn the_claim_reads_each_endpoints_lane_index_and_never_scans_the_backlog() {
        let (_dir, store, _org, _id) = one_pending_delivery().await;
        for (lane, index) in [
            (
                "d.attempt_count = 0",
                "webhook_deliveries_endpoint_due_first",
            ),
            (
                "d.attempt_count > 0",
                "webhook_deliveries_endpoint_due_retry",
            ),
        ] {
            let sql = format!("EXPLAIN QUERY PLAN {}", claim_statement(lane));
            let mut explain = sqlx::query(&sql).bind("node").bind(0_i64).bind("{}");
            for _ in 0..4 {
                explain = explain.bind(10_i64);
            }
            let plan: Vec<String> = explain
                .fetch_all(&store.sqlite().pool)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            assert!(plan.iter().any(|step| step.contains(index)), "{plan:?}");
            assert!(
                !plan
                    .iter()
                    .any(|step| step.starts_with("SCAN c") || step.starts_with("SCAN d")),
                "the claim scans deliveries: {plan:?}"
            );
        }
    }

    #[tokio::test]
    async fn releasing_a_claims_own_lease_makes_the_delivery_due_again() {
        let (_dir, store, _org, id) = one_pending_delivery().await;
        let first = claim(&store, 1_000, 2_000).await;
        store
            .release_leases(&[(id, first[0].lease.as_str())])
            .await
            .unwrap();
        assert_eq!(lease_of(&store, id).await, (None, None));
        assert_eq!(claim(&store, 1_100, 2_100).await.len(), 1);
    }
}
