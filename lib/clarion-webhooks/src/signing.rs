//! Standard Webhooks signatures (HMAC-SHA256, `v1`), for senders and receivers.
//!
//! The signed content is `"{webhook-id}.{webhook-timestamp}.{body}"` over the exact body
//! bytes. A `webhook-signature` header holds one or more space-separated `v1,<base64>`
//! entries; during secret rotation the sender signs with every active secret and the receiver
//! accepts a match with any of its own.
//!
//! Verification costs at most one HMAC over the body per receiver secret, whatever the header
//! holds: the header is bounded ([`MAX_SIGNATURE_HEADER_BYTES`], [`MAX_SIGNATURE_ENTRIES`]),
//! malformed entries are skipped before any MAC work, and each secret's MAC is computed once
//! and compared in constant time against every well-formed `v1` tag. An unauthenticated
//! sender therefore cannot make a receiver hash a large body thousands of times.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::digest::CtOutput;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Name of the header carrying the message id, identical on every attempt of one message.
pub const HEADER_ID: &str = "webhook-id";
/// Name of the header carrying the attempt's Unix timestamp in seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Name of the header carrying the space-separated signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// How far a timestamp may be from the receiver's clock, in either direction: five minutes,
/// as in every Standard Webhooks reference library.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

/// The most entries a `webhook-signature` header may hold; more is refused
/// ([`VerifyError::TooManySignatures`]). Clarion itself sends at most two (the current secret
/// and, for 24 hours after a rotation, the one it replaced); 16 leaves room for other senders
/// that sign with a few more secrets or add other signature versions.
pub const MAX_SIGNATURE_ENTRIES: usize = 16;
/// The longest `webhook-signature` header accepted, in bytes; longer is refused
/// ([`VerifyError::SignatureHeaderTooLarge`]). A `v1` entry is 47 bytes, so 4 KiB holds 16
/// entries even of longer kinds (an `v1a` Ed25519 entry is 92 bytes) with room to spare.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 4 * 1024;

const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_VERSION: &str = "v1";
const MIN_SECRET_BYTES: usize = 24;
const MAX_SECRET_BYTES: usize = 64;

/// A Standard Webhooks signing secret: 24 to 64 random bytes, written as `whsec_<base64>`.
///
/// `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

/// Why a string or byte slice is not a usable secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text after `whsec_` is not standard base64.
    #[error("the secret is not base64 after the whsec_ prefix")]
    NotBase64,
    /// The key is shorter than 24 or longer than 64 bytes.
    #[error("the secret must be 24 to 64 bytes, got {0}")]
    BadLength(usize),
}

impl Secret {
    /// A secret from raw key bytes (24 to 64 of them).
    pub fn from_bytes(key: &[u8]) -> Result<Self, SecretError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(SecretError::BadLength(key.len()));
        }
        Ok(Self { key: key.to_vec() })
    }

    /// The secret in its `whsec_<base64>` form. This is the secret itself: show it to its
    /// owner, never log it.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }

    /// Signs one attempt: `v1,<base64 HMAC-SHA256("{msg_id}.{timestamp}.{body}")>`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(msg_id, timestamp, body).into_bytes();
        format!("{SIGNATURE_VERSION},{}", BASE64.encode(tag))
    }

    /// The HMAC of the signed content: the one place a MAC over the body is computed, so the
    /// tests can count them.
    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> CtOutput<HmacSha256> {
        #[cfg(test)]
        tests::MACS_COMPUTED.with(|count| count.set(count.get() + 1));
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize()
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    /// Parses `whsec_<base64>`. The prefix is optional, as in the reference libraries.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .unwrap_or(text.trim());
        let key = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        Self::from_bytes(&key)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The `webhook-signature` header value for one attempt signed with every given secret,
/// space-separated (several during secret rotation).
pub fn sign_header<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .map(|secret| secret.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The three Standard Webhooks headers of a request, as received (`None` when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookHeaders<'a> {
    /// `webhook-id`.
    pub id: Option<&'a str>,
    /// `webhook-timestamp`.
    pub timestamp: Option<&'a str>,
    /// `webhook-signature`.
    pub signature: Option<&'a str>,
}

impl<'a> WebhookHeaders<'a> {
    /// Reads the three headers through `get`, which looks a header up by its lower-case name.
    pub fn from_lookup(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self {
            id: get(HEADER_ID),
            timestamp: get(HEADER_TIMESTAMP),
            signature: get(HEADER_SIGNATURE),
        }
    }
}

/// Why a request is not a valid signed webhook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header is absent or empty.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer number of seconds.
    #[error("webhook-timestamp is not a Unix timestamp in seconds")]
    InvalidTimestamp,
    /// The timestamp is further in the past than the tolerance allows (a possible replay).
    #[error("webhook-timestamp is too old ({age_secs} s before now, tolerance {tolerance_secs} s)")]
    TimestampTooOld {
        /// How many seconds before the receiver's clock the timestamp is.
        age_secs: i64,
        /// The tolerance in force.
        tolerance_secs: i64,
    },
    /// The timestamp is further in the future than the tolerance allows.
    #[error(
        "webhook-timestamp is too new ({ahead_secs} s after now, tolerance {tolerance_secs} s)"
    )]
    TimestampTooNew {
        /// How many seconds after the receiver's clock the timestamp is.
        ahead_secs: i64,
        /// The tolerance in force.
        tolerance_secs: i64,
    },
    /// No `v1` entry of `webhook-signature` matches any of the receiver's secrets.
    #[error("no signature matches")]
    NoMatchingSignature,
    /// `webhook-signature` is longer than [`MAX_SIGNATURE_HEADER_BYTES`].
    #[error("webhook-signature is too large ({bytes} bytes, at most {max})")]
    SignatureHeaderTooLarge {
        /// The header's length in bytes.
        bytes: usize,
        /// The bound in force.
        max: usize,
    },
    /// `webhook-signature` holds more than [`MAX_SIGNATURE_ENTRIES`] entries.
    #[error("too many signatures in webhook-signature (more than {max})")]
    TooManySignatures {
        /// The bound in force.
        max: usize,
    },
}

