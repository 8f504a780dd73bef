//! The payload contract: the committed JSON Schema, the golden example payloads and the exact
//! key set the specification documents.
//!
//! Run with `CLARION_BLESS=1` to rewrite the committed files from the code after an intended
//! change; review the diff before committing it.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use clarion_webhooks::{SequenceReport, examples, schema};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema_path() -> PathBuf {
    repo_root().join("schemas/end-of-sequence-report.schema.json")
}

fn examples_dir() -> PathBuf {
    repo_root().join("schemas/examples")
}

fn blessing() -> bool {
    std::env::var_os("CLARION_BLESS").is_some_and(|v| v == "1")
}

/// Compares `actual` with the committed file, or rewrites the file when blessing.
fn assert_matches_committed(path: &Path, actual: &str) {
    if blessing() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}); run with CLARION_BLESS=1",
            path.display()
        )
    });
    assert!(
        committed == actual,
        "{} differs from what the code generates; if the change is intended, run the tests with \
         CLARION_BLESS=1 and review the diff.\n--- generated ---\n{actual}",
        path.display()
    );
}

fn pretty(value: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap();
    text.push('\n');
    text
}

fn committed_schema_validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path()).unwrap()).unwrap();
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the committed schema is a valid draft 2020-12 schema")
}

fn validation_errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn committed_schema_is_exactly_the_generated_one() {
    assert_matches_committed(&schema_path(), &schema::report_schema_pretty());
}

#[test]
fn committed_schema_declares_draft_2020_12() {
    let schema = schema::report_schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

#[test]
fn golden_payloads_are_exactly_the_example_reports() {
    for (file, report) in examples::all() {
        assert_matches_committed(&examples_dir().join(file), &pretty(&report));
    }
}

#[test]
fn golden_payloads_validate_against_the_committed_schema() {
    let validator = committed_schema_validator();
    for (file, _) in examples::all() {
        let text = std::fs::read_to_string(examples_dir().join(file)).unwrap();
        let instance: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            validation_errors(&validator, &instance),
            Vec::<String>::new(),
            "{file}"
        );
    }
}

#[test]
fn golden_payloads_round_trip_through_the_types_byte_for_byte() {
    for (file, _) in examples::all() {
        let text = std::fs::read_to_string(examples_dir().join(file)).unwrap();
        let report: SequenceReport = serde_json::from_str(&text).unwrap();
        assert_eq!(pretty(&report), text, "{file}");
    }
}

#[test]
fn golden_payloads_cover_a_call_only_a_mixed_and_an_empty_sequence() {
    let kinds = |report: &SequenceReport| {
        report
            .outreach
            .iter()
            .map(|s| serde_json::to_value(s.kind).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&examples::call_only()), vec![json!("call")]);
    assert_eq!(
        kinds(&examples::call_sms_call()),
        vec![json!("call"), json!("sms"), json!("call")]
    );
    assert!(examples::cancelled().outreach.is_empty());
}

