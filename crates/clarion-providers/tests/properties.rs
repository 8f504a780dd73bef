//! Property tests for the provider parsers that meet untrusted input (issue 14, "Build into
//! CI"): Twilio's form bodies and `X-Twilio-Signature`, Vapi's server messages and its HMAC
//! header. None panics on arbitrary input, and what a provider signs verifies (and stops
//! verifying once anything signed changes).
//!
//! Case counts are modest (256 per property) so that the file runs in seconds in `cargo test`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use clarion_providers::twilio::signature::{self as twilio_signature, AuthToken};
use clarion_providers::twilio::wire::{InboundMessage, StatusCallback, parse_form};
use clarion_providers::vapi::signature::{self as vapi_signature, HmacSecret};
use clarion_providers::vapi::wire::{parse_call, parse_server_message};
use proptest::prelude::*;
use serde_json::Value;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Form parameters with the names Twilio's callbacks use, and some others.
fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        proptest::sample::select(vec![
            "MessageSid",
            "MessageStatus",
            "SmsStatus",
            "From",
            "To",
            "Body",
            "ErrorCode",
            "AccountSid",
            "OptOutType",
            "NumMedia",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,10}",
    ];
    proptest::collection::vec((name, "\\PC{0,30}"), 0..8)
}

fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        "(https?)://(user:pw@)?[a-z.]{1,12}(:[0-9]{0,5})?(/[a-z]{0,8}){0,3}(\\?[a-z]=[a-z0-9]{0,4}(&[a-z]=[0-9]{0,3})?)?(#[a-z]{0,4})?",
        "\\PC{0,60}",
        "[a-z]{0,4}://[\\[\\]:@/?#0-9a-f]{0,30}",
    ]
}

