//! Lenient field deserializers for provider payloads.
//!
//! Providers change their payloads without notice (Twilio says so outright, Vapi's schema grows
//! every month), and some fields are typed loosely (Twilio sends counts as strings, Vapi's
//! timestamps were once strings and are now numbers). Fields that Clarion only reads use these
//! helpers: a value of an unexpected type becomes `None` instead of failing the whole payload.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A string; numbers and booleans are kept as their JSON text; anything else is `None`.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(text) => Some(text),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    })
}

/// A number, or a string holding one; anything else is `None`.
pub(crate) fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    })
}

/// An integer, or a string holding one; anything else is `None`.
pub(crate) fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    })
}

/// A `u16` (an HTTP status), or a string holding one; anything else is `None`.
pub(crate) fn opt_u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(opt_i64(d)?.and_then(|n| u16::try_from(n).ok()))
}
