//! One simulated encounter: outcome, status timeline, timing and the final report object.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use clarion_webhooks::{
    Call, CallAnalysis, CallEndedReason, CallOutcome, CallStatus, CallType, FailureReason,
    OutreachStep, Sms, SmsAnalysis, SmsStatus, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::analysis::{count_interruptions, count_repetitions};
use crate::custom::custom_values;
use crate::dice::{Dice, Stream};
use crate::outcome::{Channel, EncounterOutcome, nearest_simulated, pick_outcome};
use crate::profile::{AssistantProfile, ContactProfile};
use crate::report_map::{call_outcome_of, sms_ended_reason_of};
use crate::script::{self, Ctx, PhoneGuard, Script, Speaker, Turn};

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// Everything the simulator needs to run one encounter (one attempt of one step).
#[derive(Debug, Clone, Copy)]
pub struct EncounterRequest<'a> {
    /// The sequence; with `step`, `attempt` and `channel` it seeds every random choice.
    pub sequence_id: i64,
    /// The encounter's id: the report object's `id`.
    pub encounter_id: i64,
    /// The step number in the sequence.
    pub step: u32,
    /// The attempt number of this step.
    pub attempt: u32,
    /// Call or SMS.
    pub channel: Channel,
    /// The assistant handling the encounter.
    pub assistant: &'a AssistantProfile,
    /// The contact reached.
    pub contact: &'a ContactProfile,
    /// The source number, E.164.
    pub clinic_number: &'a str,
    /// The outcome the enrollment scripted for this encounter (`simulation.outcomes`, consumed
    /// one per encounter by the caller); `None` picks one from the realistic mix. An outcome
    /// the channel does not have is mapped with [`nearest_simulated`](crate::nearest_simulated).
    pub scripted: Option<EncounterOutcome>,
    /// When the encounter starts, on the engine's clock.
    pub started_at: DateTime<Utc>,
    /// How long an SMS conversation waits for a reply before it times out.
    pub sms_timeout: Duration,
    /// What a call that reaches voicemail does (the step's voicemail policy).
    pub voicemail: VoicemailAction<'a>,
}

/// What a call does when it reaches voicemail: the step's voicemail policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VoicemailAction<'a> {
    /// Leave the assistant's message (the simulator writes one from its purpose).
    #[default]
    AssistantMessage,
    /// Leave this message.
    Leave(&'a str),
    /// Hang up without leaving a message.
    HangUp,
}

/// A status the encounter passes through.
///
/// Calls: `queued` → `ringing` → `in-progress` → `ended`; calls that never connect skip
/// `in-progress` (no-answer and busy ring first; a failed call goes from `queued` straight to
/// `ended`), and an escalated call passes through `forwarding` before it ends. SMS
/// conversations: `active` → `ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatusStep {
    /// Call accepted by the provider, not yet dialling.
    Queued,
    /// Call: the contact's phone is ringing.
    Ringing,
    /// Call: connected (to the contact or to their voicemail).
    InProgress,
    /// Call: being transferred to staff.
    Forwarding,
    /// SMS: the conversation is open.
    Active,
    /// The encounter is over.
    Ended,
}

impl StatusStep {
    /// The wire name, e.g. `in-progress`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusStep::Queued => "queued",
            StatusStep::Ringing => "ringing",
            StatusStep::InProgress => "in-progress",
            StatusStep::Forwarding => "forwarding",
            StatusStep::Active => "active",
            StatusStep::Ended => "ended",
        }
    }

    /// The call status this step is, if it is one.
    pub fn call_status(self) -> Option<CallStatus> {
        match self {
            StatusStep::Queued => Some(CallStatus::Queued),
            StatusStep::Ringing => Some(CallStatus::Ringing),
            StatusStep::InProgress => Some(CallStatus::InProgress),
            StatusStep::Forwarding => Some(CallStatus::Forwarding),
            StatusStep::Ended => Some(CallStatus::Ended),
            StatusStep::Active => None,
        }
    }

    /// The SMS status this step is, if it is one.
    pub fn sms_status(self) -> Option<SmsStatus> {
        match self {
            StatusStep::Active => Some(SmsStatus::Active),
            StatusStep::Ended => Some(SmsStatus::Ended),
            _ => None,
        }
    }
}

/// The final report object of an encounter, as it goes into the End of Sequence Report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncounterReport {
    /// A call.
    Call(Call),
    /// An SMS conversation.
    Sms(Sms),
}

impl EncounterReport {
    /// The channel of the encounter.
    pub fn channel(&self) -> Channel {
        match self {
            EncounterReport::Call(_) => Channel::Call,
            EncounterReport::Sms(_) => Channel::Sms,
        }
    }

