//! Everything a receiver needs to consume Clarion's **End of Sequence Report** webhook.
//!
//! When an outreach sequence ends, Clarion POSTs one JSON document, the End of Sequence
//! Report, to every webhook endpoint the organisation configured. This crate is the part of
//! that contract that both sides share, and it is deliberately small: it depends on serde,
//! chrono and the RustCrypto HMAC/SHA-2 crates, and on nothing asynchronous, so a receiver can
//! depend on it alone whatever web framework it uses.
//!
//! It provides three things:
//!
//! * **The report types** ([`SequenceReport`], [`OutreachStep`], [`Call`], [`Sms`],
//!   [`CallAnalysis`], [`SmsAnalysis`]). They serialise every documented key, writing `null`
//!   where a value is unknown, and they deserialise leniently: unknown extra keys are ignored
//!   and optional keys may be absent, so a receiver built today keeps working when the payload
//!   grows. Where the specification lists the possible values of a field, the field is a closed
//!   enum; where it only gives examples, the field is an "open" enum that keeps values it has
//!   not seen in an `Other(String)` variant instead of failing.
//! * **Standard Webhooks signing and verification** ([`Secret`], [`Verifier`]): `whsec_`
//!   secrets, `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>` signatures, several
//!   signatures side by side during secret rotation, a five-minute timestamp tolerance in both
//!   directions and constant-time comparison.
//! * **The other event types** ([`EncounterEnded`], [`EndpointDisabled`]) and [`Event`], which
//!   parses any delivery by its `clarion-event-type` header.
//! * **The pre-contact eligibility check** ([`EligibilityRequest`], [`EligibilityAnswer`],
//!   [`verify_answer`]): what an organisation's eligibility hook receives and how it answers,
//!   signed both ways.
//! * **The JSON Schemas** of the report and of each event (draft 2020-12), behind the `schema`
//!   feature ([`schema::report_schema`], [`schema::encounter_ended_schema`],
//!   [`schema::endpoint_disabled_schema`]).
//!
//! # Receiving a report
//!
//! ```
//! use clarion_webhooks::{Secret, SequenceReport, Verifier, WebhookHeaders};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
//! # let body = br#"{"id":1,"status":"ended","outcome_description":null,"last_updated":"2026-01-05T15:00:00.000Z","outreach":[]}"#;
//! # let now = 1_767_625_200;
//! # let signature = secret.sign("msg_1", now, body);
//! // The three headers and the raw body bytes, exactly as received.
//! let headers = WebhookHeaders {
//!     id: Some("msg_1"),
//!     timestamp: Some(&now.to_string()),
//!     signature: Some(&signature),
//! };
//! let verifier = Verifier::new(secret);
//! verifier.verify_at(&headers, body, now)?; // use `verify` to check against the clock
//! let report: SequenceReport = serde_json::from_slice(body)?;
//! assert_eq!(report.id, 1);
//! # Ok(())
//! # }
//! ```
//!
//! Webhooks are delivered at least once: the same report may arrive more than once, always
//! with the same `webhook-id` and the same body bytes. Use `webhook-id` to de-duplicate.
#![deny(missing_docs)]

mod eligibility;
mod events;
pub mod examples;
mod open_enum;
mod report;
#[cfg(feature = "schema")]
pub mod schema;
mod signing;
mod timestamp;

pub use eligibility::{
    AnswerError, EVENT_TYPE_ENCOUNTER_ELIGIBILITY, EligibilityAnswer, EligibilityRequest,
    IneligibleAction, MAX_ANSWER_BYTES, MAX_REASON_CHARS, verify_answer,
};
pub use events::{
    EVENT_TYPE_ENCOUNTER_ENDED, EVENT_TYPE_ENDPOINT_DISABLED, EVENT_TYPE_SEQUENCE_ENDED_TEST,
    EVENT_TYPES, EncounterEnded, EndpointDisabled, Event, EventError, HEADER_EVENT_TYPE,
};
pub use report::{
    Call, CallAnalysis, CallEndedReason, CallOutcome, CallStatus, CallType, FailureReason,
    OutreachStep, OutreachType, SequenceReport, SequenceStatus, Sms, SmsAnalysis, SmsEndedReason,
    SmsStatus,
};
pub use signing::{
    DEFAULT_TOLERANCE_SECS, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_SIGNATURE_ENTRIES,
    MAX_SIGNATURE_HEADER_BYTES, Secret, SecretError, Verifier, VerifyError, WebhookHeaders,
    sign_header,
};
pub use timestamp::{Timestamp, TimestampError};

/// The event type of the End of Sequence Report, as Clarion records it with each message.
pub const EVENT_TYPE_SEQUENCE_ENDED: &str = "sequence.ended";
