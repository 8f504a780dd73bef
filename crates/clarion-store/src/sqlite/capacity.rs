//! The provider capacity governor's queries: slots in use (encounters claimed for a provider
//! and not ended), the queue chosen fairly across organisations, waits recorded once, and a
//! claimed encounter put back in the queue when the provider proved it did not start it.

use sqlx::Row;

use super::{SqliteStore, SqliteTx};
use crate::model::*;
use crate::stored;
use crate::{EncounterId, Millis, OrgId, Result};
use clarion_engine::Channel;

/// The slots in use on channel `?`. Runs before every claim of a call: it must stay on the
/// `encounters_holding_slots` partial index (as many rows as calls in progress).
const SLOTS_IN_USE: &str = "SELECT COUNT(*) FROM encounters \
     WHERE channel = ? AND claimed_at IS NOT NULL AND status != 'ended'";

/// The queue on channel `?1`, at most `?2` per organisation, round robin: from the
/// `encounters_unclaimed` partial index (as many rows as encounters queued).
const QUEUED: &str = "SELECT id, org_id, rank FROM ( \
         SELECT id, org_id, \
                ROW_NUMBER() OVER (PARTITION BY org_id ORDER BY id) - 1 AS rank \
         FROM encounters \
         WHERE status = 'created' AND claimed_at IS NULL AND channel = ?) \
     WHERE rank < ? ORDER BY rank, id";

impl SqliteStore {
    pub(crate) async fn provider_load(&self, channel: Channel) -> Result<ProviderLoad> {
        let channel = stored::channel_str(channel);
        let rows = sqlx::query(
            "SELECT org_id, COUNT(*) AS n FROM encounters \
             WHERE channel = ? AND claimed_at IS NOT NULL AND status != 'ended' \
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
             AND channel = ? AND capacity_wait_at IS NOT NULL",
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
        tx: &mut SqliteTx,
        channel: Channel,
    ) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(SLOTS_IN_USE)
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
        let rows = sqlx::query(QUEUED)
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
        tx: &mut SqliteTx,
        channel: Channel,
        except: &[EncounterId],
        now: Millis,
    ) -> Result<Vec<CapacityWait>> {
        let except =
            serde_json::Value::Array(except.iter().map(|id| id.0.into()).collect()).to_string();
        let rows = sqlx::query(
            "UPDATE encounters SET capacity_wait_at = ? \
             WHERE status = 'created' AND claimed_at IS NULL AND channel = ? \
             AND capacity_wait_at IS NULL \
             AND id NOT IN (SELECT value FROM json_each(?)) \
             RETURNING id, sequence_id, step, attempt, channel",
        )
        .bind(now)
        .bind(stored::channel_str(channel))
        .bind(except)
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
        tx: &mut SqliteTx,
        id: EncounterId,
        provider_ref: Option<&str>,
        now: Millis,
    ) -> Result<Option<CapacityWait>> {
        // Claimed and not yet requested (the provider's answer came at request time), or
        // requested with no outcome under the provider reference that proved it was not
        // started (its report or read-back): either way it never reached the patient. Its
        // caller number goes too: the next claim chooses again among the numbers enabled then,
        // and a contact that was not made counts toward no number's cap.
        let row = sqlx::query(
            "UPDATE encounters SET status = 'created', claimed_at = NULL, sender = NULL, \
                 provider_ref = NULL, provider_status = NULL, ends_at = NULL, \
                 conversation = NULL, caller_number_id = NULL, caller_number = NULL, \
                 caller_provider_id = NULL, caller_number_at = NULL, capacity_wait_at = ? \
             WHERE id = ? AND provider_ref IS ? AND claimed_at IS NOT NULL AND outcome IS NULL \
             AND status IN ('created', 'requested') \
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

fn capacity_wait_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<CapacityWait> {
    Ok(CapacityWait {
        id: row.try_get("id")?,
        sequence_id: row.try_get("sequence_id")?,
        step: row.try_get("step")?,
        attempt: row.try_get("attempt")?,
        channel: stored::channel(row.try_get("channel")?)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Store;

    async fn plan(store: &Store, query: &str, binds: usize) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {query}");
        let mut query = sqlx::query(&explain);
        for _ in 0..binds {
            query = query.bind(0_i64);
        }
        query
            .fetch_all(&store.sqlite().pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect()
    }

    #[tokio::test]
    async fn the_governor_reads_only_slots_held_and_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = Store::connect(&url).await.unwrap();
        for (query, binds, index) in [
            (SLOTS_IN_USE, 1, "encounters_holding_slots"),
            (QUEUED, 2, "encounters_unclaimed"),
        ] {
            let plan = plan(&store, query, binds).await;
            assert!(plan.iter().any(|step| step.contains(index)), "{plan:?}");
        }
    }
}
