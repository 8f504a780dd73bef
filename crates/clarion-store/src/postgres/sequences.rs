//! Assistants, versioned templates, sequences, encounters, history and suppressions
//! (PostgreSQL).
//!
//! What SQLite's one writer gave for free is said per method: rows read to be changed are
//! locked (`FOR UPDATE`, in id order, so two transactions locking several meet in one
//! order), rows a worker picks are locked with `SKIP LOCKED` and their due conditions
//! re-checked, claims are conditional `UPDATE`s, and contact checks and suppression changes
//! hold the (organisation, number) lock (see the module documentation of `postgres`).

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{IdOrder, PgStore, PgTx, inserting, lock_contacts, raw_ids};
use crate::model::*;
use crate::stored;
use clarion_engine::Channel;

use crate::{
    AssistantId, EncounterId, Millis, OrgId, Result, SequenceEventId, SequenceId, StoreError,
    TemplateId, TemplateVersionId,
};

fn json(row: &PgRow, column: &str) -> Result<serde_json::Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("stored JSON"))
}

const ASSISTANT_COLUMNS: &str =
    "id, org_id, name, channel, config, custom_fields, created_at, updated_at";

fn assistant_from_row(row: &PgRow) -> Result<Assistant> {
    Ok(Assistant {
        id: row.try_get("id")?,
        org_id: OrgId(row.try_get("org_id")?),
        name: row.try_get("name")?,
        channel: stored::channel(row.try_get("channel")?)?,
        config: json(row, "config")?,
        custom_fields: json(row, "custom_fields")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const TEMPLATE_COLUMNS: &str = "t.id AS template_id, t.org_id, t.name, v.version, \
     v.id AS version_id, v.definition, t.created_at, t.updated_at";

fn template_from_row(row: &PgRow) -> Result<TemplateVersion> {
    Ok(TemplateVersion {
        template_id: row.try_get("template_id")?,
        org_id: OrgId(row.try_get("org_id")?),
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        version_id: row.try_get("version_id")?,
        definition: json(row, "definition")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const SEQUENCE_COLUMNS: &str = "id, org_id, template_id, template_version_id, phone_number, \
     contact, variables, simulation, status, state, next_wake_at, outcome_description, created_at, \
     last_updated, ended_at, phi_purged_at";

fn sequence_from_row(row: &PgRow) -> Result<SequenceRow> {
    let id: i64 = row.try_get("id")?;
    let simulation: Option<String> = row.try_get("simulation")?;
    let (contact, variables, simulation) = stored::sequence_json(
        id,
        row.try_get("contact")?,
        row.try_get("variables")?,
        simulation.as_deref(),
    );
    Ok(SequenceRow {
        id: SequenceId(id),
        org_id: OrgId(row.try_get("org_id")?),
        template_id: row.try_get("template_id")?,
        template_version_id: row.try_get("template_version_id")?,
        phone_number: row.try_get("phone_number")?,
        contact,
        variables,
        simulation,
        status: stored::sequence_status(row.try_get("status")?)?,
        state: row.try_get("state")?,
        next_wake_at: row.try_get("next_wake_at")?,
        outcome_description: row.try_get("outcome_description")?,
        created_at: row.try_get("created_at")?,
        last_updated: row.try_get("last_updated")?,
        ended_at: row.try_get("ended_at")?,
        phi_purged_at: row.try_get("phi_purged_at")?,
    })
}

const ENCOUNTER_COLUMNS: &str = "id, org_id, sequence_id, step, attempt, channel, assistant_id, \
     phone_number, status, provider_ref, provider_status, outcome, report, ends_at, created_at, \
     ended_at, conversation, claimed_at, sender, \
     caller_number_id, caller_number, caller_provider_id";

/// [`ENCOUNTER_COLUMNS`] without the report object, the one large column.
const DUE_ENCOUNTER_COLUMNS: &str = "id, org_id, sequence_id, step, attempt, channel, \
     assistant_id, phone_number, status, provider_ref, provider_status, outcome, \
     NULL::text AS report, ends_at, created_at, ended_at, NULL::text AS conversation, claimed_at, \
     sender, caller_number_id, caller_number, caller_provider_id";

use super::caller_numbers::chosen_caller_number;

fn encounter_from_row(row: &PgRow) -> Result<EncounterRow> {
    Ok(EncounterRow {
        id: row.try_get("id")?,
        org_id: OrgId(row.try_get("org_id")?),
        sequence_id: row.try_get("sequence_id")?,
        step: row.try_get("step")?,
        attempt: row.try_get("attempt")?,
        channel: stored::channel(row.try_get("channel")?)?,
        assistant_id: row.try_get("assistant_id")?,
        phone_number: row.try_get("phone_number")?,
        status: row.try_get::<&str, _>("status")?.parse()?,
        provider_ref: row.try_get("provider_ref")?,
        provider_status: row.try_get("provider_status")?,
        outcome: row.try_get("outcome")?,
        report: row.try_get("report")?,
        ends_at: row.try_get("ends_at")?,
        created_at: row.try_get("created_at")?,
        ended_at: row.try_get("ended_at")?,
        conversation: row.try_get("conversation")?,
        claimed_at: row.try_get("claimed_at")?,
        sender: row.try_get("sender")?,
        caller_number: chosen_caller_number(row)?,
    })
}

fn stored_channels(channels: &[Channel]) -> Vec<&'static str> {
    channels.iter().map(|c| stored::channel_str(*c)).collect()
}

impl PgStore {
    // ---- assistants ----

    pub(crate) async fn create_assistant(
        &self,
        org: OrgId,
        name: &str,
        channel: Channel,
        config: &serde_json::Value,
        custom_fields: &serde_json::Value,
        now: Millis,
    ) -> Result<Assistant> {
        let mut tx = self.begin().await?;
        inserting(&mut tx, IdOrder::Assistants).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO assistants (org_id, name, channel, config, custom_fields, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {ASSISTANT_COLUMNS}"
        ))
        .bind(org.0)
        .bind(name)
        .bind(stored::channel_str(channel))
        .bind(config.to_string())
        .bind(custom_fields.to_string())
        .bind(now)
        .fetch_one(&mut *tx.inner)
        .await?;
        let assistant = assistant_from_row(&row)?;
        tx.commit().await?;
        Ok(assistant)
    }

    pub(crate) async fn get_assistant(
        &self,
        org: OrgId,
        id: AssistantId,
    ) -> Result<Option<Assistant>> {
        let row = sqlx::query(&format!(
            "SELECT {ASSISTANT_COLUMNS} FROM assistants WHERE id = $1 AND org_id = $2"
        ))
        .bind(id)
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(assistant_from_row).transpose()
    }

    pub(crate) async fn list_assistants(
        &self,
        org: OrgId,
        after: Option<AssistantId>,
        limit: u32,
    ) -> Result<Vec<Assistant>> {
        let mut tx = self.ordered_read(IdOrder::Assistants).await?;
        let rows = sqlx::query(&format!(
            "SELECT {ASSISTANT_COLUMNS} FROM assistants WHERE org_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(org.0)
        .bind(after.map_or(0, i64::from))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        rows.iter().map(assistant_from_row).collect()
    }

    // ---- templates ----

    pub(crate) async fn create_template(
        &self,
        org: OrgId,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<TemplateVersion> {
        let mut tx = self.begin().await?;
        inserting(&mut tx, IdOrder::Templates).await?;
        let template_id: TemplateId = sqlx::query_scalar(
            "INSERT INTO sequence_templates (org_id, name, current_version, created_at, updated_at) \
             VALUES ($1, $2, 1, $3, $3) RETURNING id",
        )
        .bind(org.0)
        .bind(name)
        .bind(now)
        .fetch_one(&mut *tx.inner)
        .await?;
        sqlx::query(
            "INSERT INTO sequence_template_versions (template_id, version, definition, created_at) \
             VALUES ($1, 1, $2, $3)",
        )
        .bind(template_id)
        .bind(definition.to_string())
        .bind(now)
        .execute(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        self.get_template(org, template_id)
            .await?
            .ok_or(StoreError::Corrupt("template vanished"))
    }

    pub(crate) async fn update_template(
        &self,
        org: OrgId,
        id: TemplateId,
        name: Option<&str>,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<Option<TemplateVersion>> {
        let mut tx = self.begin().await?;
        // The UPDATE locks the template row: two edits get consecutive versions.
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE sequence_templates SET current_version = current_version + 1, \
             name = COALESCE($1, name), updated_at = $2 WHERE id = $3 AND org_id = $4 \
             RETURNING current_version",
        )
        .bind(name)
        .bind(now)
        .bind(id)
        .bind(org.0)
        .fetch_optional(&mut *tx.inner)
        .await?;
        let Some(version) = version else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO sequence_template_versions (template_id, version, definition, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(version)
        .bind(definition.to_string())
        .bind(now)
        .execute(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        self.get_template(org, id).await
    }

    pub(crate) async fn get_template(
        &self,
        org: OrgId,
        id: TemplateId,
    ) -> Result<Option<TemplateVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} \
             FROM sequence_templates t JOIN sequence_template_versions v \
               ON v.template_id = t.id AND v.version = t.current_version \
             WHERE t.id = $1 AND t.org_id = $2"
        ))
        .bind(id)
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(template_from_row).transpose()
    }

    pub(crate) async fn get_template_version(
        &self,
        version_id: TemplateVersionId,
    ) -> Result<Option<TemplateVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} \
             FROM sequence_template_versions v JOIN sequence_templates t ON t.id = v.template_id \
             WHERE v.id = $1"
        ))
        .bind(version_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(template_from_row).transpose()
    }

    pub(crate) async fn list_templates(
        &self,
        org: OrgId,
        after: Option<TemplateId>,
        limit: u32,
    ) -> Result<Vec<TemplateVersion>> {
        let mut tx = self.ordered_read(IdOrder::Templates).await?;
        let rows = sqlx::query(&format!(
            "SELECT {TEMPLATE_COLUMNS} \
             FROM sequence_templates t JOIN sequence_template_versions v \
               ON v.template_id = t.id AND v.version = t.current_version \
             WHERE t.org_id = $1 AND t.id > $2 ORDER BY t.id LIMIT $3"
        ))
        .bind(org.0)
        .bind(after.map_or(0, i64::from))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        rows.iter().map(template_from_row).collect()
    }

    // ---- sequences ----

    pub(crate) async fn sequence_by_idempotency_key(
        &self,
        tx: &mut PgTx,
        org: OrgId,
        key: &str,
    ) -> Result<Option<KeyedSequence>> {
        let row: Option<(SequenceId, Option<String>)> = sqlx::query_as(
            "SELECT id, idempotency_fingerprint FROM sequences \
             WHERE org_id = $1 AND idempotency_key = $2",
        )
        .bind(org.0)
        .bind(key)
        .fetch_optional(&mut *tx.inner)
        .await?;
        Ok(row.map(|(id, fingerprint)| KeyedSequence { id, fingerprint }))
    }

    pub(crate) async fn insert_sequence(
        &self,
        tx: &mut PgTx,
        new: &NewSequence<'_>,
    ) -> Result<std::result::Result<SequenceRow, InsertSequenceError>> {
        if let Some(key) = new.idempotency_key
            && let Some(earlier) = self
                .sequence_by_idempotency_key(tx, new.org_id, key)
                .await?
        {
            return Ok(Err(earlier.insert_error(new.idempotency_fingerprint)));
        }
        let mut inserted = self.insert_sequences(tx, std::slice::from_ref(new)).await?;
        if let Some(row) = inserted.pop().flatten() {
            return Ok(Ok(row));
        }
        // Another transaction took the key or the number meanwhile (the insert waited for it
        // to commit, then did nothing): under READ COMMITTED this statement sees its row.
        if let Some(key) = new.idempotency_key
            && let Some(earlier) = self
                .sequence_by_idempotency_key(tx, new.org_id, key)
                .await?
        {
            return Ok(Err(earlier.insert_error(new.idempotency_fingerprint)));
        }
        Ok(Err(InsertSequenceError::AlreadyRunning))
    }

    pub(crate) async fn insert_sequences(
        &self,
        tx: &mut PgTx,
        rows: &[NewSequence<'_>],
    ) -> Result<Vec<Option<SequenceRow>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        inserting(tx, IdOrder::Sequences).await?;
        // The ids are drawn from the table's identity first, one per input in order, so a
        // returned row's id says which input it was even when others were skipped.
        let count = i64::try_from(rows.len()).map_err(|_| StoreError::Corrupt("batch size"))?;
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "SELECT nextval(pg_get_serial_sequence('sequences', 'id')) \
             FROM generate_series(1, $1)",
        )
        .bind(count)
        .fetch_all(&mut *tx.inner)
        .await?;
        ids.sort_unstable();
        let column = |f: &dyn Fn(&NewSequence<'_>) -> Option<String>| -> Vec<Option<String>> {
            rows.iter().map(f).collect()
        };
        let orgs: Vec<i64> = rows.iter().map(|r| r.org_id.0).collect();
        let templates: Vec<i64> = rows.iter().map(|r| r.template_id.0).collect();
        let versions: Vec<i64> = rows.iter().map(|r| r.template_version_id.0).collect();
        let phones: Vec<&str> = rows.iter().map(|r| r.phone_number).collect();
        let contacts = column(&|r| Some(r.contact.to_string()));
        let variables = column(&|r| Some(r.variables.to_string()));
        let simulations = column(&|r| r.simulation.map(ToString::to_string));
        let statuses: Vec<&str> = rows
            .iter()
            .map(|r| stored::sequence_status_str(r.status))
            .collect();
        let states: Vec<&str> = rows.iter().map(|r| r.state).collect();
        let wakes: Vec<Option<i64>> = rows.iter().map(|r| r.next_wake_at).collect();
        let concurrent: Vec<bool> = rows.iter().map(|r| r.allow_concurrent).collect();
        let keys: Vec<Option<&str>> = rows.iter().map(|r| r.idempotency_key).collect();
        let fingerprints: Vec<Option<&str>> =
            rows.iter().map(|r| r.idempotency_fingerprint).collect();
        let nows: Vec<i64> = rows.iter().map(|r| r.now).collect();
        // Rows go in input order (ORDER BY id): of two inputs for one running number, the
        // earlier one is inserted and the later one meets it.
        let inserted = sqlx::query(&format!(
            "INSERT INTO sequences (id, org_id, template_id, template_version_id, phone_number, \
             contact, variables, simulation, status, state, next_wake_at, allow_concurrent, \
             idempotency_key, idempotency_fingerprint, created_at, last_updated) \
             SELECT t.*, t.created_at FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], \
                 $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
                 $10::text[], $11::bigint[], $12::boolean[], $13::text[], $14::text[], \
                 $15::bigint[]) \
               AS t(id, org_id, template_id, template_version_id, phone_number, contact, \
                    variables, simulation, status, state, next_wake_at, allow_concurrent, \
                    idempotency_key, idempotency_fingerprint, created_at) \
             ORDER BY t.id \
             ON CONFLICT DO NOTHING RETURNING {SEQUENCE_COLUMNS}"
        ))
        .bind(&ids)
        .bind(&orgs)
        .bind(&templates)
        .bind(&versions)
        .bind(&phones)
        .bind(&contacts)
        .bind(&variables)
        .bind(&simulations)
        .bind(&statuses)
        .bind(&states)
        .bind(&wakes)
        .bind(&concurrent)
        .bind(&keys)
        .bind(&fingerprints)
        .bind(&nows)
        .fetch_all(&mut *tx.inner)
        .await?;
        let mut answers: Vec<Option<SequenceRow>> = vec![None; rows.len()];
        for row in &inserted {
            let sequence = sequence_from_row(row)?;
            let index = ids
                .binary_search(&sequence.id.0)
                .map_err(|_| StoreError::Corrupt("inserted sequence id"))?;
            let slot = answers
                .get_mut(index)
                .ok_or(StoreError::Corrupt("inserted sequence id"))?;
            *slot = Some(sequence);
        }
        Ok(answers)
    }

    pub(crate) async fn get_sequence(
        &self,
        org: OrgId,
        id: SequenceId,
    ) -> Result<Option<SequenceRow>> {
        let row = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE id = $1 AND org_id = $2"
        ))
        .bind(id)
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sequence_from_row).transpose()
    }

    pub(crate) async fn sequence_for_update(
        &self,
        tx: &mut PgTx,
        id: SequenceId,
    ) -> Result<Option<SequenceRow>> {
        let row = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx.inner)
        .await?;
        row.as_ref().map(sequence_from_row).transpose()
    }

    pub(crate) async fn search_sequences(
        &self,
        org: OrgId,
        filter: &SequenceFilter,
        after: Option<SequenceId>,
        limit: u32,
    ) -> Result<Vec<SequenceRow>> {
        // One statement for every filter: an absent one binds NULL and drops out.
        let (cursor, order, start) = if filter.newest_first {
            ("<", "DESC", i64::MAX)
        } else {
            (">", "ASC", 0)
        };
        let mut tx = self.ordered_read(IdOrder::Sequences).await?;
        let rows = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE org_id = $1 \
             AND ($2::text IS NULL OR status = $2::text) \
             AND ($3::bigint IS NULL OR template_id = $3::bigint) \
             AND ($4::bigint IS NULL OR created_at >= $4::bigint) \
             AND ($5::bigint IS NULL OR created_at < $5::bigint) \
             AND ($6::text IS NULL OR phone_number = $6::text) \
             AND ($7::text IS NULL OR (contact::jsonb ->> 'external_id') = $7::text) \
             AND id {cursor} $8 ORDER BY id {order} LIMIT $9"
        ))
        .bind(org.0)
        .bind(filter.status.map(stored::sequence_status_str))
        .bind(filter.template_id.map(i64::from))
        .bind(filter.created_from)
        .bind(filter.created_before)
        .bind(filter.phone_number.as_deref())
        .bind(filter.external_id.as_deref())
        .bind(after.map_or(start, i64::from))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        rows.iter().map(sequence_from_row).collect()
    }

    pub(crate) async fn due_sequence_ids(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<SequenceId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM sequences \
             WHERE status = 'active' AND next_wake_at IS NOT NULL AND next_wake_at <= $1 \
             ORDER BY next_wake_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(SequenceId).collect())
    }

    pub(crate) async fn claim_due_sequences(
        &self,
        tx: &mut PgTx,
        ids: &[SequenceId],
        now: Millis,
    ) -> Result<Vec<SequenceRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // SKIP LOCKED: a sequence another node is running is left to it; one it ran and
        // committed is re-checked against its new version (no longer due) and left out. The
        // lock holds until this transaction's update moves it on.
        let rows = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences \
             WHERE id = ANY($1) \
             AND status = 'active' AND next_wake_at IS NOT NULL AND next_wake_at <= $2 \
             ORDER BY id FOR UPDATE SKIP LOCKED"
        ))
        .bind(raw_ids(ids))
        .bind(now)
        .fetch_all(&mut *tx.inner)
        .await?;
        rows.iter().map(sequence_from_row).collect()
    }

    pub(crate) async fn next_sequence_wake(&self) -> Result<Option<Millis>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_wake_at) FROM sequences WHERE status = 'active' AND next_wake_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(next)
    }

    pub(crate) async fn add_sequence_events(
        &self,
        tx: &mut PgTx,
        events: &[NewSequenceEvent],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        inserting(tx, IdOrder::SequenceEvents).await?;
        let sequences: Vec<i64> = events.iter().map(|e| e.sequence_id.0).collect();
        let ats: Vec<i64> = events.iter().map(|e| e.at).collect();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        let details: Vec<String> = events.iter().map(|e| e.detail.to_string()).collect();
        // In the given order: ids are drawn as the ordered rows are inserted.
        sqlx::query(
            "INSERT INTO sequence_events (sequence_id, at, kind, detail) \
             SELECT s, a, k, d FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[]) \
               WITH ORDINALITY AS t(s, a, k, d, n) ORDER BY n",
        )
        .bind(&sequences)
        .bind(&ats)
        .bind(&kinds)
        .bind(&details)
        .execute(&mut *tx.inner)
        .await?;
        Ok(())
    }

    pub(crate) async fn update_sequences(
        &self,
        tx: &mut PgTx,
        updates: &[(SequenceId, SequenceUpdate<'_>)],
    ) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = updates.iter().map(|(id, _)| id.0).collect();
        let statuses: Vec<&str> = updates
            .iter()
            .map(|(_, u)| stored::sequence_status_str(u.status))
            .collect();
        let states: Vec<&str> = updates.iter().map(|(_, u)| u.state).collect();
        let wakes: Vec<Option<i64>> = updates.iter().map(|(_, u)| u.next_wake_at).collect();
        let outcomes: Vec<Option<&str>> =
            updates.iter().map(|(_, u)| u.outcome_description).collect();
        let nows: Vec<i64> = updates.iter().map(|(_, u)| u.now).collect();
        sqlx::query(
            "UPDATE sequences s SET status = u.st, state = u.state, next_wake_at = u.next, \
             outcome_description = COALESCE(u.outcome, s.outcome_description), \
             last_updated = u.now, \
             ended_at = CASE WHEN u.st = 'ended' THEN COALESCE(s.ended_at, u.now) \
                        ELSE s.ended_at END \
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
                         $6::bigint[]) AS u(id, st, state, next, outcome, now) \
             WHERE s.id = u.id",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(&states)
        .bind(&wakes)
        .bind(&outcomes)
        .bind(&nows)
        .execute(&mut *tx.inner)
        .await?;
        Ok(())
    }

    pub(crate) async fn sequence_events(
        &self,
        sequence_id: SequenceId,
        after: Option<SequenceEventId>,
        limit: u32,
    ) -> Result<Vec<SequenceEvent>> {
        let mut tx = self.ordered_read(IdOrder::SequenceEvents).await?;
        let rows = sqlx::query(
            "SELECT id, at, kind, detail FROM sequence_events WHERE sequence_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(sequence_id)
        .bind(after.map_or(0, i64::from))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(SequenceEvent {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    kind: row.try_get("kind")?,
                    detail: json(row, "detail")?,
                })
            })
            .collect()
    }

    // ---- encounters ----

    pub(crate) async fn insert_encounters(
        &self,
        tx: &mut PgTx,
        encounters: &[&EncounterRow],
    ) -> Result<Vec<Option<InsertedEncounter>>> {
        if encounters.is_empty() {
            return Ok(Vec::new());
        }
        let orgs: Vec<i64> = encounters.iter().map(|e| e.org_id.0).collect();
        let sequences: Vec<i64> = encounters.iter().map(|e| e.sequence_id.0).collect();
        let steps: Vec<i64> = encounters.iter().map(|e| e.step).collect();
        let attempts: Vec<i64> = encounters.iter().map(|e| e.attempt).collect();
        let channels: Vec<&str> = encounters
            .iter()
            .map(|e| stored::channel_str(e.channel))
            .collect();
        let assistants: Vec<i64> = encounters.iter().map(|e| e.assistant_id.0).collect();
        let phones: Vec<&str> = encounters.iter().map(|e| e.phone_number.as_str()).collect();
        let created: Vec<i64> = encounters.iter().map(|e| e.created_at).collect();
        // A step attempt committed by another node meanwhile: the insert waits for it, then
        // does nothing (the unique key decides).
        let inserted: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "INSERT INTO encounters (org_id, sequence_id, step, attempt, channel, assistant_id, \
             phone_number, status, created_at) \
             SELECT o, s, st, a, c, asst, p, 'created', t \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], \
                         $6::bigint[], $7::text[], $8::bigint[]) \
               WITH ORDINALITY AS u(o, s, st, a, c, asst, p, t, n) ORDER BY n \
             ON CONFLICT (sequence_id, step, attempt) DO NOTHING \
             RETURNING id, sequence_id, step, attempt",
        )
        .bind(&orgs)
        .bind(&sequences)
        .bind(&steps)
        .bind(&attempts)
        .bind(&channels)
        .bind(&assistants)
        .bind(&phones)
        .bind(&created)
        .fetch_all(&mut *tx.inner)
        .await?;
        let ids: Vec<i64> = inserted.iter().map(|(id, ..)| *id).collect();
        let ordinals: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT e.id, (SELECT COUNT(*) FROM encounters x WHERE x.sequence_id = e.sequence_id \
               AND (x.step < e.step OR (x.step = e.step AND x.attempt < e.attempt))) \
             FROM encounters e WHERE e.id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx.inner)
        .await?;
        let ordinals: std::collections::HashMap<i64, i64> = ordinals.into_iter().collect();
        let mut by_key: std::collections::HashMap<(i64, i64, i64), InsertedEncounter> = inserted
            .into_iter()
            .map(|(id, sequence, step, attempt)| {
                let inserted = InsertedEncounter {
                    id: EncounterId(id),
                    ordinal: ordinals.get(&id).copied().unwrap_or(0),
                };
                ((sequence, step, attempt), inserted)
            })
            .collect();
        Ok(encounters
            .iter()
            .map(|e| by_key.remove(&(e.sequence_id.0, e.step, e.attempt)))
            .collect())
    }

    pub(crate) async fn mark_encounters_requested(
        &self,
        tx: &mut PgTx,
        requested: &[RequestedEncounter],
    ) -> Result<u64> {
        if requested.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = requested.iter().map(|r| r.id.0).collect();
        let refs: Vec<&str> = requested.iter().map(|r| r.provider_ref.as_str()).collect();
        let ends: Vec<Option<i64>> = requested.iter().map(|r| r.ends_at).collect();
        let reports: Vec<Option<&str>> = requested.iter().map(|r| r.report.as_deref()).collect();
        let outcomes: Vec<Option<&str>> = requested.iter().map(|r| r.outcome.as_deref()).collect();
        let marked = sqlx::query(
            "UPDATE encounters e SET status = 'requested', provider_ref = u.ref, \
             ends_at = u.ends, report = u.report, outcome = u.outcome \
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[]) \
               AS u(id, ref, ends, report, outcome) \
             WHERE e.id = u.id AND e.status = 'created'",
        )
        .bind(&ids)
        .bind(&refs)
        .bind(&ends)
        .bind(&reports)
        .bind(&outcomes)
        .execute(&mut *tx.inner)
        .await?;
        Ok(marked.rows_affected())
    }

    pub(crate) async fn end_encounter(
        &self,
        tx: &mut PgTx,
        id: EncounterId,
        outcome: &str,
        report: Option<&serde_json::Value>,
        now: Millis,
    ) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE encounters SET status = 'ended', outcome = $1, \
             report = COALESCE($2::text, report), ended_at = $3 \
             WHERE id = $4 AND status <> 'ended'",
        )
        .bind(outcome)
        .bind(report.map(ToString::to_string))
        .bind(now)
        .bind(id)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    pub(crate) async fn end_encounters(
        &self,
        tx: &mut PgTx,
        ends: &[EncounterEnd<'_>],
    ) -> Result<Vec<bool>> {
        if ends.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ends.iter().map(|e| e.id.0).collect();
        let outcomes: Vec<&str> = ends.iter().map(|e| e.outcome).collect();
        let reports: Vec<Option<String>> = ends
            .iter()
            .map(|e| e.report.map(ToString::to_string))
            .collect();
        let ended_ats: Vec<i64> = ends.iter().map(|e| e.ended_at).collect();
        let ended: Vec<i64> = sqlx::query_scalar(
            "UPDATE encounters e SET status = 'ended', outcome = u.outcome, \
             report = COALESCE(u.report, e.report), ended_at = u.at \
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[]) \
               AS u(id, outcome, report, at) \
             WHERE e.id = u.id AND e.status <> 'ended' \
             RETURNING e.id",
        )
        .bind(&ids)
        .bind(&outcomes)
        .bind(&reports)
        .bind(&ended_ats)
        .fetch_all(&mut *tx.inner)
        .await?;
        let ended: std::collections::HashSet<i64> = ended.into_iter().collect();
        Ok(ends.iter().map(|end| ended.contains(&end.id.0)).collect())
    }

    pub(crate) async fn sequences_for_update(
        &self,
        tx: &mut PgTx,
        ids: &[SequenceId],
    ) -> Result<Vec<SequenceRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Locked in id order: two transactions locking overlapping sets wait, never deadlock.
        let rows = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        ))
        .bind(raw_ids(ids))
        .fetch_all(&mut *tx.inner)
        .await?;
        rows.iter().map(sequence_from_row).collect()
    }

    pub(crate) async fn encounter_by_provider_ref(
        &self,
        tx: &mut PgTx,
        channel: Channel,
        provider_ref: &str,
    ) -> Result<Option<EncounterRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE provider_ref = $1 AND channel = $2 \
             FOR UPDATE"
        ))
        .bind(provider_ref)
        .bind(stored::channel_str(channel))
        .fetch_optional(&mut *tx.inner)
        .await?;
        row.as_ref().map(encounter_from_row).transpose()
    }

    pub(crate) async fn set_provider_status(
        &self,
        channel: Channel,
        provider_ref: &str,
        status: &str,
        order: &[&str],
    ) -> Result<bool> {
        let Some(rank) = order.iter().position(|s| *s == status) else {
            return Ok(false);
        };
        // One conditional UPDATE: the rank of the stored status is compared with the new one
        // on the row's latest version, so two callbacks never move it backwards.
        let changed = sqlx::query(
            "UPDATE encounters SET provider_status = $1 \
             WHERE provider_ref = $2 AND channel = $5 AND status = 'requested' \
             AND (provider_status IS NULL \
                  OR COALESCE(array_position($3::text[], provider_status) - 1, -1) < $4)",
        )
        .bind(status)
        .bind(provider_ref)
        .bind(order)
        .bind(i32::try_from(rank).unwrap_or(i32::MAX))
        .bind(stored::channel_str(channel))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    pub(crate) async fn overdue_provider_encounters(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<EncounterRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE status = 'requested' \
             AND ends_at IS NOT NULL AND ends_at <= $1 AND outcome IS NULL \
             ORDER BY ends_at LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(encounter_from_row).collect()
    }

    pub(crate) async fn postpone_encounter_end(
        &self,
        id: EncounterId,
        ends_at: Millis,
    ) -> Result<()> {
        sqlx::query("UPDATE encounters SET ends_at = $1 WHERE id = $2 AND status = 'requested'")
            .bind(ends_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn overdue_open_encounter(
        &self,
        tx: &mut PgTx,
        id: EncounterId,
        now: Millis,
    ) -> Result<Option<EncounterRow>> {
        // SKIP LOCKED: another node looking at it answers for it; the conditions are
        // re-checked on the row's latest version.
        let row = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE id = $1 AND status = 'requested' \
             AND outcome IS NULL AND ends_at IS NOT NULL AND ends_at <= $2 \
             FOR UPDATE SKIP LOCKED"
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx.inner)
        .await?;
        row.as_ref().map(encounter_from_row).transpose()
    }

    pub(crate) async fn save_conversation(
        &self,
        tx: &mut PgTx,
        id: EncounterId,
        conversation: &str,
        ends_at: Millis,
    ) -> Result<()> {
        sqlx::query("UPDATE encounters SET conversation = $1, ends_at = $2 WHERE id = $3")
            .bind(conversation)
            .bind(ends_at)
            .bind(id)
            .execute(&mut *tx.inner)
            .await?;
        Ok(())
    }

    pub(crate) async fn due_encounter_ids(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<EncounterId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM encounters \
             WHERE status = 'requested' AND ends_at IS NOT NULL AND ends_at <= $1 \
             AND outcome IS NOT NULL ORDER BY ends_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(EncounterId).collect())
    }

    pub(crate) async fn due_encounters(
        &self,
        tx: &mut PgTx,
        ids: &[EncounterId],
        now: Millis,
    ) -> Result<Vec<EncounterRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // As `due_sequences`: locked with SKIP LOCKED, due conditions re-checked.
        let rows = sqlx::query(&format!(
            "SELECT {DUE_ENCOUNTER_COLUMNS} FROM encounters \
             WHERE id = ANY($1) \
             AND status = 'requested' AND ends_at IS NOT NULL AND ends_at <= $2 \
             AND outcome IS NOT NULL ORDER BY id FOR UPDATE SKIP LOCKED"
        ))
        .bind(raw_ids(ids))
        .bind(now)
        .fetch_all(&mut *tx.inner)
        .await?;
        rows.iter().map(encounter_from_row).collect()
    }

    pub(crate) async fn unconfirmed_encounters(
        &self,
        before: Millis,
        provider_channels: &[Channel],
        limit: u32,
    ) -> Result<Vec<EncounterRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE status = 'created' \
             AND ((claimed_at IS NULL AND created_at < $1 AND NOT (channel = ANY($2))) \
                  OR claimed_at < $1) \
             ORDER BY created_at LIMIT $3"
        ))
        .bind(before)
        .bind(stored_channels(provider_channels))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(encounter_from_row).collect()
    }

    pub(crate) async fn unclaimed_encounter_ids(
        &self,
        channels: &[Channel],
        limit: u32,
    ) -> Result<Vec<EncounterId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM encounters WHERE status = 'created' AND claimed_at IS NULL \
             AND channel = ANY($1) ORDER BY id LIMIT $2",
        )
        .bind(stored_channels(channels))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(EncounterId).collect())
    }

    pub(crate) async fn encounter_by_id(&self, id: EncounterId) -> Result<Option<EncounterRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(encounter_from_row).transpose()
    }

    pub(crate) async fn encounter_for_update(
        &self,
        tx: &mut PgTx,
        id: EncounterId,
    ) -> Result<Option<EncounterRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx.inner)
        .await?;
        row.as_ref().map(encounter_from_row).transpose()
    }

    pub(crate) async fn claim_encounter(
        &self,
        tx: &mut PgTx,
        id: EncounterId,
        now: Millis,
    ) -> Result<bool> {
        // The conditional UPDATE decides: a second claimer waits for the first to commit,
        // re-checks the condition on the claimed row and changes nothing.
        let claimed = sqlx::query(
            "UPDATE encounters SET claimed_at = $1 \
             WHERE id = $2 AND status = 'created' AND claimed_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    pub(crate) async fn withdraw_encounter(&self, tx: &mut PgTx, id: EncounterId) -> Result<bool> {
        let removed = sqlx::query("DELETE FROM encounters WHERE id = $1 AND status = 'created'")
            .bind(id)
            .execute(&mut *tx.inner)
            .await?
            .rows_affected();
        Ok(removed == 1)
    }

    pub(crate) async fn withdraw_unclaimed_encounters(
        &self,
        tx: &mut PgTx,
        sequence_id: SequenceId,
    ) -> Result<Vec<EncounterId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM encounters WHERE sequence_id = $1 AND status = 'created' \
             AND claimed_at IS NULL RETURNING id",
        )
        .bind(sequence_id)
        .fetch_all(&mut *tx.inner)
        .await?;
        Ok(ids.into_iter().map(EncounterId).collect())
    }

    pub(crate) async fn open_encounters_of_sequence(
        &self,
        tx: &mut PgTx,
        sequence_id: SequenceId,
    ) -> Result<Vec<EncounterRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE sequence_id = $1 AND status <> 'ended' \
             ORDER BY id FOR UPDATE"
        ))
        .bind(sequence_id)
        .fetch_all(&mut *tx.inner)
        .await?;
        rows.iter().map(encounter_from_row).collect()
    }

    pub(crate) async fn adopt_provider_ref(
        &self,
        tx: &mut PgTx,
        id: EncounterId,
        provider_ref: &str,
        ends_at: Millis,
    ) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE encounters SET status = 'requested', provider_ref = $1, ends_at = $2 \
             WHERE id = $3 AND status <> 'ended' AND outcome IS NULL",
        )
        .bind(provider_ref)
        .bind(ends_at)
        .bind(id)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    pub(crate) async fn sms_organizations(
        &self,
        tx: &mut PgTx,
        phone_number: &str,
        senders: &[&str],
    ) -> Result<Vec<OrgId>> {
        let orgs: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT org_id FROM encounters WHERE channel = 'sms' AND phone_number = $1 \
             AND (sender IS NULL OR sender = ANY($2)) ORDER BY org_id",
        )
        .bind(phone_number)
        .bind(senders)
        .fetch_all(&mut *tx.inner)
        .await?;
        Ok(orgs.into_iter().map(OrgId).collect())
    }

    pub(crate) async fn set_encounter_sender(
        &self,
        tx: &mut PgTx,
        id: EncounterId,
        sender: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE encounters SET sender = $1 WHERE id = $2")
            .bind(sender)
            .bind(id)
            .execute(&mut *tx.inner)
            .await?;
        Ok(())
    }

    pub(crate) async fn open_sms_conversations(
        &self,
        tx: Option<&mut PgTx>,
        phone_number: &str,
        senders: &[&str],
    ) -> Result<Vec<EncounterRow>> {
        let sql = format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE channel = 'sms' \
             AND status = 'requested' AND phone_number = $1 AND outcome IS NULL \
             AND (sender IS NULL OR sender = ANY($2)) \
             ORDER BY id DESC LIMIT 16"
        );
        let rows = match tx {
            // In a transaction the conversations are locked to its end, and one ended by a
            // transaction this one waited for is re-checked and left out: two texts from one
            // patient (a reply and a STOP) are handled one after the other, so the second
            // sees what the first did (SQLite's write lock gives that by itself).
            Some(tx) => {
                sqlx::query(&format!("{sql} FOR UPDATE"))
                    .bind(phone_number)
                    .bind(senders)
                    .fetch_all(&mut *tx.inner)
                    .await?
            }
            None => {
                sqlx::query(&sql)
                    .bind(phone_number)
                    .bind(senders)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(encounter_from_row).collect()
    }

    pub(crate) async fn sms_opening_in_flight(
        &self,
        phone_number: &str,
        senders: &[&str],
    ) -> Result<bool> {
        let in_flight: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM encounters WHERE channel = 'sms' \
             AND status = 'created' AND claimed_at IS NOT NULL AND phone_number = $1 \
             AND outcome IS NULL AND (sender IS NULL OR sender = ANY($2)))",
        )
        .bind(phone_number)
        .bind(senders)
        .fetch_one(&self.pool)
        .await?;
        Ok(in_flight)
    }

    pub(crate) async fn record_inbound_message(
        &self,
        tx: &mut PgTx,
        sid: &str,
        now: Millis,
    ) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO twilio_inbound_messages (message_sid, received_at) VALUES ($1, $2) \
             ON CONFLICT (message_sid) DO NOTHING",
        )
        .bind(sid)
        .bind(now)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    pub(crate) async fn inbound_message_seen(&self, sid: &str) -> Result<bool> {
        let seen: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM twilio_inbound_messages WHERE message_sid = $1")
                .bind(sid)
                .fetch_optional(&self.pool)
                .await?;
        Ok(seen.is_some())
    }

    pub(crate) async fn forget_inbound_messages(&self, before: Millis, limit: u32) -> Result<u64> {
        let forgotten = sqlx::query(
            "DELETE FROM twilio_inbound_messages WHERE message_sid IN ( \
               SELECT message_sid FROM twilio_inbound_messages WHERE received_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(forgotten)
    }

    pub(crate) async fn next_open_provider_end(&self) -> Result<Option<Millis>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(ends_at) FROM encounters WHERE status = 'requested' \
             AND ends_at IS NOT NULL AND outcome IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub(crate) async fn next_encounter_end(&self) -> Result<Option<Millis>> {
        let next: Option<i64> = sqlx::query_scalar(
            // One look-up per due index (ends known, ends awaited from a provider).
            "SELECT MIN(at) FROM ( \
               SELECT MIN(ends_at) AS at FROM encounters WHERE status = 'requested' \
               AND ends_at IS NOT NULL AND outcome IS NOT NULL \
               UNION ALL \
               SELECT MIN(ends_at) FROM encounters WHERE status = 'requested' \
               AND ends_at IS NOT NULL AND outcome IS NULL) q",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(next)
    }

    pub(crate) async fn sequence_encounters(
        &self,
        sequence_id: SequenceId,
    ) -> Result<Vec<EncounterRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE sequence_id = $1 ORDER BY step, attempt"
        ))
        .bind(sequence_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(encounter_from_row).collect()
    }

    pub(crate) async fn encounters_of_sequences_tx(
        &self,
        tx: &mut PgTx,
        sequence_ids: &[SequenceId],
    ) -> Result<std::collections::HashMap<SequenceId, Vec<EncounterRow>>> {
        let by_sequence: std::collections::HashMap<SequenceId, Vec<EncounterRow>> =
            sequence_ids.iter().map(|id| (*id, Vec::new())).collect();
        if sequence_ids.is_empty() {
            return Ok(by_sequence);
        }
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters \
             WHERE sequence_id = ANY($1) ORDER BY sequence_id, step, attempt"
        ))
        .bind(raw_ids(sequence_ids))
        .fetch_all(&mut *tx.inner)
        .await?;
        group_encounters(by_sequence, &rows)
    }

    pub(crate) async fn encounters_of_sequences(
        &self,
        org: OrgId,
        sequence_ids: &[SequenceId],
    ) -> Result<std::collections::HashMap<SequenceId, Vec<EncounterRow>>> {
        let by_sequence = sequence_ids.iter().map(|id| (*id, Vec::new())).collect();
        if sequence_ids.is_empty() {
            return Ok(by_sequence);
        }
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters \
             WHERE sequence_id = ANY($1) AND org_id = $2 ORDER BY sequence_id, step, attempt"
        ))
        .bind(raw_ids(sequence_ids))
        .bind(org.0)
        .fetch_all(&self.pool)
        .await?;
        group_encounters(by_sequence, &rows)
    }

    pub(crate) async fn report_bodies(
        &self,
        org: OrgId,
        sequence_ids: &[SequenceId],
    ) -> Result<std::collections::HashMap<SequenceId, Vec<u8>>> {
        if sequence_ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        // The latest non-test message of each (as `report_body`).
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT sequence_id, body FROM webhook_messages WHERE id IN ( \
               SELECT MAX(id) FROM webhook_messages \
               WHERE sequence_id = ANY($1) AND org_id = $2 AND NOT is_test \
               GROUP BY sequence_id)",
        )
        .bind(raw_ids(sequence_ids))
        .bind(org.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, body)| (SequenceId(id), body))
            .collect())
    }

    pub(crate) async fn lock_contacts(
        &self,
        tx: &mut PgTx,
        numbers: &[(OrgId, &str)],
        _now: Millis,
    ) -> Result<()> {
        // The advisory lock every contact check and suppression change of these numbers
        // takes (see the module documentation): held to commit, keys in ascending order.
        super::lock_contacts(tx, numbers).await
    }

    pub(crate) async fn contacts_since(
        &self,
        tx: &mut PgTx,
        org: OrgId,
        phone_number: &str,
        since: Millis,
    ) -> Result<Vec<Millis>> {
        // Held to commit: another transaction checking this number waits until the contact
        // this check allows is committed, then counts it.
        lock_contacts(tx, &[(org, phone_number)]).await?;
        let times = sqlx::query_scalar(
            "SELECT created_at FROM encounters WHERE org_id = $1 AND phone_number = $2 \
             AND created_at >= $3 ORDER BY created_at",
        )
        .bind(org.0)
        .bind(phone_number)
        .bind(since)
        .fetch_all(&mut *tx.inner)
        .await?;
        Ok(times)
    }

    pub(crate) async fn report_body(
        &self,
        org: OrgId,
        sequence_id: SequenceId,
    ) -> Result<Option<Vec<u8>>> {
        let body = sqlx::query_scalar(
            "SELECT body FROM webhook_messages WHERE org_id = $1 AND sequence_id = $2 \
             AND NOT is_test AND event_type = 'sequence.ended' ORDER BY id DESC LIMIT 1",
        )
        .bind(org.0)
        .bind(sequence_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(body)
    }

    pub(crate) async fn latest_engine_time(&self) -> Result<Option<Millis>> {
        let latest: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(t) FROM (SELECT MAX(last_updated) AS t FROM sequences \
             UNION ALL SELECT MAX(created_at) FROM encounters \
             UNION ALL SELECT MAX(ended_at) FROM encounters) q",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(latest)
    }

    // ---- suppressions ----

    pub(crate) async fn is_suppressed(
        &self,
        tx: &mut PgTx,
        org: OrgId,
        phone_number: &str,
    ) -> Result<bool> {
        // Held to commit: an opt-out of this number waits for the contact this check allows,
        // and a check waits for an opt-out in flight.
        lock_contacts(tx, &[(org, phone_number)]).await?;
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM suppressions WHERE org_id = $1 AND phone_number = $2",
        )
        .bind(org.0)
        .bind(phone_number)
        .fetch_optional(&mut *tx.inner)
        .await?;
        Ok(found.is_some())
    }

    pub(crate) async fn are_suppressed(
        &self,
        tx: &mut PgTx,
        numbers: &[(OrgId, &str)],
    ) -> Result<Vec<bool>> {
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        lock_contacts(tx, numbers).await?;
        let orgs: Vec<i64> = numbers.iter().map(|(org, _)| org.0).collect();
        let phones: Vec<&str> = numbers.iter().map(|(_, phone)| *phone).collect();
        let found: Vec<i64> = sqlx::query_scalar(
            "SELECT n FROM UNNEST($1::bigint[], $2::text[]) WITH ORDINALITY AS t(o, p, n) \
             WHERE EXISTS (SELECT 1 FROM suppressions s WHERE s.org_id = t.o AND s.phone_number = t.p)",
        )
        .bind(&orgs)
        .bind(&phones)
        .fetch_all(&mut *tx.inner)
        .await?;
        let mut answers = vec![false; numbers.len()];
        for ordinal in found {
            // WITH ORDINALITY counts from 1.
            if let Some(answer) = usize::try_from(ordinal - 1)
                .ok()
                .and_then(|i| answers.get_mut(i))
            {
                *answer = true;
            }
        }
        Ok(answers)
    }

    pub(crate) async fn suppress(
        &self,
        tx: &mut PgTx,
        org: OrgId,
        phone_number: &str,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        let actor = if reason == OPT_OUT_REASON {
            "patient"
        } else {
            "system"
        };
        self.suppress_by(tx, org, phone_number, reason, actor, now)
            .await
    }

    pub(crate) async fn suppress_by(
        &self,
        tx: &mut PgTx,
        org: OrgId,
        phone_number: &str,
        reason: &str,
        actor: &str,
        now: Millis,
    ) -> Result<()> {
        lock_contacts(tx, &[(org, phone_number)]).await?;
        let changed = sqlx::query(
            "INSERT INTO suppressions (org_id, phone_number, reason, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id, phone_number) DO UPDATE SET reason = excluded.reason, \
             created_at = excluded.created_at \
             WHERE excluded.reason = $5 AND suppressions.reason <> $5",
        )
        .bind(org.0)
        .bind(phone_number)
        .bind(reason)
        .bind(now)
        .bind(OPT_OUT_REASON)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        if changed == 1 {
            record_suppression_change(tx, org, phone_number, "added", reason, actor, now, None)
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn unsuppress(
        &self,
        org: OrgId,
        phone_number: &str,
        actor: &str,
        consent: Option<ConsentRecord<'_>>,
        now: Millis,
    ) -> Result<Unsuppressed> {
        let mut tx = self.begin().await?;
        lock_contacts(&mut tx, &[(org, phone_number)]).await?;
        let entry: Option<(String, Millis)> = sqlx::query_as(
            "SELECT reason, created_at FROM suppressions WHERE org_id = $1 AND phone_number = $2 \
             FOR UPDATE",
        )
        .bind(org.0)
        .bind(phone_number)
        .fetch_optional(&mut *tx.inner)
        .await?;
        let Some((reason, listed_at)) = entry else {
            return Ok(Unsuppressed::NotListed);
        };
        if let Some(refused) = Unsuppressed::refused(&reason, listed_at, consent.as_ref()) {
            return Ok(refused);
        }
        sqlx::query("DELETE FROM suppressions WHERE org_id = $1 AND phone_number = $2")
            .bind(org.0)
            .bind(phone_number)
            .execute(&mut *tx.inner)
            .await?;
        record_suppression_change(
            &mut tx,
            org,
            phone_number,
            "removed",
            &reason,
            actor,
            now,
            consent.map(|c| c.detail),
        )
        .await?;
        tx.commit().await?;
        Ok(Unsuppressed::Removed)
    }

    pub(crate) async fn suppression_history(
        &self,
        org: OrgId,
        phone_number: &str,
    ) -> Result<Vec<SuppressionChange>> {
        let rows = sqlx::query(
            "SELECT id, phone_number, action, reason, actor, at, consent FROM suppression_history \
             WHERE org_id = $1 AND phone_number = $2 ORDER BY id",
        )
        .bind(org.0)
        .bind(phone_number)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let consent: Option<String> = row.try_get("consent")?;
                Ok(SuppressionChange {
                    id: row.try_get("id")?,
                    phone_number: row.try_get("phone_number")?,
                    action: row.try_get::<&str, _>("action")?.parse()?,
                    reason: row.try_get("reason")?,
                    actor: row.try_get("actor")?,
                    at: row.try_get("at")?,
                    consent: consent
                        .map(|text| serde_json::from_str(&text))
                        .transpose()
                        .map_err(|_| StoreError::Corrupt("suppression consent"))?,
                })
            })
            .collect()
    }

    pub(crate) async fn list_suppressions(
        &self,
        org: OrgId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Suppression>> {
        // The column is `COLLATE "C"`: byte order, as SQLite pages it.
        let rows = sqlx::query(
            "SELECT phone_number, reason, created_at FROM suppressions WHERE org_id = $1 \
             AND phone_number > $2 ORDER BY phone_number LIMIT $3",
        )
        .bind(org.0)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Suppression {
                    phone_number: row.try_get("phone_number")?,
                    reason: row.try_get("reason")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }
}

/// Appends one entry to the suppression history, inside the change's transaction.
#[allow(clippy::too_many_arguments)] // one column each; a struct would only rename them
async fn record_suppression_change(
    tx: &mut PgTx,
    org: OrgId,
    phone_number: &str,
    action: &str,
    reason: &str,
    actor: &str,
    at: Millis,
    consent: Option<&serde_json::Value>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO suppression_history (org_id, phone_number, action, reason, actor, at, consent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(org.0)
    .bind(phone_number)
    .bind(action)
    .bind(reason)
    .bind(actor)
    .bind(at)
    .bind(consent.map(serde_json::Value::to_string))
    .execute(&mut *tx.inner)
    .await?;
    Ok(())
}

/// `rows` of encounters (in order) added to their sequence's list.
fn group_encounters(
    mut by_sequence: std::collections::HashMap<SequenceId, Vec<EncounterRow>>,
    rows: &[PgRow],
) -> Result<std::collections::HashMap<SequenceId, Vec<EncounterRow>>> {
    for row in rows {
        let encounter = encounter_from_row(row)?;
        by_sequence
            .entry(encounter.sequence_id)
            .or_default()
            .push(encounter);
    }
    Ok(by_sequence)
}
