//! Example reports, for receivers' tests and for Clarion's "send a test report" button.
//!
//! All data is synthetic: names are invented and phone numbers are in the 555-01xx range that
//! is reserved for fiction. The same reports are committed as JSON files under
//! `schemas/examples/` in Clarion's repository.

use serde_json::{Map, Value, json};

use crate::{
    Call, CallAnalysis, CallEndedReason, CallOutcome, CallStatus, CallType, EncounterEnded,
    EndpointDisabled, FailureReason, OutreachStep, SequenceReport, SequenceStatus, Sms,
    SmsAnalysis, SmsEndedReason, SmsStatus, Timestamp,
};

const CLINIC_NUMBER: &str = "+15555550100";
const PATIENT_NUMBER: &str = "+15555550123";

fn at(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|_| unreachable!("example timestamps are valid RFC 3339"))
}

fn custom(value: Value) -> Option<Map<String, Value>> {
    value.as_object().cloned()
}

/// A one-step sequence: a single call that confirmed the appointment.
pub fn call_only() -> SequenceReport {
    SequenceReport {
        id: 1042,
        status: SequenceStatus::Ended,
        outcome_description: Some(
            "Resolved on step 1 (call): the patient confirmed the appointment.".to_owned(),
        ),
        last_updated: at("2026-01-06T15:02:41.512Z"),
        outreach: vec![OutreachStep::call(
            1,
            Call {
                id: 5001,
                assistant_id: 12,
                started_at: Some(at("2026-01-06T15:00:03.250Z")),
                ended_at: Some(at("2026-01-06T15:02:41.250Z")),
                call_status: CallStatus::Ended,
                duration_ms: Some(158_000),
                ended_reason: Some(CallEndedReason::AssistantEnded),
                transcript: Some(
                    "AI: Hello, this is the assistant calling from Riverside Family Clinic. Am I speaking with Alex?\n\
                     User: Yes, this is Alex.\n\
                     AI: You have an appointment on Thursday, January 8 at 10:30 AM with Dr. Patel. Will you be able to attend?\n\
                     User: Yes, I'll be there.\n\
                     AI: Thank you, your appointment is confirmed. Goodbye."
                        .to_owned(),
                ),
                source_number: Some(CLINIC_NUMBER.to_owned()),
                destination_number: Some(PATIENT_NUMBER.to_owned()),
                call_type: Some(CallType::OutboundPhoneCall),
                analysis: Some(CallAnalysis {
                    repetition_count: Some(0),
                    interruption_count: Some(0),
                    custom: custom(json!({ "appointment_confirmed": true })),
                }),
                summary: Some("The patient confirmed the appointment on January 8.".to_owned()),
                outcome: Some(CallOutcome::Resolved),
                failure_reason: None,
                voicemail_message: None,
            },
        )],
    }
}

/// A three-step sequence: a call that reached voicemail, an SMS conversation that got no
/// reply, then a call where the patient asked to be called back.
pub fn call_sms_call() -> SequenceReport {
    SequenceReport {
        id: 1043,
        status: SequenceStatus::Ended,
        outcome_description: Some(
            "All 3 steps done without resolution; last step 3 (call): the patient requested a callback."
                .to_owned(),
        ),
        last_updated: at("2026-01-07T19:11:12.004Z"),
        outreach: vec![
            OutreachStep::call(
                1,
                Call {
                    id: 5002,
                    assistant_id: 12,
                    started_at: Some(at("2026-01-06T15:00:02.000Z")),
                    ended_at: Some(at("2026-01-06T15:00:49.500Z")),
                    call_status: CallStatus::Ended,
                    duration_ms: Some(47_500),
                    ended_reason: Some(CallEndedReason::Voicemail),
                    transcript: Some(
                        "AI: Hello, this is the assistant calling from Riverside Family Clinic with a message for Jordan. Please call us back at your convenience."
                            .to_owned(),
                    ),
                    source_number: Some(CLINIC_NUMBER.to_owned()),
                    destination_number: Some(PATIENT_NUMBER.to_owned()),
                    call_type: Some(CallType::OutboundPhoneCall),
                    analysis: Some(CallAnalysis {
                        repetition_count: Some(0),
                        interruption_count: Some(0),
                        custom: custom(json!({ "appointment_confirmed": null })),
                    }),
                    summary: Some("The call reached voicemail; a callback message was left.".to_owned()),
                    outcome: Some(CallOutcome::Voicemail),
                    failure_reason: None,
                    voicemail_message: Some(
                        "Hello, this is Riverside Family Clinic with a message for Jordan. Please call us back at your convenience."
                            .to_owned(),
                    ),
                },
            ),
            OutreachStep::sms(
                2,
                Sms {
                    id: 5003,
                    assistant_id: 13,
                    started_at: Some(at("2026-01-06T19:00:00.000Z")),
                    ended_at: Some(at("2026-01-07T19:00:00.000Z")),
                    status: SmsStatus::Ended,
                    ended_reason: Some(SmsEndedReason::ConversationTimeout),
                    transcript: Some(
                        "AI: Hi Jordan, this is Riverside Family Clinic. Please reply YES to confirm your appointment on Jan 8 at 10:30 AM, or NO to cancel. Reply STOP to opt out."
                            .to_owned(),
                    ),
                    source_number: Some(CLINIC_NUMBER.to_owned()),
                    destination_number: Some(PATIENT_NUMBER.to_owned()),
                    analysis: Some(SmsAnalysis {
                        custom: custom(json!({ "appointment_confirmed": null })),
                    }),
                    summary: Some("The patient did not reply within 24 hours.".to_owned()),
                },
            ),
            OutreachStep::call(
                3,
                Call {
                    id: 5004,
                    assistant_id: 12,
                    started_at: Some(at("2026-01-07T19:10:01.000Z")),
                    ended_at: Some(at("2026-01-07T19:11:11.750Z")),
                    call_status: CallStatus::Ended,
                    duration_ms: Some(70_750),
                    ended_reason: Some(CallEndedReason::CustomerEnded),
                    transcript: Some(
                        "AI: Hello, this is the assistant calling from Riverside Family Clinic. Am I speaking with Jordan?\n\
                         User: Yes, but I'm driving right now.\n\
                         AI: I'm calling about your appointment on January 8. Would you like us to call you back later?\n\
                         User: Yes, please call me tomorrow morning.\n\
                         AI: Of course. We'll call you back tomorrow morning. Drive safely."
                            .to_owned(),
                    ),
                    source_number: Some(CLINIC_NUMBER.to_owned()),
                    destination_number: Some(PATIENT_NUMBER.to_owned()),
                    call_type: Some(CallType::OutboundPhoneCall),
                    analysis: Some(CallAnalysis {
                        repetition_count: Some(1),
                        interruption_count: Some(1),
                        custom: custom(json!({ "appointment_confirmed": null, "callback_window": "tomorrow morning" })),
                    }),
                    summary: Some("The patient was driving and asked to be called back tomorrow morning.".to_owned()),
                    outcome: Some(CallOutcome::Unresolved),
                    failure_reason: Some(FailureReason::RequestedCallback),
                    voicemail_message: None,
                },
            ),
        ],
    }
}

