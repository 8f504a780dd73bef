//! What the operator dashboard stores and asks for: sequence filters, sign-in sessions and the
//! PHI access log.

use crate::{ApiKeyId, Millis, OrgId, SequenceId, SequenceStatus, TemplateId};

/// Which of an organisation's sequences a list shows. Every field narrows; the default is all
/// of them, oldest first (the API's order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceFilter {
    pub status: Option<SequenceStatus>,
    pub template_id: Option<TemplateId>,
    /// Enrolled at or after this instant.
    pub created_from: Option<Millis>,
    /// Enrolled before this instant.
    pub created_before: Option<Millis>,
    /// The contact's number, exactly (E.164).
    pub phone_number: Option<String>,
    /// The contact's external id, exactly.
    pub external_id: Option<String>,
    /// Newest first: the cursor then continues below the last id instead of above it.
    pub newest_first: bool,
}

/// A dashboard session to start: the token itself never reaches the store, only its SHA-256.
#[derive(Debug, Clone, Copy)]
pub struct NewUiSession<'a> {
    pub org_id: OrgId,
    /// The API key that signed in (the session ends when the key is revoked).
    pub api_key_id: ApiKeyId,
    pub token_hash: &'a [u8; 32],
    pub now: Millis,
    pub expires_at: Millis,
}

/// A live dashboard session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiSession {
    pub id: i64,
    pub org_id: OrgId,
    pub api_key_id: ApiKeyId,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub expires_at: Millis,
}

/// How a session is found and kept alive by one request.
#[derive(Debug, Clone, Copy)]
pub struct SessionTouch<'a> {
    pub token_hash: &'a [u8; 32],
    pub now: Millis,
    /// The new idle expiry, when the session is still live.
    pub expires_at: Millis,
    /// Sessions created before this instant are over, however active (absolute lifetime).
    pub created_after: Millis,
}

/// One access to PHI to record.
#[derive(Debug, Clone, Copy)]
pub struct NewAccessEntry<'a> {
    pub org_id: OrgId,
    pub at: Millis,
    /// Who: `ui-session:<id> api-key:<id>` or `api-key:<id>` (public ids).
    pub actor: &'a str,
    /// What kind of access: `sequence.viewed`, `sequences.exported`, `encounters.exported`.
    pub action: &'a str,
    pub sequence_id: Option<SequenceId>,
    /// What was accessed, without PHI (the filters of an export, a count).
    pub detail: &'a str,
}

/// One recorded access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    pub id: i64,
    pub org_id: OrgId,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub sequence_id: Option<SequenceId>,
    pub detail: String,
}
