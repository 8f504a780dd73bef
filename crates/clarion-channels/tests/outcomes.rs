//! Outcome names, per-channel validation and the realistic mix of `pick_outcome`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use clarion_channels::{
    Channel, EncounterOutcome, can_simulate, nearest_simulated, outcome_mix, pick_outcome,
    simulated_outcomes, validate_outcome,
};

#[test]
fn outcome_names_are_kebab_case_in_serde_display_and_from_str() {
    let names = [
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
        "error",
    ];
    assert_eq!(EncounterOutcome::ALL.len(), names.len());
    for (outcome, name) in EncounterOutcome::ALL.into_iter().zip(names) {
        assert_eq!(outcome.to_string(), name);
        assert_eq!(name.parse::<EncounterOutcome>().unwrap(), outcome);
        assert_eq!(
            serde_json::to_string(&outcome).unwrap(),
            format!("\"{name}\"")
        );
        let parsed: EncounterOutcome = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(parsed, outcome);
    }
    let error = "Resolved"
        .parse::<EncounterOutcome>()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`Resolved`") && error.contains("requested-callback"),
        "{error}"
    );
    assert!(serde_json::from_str::<EncounterOutcome>("\"no_answer\"").is_err());
    assert_eq!("sms".parse::<Channel>().unwrap(), Channel::Sms);
    assert_eq!(serde_json::to_string(&Channel::Call).unwrap(), "\"call\"");
    assert!("voice".parse::<Channel>().is_err());
}

#[test]
fn validate_outcome_accepts_each_channels_outcomes_and_rejects_the_others() {
    let call_only = [
        EncounterOutcome::Unresolved,
        EncounterOutcome::Voicemail,
        EncounterOutcome::NoAnswer,
        EncounterOutcome::Busy,
        EncounterOutcome::Failed,
        EncounterOutcome::Escalated,
        EncounterOutcome::RequestedCallback,
        EncounterOutcome::CustomerDropped,
        EncounterOutcome::AssistantEnded,
    ];
    let sms_only = [EncounterOutcome::NoReply, EncounterOutcome::Error];
    let both = [
        EncounterOutcome::Resolved,
        EncounterOutcome::Declined,
        EncounterOutcome::OptOut,
    ];
    for outcome in both {
        assert_eq!(validate_outcome(Channel::Call, outcome), Ok(()));
        assert_eq!(validate_outcome(Channel::Sms, outcome), Ok(()));
    }
    for outcome in call_only {
        assert_eq!(validate_outcome(Channel::Call, outcome), Ok(()));
        let error = validate_outcome(Channel::Sms, outcome).unwrap_err();
        assert!(error.contains(outcome.as_str()), "{error}");
        assert!(
            error.contains("no-reply"),
            "lists the SMS outcomes: {error}"
        );
    }
    for outcome in sms_only {
        assert_eq!(validate_outcome(Channel::Sms, outcome), Ok(()));
        let error = validate_outcome(Channel::Call, outcome).unwrap_err();
        assert!(error.contains(outcome.as_str()), "{error}");
        assert!(
            error.contains("voicemail"),
            "lists the call outcomes: {error}"
        );
    }
    assert_eq!(EncounterOutcome::CALL.len(), 12);
    assert_eq!(EncounterOutcome::SMS.len(), 5);
    assert_eq!(
        validate_outcome(Channel::Sms, EncounterOutcome::Voicemail).unwrap_err(),
        "`voicemail` is not an SMS outcome; SMS outcomes are: resolved, no-reply, declined, \
         opt-out, error"
    );
    assert_eq!(
        validate_outcome(Channel::Call, EncounterOutcome::NoReply).unwrap_err(),
        "`no-reply` is not a call outcome; call outcomes are: resolved, \
         unresolved, voicemail, no-answer, busy, failed, declined, escalated, \
         requested-callback, customer-dropped, assistant-ended, opt-out"
    );
}

#[test]
fn invalid_outcomes_map_to_the_nearest_one_the_channel_has() {
    assert_eq!(
        nearest_simulated(Channel::Sms, EncounterOutcome::Voicemail),
        EncounterOutcome::NoReply
    );
    assert_eq!(
        nearest_simulated(Channel::Sms, EncounterOutcome::Failed),
        EncounterOutcome::Error
    );
    assert_eq!(
        nearest_simulated(Channel::Call, EncounterOutcome::NoReply),
        EncounterOutcome::NoAnswer
    );
    assert_eq!(
        nearest_simulated(Channel::Call, EncounterOutcome::Error),
        EncounterOutcome::Failed
    );
    assert_eq!(
        nearest_simulated(Channel::Sms, EncounterOutcome::OptOut),
        EncounterOutcome::OptOut
    );
}