    /// The transcript, if anyone spoke.
    pub fn transcript(&self) -> Option<&str> {
        match self {
            EncounterReport::Call(call) => call.transcript.as_deref(),
            EncounterReport::Sms(sms) => sms.transcript.as_deref(),
        }
    }

    /// The summary.
    pub fn summary(&self) -> Option<&str> {
        match self {
            EncounterReport::Call(call) => call.summary.as_deref(),
            EncounterReport::Sms(sms) => sms.summary.as_deref(),
        }
    }

    /// The report's outreach step for this encounter.
    pub fn to_outreach_step(&self, step: u32) -> OutreachStep {
        match self {
            EncounterReport::Call(call) => OutreachStep::call(step, call.clone()),
            EncounterReport::Sms(sms) => OutreachStep::sms(step, sms.clone()),
        }
    }
}

/// The result of [`simulate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedEncounter {
    /// The outcome simulated (the scripted one, or the mix's pick).
    pub outcome: EncounterOutcome,
    /// The statuses in order, each with its offset from `started_at`; the first is at zero and
    /// the last is `ended` at `ends_after`.
    pub status_timeline: Vec<(Duration, StatusStep)>,
    /// When the encounter ends, as an offset from `started_at`.
    pub ends_after: Duration,
    /// The final call or SMS object.
    pub report: EncounterReport,
}

