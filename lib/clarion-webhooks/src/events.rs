//! The event types besides the End of Sequence Report, and [`Event`], what a receiver parses
//! any delivery into.
//!
//! Every request Clarion sends names its event type in the `clarion-event-type` header
//! ([`HEADER_EVENT_TYPE`]); the body is that type's payload. An endpoint receives only the
//! types it subscribed to (`event_types`, by default `["sequence.ended"]`), except test
//! reports, which go to the one endpoint they were sent to.
//!
//! | `clarion-event-type` | body |
//! | --- | --- |
//! | `sequence.ended` | the End of Sequence Report ([`SequenceReport`]) |
//! | `sequence.ended.test` | a sample report, sent by the "test" button |
//! | `encounter.ended` | one finished call or SMS conversation ([`EncounterEnded`]) |
//! | `endpoint.disabled` | another endpoint of the organisation was disabled ([`EndpointDisabled`]) |

use serde::{Deserialize, Serialize};

use crate::{Call, OutreachStep, OutreachType, SequenceReport, Sms, Timestamp};

/// The header that names a request's event type.
pub const HEADER_EVENT_TYPE: &str = "clarion-event-type";
/// The End of Sequence Report of a test send (`POST /v1/webhook-endpoints/{id}/test`).
pub const EVENT_TYPE_SEQUENCE_ENDED_TEST: &str = "sequence.ended.test";
/// One finished call or SMS conversation.
pub const EVENT_TYPE_ENCOUNTER_ENDED: &str = "encounter.ended";
/// An endpoint of the organisation was disabled because every attempt to it failed.
pub const EVENT_TYPE_ENDPOINT_DISABLED: &str = "endpoint.disabled";
/// The event types an endpoint may subscribe to, in the order they are documented.
pub const EVENT_TYPES: &[&str] = &[
    crate::EVENT_TYPE_SEQUENCE_ENDED,
    EVENT_TYPE_ENCOUNTER_ENDED,
    EVENT_TYPE_ENDPOINT_DISABLED,
];

/// `encounter.ended`: one finished call or SMS conversation, sent as soon as it ends, while
/// its sequence goes on.
///
/// `type`, `step`, `call` and `sms` are exactly the sequence's report `outreach` entry for
/// that encounter (the call or SMS object is the same, key for key, as in the End of Sequence
/// Report sent when the sequence ends); `sequence_id` names the sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EncounterEnded {
    /// The sequence the encounter belongs to (the report's `id`).
    pub sequence_id: i64,
    /// The type of outreach: `call | sms`.
    #[serde(rename = "type")]
    pub kind: OutreachType,
    /// The step number in the sequence.
    pub step: u32,
    /// The call details, when `type` is `call`.
    pub call: Option<Call>,
    /// The sms details, when `type` is `sms`.
    pub sms: Option<Sms>,
}

impl EncounterEnded {
    /// The event of one outreach entry of sequence `sequence_id`.
    pub fn new(sequence_id: i64, step: OutreachStep) -> Self {
        Self {
            sequence_id,
            kind: step.kind,
            step: step.step,
            call: step.call,
            sms: step.sms,
        }
    }

    /// The outreach entry as it appears in the sequence's report.
    pub fn outreach_step(&self) -> OutreachStep {
        OutreachStep {
            kind: self.kind,
            step: self.step,
            call: self.call.clone(),
            sms: self.sms.clone(),
        }
    }
}

/// `endpoint.disabled`: Clarion disabled one of the organisation's endpoints because every
/// attempt to it failed for the configured time (`webhooks.disable_after`). Its undelivered
/// messages are kept: re-enabling it (`PATCH /v1/webhook-endpoints/{id}` with
/// `{"enabled": true}`) delivers them in order. Sent to the organisation's other endpoints
/// that subscribe to `endpoint.disabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EndpointDisabled {
    /// The disabled endpoint's id.
    pub endpoint_id: i64,
    /// The disabled endpoint's URL.
    pub url: String,
    /// Why it was disabled, as `GET /v1/webhook-endpoints/{id}` shows it (`disabled_reason`).
    pub reason: String,
    /// Since when every attempt to it has failed.
    pub failing_since: Timestamp,
    /// When it was disabled.
    pub disabled_at: Timestamp,
}

