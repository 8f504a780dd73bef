//! Assistants, versioned templates, sequences and their history.

use clarion_engine::{Channel, SequenceStatus};

use crate::{
    AssistantId, Millis, OrgId, SequenceEventId, SequenceId, TemplateId, TemplateVersionId,
};

/// An assistant.
#[derive(Debug, Clone, PartialEq)]
pub struct Assistant {
    pub id: AssistantId,
    pub org_id: OrgId,
    pub name: String,
    pub channel: Channel,
    pub config: serde_json::Value,
    pub custom_fields: serde_json::Value,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A template at one version.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateVersion {
    pub template_id: TemplateId,
    pub org_id: OrgId,
    pub name: String,
    pub version: i64,
    pub version_id: TemplateVersionId,
    pub definition: serde_json::Value,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A sequence row. `Debug` shows ids, status and times only: the number, contact,
/// variables and script are PHI, and a row printed into a log must not carry them.
#[derive(Clone, PartialEq)]
pub struct SequenceRow {
    pub id: SequenceId,
    pub org_id: OrgId,
    pub template_id: TemplateId,
    pub template_version_id: TemplateVersionId,
    pub phone_number: String,
    pub contact: serde_json::Value,
    pub variables: serde_json::Value,
    pub simulation: Option<serde_json::Value>,
    pub status: SequenceStatus,
    /// The engine's state, JSON.
    pub state: String,
    pub next_wake_at: Option<Millis>,
    pub outcome_description: Option<String>,
    pub created_at: Millis,
    pub last_updated: Millis,
    pub ended_at: Option<Millis>,
    /// When the sequence's PHI was purged (its retention period passed) or erased (its
    /// contact's erasure); `None` while it is kept.
    pub phi_purged_at: Option<Millis>,
}

impl std::fmt::Debug for SequenceRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequenceRow")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("template_version_id", &self.template_version_id)
            .field("status", &self.status)
            .field("next_wake_at", &self.next_wake_at)
            .field("created_at", &self.created_at)
            .field("last_updated", &self.last_updated)
            .field("ended_at", &self.ended_at)
            .field("phi_purged_at", &self.phi_purged_at)
            .finish_non_exhaustive()
    }
}

/// A new sequence. `Debug` leaves out the number, contact, variables and script (PHI).
#[derive(Clone)]
pub struct NewSequence<'a> {
    pub org_id: OrgId,
    pub template_id: TemplateId,
    pub template_version_id: TemplateVersionId,
    pub phone_number: &'a str,
    pub contact: &'a serde_json::Value,
    pub variables: &'a serde_json::Value,
    pub simulation: Option<&'a serde_json::Value>,
    pub status: SequenceStatus,
    pub state: &'a str,
    pub next_wake_at: Option<Millis>,
    pub allow_concurrent: bool,
    pub idempotency_key: Option<&'a str>,
    /// What the request that used `idempotency_key` was (a hash of its canonical form): a
    /// later request with the key must match it to be answered with this sequence.
    pub idempotency_fingerprint: Option<&'a str>,
    pub now: Millis,
}

impl std::fmt::Debug for NewSequence<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSequence")
            .field("org_id", &self.org_id)
            .field("template_version_id", &self.template_version_id)
            .field("status", &self.status)
            .field("next_wake_at", &self.next_wake_at)
            .field("allow_concurrent", &self.allow_concurrent)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// The sequence an idempotency key created, and the fingerprint of the request that created
/// it (`None` for sequences enrolled before fingerprints were kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedSequence {
    pub id: SequenceId,
    pub fingerprint: Option<String>,
}

impl KeyedSequence {
    /// Whether a request with `fingerprint` is a replay of the one that used the key. A
    /// sequence stored without a fingerprint cannot be compared and is taken as a replay, as
    /// before fingerprints existed.
    pub fn replayed_by(&self, fingerprint: Option<&str>) -> bool {
        match (&self.fingerprint, fingerprint) {
            (Some(stored), Some(presented)) => stored == presented,
            _ => true,
        }
    }

    /// What inserting a request with `fingerprint` under this key answers.
    pub fn insert_error(&self, fingerprint: Option<&str>) -> InsertSequenceError {
        if self.replayed_by(fingerprint) {
            InsertSequenceError::SameIdempotencyKey(self.id)
        } else {
            InsertSequenceError::IdempotencyKeyReused(self.id)
        }
    }
}

/// Why a sequence could not be inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertSequenceError {
    /// The idempotency key was used before: the earlier sequence's id.
    SameIdempotencyKey(SequenceId),
    /// The idempotency key was used before by a different request (another fingerprint): the
    /// earlier sequence's id, which this request must not be answered with.
    IdempotencyKeyReused(SequenceId),
    /// The number is already in a running sequence of this template.
    AlreadyRunning,
}

/// The state to write back after the engine moved a sequence.
#[derive(Debug, Clone)]
pub struct SequenceUpdate<'a> {
    pub status: SequenceStatus,
    pub state: &'a str,
    pub next_wake_at: Option<Millis>,
    pub outcome_description: Option<&'a str>,
    pub now: Millis,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceEvent {
    pub id: SequenceEventId,
    pub at: Millis,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// A history entry to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSequenceEvent {
    pub sequence_id: SequenceId,
    pub at: Millis,
    pub kind: String,
    pub detail: serde_json::Value,
}