/// The keys the specification documents for each object, in its order.
const REPORT_KEYS: &[&str] = &[
    "id",
    "status",
    "outcome_description",
    "last_updated",
    "outreach",
];
const STEP_KEYS: &[&str] = &["type", "step", "call", "sms"];
const CALL_KEYS: &[&str] = &[
    "id",
    "assistant_id",
    "started_at",
    "ended_at",
    "call_status",
    "duration_ms",
    "ended_reason",
    "transcript",
    "source_number",
    "destination_number",
    "call_type",
    "analysis",
    "summary",
    "outcome",
    "failure_reason",
    "voicemail_message",
];
const CALL_ANALYSIS_KEYS: &[&str] = &["repetition_count", "interruption_count", "custom"];
const SMS_KEYS: &[&str] = &[
    "id",
    "assistant_id",
    "started_at",
    "ended_at",
    "status",
    "ended_reason",
    "transcript",
    "source_number",
    "destination_number",
    "analysis",
    "summary",
];
const SMS_ANALYSIS_KEYS: &[&str] = &["custom"];

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn every_documented_key_is_serialised_in_the_documented_order_even_when_unknown() {
    let report = serde_json::to_value(examples::call_sms_call()).unwrap();
    assert_eq!(keys(&report), REPORT_KEYS);
    for step in report["outreach"].as_array().unwrap() {
        assert_eq!(keys(step), STEP_KEYS);
        if step["type"] == "call" {
            assert_eq!(step["sms"], Value::Null);
            assert_eq!(keys(&step["call"]), CALL_KEYS);
            assert_eq!(keys(&step["call"]["analysis"]), CALL_ANALYSIS_KEYS);
        } else {
            assert_eq!(step["call"], Value::Null);
            assert_eq!(keys(&step["sms"]), SMS_KEYS);
            assert_eq!(keys(&step["sms"]["analysis"]), SMS_ANALYSIS_KEYS);
        }
    }
    // A step whose details are all unknown still carries every key, as null.
    let mut bare = examples::call_only();
    let call = bare.outreach[0].call.as_mut().unwrap();
    (
        call.started_at,
        call.ended_at,
        call.duration_ms,
        call.ended_reason,
    ) = (None, None, None, None);
    (
        call.transcript,
        call.source_number,
        call.destination_number,
        call.call_type,
    ) = (None, None, None, None);
    (
        call.analysis,
        call.summary,
        call.outcome,
        call.voicemail_message,
    ) = (None, None, None, None);
    bare.outcome_description = None;
    let value = serde_json::to_value(&bare).unwrap();
    assert_eq!(keys(&value), REPORT_KEYS);
    assert_eq!(keys(&value["outreach"][0]["call"]), CALL_KEYS);
    assert_eq!(value["outcome_description"], Value::Null);
    assert_eq!(value["outreach"][0]["call"]["transcript"], Value::Null);
    assert!(validation_errors(&committed_schema_validator(), &value).is_empty());
}