/// Any delivery Clarion sends, parsed by its event type.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `sequence.ended`: the End of Sequence Report.
    SequenceEnded(SequenceReport),
    /// `sequence.ended.test`: a sample report, sent by the "test" button.
    SequenceEndedTest(SequenceReport),
    /// `encounter.ended`: one finished call or SMS conversation.
    EncounterEnded(Box<EncounterEnded>),
    /// `endpoint.disabled`: another endpoint of the organisation was disabled.
    EndpointDisabled(EndpointDisabled),
}

/// Why a body could not be read as an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event type is not one this version knows (a newer Clarion may send more: answer
    /// 2xx and ignore it, or upgrade).
    #[error("unknown event type")]
    UnknownType,
    /// The body is not the payload of its event type.
    #[error("the body is not a valid {event_type} payload: {source}")]
    Body {
        /// The event type named.
        event_type: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl Event {
    /// Parses a verified body by the event type its `clarion-event-type` header names. A
    /// request without the header (a sender older than event types) is a `sequence.ended`
    /// report.
    pub fn parse(event_type: Option<&str>, body: &[u8]) -> Result<Self, EventError> {
        fn read<T: serde::de::DeserializeOwned>(
            event_type: &'static str,
            body: &[u8],
        ) -> Result<T, EventError> {
            serde_json::from_slice(body).map_err(|source| EventError::Body { event_type, source })
        }
        match event_type.unwrap_or(crate::EVENT_TYPE_SEQUENCE_ENDED) {
            crate::EVENT_TYPE_SEQUENCE_ENDED => Ok(Self::SequenceEnded(read(
                crate::EVENT_TYPE_SEQUENCE_ENDED,
                body,
            )?)),
            EVENT_TYPE_SEQUENCE_ENDED_TEST => Ok(Self::SequenceEndedTest(read(
                EVENT_TYPE_SEQUENCE_ENDED_TEST,
                body,
            )?)),
            EVENT_TYPE_ENCOUNTER_ENDED => Ok(Self::EncounterEnded(Box::new(read(
                EVENT_TYPE_ENCOUNTER_ENDED,
                body,
            )?))),
            EVENT_TYPE_ENDPOINT_DISABLED => Ok(Self::EndpointDisabled(read(
                EVENT_TYPE_ENDPOINT_DISABLED,
                body,
            )?)),
            _ => Err(EventError::UnknownType),
        }
    }

    /// The event's type, as the `clarion-event-type` header names it.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::SequenceEnded(_) => crate::EVENT_TYPE_SEQUENCE_ENDED,
            Self::SequenceEndedTest(_) => EVENT_TYPE_SEQUENCE_ENDED_TEST,
            Self::EncounterEnded(_) => EVENT_TYPE_ENCOUNTER_ENDED,
            Self::EndpointDisabled(_) => EVENT_TYPE_ENDPOINT_DISABLED,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn each_event_type_parses_into_its_variant_and_names_itself() {
        let report = serde_json::to_vec(&crate::examples::call_only()).unwrap();
        let encounter = serde_json::to_vec(&crate::examples::encounter_ended_sms()).unwrap();
        let disabled = serde_json::to_vec(&crate::examples::endpoint_disabled()).unwrap();
        for (event_type, body) in [
            (Some("sequence.ended"), &report),
            (None, &report),
            (Some("sequence.ended.test"), &report),
            (Some("encounter.ended"), &encounter),
            (Some("endpoint.disabled"), &disabled),
        ] {
            let event = Event::parse(event_type, body).unwrap();
            assert_eq!(event.event_type(), event_type.unwrap_or("sequence.ended"));
        }
        assert!(matches!(
            Event::parse(Some("sequence.started"), &report),
            Err(EventError::UnknownType)
        ));
        assert!(matches!(
            Event::parse(Some("encounter.ended"), &disabled),
            Err(EventError::Body { .. })
        ));
    }

    #[test]
    fn an_encounter_event_carries_its_outreach_entry_unchanged() {
        let report = crate::examples::call_sms_call();
        for step in &report.outreach {
            let event = EncounterEnded::new(report.id, step.clone());
            assert_eq!(&event.outreach_step(), step);
            let entry = serde_json::to_value(step).unwrap();
            let mut value = serde_json::to_value(&event).unwrap();
            assert_eq!(value["sequence_id"], report.id);
            value.as_object_mut().unwrap().remove("sequence_id");
            assert_eq!(value, entry);
        }
    }
}
