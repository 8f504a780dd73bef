//! The report's `Call` object from what Vapi reported at the end of a call.

use clarion_webhooks::{Call, CallAnalysis, CallOutcome, CallStatus, CallType};

use super::mapping::map_end_of_call;
use super::turns::from_artifact;
use super::wire::{EndOfCallReport, parse_time};

/// What Clarion knows of the encounter, for the fields Vapi does not report.
#[derive(Debug, Clone)]
pub struct EncounterFacts<'a> {
    /// Clarion's encounter id (the report's `id`).
    pub encounter_id: i64,
    /// Clarion's assistant id.
    pub assistant_id: i64,
    /// The number called.
    pub destination_number: &'a str,
    /// The number called from, when Vapi does not say (`phoneNumber.number`).
    pub source_number: Option<&'a str>,
    /// What the assistant says on voicemail (`voicemail_message` of its configuration).
    pub voicemail_message: Option<&'a str>,
    /// Custom analysis fields the assistant extracts: only these are copied from
    /// `structuredData` (an empty list copies all of it).
    pub custom_fields: &'a [String],
}

/// The `Call` object and the engine's encounter outcome for an end-of-call report.
pub fn call_from_end_of_call(
    report: &EndOfCallReport,
    facts: &EncounterFacts<'_>,
) -> (Call, &'static str) {
    let result = map_end_of_call(&report.ended_reason, &report.analysis);
    let turns = from_artifact(&report.artifact);
    let started_at = report
        .started_at
        .as_deref()
        .or_else(|| report.call.as_ref().and_then(|c| c.started_at.as_deref()))
        .and_then(parse_time);
    let ended_at = report
        .ended_at
        .as_deref()
        .or_else(|| report.call.as_ref().and_then(|c| c.ended_at.as_deref()))
        .and_then(parse_time);
    let custom = report.analysis.structured_data.as_ref().map(|data| {
        data.iter()
            .filter(|(key, _)| {
                facts.custom_fields.is_empty() || facts.custom_fields.iter().any(|f| f == *key)
            })
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    });
    let connected = result.connected;
    let source_number = report
        .phone_number
        .as_ref()
        .and_then(|p| p.number.clone())
        .or_else(|| facts.source_number.map(str::to_owned));
    let call = Call {
        id: facts.encounter_id,
        assistant_id: facts.assistant_id,
        started_at,
        ended_at,
        call_status: CallStatus::Ended,
        // From the two timestamps the report carries, so `duration_ms` is always
        // `ended_at − started_at` even when they come from different parts of Vapi's message.
        duration_ms: started_at
            .zip(ended_at)
            .and_then(|(start, end)| u64::try_from(end.unix_millis() - start.unix_millis()).ok()),
        ended_reason: Some(result.ended_reason.clone()),
        transcript: turns.transcript.clone(),
        source_number,
        destination_number: Some(facts.destination_number.to_owned()),
        call_type: Some(CallType::OutboundPhoneCall),
        analysis: (connected || turns.transcript.is_some()).then(|| CallAnalysis {
            repetition_count: turns.repetition_count,
            interruption_count: turns.interruption_count,
            custom,
        }),
        summary: report.analysis.summary.clone(),
        outcome: Some(result.outcome.clone()),
        failure_reason: result.failure_reason,
        voicemail_message: (result.outcome == CallOutcome::Voicemail)
            .then(|| facts.voicemail_message.map(str::to_owned))
            .flatten(),
    };
    (call, result.engine_outcome)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::vapi::wire::{ServerMessage, parse_server_message};

    const REPORT: &str = r#"{"message":{"type":"end-of-call-report","endedReason":"customer-ended-call","timestamp":1736175700000,"startedAt":"2025-01-06T15:00:05.000Z",
 "endedAt":"2025-01-06T15:01:35.000Z","cost":0.12,"costs":[{"type":"vapi","subType":"normal","minutes":1.5,"cost":0.075}],
 "analysis":{"summary":"Patient confirmed appointment.","structuredData":{"confirmed":true,"outcome":"resolved","internal":1},"successEvaluation":"true"},
 "artifact":{"transcript":"AI: Hi Ana, this is Clinic X.\nUser: Hi.\n","recordingUrl":"https://example.invalid/rec.wav",
   "messages":[{"role":"bot","message":"Hi Ana, this is Clinic X.","time":1736175606000,"endTime":1736175608000,"secondsFromStart":1.0}]},
 "customer":{"number":"+15555550123"},
 "call":{"id":"call_1","orgId":"org_1","createdAt":"2025-01-06T15:00:00.000Z","updatedAt":"2025-01-06T15:01:40.000Z",
   "type":"outboundPhoneCall","status":"ended","endedReason":"customer-ended-call","assistantId":"asst_1"}}}"#;

    fn report(text: &str) -> EndOfCallReport {
        match parse_server_message(text.as_bytes()).unwrap() {
            ServerMessage::EndOfCallReport(report) => *report,
            other => panic!("not an end-of-call report: {}", other.message_type()),
        }
    }

    fn facts(fields: &[String]) -> EncounterFacts<'_> {
        EncounterFacts {
            encounter_id: 42,
            assistant_id: 7,
            destination_number: "+15555550123",
            source_number: Some("+15555550100"),
            voicemail_message: Some("Please call us back."),
            custom_fields: fields,
        }
    }

    #[test]
    fn the_reference_report_becomes_a_resolved_call() {
        let fields = vec!["confirmed".to_owned()];
        let (call, outcome) = call_from_end_of_call(&report(REPORT), &facts(&fields));
        assert_eq!(outcome, "resolved");
        assert_eq!((call.id, call.assistant_id), (42, 7));
        assert_eq!(call.duration_ms, Some(90_000));
        assert_eq!(call.outcome, Some(CallOutcome::Resolved));
        assert_eq!(
            call.summary.as_deref(),
            Some("Patient confirmed appointment.")
        );
        assert_eq!(call.source_number.as_deref(), Some("+15555550100"));
        assert_eq!(
            call.analysis.clone().unwrap().custom.unwrap(),
            serde_json::json!({ "confirmed": true })
                .as_object()
                .unwrap()
                .clone(),
            "only the assistant's custom fields are copied"
        );
        assert_eq!(call.voicemail_message, None);
        let text = serde_json::to_value(&call).unwrap();
        assert_eq!(text["ended_reason"], "customer-ended");
        assert_eq!(text["started_at"], "2025-01-06T15:00:05.000Z");
    }

    #[test]
    fn duration_is_ended_at_minus_started_at_whichever_part_of_the_message_gave_them() {
        // The message's own `startedAt`, the call's `endedAt`: the duration is theirs.
        let text = REPORT.replace(
            r#""endedAt":"2025-01-06T15:01:35.000Z","#,
            "",
        )
        .replace(
            r#""status":"ended","#,
            r#""status":"ended","startedAt":"2025-01-06T15:00:00.000Z","endedAt":"2025-01-06T15:02:00.000Z","#,
        );
        let (call, _) = call_from_end_of_call(&report(&text), &facts(&[]));
        let (start, end) = (call.started_at.unwrap(), call.ended_at.unwrap());
        assert_eq!(start.to_string(), "2025-01-06T15:00:05.000Z");
        assert_eq!(end.to_string(), "2025-01-06T15:02:00.000Z");
        assert_eq!(
            call.duration_ms.map(i64::try_from),
            Some(Ok(end.unix_millis() - start.unix_millis()))
        );
    }

    #[test]
    fn voicemail_carries_the_assistants_message() {
        let text = REPORT.replace("customer-ended-call", "voicemail");
        let (call, outcome) = call_from_end_of_call(&report(&text), &facts(&[]));
        assert_eq!(outcome, "voicemail");
        assert_eq!(call.outcome, Some(CallOutcome::Voicemail));
        assert_eq!(
            call.voicemail_message.as_deref(),
            Some("Please call us back.")
        );
    }
}
