//! The outcome mix the simulator picks from, and the check of scripted outcomes. The
//! channel and the outcome vocabulary are the engine's ([`Channel`], [`EncounterOutcome`]):
//! a simulated encounter ends with the outcomes a real provider's can. Which of them the
//! simulator produces on each channel (and `simulation.outcomes` may script) is
//! [`simulated_outcomes`].

pub use clarion_engine::{Channel, EncounterOutcome};

use crate::dice::{Dice, Stream};

/// The outcomes a simulated encounter on `channel` can have, in the contract's order: the
/// twelve call outcomes ([`EncounterOutcome::CALL`]) and the five SMS ones
/// ([`EncounterOutcome::SMS`]).
pub fn simulated_outcomes(channel: Channel) -> &'static [EncounterOutcome] {
    match channel {
        Channel::Call => &EncounterOutcome::CALL,
        Channel::Sms => &EncounterOutcome::SMS,
    }
}

/// Whether a simulated encounter on `channel` can end with `outcome`.
pub fn can_simulate(channel: Channel, outcome: EncounterOutcome) -> bool {
    simulated_outcomes(channel).contains(&outcome)
}

/// The nearest outcome the simulator has on `channel`: `outcome` itself when it has it;
/// otherwise `no-reply`/`error` for calls' non-conversations on SMS and `no-answer`/`failed`
/// for SMS-only outcomes on calls. [`simulate`](crate::simulate) applies this to a scripted
/// outcome that the caller did not check with [`validate_outcome`].
pub fn nearest_simulated(channel: Channel, outcome: EncounterOutcome) -> EncounterOutcome {
    if can_simulate(channel, outcome) {
        return outcome;
    }
    match (channel, outcome) {
        (Channel::Call, EncounterOutcome::Error) => EncounterOutcome::Failed,
        (Channel::Call, _) => EncounterOutcome::NoAnswer,
        (Channel::Sms, EncounterOutcome::Failed) => EncounterOutcome::Error,
        (Channel::Sms, _) => EncounterOutcome::NoReply,
    }
}

/// Checks that `outcome` can happen on `channel` (for validating `simulation.outcomes` at
/// enrollment). The error is a sentence naming the outcomes the channel does support.
pub fn validate_outcome(channel: Channel, outcome: EncounterOutcome) -> Result<(), String> {
    if can_simulate(channel, outcome) {
        return Ok(());
    }
    let (article, name) = match channel {
        Channel::Call => ("a", "call"),
        Channel::Sms => ("an", "SMS"),
    };
    let names: Vec<&str> = simulated_outcomes(channel)
        .iter()
        .map(|o| o.as_str())
        .collect();
    Err(format!(
        "`{outcome}` is not {article} {name} outcome; {name} outcomes are: {}",
        names.join(", ")
    ))
}

/// The "realistic mix" for calls, in basis points (sums to 10,000).
const CALL_MIX: [(EncounterOutcome, u32); 12] = [
    (EncounterOutcome::Resolved, 3_500),
    (EncounterOutcome::Voicemail, 2_000),
    (EncounterOutcome::NoAnswer, 1_500),
    (EncounterOutcome::Busy, 500),
    (EncounterOutcome::Failed, 300),
    (EncounterOutcome::Unresolved, 600),
    (EncounterOutcome::Declined, 400),
    (EncounterOutcome::RequestedCallback, 400),
    (EncounterOutcome::Escalated, 300),
    (EncounterOutcome::CustomerDropped, 200),
    (EncounterOutcome::OptOut, 200),
    (EncounterOutcome::AssistantEnded, 100),
];

/// The "realistic mix" for SMS conversations, in basis points (sums to 10,000).
const SMS_MIX: [(EncounterOutcome, u32); 5] = [
    (EncounterOutcome::Resolved, 4_500),
    (EncounterOutcome::NoReply, 3_500),
    (EncounterOutcome::Declined, 1_000),
    (EncounterOutcome::OptOut, 500),
    (EncounterOutcome::Error, 500),
];

/// The weights [`pick_outcome`] draws from, in basis points of 10,000.
///
/// Calls: resolved 35%, voicemail 20%, no-answer 15%, busy 5%, failed 3%, unresolved 6%,
/// declined 4%, requested-callback 4%, escalated 3%, customer-dropped 2%, opt-out 2%,
/// assistant-ended 1%. SMS: resolved 45%, no-reply 35%, declined 10%, opt-out 5%, error 5%.
pub fn outcome_mix(channel: Channel) -> &'static [(EncounterOutcome, u32)] {
    match channel {
        Channel::Call => &CALL_MIX,
        Channel::Sms => &SMS_MIX,
    }
}

/// Picks an outcome from the realistic mix ([`outcome_mix`]), deterministically: the same
/// (sequence id, step, attempt, channel) always gives the same outcome, and different
/// sequences are independent draws. Every attempt of every step draws from the same mix.
pub fn pick_outcome(
    sequence_id: i64,
    step: u32,
    attempt: u32,
    channel: Channel,
) -> EncounterOutcome {
    let mix = outcome_mix(channel);
    let total: u32 = mix.iter().map(|(_, weight)| weight).sum();
    let mut dice = Dice::new(Stream::Pick, sequence_id, step, attempt, channel);
    let mut roll = dice.below(u64::from(total));
    for &(outcome, weight) in mix {
        let weight = u64::from(weight);
        if roll < weight {
            return outcome;
        }
        roll -= weight;
    }
    // Unreachable: `roll < total`. Resolved is the mix's first and most common entry.
    EncounterOutcome::Resolved
}