/// The sorted `required` list of a schema object (empty when it has none).
fn required(def: &Value) -> Vec<String> {
    let mut names: Vec<String> = def["required"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn sorted(keys: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    keys.sort();
    keys
}

/// The keys the specification marks `required`, per object.
const REQUIRED_REPORT_KEYS: &[&str] = &["id", "status", "last_updated", "outreach"];
const REQUIRED_STEP_KEYS: &[&str] = &["type", "step"];
const REQUIRED_CALL_KEYS: &[&str] = &["id", "assistant_id", "call_status"];
const REQUIRED_SMS_KEYS: &[&str] = &["id", "assistant_id", "status"];

/// Issue 14, defect 11: the published schema is the receivers' contract, so it requires what
/// the specification requires and nothing more.
#[test]
fn the_published_schema_requires_exactly_the_keys_the_specification_requires() {
    let schema = schema::report_schema();
    assert_eq!(required(&schema), sorted(REQUIRED_REPORT_KEYS));
    let defs = &schema["$defs"];
    assert_eq!(required(&defs["OutreachStep"]), sorted(REQUIRED_STEP_KEYS));
    assert_eq!(required(&defs["Call"]), sorted(REQUIRED_CALL_KEYS));
    assert_eq!(required(&defs["CallAnalysis"]), Vec::<String>::new());
    assert_eq!(required(&defs["Sms"]), sorted(REQUIRED_SMS_KEYS));
    assert_eq!(required(&defs["SmsAnalysis"]), Vec::<String>::new());
}

/// What Clarion sends is stricter than the contract: every documented key of every object.
#[test]
fn the_schema_as_sent_requires_every_documented_key_of_every_object() {
    let schema = schema::report_schema_as_sent();
    assert_eq!(required(&schema), sorted(REPORT_KEYS));
    let defs = &schema["$defs"];
    assert_eq!(required(&defs["OutreachStep"]), sorted(STEP_KEYS));
    assert_eq!(required(&defs["Call"]), sorted(CALL_KEYS));
    assert_eq!(required(&defs["CallAnalysis"]), sorted(CALL_ANALYSIS_KEYS));
    assert_eq!(required(&defs["Sms"]), sorted(SMS_KEYS));
    assert_eq!(required(&defs["SmsAnalysis"]), sorted(SMS_ANALYSIS_KEYS));
}

/// A report that carries only the keys the specification requires, for a call and an SMS step.
fn minimal_seed_payload() -> Value {
    json!({
        "id": 1043,
        "status": "ended",
        "last_updated": "2026-01-06T10:00:00.000Z",
        "outreach": [
            { "type": "call", "step": 1,
              "call": { "id": 9001, "assistant_id": 11, "call_status": "ended" } },
            { "type": "sms", "step": 2,
              "sms": { "id": 5001, "assistant_id": 12, "status": "ended" } },
            { "type": "call", "step": 3 }
        ]
    })
}

#[test]
fn a_payload_with_only_the_required_keys_validates_against_the_published_schema() {
    let validator = committed_schema_validator();
    let minimal = minimal_seed_payload();
    assert_eq!(
        validation_errors(&validator, &minimal),
        Vec::<String>::new()
    );
    // The receivers' types read it too.
    let report: SequenceReport = serde_json::from_value(minimal).unwrap();
    assert_eq!(report.outreach.len(), 3);
    // Clarion's own, stricter schema would refuse it: the two are not the same.
    let as_sent = jsonschema::draft202012::new(&schema::report_schema_as_sent()).unwrap();
    assert!(!validation_errors(&as_sent, &minimal_seed_payload()).is_empty());
}

#[test]
fn a_payload_missing_any_required_key_fails_the_published_schema() {
    let validator = committed_schema_validator();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("", REQUIRED_REPORT_KEYS.to_vec()),
        ("/outreach/0", REQUIRED_STEP_KEYS.to_vec()),
        ("/outreach/1", REQUIRED_STEP_KEYS.to_vec()),
        ("/outreach/0/call", REQUIRED_CALL_KEYS.to_vec()),
        ("/outreach/1/sms", REQUIRED_SMS_KEYS.to_vec()),
    ];
    for (pointer, keys) in cases {
        for key in keys {
            let mut instance = minimal_seed_payload();
            let removed = instance
                .pointer_mut(pointer)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(key);
            assert!(
                removed.is_some(),
                "{pointer}/{key} is in the minimal payload"
            );
            assert!(
                !validation_errors(&validator, &instance).is_empty(),
                "accepted a payload without {pointer}/{key}"
            );
        }
    }
}

#[test]
fn a_payload_with_null_in_every_optional_key_validates_against_the_published_schema() {
    let validator = committed_schema_validator();
    let call = |id: i64| {
        let mut call = json!({ "id": id, "assistant_id": 11, "call_status": "ended" });
        for key in CALL_KEYS.iter().filter(|k| !REQUIRED_CALL_KEYS.contains(k)) {
            call[*key] = Value::Null;
        }
        call
    };
    let mut sms = json!({ "id": 5001, "assistant_id": 12, "status": "ended" });
    for key in SMS_KEYS.iter().filter(|k| !REQUIRED_SMS_KEYS.contains(k)) {
        sms[*key] = Value::Null;
    }
    let nulls = json!({
        "id": 1043,
        "status": "ended",
        "outcome_description": null,
        "last_updated": "2026-01-06T10:00:00.000Z",
        "outreach": [
            { "type": "call", "step": 1, "call": call(9001), "sms": null },
            { "type": "sms", "step": 2, "call": null, "sms": sms },
            { "type": "call", "step": 3, "call": null, "sms": null },
            { "type": "call", "step": 4, "call": {
                "id": 9002, "assistant_id": 11, "call_status": "ended",
                "analysis": { "repetition_count": null, "interruption_count": null, "custom": null } } },
            { "type": "sms", "step": 5, "sms": {
                "id": 5002, "assistant_id": 12, "status": "ended", "analysis": { "custom": null } } }
        ]
    });
    assert_eq!(validation_errors(&validator, &nulls), Vec::<String>::new());
    let report: SequenceReport = serde_json::from_value(nulls).unwrap();
    assert_eq!(report.outreach[0].call.as_ref().unwrap().transcript, None);
}

/// Clarion's own reports carry every key: the golden payloads meet the schema as sent, and
/// that schema notices a missing nullable key (which the published one allows).
#[test]
fn golden_payloads_carry_every_key_and_the_schema_as_sent_notices_a_missing_one() {
    let as_sent = jsonschema::draft202012::new(&schema::report_schema_as_sent()).unwrap();
    let published = committed_schema_validator();
    for (file, report) in examples::all() {
        let instance = serde_json::to_value(&report).unwrap();
        assert_eq!(
            validation_errors(&as_sent, &instance),
            Vec::<String>::new(),
            "{file}"
        );
    }
    let mut missing = serde_json::to_value(examples::call_sms_call()).unwrap();
    missing
        .as_object_mut()
        .unwrap()
        .remove("outcome_description");
    assert!(!validation_errors(&as_sent, &missing).is_empty());
    assert!(validation_errors(&published, &missing).is_empty());
    let mut missing_deep = serde_json::to_value(examples::call_sms_call()).unwrap();
    missing_deep["outreach"][0]["call"]
        .as_object_mut()
        .unwrap()
        .remove("transcript");
    assert!(!validation_errors(&as_sent, &missing_deep).is_empty());
}

type Mutation = Box<dyn Fn(&mut Value)>;

#[test]
fn the_schema_rejects_payloads_that_break_the_contract() {
    let validator = committed_schema_validator();
    let good = serde_json::to_value(examples::call_sms_call()).unwrap();
    assert!(validation_errors(&validator, &good).is_empty());

    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "missing outreach",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("outreach");
            }),
        ),
        ("string id", Box::new(|v| v["id"] = json!("1043"))),
        (
            "bad call_status",
            Box::new(|v| v["outreach"][0]["call"]["call_status"] = json!("answered")),
        ),
        (
            "bad failure_reason",
            Box::new(|v| v["outreach"][2]["call"]["failure_reason"] = json!("angry")),
        ),
        (
            "bad sms ended_reason",
            Box::new(|v| v["outreach"][1]["sms"]["ended_reason"] = json!("timeout")),
        ),
        (
            "bad step type",
            Box::new(|v| v["outreach"][0]["type"] = json!("email")),
        ),
        (
            "negative duration",
            Box::new(|v| v["outreach"][0]["call"]["duration_ms"] = json!(-1)),
        ),
        (
            "numeric time",
            Box::new(|v| v["last_updated"] = json!(12345)),
        ),
        (
            "non-RFC 3339 time",
            Box::new(|v| v["outreach"][0]["call"]["started_at"] = json!("yesterday")),
        ),
    ];
    for (name, mutate) in mutations {
        let mut instance = good.clone();
        mutate(&mut instance);
        assert!(
            !validation_errors(&validator, &instance).is_empty(),
            "accepted: {name}"
        );
    }
}

