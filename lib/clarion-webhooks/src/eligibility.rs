//! The pre-contact eligibility check (`encounter.eligibility`): Clarion asks the
//! organisation's hook, just before a call attempt or the first text of a conversation,
//! whether the patient is still to be contacted, and the hook answers.
//!
//! Both directions are signed with the hook's one `whsec_` secret, Standard Webhooks style:
//!
//! * **The request** ([`EligibilityRequest`]) is signed like any delivery: `webhook-id`
//!   (unique per check), `webhook-timestamp`, `webhook-signature` over
//!   `"{id}.{timestamp}.{body}"`, and `clarion-event-type: encounter.eligibility`. It names
//!   the sequence, the contact's external id, the step, the attempt and the channel; never a
//!   phone number or a name (the receiver looks the patient up by its own external id).
//! * **The answer** ([`EligibilityAnswer`]) is a 2xx with a JSON body of at most
//!   [`MAX_ANSWER_BYTES`], signed by the receiver with the same secret over the answer's body,
//!   carrying the request's `webhook-id` and a fresh `webhook-timestamp` (within five
//!   minutes): [`EligibilityAnswer::signed`] writes one, [`verify_answer`] reads one. An
//!   answer signed with another secret, for another `webhook-id` or not at all is not an
//!   answer, so a forged response can never make a patient eligible.
//!
//! ```
//! use clarion_webhooks::{EligibilityAnswer, IneligibleAction, Secret, WebhookHeaders, verify_answer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
//! let now = 1_767_625_200;
//! // The receiver, having verified the request (id "chk_1") and looked the patient up:
//! let answer = EligibilityAnswer::not_eligible("confirmed in the EHR", IneligibleAction::SkipStep);
//! let (body, signature) = answer.signed(&secret, "chk_1", now);
//! // Clarion, reading the answer to its request "chk_1":
//! let headers = WebhookHeaders {
//!     id: Some("chk_1"),
//!     timestamp: Some(&now.to_string()),
//!     signature: Some(&signature),
//! };
//! let read = verify_answer(&secret, "chk_1", &headers, &body, now)?;
//! assert!(!read.eligible);
//! # Ok(())
//! # }
//! ```

use serde::{Deserialize, Serialize};

use crate::OutreachType;
use crate::signing::{Secret, Verifier, VerifyError, WebhookHeaders};

/// The event type of an eligibility check, in its `clarion-event-type` header and its body's
/// `type`.
pub const EVENT_TYPE_ENCOUNTER_ELIGIBILITY: &str = "encounter.eligibility";

/// The largest answer body read, in bytes; a longer one is an error.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024;

/// The longest `reason` kept, in characters (after trimming); a longer one is cut.
pub const MAX_REASON_CHARS: usize = 200;

/// `encounter.eligibility`: may the patient be contacted for this step attempt now?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EligibilityRequest {
    /// Always `encounter.eligibility`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The sequence (the report's `id`).
    pub sequence_id: i64,
    /// The contact's external id as enrolled (the receiver's own patient id), `null` when the
    /// enrollment gave none.
    #[cfg_attr(feature = "schema", schemars(required))]
    pub external_id: Option<String>,
    /// The step number in the sequence (1-based, as in the report).
    pub step: u32,
    /// The attempt of that step (1-based; calls may be retried).
    pub attempt: u32,
    /// `call` or `sms`.
    pub channel: OutreachType,
}

impl EligibilityRequest {
    /// The request for one step attempt.
    pub fn new(
        sequence_id: i64,
        external_id: Option<String>,
        step: u32,
        attempt: u32,
        channel: OutreachType,
    ) -> Self {
        Self {
            kind: EVENT_TYPE_ENCOUNTER_ELIGIBILITY.to_owned(),
            sequence_id,
            external_id,
            step,
            attempt,
            channel,
        }
    }
}

/// What Clarion does when the answer is "not eligible".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum IneligibleAction {
    /// Skip this step (its remaining attempts too); the sequence goes on to its next step, or
    /// ends if this was the last.
    #[default]
    SkipStep,
    /// End the sequence now (its report is delivered as for any ending).
    EndSequence,
}

/// The hook's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EligibilityAnswer {
    /// Whether the patient may be contacted now.
    pub eligible: bool,
    /// Why not (at most 200 characters are kept), shown in the sequence's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When not eligible: `skip-step` (the default) or `end-sequence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<IneligibleAction>,
}

impl EligibilityAnswer {
    /// "Contact the patient."
    pub fn eligible() -> Self {
        Self {
            eligible: true,
            reason: None,
            action: None,
        }
    }

    /// "Do not contact the patient", with a reason and what to do instead.
    pub fn not_eligible(reason: impl Into<String>, action: IneligibleAction) -> Self {
        Self {
            eligible: false,
            reason: Some(reason.into()),
            action: Some(action),
        }
    }

    /// The answer's body and its `webhook-signature` for the request `webhook_id` at
    /// `timestamp` (Unix seconds): what a receiver sends back, with `webhook-id: webhook_id`
    /// and `webhook-timestamp: timestamp`.
    pub fn signed(&self, secret: &Secret, webhook_id: &str, timestamp: i64) -> (Vec<u8>, String) {
        let body = serde_json::to_vec(self)
            .unwrap_or_else(|_| unreachable!("an answer always serialises"));
        let signature = secret.sign(webhook_id, timestamp, &body);
        (body, signature)
    }

