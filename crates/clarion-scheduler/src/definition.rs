//! Templates and contacts as stored, and their validation from API input.
//!
//! Validation errors name the field at fault as a JSON path (`steps[1].delay`) and never echo
//! the submitted value: phone numbers and names are PHI.

use std::time::Duration;

use clarion_engine::Channel;
use serde::{Deserialize, Serialize};

/// The stop reasons a template may list.
pub const STOP_REASONS: &[&str] = &["resolved", "opt-out", "declined", "escalated"];
/// Calling hours when a template does not say: 08:00–21:00 in the contact's zone.
pub const DEFAULT_CALLING_HOURS: (&str, &str) = ("08:00", "21:00");
/// How long an SMS conversation waits for a reply when the template does not say.
pub const DEFAULT_SMS_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Most steps in one template.
pub const MAX_STEPS: usize = 20;
/// Most attempts of one step.
pub const MAX_ATTEMPTS: u32 = 10;

/// Most variables in one enrollment.
pub const MAX_VARIABLES: usize = 64;
/// The longest variable name.
pub const MAX_VARIABLE_NAME_CHARS: usize = 64;
/// The longest variable value: a string's characters, or any other value's JSON text.
/// Dates, times, places, names and clinic details fit with room to spare.
pub const MAX_VARIABLE_VALUE_CHARS: usize = 1_024;
/// The largest `variables` object, as JSON.
pub const MAX_VARIABLES_JSON_BYTES: usize = 16 * 1024;

/// A template version's definition, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDefinition {
    pub steps: Vec<StepDefinition>,
    pub stop_on: Vec<String>,
    pub calling_hours: Option<HoursDefinition>,
    pub sms_timeout_ms: u64,
}

/// One step, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDefinition {
    pub channel: Channel,
    pub assistant_id: i64,
    pub delay_ms: u64,
    pub max_attempts: u32,
    pub retry_delay_ms: u64,
    /// A call step's voicemail policy; the default is the behaviour before policies existed.
    #[serde(default, skip_serializing_if = "VoicemailPolicy::is_default")]
    pub voicemail: VoicemailPolicy,
}

/// What a call step does when it reaches voicemail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoicemailPolicy {
    /// Whether a voicemail is retried like no-answer and busy (within `max_attempts`).
    pub retry: bool,
    /// `None`: the assistant's own behaviour (its `voicemail_message`, if any, is left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<VoicemailActionDefinition>,
    /// After the step's last voicemail, the next step (an SMS) starts at once instead of
    /// after its delay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sms_follow_up: bool,
    /// After the step's last voicemail, this fixed text goes to the contact by SMS (an
    /// encounter of this step); then the sequence goes on as the call's end would have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_text: Option<String>,
}

impl Default for VoicemailPolicy {
    fn default() -> Self {
        Self {
            retry: true,
            action: None,
            sms_follow_up: false,
            sms_text: None,
        }
    }
}

impl VoicemailPolicy {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl TemplateDefinition {
    /// The fixed text sent after the voicemail of step `step` (0-based), when `channel` (an
    /// encounter's) says the encounter is that text: an SMS encounter of a call step is
    /// always the step's text after its voicemail.
    pub fn voicemail_text(&self, step: i64, channel: Channel) -> Option<&str> {
        let spec = usize::try_from(step).ok().and_then(|i| self.steps.get(i))?;
        (spec.channel == Channel::Call && channel == Channel::Sms)
            .then_some(spec.voicemail.sms_text.as_deref())
            .flatten()
    }
}

/// Leave a message (this one) or hang up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "message", rename_all = "kebab-case")]
pub enum VoicemailActionDefinition {
    LeaveMessage(String),
    HangUp,
}

/// A local-time window `[start, end)`, `HH:MM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoursDefinition {
    pub start: String,
    pub end: String,
}

/// The contact of a sequence, as stored. `Debug` shows the zone and state only: the number,
/// name and external id are PHI.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactInfo {
    pub phone_number: String,
    pub time_zone: String,
    pub name: Option<String>,
    pub external_id: Option<String>,
    /// The contact's US state (two-letter code), which picks the state's calling rules;
    /// absent: the state of the number's area code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl std::fmt::Debug for ContactInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactInfo")
            .field("time_zone", &self.time_zone)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A validation failure: the field (JSON path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Parses a humantime duration (`"90s"`, `"1h 30m"`, `"2d"`).
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, Invalid> {
    let duration = humantime::parse_duration(text.trim()).map_err(|_| {
        invalid(
            field,
            "expected a duration such as \"30m\", \"4h\" or \"2d\"",
        )
    })?;
    // Bounded so that every instant computed from it stays a plain RFC 3339 timestamp (a
    // four-digit year), whatever the sum of a template's delays.
    if duration > MAX_DURATION {
        return Err(invalid(field, "at most 366 days (\"366d\")"));
    }
    Ok(duration)
}

/// The longest delay, retry delay or time-out a template may set.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// Formats a duration the way the API writes it.
pub fn format_duration(millis: u64) -> String {
    humantime::format_duration(Duration::from_millis(millis)).to_string()
}

/// Checks an `HH:MM` time of day.
pub fn parse_time_of_day(field: &str, text: &str) -> Result<chrono::NaiveTime, Invalid> {
    chrono::NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| invalid(field, "expected a time of day as HH:MM"))
}

/// Checks an E.164 phone number: `+`, a non-zero digit, at most 15 digits in all.
pub fn validate_e164(field: &str, number: &str) -> Result<(), Invalid> {
    let digits = number.strip_prefix('+').unwrap_or("");
    let valid = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(())
    } else {
        Err(invalid(
            field,
            "expected an E.164 phone number such as +15555550123",
        ))
    }
}

