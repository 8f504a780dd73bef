//! The report's `Call` object from what Vapi reported at the end of a call.
//!
//! **Spoken opt-outs.** Besides `structuredData.outcome = "opt-out"` (the mapping's rule), a
//! call is an opt-out when its analysis sets a boolean opt-out flag
//! ([`super::mapping::STRUCTURED_OPT_OUT_FLAGS`], e.g. `opt_out: true`) or when the patient's own lines of the
//! transcript revoke consent ([`clarion_channels::revocation`]: "stop calling me, take me off
//! your list"), whatever the `endedReason` and the rest of the analysis say. The report then
//! says `outcome: "unresolved"`, `failure_reason: "opt-out"`, the engine hears `opt-out` (the
//! sequence ends, the number is suppressed) and [`CallEnd::opt_out`] says why.

use clarion_channels::revocation::{self, Evidence};
use clarion_webhooks::{Call, CallAnalysis, CallOutcome, CallStatus, CallType, FailureReason};

use super::mapping::{
    STRUCTURED_OUTCOME_KEY, failure_reason_str, map_end_of_call, structured_opt_out_flag,
};
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
    /// The number Clarion chose to call from (a caller number); `None`: Vapi's
    /// `phoneNumber.number`.
    pub source_number: Option<&'a str>,
    /// What the assistant says on voicemail (`voicemail_message` of its configuration).
    pub voicemail_message: Option<&'a str>,
    /// Custom analysis fields the assistant extracts: only these are copied from
    /// `structuredData` (an empty list copies all of it).
    pub custom_fields: &'a [String],
}

/// A call's end as Clarion reads it.
#[derive(Debug, Clone)]
pub struct CallEnd {
    /// The report's `Call` object.
    pub call: Call,
    /// The engine's encounter outcome (`opt-out`, `resolved`, `no-answer`, …).
    pub engine_outcome: &'static str,
    /// Why the call is an opt-out, when it is one (module docs).
    pub opt_out: Option<Evidence>,
}

