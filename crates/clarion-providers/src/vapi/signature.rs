//! Vapi's HMAC credential (providers.md §1.6): Vapi signs each server message with a shared
//! `secretKey`, HMAC-SHA256 over `{timestamp}.{body}` (the default `payloadFormat`), hex
//! encoded (the default `signatureEncoding`), in `x-signature` (the default
//! `signatureHeader`), the timestamp in `x-timestamp` (the default `timestampHeader`).
//!
//! Unlike the static Bearer secret, the signature binds the body and the time: a captured
//! callback cannot be altered, and outside the tolerance window it cannot be replayed. (Inside
//! the window a replay of the same body is harmless: an end-of-call report for an encounter
//! that already ended is ignored.)
//!
//! Vapi's documentation does not say in which unit the timestamp is; both Unix seconds and
//! Unix milliseconds are accepted (a value from 10^12 on is read as milliseconds), and the
//! signature covers the header's exact text either way.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Vapi's default `signatureHeader`.
pub const SIGNATURE_HEADER: &str = "x-signature";
/// Vapi's default `timestampHeader`.
pub const TIMESTAMP_HEADER: &str = "x-timestamp";

/// Why a callback's HMAC was refused. Messages carry no secret and no signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HmacError {
    /// No signature or no timestamp header.
    #[error("the signature or timestamp header is missing")]
    Missing,
    /// The timestamp is not an integer.
    #[error("the timestamp is not a Unix time")]
    BadTimestamp,
    /// The timestamp is further from now than the window allows (a replay, or a clock off).
    #[error("the timestamp is outside the accepted window")]
    Stale,
    /// The signature is not the HMAC of this timestamp and body under the secret.
    #[error("the signature does not match")]
    Mismatch,
}

/// A shared HMAC secret, redacted in `Debug`.
#[derive(Clone)]
pub struct HmacSecret(Vec<u8>);

impl HmacSecret {
    /// The secret's bytes as configured (Vapi's `secretKey`).
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }
}

impl std::fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacSecret(<redacted>)")
    }
}

/// The hex signature Vapi sends for `body` at `timestamp` (the header's text).
pub fn sign(secret: &HmacSecret, timestamp: &str, body: &[u8]) -> String {
    let mut mac = secret.mac();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a callback: the timestamp within `window_secs` of `now_millis` (either side), and
/// the signature over `{timestamp}.{body}`, compared in constant time.
pub fn verify(
    secret: &HmacSecret,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now_millis: i64,
    window_secs: u64,
) -> Result<(), HmacError> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(HmacError::Missing);
    };
    let value: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| HmacError::BadTimestamp)?;
    let sent_millis = if value >= 1_000_000_000_000 {
        value
    } else {
        value.saturating_mul(1000)
    };
    let window_millis = window_secs.saturating_mul(1000);
    // `abs_diff`: the distance between any two i64 fits a u64, where a saturated difference
    // of i64::MIN has no absolute value (a panic for a far-off timestamp against a clock at or
    // before 1970, found by the property tests).
    if now_millis.abs_diff(sent_millis) > window_millis {
        return Err(HmacError::Stale);
    }
    let tag = decode_hex(signature.trim()).ok_or(HmacError::Mismatch)?;
    let mut mac = secret.mac();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // `verify_slice` compares in constant time (and refuses a tag of the wrong length).
    mac.verify_slice(&tag).map_err(|_| HmacError::Mismatch)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn a_signature_over_timestamp_dot_body_verifies_and_nothing_else_does() {
        let secret = HmacSecret::new("shared-hmac-secret");
        let body = br#"{"message":{"type":"status-update"}}"#;
        let timestamp = (NOW / 1000).to_string();
        let signature = sign(&secret, &timestamp, body);
        // Known answer: HMAC-SHA256("shared-hmac-secret", "1767225600.{body}") computed
        // independently (Python hmac/hashlib).
        assert_eq!(
            signature,
            "61b79bb22da9c5f770ef0e4b5f80f90ff86e7c426ae5082b0f6be7bc0260782d"
        );
        let ok = |sig: &str, ts: &str, body: &[u8], now: i64| {
            verify(&secret, Some(sig), Some(ts), body, now, 300)
        };
        assert_eq!(ok(&signature, &timestamp, body, NOW), Ok(()));
        assert_eq!(ok(&signature.to_uppercase(), &timestamp, body, NOW), Ok(()));
        assert_eq!(
            ok(&signature, &timestamp, b"{\"message\":{}}", NOW),
            Err(HmacError::Mismatch)
        );
        let other = (NOW / 1000 + 1).to_string();
        assert_eq!(ok(&signature, &other, body, NOW), Err(HmacError::Mismatch));
        assert_eq!(
            ok(&signature, &timestamp, body, NOW + 301_000),
            Err(HmacError::Stale)
        );
        assert_eq!(ok("abc", &timestamp, body, NOW), Err(HmacError::Mismatch));
        assert_eq!(
            verify(&secret, None, Some(&timestamp), body, NOW, 300),
            Err(HmacError::Missing)
        );
        assert_eq!(
            ok(&signature, "yesterday", body, NOW),
            Err(HmacError::BadTimestamp)
        );
        // Milliseconds are read as such.
        let millis = NOW.to_string();
        assert_eq!(
            ok(&sign(&secret, &millis, body), &millis, body, NOW),
            Ok(())
        );
        let wrong_key = HmacSecret::new("another-secret");
        assert_eq!(
            verify(
                &wrong_key,
                Some(&signature),
                Some(&timestamp),
                body,
                NOW,
                300
            ),
            Err(HmacError::Mismatch)
        );
    }
}
