//! Webhook endpoints and their signing secrets (PostgreSQL).

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{IdOrder, PgStore, PgTx, inserting};
use crate::model::*;
use crate::secret_keys::{STORED_SECRET_SQL, StoredSecret};
use crate::wakeup::Wakeup;
use crate::{DeliveryStatus, Endpoint, EndpointId, EndpointPatch, Millis, OrgId, Result};

const ENDPOINT_COLUMNS: &str = "id, org_id, url, description, enabled, disabled_reason, failing_since, event_types, created_at, \
     updated_at";

fn endpoint_from_row(row: &PgRow) -> Result<Endpoint> {
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

impl PgStore {
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
        inserting(&mut tx, IdOrder::Endpoints).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO webhook_endpoints \
             (org_id, url, description, enabled, event_types, created_at, updated_at) \
             VALUES ($1, $2, $3, TRUE, $5, $4, $4) RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(org.0)
        .bind(url)
        .bind(description)
        .bind(now)
        .bind(event_types_json(event_types))
        .fetch_one(&mut *tx.inner)
        .await?;
        let endpoint = endpoint_from_row(&row)?;
        let sealed = self.keys.seal(endpoint.id, secret)?;
        sqlx::query(
            "INSERT INTO webhook_endpoint_secrets (endpoint_id, sealed_secret, key_id, created_at) \
             VALUES ($1, $2, $3, $4)",
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
             WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL"
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
        let mut tx = self.ordered_read(IdOrder::Endpoints).await?;
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE org_id = $1 AND deleted_at IS NULL AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(org.0)
        .bind(after.map_or(0, |a| a.0))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx.inner)
        .await?;
        tx.commit().await?;
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
            "SELECT enabled FROM webhook_endpoints \
             WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL FOR NO KEY UPDATE",
        )
        .bind(id.0)
        .bind(org.0)
        .fetch_optional(&mut *tx.inner)
        .await?;
        let re_enabled = patch.enabled == Some(true) && was_enabled == Some(false);
        let row = sqlx::query(&format!(
            "UPDATE webhook_endpoints SET \
                url = COALESCE($1, url), \
                description = COALESCE($2, description), \
                enabled = COALESCE($3, enabled), \
                disabled_reason = CASE WHEN $4 THEN NULL ELSE disabled_reason END, \
                failing_since = CASE WHEN $9 THEN NULL ELSE failing_since END, \
                event_types = COALESCE($8, event_types), \
                updated_at = $5 \
             WHERE id = $6 AND org_id = $7 AND deleted_at IS NULL RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(patch.url.as_deref())
        .bind(patch.description.as_deref())
        .bind(patch.enabled)
        .bind(patch.enabled == Some(true))
        .bind(now)
        .bind(id.0)
        .bind(org.0)
        .bind(patch.event_types.as_deref().map(event_types_json))
        .bind(re_enabled)
        .fetch_optional(&mut *tx.inner)
        .await?;
        if re_enabled {
            // The backlog kept while it was disabled is due now, all of it at the same instant,
            // so the claim takes it in message order.
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $1, updated_at = $1 \
                 WHERE endpoint_id = $2 AND status = 'pending'",
            )
            .bind(now)
            .bind(id.0)
            .execute(&mut *tx.inner)
            .await?;
        }
        tx.commit().await?;
        if row.is_some() && patch.enabled == Some(true) {
            // Its pending deliveries are due again.
            self.notify_nodes(Wakeup::Deliveries);
        }
        row.as_ref().map(endpoint_from_row).transpose()
    }

    pub(crate) async fn disable_failing_endpoints(
        &self,
        tx: &mut PgTx,
        failing_before: Millis,
        reason: &str,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<Endpoint>> {
        // Row locks make it once across nodes: a node whose look found an endpoint another
        // node is disabling skips it, and the outer condition re-checked on the row's latest
        // version leaves out one disabled meanwhile.
        let rows = sqlx::query(&format!(
            "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $1, updated_at = $2 \
             WHERE id IN (SELECT id FROM webhook_endpoints \
                          WHERE enabled AND deleted_at IS NULL AND failing_since <= $3 \
                          ORDER BY id LIMIT $4 FOR NO KEY UPDATE SKIP LOCKED) \
               AND enabled RETURNING {ENDPOINT_COLUMNS}"
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

    pub(crate) async fn delete_endpoint(
        &self,
        org: OrgId,
        id: EndpointId,
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query(
            "UPDATE webhook_endpoints SET deleted_at = $1, enabled = FALSE, updated_at = $1 \
             WHERE id = $2 AND org_id = $3 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(id.0)
        .bind(org.0)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected()
            == 1;
        if deleted {
            // Every pending delivery ends, leased or not: an attempt in flight records its
            // attempt, and its lease token no longer matches (the lease is cleared here).
            sqlx::query(
                "UPDATE webhook_deliveries SET status = $1, next_attempt_at = NULL, \
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
                 WHERE endpoint_id = $3 AND status = 'pending'",
            )
            .bind(DeliveryStatus::Failed.as_str())
            .bind(now)
            .bind(id.0)
            .execute(&mut *tx.inner)
            .await?;
            // Nothing is signed for a deleted endpoint again: its secrets are erased.
            sqlx::query("DELETE FROM webhook_endpoint_secrets WHERE endpoint_id = $1")
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
        // The endpoint row is locked first: two rotations of one endpoint run one after the
        // other, so at most two secrets ever sign.
        let owned: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM webhook_endpoints WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL \
             FOR UPDATE",
        )
        .bind(id.0)
        .bind(org.0)
        .fetch_optional(&mut *tx.inner)
        .await?;
        if owned.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE webhook_endpoint_secrets SET expires_at = $1 \
             WHERE endpoint_id = $2 AND expires_at > $1",
        )
        .bind(now)
        .bind(id.0)
        .execute(&mut *tx.inner)
        .await?;
        sqlx::query(
            "UPDATE webhook_endpoint_secrets SET expires_at = $1 \
             WHERE endpoint_id = $2 AND expires_at IS NULL",
        )
        .bind(old_expires_at)
        .bind(id.0)
        .execute(&mut *tx.inner)
        .await?;
        let sealed = self.keys.seal(id, new_secret)?;
        sqlx::query(
            "INSERT INTO webhook_endpoint_secrets (endpoint_id, sealed_secret, key_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id.0)
        .bind(&sealed.text)
        .bind(&sealed.key_id)
        .bind(now)
        .execute(&mut *tx.inner)
        .await?;
        sqlx::query("UPDATE webhook_endpoints SET updated_at = $1 WHERE id = $2")
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
             WHERE s.endpoint_id = $1 AND (s.expires_at IS NULL OR s.expires_at > $2) \
             ORDER BY s.expires_at IS NOT NULL, s.id DESC LIMIT $3"
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
             WHERE e.id = $1 AND e.org_id = $2 AND e.deleted_at IS NULL AND s.expires_at IS NULL \
             ORDER BY s.id DESC LIMIT 1"
        ))
        .bind(id.0)
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        self.keys.open_current(id, stored)
    }

    /// Re-seals under the current key every secret sealed under another. Runs at connect;
    /// two nodes starting together each write a row only if it still holds what they read.
    pub(crate) async fn reseal_endpoint_secrets(&self) -> Result<()> {
        let current = self.keys.current().id();
        let stored: Vec<StoredSecret> = sqlx::query_as::<_, (i64, i64, String, Option<String>)>(
            "SELECT id, endpoint_id, sealed_secret, key_id FROM webhook_endpoint_secrets \
             WHERE key_id <> $1",
        )
        .bind(&current)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(StoredSecret::from)
        .collect();
        self.reseal_rows(
            stored,
            "UPDATE webhook_endpoint_secrets SET sealed_secret = $1, key_id = $2 \
                 WHERE id = $3 AND key_id IS NOT DISTINCT FROM $4",
            "webhook endpoint secrets",
        )
        .await
    }

    pub(crate) async fn disable_endpoint(
        &self,
        id: EndpointId,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $1, updated_at = $2 \
             WHERE id = $3",
        )
        .bind(reason)
        .bind(now)
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
