//! PHI retention and erasure: finding the ended sequences to purge and purging them
//! (`crate::phi` says what is PHI).

use sqlx::Row;

use super::sequences::json_ids;
use super::{SqliteStore, SqliteTx};
use crate::model::*;
use crate::phi::{
    DAY_MILLIS, EVENT_KIND_WITH_PHI, PURGED_VARIABLES, redact_body, redact_contact, redact_event,
};
use crate::{Millis, Result, SequenceId};

/// One number's ended sequences in one organisation, a page in id order: one range of
/// `sequences_org_phone` (migration 0032), whatever the organisation's size.
const CONTACT_SEQUENCES: &str = "SELECT id FROM sequences WHERE org_id = ? AND id > ? \
     AND phone_number = ? AND status = 'ended' ORDER BY id LIMIT ?";

impl SqliteStore {
    pub(crate) async fn phi_purge_candidates(
        &self,
        selection: &PhiSelection<'_>,
        limit: u32,
    ) -> Result<Vec<SequenceId>> {
        let ids: Vec<SequenceId> = match *selection {
            // Per organisation with a retention period, one range of `sequences_phi_retained`.
            PhiSelection::Expired { now } => {
                sqlx::query_scalar(
                    "SELECT s.id FROM organizations o \
                     JOIN sequences s ON s.org_id = o.id AND s.status = 'ended' \
                     AND s.phi_purged_at IS NULL AND s.ended_at <= ?1 - o.retention_days * ?2 \
                     WHERE o.retention_days IS NOT NULL LIMIT ?3",
                )
                .bind(now)
                .bind(DAY_MILLIS)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            PhiSelection::Contact {
                org,
                phone_number,
                after,
            } => {
                sqlx::query_scalar(CONTACT_SEQUENCES)
                    .bind(org.0)
                    .bind(after.map_or(0, |id| id.0))
                    .bind(phone_number)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(ids)
    }

    pub(crate) async fn purge_phi(
        &self,
        tx: &mut SqliteTx,
        ids: &[SequenceId],
        only_unpurged: bool,
        now: Millis,
    ) -> Result<PhiPurged> {
        if ids.is_empty() {
            return Ok(PhiPurged::default());
        }
        let rows = sqlx::query(
            "SELECT id, contact FROM sequences WHERE id IN (SELECT value FROM json_each(?1)) \
             AND status = 'ended' AND (NOT ?2 OR phi_purged_at IS NULL) ORDER BY id",
        )
        .bind(json_ids(ids))
        .bind(only_unpurged)
        .fetch_all(&mut *tx.inner)
        .await?;
        let mut purged = PhiPurged::default();
        for row in &rows {
            let id: SequenceId = row.try_get("id")?;
            let contact: String = row.try_get("contact")?;
            sqlx::query(
                "UPDATE sequences SET contact = ?, variables = ?, phi_purged_at = ? WHERE id = ?",
            )
            .bind(redact_contact(&contact))
            .bind(PURGED_VARIABLES)
            .bind(now)
            .bind(id)
            .execute(&mut *tx.inner)
            .await?;
            purged.sequences.push(id);
        }
        if purged.sequences.is_empty() {
            return Ok(purged);
        }
        let taken = json_ids(&purged.sequences);
        purged.encounters = sqlx::query(
            "UPDATE encounters SET report = NULL, conversation = NULL \
             WHERE sequence_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&taken)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        let bodies: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT id, body FROM webhook_messages \
             WHERE sequence_id IN (SELECT value FROM json_each(?))",
        )
        .bind(&taken)
        .fetch_all(&mut *tx.inner)
        .await?;
        for (id, body) in &bodies {
            sqlx::query("UPDATE webhook_messages SET body = ? WHERE id = ?")
                .bind(redact_body(body))
                .bind(id)
                .execute(&mut *tx.inner)
                .await?;
        }
        purged.report_bodies = u64::try_from(bodies.len()).unwrap_or(u64::MAX);
        let events: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, detail FROM sequence_events \
             WHERE sequence_id IN (SELECT value FROM json_each(?)) AND kind = ?",
        )
        .bind(&taken)
        .bind(EVENT_KIND_WITH_PHI)
        .fetch_all(&mut *tx.inner)
        .await?;
        for (id, detail) in &events {
            if let Some(redacted) = redact_event(detail) {
                sqlx::query("UPDATE sequence_events SET detail = ? WHERE id = ?")
                    .bind(redacted)
                    .bind(id)
                    .execute(&mut *tx.inner)
                    .await?;
            }
        }
        // A receiver's answer may echo what it was sent.
        sqlx::query(
            "UPDATE webhook_attempts SET response_body = NULL WHERE response_body IS NOT NULL \
             AND delivery_id IN (SELECT d.id FROM webhook_deliveries d \
             JOIN webhook_messages m ON m.id = d.message_id \
             WHERE m.sequence_id IN (SELECT value FROM json_each(?)))",
        )
        .bind(&taken)
        .execute(&mut *tx.inner)
        .await?;
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Store;

    #[tokio::test]
    async fn an_erasure_reads_one_index_range_of_the_numbers_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = Store::connect(&url).await.unwrap();
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {CONTACT_SEQUENCES}"))
            .bind(1_i64)
            .bind(0_i64)
            .bind("+15555550100")
            .bind(500_i64)
            .fetch_all(&store.sqlite().pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX sequences_org_phone")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "sorted by the index, not afterwards: {plan:?}"
        );
    }
}
