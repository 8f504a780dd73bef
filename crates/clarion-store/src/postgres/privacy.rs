//! PHI retention and erasure (PostgreSQL): the SQLite module's queries, the rows locked with
//! `FOR UPDATE SKIP LOCKED` so that several nodes' retention jobs share the work.

use sqlx::Row;

use super::{PgStore, PgTx, raw_ids};
use crate::model::*;
use crate::phi::{
    DAY_MILLIS, EVENT_KIND_WITH_PHI, PURGED_VARIABLES, redact_body, redact_contact, redact_event,
};
use crate::{Millis, Result, SequenceId};

impl PgStore {
    pub(crate) async fn phi_purge_candidates(
        &self,
        selection: &PhiSelection<'_>,
        limit: u32,
    ) -> Result<Vec<SequenceId>> {
        let ids: Vec<SequenceId> = match *selection {
            PhiSelection::Expired { now } => {
                sqlx::query_scalar(
                    "SELECT s.id FROM organizations o \
                     JOIN sequences s ON s.org_id = o.id AND s.status = 'ended' \
                     AND s.phi_purged_at IS NULL AND s.ended_at <= $1 - o.retention_days * $2 \
                     WHERE o.retention_days IS NOT NULL LIMIT $3",
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
                sqlx::query_scalar(
                    "SELECT id FROM sequences WHERE org_id = $1 AND id > $2 \
                     AND phone_number = $3 AND status = 'ended' ORDER BY id LIMIT $4",
                )
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
        tx: &mut PgTx,
        ids: &[SequenceId],
        only_unpurged: bool,
        now: Millis,
    ) -> Result<PhiPurged> {
        if ids.is_empty() {
            return Ok(PhiPurged::default());
        }
        // A row another node is purging (or changing) is skipped: that node purges it.
        let rows = sqlx::query(
            "SELECT id, contact FROM sequences WHERE id = ANY($1) AND status = 'ended' \
             AND (NOT $2 OR phi_purged_at IS NULL) ORDER BY id FOR UPDATE SKIP LOCKED",
        )
        .bind(raw_ids(ids))
        .bind(only_unpurged)
        .fetch_all(&mut *tx.inner)
        .await?;
        let mut purged = PhiPurged::default();
        let mut contacts = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: SequenceId = row.try_get("id")?;
            let contact: String = row.try_get("contact")?;
            purged.sequences.push(id);
            contacts.push(redact_contact(&contact));
        }
        if purged.sequences.is_empty() {
            return Ok(purged);
        }
        let taken = raw_ids(&purged.sequences);
        sqlx::query(
            "UPDATE sequences s SET contact = u.contact, variables = $3, phi_purged_at = $4 \
             FROM UNNEST($1::BIGINT[], $2::TEXT[]) AS u(id, contact) WHERE s.id = u.id",
        )
        .bind(&taken)
        .bind(&contacts)
        .bind(PURGED_VARIABLES)
        .bind(now)
        .execute(&mut *tx.inner)
        .await?;
        purged.encounters = sqlx::query(
            "UPDATE encounters SET report = NULL, conversation = NULL WHERE sequence_id = ANY($1)",
        )
        .bind(&taken)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        let bodies: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT id, body FROM webhook_messages WHERE sequence_id = ANY($1)")
                .bind(&taken)
                .fetch_all(&mut *tx.inner)
                .await?;
        let message_ids: Vec<i64> = bodies.iter().map(|(id, _)| *id).collect();
        let redacted: Vec<Vec<u8>> = bodies.iter().map(|(_, body)| redact_body(body)).collect();
        sqlx::query(
            "UPDATE webhook_messages m SET body = u.body \
             FROM UNNEST($1::BIGINT[], $2::BYTEA[]) AS u(id, body) WHERE m.id = u.id",
        )
        .bind(&message_ids)
        .bind(&redacted)
        .execute(&mut *tx.inner)
        .await?;
        purged.report_bodies = u64::try_from(bodies.len()).unwrap_or(u64::MAX);
        let events: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, detail FROM sequence_events WHERE sequence_id = ANY($1) AND kind = $2",
        )
        .bind(&taken)
        .bind(EVENT_KIND_WITH_PHI)
        .fetch_all(&mut *tx.inner)
        .await?;
        let (event_ids, details): (Vec<i64>, Vec<String>) = events
            .iter()
            .filter_map(|(id, detail)| Some((*id, redact_event(detail)?)))
            .unzip();
        if !event_ids.is_empty() {
            sqlx::query(
                "UPDATE sequence_events e SET detail = u.detail \
                 FROM UNNEST($1::BIGINT[], $2::TEXT[]) AS u(id, detail) WHERE e.id = u.id",
            )
            .bind(&event_ids)
            .bind(&details)
            .execute(&mut *tx.inner)
            .await?;
        }
        // A receiver's answer may echo what it was sent.
        sqlx::query(
            "UPDATE webhook_attempts SET response_body = NULL WHERE response_body IS NOT NULL \
             AND delivery_id IN (SELECT id FROM webhook_deliveries WHERE message_id = ANY($1))",
        )
        .bind(&message_ids)
        .execute(&mut *tx.inner)
        .await?;
        Ok(purged)
    }
}
