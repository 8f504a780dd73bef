//! The JSON Schemas (draft 2020-12) of the End of Sequence Report and of the other event
//! types (`encounter.ended`, `endpoint.disabled`; the same rules, committed beside it).
//!
//! The schema is generated from the Rust types, so it cannot drift from them. The published
//! schema is the receivers' contract, the specification's: it requires exactly the keys the
//! specification marks required (a sequence's `id`, `status`, `last_updated` and `outreach`; a
//! step's `type` and `step`; a call's `id`, `assistant_id` and `call_status`; an SMS
//! encounter's `id`, `assistant_id` and `status`), lets every other key be absent or `null`,
//! and allows extra keys so that the payload can grow. A payload that follows the specification
//! therefore validates whoever sent it. The repository commits it at
//! `schemas/end-of-sequence-report.schema.json`; a test fails when the two differ.
//!
//! Clarion promises more than the contract: it sends every documented key, `null` where the
//! value is unknown. [`report_schema_as_sent`] says so (every property of every object
//! required); Clarion's own tests hold its reports to it. It is not published: a receiver that
//! relied on it would reject other senders' valid payloads.

use schemars::Schema;
use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;

use crate::{
    EligibilityAnswer, EligibilityRequest, EncounterEnded, EndpointDisabled, SequenceReport,
};

/// The `$id` of the published schema.
pub const SCHEMA_ID: &str = "https://schemas.clarion.health/end-of-sequence-report.schema.json";
/// The `$id` of the published `encounter.ended` schema.
pub const ENCOUNTER_ENDED_SCHEMA_ID: &str =
    "https://schemas.clarion.health/encounter-ended.schema.json";
/// The `$id` of the published `endpoint.disabled` schema.
pub const ENDPOINT_DISABLED_SCHEMA_ID: &str =
    "https://schemas.clarion.health/endpoint-disabled.schema.json";

/// The `$id` of the published `encounter.eligibility` request schema.
pub const ENCOUNTER_ELIGIBILITY_SCHEMA_ID: &str =
    "https://schemas.clarion.health/encounter-eligibility.schema.json";
/// The `$id` of the published schema of an eligibility hook's answer.
pub const ELIGIBILITY_ANSWER_SCHEMA_ID: &str =
    "https://schemas.clarion.health/encounter-eligibility-answer.schema.json";

/// The published JSON Schema of [`SequenceReport`] as a JSON value: the receivers' contract.
pub fn report_schema() -> serde_json::Value {
    identified(SchemaSettings::draft2020_12())
}

/// The published JSON Schema of an `encounter.ended` event ([`EncounterEnded`]): it requires
/// `sequence_id`, `type` and `step`, and of the call or SMS object what the report's schema
/// requires of it, so an event's object validates exactly as it does inside a report.
pub fn encounter_ended_schema() -> serde_json::Value {
    identified_as::<EncounterEnded>(
        SchemaSettings::draft2020_12(),
        ENCOUNTER_ENDED_SCHEMA_ID,
        "Encounter Ended event",
    )
}

/// [`encounter_ended_schema`] with every documented key required: what Clarion sends.
pub fn encounter_ended_schema_as_sent() -> serde_json::Value {
    identified_as::<EncounterEnded>(
        SchemaSettings::draft2020_12().with_transform(RecursiveTransform(require_every_property)),
        ENCOUNTER_ENDED_SCHEMA_ID,
        "Encounter Ended event",
    )
}

/// The published JSON Schema of an `endpoint.disabled` event ([`EndpointDisabled`]): every
/// key is required (each is always known).
pub fn endpoint_disabled_schema() -> serde_json::Value {
    identified_as::<EndpointDisabled>(
        SchemaSettings::draft2020_12(),
        ENDPOINT_DISABLED_SCHEMA_ID,
        "Endpoint Disabled event",
    )
}

/// The published JSON Schema of an `encounter.eligibility` request ([`EligibilityRequest`]):
/// every key is required (`external_id` may be `null`).
pub fn encounter_eligibility_schema() -> serde_json::Value {
    identified_as::<EligibilityRequest>(
        SchemaSettings::draft2020_12(),
        ENCOUNTER_ELIGIBILITY_SCHEMA_ID,
        "Encounter Eligibility request",
    )
}

/// The published JSON Schema of an eligibility hook's answer ([`EligibilityAnswer`]):
/// `eligible` is required, `reason` and `action` optional.
pub fn eligibility_answer_schema() -> serde_json::Value {
    identified_as::<EligibilityAnswer>(
        SchemaSettings::draft2020_12(),
        ELIGIBILITY_ANSWER_SCHEMA_ID,
        "Encounter Eligibility answer",
    )
}

/// Every published schema with the file name it is committed under in `schemas/`.
pub fn all() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("end-of-sequence-report.schema.json", report_schema()),
        ("encounter-ended.schema.json", encounter_ended_schema()),
        ("endpoint-disabled.schema.json", endpoint_disabled_schema()),
        (
            "encounter-eligibility.schema.json",
            encounter_eligibility_schema(),
        ),
        (
            "encounter-eligibility-answer.schema.json",
            eligibility_answer_schema(),
        ),
    ]
}

/// A schema as pretty-printed JSON with a trailing newline, byte for byte its committed file.
pub fn pretty(schema: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(schema)
        .unwrap_or_else(|_| unreachable!("a JSON value always serialises"));
    text.push('\n');
    text
}

/// The stricter schema Clarion's own reports meet: every documented key of every object is
/// present (possibly `null`). For Clarion's tests, not for receivers.
pub fn report_schema_as_sent() -> serde_json::Value {
    identified(
        SchemaSettings::draft2020_12().with_transform(RecursiveTransform(require_every_property)),
    )
}

/// The schema generated under `settings`, with its identification first.
fn identified(settings: SchemaSettings) -> serde_json::Value {
    identified_as::<SequenceReport>(settings, SCHEMA_ID, "End of Sequence Report")
}

/// The schema of `T` generated under `settings`, with its identification first.
fn identified_as<T: schemars::JsonSchema>(
    settings: SchemaSettings,
    id: &str,
    title: &str,
) -> serde_json::Value {
    let generated = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    // Identification first, then the generated body, so the file reads top-down.
    let mut root = serde_json::Map::new();
    root.insert("$schema".to_owned(), generated["$schema"].clone());
    root.insert("$id".to_owned(), id.into());
    root.insert("title".to_owned(), title.into());
    if let serde_json::Value::Object(body) = generated {
        for (key, value) in body {
            root.entry(key).or_insert(value);
        }
    }
    root.into()
}

/// The schema as pretty-printed JSON with a trailing newline, byte for byte the committed file.
pub fn report_schema_pretty() -> String {
    pretty(&report_schema())
}

/// Clarion writes every documented key, `null` where unknown: the schema says so by requiring
/// each property of every object.
fn require_every_property(schema: &mut Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let Some(properties) = object.get("properties").and_then(|p| p.as_object()) else {
        return;
    };
    let names: Vec<serde_json::Value> = properties.keys().cloned().map(Into::into).collect();
    object.insert("required".to_owned(), names.into());
}
