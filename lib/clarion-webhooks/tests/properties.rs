//! Property tests for the parts of this crate that meet untrusted input (issue 14, "Build into
//! CI"): the report deserialiser, the signature verifier, secrets and timestamps never panic on
//! arbitrary input, and what Clarion writes reads back unchanged (a report serialised then
//! deserialised is equal; a body signed then verified passes, and any change to it fails).
//!
//! Case counts are modest (256 per property) so that the file runs in seconds in `cargo test`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use clarion_webhooks::{
    Call, CallAnalysis, CallEndedReason, CallOutcome, CallStatus, CallType, FailureReason,
    OutreachStep, Secret, SequenceReport, SequenceStatus, Sms, SmsAnalysis, SmsEndedReason,
    SmsStatus, Timestamp, Verifier, WebhookHeaders, sign_header,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// The instants whose RFC 3339 text has a four-digit year (0000-01-01 to 9999-12-31), which is
/// every instant a report can carry: the API bounds durations so that sums stay inside it.
const MIN_MILLIS: i64 = -62_167_219_200_000;
const MAX_MILLIS: i64 = 253_402_300_799_999;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (MIN_MILLIS..=MAX_MILLIS).prop_map(|millis| Timestamp::from_unix_millis(millis).unwrap())
}

/// Any text, including the values the open enums know, so that both kinds round trip.
fn open_text(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(known).prop_map(str::to_owned),
        "\\PC{0,12}",
    ]
}

fn custom() -> impl Strategy<Value = Option<Map<String, Value>>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    proptest::option::of(
        proptest::collection::btree_map("[a-z_]{1,8}", leaf, 0..4)
            .prop_map(|entries| entries.into_iter().collect::<Map<String, Value>>()),
    )
}

fn text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("\\PC{0,40}")
}

fn call() -> impl Strategy<Value = Call> {
    (
        (any::<i64>(), any::<i64>()),
        (
            proptest::option::of(timestamp()),
            proptest::option::of(timestamp()),
        ),
        proptest::sample::select(vec![
            CallStatus::Queued,
            CallStatus::Ringing,
            CallStatus::InProgress,
            CallStatus::Forwarding,
            CallStatus::Ended,
        ]),
        proptest::option::of(any::<u64>()),
        proptest::option::of(open_text(CallEndedReason::KNOWN)),
        (text(), text(), text(), text(), text()),
        proptest::option::of(open_text(CallType::KNOWN)),
        proptest::option::of((
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            custom(),
        )),
        proptest::option::of(open_text(CallOutcome::KNOWN)),
        proptest::option::of(proptest::sample::select(vec![
            FailureReason::Declined,
            FailureReason::Escalated,
            FailureReason::RequestedCallback,
            FailureReason::CustomerDropped,
            FailureReason::AssistantEnded,
            FailureReason::OptOut,
        ])),
    )
        .prop_map(
            |(
                (id, assistant_id),
                (started_at, ended_at),
                call_status,
                duration_ms,
                ended_reason,
                (transcript, source_number, destination_number, summary, voicemail_message),
                call_type,
                analysis,
                outcome,
                failure_reason,
            )| Call {
                id,
                assistant_id,
                started_at,
                ended_at,
                call_status,
                duration_ms,
                ended_reason: ended_reason.as_deref().map(CallEndedReason::from),
                transcript,
                source_number,
                destination_number,
                call_type: call_type.as_deref().map(CallType::from),
                analysis: analysis.map(|(repetition_count, interruption_count, custom)| {
                    CallAnalysis {
                        repetition_count,
                        interruption_count,
                        custom,
                    }
                }),
                summary,
                outcome: outcome.as_deref().map(CallOutcome::from),
                failure_reason,
                voicemail_message,
            },
        )
}

fn sms() -> impl Strategy<Value = Sms> {
    (
        (any::<i64>(), any::<i64>()),
        (
            proptest::option::of(timestamp()),
            proptest::option::of(timestamp()),
        ),
        proptest::sample::select(vec![SmsStatus::Active, SmsStatus::Paused, SmsStatus::Ended]),
        proptest::option::of(proptest::sample::select(vec![
            SmsEndedReason::ConversationTimeout,
            SmsEndedReason::Resolved,
            SmsEndedReason::ContactDeclined,
            SmsEndedReason::ContactOptOut,
            SmsEndedReason::SystemError,
            SmsEndedReason::Unknown,
        ])),
        (text(), text(), text(), text()),
        proptest::option::of(custom()),
    )
        .prop_map(
            |(
                (id, assistant_id),
                (started_at, ended_at),
                status,
                ended_reason,
                (transcript, source_number, destination_number, summary),
                analysis,
            )| Sms {
                id,
                assistant_id,
                started_at,
                ended_at,
                status,
                ended_reason,
                transcript,
                source_number,
                destination_number,
                analysis: analysis.map(|custom| SmsAnalysis { custom }),
                summary,
            },
        )
}

