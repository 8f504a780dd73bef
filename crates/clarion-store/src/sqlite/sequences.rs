//! Assistants, versioned templates, sequences, encounters, history and suppressions.
//!
//! Sequence state changes happen inside write transactions that read the state they change
//! (`Tx`), so an API call (cancel, pause) and a worker (wake, encounter ended) never overwrite
//! each other: SQLite serialises writers.

use std::fmt::Write as _;

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Tx, rows_per_statement, value_rows};
use crate::{Millis, OrgId, Result, Store, StoreError};

/// An assistant.
#[derive(Debug, Clone, PartialEq)]
pub struct Assistant {
    pub id: i64,
    pub org_id: OrgId,
    pub name: String,
    /// `call` or `sms`.
    pub channel: String,
    pub config: serde_json::Value,
    pub custom_fields: serde_json::Value,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A template at one version.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateVersion {
    pub template_id: i64,
    pub org_id: OrgId,
    pub name: String,
    pub version: i64,
    pub version_id: i64,
    pub definition: serde_json::Value,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A sequence row.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceRow {
    pub id: i64,
    pub org_id: OrgId,
    pub template_id: i64,
    pub template_version_id: i64,
    pub phone_number: String,
    pub contact: serde_json::Value,
    pub variables: serde_json::Value,
    pub simulation: Option<serde_json::Value>,
    pub status: String,
    /// The engine's state, JSON.
    pub state: String,
    pub next_wake_at: Option<Millis>,
    pub outcome_description: Option<String>,
    pub created_at: Millis,
    pub last_updated: Millis,
    pub ended_at: Option<Millis>,
}

/// A new sequence.
#[derive(Debug, Clone)]
pub struct NewSequence<'a> {
    pub org_id: OrgId,
    pub template_id: i64,
    pub template_version_id: i64,
    pub phone_number: &'a str,
    pub contact: &'a serde_json::Value,
    pub variables: &'a serde_json::Value,
    pub simulation: Option<&'a serde_json::Value>,
    pub status: &'a str,
    pub state: &'a str,
    pub next_wake_at: Option<Millis>,
    pub allow_concurrent: bool,
    pub idempotency_key: Option<&'a str>,
    pub now: Millis,
}

/// Why a sequence could not be inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertSequenceError {
    /// The idempotency key was used before: the earlier sequence's id.
    SameIdempotencyKey(i64),
    /// The number is already in a running sequence of this template.
    AlreadyRunning,
}

/// The state to write back after the engine moved a sequence.
#[derive(Debug, Clone)]
pub struct SequenceUpdate<'a> {
    pub status: &'a str,
    pub state: &'a str,
    pub next_wake_at: Option<Millis>,
    pub outcome_description: Option<&'a str>,
    pub now: Millis,
}

/// What a claim of due sequences asks for ([`Store::claim_due_sequences`]).
#[derive(Debug, Clone, Copy)]
pub struct SequenceClaim<'a> {
    /// The claiming node's identity: the prefix of the claim's lease token.
    pub owner: &'a str,
    /// Due by this time (and any lease expired by it).
    pub now: Millis,
    /// The lease lasts until then unless the sequence is moved or released first.
    pub lease_until: Millis,
}

/// An encounter row.
#[derive(Debug, Clone, PartialEq)]
pub struct EncounterRow {
    pub id: i64,
    pub org_id: OrgId,
    pub sequence_id: i64,
    pub step: i64,
    pub attempt: i64,
    pub channel: String,
    pub assistant_id: i64,
    pub phone_number: String,
    pub status: String,
    pub provider_ref: Option<String>,
    /// The provider's latest status while the encounter runs (a call's `ringing`, …).
    pub provider_status: Option<String>,
    pub outcome: Option<String>,
    /// The encounter's Call or Sms object of the report, as stored JSON text.
    pub report: Option<String>,
    pub ends_at: Option<Millis>,
    pub created_at: Millis,
    pub ended_at: Option<Millis>,
    /// A provider SMS conversation's state (JSON), while it runs.
    pub conversation: Option<String>,
    /// When the encounter was claimed for its provider request (the last check before
    /// contact); `None` while unclaimed, and for simulated encounters.
    pub claimed_at: Option<Millis>,
    /// An SMS conversation's sender (our number, or the Messaging Service sid), set when it
    /// is claimed; `None` for calls, simulated texts and rows older than the column.
    pub sender: Option<String>,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceEvent {
    pub id: i64,
    pub at: Millis,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// A suppression entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub phone_number: String,
    pub reason: String,
    pub created_at: Millis,
}

/// The reason a suppression entry carries when the patient caused it (a call or SMS opt-out).
/// Such an entry is removed only with a recorded new consent.
pub const OPT_OUT_REASON: &str = "opt-out";

/// One change to an organisation's suppression list, as kept in its history.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionChange {
    pub id: i64,
    pub phone_number: String,
    /// `added` or `removed`.
    pub action: String,
    /// The entry's reason at the time of the change.
    pub reason: String,
    /// Who made the change: `patient`, `system`, `api-key:<id>`, or `unknown` for entries
    /// older than the history.
    pub actor: String,
    pub at: Millis,
    /// The new consent recorded with the removal of an opt-out (JSON as the API took it).
    pub consent: Option<serde_json::Value>,
}

