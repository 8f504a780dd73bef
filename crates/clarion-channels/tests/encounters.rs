//! Simulated encounters: every outcome's report fields, determinism, variety, the committed
//! JSON Schema, and the analysis counts against an independent recount of the transcript.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use clarion_channels::{
    AssistantProfile, Channel, ContactProfile, CustomField, CustomFieldKind, EncounterOutcome,
    EncounterReport, EncounterRequest, SimulatedEncounter, StatusStep, VoicemailAction, simulate,
    simulated_outcomes,
};
use clarion_webhooks::{
    Call, CallEndedReason, CallOutcome, CallStatus, CallType, FailureReason, SequenceReport,
    SequenceStatus, Sms, SmsEndedReason, SmsStatus, Timestamp,
};
use serde_json::{Value, json};

const CLINIC: &str = "+15555550100";
const PHONE: &str = "+15555550123";
const DAY: Duration = Duration::from_secs(24 * 3600);

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
            CustomField {
                name: "satisfaction".into(),
                kind: CustomFieldKind::Number,
                description: "1-5.".into(),
            },
        ],
    }
}

fn contact() -> ContactProfile {
    let variables = json!({
        "appointment_date": "Thursday, January 8",
        "appointment_time": "10:30 AM",
        "provider_name": "Dr. Patel",
        "callback_number": PHONE,
    });
    ContactProfile {
        name: Some("Alex Rivera".into()),
        phone_number: PHONE.into(),
        variables: variables.as_object().unwrap().clone(),
    }
}

fn anonymous() -> ContactProfile {
    ContactProfile {
        name: None,
        phone_number: PHONE.into(),
        variables: serde_json::Map::new(),
    }
}

fn started() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 6, 15, 0, 0).unwrap() + chrono::TimeDelta::milliseconds(250)
}

fn run_with(
    contact: &ContactProfile,
    sequence_id: i64,
    channel: Channel,
    scripted: Option<EncounterOutcome>,
) -> SimulatedEncounter {
    let assistant = assistant();
    simulate(&EncounterRequest {
        sequence_id,
        encounter_id: 5_000 + sequence_id,
        step: 1,
        attempt: 1,
        channel,
        assistant: &assistant,
        contact,
        clinic_number: CLINIC,
        scripted,
        started_at: started(),
        sms_timeout: DAY,
        voicemail: VoicemailAction::default(),
    })
}

fn run(sequence_id: i64, channel: Channel, outcome: EncounterOutcome) -> SimulatedEncounter {
    run_with(&contact(), sequence_id, channel, Some(outcome))
}

fn call(encounter: &SimulatedEncounter) -> &Call {
    match &encounter.report {
        EncounterReport::Call(call) => call,
        EncounterReport::Sms(_) => panic!("expected a call"),
    }
}

fn sms(encounter: &SimulatedEncounter) -> &Sms {
    match &encounter.report {
        EncounterReport::Sms(sms) => sms,
        EncounterReport::Call(_) => panic!("expected an SMS"),
    }
}

fn ts(offset: Duration) -> Timestamp {
    Timestamp::from_datetime(started() + chrono::TimeDelta::from_std(offset).unwrap())
}

/// (speaker is AI, text) per line; panics on a line without a speaker label.
fn lines(transcript: &str) -> Vec<(bool, &str)> {
    transcript
        .split('\n')
        .map(|line| {
            if let Some(text) = line.strip_prefix("AI: ") {
                (true, text)
            } else if let Some(text) = line.strip_prefix("User: ") {
                (false, text)
            } else {
                panic!("unlabelled line {line:?}")
            }
        })
        .collect()
}

fn user_says(transcript: &str, any_of: &[&str]) -> bool {
    lines(transcript).iter().any(|(ai, text)| {
        !ai && any_of
            .iter()
            .any(|needle| text.to_lowercase().contains(&needle.to_lowercase()))
    })
}

fn assert_no_phone_number(text: &str) {
    assert!(!text.contains(PHONE), "phone number in {text:?}");
    assert!(!text.contains("5555550123"), "phone digits in {text:?}");
}

fn statuses(encounter: &SimulatedEncounter) -> Vec<StatusStep> {
    encounter.status_timeline.iter().map(|(_, s)| *s).collect()
}

fn offset_of(encounter: &SimulatedEncounter, step: StatusStep) -> Option<Duration> {
    encounter
        .status_timeline
        .iter()
        .find(|(_, s)| *s == step)
        .map(|(offset, _)| *offset)
}

