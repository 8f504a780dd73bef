//! The End of Sequence Report, built from stored state: the same function serves
//! `GET /v1/sequences/{id}` for a running sequence and the outbox when it ends.
//!
//! Every id in it is the organisation's public id ([`clarion_store::public_id`]): the
//! sequence's, each call's and text conversation's, each assistant's. Stored encounter objects
//! keep internal ids (they are also what the providers' callbacks are matched against); they
//! are translated here, on the way out.

use clarion_engine::Channel;
use clarion_store::{EncounterRow, EncounterStatus, IdKind, Millis, PublicIds, SequenceRow};
use clarion_webhooks::{
    Call, CallStatus, OutreachStep, SequenceReport, SequenceStatus, Sms, SmsEndedReason, SmsStatus,
    Timestamp,
};

fn at(millis: Millis) -> Option<Timestamp> {
    Timestamp::from_unix_millis(millis)
}

/// The report of a sequence from its row and its encounters (in step, attempt order). Every
/// encounter is an outreach entry; one that has not ended yet shows what is known so far.
///
/// `ids` must be the sequence's organisation's ([`clarion_store::Store::public_ids`]).
pub fn build_report(
    ids: &PublicIds,
    sequence: &SequenceRow,
    encounters: &[EncounterRow],
    last_updated: Millis,
) -> SequenceReport {
    let outreach = encounters
        .iter()
        .filter_map(|encounter| outreach_step(ids, encounter))
        .collect();
    SequenceReport {
        id: ids.encode(IdKind::Sequence, sequence.id),
        status: report_status(sequence.status),
        outcome_description: sequence.outcome_description.clone(),
        last_updated: at(last_updated).unwrap_or_else(|| {
            Timestamp::from_unix_millis(0)
                .unwrap_or_else(|| unreachable!("the epoch is representable"))
        }),
        outreach,
    }
}

/// The report's spelling of a sequence's status.
fn report_status(status: clarion_engine::SequenceStatus) -> SequenceStatus {
    match status {
        clarion_engine::SequenceStatus::Active => SequenceStatus::Active,
        clarion_engine::SequenceStatus::Paused => SequenceStatus::Paused,
        clarion_engine::SequenceStatus::Ended => SequenceStatus::Ended,
    }
}

/// One encounter's entry of its sequence's report `outreach`, exactly as the report writes it
/// (what an `encounter.ended` event carries).
pub fn outreach_entry(ids: &PublicIds, encounter: &EncounterRow) -> Option<OutreachStep> {
    outreach_step(ids, encounter)
}

fn outreach_step(ids: &PublicIds, encounter: &EncounterRow) -> Option<OutreachStep> {
    let step = u32::try_from(encounter.step + 1).ok()?;
    let id = ids.encode(IdKind::Encounter, encounter.id);
    let assistant_id = ids.encode(IdKind::Assistant, encounter.assistant_id);
    // An ended (or simulated, already known) encounter carries its full object.
    if encounter.status == EncounterStatus::Ended
        && let Some(report) = &encounter.report
    {
        return match encounter.channel {
            Channel::Call => serde_json::from_str::<Call>(report).ok().map(|c| {
                OutreachStep::call(
                    step,
                    Call {
                        id,
                        assistant_id,
                        ..c
                    },
                )
            }),
            _ => serde_json::from_str::<Sms>(report).ok().map(|s| {
                OutreachStep::sms(
                    step,
                    Sms {
                        id,
                        assistant_id,
                        ..s
                    },
                )
            }),
        };
    }
    let started_at = at(encounter.created_at);
    let ended_at = encounter.ended_at.and_then(at);
    Some(match encounter.channel {
        Channel::Call => OutreachStep::call(
            step,
            Call {
                id,
                assistant_id,
                started_at,
                ended_at,
                call_status: if encounter.status == EncounterStatus::Ended {
                    CallStatus::Ended
                } else {
                    // The provider's latest status when it reported one (Vapi's
                    // status-update), else in progress.
                    encounter
                        .provider_status
                        .as_deref()
                        .and_then(|s| serde_json::from_value(serde_json::Value::from(s)).ok())
                        .unwrap_or(CallStatus::InProgress)
                },
                duration_ms: None,
                ended_reason: None,
                transcript: None,
                source_number: None,
                destination_number: Some(encounter.phone_number.clone()),
                call_type: Some(clarion_webhooks::CallType::OutboundPhoneCall),
                analysis: None,
                summary: None,
                outcome: None,
                failure_reason: None,
                voicemail_message: None,
            },
        ),
        _ => OutreachStep::sms(
            step,
            Sms {
                id,
                assistant_id,
                started_at,
                ended_at,
                status: if encounter.status == EncounterStatus::Ended {
                    SmsStatus::Ended
                } else {
                    SmsStatus::Active
                },
                ended_reason: None,
                transcript: None,
                source_number: None,
                destination_number: Some(encounter.phone_number.clone()),
                analysis: None,
                summary: None,
            },
        ),
    })
}

/// The report's Sms object of the fixed text a call step sends after its voicemail
/// (`voicemail.sms_text`): one message, no conversation. `unsent` is `None` when the text was
/// sent (transcript `AI: <text>`), else why not (`system-error`, or `contact-opt-out` when the
/// carrier refused it as an opt-out; no transcript). The ids are internal, as in every stored
/// object.
pub fn voicemail_text_report(
    encounter: &EncounterRow,
    text: &str,
    source_number: Option<&str>,
    unsent: Option<SmsEndedReason>,
    ended_at: Millis,
) -> Sms {
    let (transcript, summary) = match unsent {
        None => (
            Some(format!("AI: {text}")),
            "The fixed text after the voicemail was sent; replies to it are not a conversation.",
        ),
        Some(_) => (None, "The fixed text after the voicemail was not sent."),
    };
    Sms {
        id: encounter.id.0,
        assistant_id: encounter.assistant_id.0,
        started_at: at(encounter.created_at),
        ended_at: at(ended_at),
        status: SmsStatus::Ended,
        ended_reason: unsent,
        transcript,
        source_number: source_number.map(str::to_owned),
        destination_number: Some(encounter.phone_number.clone()),
        analysis: None,
        summary: Some(summary.to_owned()),
    }
}