/// What [`Store::unsuppress`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsuppressed {
    Removed,
    /// The number is not on the organisation's list.
    NotListed,
    /// The entry is the patient's opt-out and no new consent came with the request: nothing
    /// changed.
    ConsentRequired,
    /// The consent given was obtained before the patient opted out, so it is not a new
    /// consent: nothing changed.
    ConsentPredatesOptOut,
}

/// A new consent recorded with the removal of an entry.
#[derive(Debug, Clone, Copy)]
pub struct ConsentRecord<'a> {
    /// When the consent was obtained; for an opt-out it must not be earlier than the opt-out.
    pub obtained_at: Millis,
    /// The consent as the API took it (who, when, how), kept in the history.
    pub detail: &'a serde_json::Value,
}

/// What the provider answered for an encounter: (id, provider_ref, ends_at, report, outcome).
pub type RequestedEncounter = (i64, String, Option<Millis>, Option<String>, Option<String>);

fn json(row: &SqliteRow, column: &str) -> Result<serde_json::Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("stored JSON"))
}

fn assistant_from_row(row: &SqliteRow) -> Result<Assistant> {
    Ok(Assistant {
        id: row.try_get("id")?,
        org_id: OrgId(row.try_get("org_id")?),
        name: row.try_get("name")?,
        channel: row.try_get("channel")?,
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
     last_updated, ended_at";

fn sequence_from_row(row: &SqliteRow) -> Result<SequenceRow> {
    let simulation: Option<String> = row.try_get("simulation")?;
    Ok(SequenceRow {
        id: row.try_get("id")?,
        org_id: OrgId(row.try_get("org_id")?),
        template_id: row.try_get("template_id")?,
        template_version_id: row.try_get("template_version_id")?,
        phone_number: row.try_get("phone_number")?,
        contact: json(row, "contact")?,
        variables: json(row, "variables")?,
        simulation: simulation
            .map(|s| serde_json::from_str(&s).map_err(|_| StoreError::Corrupt("stored JSON")))
            .transpose()?,
        status: row.try_get("status")?,
        state: row.try_get("state")?,
        next_wake_at: row.try_get("next_wake_at")?,
        outcome_description: row.try_get("outcome_description")?,
        created_at: row.try_get("created_at")?,
        last_updated: row.try_get("last_updated")?,
        ended_at: row.try_get("ended_at")?,
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
     ended_at, conversation, claimed_at, sender";

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
fn json_ids(ids: &[i64]) -> String {
    serde_json::Value::Array(ids.iter().map(|id| (*id).into()).collect()).to_string()
}

/// Encounters open with a provider whose report was due by `?1`, oldest first, at most `?2`.
/// It must stay on the `encounters_open_due` partial index: it runs on every scheduler pass,
/// and scanning the simulator's due encounters instead made it the engine's slowest query.
const OVERDUE_PROVIDER_ENCOUNTERS: &str = "status = 'requested' AND ends_at IS NOT NULL \
     AND ends_at <= ? AND outcome IS NULL ORDER BY ends_at LIMIT ?";

/// [`ENCOUNTER_COLUMNS`] without the report object, the one large column.
const DUE_ENCOUNTER_COLUMNS: &str = "id, org_id, sequence_id, step, attempt, channel, \
     assistant_id, phone_number, status, provider_ref, provider_status, outcome, NULL AS report, \
     ends_at, created_at, ended_at, NULL AS conversation, claimed_at, sender";

fn encounter_from_row(row: &SqliteRow) -> Result<EncounterRow> {
    Ok(EncounterRow {
        id: row.try_get("id")?,
        org_id: OrgId(row.try_get("org_id")?),
        sequence_id: row.try_get("sequence_id")?,
        step: row.try_get("step")?,
        attempt: row.try_get("attempt")?,
        channel: row.try_get("channel")?,
        assistant_id: row.try_get("assistant_id")?,
        phone_number: row.try_get("phone_number")?,
        status: row.try_get("status")?,
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
    })
}

impl Store {
    // ---- assistants ----

    pub async fn create_assistant(
        &self,
        org: OrgId,
        name: &str,
        channel: &str,
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
        .bind(channel)
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

    pub async fn get_assistant(&self, org: OrgId, id: i64) -> Result<Option<Assistant>> {
        let row = sqlx::query("SELECT * FROM assistants WHERE id = ? AND org_id = ?")
            .bind(id)
            .bind(org.0)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(assistant_from_row).transpose()
    }

    pub async fn list_assistants(
        &self,
        org: OrgId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Assistant>> {
        let rows =
            sqlx::query("SELECT * FROM assistants WHERE org_id = ? AND id > ? ORDER BY id LIMIT ?")
                .bind(org.0)
                .bind(after.unwrap_or(0))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(assistant_from_row).collect()
    }

    // ---- templates ----

    /// Creates a template at version 1.
    pub async fn create_template(
        &self,
        org: OrgId,
        name: &str,
        definition: &serde_json::Value,
        now: Millis,
    ) -> Result<TemplateVersion> {
        let mut tx = self.begin().await?;
        let template_id: i64 = sqlx::query_scalar(
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

    /// Adds a version; running sequences keep the version they were enrolled on.
    pub async fn update_template(
        &self,
        org: OrgId,
        id: i64,
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

    /// A template at its current version.
    pub async fn get_template(&self, org: OrgId, id: i64) -> Result<Option<TemplateVersion>> {
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

    /// One template version by its row id (what a sequence was enrolled on).
    pub async fn get_template_version(&self, version_id: i64) -> Result<Option<TemplateVersion>> {
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

    pub async fn list_templates(
        &self,
        org: OrgId,
        after: Option<i64>,
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
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(template_from_row).collect()
    }

    // ---- sequences ----

    /// The sequence an idempotency key created, if any.
    pub async fn sequence_id_by_idempotency_key(
        &self,
        tx: &mut Tx,
        org: OrgId,
        key: &str,
    ) -> Result<Option<i64>> {
        let id =
            sqlx::query_scalar("SELECT id FROM sequences WHERE org_id = ? AND idempotency_key = ?")
                .bind(org.0)
                .bind(key)
                .fetch_optional(&mut *tx.inner)
                .await?;
        Ok(id)
    }

    /// Inserts a sequence in the caller's transaction. A repeated idempotency key answers the
    /// earlier sequence's id; a number already running in this template is refused.
    pub async fn insert_sequence(
        &self,
        tx: &mut Tx,
        new: &NewSequence<'_>,
    ) -> Result<std::result::Result<SequenceRow, InsertSequenceError>> {
        if let Some(key) = new.idempotency_key
            && let Some(id) = self
                .sequence_id_by_idempotency_key(tx, new.org_id, key)
                .await?
        {
            return Ok(Err(InsertSequenceError::SameIdempotencyKey(id)));
        }
        // The key was looked up inside this write transaction, so the insert can only meet
        // the one-running-sequence rule.
        let mut inserted = self.insert_sequences(tx, std::slice::from_ref(new)).await?;
        Ok(inserted
            .pop()
            .flatten()
            .ok_or(InsertSequenceError::AlreadyRunning))
    }

    /// Inserts many new sequences in a few statements, in order (idempotency keys are the
    /// caller's to look up first).
    /// Answers, per row, the stored sequence or `None` when the number is already in a
    /// running sequence of that template (including one inserted earlier in `rows`).
    ///
    /// Ids are assigned by the database (`RETURNING`), so concurrent inserters on separate
    /// connections never compute the same one. Each returned row is matched back to its
    /// input by what was inserted (the first input still unmatched with the same values):
    /// inputs that agree on every stored value are interchangeable, and when the
    /// one-running-sequence rule skips one of several such inputs, it is a later one (rows
    /// are inserted in order), which the first-unmatched rule leaves `None`.
    pub async fn insert_sequences(
        &self,
        tx: &mut Tx,
        rows: &[NewSequence<'_>],
    ) -> Result<Vec<Option<SequenceRow>>> {
        // 14 parameters per row; SQLite allows 32,766 per statement.
        const ROWS_PER_STATEMENT: usize = 1_000;
        let mut answers: Vec<Option<SequenceRow>> = vec![None; rows.len()];
        for (chunk_index, chunk) in rows.chunks(ROWS_PER_STATEMENT).enumerate() {
            let mut sql = String::from(
                "INSERT INTO sequences (org_id, template_id, template_version_id, phone_number, \
                 contact, variables, simulation, status, state, next_wake_at, allow_concurrent, \
                 idempotency_key, created_at, last_updated) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
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
                        new.template_id,
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
                    .bind(new.status)
                    .bind(new.state)
                    .bind(new.next_wake_at)
                    .bind(new.allow_concurrent)
                    .bind(new.idempotency_key)
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
                        sequence.template_id,
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

    pub async fn get_sequence(&self, org: OrgId, id: i64) -> Result<Option<SequenceRow>> {
        let row = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE id = ? AND org_id = ?"
        ))
        .bind(id)
        .bind(org.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sequence_from_row).transpose()
    }

    /// The sequence, read inside a write transaction (to change it).
    pub async fn sequence_for_update(&self, tx: &mut Tx, id: i64) -> Result<Option<SequenceRow>> {
        let row = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&mut *tx.inner)
        .await?;
        row.as_ref().map(sequence_from_row).transpose()
    }

    pub async fn list_sequences(
        &self,
        org: OrgId,
        status: Option<&str>,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SequenceRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {SEQUENCE_COLUMNS} FROM sequences WHERE org_id = ? AND (? IS NULL OR status = ?) \
             AND id > ? ORDER BY id LIMIT ?"
        ))
        .bind(org.0)
        .bind(status)
        .bind(status)
        .bind(after.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sequence_from_row).collect()
    }

    /// The ids of the sequences due at `now`, earliest first, at most `limit`: read from the
    /// due index alone (no row is read), outside any transaction. The caller claims them
    /// with [`Store::due_sequences`].
    pub async fn due_sequence_ids(&self, now: Millis, limit: u32) -> Result<Vec<i64>> {
        self.due_ids(DUE_SEQUENCE_IDS, now, limit).await
    }

    async fn due_ids(&self, query: &'static str, now: Millis, limit: u32) -> Result<Vec<i64>> {
        let ids = sqlx::query_scalar(query)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(ids)
    }

    /// Claims those of the sequences `ids` still due at `claim.now` (active, wake time
    /// passed) and not leased by anyone else (no lease, or an expired one), inside the
    /// caller's write transaction: one `UPDATE … RETURNING` sets their lease
    /// (`lease_owner` = `<owner>:<16 random hex digits>`, drawn for this claim, and
    /// `lease_expires_at`) and answers them in id order. A sequence paused, cancelled, run or
    /// leased since its id was read is left out. The write that moves a sequence
    /// ([`Store::update_sequences`]) ends its lease; [`Store::release_sequence_leases`]
    /// gives back one left unmoved.
    ///
    /// The statement that takes the lease is the one that checks it, so two claimers never
    /// both hold a sequence while its lease is live, whatever the backend's isolation.
    pub async fn claim_due_sequences(
        &self,
        tx: &mut Tx,
        ids: &[i64],
        claim: &SequenceClaim<'_>,
    ) -> Result<Vec<SequenceRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let token = format!("{}:{:016x}", claim.owner, rand::random::<u64>());
        let rows = sqlx::query(&format!(
            "UPDATE sequences SET lease_owner = ?1, lease_expires_at = ?2 \
             WHERE id IN (SELECT value FROM json_each(?3)) \
             AND status = 'active' AND next_wake_at IS NOT NULL AND next_wake_at <= ?4 \
             AND (lease_expires_at IS NULL OR lease_expires_at <= ?4) \
             RETURNING {SEQUENCE_COLUMNS}"
        ))
        .bind(token)
        .bind(claim.lease_until)
        .bind(json_ids(ids))
        .bind(claim.now)
        .fetch_all(&mut *tx.inner)
        .await?;
        let mut claimed = rows
            .iter()
            .map(sequence_from_row)
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_unstable_by_key(|s| s.id);
        Ok(claimed)
    }

    /// Gives back the leases of claimed sequences that were not moved (their claim decided
    /// to leave them as they are), so they are due again at once.
    pub async fn release_sequence_leases(&self, tx: &mut Tx, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE sequences SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(json_ids(ids))
        .execute(&mut *tx.inner)
        .await?;
        Ok(())
    }

    /// The earliest future wake-up, to sleep exactly until then.
    pub async fn next_sequence_wake(&self) -> Result<Option<Millis>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_wake_at) FROM sequences WHERE status = 'active' AND next_wake_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(next)
    }

    /// Appends many history entries in one statement, in the given order:
    /// (sequence id, at, kind, detail).
    pub async fn add_sequence_events(
        &self,
        tx: &mut Tx,
        events: &[(i64, Millis, String, serde_json::Value)],
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
            for (sequence_id, at, kind, detail) in chunk {
                insert = insert
                    .bind(*sequence_id)
                    .bind(*at)
                    .bind(kind.as_str())
                    .bind(detail.to_string());
            }
            insert.execute(&mut *tx.inner).await?;
        }
        Ok(())
    }

    /// Writes the engine's new state of many sequences in one statement. Each id at most once.
    /// Moving a sequence ends any lease on it ([`Store::claim_due_sequences`]): the claim
    /// that took it is done with it. The lease is ended by expiring it at the move's time
    /// (`lease_owner` keeps the last claim's token, now inert), not by clearing both
    /// columns: the row then keeps its size from one claim to the next, so SQLite rewrites
    /// a claimed row in place, which keeps the lease off the engine benchmark.
    pub async fn update_sequences(
        &self,
        tx: &mut Tx,
        updates: &[(i64, SequenceUpdate<'_>)],
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
                 ELSE ended_at END, lease_expires_at = u.column6 \
                 FROM (VALUES {}) AS u WHERE sequences.id = u.column1",
                value_rows(6, chunk.len())
            );
            // Statements of every batch size would crowd the statement cache.
            let mut update = sqlx::query(&sql).persistent(false);
            for (id, u) in chunk {
                update = update
                    .bind(*id)
                    .bind(u.status)
                    .bind(u.state)
                    .bind(u.next_wake_at)
                    .bind(u.outcome_description)
                    .bind(u.now);
            }
            update.execute(&mut *tx.inner).await?;
        }
        Ok(())
    }

    pub async fn sequence_events(
        &self,
        sequence_id: i64,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SequenceEvent>> {
        let rows = sqlx::query(
            "SELECT id, at, kind, detail FROM sequence_events WHERE sequence_id = ? AND id > ? \
             ORDER BY id LIMIT ?",
        )
        .bind(sequence_id)
        .bind(after.unwrap_or(0))
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

    /// Records many encounters before the provider is asked, in two statements (the
    /// rows' org, sequence, step, attempt, channel, assistant, number and created_at). Answers, for each,
    /// `Some((id, ordinal))` if inserted, `None` if that step attempt had one already. The
    /// ordinal counts every encounter of the sequence before it, this batch's included.
    pub async fn insert_encounters(
        &self,
        tx: &mut Tx,
        encounters: &[&EncounterRow],
    ) -> Result<Vec<Option<(i64, i64)>>> {
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
                    .bind(e.channel.as_str())
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
        let mut by_key: std::collections::HashMap<(i64, i64, i64), (i64, i64)> = inserted
            .into_iter()
            .map(|(id, sequence, step, attempt)| {
                (
                    (sequence, step, attempt),
                    (id, ordinals.get(&id).copied().unwrap_or(0)),
                )
            })
            .collect();
        Ok(encounters
            .iter()
            .map(|e| by_key.remove(&(e.sequence_id, e.step, e.attempt)))
            .collect())
    }

    /// Marks many encounters as requested in one statement:
    /// (id, provider_ref, ends_at, report, outcome).
    pub async fn mark_encounters_requested(
        &self,
        tx: &mut Tx,
        requested: &[RequestedEncounter],
    ) -> Result<()> {
        if requested.is_empty() {
            return Ok(());
        }
        for chunk in requested.chunks(rows_per_statement(5)) {
            let sql = format!(
                "UPDATE encounters SET status = 'requested', provider_ref = u.column2, \
                 ends_at = u.column3, report = u.column4, outcome = u.column5 \
                 FROM (VALUES {}) AS u \
                 WHERE encounters.id = u.column1 AND encounters.status = 'created'",
                value_rows(5, chunk.len())
            );
            let mut update = sqlx::query(&sql).persistent(false);
            for (id, provider_ref, ends_at, report, outcome) in chunk {
                update = update
                    .bind(*id)
                    .bind(provider_ref.as_str())
                    .bind(*ends_at)
                    .bind(report.as_deref())
                    .bind(outcome.as_deref());
            }
            update.execute(&mut *tx.inner).await?;
        }
        Ok(())
    }

    /// Ends an encounter with its outcome and report object (`None`: the report stored when
    /// it was requested stands). `false` if it already ended.
    pub async fn end_encounter(
        &self,
        tx: &mut Tx,
        id: i64,
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

    /// [`Store::end_encounter`] for many encounters in one statement: (id, outcome, report or
    /// `None` to keep the stored one, ended_at). Answers, for each, whether it ended now (`false`: it had ended already).
    pub async fn end_encounters(
        &self,
        tx: &mut Tx,
        ends: &[(i64, &str, Option<&serde_json::Value>, Millis)],
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
            for (id, outcome, report, at) in chunk {
                update = update
                    .bind(*id)
                    .bind(*outcome)
                    .bind(report.map(ToString::to_string))
                    .bind(*at);
            }
            ended.extend(update.fetch_all(&mut *tx.inner).await?);
        }
        let ended: std::collections::HashSet<i64> = ended.into_iter().collect();
        Ok(ends.iter().map(|(id, ..)| ended.contains(id)).collect())
    }

    /// Several sequences read inside a write transaction (to change them), in no order.
    pub async fn sequences_for_update(&self, tx: &mut Tx, ids: &[i64]) -> Result<Vec<SequenceRow>> {
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

    /// The encounter a provider knows by `provider_ref` (a Vapi call id), inside a write
    /// transaction. Provider ids are unique per provider; the channel tells providers apart.
    pub async fn encounter_by_provider_ref(
        &self,
        tx: &mut Tx,
        channel: &str,
        provider_ref: &str,
    ) -> Result<Option<EncounterRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE provider_ref = ? AND channel = ?"
        ))
        .bind(provider_ref)
        .bind(channel)
        .fetch_optional(&mut *tx.inner)
        .await?;
        row.as_ref().map(encounter_from_row).transpose()
    }

    /// Records the provider's status of a running encounter (found by the provider's id, as
    /// [`Store::encounter_by_provider_ref`]), only moving forward in `order` (callbacks may
    /// arrive out of order). `false` when it changed nothing.
    pub async fn set_provider_status(
        &self,
        channel: &str,
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
        .bind(channel)
        .execute(&mut *tx.inner)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Encounters with a provider whose end was expected by `now` but never reported (no
    /// outcome yet): the provider's callback may have been lost.
    pub async fn overdue_provider_encounters(
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

    /// Moves the time a running encounter is next looked at.
    pub async fn postpone_encounter_end(&self, id: i64, ends_at: Millis) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE encounters SET ends_at = ? WHERE id = ? AND status = 'requested'")
            .bind(ends_at)
            .bind(id)
            .execute(&mut *tx.inner)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An encounter still waiting for its provider (no outcome) whose time is up at `now`,
    /// by id, inside a write transaction: `None` if it ended or was moved on meanwhile.
    pub async fn overdue_open_encounter(
        &self,
        tx: &mut Tx,
        id: i64,
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

    /// Stores a running conversation's state and when it times out.
    pub async fn save_conversation(
        &self,
        tx: &mut Tx,
        id: i64,
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

    /// The ids of the requested encounters whose end is due at `now` and known (the
    /// simulator's, and a provider's once it reported), earliest first, at most `limit`: read
    /// from the due index alone, outside any transaction. The caller claims them with
    /// [`Store::due_encounters`].
    pub async fn due_encounter_ids(&self, now: Millis, limit: u32) -> Result<Vec<i64>> {
        self.due_ids(DUE_ENCOUNTER_IDS, now, limit).await
    }

    /// Those of the encounters `ids` still due to end at `now`, in id order, read inside the
    /// caller's write transaction, without their report objects (`report` is `None`: ending
    /// keeps the stored one).
    pub async fn due_encounters(
        &self,
        tx: &mut Tx,
        ids: &[i64],
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

    /// Encounters committed but never confirmed as requested, older than `before`: after a
    /// crash the provider may or may not have received them. An encounter on one of
    /// `provider_channels` counts only once claimed (claimed before `before`): unclaimed, it
    /// is still in the provider worker's queue and certainly not sent.
    pub async fn unconfirmed_encounters(
        &self,
        before: Millis,
        provider_channels: &[&str],
        limit: u32,
    ) -> Result<Vec<EncounterRow>> {
        let channels = serde_json::to_string(provider_channels)
            .map_err(|_| StoreError::Corrupt("channels"))?;
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

    /// Ids of the encounters committed for a provider on one of `channels` and not yet
    /// claimed (the provider worker's queue), oldest first, at most `limit`.
    pub async fn unclaimed_encounter_ids(&self, channels: &[&str], limit: u32) -> Result<Vec<i64>> {
        let channels =
            serde_json::to_string(channels).map_err(|_| StoreError::Corrupt("channels"))?;
        Ok(sqlx::query_scalar(
            "SELECT id FROM encounters WHERE status = 'created' AND claimed_at IS NULL \
             AND channel IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
        )
        .bind(channels)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// An encounter by id, outside any transaction (whatever its state).
    pub async fn encounter_by_id(&self, id: i64) -> Result<Option<EncounterRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(encounter_from_row).transpose()
    }

    /// An encounter by id inside a write transaction (whatever its state).
    pub async fn encounter_for_update(&self, tx: &mut Tx, id: i64) -> Result<Option<EncounterRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&mut *tx.inner)
        .await?;
        row.as_ref().map(encounter_from_row).transpose()
    }

    /// Claims a committed encounter for its provider request (`created` and unclaimed →
    /// claimed at `now`). `false` when it was claimed, withdrawn or requested already: only
    /// one claimer ever sends it.
    pub async fn claim_encounter(&self, tx: &mut Tx, id: i64, now: Millis) -> Result<bool> {
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

    /// Removes an encounter that was never handed to its provider (`created`, and known not
    /// to have gone out: unclaimed, or refused by the provider before it was placed), so the
    /// step attempt can run again. `false` if it had moved on.
    pub async fn withdraw_encounter(&self, tx: &mut Tx, id: i64) -> Result<bool> {
        let removed = sqlx::query("DELETE FROM encounters WHERE id = ? AND status = 'created'")
            .bind(id)
            .execute(&mut *tx.inner)
            .await?
            .rows_affected();
        Ok(removed == 1)
    }

    /// Removes a sequence's encounters that were committed but not yet claimed for their
    /// provider (a cancel: they never went out). Answers their ids.
    pub async fn withdraw_unclaimed_encounters(
        &self,
        tx: &mut Tx,
        sequence_id: i64,
    ) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "DELETE FROM encounters WHERE sequence_id = ? AND status = 'created' \
             AND claimed_at IS NULL RETURNING id",
        )
        .bind(sequence_id)
        .fetch_all(&mut *tx.inner)
        .await?)
    }

    /// A sequence's encounters that have not ended, inside a write transaction.
    pub async fn open_encounters_of_sequence(
        &self,
        tx: &mut Tx,
        sequence_id: i64,
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

    /// Records a provider's id for an encounter whose placement was unknown (found by reading
    /// the provider's list back), with when it is next looked at.
    pub async fn adopt_provider_ref(
        &self,
        tx: &mut Tx,
        id: i64,
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

    /// Every organisation that has texted `phone_number` from one of `senders` (any SMS
    /// encounter, ended or not; rows without a recorded sender count for every sender), inside
    /// a write transaction: an opt-out on a sender suppresses the number for each of them.
    pub async fn sms_organizations(
        &self,
        tx: &mut Tx,
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

    /// Records the sender an SMS encounter goes out from.
    pub async fn set_encounter_sender(&self, tx: &mut Tx, id: i64, sender: &str) -> Result<()> {
        sqlx::query("UPDATE encounters SET sender = ? WHERE id = ?")
            .bind(sender)
            .bind(id)
            .execute(&mut *tx.inner)
            .await?;
        Ok(())
    }

    /// The SMS conversations running through a provider with `phone_number` that were begun
    /// from one of `senders` (or from an unrecorded sender), newest first, at most 16.
    pub async fn open_sms_conversations(
        &self,
        tx: Option<&mut Tx>,
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

    /// Records an inbound text's `MessageSid` as processed; `false` if it was already (a
    /// replay, or Twilio repeating the webhook).
    pub async fn record_inbound_message(
        &self,
        tx: &mut Tx,
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

    /// Whether an inbound text's `MessageSid` was processed already.
    pub async fn inbound_message_seen(&self, sid: &str) -> Result<bool> {
        let seen: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM twilio_inbound_messages WHERE message_sid = ?")
                .bind(sid)
                .fetch_optional(&self.pool)
                .await?;
        Ok(seen.is_some())
    }

    /// Forgets processed inbound `MessageSid`s received before `before` (bounded retention),
    /// at most `limit` at a time; answers how many.
    pub async fn forget_inbound_messages(&self, before: Millis, limit: u32) -> Result<u64> {
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

    /// When the next encounter open with a provider is due for a look (its report overdue).
    pub async fn next_open_provider_end(&self) -> Result<Option<Millis>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(ends_at) FROM encounters WHERE status = 'requested' \
             AND ends_at IS NOT NULL AND outcome IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn next_encounter_end(&self) -> Result<Option<Millis>> {
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

    /// A sequence's encounters in order, for its report.
    pub async fn sequence_encounters(&self, sequence_id: i64) -> Result<Vec<EncounterRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters WHERE sequence_id = ? ORDER BY step, attempt"
        ))
        .bind(sequence_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(encounter_from_row).collect()
    }

    /// The encounters of several sequences, in (step, attempt) order per sequence, inside a
    /// write transaction: one statement for every sequence ending in a batch.
    pub async fn encounters_of_sequences_tx(
        &self,
        tx: &mut Tx,
        sequence_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Vec<EncounterRow>>> {
        let mut by_sequence: std::collections::HashMap<i64, Vec<EncounterRow>> =
            sequence_ids.iter().map(|id| (*id, Vec::new())).collect();
        if sequence_ids.is_empty() {
            return Ok(by_sequence);
        }
        let ids =
            serde_json::to_string(sequence_ids).map_err(|_| StoreError::Corrupt("sequence ids"))?;
        let rows = sqlx::query(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters \
             WHERE sequence_id IN (SELECT value FROM json_each(?)) \
             ORDER BY sequence_id, step, attempt"
        ))
        .bind(ids)
        .fetch_all(&mut *tx.inner)
        .await?;
        for row in &rows {
            let encounter = encounter_from_row(row)?;
            by_sequence
                .entry(encounter.sequence_id)
                .or_default()
                .push(encounter);
        }
        Ok(by_sequence)
    }

    /// Contacts (encounters started) with a number since `since`, for contact caps.
    pub async fn contacts_since(
        &self,
        tx: &mut Tx,
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

    /// The delivered body of an ended sequence's report.
    pub async fn report_body(&self, org: OrgId, sequence_id: i64) -> Result<Option<Vec<u8>>> {
        let body = sqlx::query_scalar(
            "SELECT body FROM webhook_messages WHERE org_id = ? AND sequence_id = ? AND is_test = 0 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(org.0)
        .bind(sequence_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(body)
    }

    /// The latest engine time stored (sequence updates, encounter starts and ends), so that a
    /// sped-up engine clock resumes after a restart without going back in time.
    pub async fn latest_engine_time(&self) -> Result<Option<Millis>> {
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

    /// Serialises contact decisions per (organisation, number) inside the caller's
    /// transaction: upserts each pair's `contact_locks` row (sorted and deduplicated, so
    /// two transactions locking overlapping sets take them in one order). Call it before
    /// reading what decides a contact (contact caps: [`Store::contacts_since`];
    /// suppression: [`Store::is_suppressed`]). On SQLite the write transaction already holds
    /// the database's write lock; on a backend with row locks the upsert's lock is held to
    /// commit, so a second transaction for the same number waits, then reads what the first
    /// committed (its encounter, its suppression). `ON CONFLICT DO UPDATE` (not `DO
    /// NOTHING`) so that an existing row is written, and therefore locked, too.
    pub async fn lock_contacts(
        &self,
        tx: &mut Tx,
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

    pub async fn is_suppressed(&self, tx: &mut Tx, org: OrgId, phone_number: &str) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM suppressions WHERE org_id = ? AND phone_number = ?")
                .bind(org.0)
                .bind(phone_number)
                .fetch_optional(&mut *tx.inner)
                .await?;
        Ok(found.is_some())
    }

    /// [`Store::is_suppressed`] for many (organisation, number) pairs in one statement: one
    /// answer per pair, in order.
    pub async fn are_suppressed(
        &self,
        tx: &mut Tx,
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

    /// Adds a number (idempotent: an existing entry keeps its reason and time, except that a
    /// patient's opt-out turns an operator's entry into an opt-out from now, so that it is
    /// protected as one). The change is recorded in the suppression history in the same transaction, with
    /// the patient as its author for an opt-out and the system otherwise; the API names its
    /// caller through [`Store::suppress_by`].
    pub async fn suppress(
        &self,
        tx: &mut Tx,
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

    /// [`Store::suppress`] with the change's author named (`api-key:<id>`, `patient`, ...).
    pub async fn suppress_by(
        &self,
        tx: &mut Tx,
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

    /// Removes a number from the organisation's list, recording the removal (and the consent,
    /// when one is given) in the history in the same transaction. A patient's opt-out is
    /// removed only when `consent` is given; the caller validates the consent's content.
    pub async fn unsuppress(
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
        if reason == OPT_OUT_REASON {
            match consent {
                None => return Ok(Unsuppressed::ConsentRequired),
                Some(consent) if consent.obtained_at < listed_at => {
                    return Ok(Unsuppressed::ConsentPredatesOptOut);
                }
                Some(_) => {}
            }
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

    /// Every change to one number's entry on the organisation's list, oldest first (empty
    /// when the number was never listed by this organisation).
    pub async fn suppression_history(
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
                    action: row.try_get("action")?,
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

    pub async fn list_suppressions(
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
    tx: &mut Tx,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn plan(store: &Store, query: &str, binds: usize) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {query}");
        let mut query = sqlx::query(&explain);
        for _ in 0..binds {
            query = query.bind(0_i64);
        }
        query
            .fetch_all(&store.pool)
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
        .fetch_all(&store.pool)
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
