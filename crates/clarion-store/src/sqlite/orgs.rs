//! Organisations and their API keys.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

use crate::{Millis, OrgId, Result, Store};

/// API keys look like `ck_` followed by 40 random alphanumerics (about 238 bits).
const KEY_PREFIX: &str = "ck_";
const KEY_RANDOM_CHARS: usize = 40;

fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

impl Store {
    /// Creates an organisation with one API key and returns both. The key is returned only
    /// here; the store keeps its SHA-256.
    pub async fn create_org(&self, name: &str, now: Millis) -> Result<(OrgId, String)> {
        let random: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(KEY_RANDOM_CHARS)
            .map(char::from)
            .collect();
        let key = format!("{KEY_PREFIX}{random}");
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
        .bind(hash_key(&key))
        .bind(&key[..KEY_PREFIX.len() + 6])
        .bind(now)
        .execute(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        Ok((OrgId(org_id), key))
    }

    /// The organisation an API key belongs to, if the key is known and not revoked.
    pub async fn authenticate(&self, key: &str) -> Result<Option<OrgId>> {
        let org: Option<i64> = sqlx::query_scalar(
            "SELECT org_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(hash_key(key))
        .fetch_optional(&self.pool)
        .await?;
        Ok(org.map(OrgId))
    }
}