fn report() -> impl Strategy<Value = SequenceReport> {
    let step = prop_oneof![
        (any::<u32>(), call()).prop_map(|(n, call)| OutreachStep::call(n, call)),
        (any::<u32>(), sms()).prop_map(|(n, sms)| OutreachStep::sms(n, sms)),
    ];
    (
        any::<i64>(),
        open_text(SequenceStatus::KNOWN),
        text(),
        timestamp(),
        proptest::collection::vec(step, 0..4),
    )
        .prop_map(
            |(id, status, outcome_description, last_updated, outreach)| SequenceReport {
                id,
                status: SequenceStatus::from(status.as_str()),
                outcome_description,
                last_updated,
                outreach,
            },
        )
}

/// JSON-shaped text near a report's shape, which reaches deeper into the deserialiser than
/// random bytes do.
fn report_like_json() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
            .prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(vec![
                    "id",
                    "status",
                    "last_updated",
                    "outreach",
                    "type",
                    "step",
                    "call",
                    "sms",
                    "started_at",
                    "call_status",
                    "analysis",
                    "custom",
                    "duration_ms",
                ])
                .prop_map(str::to_owned),
                inner,
                0..6
            )
            .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    });
    value.prop_map(|value| serde_json::to_vec(&value).unwrap())
}

fn secret() -> impl Strategy<Value = Secret> {
    proptest::collection::vec(any::<u8>(), 24..=64)
        .prop_map(|key| Secret::from_bytes(&key).unwrap())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_report_serialised_then_deserialised_is_equal(report in report()) {
        let bytes = serde_json::to_vec(&report).unwrap();
        let read: SequenceReport = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(read, report);
    }

    #[test]
    fn the_report_deserialiser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<SequenceReport>(&bytes);
    }

    #[test]
    fn the_report_deserialiser_never_panics_on_report_like_json(bytes in report_like_json()) {
        let _ = serde_json::from_slice::<SequenceReport>(&bytes);
    }

    #[test]
    fn a_timestamp_written_then_parsed_is_equal(stamp in timestamp()) {
        prop_assert_eq!(stamp.to_string().parse::<Timestamp>().unwrap(), stamp);
    }

    #[test]
    fn timestamp_and_secret_parsers_never_panic(text in "\\PC{0,80}") {
        let _ = text.parse::<Timestamp>();
        let _ = text.parse::<Secret>();
        let _ = format!("whsec_{text}").parse::<Secret>();
    }

    #[test]
    fn a_secret_written_as_whsec_reads_back(secret in secret()) {
        prop_assert_eq!(secret.to_whsec().parse::<Secret>().unwrap(), secret);
    }

    #[test]
    fn the_verifier_never_panics_on_arbitrary_headers(
        id in proptest::option::of("\\PC{0,40}"),
        timestamp in proptest::option::of(prop_oneof!["\\PC{0,24}", any::<i64>().prop_map(|n| n.to_string())]),
        signature in proptest::option::of(prop_oneof![
            "\\PC{0,200}",
            "(v1,[A-Za-z0-9+/=]{0,60} ?){0,20}",
        ]),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        now in any::<i64>(),
        tolerance in any::<i64>(),
        secret in secret(),
    ) {
        let headers = WebhookHeaders {
            id: id.as_deref(),
            timestamp: timestamp.as_deref(),
            signature: signature.as_deref(),
        };
        let _ = Verifier::new(secret).tolerance_secs(tolerance).verify_at(&headers, &body, now);
    }

    #[test]
    fn a_body_signed_then_verified_passes_and_any_change_fails(
        secrets in proptest::collection::vec(secret(), 1..3),
        msg_id in "[A-Za-z0-9_-]{1,40}",
        timestamp in 0_i64..=4_102_444_800,
        skew in -300_i64..=300,
        body in proptest::collection::vec(any::<u8>(), 0..512),
        flip in any::<proptest::sample::Index>(),
    ) {
        let signature = sign_header(&secrets, &msg_id, timestamp, &body);
        let stamp = timestamp.to_string();
        let headers = WebhookHeaders {
            id: Some(&msg_id),
            timestamp: Some(&stamp),
            signature: Some(&signature),
        };
        // Each signing secret alone verifies (a receiver mid-rotation holds either one).
        for secret in &secrets {
            prop_assert!(Verifier::new(secret.clone()).verify_at(&headers, &body, timestamp + skew).is_ok());
        }
        let verifier = Verifier::with_secrets(secrets.clone());
        if !body.is_empty() {
            let mut changed = body.clone();
            changed[flip.index(body.len())] ^= 0x01;
            prop_assert!(verifier.verify_at(&headers, &changed, timestamp).is_err());
        }
        let other_id = format!("{msg_id}x");
        let moved = WebhookHeaders { id: Some(&other_id), ..headers };
        prop_assert!(verifier.verify_at(&moved, &body, timestamp).is_err());
    }
}