#[test]
fn receivers_tolerate_unknown_keys_absent_optional_keys_and_unseen_open_values() {
    let grown = json!({
        "id": 7,
        "status": "archived",
        "last_updated": "2026-01-06T10:00:00+02:00",
        "organisation": { "id": 3 },
        "outreach": [
            { "type": "call", "step": 1, "channel_cost_usd": 0.12,
              "call": { "id": 1, "assistant_id": 2, "call_status": "ended",
                        "ended_reason": "pipeline-error-openai-llm-failed",
                        "call_type": "webCall", "outcome": "transferred",
                        "analysis": { "sentiment": "positive" } } },
            { "type": "sms", "step": 2,
              "sms": { "id": 3, "assistant_id": 4, "status": "ended", "language": "es" } }
        ]
    });
    let report: SequenceReport = serde_json::from_value(grown).unwrap();
    assert_eq!(report.status.as_str(), "archived");
    assert_eq!(report.last_updated.to_string(), "2026-01-06T08:00:00.000Z");
    let call = report.outreach[0].call.as_ref().unwrap();
    assert_eq!(
        call.ended_reason.as_ref().unwrap().as_str(),
        "pipeline-error-openai-llm-failed"
    );
    assert_eq!(call.outcome.as_ref().unwrap().as_str(), "transferred");
    assert_eq!(call.analysis.as_ref().unwrap().repetition_count, None);
    assert!(report.outreach[1].call.is_none());
    assert_eq!(report.outreach[1].sms.as_ref().unwrap().transcript, None);
}