struct CallCase {
    outcome: EncounterOutcome,
    call_outcome: CallOutcome,
    failure: Option<FailureReason>,
    ended_reason: CallEndedReason,
    connected: bool,
}

fn call_cases() -> Vec<CallCase> {
    use CallEndedReason as E;
    use EncounterOutcome as S;
    let case = |outcome, call_outcome, failure, ended_reason, connected| CallCase {
        outcome,
        call_outcome,
        failure,
        ended_reason,
        connected,
    };
    vec![
        case(
            S::Resolved,
            CallOutcome::Resolved,
            None,
            E::AssistantEnded,
            true,
        ),
        case(
            S::Unresolved,
            CallOutcome::Unresolved,
            None,
            E::CustomerEnded,
            true,
        ),
        case(
            S::Voicemail,
            CallOutcome::Voicemail,
            None,
            E::Voicemail,
            true,
        ),
        case(
            S::NoAnswer,
            CallOutcome::NoAnswer,
            None,
            E::CustomerDidNotAnswer,
            false,
        ),
        case(S::Busy, CallOutcome::Busy, None, E::CustomerBusy, false),
        case(S::Failed, CallOutcome::Failed, None, E::Failed, false),
        case(
            S::Declined,
            CallOutcome::Unresolved,
            Some(FailureReason::Declined),
            E::CustomerEnded,
            true,
        ),
        case(
            S::Escalated,
            CallOutcome::Unresolved,
            Some(FailureReason::Escalated),
            E::AssistantForwarded,
            true,
        ),
        case(
            S::RequestedCallback,
            CallOutcome::Unresolved,
            Some(FailureReason::RequestedCallback),
            E::CustomerEnded,
            true,
        ),
        case(
            S::CustomerDropped,
            CallOutcome::Unresolved,
            Some(FailureReason::CustomerDropped),
            E::CustomerEnded,
            true,
        ),
        case(
            S::AssistantEnded,
            CallOutcome::Unresolved,
            Some(FailureReason::AssistantEnded),
            E::AssistantEnded,
            true,
        ),
        case(
            S::OptOut,
            CallOutcome::Unresolved,
            Some(FailureReason::OptOut),
            E::CustomerEnded,
            true,
        ),
    ]
}

/// Checks what the transcript says against the outcome.
fn assert_call_content(outcome: EncounterOutcome, transcript: &str) {
    let turns = lines(transcript);
    let (last_is_ai, last) = *turns.last().unwrap();
    let says_date = transcript.contains("Thursday, January 8");
    match outcome {
        EncounterOutcome::Resolved => {
            assert!(last_is_ai && last.ends_with("Goodbye."), "{transcript}");
            assert!(
                says_date && transcript.contains("Dr. Patel"),
                "{transcript}"
            );
            assert!(
                user_says(transcript, &["yes", "yep", "sure"]),
                "{transcript}"
            );
        }
        EncounterOutcome::Unresolved => {
            assert!(says_date, "{transcript}");
            assert!(
                user_says(
                    transcript,
                    &["not sure", "don't know", "can't say", "have to talk"]
                ),
                "{transcript}"
            );
        }
        EncounterOutcome::Declined => {
            assert!(says_date, "{transcript}");
            assert!(
                turns.iter().any(|(ai, t)| !ai && t.starts_with("No")),
                "{transcript}"
            );
        }
        EncounterOutcome::Escalated => {
            assert!(last_is_ai, "{transcript}");
            assert!(
                last.contains("transfer") || last.contains("connect"),
                "{transcript}"
            );
        }
        EncounterOutcome::RequestedCallback => {
            assert!(
                user_says(transcript, &["call me", "call back", "try me again"]),
                "{transcript}"
            );
            assert!(
                turns
                    .iter()
                    .any(|(ai, t)| *ai
                        && (t.contains("call you back") || t.contains("try you again"))),
                "{transcript}"
            );
        }
        EncounterOutcome::CustomerDropped => {
            assert!(last.ends_with('—'), "ends abruptly: {transcript}");
        }
        EncounterOutcome::AssistantEnded => {
            assert!(last_is_ai && last.ends_with("Goodbye."), "{transcript}");
            // Nothing about the appointment is shared with whoever answered.
            assert!(!says_date, "{transcript}");
        }
        EncounterOutcome::OptOut => {
            assert!(
                user_says(
                    transcript,
                    &["stop calling", "take me off", "don't call", "remove me"]
                ),
                "{transcript}"
            );
        }
        _ => {}
    }
    if outcome != EncounterOutcome::Voicemail {
        assert!(turns[0].0, "the assistant speaks first: {transcript}");
        assert!(
            turns[0].1.contains("Riverside Family Clinic"),
            "{transcript}"
        );
        assert!(turns[0].1.contains("Alex"), "{transcript}");
        assert!(turns.iter().any(|(ai, _)| !ai), "{transcript}");
    }
}

