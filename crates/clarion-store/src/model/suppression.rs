//! Suppression lists, their history and the consent that lifts an opt-out.

use std::str::FromStr;

use crate::{Millis, StoreError};

/// What a suppression-history entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuppressionAction {
    Added,
    Removed,
}

impl SuppressionAction {
    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
        }
    }
}

impl FromStr for SuppressionAction {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, StoreError> {
        match text {
            "added" => Ok(Self::Added),
            "removed" => Ok(Self::Removed),
            _ => Err(StoreError::Corrupt("unknown suppression action")),
        }
    }
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
    pub action: SuppressionAction,
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

impl Unsuppressed {
    /// The consent rule every backend applies before removing an entry listed with
    /// `reason` at `listed_at`: a patient's opt-out goes only with a consent obtained after
    /// it. `Some` is why nothing may change; `None` lets the removal go ahead.
    pub(crate) fn refused(
        reason: &str,
        listed_at: Millis,
        consent: Option<&ConsentRecord<'_>>,
    ) -> Option<Self> {
        if reason != OPT_OUT_REASON {
            return None;
        }
        match consent {
            None => Some(Self::ConsentRequired),
            Some(consent) if consent.obtained_at < listed_at => Some(Self::ConsentPredatesOptOut),
            Some(_) => None,
        }
    }
}

/// A new consent recorded with the removal of an entry.
#[derive(Debug, Clone, Copy)]
pub struct ConsentRecord<'a> {
    /// When the consent was obtained; for an opt-out it must not be earlier than the opt-out.
    pub obtained_at: Millis,
    /// The consent as the API took it (who, when, how), kept in the history.
    pub detail: &'a serde_json::Value,
}
