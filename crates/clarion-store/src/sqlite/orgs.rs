//! Organisations and their API keys.

use sqlx::Row;

use super::{SqliteStore, SqliteTx};
use crate::api_key::{KeyHash, NewApiKey};
use crate::model::*;
use crate::secret_keys::{Binding, StoredSecret};
use crate::{ApiKeyId, Millis, OrgId, Result};

fn organization_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Organization> {
    let cap = |column: &str| -> Result<Option<u32>> {
        let value: Option<i64> = row.try_get(column)?;
        Ok(value.map(super::to_u32))
    };
    Ok(Organization {
        id: OrgId(row.try_get("id")?),
        name: row.try_get("name")?,
        max_contacts_per_day: cap("max_contacts_per_day")?,
        max_contacts_per_week: cap("max_contacts_per_week")?,
        sms_help_text: row.try_get("sms_help_text")?,
        calling_rules: row.try_get("calling_rules")?,
        retention_days: cap("retention_days")?,
        eligibility_hook: row.try_get("eligibility_hook")?,
        created_at: row.try_get("created_at")?,
    })
}

const ORGANIZATION_COLUMNS: &str = "id, name, max_contacts_per_day, max_contacts_per_week, sms_help_text, calling_rules, \
     retention_days, eligibility_hook, created_at";