#[test]
fn every_call_outcome_produces_a_consistent_call_object() {
    for case in call_cases() {
        for sequence_id in 1..=40 {
            let encounter = run(sequence_id, Channel::Call, case.outcome);
            let call = call(&encounter);
            let context = format!("{} #{sequence_id}", case.outcome);
            assert_eq!(encounter.outcome, case.outcome);

            assert_eq!(call.id, 5_000 + sequence_id);
            assert_eq!(call.assistant_id, 12);
            assert_eq!(call.call_status, CallStatus::Ended);
            assert_eq!(call.call_type, Some(CallType::OutboundPhoneCall));
            assert_eq!(call.source_number.as_deref(), Some(CLINIC));
            assert_eq!(call.destination_number.as_deref(), Some(PHONE));
            assert_eq!(call.outcome.as_ref(), Some(&case.call_outcome), "{context}");
            assert_eq!(call.failure_reason, case.failure, "{context}");
            assert_eq!(
                call.ended_reason.as_ref(),
                Some(&case.ended_reason),
                "{context}"
            );
            assert_eq!(call.started_at, Some(ts(Duration::ZERO)));
            assert_eq!(call.ended_at, Some(ts(encounter.ends_after)));

            // The timeline.
            let timeline = &encounter.status_timeline;
            assert_eq!(timeline[0], (Duration::ZERO, StatusStep::Queued));
            assert_eq!(
                *timeline.last().unwrap(),
                (encounter.ends_after, StatusStep::Ended)
            );
            assert!(timeline.windows(2).all(|w| w[0].0 <= w[1].0), "{context}");
            let expected: &[StatusStep] = match case.outcome {
                EncounterOutcome::Failed => &[StatusStep::Queued, StatusStep::Ended],
                EncounterOutcome::NoAnswer | EncounterOutcome::Busy => {
                    &[StatusStep::Queued, StatusStep::Ringing, StatusStep::Ended]
                }
                EncounterOutcome::Escalated => &[
                    StatusStep::Queued,
                    StatusStep::Ringing,
                    StatusStep::InProgress,
                    StatusStep::Forwarding,
                    StatusStep::Ended,
                ],
                _ => &[
                    StatusStep::Queued,
                    StatusStep::Ringing,
                    StatusStep::InProgress,
                    StatusStep::Ended,
                ],
            };
            assert_eq!(statuses(&encounter), expected, "{context}");
            if let Some(ringing) = offset_of(&encounter, StatusStep::Ringing) {
                let rang_until =
                    offset_of(&encounter, StatusStep::InProgress).unwrap_or(encounter.ends_after);
                let ring = rang_until - ringing;
                let (low, high) = match case.outcome {
                    EncounterOutcome::Busy => (1, 6),
                    _ => (5, 25),
                };
                assert!(
                    ring >= Duration::from_secs(low) && ring <= Duration::from_secs(high),
                    "{context}: rang {ring:?}"
                );
            }

            // Duration: `ended_at − started_at`, for every outcome (rings included, as Vapi's
            // `endedAt − startedAt`); the talk time is the part after the answer.
            let duration = call.duration_ms.unwrap();
            assert_eq!(
                u128::from(duration),
                encounter.ends_after.as_millis(),
                "{context}"
            );
            let answered = offset_of(&encounter, StatusStep::InProgress);
            assert_eq!(answered.is_some(), case.connected, "{context}");
            match answered {
                Some(answered) => {
                    let talk = (encounter.ends_after - answered).as_millis();
                    let (low, high) = match case.outcome {
                        EncounterOutcome::Voicemail => (30_000, 60_000),
                        EncounterOutcome::CustomerDropped | EncounterOutcome::AssistantEnded => {
                            (15_000, 360_000)
                        }
                        EncounterOutcome::Escalated => (40_000, 372_000),
                        _ => (40_000, 360_000),
                    };
                    assert!((low..=high).contains(&talk), "{context}: {talk}");
                }
                None => {
                    assert!(encounter.ends_after <= Duration::from_secs(30), "{context}");
                }
            }

            // Transcript, voicemail, summary.
            let summary = call.summary.as_deref().unwrap();
            assert!(!summary.is_empty() && summary.ends_with('.') && summary.len() < 200);
            assert_no_phone_number(summary);
            let analysis = call.analysis.as_ref().unwrap();
            match case.outcome {
                EncounterOutcome::NoAnswer | EncounterOutcome::Busy | EncounterOutcome::Failed => {
                    assert_eq!(call.transcript, None, "{context}");
                    assert_eq!(call.voicemail_message, None);
                    assert_eq!(analysis.repetition_count, None);
                    assert_eq!(analysis.interruption_count, None);
                }
                EncounterOutcome::Voicemail => {
                    let message = call.voicemail_message.as_deref().unwrap();
                    assert_eq!(call.transcript.as_deref(), Some(&*format!("AI: {message}")));
                    assert!(message.contains("Riverside Family Clinic"), "{message}");
                    assert_no_phone_number(message);
                    assert_eq!(analysis.repetition_count, Some(0));
                    assert_eq!(analysis.interruption_count, Some(0));
                }
                _ => {
                    let transcript = call.transcript.as_deref().unwrap();
                    assert_eq!(call.voicemail_message, None);
                    assert_no_phone_number(transcript);
                    assert_call_content(case.outcome, transcript);
                }
            }

            // Custom analysis fields: one entry each, consistent with the outcome.
            let custom = analysis.custom.as_ref().unwrap();
            let keys: Vec<&str> = custom.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "appointment_confirmed",
                    "attendance",
                    "callback_window",
                    "satisfaction"
                ]
            );
            let expected_bool = match case.outcome {
                EncounterOutcome::Resolved => json!(true),
                EncounterOutcome::Declined => json!(false),
                _ => Value::Null,
            };
            assert_eq!(custom["appointment_confirmed"], expected_bool, "{context}");
            let expected_enum = match case.outcome {
                EncounterOutcome::Resolved => json!("confirmed"),
                EncounterOutcome::Declined => json!("not_attending"),
                // Undecided when the conversation settled nothing about attending.
                EncounterOutcome::Unresolved
                | EncounterOutcome::Escalated
                | EncounterOutcome::RequestedCallback
                | EncounterOutcome::OptOut => json!("unknown"),
                _ => Value::Null,
            };
            assert_eq!(custom["attendance"], expected_enum, "{context}");
            if case.outcome == EncounterOutcome::RequestedCallback {
                let window = custom["callback_window"].as_str().unwrap();
                assert!(call.transcript.as_deref().unwrap().contains(window));
                assert!(summary.contains(window));
            } else {
                assert_eq!(custom["callback_window"], Value::Null, "{context}");
            }
            let score = &custom["satisfaction"];
            assert!(score.is_null() || (1..=5).contains(&score.as_u64().unwrap()));
            assert_eq!(
                score.is_null(),
                !call_has_conversation(case.outcome),
                "{context}"
            );
        }
    }
}

