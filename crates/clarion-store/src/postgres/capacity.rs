//! The provider capacity governor's queries (PostgreSQL). The slot count runs under a
//! per-channel advisory lock held to commit (see the module documentation of `postgres`), so
//! the count and the claim that follows it are one step across nodes.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgStore, PgTx, lock_provider_slots, raw_ids};
use crate::model::*;
use crate::stored;
use crate::{EncounterId, Millis, OrgId, Result};
use clarion_engine::Channel;

impl PgStore {
    pub(crate) async fn provider_load(&self, channel: Channel) -> Result<ProviderLoad> {
        let channel = stored::channel_str(channel);
        let rows = sqlx::query(
            "SELECT org_id, COUNT(*) AS n FROM encounters \
             WHERE channel = $1 AND claimed_at IS NOT NULL AND status <> 'ended' \
             GROUP BY org_id ORDER BY org_id",
        )
        .bind(channel)
        .fetch_all(&self.pool)
        .await?;
        let in_use_by_org = rows
            .iter()
            .map(|row| {
                let n: i64 = row.try_get("n")?;
                Ok((OrgId(row.try_get("org_id")?), u64::try_from(n).unwrap_or(0)))
            })
            .collect::<Result<Vec<_>>>()?;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM encounters WHERE status = 'created' AND claimed_at IS NULL \
             AND channel = $1 AND capacity_wait_at IS NOT NULL",
        )
        .bind(channel)
        .fetch_one(&self.pool)
        .await?;
        Ok(ProviderLoad {
            in_use_by_org,
            waiting: u64::try_from(waiting).unwrap_or(0),
        })
    }

    pub(crate) async fn provider_slots_in_use(
        &self,
        tx: &mut PgTx,
        channel: Channel,
    ) -> Result<u64> {
        // Taken before counting, held to commit: another node's claim on this channel waits
        // until this transaction's claim (if any) is committed, then counts it.
        lock_provider_slots(tx, channel).await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM encounters \
             WHERE channel = $1 AND claimed_at IS NOT NULL AND status <> 'ended'",
        )
        .bind(stored::channel_str(channel))
        .fetch_one(&mut *tx.inner)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) async fn queued_encounters(
        &self,
        channel: Channel,
        per_org: u32,
    ) -> Result<Vec<QueuedEncounter>> {
        let rows = sqlx::query(
            "SELECT id, org_id, rank FROM ( \
                 SELECT id, org_id, \
                        ROW_NUMBER() OVER (PARTITION BY org_id ORDER BY id) - 1 AS rank \
                 FROM encounters \
                 WHERE status = 'created' AND claimed_at IS NULL AND channel = $1) q \
             WHERE rank < $2 ORDER BY rank, id",
        )
        .bind(stored::channel_str(channel))
        .bind(i64::from(per_org))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let rank: i64 = row.try_get("rank")?;
                Ok(QueuedEncounter {
                    id: row.try_get("id")?,
                    org_id: OrgId(row.try_get("org_id")?),
                    rank_in_org: u32::try_from(rank).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    pub(crate) async fn mark_capacity_waits(
        &self,
        tx: &mut PgTx,
        channel: Channel,
        except: &[EncounterId],
        now: Millis,
    ) -> Result<Vec<CapacityWait>> {
        // The conditional UPDATE decides: under READ COMMITTED a row another transaction
        // marked meanwhile is re-checked against its new version and left out.
        let rows = sqlx::query(
            "UPDATE encounters SET capacity_wait_at = $1 \
             WHERE status = 'created' AND claimed_at IS NULL AND channel = $2 \
             AND capacity_wait_at IS NULL AND NOT (id = ANY($3)) \
             RETURNING id, sequence_id, step, attempt, channel",
        )
        .bind(now)
        .bind(stored::channel_str(channel))
        .bind(raw_ids(except))
        .fetch_all(&mut *tx.inner)
        .await?;
        let mut waits = rows
            .iter()
            .map(capacity_wait_from_row)
            .collect::<Result<Vec<_>>>()?;
        waits.sort_by_key(|w| w.id);
        Ok(waits)
    }

    pub(crate) async fn requeue_encounter(
        &self,
        tx: &mut PgTx,
        id: EncounterId,
        provider_ref: Option<&str>,
        now: Millis,
    ) -> Result<Option<CapacityWait>> {
        // `IS NOT DISTINCT FROM`: SQLite's `IS` (NULL matches NULL).
        let row = sqlx::query(
            "UPDATE encounters SET status = 'created', claimed_at = NULL, sender = NULL, \
                 provider_ref = NULL, provider_status = NULL, ends_at = NULL, \
                 conversation = NULL, caller_number_id = NULL, caller_number = NULL, \
                 caller_provider_id = NULL, caller_number_at = NULL, capacity_wait_at = $1 \
             WHERE id = $2 AND provider_ref IS NOT DISTINCT FROM $3 AND claimed_at IS NOT NULL \
             AND outcome IS NULL AND status IN ('created', 'requested') \
             RETURNING id, sequence_id, step, attempt, channel",
        )
        .bind(now)
        .bind(id)
        .bind(provider_ref)
        .fetch_optional(&mut *tx.inner)
        .await?;
        row.as_ref().map(capacity_wait_from_row).transpose()
    }
}

fn capacity_wait_from_row(row: &PgRow) -> Result<CapacityWait> {
    Ok(CapacityWait {
        id: row.try_get("id")?,
        sequence_id: row.try_get("sequence_id")?,
        step: row.try_get("step")?,
        attempt: row.try_get("attempt")?,
        channel: stored::channel(row.try_get("channel")?)?,
    })
}
