//! Webhook endpoints and their signing secrets.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{SqliteStore, SqliteTx};
use crate::model::*;
use crate::secret_keys::{STORED_SECRET_SQL, StoredSecret};
use crate::{
    DeliveryStatus, Endpoint, EndpointId, EndpointPatch, Millis, OrgId, Result, StoreError,
};

const ENDPOINT_COLUMNS: &str = "id, org_id, url, description, enabled, disabled_reason, failing_since, event_types, created_at, \
     updated_at";

fn endpoint_from_row(row: &SqliteRow) -> Result<Endpoint> {
    Ok(Endpoint {
        id: EndpointId(row.try_get("id")?),
        org_id: OrgId(row.try_get("org_id")?),
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        enabled: row.try_get("enabled")?,
        disabled_reason: row.try_get("disabled_reason")?,
        failing_since: row.try_get("failing_since")?,
        event_types: event_types_from_json(&row.try_get::<String, _>("event_types")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl SqliteStore {
    pub(crate) async fn create_endpoint(
        &self,
        org: OrgId,
        url: &str,
        description: &str,
        event_types: &[&str],
        secret: &str,
        now: Millis,
    ) -> Result<Endpoint> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO webhook_endpoints \
             (org_id, url, description, enabled, event_types, created_at, updated_at) \
             VALUES (?, ?, ?, 1, ?, ?, ?) RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(org.0)
        .bind(url)
        .bind(description)
        .bind(event_types_json(event_types))
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx.inner)
        .await?;
        let endpoint = endpoint_from_row(&row)?;
        let sealed = self.keys.seal(endpoint.id, secret)?;
        sqlx::query(
            "INSERT INTO webhook_endpoint_secrets (endpoint_id, sealed_secret, key_id, created_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(endpoint.id.0)
        .bind(&sealed.text)
        .bind(&sealed.key_id)
        .bind(now)
        .execute(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        Ok(endpoint)
    }

    pub(crate) async fn get_endpoint(
        &self,
        org: OrgId,
        id: EndpointId,
    ) -> Result<Option<Endpoint>> {
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE id = ? AND org_id = ? AND deleted_at IS NULL"
        ))
        .bind(id.0)
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    pub(crate) async fn list_endpoints(
        &self,
        org: OrgId,
        after: Option<EndpointId>,
        limit: u32,
    ) -> Result<Vec<Endpoint>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE org_id = ? AND deleted_at IS NULL AND id > ? ORDER BY id LIMIT ?"
        ))
        .bind(org.0)
        .bind(after.map_or(0, |a| a.0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    pub(crate) async fn update_endpoint(
        &self,
        org: OrgId,
        id: EndpointId,
        patch: &EndpointPatch,
        now: Millis,
    ) -> Result<Option<Endpoint>> {
        let mut tx = self.begin().await?;
        let was_enabled: Option<bool> = sqlx::query_scalar(
            "SELECT enabled FROM webhook_endpoints WHERE id = ? AND org_id = ? AND deleted_at IS NULL",
        )
        .bind(id.0)
        .bind(org.0)
        .fetch_optional(&mut *tx.inner)
        .await?;
        let re_enabled = patch.enabled == Some(true) && was_enabled == Some(false);
        let row = sqlx::query(&format!(
            "UPDATE webhook_endpoints SET \
                url = COALESCE(?, url), \
                description = COALESCE(?, description), \
                enabled = COALESCE(?, enabled), \
                event_types = COALESCE(?, event_types), \
                disabled_reason = CASE WHEN ? = 1 THEN NULL ELSE disabled_reason END, \
                failing_since = CASE WHEN ? = 1 THEN NULL ELSE failing_since END, \
                updated_at = ? \
             WHERE id = ? AND org_id = ? AND deleted_at IS NULL RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(patch.url.as_deref())
        .bind(patch.description.as_deref())
        .bind(patch.enabled)
        .bind(patch.event_types.as_deref().map(event_types_json))
        .bind(patch.enabled == Some(true))
        .bind(re_enabled)
        .bind(now)
        .bind(id.0)
        .bind(org.0)
        .fetch_optional(&mut *tx.inner)
        .await?;
        if re_enabled {
            // The backlog kept while it was disabled is due now, all of it at the same instant,
            // so the claim takes it in message order.
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = ?, updated_at = ? \
                 WHERE endpoint_id = ? AND status = 'pending'",
            )
            .bind(now)
            .bind(now)
            .bind(id.0)
            .execute(&mut *tx.inner)
            .await?;
        }
        tx.commit().await?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    pub(crate) async fn delete_endpoint(
        &self,
        org: OrgId,
        id: EndpointId,
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query(
            "UPDATE webhook_endpoints SET deleted_at = ?, enabled = 0, updated_at = ? \
             WHERE id = ? AND org_id = ? AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(now)
        .bind(id.0)
        .bind(org.0)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected()
            == 1;
        if deleted {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = ?, next_attempt_at = NULL, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = ? \
                 WHERE endpoint_id = ? AND status = 'pending'",
            )
            .bind(DeliveryStatus::Failed.as_str())
            .bind(now)
            .bind(id.0)
            .execute(&mut *tx.inner)
            .await?;
            // Nothing is signed for a deleted endpoint again: its secrets are erased.
            sqlx::query("DELETE FROM webhook_endpoint_secrets WHERE endpoint_id = ?")
                .bind(id.0)
                .execute(&mut *tx.inner)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    pub(crate) async fn rotate_endpoint_secret(
        &self,
        org: OrgId,
        id: EndpointId,
        new_secret: &str,
        old_expires_at: Millis,
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let owned: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM webhook_endpoints WHERE id = ? AND org_id = ? AND deleted_at IS NULL",
        )
        .bind(id.0)
        .bind(org.0)
        .fetch_optional(&mut *tx.inner)
        .await?;
        if owned.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE webhook_endpoint_secrets SET expires_at = ? \
             WHERE endpoint_id = ? AND expires_at > ?",
        )
        .bind(now)
        .bind(id.0)
        .bind(now)
        .execute(&mut *tx.inner)
        .await?;
        sqlx::query(
            "UPDATE webhook_endpoint_secrets SET expires_at = ? \
             WHERE endpoint_id = ? AND expires_at IS NULL",
        )
        .bind(old_expires_at)
        .bind(id.0)
        .execute(&mut *tx.inner)
        .await?;
        let sealed = self.keys.seal(id, new_secret)?;
        sqlx::query(
            "INSERT INTO webhook_endpoint_secrets (endpoint_id, sealed_secret, key_id, created_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(id.0)
        .bind(&sealed.text)
        .bind(&sealed.key_id)
        .bind(now)
        .execute(&mut *tx.inner)
        .await?;
        sqlx::query("UPDATE webhook_endpoints SET updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(id.0)
            .execute(&mut *tx.inner)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(crate) async fn signing_secrets(&self, id: EndpointId, now: Millis) -> Result<Vec<String>> {
        let stored = sqlx::query_scalar(&format!(
            "SELECT {STORED_SECRET_SQL} FROM webhook_endpoint_secrets s \
             WHERE s.endpoint_id = ? AND (s.expires_at IS NULL OR s.expires_at > ?) \
             ORDER BY s.expires_at IS NOT NULL, s.id DESC LIMIT ?"
        ))
        .bind(id.0)
        .bind(now)
        .bind(MAX_SIGNING_SECRETS)
        .fetch_all(&self.pool)
        .await?;
        Ok(self.keys.open_signing(id, stored))
    }

    pub(crate) async fn current_secret(
        &self,
        org: OrgId,
        id: EndpointId,
    ) -> Result<Option<String>> {
        let stored: Option<String> = sqlx::query_scalar(&format!(
            "SELECT {STORED_SECRET_SQL} FROM webhook_endpoint_secrets s \
             JOIN webhook_endpoints e ON e.id = s.endpoint_id \
             WHERE e.id = ? AND e.org_id = ? AND e.deleted_at IS NULL AND s.expires_at IS NULL \
             ORDER BY s.id DESC LIMIT 1"
        ))
        .bind(id.0)
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        self.keys.open_current(id, stored)
    }

    /// Re-seals under the current key every secret sealed under another (or not sealed: rows
    /// from before migration 0017). Runs at connect; a no-op once every row is current.
    pub(crate) async fn reseal_endpoint_secrets(&self) -> Result<()> {
        let current = self.keys.current().id();
        let stored: Vec<StoredSecret> = sqlx::query_as::<_, (i64, i64, String, Option<String>)>(
            "SELECT id, endpoint_id, sealed_secret, key_id FROM webhook_endpoint_secrets \
             WHERE key_id IS NULL OR key_id <> ?",
        )
        .bind(&current)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(StoredSecret::from)
        .collect();
        self.reseal_rows(
            stored,
            "UPDATE webhook_endpoint_secrets SET sealed_secret = ?, key_id = ? \
                 WHERE id = ? AND key_id IS ?",
            "webhook endpoint secrets",
        )
        .await
    }

    pub(crate) async fn disable_failing_endpoints(
        &self,
        tx: &mut SqliteTx,
        failing_before: Millis,
        reason: &str,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<Endpoint>> {
        let rows = sqlx::query(&format!(
            "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? \
             WHERE id IN (SELECT id FROM webhook_endpoints \
                          WHERE enabled = 1 AND deleted_at IS NULL AND failing_since <= ? \
                          ORDER BY id LIMIT ?) \
               AND enabled = 1 RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(reason)
        .bind(now)
        .bind(failing_before)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx.inner)
        .await?;
        let mut disabled = rows
            .iter()
            .map(endpoint_from_row)
            .collect::<Result<Vec<_>>>()?;
        disabled.sort_by_key(|e| e.id.0);
        Ok(disabled)
    }

    pub(crate) async fn disable_endpoint(
        &self,
        id: EndpointId,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? WHERE id = ?",
        )
        .bind(reason)
        .bind(now)
        .bind(id.0)
        .execute(&mut *tx.inner)
        .await
        .map_err(StoreError::from)?;
        tx.commit().await
    }
}