fn call_has_conversation(outcome: EncounterOutcome) -> bool {
    matches!(
        outcome,
        EncounterOutcome::Resolved
            | EncounterOutcome::Unresolved
            | EncounterOutcome::Declined
            | EncounterOutcome::Escalated
            | EncounterOutcome::RequestedCallback
            | EncounterOutcome::OptOut
    )
}

#[test]
fn every_sms_outcome_produces_a_consistent_sms_object() {
    let cases = [
        (EncounterOutcome::Resolved, SmsEndedReason::Resolved),
        (
            EncounterOutcome::NoReply,
            SmsEndedReason::ConversationTimeout,
        ),
        (EncounterOutcome::Declined, SmsEndedReason::ContactDeclined),
        (EncounterOutcome::OptOut, SmsEndedReason::ContactOptOut),
        (EncounterOutcome::Error, SmsEndedReason::SystemError),
    ];
    for (outcome, ended_reason) in cases {
        for sequence_id in 1..=40 {
            let encounter = run(sequence_id, Channel::Sms, outcome);
            let sms = sms(&encounter);
            let context = format!("sms {outcome} #{sequence_id}");
            assert_eq!(encounter.outcome, outcome);
            assert_eq!(sms.id, 5_000 + sequence_id);
            assert_eq!(sms.assistant_id, 12);
            assert_eq!(sms.status, SmsStatus::Ended);
            assert_eq!(sms.ended_reason, Some(ended_reason), "{context}");
            assert_eq!(sms.source_number.as_deref(), Some(CLINIC));
            assert_eq!(sms.destination_number.as_deref(), Some(PHONE));
            assert_eq!(sms.started_at, Some(ts(Duration::ZERO)));
            assert_eq!(sms.ended_at, Some(ts(encounter.ends_after)));
            assert_eq!(
                encounter.status_timeline,
                vec![
                    (Duration::ZERO, StatusStep::Active),
                    (encounter.ends_after, StatusStep::Ended)
                ]
            );

            let transcript = sms.transcript.as_deref().unwrap();
            assert_no_phone_number(transcript);
            let turns = lines(transcript);
            let opening = turns[0];
            assert!(opening.0, "{context}");
            assert!(
                opening.1.contains("Riverside Family Clinic"),
                "{transcript}"
            );
            assert!(opening.1.contains("Alex"), "{transcript}");
            assert!(opening.1.contains("Thursday, January 8"), "{transcript}");
            assert!(opening.1.contains("STOP"), "{transcript}");
            let replies: Vec<&str> = turns.iter().filter(|t| !t.0).map(|t| t.1).collect();
            let summary = sms.summary.as_deref().unwrap();
            assert_no_phone_number(summary);
            match outcome {
                EncounterOutcome::NoReply => {
                    assert_eq!(turns.len(), 1, "only the opening: {transcript}");
                    assert_eq!(encounter.ends_after, DAY);
                    assert!(summary.contains("24 hours"), "{summary}");
                }
                EncounterOutcome::Error => {
                    assert!(turns.len() <= 2, "{transcript}");
                    assert!(encounter.ends_after < Duration::from_secs(5 * 3600));
                    assert!(summary.contains("error"), "{summary}");
                }
                _ => {
                    assert!(!turns.last().unwrap().1.is_empty());
                    assert!(turns.last().unwrap().0, "the assistant answers last");
                    let last_reply = replies.last().unwrap().to_lowercase();
                    match outcome {
                        EncounterOutcome::Resolved => assert!(
                            last_reply.starts_with('y') || last_reply.contains("yes"),
                            "{transcript}"
                        ),
                        EncounterOutcome::Declined => assert!(
                            last_reply.starts_with("no")
                                || last_reply.contains("cancel")
                                || last_reply.contains("not interested"),
                            "{transcript}"
                        ),
                        _ => assert!(
                            ["stop", "unsubscribe", "take me off"]
                                .iter()
                                .any(|w| last_reply.contains(w)),
                            "{transcript}"
                        ),
                    }
                    // Replies come minutes to hours later, before the timeout.
                    assert!(
                        encounter.ends_after >= Duration::from_secs(120),
                        "{context}"
                    );
                    assert!(encounter.ends_after < DAY, "{context}");
                }
            }

            let custom = sms.analysis.as_ref().unwrap().custom.as_ref().unwrap();
            assert_eq!(custom.len(), 4);
            let expected_bool = match outcome {
                EncounterOutcome::Resolved => json!(true),
                EncounterOutcome::Declined => json!(false),
                _ => Value::Null,
            };
            assert_eq!(custom["appointment_confirmed"], expected_bool, "{context}");
            let expected_enum = match outcome {
                EncounterOutcome::Resolved => json!("confirmed"),
                EncounterOutcome::Declined => json!("not_attending"),
                EncounterOutcome::NoReply | EncounterOutcome::Error => Value::Null,
                _ => json!("unknown"),
            };
            assert_eq!(custom["attendance"], expected_enum, "{context}");
        }
    }
}

