//! The serde shapes the scheduler persists and the events API shows, and the outcome table.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use clarion_engine::{
    Channel, DeferReason, EligibilityAction, EncounterOutcome, Note, Phase, SequenceState,
    SequenceStatus, SkipReason, StopReason,
};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[test]
fn outcomes_use_the_api_names_and_round_trip() {
    let names: Vec<String> = EncounterOutcome::ALL
        .iter()
        .map(|o| {
            serde_json::to_value(o)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "resolved",
            "unresolved",
            "voicemail",
            "no-answer",
            "busy",
            "failed",
            "declined",
            "escalated",
            "requested-callback",
            "customer-dropped",
            "assistant-ended",
            "opt-out",
            "no-reply",
            "error"
        ]
    );
    for o in EncounterOutcome::ALL {
        assert_eq!(
            o.to_string(),
            serde_json::to_value(o).unwrap().as_str().unwrap()
        );
        let back: EncounterOutcome =
            serde_json::from_value(serde_json::to_value(o).unwrap()).unwrap();
        assert_eq!(back, o);
    }
}

#[test]
fn call_and_sms_outcome_lists_cover_every_outcome() {
    for o in EncounterOutcome::ALL {
        assert!(
            EncounterOutcome::CALL.contains(&o) || EncounterOutcome::SMS.contains(&o),
            "{o} belongs to no channel"
        );
    }
}

#[test]
fn only_no_answer_busy_and_voicemail_are_retryable_and_four_outcomes_stop() {
    let table: String = EncounterOutcome::ALL
        .iter()
        .map(|o| {
            let retry = if o.is_retryable_call() {
                "retryable"
            } else {
                "-"
            };
            let stop = o.stop_reason().map_or("-".to_string(), |r| {
                serde_json::to_value(r)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            });
            format!("{:<20} {retry:<10} stop_reason={stop}\n", o.as_str())
        })
        .collect();
    insta::assert_snapshot!(table);
}

#[test]
fn enums_use_kebab_case_names() {
    let json = serde_json::json!([
        Channel::Call,
        Channel::Sms,
        StopReason::Resolved,
        StopReason::OptOut,
        StopReason::Declined,
        StopReason::Escalated,
        SequenceStatus::Active,
        SequenceStatus::Paused,
        SequenceStatus::Ended,
        DeferReason::CallingHours,
        DeferReason::ContactCap,
        DeferReason::CallingRule,
        DeferReason::CallingRuleAttempts,
        SkipReason::Suppressed,
        SkipReason::NoAllowedWindow,
        SkipReason::MissingStep,
        SkipReason::Ineligible,
        EligibilityAction::SkipStep,
        EligibilityAction::EndSequence,
    ]);
    assert_eq!(
        json.to_string(),
        r#"["call","sms","resolved","opt-out","declined","escalated","active","paused","ended","calling-hours","contact-cap","calling-rule","calling-rule-attempts","suppressed","no-allowed-window","missing-step","ineligible","skip-step","end-sequence"]"#
    );
}

#[test]
fn persisted_state_shape() {
    let waiting = SequenceState {
        step: 1,
        attempt: 2,
        phase: Phase::WaitingToStart {
            due_at: t("2025-06-02T13:00:00Z"),
        },
        next_wake: Some(t("2025-06-02T13:00:00Z")),
        last_outcome: Some(EncounterOutcome::NoAnswer),
        ..SequenceState::new()
    };
    insta::assert_json_snapshot!(waiting);
    let json = serde_json::to_string(&waiting).unwrap();
    assert_eq!(
        serde_json::from_str::<SequenceState>(&json).unwrap(),
        waiting
    );
}

#[test]
fn history_note_shapes() {
    let notes = vec![
        Note::StepScheduled {
            step: 0,
            attempt: 1,
            due_at: t("2025-06-02T09:00:00Z"),
        },
        Note::Deferred {
            step: 0,
            attempt: 1,
            reason: DeferReason::CallingHours,
            until: t("2025-06-02T12:00:00Z"),
            rule: None,
        },
        Note::Deferred {
            step: 0,
            attempt: 1,
            reason: DeferReason::CallingRule,
            until: t("2025-06-03T12:00:00Z"),
            rule: Some("US-FL".into()),
        },
        Note::Skipped {
            step: 1,
            attempt: 1,
            reason: SkipReason::Suppressed,
            action: None,
            hook_reason: None,
        },
        Note::Skipped {
            step: 0,
            attempt: 2,
            reason: SkipReason::Ineligible,
            action: Some(EligibilityAction::SkipStep),
            hook_reason: Some("hook-error: timeout".into()),
        },
        Note::EncounterStarted {
            step: 0,
            attempt: 1,
            channel: Channel::Call,
        },
        Note::EncounterEnded {
            step: 0,
            attempt: 1,
            outcome: EncounterOutcome::NoAnswer,
        },
        Note::RetryScheduled {
            step: 0,
            attempt: 2,
            due_at: t("2025-06-02T16:00:00Z"),
        },
        Note::Paused,
        Note::Resumed,
        Note::Cancelled,
        Note::Ended {
            description: "Resolved on step 1 (call).".into(),
        },
    ];
    insta::assert_json_snapshot!(notes);
    let json = serde_json::to_string(&notes).unwrap();
    assert_eq!(serde_json::from_str::<Vec<Note>>(&json).unwrap(), notes);
}
