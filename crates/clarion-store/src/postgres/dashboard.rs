//! The operator dashboard's sessions, the PHI access log and the overview's aggregates
//! (PostgreSQL).

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{IdOrder, PgStore, inserting};
use crate::model::*;
use crate::stored::{OverviewRows, overview, unanswered_sql};
use crate::{ApiKeyId, OrgId, Result, SequenceId};

const SESSION_COLUMNS: &str = "id, org_id, api_key_id, created_at, last_seen_at, expires_at";

fn session_from_row(row: &PgRow) -> Result<UiSession> {
    Ok(UiSession {
        id: row.try_get("id")?,
        org_id: OrgId(row.try_get("org_id")?),
        api_key_id: ApiKeyId(row.try_get("api_key_id")?),
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

const ACCESS_COLUMNS: &str = "id, org_id, at, actor, action, sequence_id, detail";

fn access_from_row(row: &PgRow) -> Result<AccessEntry> {
    Ok(AccessEntry {
        id: row.try_get("id")?,
        org_id: OrgId(row.try_get("org_id")?),
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        sequence_id: row
            .try_get::<Option<i64>, _>("sequence_id")?
            .map(SequenceId),
        detail: row.try_get("detail")?,
    })
}

impl PgStore {
    pub(crate) async fn create_ui_session(&self, new: &NewUiSession<'_>) -> Result<i64> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
            .bind(new.now)
            .execute(&mut *tx.inner)
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO ui_sessions (org_id, api_key_id, token_hash, created_at, last_seen_at, \
             expires_at) VALUES ($1, $2, $3, $4, $4, $5) RETURNING id",
        )
        .bind(new.org_id.0)
        .bind(new.api_key_id.0)
        .bind(new.token_hash.as_slice())
        .bind(new.now)
        .bind(new.expires_at)
        .fetch_one(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub(crate) async fn touch_ui_session(
        &self,
        touch: &SessionTouch<'_>,
    ) -> Result<Option<UiSession>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE ui_sessions SET last_seen_at = $2, expires_at = $3 \
             WHERE token_hash = $1 AND expires_at > $2 AND created_at > $4 \
             AND EXISTS (SELECT 1 FROM api_keys k WHERE k.id = ui_sessions.api_key_id \
                         AND k.revoked_at IS NULL) \
             RETURNING {SESSION_COLUMNS}"
        ))
        .bind(touch.token_hash.as_slice())
        .bind(touch.now)
        .bind(touch.expires_at)
        .bind(touch.created_after)
        .fetch_optional(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        row.as_ref().map(session_from_row).transpose()
    }

    pub(crate) async fn delete_ui_session(&self, token_hash: &[u8; 32]) -> Result<bool> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query("DELETE FROM ui_sessions WHERE token_hash = $1")
            .bind(token_hash.as_slice())
            .execute(&mut *tx.inner)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    pub(crate) async fn record_access(&self, entry: &NewAccessEntry<'_>) -> Result<i64> {
        let mut tx = self.begin().await?;
        // Ids are drawn in commit order for the audit log's cursor (see `IdOrder`).
        inserting(&mut tx, IdOrder::AccessLog).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO access_log (org_id, at, actor, action, sequence_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(entry.org_id.0)
        .bind(entry.at)
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.sequence_id.map(i64::from))
        .bind(entry.detail)
        .fetch_one(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub(crate) async fn access_log(
        &self,
        org: OrgId,
        after: Option<i64>,
        newest_first: bool,
        limit: u32,
    ) -> Result<Vec<AccessEntry>> {
        let (cursor, order, start) = if newest_first {
            ("<", "DESC", i64::MAX)
        } else {
            (">", "ASC", 0)
        };
        let mut tx = self.ordered_read(IdOrder::AccessLog).await?;
        let rows = sqlx::query(&format!(
            "SELECT {ACCESS_COLUMNS} FROM access_log WHERE org_id = $1 AND id {cursor} $2 \
             ORDER BY id {order} LIMIT $3"
        ))
        .bind(org.0)
        .bind(after.unwrap_or(start))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        rows.iter().map(access_from_row).collect()
    }

    pub(crate) async fn overview(&self, query: &OverviewQuery) -> Result<Overview> {
        let OverviewQuery {
            org_id,
            since,
            until,
            max_slots,
        } = *query;
        // The SQLite twin (sqlite/dashboard.rs) says which index each statement reads.
        let counts: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM sequences WHERE org_id = $1 AND status = 'active'), \
                    (SELECT COUNT(*) FROM sequences WHERE org_id = $1 AND status = 'paused'), \
                    (SELECT COUNT(*) FROM sequences WHERE org_id = $1 AND status = 'ended' \
                     AND ended_at >= $2 AND ended_at < $3)",
        )
        .bind(org_id.0)
        .bind(since)
        .bind(until)
        .fetch_one(&self.pool)
        .await?;
        let outcomes = sqlx::query_as(&format!(
            "SELECT ended_at / {MILLIS_PER_DAY} AS day, channel, outcome, COUNT(*) \
             FROM encounters \
             WHERE org_id = $1 AND status = 'ended' AND ended_at >= $2 AND ended_at < $3 \
               AND outcome IS NOT NULL \
             GROUP BY day, channel, outcome"
        ))
        .bind(org_id.0)
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        // `COLLATE "C"`: the rows kept under the limit are the same as on SQLite.
        let slots = sqlx::query_as(&format!(
            "SELECT zone, slot, n FROM ( \
               SELECT COALESCE(s.contact::jsonb ->> 'time_zone', '') AS zone, \
                      (COALESCE(e.claimed_at, e.created_at) / {HEAT_MAP_SLOT_MILLIS}) \
                        * {HEAT_MAP_SLOT_MILLIS} AS slot, \
                      COUNT(*) AS n \
               FROM encounters e JOIN sequences s ON s.id = e.sequence_id \
               WHERE e.org_id = $1 AND e.status = 'ended' AND e.ended_at >= $2 \
                 AND e.ended_at < $3 AND e.channel = 'call' AND e.outcome IS NOT NULL \
                 AND e.outcome NOT IN ({unanswered}) \
               GROUP BY zone, slot) q \
             ORDER BY zone COLLATE \"C\", slot LIMIT $4",
            unanswered = unanswered_sql(),
        ))
        .bind(org_id.0)
        .bind(since)
        .bind(until)
        .bind(i64::from(max_slots) + 1)
        .fetch_all(&self.pool)
        .await?;
        let deliveries = sqlx::query_as(&format!(
            "SELECT day, COUNT(*), SUM(ok), \
                    MAX(CASE WHEN rn = (50 * n + 99) / 100 THEN d END), \
                    MAX(CASE WHEN rn = (99 * n + 99) / 100 THEN d END) \
             FROM (SELECT a.attempted_at / {MILLIS_PER_DAY} AS day, a.duration_ms AS d, \
                          CASE WHEN a.status_code BETWEEN 200 AND 299 THEN 1 ELSE 0 END AS ok, \
                          ROW_NUMBER() OVER (PARTITION BY a.attempted_at / {MILLIS_PER_DAY} \
                                             ORDER BY a.duration_ms) AS rn, \
                          COUNT(*) OVER (PARTITION BY a.attempted_at / {MILLIS_PER_DAY}) AS n \
                   FROM webhook_endpoints w JOIN webhook_attempts a ON a.endpoint_id = w.id \
                   WHERE w.org_id = $1 AND a.attempted_at >= $2 AND a.attempted_at < $3) q \
             GROUP BY day ORDER BY day"
        ))
        .bind(org_id.0)
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        overview(
            OverviewRows {
                counts,
                outcomes,
                slots,
                deliveries,
            },
            max_slots,
        )
    }
}
