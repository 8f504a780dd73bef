//! Channels, simulated outcomes, and the outcome mix the simulator picks from.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dice::{Dice, Stream};

/// The kind of encounter a step makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    /// An AI phone call.
    Call,
    /// An AI SMS conversation.
    Sms,
}

impl Channel {
    /// Both channels.
    pub const ALL: [Channel; 2] = [Channel::Call, Channel::Sms];

    /// The wire name: `call` or `sms`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Call => "call",
            Channel::Sms => "sms",
        }
    }

    /// The outcomes a simulated encounter on this channel can have.
    pub fn outcomes(self) -> &'static [SimOutcome] {
        match self {
            Channel::Call => &CALL_OUTCOMES,
            Channel::Sms => &SMS_OUTCOMES,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|channel| channel.as_str() == text)
            .ok_or_else(|| ParseError::new("channel", text, &["call", "sms"]))
    }
}

/// The outcome of one simulated encounter, as written in an enrollment's
/// `simulation.outcomes` (kebab-case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimOutcome {
    /// Call or SMS: the purpose was achieved (the patient confirmed, agreed, …).
    Resolved,
    /// Call: the patient was reached but could not commit; no failure reason.
    Unresolved,
    /// Call: voicemail answered and the assistant left a message.
    Voicemail,
    /// Call: it rang out.
    NoAnswer,
    /// Call: the line was busy.
    Busy,
    /// Call: it could not be connected.
    Failed,
    /// Call or SMS: the patient declined.
    Declined,
    /// Call: the patient asked for a person and the call was transferred to staff.
    Escalated,
    /// Call: the patient asked to be called back later.
    RequestedCallback,
    /// Call: the patient's side dropped mid-conversation.
    CustomerDropped,
    /// Call: the assistant ended the call before the purpose was achieved (wrong person, wrong
    /// number, unusable line).
    AssistantEnded,
    /// Call or SMS: the patient asked not to be contacted again.
    OptOut,
    /// SMS: the patient never replied before the conversation timed out.
    NoReply,
    /// SMS: the conversation stopped because of a system error.
    Error,
}

/// The twelve call outcomes, in the contract's order.
pub const CALL_OUTCOMES: [SimOutcome; 12] = [
    SimOutcome::Resolved,
    SimOutcome::Unresolved,
    SimOutcome::Voicemail,
    SimOutcome::NoAnswer,
    SimOutcome::Busy,
    SimOutcome::Failed,
    SimOutcome::Declined,
    SimOutcome::Escalated,
    SimOutcome::RequestedCallback,
    SimOutcome::CustomerDropped,
    SimOutcome::AssistantEnded,
    SimOutcome::OptOut,
];

/// The five SMS outcomes, in the contract's order.
pub const SMS_OUTCOMES: [SimOutcome; 5] = [
    SimOutcome::Resolved,
    SimOutcome::NoReply,
    SimOutcome::Declined,
    SimOutcome::OptOut,
    SimOutcome::Error,
];

impl SimOutcome {
    /// Every outcome, call outcomes first.
    pub const ALL: [SimOutcome; 14] = [
        SimOutcome::Resolved,
        SimOutcome::Unresolved,
        SimOutcome::Voicemail,
        SimOutcome::NoAnswer,
        SimOutcome::Busy,
        SimOutcome::Failed,
        SimOutcome::Declined,
        SimOutcome::Escalated,
        SimOutcome::RequestedCallback,
        SimOutcome::CustomerDropped,
        SimOutcome::AssistantEnded,
        SimOutcome::OptOut,
        SimOutcome::NoReply,
        SimOutcome::Error,
    ];

