//! What a sequence is told to do: the template's steps and rules, fixed for one contact.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{Datelike, NaiveDateTime, NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::outcome::StopReason;

/// How a step reaches the contact. Clarion's one channel type: the engine's plans, the
/// simulator and the providers' hand-off all use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    /// An AI phone call.
    Call,
    /// An AI SMS conversation.
    Sms,
}

impl Channel {
    /// Both channels.
    pub const ALL: [Channel; 2] = [Channel::Call, Channel::Sms];

    /// The wire name, also used in human-readable descriptions.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Call => "call",
            Channel::Sms => "sms",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|channel| channel.as_str() == text)
            .ok_or_else(|| ParseError::new("channel", text, &["call", "sms"]))
    }
}

/// A string that names no channel or no outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    message: String,
}

impl ParseError {
    pub(crate) fn new(what: &str, input: &str, expected: &[&str]) -> Self {
        Self {
            message: format!(
                "unknown {what} `{input}`; expected one of: {}",
                expected.join(", ")
            ),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

/// One step of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    /// Call or SMS.
    pub channel: Channel,
    /// The assistant that handles the encounter.
    pub assistant_id: i64,
    /// Wait before this step, counted from the end of the previous step's last encounter (for
    /// step 1, from enrollment).
    pub delay: Duration,
    /// How many times the step may be tried (at least 1; a 0 behaves as 1). Only calls are
    /// retried, and only after no-answer, busy or voicemail.
    pub max_attempts: u32,
    /// Wait between the end of a failed attempt and the next one.
    pub retry_delay: Duration,
    /// Whether a call that reached voicemail is retried (like no-answer and busy).
    pub retry_on_voicemail: bool,
    /// After the step's last voicemail, the next step, when it is an SMS, is due at once
    /// instead of after its `delay` (a text right after the voicemail).
    pub sms_after_voicemail: bool,
    /// After the step's last voicemail, a fixed text goes to the contact (an SMS encounter of
    /// this step, keyed by the attempt after the call's last one, with this step's
    /// assistant); the sequence then goes on as the call's end would have taken it. The
    /// driver knows the text; the engine only when to send it.
    pub text_after_voicemail: bool,
}

/// The window of local time in which the contact may be called or texted: `[start, end)`.
///
/// Validation at the API refuses windows with `start >= end` (overnight windows are not
/// offered), so the engine is written for `start < end`. If one slips through anyway it is
/// read as wrapping midnight rather than panicking or contacting at any hour; see
/// [`CallingHours::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingHours {
    /// First allowed local time (inclusive).
    pub start: NaiveTime,
    /// First local time that is no longer allowed (exclusive).
    pub end: NaiveTime,
}

impl CallingHours {
    /// The API's default window, 08:00–21:00.
    pub const DEFAULT: CallingHours = CallingHours {
        start: hm(8, 0),
        end: hm(21, 0),
    };

    /// Whether `local` (a wall-clock time in the contact's zone) falls inside the window.
    pub fn allows(&self, local: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= local && local < self.end
        } else {
            // Not produced by validated input; wrapping keeps an invalid window fail-safe
            // (some hours allowed, deterministic) instead of panicking.
            local >= self.start || local < self.end
        }
    }
}

/// A set of weekdays (local to the contact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Weekdays(u8);

impl Weekdays {
    /// Every day of the week.
    pub const ALL: Weekdays = Weekdays(0b111_1111);
    /// No day.
    pub const NONE: Weekdays = Weekdays(0);

    /// The set with `day` added.
    pub const fn with(self, day: Weekday) -> Weekdays {
        Weekdays(self.0 | 1 << day.num_days_from_monday())
    }

    /// Whether `day` is in the set.
    pub const fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }
}

impl FromIterator<Weekday> for Weekdays {
    fn from_iter<I: IntoIterator<Item = Weekday>>(days: I) -> Self {
        days.into_iter().fold(Weekdays::NONE, Weekdays::with)
    }
}

/// A calling rule besides the template's window: a jurisdiction's statute (a US state's
/// calling hours, its Sunday ban) or an organisation's own policy. Read, like the template's
/// window, in the contact's zone. The strictest of everything that applies wins: a contact is
/// allowed at a local instant only if the template's window and every rule allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallingRule {
    /// Names the rule in the deferrals it causes (e.g. `US-FL`).
    pub name: String,
    /// The local weekdays the rule governs; on other days it allows anything.
    pub weekdays: Weekdays,
    /// The window on those days; `None`: no contact at all on those days.
    pub hours: Option<CallingHours>,
}

impl CallingRule {
    /// Whether the rule allows contact at the local date and time `local`.
    pub fn allows(&self, local: NaiveDateTime) -> bool {
        if !self.weekdays.contains(local.weekday()) {
            return true;
        }
        self.hours.is_some_and(|hours| hours.allows(local.time()))
    }
}

const fn hm(hour: u32, min: u32) -> NaiveTime {
    match NaiveTime::from_hms_opt(hour, min, 0) {
        Some(t) => t,
        None => panic!("invalid constant time"),
    }
}

/// Everything the engine needs to know about the template and the contact, resolved by the
/// driver before calling [`step`](crate::step). The driver must pass the same plan for the
/// life of a sequence (snapshot the template at enrollment), since the state refers to steps
/// by index.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The steps, in order.
    pub steps: Vec<StepSpec>,
    /// Outcomes that end the sequence early. Opt-out always ends it, listed or not.
    pub stop_on: Vec<StopReason>,
    /// `None` means no restriction.
    pub calling_hours: Option<CallingHours>,
    /// The calling rules that apply to the contact (their state's, the organisation's), on
    /// top of `calling_hours`. Resolved by the driver; empty when none apply.
    pub rules: Vec<CallingRule>,
    /// The contact's time zone; calling hours are read in it.
    pub time_zone: Tz,
    /// How long an SMS conversation waits for a reply before it ends as `no-reply`. The
    /// encounter producer enforces it; the engine only carries it so that the plan is the one
    /// place a driver reads template settings from.
    pub sms_timeout: Duration,
}