#[test]
fn a_report_missing_a_required_key_is_rejected_by_the_types() {
    let missing_outreach =
        json!({ "id": 1, "status": "ended", "last_updated": "2026-01-06T10:00:00Z" });
    assert!(serde_json::from_value::<SequenceReport>(missing_outreach).is_err());
    let bad_call_status = json!({ "id": 1, "status": "ended", "last_updated": "2026-01-06T10:00:00Z",
        "outreach": [{ "type": "call", "step": 1, "call": { "id": 1, "assistant_id": 1, "call_status": "answered" } }] });
    assert!(serde_json::from_value::<SequenceReport>(bad_call_status).is_err());
}

// ---- the other event types (`encounter.ended`, `endpoint.disabled`) ----

/// The committed schema an event type's payload is checked against.
fn committed_event_validator(event_type: &str) -> jsonschema::Validator {
    let file = match event_type {
        "encounter.ended" => "encounter-ended.schema.json",
        "endpoint.disabled" => "endpoint-disabled.schema.json",
        other => panic!("no schema for {other}"),
    };
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("schemas").join(file)).unwrap(),
    )
    .unwrap();
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("a valid draft 2020-12 schema")
}

#[test]
fn committed_event_schemas_are_exactly_the_generated_ones() {
    for (file, schema) in schema::all() {
        assert_matches_committed(
            &repo_root().join("schemas").join(file),
            &schema::pretty(&schema),
        );
    }
}

#[test]
fn golden_event_payloads_are_the_examples_validate_and_round_trip() {
    for (file, event_type, value) in examples::events() {
        let path = examples_dir().join(file);
        assert_matches_committed(&path, &pretty(&value));
        let text = std::fs::read_to_string(&path).unwrap();
        let instance: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            validation_errors(&committed_event_validator(event_type), &instance),
            Vec::<String>::new(),
            "{file}"
        );
        // The typed event reads it and writes the same bytes back.
        let event = clarion_webhooks::Event::parse(Some(event_type), text.as_bytes()).unwrap();
        let again = match event {
            clarion_webhooks::Event::EncounterEnded(e) => pretty(&e),
            clarion_webhooks::Event::EndpointDisabled(e) => pretty(&e),
            other => panic!("{file} parsed as {other:?}"),
        };
        assert_eq!(again, text, "{file}");
    }
}

#[test]
fn an_encounter_event_is_its_report_entry_with_the_sequence_id_and_every_key() {
    let report = serde_json::to_value(examples::call_sms_call()).unwrap();
    for (file, event_type, value) in examples::events() {
        if event_type != "encounter.ended" {
            continue;
        }
        let mut keys_ = keys(&value);
        assert_eq!(keys_.remove(0), "sequence_id", "{file}");
        assert_eq!(keys_, STEP_KEYS, "{file}");
        let entry = report["outreach"]
            .as_array()
            .unwrap()
            .iter()
            .find(|step| step["step"] == value["step"])
            .unwrap();
        for key in STEP_KEYS {
            assert_eq!(value[*key], entry[*key], "{file}: {key}");
        }
        let as_sent =
            jsonschema::draft202012::new(&schema::encounter_ended_schema_as_sent()).unwrap();
        assert_eq!(validation_errors(&as_sent, &value), Vec::<String>::new());
    }
}