/// Checks Standard Webhooks signatures against one or more secrets.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    tolerance_secs: i64,
}

impl Verifier {
    /// A verifier for one secret with the default five-minute tolerance.
    pub fn new(secret: Secret) -> Self {
        Self::with_secrets([secret])
    }

    /// A verifier that accepts a signature made with any of `secrets` (use this while a
    /// rotated secret is still valid).
    pub fn with_secrets(secrets: impl IntoIterator<Item = Secret>) -> Self {
        Self {
            secrets: secrets.into_iter().collect(),
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
        }
    }

    /// Changes the timestamp tolerance (seconds, both directions).
    pub fn tolerance_secs(mut self, tolerance_secs: i64) -> Self {
        self.tolerance_secs = tolerance_secs.max(0);
        self
    }

    /// Verifies a request against the system clock.
    pub fn verify(&self, headers: &WebhookHeaders<'_>, body: &[u8]) -> Result<(), VerifyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.verify_at(headers, body, now)
    }

    /// Verifies a request as of `now` (Unix seconds).
    pub fn verify_at(
        &self,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let msg_id = present(headers.id, HEADER_ID)?;
        let timestamp_text = present(headers.timestamp, HEADER_TIMESTAMP)?;
        let signatures = present(headers.signature, HEADER_SIGNATURE)?;
        // The header's bounds are checked before anything else is read from it.
        if signatures.len() > MAX_SIGNATURE_HEADER_BYTES {
            return Err(VerifyError::SignatureHeaderTooLarge {
                bytes: signatures.len(),
                max: MAX_SIGNATURE_HEADER_BYTES,
            });
        }
        let entries = || signatures.split(' ').filter(|entry| !entry.is_empty());
        if entries().nth(MAX_SIGNATURE_ENTRIES).is_some() {
            return Err(VerifyError::TooManySignatures {
                max: MAX_SIGNATURE_ENTRIES,
            });
        }

        let timestamp: i64 = timestamp_text
            .parse()
            .map_err(|_| VerifyError::InvalidTimestamp)?;
        let tolerance_secs = self.tolerance_secs;
        if now.saturating_sub(timestamp) > tolerance_secs {
            return Err(VerifyError::TimestampTooOld {
                age_secs: now.saturating_sub(timestamp),
                tolerance_secs,
            });
        }
        if timestamp.saturating_sub(now) > tolerance_secs {
            return Err(VerifyError::TimestampTooNew {
                ahead_secs: timestamp.saturating_sub(now),
                tolerance_secs,
            });
        }

        // Only well-formed v1 entries are candidates; entries of other versions (such as `v1a`
        // for asymmetric signatures) and malformed ones are skipped, not rejected, and cost no
        // MAC work.
        let candidate_tags: Vec<CtOutput<HmacSha256>> = entries().filter_map(v1_tag).collect();
        if candidate_tags.is_empty() {
            return Err(VerifyError::NoMatchingSignature);
        }
        // One MAC per secret, compared against every candidate (`CtOutput` equality is
        // constant time).
        for secret in &self.secrets {
            let expected = secret.mac(msg_id, timestamp, body);
            if candidate_tags.contains(&expected) {
                return Ok(());
            }
        }
        Err(VerifyError::NoMatchingSignature)
    }
}

