//! Caller numbers: the organisation's resource, and what a claim reads and writes to choose
//! one (SQLite has one writer, so the claim's transaction already serialises choosers).

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{SqliteStore, SqliteTx};
use crate::{
    AllowedCallerNumber, CallerNumber, CallerNumberId, CallerNumberPatch, CallerNumberUses,
    Channel, ChosenCallerNumber, EncounterId, Millis, NewCallerNumber, OrgId, Result, StoreError,
    stored,
};

const CALLER_NUMBER_COLUMNS: &str = "id, org_id, channel, number, provider_id, daily_cap, \
     enabled, last_chosen_at, created_at, updated_at";

/// A caller number (a `caller_numbers` row) the operator still allows its organisation: its
/// channel and number on the organisation's allow-list, with the allowed provider id when the
/// allow-list sets one.
const STILL_ALLOWED: &str = "EXISTS (SELECT 1 FROM organization_caller_numbers a \
     WHERE a.channel = caller_numbers.channel AND a.number = caller_numbers.number \
     AND a.org_id = caller_numbers.org_id \
     AND (a.provider_id IS NULL OR a.provider_id = caller_numbers.provider_id))";

const ALLOWED_COLUMNS: &str = "org_id, channel, number, provider_id, added_at";

fn allowed_from_row(row: &SqliteRow) -> Result<AllowedCallerNumber> {
    Ok(AllowedCallerNumber {
        org_id: OrgId(row.try_get("org_id")?),
        channel: stored::channel(row.try_get("channel")?)?,
        number: row.try_get("number")?,
        provider_id: row.try_get("provider_id")?,
        added_at: row.try_get("added_at")?,
    })
}

