//! The simulator channel, wired to stored rows: builds the simulator's inputs from the
//! assistant, the contact and the enrollment's `simulation.outcomes`.

use std::time::Duration;

use clarion_channels::{
    AssistantProfile, ContactProfile, CustomField, CustomFieldKind, EncounterReport,
    EncounterRequest, VoicemailAction,
};
use clarion_engine::{Channel, EncounterOutcome};
use clarion_store::{Assistant, EncounterRow, Millis, SequenceRow};
use serde_json::{Value, json};

use crate::definition::{ContactInfo, TemplateDefinition, VoicemailActionDefinition};
use crate::scheduler::SchedulerError;

/// The scripted outcome for the `index`-th encounter of the sequence, if the enrollment
/// scripted one (`simulation.outcomes`, consumed one per encounter in order).
fn scripted(sequence: &SequenceRow, index: usize) -> Option<EncounterOutcome> {
    let outcomes = sequence.simulation.as_ref()?.get("outcomes")?.as_array()?;
    let text = outcomes.get(index)?.as_str()?;
    text.parse().ok()
}

fn assistant_profile(assistant: &Assistant) -> AssistantProfile {
    let text = |key: &str| {
        assistant
            .config
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let custom_fields = assistant
        .custom_fields
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| {
                    let name = f.get("name")?.as_str()?.to_owned();
                    let kind = match f.get("type").and_then(Value::as_str).unwrap_or("string") {
                        "boolean" => CustomFieldKind::Boolean,
                        "number" => CustomFieldKind::Number,
                        "enum" => CustomFieldKind::Enum(
                            f.get("values")
                                .and_then(Value::as_array)
                                .map(|v| {
                                    v.iter()
                                        .filter_map(|x| x.as_str().map(str::to_owned))
                                        .collect()
                                })
                                .unwrap_or_default(),
                        ),
                        _ => CustomFieldKind::String,
                    };
                    let description = f
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    Some(CustomField {
                        name,
                        kind,
                        description,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    AssistantProfile {
        id: assistant.id.0,
        name: assistant.name.clone(),
        purpose: text("purpose").unwrap_or_else(|| "follow up on your care".to_owned()),
        organisation_name: text("organisation_name").unwrap_or_else(|| "your care team".to_owned()),
        custom_fields,
    }
}

/// Runs the simulator for one committed encounter: (ends_at, outcome, report object as
/// JSON text).
pub fn simulate(
    sequence: &SequenceRow,
    encounter: &EncounterRow,
    index: usize,
    assistant: &Assistant,
    clinic_number: &str,
    definition: &TemplateDefinition,
) -> Result<(Millis, String, String), SchedulerError> {
    let sms_timeout = Duration::from_millis(definition.sms_timeout_ms);
    let policy = usize::try_from(encounter.step)
        .ok()
        .and_then(|step| definition.steps.get(step))
        .map(|step| &step.voicemail);
    let voicemail = match policy.and_then(|p| p.action.as_ref()) {
        None => VoicemailAction::AssistantMessage,
        Some(VoicemailActionDefinition::LeaveMessage(text)) => VoicemailAction::Leave(text),
        Some(VoicemailActionDefinition::HangUp) => VoicemailAction::HangUp,
    };
    let contact: ContactInfo = serde_json::from_value(sequence.contact.clone())
        .map_err(|_| SchedulerError::Corrupt("contact"))?;
    let contact = ContactProfile {
        name: contact.name,
        phone_number: contact.phone_number,
        variables: sequence.variables.as_object().cloned().unwrap_or_default(),
    };
    let assistant = assistant_profile(assistant);
    let started_at =
        chrono::DateTime::from_timestamp_millis(encounter.created_at).unwrap_or_default();
    let request = EncounterRequest {
        sequence_id: sequence.id.0,
        encounter_id: encounter.id.0,
        step: u32::try_from(encounter.step + 1).unwrap_or(u32::MAX),
        attempt: u32::try_from(encounter.attempt).unwrap_or(u32::MAX),
        channel: encounter.channel,
        assistant: &assistant,
        contact: &contact,
        clinic_number,
        scripted: scripted(sequence, index),
        started_at,
        sms_timeout,
        voicemail,
    };
    let simulated = clarion_channels::simulate(&request);
    let ends_at = encounter
        .created_at
        .saturating_add(Millis::try_from(simulated.ends_after.as_millis()).unwrap_or(Millis::MAX));
    let report = match &simulated.report {
        EncounterReport::Call(call) => serde_json::to_string(call),
        EncounterReport::Sms(sms) => serde_json::to_string(sms),
    }
    .map_err(|_| SchedulerError::Corrupt("simulated report"))?;
    Ok((ends_at, simulated.outcome.as_str().to_owned(), report))
}

/// The report object of a call that was never placed: `failed`, with `summary` saying why.
pub fn failed_call_report(encounter: &EncounterRow, summary: &str) -> Value {
    let at =
        clarion_webhooks::Timestamp::from_unix_millis(encounter.created_at).map(|t| t.to_string());
    json!({
        "id": encounter.id.0, "assistant_id": encounter.assistant_id.0, "started_at": at, "ended_at": at,
        "call_status": "ended", "duration_ms": null, "ended_reason": "failed", "transcript": null,
        "source_number": null, "destination_number": encounter.phone_number,
        "call_type": "outboundPhoneCall", "analysis": null, "summary": summary,
        "outcome": "failed", "failure_reason": null, "voicemail_message": null,
    })
}

/// The report object of an encounter whose outcome is unknown after a crash.
pub fn unknown_outcome_report(encounter: &EncounterRow, clinic_number: &str) -> Value {
    let at =
        clarion_webhooks::Timestamp::from_unix_millis(encounter.created_at).map(|t| t.to_string());
    if encounter.channel == Channel::Sms {
        json!({
            "id": encounter.id.0, "assistant_id": encounter.assistant_id.0, "started_at": at, "ended_at": at,
            "status": "ended", "ended_reason": "system-error", "transcript": null,
            "source_number": clinic_number, "destination_number": encounter.phone_number,
            "analysis": null,
            "summary": "The conversation's outcome is unknown after a restart; it was not sent again.",
        })
    } else {
        let mut call = failed_call_report(
            encounter,
            "The call's outcome is unknown after a restart; it was not placed again.",
        );
        call["source_number"] = Value::from(clinic_number);
        call
    }
}