/// Runs one encounter in the simulator: a pure function of `request`.
///
/// The outcome is `request.scripted` or [`pick_outcome`]; wording, timing and episodes come
/// from a ChaCha8 stream seeded with (sequence id, step, attempt, channel), so the same request
/// always gives the same encounter, byte for byte. Nothing reads a clock or does I/O.
pub fn simulate(request: &EncounterRequest<'_>) -> SimulatedEncounter {
    let outcome = nearest_simulated(
        request.channel,
        request.scripted.unwrap_or_else(|| {
            pick_outcome(
                request.sequence_id,
                request.step,
                request.attempt,
                request.channel,
            )
        }),
    );
    let mut dice = Dice::new(
        Stream::Script,
        request.sequence_id,
        request.step,
        request.attempt,
        request.channel,
    );
    let ctx = Ctx::new(request.assistant, request.contact);
    match request.channel {
        Channel::Call => simulate_call(request, outcome, &ctx, &mut dice),
        Channel::Sms => simulate_sms(request, outcome, &ctx, &mut dice),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn at(start: DateTime<Utc>, offset_ms: u64) -> Timestamp {
    let delta = i64::try_from(offset_ms)
        .ok()
        .and_then(TimeDelta::try_milliseconds)
        .unwrap_or(TimeDelta::MAX);
    Timestamp::from_datetime(start.checked_add_signed(delta).unwrap_or(start))
}

/// How long the turns take to say: speech at 380–460 ms a word, plus the assistant's response
/// latency or the contact's pause before each turn.
fn speaking_time(turns: &[Turn], dice: &mut Dice) -> u64 {
    let mut total = dice.between(SECOND, 3 * SECOND);
    for turn in turns {
        let words = turn.text.split_whitespace().count() as u64;
        total += words * dice.between(380, 460);
        total += match turn.speaker {
            Speaker::Ai => dice.between(1_200, 3_000),
            Speaker::User => dice.between(600, 2_000),
        };
    }
    total
}

/// `talk` kept within `shortest..=longest`; a call shorter than `shortest` gets up to `jitter`
/// of extra time (pauses, small talk) rather than all landing on the same value.
fn within(talk: u64, shortest: u64, longest: u64, jitter: u64, dice: &mut Dice) -> u64 {
    let talk = if talk < shortest {
        shortest + dice.below(jitter)
    } else {
        talk
    };
    talk.min(longest)
}

struct CallTiming {
    timeline: Vec<(u64, StatusStep)>,
    ended: u64,
}

fn call_timing(outcome: EncounterOutcome, script: &Script, dice: &mut Dice) -> CallTiming {
    let queued = dice.between(400, 2_500);
    let rings = |ring: u64| CallTiming {
        timeline: vec![
            (0, StatusStep::Queued),
            (queued, StatusStep::Ringing),
            (queued + ring, StatusStep::Ended),
        ],
        ended: queued + ring,
    };
    match outcome {
        EncounterOutcome::Failed => {
            let ended = queued + dice.between(SECOND, 4 * SECOND);
            CallTiming {
                timeline: vec![(0, StatusStep::Queued), (ended, StatusStep::Ended)],
                ended,
            }
        }
        EncounterOutcome::NoAnswer => rings(dice.between(18 * SECOND, 25 * SECOND)),
        // A busy signal comes back almost at once.
        EncounterOutcome::Busy => rings(dice.between(2 * SECOND, 6 * SECOND)),
        _ => {
            let (ring, talk) = if outcome == EncounterOutcome::Voicemail {
                // The mailbox answers after several rings and plays its greeting first.
                let ring = dice.between(15 * SECOND, 25 * SECOND);
                let greeting = dice.between(12 * SECOND, 20 * SECOND);
                let talk = greeting + speaking_time(&script.turns, dice);
                (
                    ring,
                    within(talk, 30 * SECOND, 60 * SECOND, 10 * SECOND, dice),
                )
            } else {
                let ring = dice.between(5 * SECOND, 20 * SECOND);
                let shortest = match outcome {
                    EncounterOutcome::CustomerDropped | EncounterOutcome::AssistantEnded => {
                        15 * SECOND
                    }
                    _ => 40 * SECOND,
                };
                let talk = speaking_time(&script.turns, dice);
                let talk = within(talk, shortest, 6 * MINUTE, 20 * SECOND, dice);
                (ring, talk)
            };
            let answered = queued + ring;
            let mut timeline = vec![
                (0, StatusStep::Queued),
                (queued, StatusStep::Ringing),
                (answered, StatusStep::InProgress),
            ];
            let mut ended = answered + talk;
            if outcome == EncounterOutcome::Escalated {
                timeline.push((ended, StatusStep::Forwarding));
                ended += dice.between(4 * SECOND, 12 * SECOND);
            }
            timeline.push((ended, StatusStep::Ended));
            CallTiming { timeline, ended }
        }
    }
}

/// The report's outcome, failure reason and ended reason for a simulated call: the outcome
/// and failure reason as every channel reports them ([`call_outcome_of`]), and the Vapi
/// `endedReason` the simulator says such a call ended with.
fn call_result(outcome: EncounterOutcome) -> (CallOutcome, Option<FailureReason>, CallEndedReason) {
    use CallEndedReason as Ended;
    let (call_outcome, failure_reason) = call_outcome_of(outcome);
    let ended_reason = match outcome {
        EncounterOutcome::Resolved | EncounterOutcome::AssistantEnded => Ended::AssistantEnded,
        EncounterOutcome::Voicemail => Ended::Voicemail,
        EncounterOutcome::NoAnswer => Ended::CustomerDidNotAnswer,
        EncounterOutcome::Busy => Ended::CustomerBusy,
        EncounterOutcome::Failed => Ended::Failed,
        EncounterOutcome::Escalated => Ended::AssistantForwarded,
        // The contact reached and the call ended from their side; SMS-only outcomes never get
        // here (`nearest_simulated`).
        _ => Ended::CustomerEnded,
    };
    (call_outcome, failure_reason, ended_reason)
}

fn timeline(points: Vec<(u64, StatusStep)>) -> Vec<(Duration, StatusStep)> {
    points
        .into_iter()
        .map(|(offset, step)| (Duration::from_millis(offset), step))
        .collect()
}

fn simulate_call(
    request: &EncounterRequest<'_>,
    outcome: EncounterOutcome,
    ctx: &Ctx,
    dice: &mut Dice,
) -> SimulatedEncounter {
    let guard = PhoneGuard::new(&request.contact.phone_number);
    let mut script = script::call_script(ctx, outcome, dice);
    if outcome == EncounterOutcome::Voicemail {
        script::apply_voicemail_action(&mut script, &request.voicemail);
    }
    let timing = call_timing(outcome, &script, dice);
    let transcript = script::render(&script.turns).map(|t| guard.scrub(t));
    let summary = guard.scrub(script.summary.clone());
    let custom = custom_values(
        &request.assistant.custom_fields,
        outcome,
        &script.facts,
        ctx,
        &summary,
        dice,
    );
    let (call_outcome, failure_reason, ended_reason) = call_result(outcome);
    let call = Call {
        id: request.encounter_id,
        assistant_id: request.assistant.id,
        started_at: Some(at(request.started_at, 0)),
        ended_at: Some(at(request.started_at, timing.ended)),
        call_status: CallStatus::Ended,
        // `ended_at − started_at`, as Vapi's `endedAt − startedAt`: the whole call from the
        // request, rings included, so the report agrees with itself whichever provider
        // carried the call (a call never answered still lasted while it rang).
        duration_ms: Some(timing.ended),
        ended_reason: Some(ended_reason),
        source_number: Some(request.clinic_number.to_owned()),
        destination_number: Some(request.contact.phone_number.clone()),
        call_type: Some(CallType::OutboundPhoneCall),
        analysis: Some(CallAnalysis {
            repetition_count: transcript.as_deref().map(count_repetitions),
            interruption_count: transcript.as_deref().map(count_interruptions),
            custom: Some(custom),
        }),
        transcript,
        summary: Some(summary),
        outcome: Some(call_outcome),
        failure_reason,
        voicemail_message: script.voicemail.map(|message| guard.scrub(message)),
    };
    SimulatedEncounter {
        outcome,
        status_timeline: timeline(timing.timeline),
        ends_after: Duration::from_millis(timing.ended),
        report: EncounterReport::Call(call),
    }
}

/// "24 hours", "90 minutes", "45 seconds".
fn in_words(ms: u64) -> String {
    let (count, unit) = if ms >= HOUR && ms.is_multiple_of(HOUR) {
        (ms / HOUR, "hour")
    } else if ms >= MINUTE && ms.is_multiple_of(MINUTE) {
        (ms / MINUTE, "minute")
    } else {
        (ms.div_ceil(SECOND), "second")
    };
    if count == 1 {
        format!("1 {unit}")
    } else {
        format!("{count} {unit}s")
    }
}

/// How long the contact takes to send their first reply: usually minutes, sometimes hours,
/// always well inside the timeout.
fn first_reply_delay(timeout: u64, dice: &mut Dice) -> u64 {
    let latest = (timeout / 4 * 3).min(4 * HOUR);
    let (low, high) = match dice.below(10) {
        0..=4 => (2 * MINUTE, 20 * MINUTE),
        5..=7 => (20 * MINUTE, HOUR),
        _ => (HOUR, 4 * HOUR),
    };
    dice.between(low.min(latest / 4), high.min(latest))
}

fn simulate_sms(
    request: &EncounterRequest<'_>,
    outcome: EncounterOutcome,
    ctx: &Ctx,
    dice: &mut Dice,
) -> SimulatedEncounter {
    let guard = PhoneGuard::new(&request.contact.phone_number);
    let timeout = millis(request.sms_timeout);
    let script = script::sms_script(ctx, outcome, dice, &in_words(timeout));

    // The opening goes out at once; the assistant answers within seconds of each reply.
    let mut offset: u64 = 0;
    let mut replied = false;
    for turn in script.turns.iter().skip(1) {
        let delay = match turn.speaker {
            Speaker::User if !replied => first_reply_delay(timeout, dice),
            Speaker::User => {
                let room = timeout.saturating_sub(offset) / 2;
                dice.between((20 * SECOND).min(room), (15 * MINUTE).min(room))
            }
            Speaker::Ai => dice.between(2 * SECOND, 8 * SECOND),
        };
        replied |= turn.speaker == Speaker::User;
        offset = offset.saturating_add(delay);
    }
    let ended = match outcome {
        EncounterOutcome::NoReply => timeout,
        EncounterOutcome::Error if script.turns.len() == 1 => dice.between(3 * SECOND, MINUTE),
        EncounterOutcome::Error => offset + dice.between(5 * SECOND, 30 * SECOND),
        _ => offset,
    }
    .min(timeout);

    let ended_reason = sms_ended_reason_of(outcome);
    let transcript = script::render(&script.turns).map(|t| guard.scrub(t));
    let summary = guard.scrub(script.summary.clone());
    let custom = custom_values(
        &request.assistant.custom_fields,
        outcome,
        &script.facts,
        ctx,
        &summary,
        dice,
    );
    let sms = Sms {
        id: request.encounter_id,
        assistant_id: request.assistant.id,
        started_at: Some(at(request.started_at, 0)),
        ended_at: Some(at(request.started_at, ended)),
        status: SmsStatus::Ended,
        ended_reason: Some(ended_reason),
        transcript,
        source_number: Some(request.clinic_number.to_owned()),
        destination_number: Some(request.contact.phone_number.clone()),
        analysis: Some(SmsAnalysis {
            custom: Some(custom),
        }),
        summary: Some(summary),
    };
    SimulatedEncounter {
        outcome,
        status_timeline: timeline(vec![(0, StatusStep::Active), (ended, StatusStep::Ended)]),
        ends_after: Duration::from_millis(ended),
        report: EncounterReport::Sms(sms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_naturally() {
        assert_eq!(in_words(24 * HOUR), "24 hours");
        assert_eq!(in_words(HOUR), "1 hour");
        assert_eq!(in_words(90 * MINUTE), "90 minutes");
        assert_eq!(in_words(45 * SECOND), "45 seconds");
        assert_eq!(in_words(1_500), "2 seconds");
    }
}