#[test]
fn sms_replies_fit_inside_a_short_timeout() {
    let assistant = assistant();
    let contact = contact();
    for sequence_id in 1..=50 {
        let timeout = Duration::from_secs(30 * 60);
        let encounter = simulate(&EncounterRequest {
            sequence_id,
            encounter_id: 1,
            step: 2,
            attempt: 1,
            channel: Channel::Sms,
            assistant: &assistant,
            contact: &contact,
            clinic_number: CLINIC,
            scripted: Some(EncounterOutcome::Resolved),
            started_at: started(),
            sms_timeout: timeout,
            voicemail: VoicemailAction::default(),
        });
        assert!(encounter.ends_after < timeout, "{:?}", encounter.ends_after);
    }
}

#[test]
fn a_contact_without_name_or_variables_gets_generic_wording() {
    for outcome in EncounterOutcome::CALL {
        for sequence_id in 1..=10 {
            let encounter = run_with(&anonymous(), sequence_id, Channel::Call, Some(outcome));
            let call = call(&encounter);
            for text in [call.transcript.as_deref(), call.summary.as_deref()]
                .into_iter()
                .flatten()
            {
                assert!(
                    !text.contains("Alex") && !text.contains("Dr. Patel"),
                    "{text}"
                );
                assert!(!text.contains("appointment on"), "{text}");
                assert!(!text.contains("{") && !text.contains("  "), "{text}");
            }
            if call_has_conversation(outcome) && outcome != EncounterOutcome::OptOut {
                let transcript = call.transcript.as_deref().unwrap();
                assert!(
                    transcript.contains("confirm the upcoming appointment"),
                    "follows the purpose: {transcript}"
                );
            }
        }
    }
    for outcome in EncounterOutcome::SMS {
        let encounter = run_with(&anonymous(), 3, Channel::Sms, Some(outcome));
        let transcript = sms(&encounter).transcript.clone().unwrap();
        assert!(
            transcript.contains("confirm the upcoming appointment"),
            "{transcript}"
        );
        assert!(!transcript.contains("Alex"), "{transcript}");
    }
}

