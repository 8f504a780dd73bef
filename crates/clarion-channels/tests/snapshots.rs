//! Complete simulated encounters, pinned. Review a changed snapshot by reading it: the
//! transcript must fit the outcome and the numbers must agree with each other.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{TimeZone, Utc};
use clarion_channels::{
    AssistantProfile, Channel, ContactProfile, CustomField, CustomFieldKind, EncounterOutcome,
    EncounterRequest, SimulatedEncounter, simulate,
};
use serde_json::{Value, json};

fn assistant() -> AssistantProfile {
    AssistantProfile {
        id: 12,
        name: "Appointment reminder".into(),
        purpose: "confirm the upcoming appointment".into(),
        organisation_name: "Riverside Family Clinic".into(),
        custom_fields: vec![
            CustomField {
                name: "appointment_confirmed".into(),
                kind: CustomFieldKind::Boolean,
                description: "Whether the patient confirmed.".into(),
            },
            CustomField {
                name: "attendance".into(),
                kind: CustomFieldKind::Enum(vec![
                    "confirmed".into(),
                    "not_attending".into(),
                    "unknown".into(),
                ]),
                description: "What the patient said about attending.".into(),
            },
            CustomField {
                name: "callback_window".into(),
                kind: CustomFieldKind::String,
                description: "When to call back, if asked.".into(),
            },
        ],
    }
}

fn contact() -> ContactProfile {
    ContactProfile {
        name: Some("Jordan Lee".into()),
        phone_number: "+15555550123".into(),
        variables: json!({
            "appointment_date": "Thursday, January 8",
            "appointment_time": "10:30 AM",
            "provider_name": "Dr. Patel",
            "location": "the Main Street office",
        })
        .as_object()
        .unwrap()
        .clone(),
    }
}

fn encounter(sequence_id: i64, channel: Channel, outcome: EncounterOutcome) -> SimulatedEncounter {
    let assistant = assistant();
    let contact = contact();
    simulate(&EncounterRequest {
        sequence_id,
        encounter_id: 5_001,
        step: 1,
        attempt: 1,
        channel,
        assistant: &assistant,
        contact: &contact,
        clinic_number: "+15555550100",
        scripted: Some(outcome),
        started_at: Utc.with_ymd_and_hms(2026, 1, 6, 15, 0, 3).unwrap(),
        sms_timeout: Duration::from_secs(24 * 3600),
        voicemail: clarion_channels::VoicemailAction::default(),
    })
}

/// The encounter as JSON, offsets in milliseconds.
fn view(encounter: &SimulatedEncounter) -> Value {
    json!({
        "outcome": encounter.outcome,
        "status_timeline": encounter
            .status_timeline
            .iter()
            .map(|(offset, status)| json!([offset.as_millis() as u64, status]))
            .collect::<Vec<_>>(),
        "ends_after_ms": encounter.ends_after.as_millis() as u64,
        "report": encounter.report,
    })
}

#[test]
fn resolved_call() {
    insta::assert_json_snapshot!(view(&encounter(
        1042,
        Channel::Call,
        EncounterOutcome::Resolved
    )));
}

#[test]
fn requested_callback_call() {
    insta::assert_json_snapshot!(view(&encounter(
        1043,
        Channel::Call,
        EncounterOutcome::RequestedCallback
    )));
}

#[test]
fn escalated_call() {
    insta::assert_json_snapshot!(view(&encounter(
        1044,
        Channel::Call,
        EncounterOutcome::Escalated
    )));
}

#[test]
fn voicemail_call() {
    insta::assert_json_snapshot!(view(&encounter(
        1045,
        Channel::Call,
        EncounterOutcome::Voicemail
    )));
}

#[test]
fn no_answer_call() {
    insta::assert_json_snapshot!(view(&encounter(
        1046,
        Channel::Call,
        EncounterOutcome::NoAnswer
    )));
}

#[test]
fn resolved_sms() {
    insta::assert_json_snapshot!(view(&encounter(
        1047,
        Channel::Sms,
        EncounterOutcome::Resolved
    )));
}

#[test]
fn no_reply_sms() {
    insta::assert_json_snapshot!(view(&encounter(
        1048,
        Channel::Sms,
        EncounterOutcome::NoReply
    )));
}

#[test]
fn opt_out_sms() {
    insta::assert_json_snapshot!(view(&encounter(
        1049,
        Channel::Sms,
        EncounterOutcome::OptOut
    )));
}