/// The tag of a well-formed `v1,<base64>` entry: base64 of exactly 32 bytes (an HMAC-SHA256).
/// `None` for any other entry.
fn v1_tag(entry: &str) -> Option<CtOutput<HmacSha256>> {
    /// 32 bytes in padded standard base64.
    const TAG_BASE64_LEN: usize = 44;
    let (version, encoded) = entry.split_once(',')?;
    if version != SIGNATURE_VERSION || encoded.len() != TAG_BASE64_LEN {
        return None;
    }
    let mut tag = [0u8; 32];
    match BASE64.decode_slice(encoded, &mut tag) {
        Ok(32) => Some(CtOutput::new(tag.into())),
        _ => None,
    }
}

/// The trimmed header value, or the error naming the header when it is absent or blank.
fn present<'h>(value: Option<&'h str>, name: &'static str) -> Result<&'h str, VerifyError> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(VerifyError::MissingHeader(name))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// How many MACs over a body this thread computed ([`Secret::mac`] counts them).
        pub(super) static MACS_COMPUTED: Cell<usize> = const { Cell::new(0) };
    }

    /// Runs `work` and answers how many MACs it computed.
    fn macs_computed_by(work: impl FnOnce()) -> usize {
        MACS_COMPUTED.with(|count| count.set(0));
        work();
        MACS_COMPUTED.with(Cell::get)
    }

    // The known-answer vector shared by the Standard Webhooks reference libraries and Svix.
    const KAT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const KAT_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const KAT_TIMESTAMP: i64 = 1_614_265_330;
    const KAT_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const KAT_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn kat_secret() -> Secret {
        KAT_SECRET.parse().unwrap()
    }

    fn headers<'a>(id: &'a str, timestamp: &'a str, signature: &'a str) -> WebhookHeaders<'a> {
        WebhookHeaders {
            id: Some(id),
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    #[test]
    fn signing_reproduces_the_reference_known_answer_vector() {
        assert_eq!(
            kat_secret().sign(KAT_ID, KAT_TIMESTAMP, KAT_BODY),
            KAT_SIGNATURE
        );
    }

    #[test]
    fn the_reference_vector_verifies_and_any_change_breaks_it() {
        let verifier = Verifier::new(kat_secret());
        let ts = KAT_TIMESTAMP.to_string();
        assert_eq!(
            verifier.verify_at(
                &headers(KAT_ID, &ts, KAT_SIGNATURE),
                KAT_BODY,
                KAT_TIMESTAMP
            ),
            Ok(())
        );
        let tampered_body = br#"{"test": 2432232315}"#;
        assert_eq!(
            verifier.verify_at(
                &headers(KAT_ID, &ts, KAT_SIGNATURE),
                tampered_body,
                KAT_TIMESTAMP
            ),
            Err(VerifyError::NoMatchingSignature)
        );
        let other_id = "msg_p5jXN8AQM9LWM0D4loKWxJel";
        assert_eq!(
            verifier.verify_at(
                &headers(other_id, &ts, KAT_SIGNATURE),
                KAT_BODY,
                KAT_TIMESTAMP
            ),
            Err(VerifyError::NoMatchingSignature)
        );
        let later = (KAT_TIMESTAMP + 1).to_string();
        assert_eq!(
            verifier.verify_at(
                &headers(KAT_ID, &later, KAT_SIGNATURE),
                KAT_BODY,
                KAT_TIMESTAMP
            ),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn any_matching_entry_among_several_signatures_is_accepted() {
        let old = kat_secret();
        let new = Secret::from_bytes(&[7u8; 32]).unwrap();
        let both = sign_header([&new, &old], KAT_ID, KAT_TIMESTAMP, KAT_BODY);
        assert_eq!(both.split(' ').count(), 2);
        let ts = KAT_TIMESTAMP.to_string();
        let h = headers(KAT_ID, &ts, &both);
        assert_eq!(
            Verifier::new(old).verify_at(&h, KAT_BODY, KAT_TIMESTAMP),
            Ok(())
        );
        assert_eq!(
            Verifier::new(new).verify_at(&h, KAT_BODY, KAT_TIMESTAMP),
            Ok(())
        );
        let stranger = Secret::from_bytes(&[9u8; 32]).unwrap();
        assert_eq!(
            Verifier::new(stranger).verify_at(&h, KAT_BODY, KAT_TIMESTAMP),
            Err(VerifyError::NoMatchingSignature)
        );
        // A verifier holding both the old and the new secret accepts either signature alone.
        let rotating =
            Verifier::with_secrets([kat_secret(), Secret::from_bytes(&[7; 32]).unwrap()]);
        assert_eq!(
            rotating.verify_at(
                &headers(KAT_ID, &ts, KAT_SIGNATURE),
                KAT_BODY,
                KAT_TIMESTAMP
            ),
            Ok(())
        );
    }

    #[test]
    fn unknown_signature_versions_and_garbage_entries_are_skipped() {
        let ts = KAT_TIMESTAMP.to_string();
        let header = format!("v1a,AAAA v2,zzz nonsense v1,@@@ {KAT_SIGNATURE}");
        let verifier = Verifier::new(kat_secret());
        assert_eq!(
            verifier.verify_at(&headers(KAT_ID, &ts, &header), KAT_BODY, KAT_TIMESTAMP),
            Ok(())
        );
        let only_others = "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            verifier.verify_at(&headers(KAT_ID, &ts, only_others), KAT_BODY, KAT_TIMESTAMP),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn timestamps_are_accepted_within_five_minutes_either_way_and_refused_beyond() {
        let verifier = Verifier::new(kat_secret());
        let ts = KAT_TIMESTAMP.to_string();
        let h = headers(KAT_ID, &ts, KAT_SIGNATURE);
        assert_eq!(
            verifier.verify_at(&h, KAT_BODY, KAT_TIMESTAMP + 300),
            Ok(())
        );
        assert_eq!(
            verifier.verify_at(&h, KAT_BODY, KAT_TIMESTAMP - 300),
            Ok(())
        );
        assert_eq!(
            verifier.verify_at(&h, KAT_BODY, KAT_TIMESTAMP + 301),
            Err(VerifyError::TimestampTooOld {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            verifier.verify_at(&h, KAT_BODY, KAT_TIMESTAMP - 301),
            Err(VerifyError::TimestampTooNew {
                ahead_secs: 301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn each_missing_or_malformed_header_has_its_own_error() {
        let verifier = Verifier::new(kat_secret());
        let ts = KAT_TIMESTAMP.to_string();
        let full = headers(KAT_ID, &ts, KAT_SIGNATURE);
        let check = |h: WebhookHeaders<'_>| verifier.verify_at(&h, KAT_BODY, KAT_TIMESTAMP);
        assert_eq!(
            check(WebhookHeaders { id: None, ..full }),
            Err(VerifyError::MissingHeader(HEADER_ID))
        );
        assert_eq!(
            check(WebhookHeaders {
                id: Some(" "),
                ..full
            }),
            Err(VerifyError::MissingHeader(HEADER_ID))
        );
        assert_eq!(
            check(WebhookHeaders {
                timestamp: None,
                ..full
            }),
            Err(VerifyError::MissingHeader(HEADER_TIMESTAMP))
        );
        assert_eq!(
            check(WebhookHeaders {
                signature: None,
                ..full
            }),
            Err(VerifyError::MissingHeader(HEADER_SIGNATURE))
        );
        assert_eq!(
            check(WebhookHeaders {
                timestamp: Some("2021-02-25T15:02:10Z"),
                ..full
            }),
            Err(VerifyError::InvalidTimestamp)
        );
    }

    #[test]
    fn secrets_parse_with_or_without_prefix_and_enforce_their_length() {
        let without_prefix: Secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        assert_eq!(without_prefix, kat_secret());
        assert_eq!(kat_secret().to_whsec(), KAT_SECRET);
        assert_eq!("whsec_!!!".parse::<Secret>(), Err(SecretError::NotBase64));
        assert_eq!(
            Secret::from_bytes(&[1; 23]),
            Err(SecretError::BadLength(23))
        );
        assert_eq!(
            Secret::from_bytes(&[1; 65]),
            Err(SecretError::BadLength(65))
        );
        assert!(Secret::from_bytes(&[1; 64]).is_ok());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let shown = format!("{:?}", Verifier::new(kat_secret()));
        assert!(!shown.contains("MfKQ9r8"), "{shown}");
    }

    /// A well-formed `v1` entry that matches no secret: a different 32-byte tag per `seed`.
    fn stranger_entry(seed: u8) -> String {
        format!("{SIGNATURE_VERSION},{}", BASE64.encode([seed; 32]))
    }

    /// Issue 17 defect 4: whatever the header holds, verification computes one MAC per
    /// receiver secret at most (the old verifier computed one per entry and secret).
    #[test]
    fn verification_costs_one_mac_per_secret_whatever_the_number_of_entries() {
        let ts = KAT_TIMESTAMP.to_string();
        let secrets: Vec<Secret> = (1..=3u8)
            .map(|n| Secret::from_bytes(&[n; 32]).unwrap())
            .collect();
        for secret_count in 1..=secrets.len() {
            let verifier = Verifier::with_secrets(secrets[..secret_count].iter().cloned());
            for entry_count in 1..=MAX_SIGNATURE_ENTRIES {
                let header = (0..entry_count)
                    .map(|n| stranger_entry(100 + u8::try_from(n).unwrap()))
                    .collect::<Vec<_>>()
                    .join(" ");
                let macs = macs_computed_by(|| {
                    assert_eq!(
                        verifier.verify_at(&headers(KAT_ID, &ts, &header), KAT_BODY, KAT_TIMESTAMP),
                        Err(VerifyError::NoMatchingSignature)
                    );
                });
                assert_eq!(
                    macs, secret_count,
                    "{entry_count} entries, {secret_count} secrets"
                );
            }
        }
        // A match among many entries, found with the last secret, still costs one MAC each.
        let verifier = Verifier::with_secrets(secrets.iter().cloned().chain([kat_secret()]));
        let mut header = (0..15).map(stranger_entry).collect::<Vec<_>>();
        header.push(KAT_SIGNATURE.to_owned());
        let header = header.join(" ");
        let macs = macs_computed_by(|| {
            assert_eq!(
                verifier.verify_at(&headers(KAT_ID, &ts, &header), KAT_BODY, KAT_TIMESTAMP),
                Ok(())
            );
        });
        assert_eq!(macs, 4);
    }

    #[test]
    fn malformed_entries_are_skipped_before_any_mac_work() {
        let ts = KAT_TIMESTAMP.to_string();
        let verifier = Verifier::new(kat_secret());
        // Tags of the wrong length, not base64, other versions, no comma.
        let short = format!("v1,{}", BASE64.encode([1u8; 31]));
        let long = format!("v1,{}", BASE64.encode([1u8; 33]));
        let unpadded = format!("v1,{}", BASE64.encode([1u8; 32]).trim_end_matches('='));
        let header = format!("{short} {long} {unpadded} v1,@@@ v1a,AAAA v2,zzz nonsense v1, ,v1");
        let macs = macs_computed_by(|| {
            assert_eq!(
                verifier.verify_at(&headers(KAT_ID, &ts, &header), KAT_BODY, KAT_TIMESTAMP),
                Err(VerifyError::NoMatchingSignature)
            );
        });
        assert_eq!(macs, 0);
    }

    #[test]
    fn more_than_sixteen_entries_are_refused_without_any_mac_work() {
        let ts = KAT_TIMESTAMP.to_string();
        let verifier = Verifier::new(kat_secret());
        // Even with the right signature among them.
        let mut entries = (0..16).map(stranger_entry).collect::<Vec<_>>();
        entries.push(KAT_SIGNATURE.to_owned());
        let header = entries.join(" ");
        assert!(header.len() <= MAX_SIGNATURE_HEADER_BYTES);
        let macs = macs_computed_by(|| {
            let refused =
                verifier.verify_at(&headers(KAT_ID, &ts, &header), KAT_BODY, KAT_TIMESTAMP);
            assert_eq!(refused, Err(VerifyError::TooManySignatures { max: 16 }));
            assert_eq!(
                refused.unwrap_err().to_string(),
                "too many signatures in webhook-signature (more than 16)"
            );
        });
        assert_eq!(macs, 0);
        // Sixteen, the bound itself, are fine.
        let header = entries[1..].join(" ");
        assert_eq!(
            verifier.verify_at(&headers(KAT_ID, &ts, &header), KAT_BODY, KAT_TIMESTAMP),
            Ok(())
        );
    }

    #[test]
    fn an_oversized_signature_header_is_refused_without_any_mac_work() {
        let ts = KAT_TIMESTAMP.to_string();
        let verifier = Verifier::new(kat_secret());
        // Few entries, but one of them enormous.
        let header = format!(
            "{KAT_SIGNATURE} v1a,{}",
            "A".repeat(MAX_SIGNATURE_HEADER_BYTES)
        );
        let macs = macs_computed_by(|| {
            assert_eq!(
                verifier.verify_at(&headers(KAT_ID, &ts, &header), KAT_BODY, KAT_TIMESTAMP),
                Err(VerifyError::SignatureHeaderTooLarge {
                    bytes: header.len(),
                    max: MAX_SIGNATURE_HEADER_BYTES
                })
            );
        });
        assert_eq!(macs, 0);
    }
}