/// JSON near the shape of a Vapi server message.
fn server_message_like_json() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        proptest::sample::select(vec![
            "status-update",
            "end-of-call-report",
            "hang",
            "in-progress",
            "ended",
            "customer-ended-call",
            "2025-01-06T15:00:05.000Z",
            "clarion-encounter-12",
            "clarion-encounter-99999999999999999999999",
        ])
        .prop_map(|text| Value::String(text.to_owned())),
    ];
    let value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(vec![
                    "message",
                    "type",
                    "status",
                    "call",
                    "id",
                    "name",
                    "timestamp",
                    "startedAt",
                    "endedAt",
                    "endedReason",
                    "analysis",
                    "structuredData",
                    "successEvaluation",
                    "artifact",
                    "messages",
                    "role",
                    "transcript",
                    "time",
                    "secondsFromStart",
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

proptest! {
    #![proptest_config(config())]

    #[test]
    fn twilio_form_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let params = parse_form(&body);
        let _ = StatusCallback::from_params(&params);
        if let Ok(inbound) = InboundMessage::from_params(&params) {
            let _ = inbound.keyword();
        }
    }

    #[test]
    fn twilio_callbacks_from_structured_params_never_panic(params in params()) {
        let _ = StatusCallback::from_params(&params);
        if let Ok(inbound) = InboundMessage::from_params(&params) {
            let _ = inbound.keyword();
        }
    }

    #[test]
    fn a_form_written_then_parsed_keeps_every_parameter_in_order(params in params()) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        prop_assert_eq!(parse_form(body.as_bytes()), params);
    }

    #[test]
    fn the_twilio_signature_check_never_panics(
        url in url(),
        params in params(),
        header in proptest::option::of(prop_oneof!["\\PC{0,60}", "[A-Za-z0-9+/]{27}="]),
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let token = AuthToken::new("token");
        let _ = twilio_signature::validate(&token, &url, &params, header.as_deref());
        let _ = twilio_signature::validate_json_body(&token, &url, &body, header.as_deref());
    }

    #[test]
    fn a_twilio_signature_verifies_in_any_parameter_order_and_with_or_without_the_port(
        token in "[a-f0-9]{32}",
        url in url(),
        params in params(),
        changed in "\\PC{1,8}",
    ) {
        let token = AuthToken::new(token);
        let signature = twilio_signature::expected_signature(&token, &url, &params);
        prop_assert!(twilio_signature::validate(&token, &url, &params, Some(&signature)).is_ok());
        let mut reversed = params.clone();
        reversed.reverse();
        prop_assert!(twilio_signature::validate(&token, &url, &reversed, Some(&signature)).is_ok());
        // A parameter Twilio did not send is not covered by its signature.
        let mut added = params.clone();
        added.push(("Injected".to_owned(), changed));
        prop_assert!(twilio_signature::validate(&token, &url, &added, Some(&signature)).is_err());
    }

    #[test]
    fn a_json_body_signed_by_twilio_verifies_and_a_changed_body_does_not(
        token in "[a-f0-9]{32}",
        body in proptest::collection::vec(any::<u8>(), 0..256),
        extra in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        let token = AuthToken::new(token);
        let url = format!(
            "https://clarion.example/twilio/status?bodySHA256={}",
            twilio_signature::body_sha256_hex(&body)
        );
        let signature = twilio_signature::expected_signature(&token, &url, &[]);
        prop_assert!(twilio_signature::validate_json_body(&token, &url, &body, Some(&signature)).is_ok());
        let mut changed = body.clone();
        changed.extend_from_slice(&extra);
        prop_assert!(twilio_signature::validate_json_body(&token, &url, &changed, Some(&signature)).is_err());
    }

    #[test]
    fn the_vapi_parsers_never_panic_on_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(message) = parse_server_message(&body) {
            let _ = (message.message_type().len(), message.call_id());
        }
        let _ = parse_call(&body);
    }

    #[test]
    fn the_vapi_parsers_never_panic_on_message_like_json(body in server_message_like_json()) {
        if let Ok(message) = parse_server_message(&body) {
            let _ = (message.message_type().len(), message.call_id());
        }
        if let Ok(call) = parse_call(&body) {
            let _ = (call.encounter_id(), call.duration_ms());
        }
    }

    #[test]
    fn the_vapi_signature_check_never_panics(
        signature in proptest::option::of("\\PC{0,80}"),
        timestamp in proptest::option::of(prop_oneof!["\\PC{0,24}", any::<i64>().prop_map(|n| n.to_string())]),
        body in proptest::collection::vec(any::<u8>(), 0..128),
        now_millis in any::<i64>(),
        window_secs in any::<u64>(),
    ) {
        let secret = HmacSecret::new("secret");
        let _ = vapi_signature::verify(&secret, signature.as_deref(), timestamp.as_deref(), &body, now_millis, window_secs);
    }

    #[test]
    fn a_vapi_body_signed_then_verified_passes_and_a_changed_one_fails(
        secret in proptest::collection::vec(any::<u8>(), 1..64),
        sent_millis in 1_000_000_000_000_i64..4_102_444_800_000,
        body in proptest::collection::vec(any::<u8>(), 0..256),
        flip in any::<proptest::sample::Index>(),
    ) {
        let secret = HmacSecret::new(secret);
        let timestamp = sent_millis.to_string();
        let signature = vapi_signature::sign(&secret, &timestamp, &body);
        prop_assert!(vapi_signature::verify(&secret, Some(&signature), Some(&timestamp), &body, sent_millis, 300).is_ok());
        if !body.is_empty() {
            let mut changed = body.clone();
            changed[flip.index(body.len())] ^= 0x80;
            prop_assert!(vapi_signature::verify(&secret, Some(&signature), Some(&timestamp), &changed, sent_millis, 300).is_err());
        }
    }
}

/// The case proptest found: a timestamp at the far end of i64 against a clock at 1970 is
/// stale, not an overflow.
#[test]
fn a_timestamp_at_the_ends_of_i64_is_stale_whatever_the_clock() {
    let secret = HmacSecret::new("secret");
    for (timestamp, now_millis) in [
        (i64::MAX, -2),
        (i64::MIN, 0),
        (i64::MAX, i64::MIN),
        (i64::MIN, i64::MAX),
    ] {
        let timestamp = timestamp.to_string();
        let signature = vapi_signature::sign(&secret, &timestamp, b"{}");
        assert!(matches!(
            vapi_signature::verify(
                &secret,
                Some(&signature),
                Some(&timestamp),
                b"{}",
                now_millis,
                300
            ),
            Err(vapi_signature::HmacError::Stale)
        ));
    }
}