/// A sequence cancelled before its first step ran: no outreach at all.
pub fn cancelled() -> SequenceReport {
    SequenceReport {
        id: 1044,
        status: SequenceStatus::Ended,
        outcome_description: Some(
            "Cancelled through the API before step 1 ran; no contact was made.".to_owned(),
        ),
        last_updated: at("2026-01-06T14:12:09.330Z"),
        outreach: Vec::new(),
    }
}

/// Every example with the file name it is committed under in `schemas/examples/`.
pub fn all() -> Vec<(&'static str, SequenceReport)> {
    vec![
        ("call-only.json", call_only()),
        ("call-sms-call.json", call_sms_call()),
        ("cancelled.json", cancelled()),
    ]
}

/// An `encounter.ended` event: the first call of [`call_sms_call`], as it was sent when the
/// call ended.
pub fn encounter_ended_call() -> EncounterEnded {
    let report = call_sms_call();
    let step = report.outreach[0].clone();
    EncounterEnded::new(report.id, step)
}

/// An `encounter.ended` event: the SMS conversation of [`call_sms_call`].
pub fn encounter_ended_sms() -> EncounterEnded {
    let report = call_sms_call();
    let step = report.outreach[1].clone();
    EncounterEnded::new(report.id, step)
}

/// An `endpoint.disabled` event.
pub fn endpoint_disabled() -> EndpointDisabled {
    EndpointDisabled {
        endpoint_id: 77,
        url: "https://receiver.example.com/clarion".to_owned(),
        reason: "every attempt failed for 5days".to_owned(),
        failing_since: at("2026-01-01T09:00:00.000Z"),
        disabled_at: at("2026-01-06T09:00:12.250Z"),
    }
}

/// Every event example (other than reports) with its event type and the file name it is
/// committed under in `schemas/examples/`.
pub fn events() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "encounter-ended-call.json",
            crate::EVENT_TYPE_ENCOUNTER_ENDED,
            json_of(&encounter_ended_call()),
        ),
        (
            "encounter-ended-sms.json",
            crate::EVENT_TYPE_ENCOUNTER_ENDED,
            json_of(&encounter_ended_sms()),
        ),
        (
            "endpoint-disabled.json",
            crate::EVENT_TYPE_ENDPOINT_DISABLED,
            json_of(&endpoint_disabled()),
        ),
    ]
}

/// An `encounter.eligibility` request: the second attempt of step 1 (a call) of sequence
/// 1043.
pub fn encounter_eligibility() -> crate::EligibilityRequest {
    crate::EligibilityRequest::new(
        1043,
        Some("pt-000184".to_owned()),
        1,
        2,
        crate::OutreachType::Call,
    )
}

/// An eligibility hook's answer: not eligible, skip the step.
pub fn eligibility_answer() -> crate::EligibilityAnswer {
    crate::EligibilityAnswer::not_eligible(
        "appointment already confirmed",
        crate::IneligibleAction::SkipStep,
    )
}

/// The eligibility check's examples (request and answer) with the schema file each validates
/// against and the file name it is committed under in `schemas/examples/`.
pub fn eligibility() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "encounter-eligibility.json",
            "encounter-eligibility.schema.json",
            json_of(&encounter_eligibility()),
        ),
        (
            "encounter-eligibility-answer.json",
            "encounter-eligibility-answer.schema.json",
            json_of(&eligibility_answer()),
        ),
    ]
}

fn json_of(event: &impl serde::Serialize) -> Value {
    serde_json::to_value(event).unwrap_or_else(|_| unreachable!("example events always serialise"))
}
