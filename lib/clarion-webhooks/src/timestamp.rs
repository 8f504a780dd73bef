//! RFC 3339 UTC timestamps with millisecond precision, the one time format of the report.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// An instant, written on the wire as RFC 3339 in UTC with milliseconds
/// (`2026-01-05T15:04:05.123Z`).
///
/// Parsing accepts any RFC 3339 offset and converts it to UTC; sub-millisecond digits are
/// dropped so that a parsed timestamp serialises back to the same text Clarion sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// A string that is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp")]
pub struct TimestampError;

impl Timestamp {
    /// Truncates `instant` to whole milliseconds.
    pub fn from_datetime(instant: DateTime<Utc>) -> Self {
        let millis = instant.timestamp_millis();
        Self(Utc.timestamp_millis_opt(millis).single().unwrap_or(instant))
    }

    /// The instant `millis` milliseconds after the Unix epoch, if representable.
    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        Utc.timestamp_millis_opt(millis).single().map(Self)
    }

    /// The instant as a chrono value.
    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        self.0.timestamp_millis()
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(instant: DateTime<Utc>) -> Self {
        Self::from_datetime(instant)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(text)
            .map(|parsed| Self::from_datetime(parsed.with_timezone(&Utc)))
            .map_err(|_| TimestampError)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 timestamp in UTC with milliseconds, e.g. 2026-01-05T15:04:05.123Z.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_in_utc_with_milliseconds() {
        let parsed: Timestamp = "2026-03-08T01:59:59.123456-05:00".parse().unwrap();
        assert_eq!(parsed.to_string(), "2026-03-08T06:59:59.123Z");
        let whole: Timestamp = "2026-03-08T06:59:59Z".parse().unwrap();
        assert_eq!(whole.to_string(), "2026-03-08T06:59:59.000Z");
    }

    #[test]
    fn non_rfc3339_text_is_rejected() {
        assert_eq!("2026-03-08 06:59".parse::<Timestamp>(), Err(TimestampError));
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
