//! Assistants, versioned templates, sequences, encounters, history and suppressions.
//!
//! Sequence state changes happen inside write transactions that read the state they change
//! (`Tx`), so an API call (cancel, pause) and a worker (wake, encounter ended) never overwrite
//! each other: SQLite serialises writers.

use std::fmt::Write as _;

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{SqliteStore, SqliteTx, rows_per_statement, value_rows};
use crate::model::*;
use crate::stored;
use clarion_engine::Channel;

use crate::{
    AssistantId, EncounterId, Millis, OrgId, Result, SequenceEventId, SequenceId, StoreError,
    TemplateId, TemplateVersionId,
};

fn json(row: &SqliteRow, column: &str) -> Result<serde_json::Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("stored JSON"))
}

fn assistant_from_row(row: &SqliteRow) -> Result<Assistant> {
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

fn template_from_row(row: &SqliteRow) -> Result<TemplateVersion> {
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

fn sequence_from_row(row: &SqliteRow) -> Result<SequenceRow> {
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

/// Whether `row` (as `RETURNING` gave it back) is what inserting `new` stored.
fn inserted_as(new: &NewSequence<'_>, row: &SequenceRow, allow_concurrent: bool) -> bool {
    row.template_version_id == new.template_version_id
        && row.status == new.status
        && row.state == new.state
        && row.next_wake_at == new.next_wake_at
        && row.created_at == new.now
        && allow_concurrent == new.allow_concurrent
        && row.contact == *new.contact
        && row.variables == *new.variables
        && row.simulation.as_ref() == new.simulation
}

const ENCOUNTER_COLUMNS: &str = "id, org_id, sequence_id, step, attempt, channel, assistant_id, \
     phone_number, status, provider_ref, provider_status, outcome, report, ends_at, created_at, \
     ended_at, conversation, claimed_at, sender, \
     caller_number_id, caller_number, caller_provider_id";

/// The SMS conversation running through a provider with a number (`?`): the most recent,
/// if several organisations text the number at once.
/// Ids of the sequences due by `?1`, earliest first, at most `?2`.
const DUE_SEQUENCE_IDS: &str = "SELECT id FROM sequences \
     WHERE status = 'active' AND next_wake_at IS NOT NULL AND next_wake_at <= ? \
     ORDER BY next_wake_at LIMIT ?";

/// Ids of the requested encounters with a known end due by `?1`, earliest first, at most `?2`.
const DUE_ENCOUNTER_IDS: &str = "SELECT id FROM encounters \
     WHERE status = 'requested' AND ends_at IS NOT NULL AND ends_at <= ? \
     AND outcome IS NOT NULL ORDER BY ends_at LIMIT ?";

/// Ids as a JSON array, for `IN (SELECT value FROM json_each(?))`.
/// Channels as a JSON array of their stored spelling, for `IN (SELECT value FROM json_each(?))`.
fn stored_channels(channels: &[Channel]) -> String {
    let words: Vec<&str> = channels.iter().map(|c| stored::channel_str(*c)).collect();
    serde_json::Value::from(words).to_string()
}

pub(super) fn json_ids<Id: Copy + Into<i64>>(ids: &[Id]) -> String {
    serde_json::Value::Array(ids.iter().map(|id| (*id).into().into()).collect()).to_string()
}

/// Encounters open with a provider whose report was due by `?1`, oldest first, at most `?2`.
/// It must stay on the `encounters_open_due` partial index: it runs on every scheduler pass,
/// and scanning the simulator's due encounters instead made it the engine's slowest query.
const OVERDUE_PROVIDER_ENCOUNTERS: &str = "status = 'requested' AND ends_at IS NOT NULL \
     AND ends_at <= ? AND outcome IS NULL ORDER BY ends_at LIMIT ?";

/// [`ENCOUNTER_COLUMNS`] without the report object, the one large column.
const DUE_ENCOUNTER_COLUMNS: &str = "id, org_id, sequence_id, step, attempt, channel, \
     assistant_id, phone_number, status, provider_ref, provider_status, outcome, NULL AS report, \
     ends_at, created_at, ended_at, NULL AS conversation, claimed_at, sender, \
     caller_number_id, caller_number, caller_provider_id";

use super::caller_numbers::chosen_caller_number;

fn encounter_from_row(row: &SqliteRow) -> Result<EncounterRow> {
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

impl SqliteStore {
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
        let row = sqlx::query(
            "INSERT INTO assistants (org_id, name, channel, config, custom_fields, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(org.0)
        .bind(name)
        .bind(stored::channel_str(channel))
        .bind(config.to_string())
        .bind(custom_fields.to_string())
        .bind(now)
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
        let row = sqlx::query("SELECT * FROM assistants WHERE id = ? AND org_id = ?")
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
        let rows =
            sqlx::query("SELECT * FROM assistants WHERE org_id = ? AND id > ? ORDER BY id LIMIT ?")
                .bind(org.0)
                .bind(after.map_or(0, i64::from))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
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
        let template_id: TemplateId = sqlx::query_scalar(
            "INSERT INTO sequence_templates (org_id, name, current_version, created_at, updated_at) \
             VALUES (?, ?, 1, ?, ?) RETURNING id",
        )
        .bind(org.0)
        .bind(name)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx.inner)
        .await?;
        sqlx::query(
            "INSERT INTO sequence_template_versions (template_id, version, definition, created_at) \
             VALUES (?, 1, ?, ?)",
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
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE sequence_templates SET current_version = current_version + 1, \
             name = COALESCE(?, name), updated_at = ? WHERE id = ? AND org_id = ? \
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
             VALUES (?, ?, ?, ?)",
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
        let row = sqlx::query(
            "SELECT t.id AS template_id, t.org_id, t.name, v.version, v.id AS version_id, \
             v.definition, t.created_at, t.updated_at \
             FROM sequence_templates t JOIN sequence_template_versions v \
               ON v.template_id = t.id AND v.version = t.current_version \
             WHERE t.id = ? AND t.org_id = ?",
        )
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
        let row = sqlx::query(
            "SELECT t.id AS template_id, t.org_id, t.name, v.version, v.id AS version_id, \
             v.definition, t.created_at, t.updated_at \
             FROM sequence_template_versions v JOIN sequence_templates t ON t.id = v.template_id \
             WHERE v.id = ?",
        )
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
        let rows = sqlx::query(
            "SELECT t.id AS template_id, t.org_id, t.name, v.version, v.id AS version_id, \
             v.definition, t.created_at, t.updated_at \
             FROM sequence_templates t JOIN sequence_template_versions v \
               ON v.template_id = t.id AND v.version = t.current_version \
             WHERE t.org_id = ? AND t.id > ? ORDER BY t.id LIMIT ?",
        )
        .bind(org.0)
        .bind(after.map_or(0, i64::from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(template_from_row).collect()
    }

    // ---- sequences ----

    pub(crate) async fn sequence_by_idempotency_key(
        &self,
        tx: &mut SqliteTx,
        org: OrgId,
        key: &str,
    ) -> Result<Option<KeyedSequence>> {
        let row: Option<(SequenceId, Option<String>)> = sqlx::query_as(
            "SELECT id, idempotency_fingerprint FROM sequences \
             WHERE org_id = ? AND idempotency_key = ?",
        )
        .bind(org.0)
        .bind(key)
        .fetch_optional(&mut *tx.inner)
        .await?;
        Ok(row.map(|(id, fingerprint)| KeyedSequence { id, fingerprint }))
    }

    pub(crate) async fn insert_sequence(
        &self,
        tx: &mut SqliteTx,
        new: &NewSequence<'_>,
    ) -> Result<std::result::Result<SequenceRow, InsertSequenceError>> {
        if let Some(key) = new.idempotency_key
            && let Some(earlier) = self
                .sequence_by_idempotency_key(tx, new.org_id, key)
                .await?
        {
            return Ok(Err(earlier.insert_error(new.idempotency_fingerprint)));
        }
        // The key was looked up inside this write transaction, so the insert can only meet
        // the one-running-sequence rule.
        let mut inserted = self.insert_sequences(tx, std::slice::from_ref(new)).await?;
        Ok(inserted
            .pop()
            .flatten()
            .ok_or(InsertSequenceError::AlreadyRunning))
    }

    pub(crate) async fn insert_sequences(
        &self,
        tx: &mut SqliteTx,
        rows: &[NewSequence<'_>],
    ) -> Result<Vec<Option<SequenceRow>>> {
        // 15 parameters per row; SQLite allows 32,766 per statement.
        const ROWS_PER_STATEMENT: usize = 1_000;
        let mut answers: Vec<Option<SequenceRow>> = vec![None; rows.len()];
        for (chunk_index, chunk) in rows.chunks(ROWS_PER_STATEMENT).enumerate() {
            let mut sql = String::from(
                "INSERT INTO sequences (org_id, template_id, template_version_id, phone_number, \
                 contact, variables, simulation, status, state, next_wake_at, allow_concurrent, \
                 idempotency_key, idempotency_fingerprint, created_at, last_updated) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
            }
            write!(
                sql,
                " ON CONFLICT DO NOTHING RETURNING {SEQUENCE_COLUMNS}, allow_concurrent, idempotency_key"
            )
            .map_err(|_| StoreError::Corrupt("statement text"))?;
            // Statements of every batch size would crowd the statement cache.
            let mut insert = sqlx::query(&sql).persistent(false);
            // Inputs by (org, template, number, key), in order, for matching rows back.
            type InputKey = (i64, i64, String, Option<String>);
            let mut unmatched: std::collections::HashMap<
                InputKey,
                std::collections::VecDeque<usize>,
            > = std::collections::HashMap::with_capacity(chunk.len());
            for (i, new) in chunk.iter().enumerate() {
                unmatched
                    .entry((
                        new.org_id.0,
                        new.template_id.0,
                        new.phone_number.to_owned(),
                        new.idempotency_key.map(str::to_owned),
                    ))
                    .or_default()
                    .push_back(i);
                insert = insert
                    .bind(new.org_id.0)
                    .bind(new.template_id)
                    .bind(new.template_version_id)
                    .bind(new.phone_number)
                    .bind(new.contact.to_string())
                    .bind(new.variables.to_string())
                    .bind(new.simulation.map(|s| s.to_string()))
                    .bind(stored::sequence_status_str(new.status))
                    .bind(new.state)
                    .bind(new.next_wake_at)
                    .bind(new.allow_concurrent)
                    .bind(new.idempotency_key)
                    .bind(new.idempotency_fingerprint)
                    .bind(new.now)
                    .bind(new.now);
            }
            for row in insert.fetch_all(&mut *tx.inner).await? {
                let sequence = sequence_from_row(&row)?;
                let allow_concurrent: bool = row.try_get("allow_concurrent")?;
                let key: Option<String> = row.try_get("idempotency_key")?;
                let candidates = unmatched
                    .get_mut(&(
                        sequence.org_id.0,
                        sequence.template_id.0,
                        sequence.phone_number.clone(),
                        key,
                    ))
                    .ok_or(StoreError::Corrupt("inserted sequence matches no input"))?;
                let position = candidates
                    .iter()
                    .position(|&i| inserted_as(&chunk[i], &sequence, allow_concurrent))
                    .ok_or(StoreError::Corrupt("inserted sequence matches no input"))?;
                let index = candidates
                    .remove(position)
                    .ok_or(StoreError::Corrupt("inserted sequence matches no input"))?;
                answers[chunk_index * ROWS_PER_STATEMENT + index] = Some(sequence);
            }
        }
        Ok(answers)
    }

    pub(crate) async fn get_sequence(
        &self,
        org: OrgId,
        id: SequenceId,
    ) -> Result<Option<SequenceRow>> {
        let row = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE id = ? AND org_id = ?"
        ))
        .bind(id)
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sequence_from_row).transpose()
    }

    pub(crate) async fn sequence_for_update(
        &self,
        tx: &mut SqliteTx,
        id: SequenceId,
    ) -> Result<Option<SequenceRow>> {
        let row = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE id = ?"
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
        // One statement for every filter: an absent one binds NULL and drops out. The scan
        // follows `sequences_org` (org_id, id) in the page's direction.
        let (cursor, order, start) = if filter.newest_first {
            ("<", "DESC", i64::MAX)
        } else {
            (">", "ASC", 0)
        };
        let rows = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE org_id = ?1 \
             AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR template_id = ?3) \
             AND (?4 IS NULL OR created_at >= ?4) AND (?5 IS NULL OR created_at < ?5) \
             AND (?6 IS NULL OR phone_number = ?6) \
             AND (?7 IS NULL OR json_extract(contact, '$.external_id') = ?7) \
             AND id {cursor} ?8 ORDER BY id {order} LIMIT ?9"
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
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sequence_from_row).collect()
    }

    pub(crate) async fn due_sequence_ids(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<SequenceId>> {
        let ids = self.due_ids(DUE_SEQUENCE_IDS, now, limit).await?;
        Ok(ids.into_iter().map(SequenceId).collect())
    }

    async fn due_ids(&self, query: &'static str, now: Millis, limit: u32) -> Result<Vec<i64>> {
        let ids = sqlx::query_scalar(query)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(ids)
    }

    pub(crate) async fn claim_due_sequences(
        &self,
        tx: &mut SqliteTx,
        ids: &[SequenceId],
        now: Millis,
    ) -> Result<Vec<SequenceRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Inside the caller's write transaction, which began `IMMEDIATE`: SQLite's write
        // lock is held from before this read until commit, so this read locks what it
        // returns (the whole database, the coarsest row lock) and no other connection or
        // process can claim, move or read-to-write these rows until the claim's transaction
        // ends. The rows are moved in that transaction, so no lease outlives it.
        let rows = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences \
             WHERE id IN (SELECT value FROM json_each(?)) \
             AND status = 'active' AND next_wake_at IS NOT NULL AND next_wake_at <= ? \
             ORDER BY id"
        ))
        .bind(json_ids(ids))
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
        tx: &mut SqliteTx,
        events: &[NewSequenceEvent],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        for chunk in events.chunks(rows_per_statement(4)) {
            let sql = format!(
                "INSERT INTO sequence_events (sequence_id, at, kind, detail) VALUES {}",
                value_rows(4, chunk.len())
            );
            let mut insert = sqlx::query(&sql).persistent(false);
            for event in chunk {
                insert = insert
                    .bind(event.sequence_id)
                    .bind(event.at)
                    .bind(event.kind.as_str())
                    .bind(event.detail.to_string());
            }
            insert.execute(&mut *tx.inner).await?;
        }
        Ok(())
    }

    pub(crate) async fn update_sequences(
        &self,
        tx: &mut SqliteTx,
        updates: &[(SequenceId, SequenceUpdate<'_>)],
    ) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        for chunk in updates.chunks(rows_per_statement(6)) {
            let sql = format!(
                "UPDATE sequences SET status = u.column2, state = u.column3, \
                 next_wake_at = u.column4, \
                 outcome_description = COALESCE(u.column5, outcome_description), \
                 last_updated = u.column6, \
                 ended_at = CASE WHEN u.column2 = 'ended' THEN COALESCE(ended_at, u.column6) \
                 ELSE ended_at END \
                 FROM (VALUES {}) AS u WHERE sequences.id = u.column1",
                value_rows(6, chunk.len())
            );
            // Statements of every batch size would crowd the statement cache.
            let mut update = sqlx::query(&sql).persistent(false);
            for (id, u) in chunk {
                update = update
                    .bind(*id)
                    .bind(stored::sequence_status_str(u.status))
                    .bind(u.state)
                    .bind(u.next_wake_at)
                    .bind(u.outcome_description)
                    .bind(u.now);
            }
            update.execute(&mut *tx.inner).await?;
        }
        Ok(())
    }

    pub(crate) async fn sequence_events(
        &self,
        sequence_id: SequenceId,
        after: Option<SequenceEventId>,
        limit: u32,
    ) -> Result<Vec<SequenceEvent>> {
        let rows = sqlx::query(
            "SELECT id, at, kind, detail FROM sequence_events WHERE sequence_id = ? AND id > ? \
             ORDER BY id LIMIT ?",
        )
        .bind(sequence_id)
        .bind(after.map_or(0, i64::from))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
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
        tx: &mut SqliteTx,
        encounters: &[&EncounterRow],
    ) -> Result<Vec<Option<InsertedEncounter>>> {
        if encounters.is_empty() {
            return Ok(Vec::new());
        }
        let mut inserted: Vec<(i64, i64, i64, i64)> = Vec::with_capacity(encounters.len());
        for chunk in encounters.chunks(rows_per_statement(9)) {
            let sql = format!(
                "INSERT INTO encounters (org_id, sequence_id, step, attempt, channel, assistant_id, \
                 phone_number, status, created_at) VALUES {} \
                 ON CONFLICT (sequence_id, step, attempt) DO NOTHING \
                 RETURNING id, sequence_id, step, attempt",
                value_rows(9, chunk.len())
            );
            let mut insert = sqlx::query_as::<_, (i64, i64, i64, i64)>(&sql).persistent(false);
            for e in chunk {
                insert = insert
                    .bind(e.org_id.0)
                    .bind(e.sequence_id)
                    .bind(e.step)
                    .bind(e.attempt)
                    .bind(stored::channel_str(e.channel))
                    .bind(e.assistant_id)
                    .bind(e.phone_number.as_str())
                    .bind("created")
                    .bind(e.created_at);
            }
            inserted.extend(insert.fetch_all(&mut *tx.inner).await?);
        }
        let ids = serde_json::Value::Array(inserted.iter().map(|(id, ..)| (*id).into()).collect());
        let ordinals: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT e.id, (SELECT COUNT(*) FROM encounters x WHERE x.sequence_id = e.sequence_id \
               AND (x.step < e.step OR (x.step = e.step AND x.attempt < e.attempt))) \
             FROM encounters e WHERE e.id IN (SELECT value FROM json_each(?))",
        )
        .bind(ids.to_string())
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
        tx: &mut SqliteTx,
        requested: &[RequestedEncounter],
    ) -> Result<u64> {
        let mut marked = 0;
        for chunk in requested.chunks(rows_per_statement(5)) {
            let sql = format!(
                "UPDATE encounters SET status = 'requested', provider_ref = u.column2, \
                 ends_at = u.column3, report = u.column4, outcome = u.column5 \
                 FROM (VALUES {}) AS u \
                 WHERE encounters.id = u.column1 AND encounters.status = 'created'",
                value_rows(5, chunk.len())
            );
            let mut update = sqlx::query(&sql).persistent(false);
            for requested in chunk {
                update = update
                    .bind(requested.id)
                    .bind(requested.provider_ref.as_str())
                    .bind(requested.ends_at)
                    .bind(requested.report.as_deref())
                    .bind(requested.outcome.as_deref());
            }
            marked += update.execute(&mut *tx.inner).await?.rows_affected();
        }
        Ok(marked)
    }

    pub(crate) async fn end_encounter(
        &self,
        tx: &mut SqliteTx,
        id: EncounterId,
        outcome: &str,
        report: Option<&serde_json::Value>,
        now: Millis,
    ) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE encounters SET status = 'ended', outcome = ?, report = COALESCE(?, report), \
             ended_at = ? WHERE id = ? AND status != 'ended'",
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
        tx: &mut SqliteTx,
        ends: &[EncounterEnd<'_>],
    ) -> Result<Vec<bool>> {
        if ends.is_empty() {
            return Ok(Vec::new());
        }
        let mut ended: Vec<i64> = Vec::with_capacity(ends.len());
        for chunk in ends.chunks(rows_per_statement(4)) {
            let sql = format!(
                "UPDATE encounters SET status = 'ended', outcome = u.column2, \
                 report = COALESCE(u.column3, report), ended_at = u.column4 \
                 FROM (VALUES {}) AS u \
                 WHERE encounters.id = u.column1 AND encounters.status != 'ended' \
                 RETURNING encounters.id",
                value_rows(4, chunk.len())
            );
            let mut update = sqlx::query_scalar::<_, i64>(&sql).persistent(false);
            for end in chunk {
                update = update
                    .bind(end.id)
                    .bind(end.outcome)
                    .bind(end.report.map(ToString::to_string))
                    .bind(end.ended_at);
            }
            ended.extend(update.fetch_all(&mut *tx.inner).await?);
        }
        let ended: std::collections::HashSet<i64> = ended.into_iter().collect();
        Ok(ends.iter().map(|end| ended.contains(&end.id.0)).collect())
    }

    pub(crate) async fn sequences_for_update(
        &self,
        tx: &mut SqliteTx,
        ids: &[SequenceId],
    ) -> Result<Vec<SequenceRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE id IN (SELECT value FROM json_each(?))"
        ))
        .bind(json_ids(ids))
        .fetch_all(&mut *tx.inner)
        .await?;
        rows.iter().map(sequence_from_row).collect()
    }

    pub(crate) async fn encounter_by_provider_ref(
        &self,
        tx: &mut SqliteTx,
        channel: Channel,
        provider_ref: &str,
    ) -> Result<Option<EncounterRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE provider_ref = ? AND channel = ?"
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
        let ranks = serde_json::to_string(order).map_err(|_| StoreError::Corrupt("ranks"))?;
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE encounters SET provider_status = ?1 \
             WHERE provider_ref = ?2 AND channel = ?5 AND status = 'requested' \
             AND (provider_status IS NULL OR COALESCE( \
               (SELECT j.key FROM json_each(?3) j WHERE j.value = provider_status), -1) < ?4)",
        )
        .bind(status)
        .bind(provider_ref)
        .bind(ranks)
        .bind(i64::try_from(rank).unwrap_or(i64::MAX))
        .bind(stored::channel_str(channel))
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    pub(crate) async fn overdue_provider_encounters(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<EncounterRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE {OVERDUE_PROVIDER_ENCOUNTERS}"
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
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE encounters SET ends_at = ? WHERE id = ? AND status = 'requested'")
            .bind(ends_at)
            .bind(id)
            .execute(&mut *tx.inner)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn overdue_open_encounter(
        &self,
        tx: &mut SqliteTx,
        id: EncounterId,
        now: Millis,
    ) -> Result<Option<EncounterRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE id = ? AND status = 'requested' \
             AND outcome IS NULL AND ends_at IS NOT NULL AND ends_at <= ?"
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx.inner)
        .await?;
        row.as_ref().map(encounter_from_row).transpose()
    }

    pub(crate) async fn save_conversation(
        &self,
        tx: &mut SqliteTx,
        id: EncounterId,
        conversation: &str,
        ends_at: Millis,
    ) -> Result<()> {
        sqlx::query("UPDATE encounters SET conversation = ?, ends_at = ? WHERE id = ?")
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
        let ids = self.due_ids(DUE_ENCOUNTER_IDS, now, limit).await?;
        Ok(ids.into_iter().map(EncounterId).collect())
    }

    pub(crate) async fn due_encounters(
        &self,
        tx: &mut SqliteTx,
        ids: &[EncounterId],
        now: Millis,
    ) -> Result<Vec<EncounterRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {DUE_ENCOUNTER_COLUMNS} FROM encounters \
             WHERE id IN (SELECT value FROM json_each(?)) \
             AND status = 'requested' AND ends_at IS NOT NULL AND ends_at <= ? \
             AND outcome IS NOT NULL ORDER BY id"
        ))
        .bind(json_ids(ids))
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
        let channels = stored_channels(provider_channels);
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE status = 'created' \
             AND ((claimed_at IS NULL AND created_at < ?1 \
                   AND channel NOT IN (SELECT value FROM json_each(?2))) \
                  OR claimed_at < ?1) \
             ORDER BY created_at LIMIT ?3"
        ))
        .bind(before)
        .bind(channels)
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
        let channels = stored_channels(channels);
        Ok(sqlx::query_scalar(
            "SELECT id FROM encounters WHERE status = 'created' AND claimed_at IS NULL \
             AND channel IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
        )
        .bind(channels)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn encounter_by_id(&self, id: EncounterId) -> Result<Option<EncounterRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(encounter_from_row).transpose()
    }

    pub(crate) async fn encounter_for_update(
        &self,
        tx: &mut SqliteTx,
        id: EncounterId,
    ) -> Result<Option<EncounterRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&mut *tx.inner)
        .await?;
        row.as_ref().map(encounter_from_row).transpose()
    }

    pub(crate) async fn claim_encounter(
        &self,
        tx: &mut SqliteTx,
        id: EncounterId,
        now: Millis,
    ) -> Result<bool> {
        let claimed = sqlx::query(
            "UPDATE encounters SET claimed_at = ? \
             WHERE id = ? AND status = 'created' AND claimed_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    pub(crate) async fn withdraw_encounter(
        &self,
        tx: &mut SqliteTx,
        id: EncounterId,
    ) -> Result<bool> {
        let removed = sqlx::query("DELETE FROM encounters WHERE id = ? AND status = 'created'")
            .bind(id)
            .execute(&mut *tx.inner)
            .await?
            .rows_affected();
        Ok(removed == 1)
    }

    pub(crate) async fn withdraw_unclaimed_encounters(
        &self,
        tx: &mut SqliteTx,
        sequence_id: SequenceId,
    ) -> Result<Vec<EncounterId>> {
        Ok(sqlx::query_scalar(
            "DELETE FROM encounters WHERE sequence_id = ? AND status = 'created' \
             AND claimed_at IS NULL RETURNING id",
        )
        .bind(sequence_id)
        .fetch_all(&mut *tx.inner)
        .await?)
    }

    pub(crate) async fn open_encounters_of_sequence(
        &self,
        tx: &mut SqliteTx,
        sequence_id: SequenceId,
    ) -> Result<Vec<EncounterRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE sequence_id = ? AND status != 'ended' \
             ORDER BY id"
        ))
        .bind(sequence_id)
        .fetch_all(&mut *tx.inner)
        .await?;
        rows.iter().map(encounter_from_row).collect()
    }

    pub(crate) async fn adopt_provider_ref(
        &self,
        tx: &mut SqliteTx,
        id: EncounterId,
        provider_ref: &str,
        ends_at: Millis,
    ) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE encounters SET status = 'requested', provider_ref = ?, ends_at = ? \
             WHERE id = ? AND status != 'ended' AND outcome IS NULL",
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
        tx: &mut SqliteTx,
        phone_number: &str,
        senders: &[&str],
    ) -> Result<Vec<OrgId>> {
        let senders = serde_json::to_string(senders).map_err(|_| StoreError::Corrupt("senders"))?;
        let orgs: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT org_id FROM encounters WHERE channel = 'sms' AND phone_number = ? \
             AND (sender IS NULL OR sender IN (SELECT value FROM json_each(?))) ORDER BY org_id",
        )
        .bind(phone_number)
        .bind(senders)
        .fetch_all(&mut *tx.inner)
        .await?;
        Ok(orgs.into_iter().map(OrgId).collect())
    }

    pub(crate) async fn set_encounter_sender(
        &self,
        tx: &mut SqliteTx,
        id: EncounterId,
        sender: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE encounters SET sender = ? WHERE id = ?")
            .bind(sender)
            .bind(id)
            .execute(&mut *tx.inner)
            .await?;
        Ok(())
    }

    pub(crate) async fn open_sms_conversations(
        &self,
        tx: Option<&mut SqliteTx>,
        phone_number: &str,
        senders: &[&str],
    ) -> Result<Vec<EncounterRow>> {
        let senders = serde_json::to_string(senders).map_err(|_| StoreError::Corrupt("senders"))?;
        let sql = format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE channel = 'sms' \
             AND status = 'requested' AND phone_number = ? AND outcome IS NULL \
             AND (sender IS NULL OR sender IN (SELECT value FROM json_each(?))) \
             ORDER BY id DESC LIMIT 16"
        );
        let query = sqlx::query(&sql).bind(phone_number).bind(senders);
        let rows = match tx {
            Some(tx) => query.fetch_all(&mut *tx.inner).await?,
            None => query.fetch_all(&self.pool).await?,
        };
        rows.iter().map(encounter_from_row).collect()
    }

    pub(crate) async fn sms_opening_in_flight(
        &self,
        phone_number: &str,
        senders: &[&str],
    ) -> Result<bool> {
        let senders = serde_json::to_string(senders).map_err(|_| StoreError::Corrupt("senders"))?;
        let in_flight: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM encounters WHERE channel = 'sms' \
             AND status = 'created' AND claimed_at IS NOT NULL AND phone_number = ? \
             AND outcome IS NULL \
             AND (sender IS NULL OR sender IN (SELECT value FROM json_each(?))))",
        )
        .bind(phone_number)
        .bind(senders)
        .fetch_one(&self.pool)
        .await?;
        Ok(in_flight)
    }

    pub(crate) async fn record_inbound_message(
        &self,
        tx: &mut SqliteTx,
        sid: &str,
        now: Millis,
    ) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO twilio_inbound_messages (message_sid, received_at) VALUES (?, ?) \
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
        let seen: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM twilio_inbound_messages WHERE message_sid = ?")
                .bind(sid)
                .fetch_optional(&self.pool)
                .await?;
        Ok(seen.is_some())
    }

    pub(crate) async fn forget_inbound_messages(&self, before: Millis, limit: u32) -> Result<u64> {
        let mut tx = self.begin().await?;
        let forgotten = sqlx::query(
            "DELETE FROM twilio_inbound_messages WHERE message_sid IN ( \
               SELECT message_sid FROM twilio_inbound_messages WHERE received_at < ? LIMIT ?)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        tx.commit().await?;
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
               AND ends_at IS NOT NULL AND outcome IS NULL)",
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
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE sequence_id = ? ORDER BY step, attempt"
        ))
        .bind(sequence_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(encounter_from_row).collect()
    }

    pub(crate) async fn encounters_of_sequences_tx(
        &self,
        tx: &mut SqliteTx,
        sequence_ids: &[SequenceId],
    ) -> Result<std::collections::HashMap<SequenceId, Vec<EncounterRow>>> {
        let by_sequence: std::collections::HashMap<SequenceId, Vec<EncounterRow>> =
            sequence_ids.iter().map(|id| (*id, Vec::new())).collect();
        if sequence_ids.is_empty() {
            return Ok(by_sequence);
        }
        let ids = json_ids(sequence_ids);
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters \
             WHERE sequence_id IN (SELECT value FROM json_each(?)) \
             ORDER BY sequence_id, step, attempt"
        ))
        .bind(ids)
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
             WHERE sequence_id IN (SELECT value FROM json_each(?1)) AND org_id = ?2 \
             ORDER BY sequence_id, step, attempt"
        ))
        .bind(json_ids(sequence_ids))
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
        // The latest non-test message of each (as `report_body`), through
        // `webhook_messages_sequence`.
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT sequence_id, body FROM webhook_messages WHERE id IN ( \
               SELECT MAX(id) FROM webhook_messages \
               WHERE sequence_id IN (SELECT value FROM json_each(?1)) \
                 AND org_id = ?2 AND is_test = 0 \
               GROUP BY sequence_id)",
        )
        .bind(json_ids(sequence_ids))
        .bind(org.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, body)| (SequenceId(id), body))
            .collect())
    }

    pub(crate) async fn contacts_since(
        &self,
        tx: &mut SqliteTx,
        org: OrgId,
        phone_number: &str,
        since: Millis,
    ) -> Result<Vec<Millis>> {
        let times = sqlx::query_scalar(
            "SELECT created_at FROM encounters WHERE org_id = ? AND phone_number = ? AND created_at >= ? \
             ORDER BY created_at",
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
            "SELECT body FROM webhook_messages WHERE org_id = ? AND sequence_id = ? AND is_test = 0 \
             AND event_type = 'sequence.ended' \
             ORDER BY id DESC LIMIT 1",
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
             UNION ALL SELECT MAX(ended_at) FROM encounters)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(latest)
    }

    // ---- contact locks ----

    pub(crate) async fn lock_contacts(
        &self,
        tx: &mut SqliteTx,
        numbers: &[(OrgId, &str)],
        now: Millis,
    ) -> Result<()> {
        let mut numbers: Vec<(OrgId, &str)> = numbers.to_vec();
        numbers.sort_unstable_by(|a, b| (a.0.0, a.1).cmp(&(b.0.0, b.1)));
        numbers.dedup();
        for chunk in numbers.chunks(rows_per_statement(3)) {
            let sql = format!(
                "INSERT INTO contact_locks (org_id, phone_number, locked_at) VALUES {} \
                 ON CONFLICT (org_id, phone_number) DO UPDATE SET locked_at = excluded.locked_at",
                value_rows(3, chunk.len())
            );
            let mut upsert = sqlx::query(&sql).persistent(false);
            for (org, phone_number) in chunk {
                upsert = upsert.bind(org.0).bind(*phone_number).bind(now);
            }
            upsert.execute(&mut *tx.inner).await?;
        }
        Ok(())
    }

    // ---- suppressions ----

    pub(crate) async fn is_suppressed(
        &self,
        tx: &mut SqliteTx,
        org: OrgId,
        phone_number: &str,
    ) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM suppressions WHERE org_id = ? AND phone_number = ?")
                .bind(org.0)
                .bind(phone_number)
                .fetch_optional(&mut *tx.inner)
                .await?;
        Ok(found.is_some())
    }

    pub(crate) async fn are_suppressed(
        &self,
        tx: &mut SqliteTx,
        numbers: &[(OrgId, &str)],
    ) -> Result<Vec<bool>> {
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let batch = serde_json::Value::Array(
            numbers
                .iter()
                .map(|(org, phone)| serde_json::json!([org.0, phone]))
                .collect(),
        );
        let found: Vec<i64> = sqlx::query_scalar(
            "SELECT j.key FROM json_each(?) j WHERE EXISTS (SELECT 1 FROM suppressions s \
             WHERE s.org_id = j.value->>0 AND s.phone_number = j.value->>1)",
        )
        .bind(batch.to_string())
        .fetch_all(&mut *tx.inner)
        .await?;
        let mut answers = vec![false; numbers.len()];
        for index in found {
            if let Some(answer) = usize::try_from(index).ok().and_then(|i| answers.get_mut(i)) {
                *answer = true;
            }
        }
        Ok(answers)
    }

    pub(crate) async fn suppress(
        &self,
        tx: &mut SqliteTx,
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
        tx: &mut SqliteTx,
        org: OrgId,
        phone_number: &str,
        reason: &str,
        actor: &str,
        now: Millis,
    ) -> Result<()> {
        // The same lock as the contact checks: an opt-out and a check before contact for
        // this number never interleave (the check sees the opt-out, or the opt-out comes
        // after the contact was decided).
        self.lock_contacts(tx, &[(org, phone_number)], now).await?;
        let changed = sqlx::query(
            "INSERT INTO suppressions (org_id, phone_number, reason, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (org_id, phone_number) DO UPDATE SET reason = excluded.reason, \
             created_at = excluded.created_at \
             WHERE excluded.reason = ?5 AND suppressions.reason <> ?5",
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
        let entry: Option<(String, Millis)> = sqlx::query_as(
            "SELECT reason, created_at FROM suppressions WHERE org_id = ? AND phone_number = ?",
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
        sqlx::query("DELETE FROM suppressions WHERE org_id = ? AND phone_number = ?")
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
             WHERE org_id = ? AND phone_number = ? ORDER BY id",
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
                        .map_err(|_| crate::StoreError::Corrupt("suppression consent"))?,
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
        let rows = sqlx::query(
            "SELECT phone_number, reason, created_at FROM suppressions WHERE org_id = ? \
             AND phone_number > ? ORDER BY phone_number LIMIT ?",
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
    tx: &mut SqliteTx,
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
         VALUES (?, ?, ?, ?, ?, ?, ?)",
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
    rows: &[SqliteRow],
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
    async fn due_ids_are_read_from_the_due_indexes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = Store::connect(&url).await.unwrap();
        for (query, index) in [
            (DUE_SEQUENCE_IDS, "COVERING INDEX sequences_due"),
            (DUE_ENCOUNTER_IDS, "COVERING INDEX encounters_due"),
        ] {
            let plan = plan(&store, query, 2).await;
            assert!(plan.iter().any(|step| step.contains(index)), "{plan:?}");
        }
    }

    #[tokio::test]
    async fn the_overdue_look_up_reads_only_encounters_open_with_a_provider() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = Store::connect(&url).await.unwrap();
        let plan: Vec<String> = sqlx::query(&format!(
            "EXPLAIN QUERY PLAN SELECT id FROM encounters WHERE {OVERDUE_PROVIDER_ENCOUNTERS}"
        ))
        .bind(0_i64)
        .bind(10_i64)
        .fetch_all(&store.sqlite().pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>("detail"))
        .collect();
        assert!(
            plan.iter().any(|step| step.contains("encounters_open_due")),
            "{plan:?}"
        );
    }
}
