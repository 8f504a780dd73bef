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
    /// The pre-contact eligibility hook's settings: JSON validated by the API (`url`,
    /// `timeout_ms`, `on_error`); `None`: no hook. Its secret is read only through
    /// `Store::eligibility_hook`.
    pub eligibility_hook: Option<String>,
    pub created_at: Millis,
}

/// An organisation's eligibility hook as the scheduler uses it.
#[derive(Clone, PartialEq, Eq)]
pub struct EligibilityHookRow {
    /// The settings (JSON, as in [`Organization::eligibility_hook`]).
    pub settings: String,
    /// The signing secret (`whsec_…`), opened; `None` when it does not open (a key the ring
    /// lacks, a damaged row): the hook then cannot be asked.
    pub secret: Option<String>,
}

impl std::fmt::Debug for EligibilityHookRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EligibilityHookRow")
            .field("settings", &self.settings)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A change to an organisation's settings: `None` leaves a setting as it is; `Some(None)`
/// clears it (back to the default). `Debug` hides the hook's new secret.
#[derive(Clone, Default)]
pub struct OrganizationPatch {
    pub max_contacts_per_day: Option<Option<u32>>,
    pub max_contacts_per_week: Option<Option<u32>>,
    pub sms_help_text: Option<Option<String>>,
    pub calling_rules: Option<Option<String>>,
    pub retention_days: Option<Option<u32>>,
    /// The eligibility hook's settings; `Some(None)` removes the hook and its secret.
    pub eligibility_hook: Option<Option<String>>,
    /// A new signing secret for the hook (sealed by the store), with a hook set now or
    /// already: its first secret, or a rotation. `None` keeps the stored one.
    pub eligibility_hook_secret: Option<String>,
    /// Whether `eligibility_hook_secret` replaces a stored secret (a rotation). Otherwise it
    /// is the hook's first and is stored only where there is none yet, so of two first
    /// settings racing, the second keeps the first's secret (the caller reads back which
    /// one is stored before showing it).
    pub eligibility_hook_secret_rotates: bool,
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

impl std::fmt::Debug for OrganizationPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrganizationPatch")
            .field("max_contacts_per_day", &self.max_contacts_per_day)
            .field("max_contacts_per_week", &self.max_contacts_per_week)
            .field("sms_help_text", &self.sms_help_text)
            .field("calling_rules", &self.calling_rules)
            .field("retention_days", &self.retention_days)
            .field("eligibility_hook", &self.eligibility_hook)
            .field(
                "eligibility_hook_secret",
                &self.eligibility_hook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "eligibility_hook_secret_rotates",
                &self.eligibility_hook_secret_rotates,
            )
            .finish()
    }
}