#[test]
fn variables_that_contain_the_phone_number_are_not_used() {
    let mut contact = contact();
    contact.variables.insert(
        "provider_name".into(),
        json!("the nurse line at (555) 555-0123"),
    );
    contact.name = Some(PHONE.into());
    for outcome in EncounterOutcome::CALL {
        for sequence_id in 1..=10 {
            let encounter = run_with(&contact, sequence_id, Channel::Call, Some(outcome));
            let call = call(&encounter);
            for text in [call.transcript.as_deref(), call.summary.as_deref()]
                .into_iter()
                .flatten()
            {
                assert_no_phone_number(text);
                assert!(!text.contains("nurse line"), "{text}");
            }
        }
    }
}

#[test]
fn unscripted_encounters_follow_pick_outcome() {
    for sequence_id in 1..=30 {
        for channel in Channel::ALL {
            let encounter = run_with(&contact(), sequence_id, channel, None);
            assert_eq!(
                encounter.outcome,
                clarion_channels::pick_outcome(sequence_id, 1, 1, channel)
            );
            assert_eq!(encounter.report.channel(), channel);
        }
    }
    // A scripted outcome the channel lacks is mapped, not rejected.
    let encounter = run(1, Channel::Sms, EncounterOutcome::Voicemail);
    assert_eq!(encounter.outcome, EncounterOutcome::NoReply);
}

#[test]
fn the_same_request_gives_byte_identical_output() {
    for channel in Channel::ALL {
        for &outcome in simulated_outcomes(channel) {
            for sequence_id in [1, 77, 123_456_789] {
                let a = run(sequence_id, channel, outcome);
                let b = run(sequence_id, channel, outcome);
                assert_eq!(a, b);
                assert_eq!(
                    serde_json::to_string(&a.report).unwrap(),
                    serde_json::to_string(&b.report).unwrap()
                );
            }
        }
    }
}

#[test]
fn different_sequences_read_differently() {
    for channel in Channel::ALL {
        for &outcome in simulated_outcomes(channel) {
            let transcripts: BTreeSet<String> = (1..=30)
                .filter_map(|id| {
                    run(id, channel, outcome)
                        .report
                        .transcript()
                        .map(str::to_owned)
                })
                .collect();
            let summaries: BTreeSet<String> = (1..=30)
                .filter_map(|id| {
                    run(id, channel, outcome)
                        .report
                        .summary()
                        .map(str::to_owned)
                })
                .collect();
            let minimum = match outcome {
                EncounterOutcome::NoAnswer | EncounterOutcome::Busy | EncounterOutcome::Failed => 0,
                EncounterOutcome::Voicemail
                | EncounterOutcome::NoReply
                | EncounterOutcome::Error => 3,
                EncounterOutcome::AssistantEnded => 8,
                _ => 20,
            };
            assert!(
                transcripts.len() >= minimum,
                "{channel} {outcome}: only {} distinct transcripts of 30",
                transcripts.len()
            );
            assert!(
                summaries.len() >= 2,
                "{channel} {outcome}: one summary for all"
            );
        }
    }
}

