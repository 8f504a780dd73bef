//! Organisations (tenants) and their settings.

use crate::api_key::NewApiKey;
use crate::{ApiKeyId, Millis, OrgId};

/// An organisation and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    /// Contacts a number may get in any rolling 24 hours (`None`: the deployment default;
    /// `Some(0)`: no cap).
    pub max_contacts_per_day: Option<u32>,
    /// Same, in any rolling 7 days.
    pub max_contacts_per_week: Option<u32>,
    /// The reply to an SMS `HELP`.
    pub sms_help_text: Option<String>,
    /// The organisation's own calling rules: a JSON array validated by the API (the
    /// scheduler's `calling_rules::RuleDefinition`s).
    pub calling_rules: Option<String>,
    /// Days after its end that an ended sequence's PHI is purged (`None`: kept forever).
    pub retention_days: Option<u32>,
    pub created_at: Millis,
}

/// A change to an organisation's settings: `None` leaves a setting as it is; `Some(None)`
/// clears it (back to the default).
#[derive(Debug, Clone, Default)]
pub struct OrganizationPatch {
    pub max_contacts_per_day: Option<Option<u32>>,
    pub max_contacts_per_week: Option<Option<u32>>,
    pub sms_help_text: Option<Option<String>>,
    pub calling_rules: Option<Option<String>>,
    pub retention_days: Option<Option<u32>>,
}

/// A new organisation and its first API key, which is shown only now.
#[derive(Debug, Clone)]
pub struct CreatedOrganization {
    pub id: OrgId,
    pub api_key: NewApiKey,
}

/// Who a presented API key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatedKey {
    pub org_id: OrgId,
    /// The key's own id: changes that keep an audit trail (the suppression history) name it.
    pub key_id: ApiKeyId,
}