/// The `Call` object, the engine's encounter outcome and any opt-out evidence for an
/// end-of-call report.
pub fn call_from_end_of_call(report: &EndOfCallReport, facts: &EncounterFacts<'_>) -> CallEnd {
    let mut result = map_end_of_call(&report.ended_reason, &report.analysis);
    let turns = from_artifact(&report.artifact);
    let opt_out = if result.failure_reason == Some(FailureReason::OptOut) {
        Some(Evidence {
            source: "structured-data",
            detail: STRUCTURED_OUTCOME_KEY.to_owned(),
        })
    } else if let Some(key) = structured_opt_out_flag(&report.analysis) {
        Some(Evidence {
            source: "structured-data",
            detail: key.to_owned(),
        })
    } else {
        turns
            .transcript
            .as_deref()
            .and_then(revocation::in_transcript)
            .map(|rule| Evidence {
                source: "transcript",
                detail: rule.name.to_owned(),
            })
    };
    if opt_out.is_some() {
        result.outcome = CallOutcome::Unresolved;
        result.failure_reason = Some(FailureReason::OptOut);
        result.engine_outcome = failure_reason_str(FailureReason::OptOut);
    }
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
    // The number Clarion chose to call from, when it chose one; else Vapi's.
    let source_number = facts
        .source_number
        .map(str::to_owned)
        .or_else(|| report.phone_number.as_ref().and_then(|p| p.number.clone()));
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
    CallEnd {
        call,
        engine_outcome: result.engine_outcome,
        opt_out,
    }
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
        let CallEnd {
            call,
            engine_outcome: outcome,
            opt_out,
        } = call_from_end_of_call(&report(REPORT), &facts(&fields));
        assert_eq!(opt_out, None);
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
        let call = call_from_end_of_call(&report(&text), &facts(&[])).call;
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
        let CallEnd {
            call,
            engine_outcome: outcome,
            ..
        } = call_from_end_of_call(&report(&text), &facts(&[]));
        assert_eq!(outcome, "voicemail");
        assert_eq!(call.outcome, Some(CallOutcome::Voicemail));
        assert_eq!(
            call.voicemail_message.as_deref(),
            Some("Please call us back.")
        );
    }

    /// A resolved-looking report whose patient said `said` in the transcript.
    fn report_where_the_patient_says(said: &str) -> String {
        REPORT.replace(
            r#""transcript":"AI: Hi Ana, this is Clinic X.\nUser: Hi.\n""#,
            &format!(r#""transcript":"AI: Hi Ana, this is Clinic X.\nUser: {said}\n""#),
        )
    }

    #[test]
    fn a_revocation_in_the_patients_words_makes_the_call_an_opt_out() {
        // Timed messages are absent from the transcript path's input here: the plain
        // transcript carries the patient's words (the message list has only the bot's).
        let text = report_where_the_patient_says("Stop calling me, take me off your list.")
            .replace(r#""messages":[{"role":"bot","message":"Hi Ana, this is Clinic X.","time":1736175606000,"endTime":1736175608000,"secondsFromStart":1.0}]"#, r#""messages":[]"#);
        let end = call_from_end_of_call(&report(&text), &facts(&[]));
        assert_eq!(end.engine_outcome, "opt-out");
        assert_eq!(end.call.outcome, Some(CallOutcome::Unresolved));
        assert_eq!(end.call.failure_reason, Some(FailureReason::OptOut));
        assert_eq!(
            end.opt_out,
            Some(Evidence {
                source: "transcript",
                detail: "stop-contacting".into()
            })
        );
        // The same words from the assistant are not the patient's.
        let text = REPORT
            .replace(
                r#""transcript":"AI: Hi Ana, this is Clinic X.\nUser: Hi.\n""#,
                r#""transcript":"AI: You asked us to stop calling you; we will take you off our list.\nUser: Thanks.\n""#,
            )
            .replace(r#""messages":[{"role":"bot","message":"Hi Ana, this is Clinic X.","time":1736175606000,"endTime":1736175608000,"secondsFromStart":1.0}]"#, r#""messages":[]"#);
        let end = call_from_end_of_call(&report(&text), &facts(&[]));
        assert_eq!(end.engine_outcome, "resolved");
        assert_eq!(end.opt_out, None);
    }

    #[test]
    fn a_boolean_opt_out_flag_in_the_structured_data_makes_the_call_an_opt_out() {
        for (flag, value) in [
            ("opt_out", "true"),
            ("optOut", "true"),
            ("do_not_call", "true"),
            ("doNotContact", r#""yes""#),
        ] {
            let text = REPORT.replace(
                r#""confirmed":true,"#,
                &format!(r#""confirmed":true,"{flag}":{value},"#),
            );
            let end = call_from_end_of_call(&report(&text), &facts(&[]));
            assert_eq!(end.engine_outcome, "opt-out", "{flag}");
            assert_eq!(end.call.failure_reason, Some(FailureReason::OptOut));
            assert_eq!(
                end.opt_out,
                Some(Evidence {
                    source: "structured-data",
                    detail: flag.into()
                })
            );
        }
        // A flag that is false, or a key that is not an opt-out flag, changes nothing.
        for extra in [
            r#""opt_out":false,"#,
            r#""opt_in":true,"#,
            r#""optOut":"no","#,
        ] {
            let text = REPORT.replace(
                r#""confirmed":true,"#,
                &format!(r#""confirmed":true,{extra}"#),
            );
            let end = call_from_end_of_call(&report(&text), &facts(&[]));
            assert_eq!(end.engine_outcome, "resolved", "{extra}");
            assert_eq!(end.opt_out, None);
        }
    }

    #[test]
    fn the_structured_opt_out_outcome_is_evidence_too() {
        let text = REPORT.replace(r#""outcome":"resolved""#, r#""outcome":"opt-out""#);
        let end = call_from_end_of_call(&report(&text), &facts(&[]));
        assert_eq!(end.engine_outcome, "opt-out");
        assert_eq!(
            end.opt_out,
            Some(Evidence {
                source: "structured-data",
                detail: "outcome".into()
            })
        );
    }
}