/// The counting rules, written again independently of the crate.
fn recount(transcript: &str) -> (u32, u32) {
    let mut earlier_ai_sentences: Vec<String> = Vec::new();
    let mut repetitions = 0;
    let mut interruptions = 0;
    let mut previous_ai_cut = false;
    for (is_ai, text) in lines(transcript) {
        if is_ai {
            let mut sentences = Vec::new();
            let mut current = String::new();
            let chars: Vec<char> = text.chars().collect();
            for (i, &c) in chars.iter().enumerate() {
                current.push(c);
                let ends = matches!(c, '.' | '?' | '!')
                    && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
                if ends {
                    sentences.push(std::mem::take(&mut current));
                }
            }
            sentences.push(current);
            let sentences: Vec<String> = sentences
                .iter()
                .map(|s| {
                    s.split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .to_lowercase()
                })
                .filter(|s| s.split_whitespace().count() >= 4)
                .collect();
            if sentences.iter().any(|s| earlier_ai_sentences.contains(s)) {
                repetitions += 1;
            }
            earlier_ai_sentences.extend(sentences);
            previous_ai_cut = text.ends_with('—');
        } else {
            let marked = [
                "Sorry—",
                "Wait—",
                "Hold on—",
                "Hang on—",
                "Sorry to interrupt",
            ]
            .iter()
            .any(|m| text.starts_with(m));
            if marked || previous_ai_cut {
                interruptions += 1;
            }
            previous_ai_cut = false;
        }
    }
    (repetitions, interruptions)
}

#[test]
fn repetition_and_interruption_counts_match_a_recount_and_vary() {
    let mut repetitions_seen = BTreeSet::new();
    let mut interruptions_seen = BTreeSet::new();
    for outcome in EncounterOutcome::CALL {
        for sequence_id in 1..=150 {
            let encounter = run(sequence_id, Channel::Call, outcome);
            let call = call(&encounter);
            let analysis = call.analysis.as_ref().unwrap();
            let Some(transcript) = call.transcript.as_deref() else {
                continue;
            };
            let (repetitions, interruptions) = recount(transcript);
            assert_eq!(analysis.repetition_count, Some(repetitions), "{transcript}");
            assert_eq!(
                analysis.interruption_count,
                Some(interruptions),
                "{transcript}"
            );
            assert_eq!(
                clarion_channels::analysis::count_repetitions(transcript),
                repetitions
            );
            repetitions_seen.insert(repetitions);
            interruptions_seen.insert(interruptions);
        }
    }
    assert!(repetitions_seen.contains(&0) && repetitions_seen.contains(&1));
    assert!(interruptions_seen.contains(&0) && interruptions_seen.contains(&1));
}

fn schema_validator() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas/end-of-sequence-report.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

#[test]
fn reports_validate_against_the_committed_schema() {
    let validator = schema_validator();
    for channel in Channel::ALL {
        for &outcome in simulated_outcomes(channel) {
            for sequence_id in 1..=5 {
                for contact in [contact(), anonymous()] {
                    let encounter = run_with(&contact, sequence_id, channel, Some(outcome));
                    let report = SequenceReport {
                        id: sequence_id,
                        status: SequenceStatus::Ended,
                        outcome_description: None,
                        last_updated: ts(encounter.ends_after),
                        outreach: vec![encounter.report.to_outreach_step(1)],
                    };
                    let instance = serde_json::to_value(&report).unwrap();
                    let errors: Vec<String> = validator
                        .iter_errors(&instance)
                        .map(|e| format!("{e} at {}", e.instance_path()))
                        .collect();
                    assert!(errors.is_empty(), "{channel} {outcome}: {errors:?}");
                    // Every documented key is present.
                    let object = &instance["outreach"][0][channel.as_str()];
                    let expected = if channel == Channel::Call { 16 } else { 11 };
                    assert_eq!(object.as_object().unwrap().len(), expected);
                }
            }
        }
    }
}