#[test]
fn the_mix_weights_cover_exactly_the_channels_outcomes() {
    for channel in Channel::ALL {
        let mix = outcome_mix(channel);
        assert_eq!(mix.iter().map(|(_, w)| w).sum::<u32>(), 10_000);
        let mut outcomes: Vec<EncounterOutcome> = mix.iter().map(|(o, _)| *o).collect();
        let mut expected = simulated_outcomes(channel).to_vec();
        outcomes.sort();
        expected.sort();
        assert_eq!(outcomes, expected);
    }
}

fn rates(channel: Channel, samples: i64) -> BTreeMap<EncounterOutcome, f64> {
    let mut counts = BTreeMap::new();
    for sequence_id in 1..=samples {
        *counts
            .entry(pick_outcome(sequence_id, 1, 1, channel))
            .or_insert(0u32) += 1;
    }
    counts
        .into_iter()
        .map(|(outcome, count)| (outcome, 100.0 * f64::from(count) / samples as f64))
        .collect()
}

fn assert_near(channel: Channel, targets: &[(EncounterOutcome, f64)]) {
    let rates = rates(channel, 10_000);
    for &(outcome, target) in targets {
        let rate = rates.get(&outcome).copied().unwrap_or(0.0);
        assert!(
            (rate - target).abs() <= 2.0,
            "{channel} {outcome}: {rate:.2}% vs target {target}% ({rates:?})"
        );
    }
    assert!(rates.keys().all(|o| can_simulate(channel, *o)));
}

#[test]
fn call_mix_over_ten_thousand_sequences_is_near_the_targets() {
    assert_near(
        Channel::Call,
        &[
            (EncounterOutcome::Resolved, 35.0),
            (EncounterOutcome::Voicemail, 20.0),
            (EncounterOutcome::NoAnswer, 15.0),
            (EncounterOutcome::Busy, 5.0),
            (EncounterOutcome::Failed, 3.0),
            (EncounterOutcome::OptOut, 2.0),
        ],
    );
    // The rest (22%) is spread over the other six conversation outcomes, each present.
    let rates = rates(Channel::Call, 10_000);
    let rest: f64 = [
        EncounterOutcome::Unresolved,
        EncounterOutcome::Declined,
        EncounterOutcome::Escalated,
        EncounterOutcome::RequestedCallback,
        EncounterOutcome::CustomerDropped,
        EncounterOutcome::AssistantEnded,
    ]
    .iter()
    .map(|o| {
        let rate = rates.get(o).copied().unwrap_or(0.0);
        assert!(rate > 0.3, "{o} never picked");
        rate
    })
    .sum();
    assert!((rest - 20.0).abs() <= 3.0, "rest {rest}");
}

#[test]
fn sms_mix_over_ten_thousand_sequences_is_near_the_targets() {
    assert_near(
        Channel::Sms,
        &[
            (EncounterOutcome::Resolved, 45.0),
            (EncounterOutcome::NoReply, 35.0),
            (EncounterOutcome::Declined, 10.0),
            (EncounterOutcome::OptOut, 5.0),
            (EncounterOutcome::Error, 5.0),
        ],
    );
}

#[test]
fn picks_are_deterministic_and_independent_across_steps_and_attempts() {
    let first: Vec<EncounterOutcome> = (0..200)
        .map(|id| pick_outcome(id, 1, 1, Channel::Call))
        .collect();
    let again: Vec<EncounterOutcome> = (0..200)
        .map(|id| pick_outcome(id, 1, 1, Channel::Call))
        .collect();
    assert_eq!(first, again);
    let retried: Vec<EncounterOutcome> = (0..200)
        .map(|id| pick_outcome(id, 1, 2, Channel::Call))
        .collect();
    let next_step: Vec<EncounterOutcome> = (0..200)
        .map(|id| pick_outcome(id, 2, 1, Channel::Call))
        .collect();
    let differ =
        |other: &[EncounterOutcome]| first.iter().zip(other).filter(|(a, b)| a != b).count();
    assert!(differ(&retried) > 80, "{}", differ(&retried));
    assert!(differ(&next_step) > 80, "{}", differ(&next_step));
    // Negative and extreme ids are fine.
    for id in [i64::MIN, -1, 0, i64::MAX] {
        assert!(can_simulate(
            Channel::Sms,
            pick_outcome(id, 0, 0, Channel::Sms)
        ));
    }
}
