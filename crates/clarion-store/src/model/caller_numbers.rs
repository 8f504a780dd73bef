//! Caller numbers: an organisation's own numbers to call and text from
//! (`/v1/caller-numbers`), and what choosing one at a claim reads.

use clarion_engine::Channel;

use crate::{CallerNumberId, Millis, OrgId};

/// One of an organisation's caller numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerNumber {
    pub id: CallerNumberId,
    pub org_id: OrgId,
    /// Calls (through Vapi) or texts (through Twilio).
    pub channel: Channel,
    /// E.164: the caller id a call shows, the `From` of a text.
    pub number: String,
    /// The provider's id for the number: the Vapi phoneNumberId of a call number; `None` for
    /// a text number (the number is the Twilio `From`).
    pub provider_id: Option<String>,
    /// At most this many contacts from the number per rolling 24 hours; `None`: no cap.
    pub daily_cap: Option<u32>,
    /// Whether it is chosen at all.
    pub enabled: bool,
    /// When it was last chosen (the round robin's order); `None` if never.
    pub last_chosen_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A new caller number (`Store::create_caller_number`); the caller validates the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewCallerNumber<'a> {
    pub channel: Channel,
    pub number: &'a str,
    pub provider_id: Option<&'a str>,
    pub daily_cap: Option<u32>,
    pub enabled: bool,
}

/// A change to a caller number: `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerNumberPatch {
    pub provider_id: Option<Option<String>>,
    pub daily_cap: Option<Option<u32>>,
    pub enabled: Option<bool>,
}

/// An enabled caller number as a claim sees it: with the times of its contacts since the
/// start of the cap's window, oldest first (read only when it has a cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerNumberUses {
    pub number: CallerNumber,
    pub uses: Vec<Millis>,
}

/// A number the deployment's operator allowed an organisation to call or text from
/// (`clarion org allow-caller-number`, never the tenant API). Only such a number is accepted
/// as the organisation's caller number, and chosen at a claim. A number belongs to one
/// organisation only, and so does a provider id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedCallerNumber {
    pub org_id: OrgId,
    pub channel: Channel,
    /// E.164.
    pub number: String,
    /// The provider's id for the number: the Vapi phoneNumberId of a call number (always
    /// set); for a text number, optional (set, the organisation's caller number must carry
    /// the same).
    pub provider_id: Option<String>,
    pub added_at: Millis,
}
