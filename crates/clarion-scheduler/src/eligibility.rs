//! An organisation's eligibility hook settings, as stored (`organizations.eligibility_hook`,
//! JSON) and as `PATCH /v1/organization` takes them: `{"url", "timeout_ms", "on_error"}`.
//! The URL's SSRF check is the API's (`validate_target`) at configuration and the client's
//! at every request.

use serde::{Deserialize, Serialize};

/// How long Clarion waits for the hook's answer when the organisation names no timeout.
pub const DEFAULT_TIMEOUT_MS: u32 = 3_000;
/// The shortest and longest timeouts accepted.
pub const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u32> = 100..=10_000;

/// What an error (timeout, connection error, non-2xx, bad answer, bad signature) counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Not eligible: the step is skipped (the default: a patient who already confirmed is
    /// not called because the hook was down).
    #[default]
    NotEligible,
    /// Eligible: the contact goes ahead as if there were no hook.
    Eligible,
}

/// An organisation's eligibility hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSettings {
    /// Where the checks are POSTed.
    pub url: String,
    /// How long to wait for the whole exchange.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// What an error counts as.
    #[serde(default)]
    pub on_error: OnError,
}

fn default_timeout_ms() -> u32 {
    DEFAULT_TIMEOUT_MS
}

impl HookSettings {
    /// The stored settings; `None` when absent or unreadable (a hook that cannot be read is
    /// treated by the caller as a hook whose every check errs).
    pub fn stored(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }

    /// The timeout as a duration.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.timeout_ms))
    }
}