    /// The action when not eligible (`skip-step` when the answer named none).
    pub fn action_or_default(&self) -> IneligibleAction {
        self.action.unwrap_or_default()
    }

    /// The reason trimmed and cut to [`MAX_REASON_CHARS`]; `None` when absent or blank.
    pub fn trimmed_reason(&self) -> Option<String> {
        let reason = self.reason.as_deref()?.trim();
        (!reason.is_empty()).then(|| reason.chars().take(MAX_REASON_CHARS).collect())
    }
}

/// Why an answer was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The body is longer than [`MAX_ANSWER_BYTES`].
    #[error("the answer is longer than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    /// The answer's `webhook-id` is absent or not the request's.
    #[error("the answer is not for this request (webhook-id)")]
    WrongId,
    /// The signature or timestamp does not verify with the hook's secret.
    #[error("the answer's signature does not verify: {0}")]
    Signature(#[from] VerifyError),
    /// The body is not an answer.
    #[error("the answer is not valid JSON of the documented shape")]
    Body(#[source] serde_json::Error),
}

impl AnswerError {
    /// A short class for records and metrics: `too-large`, `wrong-id`, `bad-signature`,
    /// `bad-body`.
    pub fn class(&self) -> &'static str {
        match self {
            Self::TooLarge => "too-large",
            Self::WrongId => "wrong-id",
            Self::Signature(_) => "bad-signature",
            Self::Body(_) => "bad-body",
        }
    }
}

/// Reads the answer to the request `request_id`: its `webhook-id` must be the request's, its
/// signature must verify with `secret` over `body` within five minutes of `now` (Unix
/// seconds), and its body must be an [`EligibilityAnswer`] of at most [`MAX_ANSWER_BYTES`].
pub fn verify_answer(
    secret: &Secret,
    request_id: &str,
    headers: &WebhookHeaders<'_>,
    body: &[u8],
    now: i64,
) -> Result<EligibilityAnswer, AnswerError> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(AnswerError::TooLarge);
    }
    if headers.id.map(str::trim) != Some(request_id) {
        return Err(AnswerError::WrongId);
    }
    Verifier::new(secret.clone()).verify_at(headers, body, now)?;
    serde_json::from_slice(body).map_err(AnswerError::Body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn secret() -> Secret {
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap()
    }

    fn headers<'a>(id: &'a str, timestamp: &'a str, signature: &'a str) -> WebhookHeaders<'a> {
        WebhookHeaders {
            id: Some(id),
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    #[test]
    fn a_signed_answer_to_this_request_is_read() {
        let answer = EligibilityAnswer::not_eligible("  seen  ", IneligibleAction::EndSequence);
        let (body, signature) = answer.signed(&secret(), "chk_1", 1000);
        let read = verify_answer(
            &secret(),
            "chk_1",
            &headers("chk_1", "1000", &signature),
            &body,
            1100,
        )
        .unwrap();
        assert_eq!(read, answer);
        assert_eq!(read.trimmed_reason().as_deref(), Some("seen"));
        assert_eq!(read.action_or_default(), IneligibleAction::EndSequence);
    }

    #[test]
    fn forged_misdirected_stale_or_oversized_answers_are_refused() {
        let answer = EligibilityAnswer::eligible();
        let other: Secret = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXk="
            .parse()
            .unwrap();
        let (body, forged) = answer.signed(&other, "chk_1", 1000);
        let refused = |id: &str, signature: &str, body: &[u8], now: i64| {
            verify_answer(
                &secret(),
                "chk_1",
                &headers(id, "1000", signature),
                body,
                now,
            )
            .unwrap_err()
            .class()
        };
        assert_eq!(refused("chk_1", &forged, &body, 1000), "bad-signature");
        let (_, for_another) = answer.signed(&secret(), "chk_2", 1000);
        assert_eq!(refused("chk_2", &for_another, &body, 1000), "wrong-id");
        let (_, good) = answer.signed(&secret(), "chk_1", 1000);
        assert_eq!(refused("chk_1", &good, &body, 1000 + 301), "bad-signature");
        assert_eq!(
            refused("chk_1", &good, b"{\"eligible\":false}", 1000),
            "bad-signature"
        );
        let big = vec![b' '; MAX_ANSWER_BYTES + 1];
        assert_eq!(refused("chk_1", &good, &big, 1000), "too-large");
        let not_json = b"yes";
        let signature = secret().sign("chk_1", 1000, not_json);
        assert_eq!(refused("chk_1", &signature, not_json, 1000), "bad-body");
        let missing = WebhookHeaders::default();
        assert_eq!(
            verify_answer(&secret(), "chk_1", &missing, &body, 1000)
                .unwrap_err()
                .class(),
            "wrong-id"
        );
    }

    #[test]
    fn a_long_reason_is_cut_and_a_blank_one_dropped() {
        let long = EligibilityAnswer::not_eligible("é".repeat(300), IneligibleAction::SkipStep);
        assert_eq!(
            long.trimmed_reason().unwrap().chars().count(),
            MAX_REASON_CHARS
        );
        let blank = EligibilityAnswer::not_eligible(" ", IneligibleAction::SkipStep);
        assert_eq!(blank.trimmed_reason(), None);
        let bare: EligibilityAnswer = serde_json::from_str(r#"{"eligible":false}"#).unwrap();
        assert_eq!(bare.action_or_default(), IneligibleAction::SkipStep);
    }
}