fn caller_number_from_row(row: &SqliteRow) -> Result<CallerNumber> {
    Ok(CallerNumber {
        id: CallerNumberId(row.try_get("id")?),
        org_id: OrgId(row.try_get("org_id")?),
        channel: stored::channel(row.try_get("channel")?)?,
        number: row.try_get("number")?,
        provider_id: row.try_get("provider_id")?,
        daily_cap: row
            .try_get::<Option<i64>, _>("daily_cap")?
            .map(|cap| u32::try_from(cap).map_err(|_| StoreError::Corrupt("daily_cap")))
            .transpose()?,
        enabled: row.try_get("enabled")?,
        last_chosen_at: row.try_get("last_chosen_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The caller number recorded on an encounter row (its `caller_number*` columns).
pub(super) fn chosen_caller_number(row: &SqliteRow) -> Result<Option<ChosenCallerNumber>> {
    let id: Option<i64> = row.try_get("caller_number_id")?;
    let number: Option<String> = row.try_get("caller_number")?;
    Ok(id.zip(number).map(|(id, number)| ChosenCallerNumber {
        id: CallerNumberId(id),
        number,
        provider_id: row.try_get("caller_provider_id").ok().flatten(),
    }))
}

impl SqliteStore {
    pub(crate) async fn create_caller_number(
        &self,
        org: OrgId,
        new: &NewCallerNumber<'_>,
        now: Millis,
    ) -> Result<CallerNumber> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO caller_numbers \
             (org_id, channel, number, provider_id, daily_cap, enabled, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {CALLER_NUMBER_COLUMNS}"
        ))
        .bind(org.0)
        .bind(stored::channel_str(new.channel))
        .bind(new.number)
        .bind(new.provider_id)
        .bind(new.daily_cap.map(i64::from))
        .bind(new.enabled)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        caller_number_from_row(&row)
    }

    pub(crate) async fn get_caller_number(
        &self,
        org: OrgId,
        id: CallerNumberId,
    ) -> Result<Option<CallerNumber>> {
        let row = sqlx::query(&format!(
            "SELECT {CALLER_NUMBER_COLUMNS} FROM caller_numbers WHERE id = ? AND org_id = ?"
        ))
        .bind(id.0)
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(caller_number_from_row).transpose()
    }

    pub(crate) async fn list_caller_numbers(
        &self,
        org: OrgId,
        after: Option<CallerNumberId>,
        limit: u32,
    ) -> Result<Vec<CallerNumber>> {
        let rows = sqlx::query(&format!(
            "SELECT {CALLER_NUMBER_COLUMNS} FROM caller_numbers WHERE org_id = ? AND id > ? \
             ORDER BY id LIMIT ?"
        ))
        .bind(org.0)
        .bind(after.map_or(0, |id| id.0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(caller_number_from_row).collect()
    }

    pub(crate) async fn update_caller_number(
        &self,
        org: OrgId,
        id: CallerNumberId,
        patch: &CallerNumberPatch,
        now: Millis,
    ) -> Result<Option<CallerNumber>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE caller_numbers SET \
             provider_id = CASE WHEN ? THEN ? ELSE provider_id END, \
             daily_cap = CASE WHEN ? THEN ? ELSE daily_cap END, \
             enabled = COALESCE(?, enabled), updated_at = ? \
             WHERE id = ? AND org_id = ? RETURNING {CALLER_NUMBER_COLUMNS}"
        ))
        .bind(patch.provider_id.is_some())
        .bind(patch.provider_id.clone().flatten())
        .bind(patch.daily_cap.is_some())
        .bind(patch.daily_cap.flatten().map(i64::from))
        .bind(patch.enabled)
        .bind(now)
        .bind(id.0)
        .bind(org.0)
        .fetch_optional(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        row.as_ref().map(caller_number_from_row).transpose()
    }

    pub(crate) async fn delete_caller_number(
        &self,
        org: OrgId,
        id: CallerNumberId,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM caller_numbers WHERE id = ? AND org_id = ?")
            .bind(id.0)
            .bind(org.0)
            .execute(&mut *tx.inner)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn caller_numbers_for_choice(
        &self,
        tx: &mut SqliteTx,
        org: OrgId,
        channel: Channel,
        encounter: EncounterId,
        since: Millis,
    ) -> Result<Vec<CallerNumberUses>> {
        let rows = sqlx::query(&format!(
            "SELECT {CALLER_NUMBER_COLUMNS} FROM caller_numbers \
             WHERE org_id = ? AND channel = ? AND enabled = 1 AND {STILL_ALLOWED} ORDER BY id"
        ))
        .bind(org.0)
        .bind(stored::channel_str(channel))
        .fetch_all(&mut *tx.inner)
        .await?;
        let mut numbers = Vec::with_capacity(rows.len());
        for row in &rows {
            let number = caller_number_from_row(row)?;
            let uses = if number.daily_cap.is_some() {
                sqlx::query_scalar(
                    "SELECT caller_number_at FROM encounters \
                     WHERE caller_number_id = ? AND caller_number_at >= ? AND id != ? \
                     ORDER BY caller_number_at",
                )
                .bind(number.id.0)
                .bind(since)
                .bind(encounter)
                .fetch_all(&mut *tx.inner)
                .await?
            } else {
                Vec::new()
            };
            numbers.push(CallerNumberUses { number, uses });
        }
        Ok(numbers)
    }

    pub(crate) async fn record_caller_number_choice(
        &self,
        tx: &mut SqliteTx,
        encounter: EncounterId,
        number: &CallerNumber,
        now: Millis,
    ) -> Result<()> {
        let recorded = sqlx::query(
            "UPDATE encounters SET caller_number_id = ?, caller_number = ?, \
             caller_provider_id = ?, caller_number_at = ? WHERE id = ? AND status = 'created'",
        )
        .bind(number.id.0)
        .bind(&number.number)
        .bind(&number.provider_id)
        .bind(now)
        .bind(encounter)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        if recorded == 0 {
            // Requested already (a repeated record): its choice stands, the round robin too.
            return Ok(());
        }
        sqlx::query("UPDATE caller_numbers SET last_chosen_at = ? WHERE id = ?")
            .bind(now)
            .bind(number.id.0)
            .execute(&mut *tx.inner)
            .await?;
        Ok(())
    }

    pub(crate) async fn allow_caller_number(
        &self,
        org: OrgId,
        channel: Channel,
        number: &str,
        provider_id: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let held: Option<(i64, Option<String>)> = sqlx::query_as(
            "SELECT org_id, provider_id FROM organization_caller_numbers WHERE channel = ? AND number = ?",
        )
        .bind(stored::channel_str(channel))
        .bind(number)
        .fetch_optional(&mut *tx.inner)
        .await?;
        match held {
            Some((holder, _)) if holder != org.0 => return Err(StoreError::Conflict),
            Some((_, current)) if current.as_deref() == provider_id => return Ok(false),
            Some(_) => {
                sqlx::query(
                    "UPDATE organization_caller_numbers SET provider_id = ? WHERE channel = ? AND number = ?",
                )
                .bind(provider_id)
                .bind(stored::channel_str(channel))
                .bind(number)
                .execute(&mut *tx.inner)
                .await?;
                // The operator's id is the one calls go out with: the organisation's caller
                // number of this channel and number follows it (else it would stop being
                // chosen, its id no longer the allowed one).
                if provider_id.is_some() {
                    sqlx::query(
                        "UPDATE caller_numbers SET provider_id = ?, updated_at = ? WHERE org_id = ? AND channel = ? AND number = ?",
                    )
                    .bind(provider_id)
                    .bind(now)
                    .bind(org.0)
                    .bind(stored::channel_str(channel))
                    .bind(number)
                    .execute(&mut *tx.inner)
                    .await?;
                }
            }
            None => {
                sqlx::query(
                    "INSERT INTO organization_caller_numbers (org_id, channel, number, provider_id, added_at) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(org.0)
                .bind(stored::channel_str(channel))
                .bind(number)
                .bind(provider_id)
                .bind(now)
                .execute(&mut *tx.inner)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(crate) async fn disallow_caller_number(
        &self,
        org: OrgId,
        channel: Channel,
        number: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM organization_caller_numbers WHERE org_id = ? AND channel = ? AND number = ?",
        )
        .bind(org.0)
        .bind(stored::channel_str(channel))
        .bind(number)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn allowed_caller_numbers(
        &self,
        org: OrgId,
    ) -> Result<Vec<AllowedCallerNumber>> {
        let rows = sqlx::query(&format!(
            "SELECT {ALLOWED_COLUMNS} FROM organization_caller_numbers WHERE org_id = ? \
             ORDER BY channel, number"
        ))
        .bind(org.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(allowed_from_row).collect()
    }

    pub(crate) async fn allowed_caller_number(
        &self,
        org: OrgId,
        channel: Channel,
        number: &str,
    ) -> Result<Option<AllowedCallerNumber>> {
        let row = sqlx::query(&format!(
            "SELECT {ALLOWED_COLUMNS} FROM organization_caller_numbers \
             WHERE org_id = ? AND channel = ? AND number = ?"
        ))
        .bind(org.0)
        .bind(stored::channel_str(channel))
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(allowed_from_row).transpose()
    }

    pub(crate) async fn is_caller_number(&self, channel: Channel, number: &str) -> Result<bool> {
        // The channel is written into the statement, not bound: the planner uses the partial
        // index `encounters_sms_caller_number` only for a literal `channel = 'sms'`.
        let sql = match channel {
            Channel::Sms => {
                "SELECT 1 FROM caller_numbers WHERE channel = 'sms' AND number = ? \
                 UNION ALL SELECT 1 FROM encounters WHERE channel = 'sms' AND caller_number = ? \
                 LIMIT 1"
            }
            Channel::Call => {
                "SELECT 1 FROM caller_numbers WHERE channel = 'call' AND number = ? \
                 UNION ALL SELECT 1 FROM encounters WHERE channel = 'call' AND caller_number = ? \
                 LIMIT 1"
            }
        };
        let found: Option<i64> = sqlx::query_scalar(sql)
            .bind(number)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }
}
