//! Bulk recovery of an endpoint's failed deliveries: the job's row and its batches.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use crate::{EndpointId, Millis, OrgId, Recovery, RecoveryId, Result};

const RECOVERY_COLUMNS: &str =
    "id, org_id, endpoint_id, since, until, requeued, created_at, finished_at";

fn recovery_from_row(row: &SqliteRow) -> Result<Recovery> {
    Ok(Recovery {
        id: RecoveryId(row.try_get("id")?),
        org_id: OrgId(row.try_get("org_id")?),
        endpoint_id: EndpointId(row.try_get("endpoint_id")?),
        since: row.try_get("since")?,
        until: row.try_get("until")?,
        requeued: u64::try_from(row.try_get::<i64, _>("requeued")?).unwrap_or(0),
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

impl SqliteStore {
    pub(crate) async fn create_recovery(
        &self,
        org: OrgId,
        endpoint: EndpointId,
        since: Millis,
        until: Millis,
        now: Millis,
    ) -> Result<Option<Recovery>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO webhook_recoveries (org_id, endpoint_id, since, until, created_at) \
             SELECT org_id, id, ?, ?, ? FROM webhook_endpoints \
             WHERE id = ? AND org_id = ? AND deleted_at IS NULL \
             RETURNING {RECOVERY_COLUMNS}"
        ))
        .bind(since)
        .bind(until)
        .bind(now)
        .bind(endpoint.0)
        .bind(org.0)
        .fetch_optional(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        row.as_ref().map(recovery_from_row).transpose()
    }

    pub(crate) async fn get_recovery(
        &self,
        org: OrgId,
        endpoint: EndpointId,
        id: RecoveryId,
    ) -> Result<Option<Recovery>> {
        let row = sqlx::query(&format!(
            "SELECT {RECOVERY_COLUMNS} FROM webhook_recoveries \
             WHERE id = ? AND org_id = ? AND endpoint_id = ?"
        ))
        .bind(id.0)
        .bind(org.0)
        .bind(endpoint.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(recovery_from_row).transpose()
    }

    pub(crate) async fn unfinished_recoveries(&self, limit: u32) -> Result<Vec<RecoveryId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM webhook_recoveries WHERE finished_at IS NULL ORDER BY id LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(RecoveryId).collect())
    }

    pub(crate) async fn advance_recovery(
        &self,
        id: RecoveryId,
        batch: u32,
        now: Millis,
    ) -> Result<Option<Recovery>> {
        let mut tx = self.begin().await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT {RECOVERY_COLUMNS}, cursor FROM webhook_recoveries WHERE id = ?"
        ))
        .bind(id.0)
        .fetch_optional(&mut *tx.inner)
        .await?
        else {
            return Ok(None);
        };
        let recovery = recovery_from_row(&row)?;
        if recovery.finished_at.is_some() {
            tx.commit().await?;
            return Ok(Some(recovery));
        }
        let cursor: i64 = row.try_get("cursor")?;
        // The batch: the endpoint's failed deliveries after the cursor, by id (the partial
        // index `webhook_deliveries_endpoint_failed`), those in the window among them.
        let found: Vec<(i64, Millis)> = sqlx::query_as(
            "SELECT id, updated_at FROM webhook_deliveries \
             WHERE endpoint_id = ? AND status = 'failed' AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(recovery.endpoint_id.0)
        .bind(cursor)
        .bind(i64::from(batch))
        .fetch_all(&mut *tx.inner)
        .await?;
        let in_window: Vec<i64> = found
            .iter()
            .filter(|(_, at)| *at >= recovery.since && *at < recovery.until)
            .map(|(id, _)| *id)
            .collect();
        let requeued = if in_window.is_empty() {
            0
        } else {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'pending', manual = 1, \
                   next_attempt_at = ?, updated_at = ? \
                 WHERE id IN (SELECT value FROM json_each(?)) AND status = 'failed'",
            )
            .bind(now)
            .bind(now)
            .bind(serde_json::Value::from(in_window).to_string())
            .execute(&mut *tx.inner)
            .await?
            .rows_affected()
        };
        let finished = found.len() < usize::try_from(batch).unwrap_or(usize::MAX);
        let next_cursor = found.last().map_or(cursor, |(id, _)| *id);
        let row = sqlx::query(&format!(
            "UPDATE webhook_recoveries SET cursor = MAX(cursor, ?), requeued = requeued + ?, \
               finished_at = CASE WHEN ? THEN COALESCE(finished_at, ?) ELSE finished_at END \
             WHERE id = ? RETURNING {RECOVERY_COLUMNS}"
        ))
        .bind(next_cursor)
        .bind(i64::try_from(requeued).unwrap_or(i64::MAX))
        .bind(finished)
        .bind(now)
        .bind(id.0)
        .fetch_one(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        recovery_from_row(&row).map(Some)
    }
}