#[test]
fn the_event_schemas_require_exactly_what_is_always_known() {
    let encounter = schema::encounter_ended_schema();
    assert_eq!(
        required(&encounter),
        sorted(&["sequence_id", "type", "step"])
    );
    assert_eq!(
        required(&encounter["$defs"]["Call"]),
        sorted(REQUIRED_CALL_KEYS)
    );
    assert_eq!(
        required(&encounter["$defs"]["Sms"]),
        sorted(REQUIRED_SMS_KEYS)
    );
    let disabled = schema::endpoint_disabled_schema();
    assert_eq!(
        required(&disabled),
        sorted(&[
            "endpoint_id",
            "url",
            "reason",
            "failing_since",
            "disabled_at"
        ])
    );
    // A minimal encounter event validates; one without its sequence id does not.
    let validator = committed_event_validator("encounter.ended");
    let mut minimal = json!({ "sequence_id": 1043, "type": "sms", "step": 2,
        "sms": { "id": 5001, "assistant_id": 12, "status": "ended" } });
    assert_eq!(
        validation_errors(&validator, &minimal),
        Vec::<String>::new()
    );
    minimal.as_object_mut().unwrap().remove("sequence_id");
    assert!(!validation_errors(&validator, &minimal).is_empty());
}

// ---- the eligibility check (`encounter.eligibility` and the hook's answer) ----

#[test]
fn golden_eligibility_payloads_are_the_examples_validate_and_round_trip() {
    for (file, schema_file, value) in examples::eligibility() {
        let path = examples_dir().join(file);
        assert_matches_committed(&path, &pretty(&value));
        let schema: Value = serde_json::from_str(
            &std::fs::read_to_string(repo_root().join("schemas").join(schema_file)).unwrap(),
        )
        .unwrap();
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let instance: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            validation_errors(&validator, &instance),
            Vec::<String>::new(),
            "{file}"
        );
        let again = if file == "encounter-eligibility.json" {
            pretty(&serde_json::from_str::<clarion_webhooks::EligibilityRequest>(&text).unwrap())
        } else {
            pretty(&serde_json::from_str::<clarion_webhooks::EligibilityAnswer>(&text).unwrap())
        };
        assert_eq!(again, text, "{file}");
    }
}

#[test]
fn the_eligibility_request_names_no_phone_number_and_the_answer_requires_only_eligible() {
    let request = schema::encounter_eligibility_schema();
    assert_eq!(
        required(&request),
        sorted(&[
            "type",
            "sequence_id",
            "external_id",
            "step",
            "attempt",
            "channel"
        ])
    );
    let example = serde_json::to_value(examples::encounter_eligibility()).unwrap();
    assert_eq!(
        keys(&example),
        [
            "type",
            "sequence_id",
            "external_id",
            "step",
            "attempt",
            "channel"
        ]
    );
    let answer = schema::eligibility_answer_schema();
    assert_eq!(required(&answer), sorted(&["eligible"]));
    let validator = jsonschema::draft202012::new(&answer).unwrap();
    for ok in [
        json!({"eligible": true}),
        json!({"eligible": false, "reason": "seen", "action": "end-sequence"}),
    ] {
        assert_eq!(validation_errors(&validator, &ok), Vec::<String>::new());
    }
    for bad in [
        json!({}),
        json!({"eligible": "no"}),
        json!({"eligible": false, "action": "stop"}),
    ] {
        assert!(!validation_errors(&validator, &bad).is_empty(), "{bad}");
    }
}