impl SqliteStore {
    pub(crate) async fn create_org(&self, name: &str, now: Millis) -> Result<CreatedOrganization> {
        let key = NewApiKey::generate();
        let mut tx = self.begin().await?;
        let org_id: i64 = sqlx::query_scalar(
            "INSERT INTO organizations (name, created_at) VALUES (?, ?) RETURNING id",
        )
        .bind(name)
        .bind(now)
        .fetch_one(&mut *tx.inner)
        .await?;
        sqlx::query(
            "INSERT INTO api_keys (org_id, key_hash, key_prefix, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(org_id)
        .bind(key.hash().0.as_slice())
        .bind(key.shown_prefix())
        .bind(now)
        .execute(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        Ok(CreatedOrganization {
            id: OrgId(org_id),
            api_key: key,
        })
    }

    pub(crate) async fn authenticate(&self, key: &str) -> Result<Option<OrgId>> {
        let hash = KeyHash::of(key);
        let org: Option<i64> = sqlx::query_scalar(
            "SELECT org_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(hash.0.as_slice())
        .fetch_optional(&self.pool)
        .await?;
        Ok(org.map(OrgId))
    }

    pub(crate) async fn authenticate_key(&self, key: &str) -> Result<Option<AuthenticatedKey>> {
        let hash = KeyHash::of(key);
        let found: Option<(OrgId, ApiKeyId)> = sqlx::query_as(
            "SELECT org_id, id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(hash.0.as_slice())
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.map(|(org_id, key_id)| AuthenticatedKey { org_id, key_id }))
    }

    pub(crate) async fn get_organization(&self, org: OrgId) -> Result<Option<Organization>> {
        let row = sqlx::query(&format!(
            "SELECT {ORGANIZATION_COLUMNS} FROM organizations WHERE id = ?"
        ))
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(organization_from_row).transpose()
    }

    pub(crate) async fn update_organization(
        &self,
        org: OrgId,
        patch: &OrganizationPatch,
    ) -> Result<Option<Organization>> {
        let sealed = patch
            .eligibility_hook_secret
            .as_deref()
            .map(|secret| self.keys.seal(Binding::EligibilityHook(org), secret))
            .transpose()?;
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE organizations SET \
             max_contacts_per_day = CASE WHEN ?1 THEN ?2 ELSE max_contacts_per_day END, \
             max_contacts_per_week = CASE WHEN ?3 THEN ?4 ELSE max_contacts_per_week END, \
             sms_help_text = CASE WHEN ?5 THEN ?6 ELSE sms_help_text END, \
             calling_rules = CASE WHEN ?7 THEN ?8 ELSE calling_rules END, \
             retention_days = CASE WHEN ?10 THEN ?11 ELSE retention_days END, \
             eligibility_hook = CASE WHEN ?12 THEN ?13 ELSE eligibility_hook END, \
             eligibility_hook_secret = CASE WHEN ?12 AND ?13 IS NULL THEN NULL \
                 WHEN ?14 AND (?17 OR eligibility_hook_secret IS NULL) THEN ?15 \
                 ELSE eligibility_hook_secret END, \
             eligibility_hook_key_id = CASE WHEN ?12 AND ?13 IS NULL THEN NULL \
                 WHEN ?14 AND (?17 OR eligibility_hook_secret IS NULL) THEN ?16 \
                 ELSE eligibility_hook_key_id END \
             WHERE id = ?9 RETURNING {ORGANIZATION_COLUMNS}"
        ))
        .bind(patch.max_contacts_per_day.is_some())
        .bind(patch.max_contacts_per_day.flatten().map(i64::from))
        .bind(patch.max_contacts_per_week.is_some())
        .bind(patch.max_contacts_per_week.flatten().map(i64::from))
        .bind(patch.sms_help_text.is_some())
        .bind(patch.sms_help_text.clone().flatten())
        .bind(patch.calling_rules.is_some())
        .bind(patch.calling_rules.clone().flatten())
        .bind(org.0)
        .bind(patch.retention_days.is_some())
        .bind(patch.retention_days.flatten().map(i64::from))
        .bind(patch.eligibility_hook.is_some())
        .bind(patch.eligibility_hook.clone().flatten())
        .bind(sealed.is_some())
        .bind(sealed.as_ref().map(|s| s.text.clone()))
        .bind(sealed.as_ref().map(|s| s.key_id.clone()))
        .bind(patch.eligibility_hook_secret_rotates)
        .fetch_optional(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        row.as_ref().map(organization_from_row).transpose()
    }

    pub(crate) async fn eligibility_hook(&self, org: OrgId) -> Result<Option<EligibilityHookRow>> {
        let row: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT eligibility_hook, eligibility_hook_secret, eligibility_hook_key_id \
             FROM organizations WHERE id = ?1",
        )
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        let Some((Some(settings), sealed, key_id)) = row else {
            return Ok(None);
        };
        let secret = sealed.and_then(|sealed| {
            self.keys
                .open(Binding::EligibilityHook(org), key_id.as_deref(), &sealed)
                .map_err(|error| {
                    tracing::warn!(org_id = org.0, %error, "an eligibility hook secret does not open");
                })
                .ok()
        });
        Ok(Some(EligibilityHookRow { settings, secret }))
    }

    /// Re-seals under the current key every eligibility hook secret sealed under another.
    /// Runs at connect, after the endpoints' pass; a row is written only if it still holds
    /// what was read.
    pub(crate) async fn reseal_hook_secrets(&self) -> Result<()> {
        let current = self.keys.current().id();
        let stored: Vec<StoredSecret> = sqlx::query_as::<_, (i64, String, Option<String>)>(
            "SELECT id, eligibility_hook_secret, eligibility_hook_key_id FROM organizations \
             WHERE eligibility_hook_secret IS NOT NULL \
             AND (eligibility_hook_key_id IS NULL OR eligibility_hook_key_id <> ?1)",
        )
        .bind(&current)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(StoredSecret::of_hook)
        .collect();
        self.reseal_rows(
            stored,
            "UPDATE organizations SET eligibility_hook_secret = ?1, eligibility_hook_key_id = ?2 \
                 WHERE id = ?3 AND eligibility_hook_key_id IS ?4",
            "eligibility hook secrets",
        )
        .await
    }

    pub(crate) async fn allow_vapi_assistant(
        &self,
        org: OrgId,
        vapi_assistant_id: &str,
        now: Millis,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO organization_vapi_assistants (org_id, vapi_assistant_id, added_at) \
             VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(org.0)
        .bind(vapi_assistant_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn disallow_vapi_assistant(
        &self,
        org: OrgId,
        vapi_assistant_id: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM organization_vapi_assistants WHERE org_id = ? AND vapi_assistant_id = ?",
        )
        .bind(org.0)
        .bind(vapi_assistant_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn allowed_vapi_assistants(&self, org: OrgId) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT vapi_assistant_id FROM organization_vapi_assistants WHERE org_id = ? \
             ORDER BY vapi_assistant_id",
        )
        .bind(org.0)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn vapi_assistant_allowed(
        &self,
        org: OrgId,
        vapi_assistant_id: &str,
    ) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM organization_vapi_assistants WHERE org_id = ? AND vapi_assistant_id = ?",
        )
        .bind(org.0)
        .bind(vapi_assistant_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    pub(crate) async fn organization_contact_caps(
        &self,
        tx: &mut SqliteTx,
        orgs: &[OrgId],
    ) -> Result<std::collections::HashMap<OrgId, (Option<u32>, Option<u32>)>> {
        let ids = serde_json::to_string(&orgs.iter().map(|o| o.0).collect::<Vec<_>>())
            .map_err(|_| crate::StoreError::Corrupt("organisation ids"))?;
        let rows: Vec<(i64, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT id, max_contacts_per_day, max_contacts_per_week FROM organizations \
             WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids)
        .fetch_all(&mut *tx.inner)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, day, week)| (OrgId(id), (day.map(super::to_u32), week.map(super::to_u32))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Store;

    #[tokio::test]
    async fn vapi_allow_lists_are_per_organisation() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("orgs.db").display());
        let store = Store::connect(&url).await.unwrap();
        let a = store.create_org("A", 1).await.unwrap().id;
        let b = store.create_org("B", 1).await.unwrap().id;
        // Empty by default: nothing allowed.
        assert!(!store.vapi_assistant_allowed(a, "asst_1").await.unwrap());
        assert!(store.allow_vapi_assistant(a, "asst_1", 2).await.unwrap());
        assert!(!store.allow_vapi_assistant(a, "asst_1", 3).await.unwrap());
        store.allow_vapi_assistant(a, "asst_0", 3).await.unwrap();
        assert!(store.vapi_assistant_allowed(a, "asst_1").await.unwrap());
        // Another organisation's list is its own.
        assert!(!store.vapi_assistant_allowed(b, "asst_1").await.unwrap());
        assert_eq!(
            store.allowed_vapi_assistants(a).await.unwrap(),
            ["asst_0", "asst_1"]
        );
        assert!(store.allowed_vapi_assistants(b).await.unwrap().is_empty());
        assert!(store.disallow_vapi_assistant(a, "asst_1").await.unwrap());
        assert!(!store.disallow_vapi_assistant(a, "asst_1").await.unwrap());
        assert!(!store.vapi_assistant_allowed(a, "asst_1").await.unwrap());
        // An unknown organisation cannot get a list.
        assert!(
            store
                .allow_vapi_assistant(OrgId(999), "asst_1", 4)
                .await
                .is_err()
        );
    }
}