    /// The wire name, e.g. `requested-callback`.
    pub fn as_str(self) -> &'static str {
        match self {
            SimOutcome::Resolved => "resolved",
            SimOutcome::Unresolved => "unresolved",
            SimOutcome::Voicemail => "voicemail",
            SimOutcome::NoAnswer => "no-answer",
            SimOutcome::Busy => "busy",
            SimOutcome::Failed => "failed",
            SimOutcome::Declined => "declined",
            SimOutcome::Escalated => "escalated",
            SimOutcome::RequestedCallback => "requested-callback",
            SimOutcome::CustomerDropped => "customer-dropped",
            SimOutcome::AssistantEnded => "assistant-ended",
            SimOutcome::OptOut => "opt-out",
            SimOutcome::NoReply => "no-reply",
            SimOutcome::Error => "error",
        }
    }

    /// Whether an encounter on `channel` can have this outcome.
    pub fn is_valid_for(self, channel: Channel) -> bool {
        channel.outcomes().contains(&self)
    }

    /// The nearest outcome that `channel` supports: the outcome itself when valid; otherwise
    /// `no-reply`/`error` for calls' non-conversations on SMS and `no-answer`/`failed` for
    /// SMS-only outcomes on calls. [`simulate`](crate::simulate) applies this to a scripted
    /// outcome that the caller did not check with [`validate_outcome`].
    pub fn for_channel(self, channel: Channel) -> SimOutcome {
        if self.is_valid_for(channel) {
            return self;
        }
        match (channel, self) {
            (Channel::Call, SimOutcome::Error) => SimOutcome::Failed,
            (Channel::Call, _) => SimOutcome::NoAnswer,
            (Channel::Sms, SimOutcome::Failed) => SimOutcome::Error,
            (Channel::Sms, _) => SimOutcome::NoReply,
        }
    }
}

impl fmt::Display for SimOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SimOutcome {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SimOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = SimOutcome::ALL.iter().map(|o| o.as_str()).collect();
                ParseError::new("simulated outcome", text, &names)
            })
    }
}

/// A string that names no channel or no outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    message: String,
}

impl ParseError {
    fn new(what: &str, input: &str, expected: &[&str]) -> Self {
        Self {
            message: format!(
                "unknown {what} `{input}`; expected one of: {}",
                expected.join(", ")
            ),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

/// Checks that `outcome` can happen on `channel` (for validating `simulation.outcomes` at
/// enrollment). The error is a sentence naming the outcomes the channel does support.
pub fn validate_outcome(channel: Channel, outcome: SimOutcome) -> Result<(), String> {
    if outcome.is_valid_for(channel) {
        return Ok(());
    }
    let (article, name) = match channel {
        Channel::Call => ("a", "call"),
        Channel::Sms => ("an", "SMS"),
    };
    let names: Vec<&str> = channel.outcomes().iter().map(|o| o.as_str()).collect();
    Err(format!(
        "`{outcome}` is not {article} {name} outcome; {name} outcomes are: {}",
        names.join(", ")
    ))
}

/// The "realistic mix" for calls, in basis points (sums to 10,000).
const CALL_MIX: [(SimOutcome, u32); 12] = [
    (SimOutcome::Resolved, 3_500),
    (SimOutcome::Voicemail, 2_000),
    (SimOutcome::NoAnswer, 1_500),
    (SimOutcome::Busy, 500),
    (SimOutcome::Failed, 300),
    (SimOutcome::Unresolved, 600),
    (SimOutcome::Declined, 400),
    (SimOutcome::RequestedCallback, 400),
    (SimOutcome::Escalated, 300),
    (SimOutcome::CustomerDropped, 200),
    (SimOutcome::OptOut, 200),
    (SimOutcome::AssistantEnded, 100),
];

/// The "realistic mix" for SMS conversations, in basis points (sums to 10,000).
const SMS_MIX: [(SimOutcome, u32); 5] = [
    (SimOutcome::Resolved, 4_500),
    (SimOutcome::NoReply, 3_500),
    (SimOutcome::Declined, 1_000),
    (SimOutcome::OptOut, 500),
    (SimOutcome::Error, 500),
];

/// The weights [`pick_outcome`] draws from, in basis points of 10,000.
///
/// Calls: resolved 35%, voicemail 20%, no-answer 15%, busy 5%, failed 3%, unresolved 6%,
/// declined 4%, requested-callback 4%, escalated 3%, customer-dropped 2%, opt-out 2%,
/// assistant-ended 1%. SMS: resolved 45%, no-reply 35%, declined 10%, opt-out 5%, error 5%.
pub fn outcome_mix(channel: Channel) -> &'static [(SimOutcome, u32)] {
    match channel {
        Channel::Call => &CALL_MIX,
        Channel::Sms => &SMS_MIX,
    }
}

/// Picks an outcome from the realistic mix ([`outcome_mix`]), deterministically: the same
/// (sequence id, step, attempt, channel) always gives the same outcome, and different
/// sequences are independent draws. Every attempt of every step draws from the same mix.
pub fn pick_outcome(sequence_id: i64, step: u32, attempt: u32, channel: Channel) -> SimOutcome {
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
    SimOutcome::Resolved
}