/// Checks an IANA time zone name.
pub fn parse_time_zone(field: &str, name: &str) -> Result<chrono_tz::Tz, Invalid> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| invalid(field, "expected an IANA time zone such as America/New_York"))
}

/// Checks an enrollment's `variables` against the limits above. Variables are copied into
/// SMS texts wherever a script says `{{name}}`, so their size is capped before anything is
/// stored. The error names the variable (`variables.appointment_date`) when its name is a
/// plain identifier, never its value.
pub fn validate_variables(
    field: &str,
    variables: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), Invalid> {
    if variables.len() > MAX_VARIABLES {
        return Err(invalid(field, "at most 64 variables"));
    }
    for (name, value) in variables {
        let plain = !name.is_empty()
            && name.chars().count() <= MAX_VARIABLE_NAME_CHARS
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let at = if plain {
            format!("{field}.{name}")
        } else {
            field.to_owned()
        };
        if name.chars().count() > MAX_VARIABLE_NAME_CHARS {
            return Err(invalid(at, "variable names are at most 64 characters"));
        }
        let size = match value {
            serde_json::Value::String(text) => text.chars().count(),
            other => other.to_string().len(),
        };
        if size > MAX_VARIABLE_VALUE_CHARS {
            return Err(invalid(at, "a variable's value is at most 1024 characters"));
        }
    }
    let total = serde_json::to_string(variables).map_or(usize::MAX, |text| text.len());
    if total > MAX_VARIABLES_JSON_BYTES {
        return Err(invalid(
            field,
            "the variables are at most 16 KiB of JSON in all",
        ));
    }
    Ok(())
}

impl TemplateDefinition {
    /// The calling hours in force (`None` = no restriction).
    pub fn hours(&self) -> Option<(chrono::NaiveTime, chrono::NaiveTime)> {
        let hours = self.calling_hours.as_ref()?;
        Some((
            parse_time_of_day("calling_hours.start", &hours.start).ok()?,
            parse_time_of_day("calling_hours.end", &hours.end).ok()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A contact printed into a log shows its zone and state, never who it is.
    #[test]
    fn a_contact_prints_without_its_phi() {
        let contact = ContactInfo {
            phone_number: "+18085550123".to_owned(),
            time_zone: "Pacific/Honolulu".to_owned(),
            name: Some("Ana Lopez".to_owned()),
            external_id: Some("MRN-20000".to_owned()),
            state: Some("HI".to_owned()),
        };
        let printed = format!("{contact:?}");
        for phi in ["+18085550123", "Ana Lopez", "MRN-20000"] {
            assert!(!printed.contains(phi), "{printed}");
        }
        assert!(printed.contains("Pacific/Honolulu"), "{printed}");
        let request = crate::scheduler::EnrollRequest {
            template_id: clarion_store::TemplateId(1),
            contact,
            variables: serde_json::Map::from_iter([(
                "diagnosis".to_owned(),
                serde_json::Value::from("knee surgery"),
            )]),
            simulation: None,
            idempotency_key: None,
            allow_concurrent: false,
        };
        let printed = format!("{request:?}");
        for phi in ["+18085550123", "Ana Lopez", "knee surgery", "diagnosis"] {
            assert!(!printed.contains(phi), "{printed}");
        }
    }

    #[test]
    fn e164_numbers_are_checked() {
        assert!(validate_e164("p", "+15555550123").is_ok());
        assert!(validate_e164("p", "+442079460958").is_ok());
        for bad in [
            "15555550123",
            "+1555",
            "+1-555-555-0123",
            "+05555550123",
            "+1234567890123456",
            "",
        ] {
            assert!(validate_e164("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn variables_are_capped_without_echoing_values() {
        use serde_json::{Map, Value, json};
        let of = |pairs: Vec<(String, Value)>| pairs.into_iter().collect::<Map<_, _>>();
        let ok = of(vec![
            ("appointment_date".into(), json!("May 2")),
            ("n".into(), json!(3)),
            (
                "at_limit".into(),
                json!("é".repeat(MAX_VARIABLE_VALUE_CHARS)),
            ),
        ]);
        assert_eq!(validate_variables("variables", &ok), Ok(()));
        let big = of(vec![("x".into(), json!("v".repeat(100_000)))]);
        let error = validate_variables("variables", &big).unwrap_err();
        assert_eq!(error.field, "variables.x");
        assert!(!error.to_string().contains("vvv"));
        let nested = of(vec![("list".into(), json!(vec![1; 600]))]);
        assert_eq!(
            validate_variables("items[3].variables", &nested)
                .unwrap_err()
                .field,
            "items[3].variables.list"
        );
        let many = of((0..=MAX_VARIABLES)
            .map(|i| (format!("v{i}"), json!(i)))
            .collect());
        assert_eq!(
            validate_variables("variables", &many).unwrap_err().field,
            "variables"
        );
        let long_name = of(vec![("k".repeat(65), json!(1))]);
        assert_eq!(
            validate_variables("variables", &long_name)
                .unwrap_err()
                .field,
            "variables"
        );
        let total = of((0..20)
            .map(|i| (format!("v{i}"), json!("t".repeat(1_000))))
            .collect());
        let error = validate_variables("variables", &total).unwrap_err();
        assert_eq!(error.field, "variables");
        assert!(error.message.contains("16 KiB"));
    }

    #[test]
    fn durations_times_and_zones_are_parsed() {
        assert_eq!(
            parse_duration("d", "1h 30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert!(parse_duration("d", "soon").is_err());
        assert!(parse_time_of_day("t", "08:00").is_ok());
        assert!(parse_time_of_day("t", "8am").is_err());
        assert!(parse_time_zone("z", "Pacific/Honolulu").is_ok());
        assert_eq!(parse_time_zone("z", "Mars/Olympus").unwrap_err().field, "z");
    }
}