/// Issue 14, defect 10: a report's `duration_ms` is `ended_at − started_at`, whichever
/// provider carried the call. The simulator once counted from the answer while stamping
/// `started_at` before the rings, so its reports disagreed with themselves.
#[test]
fn every_simulated_call_lasts_exactly_from_started_at_to_ended_at() {
    for &outcome in simulated_outcomes(Channel::Call) {
        for sequence_id in 1..=60 {
            for scripted in [Some(outcome), None] {
                let encounter = run_with(&contact(), sequence_id, Channel::Call, scripted);
                let call = call(&encounter);
                let context = format!("{} #{sequence_id} scripted={scripted:?}", encounter.outcome);
                let started = call.started_at.unwrap().unix_millis();
                let ended = call.ended_at.unwrap().unix_millis();
                assert_eq!(
                    call.duration_ms.map(i64::try_from),
                    Some(Ok(ended - started)),
                    "{context}"
                );
            }
        }
    }
}

/// Issue 14, defect 7: the simulator's transcripts carry spoken opt-outs as Vapi's would, and
/// the one revocation detector agrees with the simulated outcome: the patient's lines revoke
/// consent in every opt-out call and in no other call, and no SMS patient line that is not an
/// opt-out reads as one (an SMS opt-out is a keyword or a revocation in words).
#[test]
fn the_revocation_detector_agrees_with_every_simulated_outcome() {
    use clarion_channels::revocation::{in_transcript, in_utterance};
    for &outcome in simulated_outcomes(Channel::Call) {
        for sequence_id in 1..=80 {
            let encounter = run(sequence_id, Channel::Call, outcome);
            let detected = call(&encounter)
                .transcript
                .as_deref()
                .and_then(in_transcript)
                .is_some();
            assert_eq!(
                detected,
                outcome == EncounterOutcome::OptOut,
                "{outcome} #{sequence_id}: {:?}",
                call(&encounter).transcript
            );
        }
    }
    for &outcome in simulated_outcomes(Channel::Sms) {
        for sequence_id in 1..=80 {
            let encounter = run(sequence_id, Channel::Sms, outcome);
            let transcript = sms(&encounter).transcript.clone().unwrap_or_default();
            let patient: Vec<&str> = lines(&transcript)
                .into_iter()
                .filter(|(ai, _)| !ai)
                .map(|(_, text)| text)
                .collect();
            let opted_out = patient.iter().any(|text| {
                in_utterance(text).is_some()
                    || ["STOP", "UNSUBSCRIBE"].contains(&text.trim().to_uppercase().as_str())
            });
            assert_eq!(
                opted_out,
                outcome == EncounterOutcome::OptOut,
                "{outcome} #{sequence_id}: {transcript}"
            );
        }
    }
}

/// The step's voicemail policy shapes a voicemail call: its own message left word for word,
/// or a hang-up with nothing said; other outcomes are untouched by it.
#[test]
fn the_voicemail_policy_leaves_the_steps_message_or_hangs_up() {
    let assistant = assistant();
    let contact = contact();
    let call = |voicemail: VoicemailAction, outcome: EncounterOutcome| {
        let encounter = simulate(&EncounterRequest {
            sequence_id: 77,
            encounter_id: 5_077,
            step: 1,
            attempt: 1,
            channel: Channel::Call,
            assistant: &assistant,
            contact: &contact,
            clinic_number: CLINIC,
            scripted: Some(outcome),
            started_at: started(),
            sms_timeout: DAY,
            voicemail,
        });
        match encounter.report {
            EncounterReport::Call(call) => call,
            EncounterReport::Sms(_) => panic!("a call step gave an SMS"),
        }
    };
    let message = "This is Riverside Family Clinic. Please call us back at 555-0100.";
    let left = call(VoicemailAction::Leave(message), EncounterOutcome::Voicemail);
    assert_eq!(left.voicemail_message.as_deref(), Some(message));
    assert_eq!(
        left.transcript.as_deref(),
        Some(format!("AI: {message}").as_str())
    );

    let hung_up = call(VoicemailAction::HangUp, EncounterOutcome::Voicemail);
    assert_eq!(hung_up.voicemail_message, None);
    assert_eq!(hung_up.transcript, None);
    assert!(
        hung_up
            .summary
            .unwrap()
            .contains("without leaving a message")
    );

    let default = call(VoicemailAction::default(), EncounterOutcome::Voicemail);
    assert!(default.voicemail_message.is_some());

    let answered = call(VoicemailAction::HangUp, EncounterOutcome::Resolved);
    assert!(
        answered.transcript.is_some(),
        "a human answered: the policy does not apply"
    );
}
