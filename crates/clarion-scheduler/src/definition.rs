//! Templates and contacts as stored, and their validation from API input.
//!
//! Validation errors name the field at fault as a JSON path (`steps[1].delay`) and never echo
//! the submitted value: phone numbers and names are PHI.

use std::time::Duration;

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
    /// `call` or `sms`.
    pub channel: String,
    pub assistant_id: i64,
    pub delay_ms: u64,
    pub max_attempts: u32,
    pub retry_delay_ms: u64,
}

/// A local-time window `[start, end)`, `HH:MM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoursDefinition {
    pub start: String,
    pub end: String,
}

/// The contact of a sequence, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactInfo {
    pub phone_number: String,
    pub time_zone: String,
    pub name: Option<String>,
    pub external_id: Option<String>,
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
    humantime::parse_duration(text.trim()).map_err(|_| {
        invalid(
            field,
            "expected a duration such as \"30m\", \"4h\" or \"2d\"",
        )
    })
}

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
