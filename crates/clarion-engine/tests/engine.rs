//! The state machine, tested as data.
//!
//! Each test is a plan and a script of (time, event) pairs starting with `Enrolled`. `check`
//! runs the script through `step`, asserts the invariants every transition must keep, round
//! trips the state through JSON as the scheduler would, and compares a readable trace with a
//! snapshot in `tests/snapshots/`. Trace times are UTC, with the contact's local time in
//! brackets when the plan has a time zone other than UTC. Step indexes in the trace are the
//! engine's 0-based ones; descriptions say "step 1" for index 0.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use clarion_engine::{
    Action, CallingHours, CallingRule, Channel, EligibilityAction, EncounterOutcome as O, Event,
    Note, Phase, Plan, RuleCap, SequenceState, SequenceStatus, StepSpec, StopReason, Withheld,
    contact_check, next_allowed_instant, step,
};

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// A script entry; times come from the script so they are written once.
#[derive(Clone, Copy)]
enum In {
    Enrolled,
    Wake,
    /// A wake-up with the number on the suppression list.
    WakeSuppressed,
    /// A wake-up with the contact cap allowing contact only at this time.
    WakeCapped(&'static str),
    /// A wake-up with the attempt limit of calling rule `.1` allowing contact only at `.0`.
    WakeRuleCapped(&'static str, usize),
    /// The encounter ended at the script time.
    Ended(O),
    /// The encounter ended at the given time; the callback arrives at the script time.
    EndedAt(O, &'static str),
    Cancel,
    Pause,
    Resume,
    /// The started encounter was withheld just before its provider request.
    Withhold(Withheld),
    /// Every caller number was at its daily cap just before the provider request; the first
    /// frees up at the given time.
    NumbersAtCap(&'static str),
    /// The eligibility hook said no just before the provider request.
    NotEligible(EligibilityAction),
}
use In::*;

impl In {
    fn event(self, now: DateTime<Utc>) -> Event {
        let wake = |suppressed, cap| Event::Wake {
            suppressed,
            contact_cap_allows_at: cap,
            rule_cap: None,
        };
        match self {
            Enrolled => Event::Enrolled,
            Wake => wake(false, None),
            WakeSuppressed => wake(true, None),
            WakeCapped(at) => wake(false, Some(t(at))),
            WakeRuleCapped(at, rule) => Event::Wake {
                suppressed: false,
                contact_cap_allows_at: None,
                rule_cap: Some(RuleCap {
                    allows_at: t(at),
                    rule,
                }),
            },
            Ended(outcome) => Event::EncounterEnded {
                outcome,
                ended_at: now,
            },
            EndedAt(outcome, at) => Event::EncounterEnded {
                outcome,
                ended_at: t(at),
            },
            Cancel => Event::Cancel,
            Pause => Event::Pause,
            Resume => Event::Resume,
            Withhold(reason) => Event::EncounterWithheld { reason },
            NumbersAtCap(until) => Event::CallerNumbersAtCap { until: t(until) },
            NotEligible(action) => Event::Ineligible {
                action,
                reason: Some("confirmed in the EHR".into()),
            },
        }
    }
}

fn check(name: &str, plan: &Plan, script: &[(&str, In)]) {
    assert!(
        matches!(script.first(), Some((_, Enrolled))),
        "scripts start with Enrolled"
    );
    let tz = plan.time_zone;
    let mut out = render_plan(plan);
    let mut state = SequenceState::new();
    for &(time, input) in script {
        let now = t(time);
        let event = input.event(now);
        let tr = step(plan, &state, &event, now);
        assert_invariants(plan, &state, &event, now, &tr.state, &tr.actions);

        writeln!(out, "{} {}", at(now, tz), render_event(&event, tz)).unwrap();
        if tr.actions.is_empty() {
            writeln!(out, "    (no actions)").unwrap();
        }
        for action in &tr.actions {
            writeln!(out, "    {}", render_action(action, tz)).unwrap();
        }
        writeln!(out, "    = {}", render_state(&tr.state, tz)).unwrap();

        // The scheduler stores the state as JSON between events; continue from what it reads.
        let json = serde_json::to_string(&tr.state).unwrap();
        state = serde_json::from_str(&json).unwrap();
        assert_eq!(state, tr.state, "state survives a JSON round trip");
    }
    insta::assert_snapshot!(name, out);
}

/// Runs a script as `check` does, without a snapshot: the last transition.
fn run(plan: &Plan, script: &[(&str, In)]) -> clarion_engine::Transition {
    let mut state = SequenceState::new();
    let mut last = None;
    for &(time, input) in script {
        let now = t(time);
        let event = input.event(now);
        let tr = step(plan, &state, &event, now);
        assert_invariants(plan, &state, &event, now, &tr.state, &tr.actions);
        state = tr.state.clone();
        last = Some(tr);
    }
    last.expect("a script has at least one entry")
}

/// What every transition must keep, whatever the script.
fn assert_invariants(
    plan: &Plan,
    before: &SequenceState,
    event: &Event,
    now: DateTime<Utc>,
    after: &SequenceState,
    actions: &[Action],
) {
    let ctx = format!("{event:?} at {now}");
    // An ended sequence is final.
    let opt_out = matches!(
        event,
        Event::EncounterEnded {
            outcome: O::OptOut,
            ..
        }
    );
    if before.status == SequenceStatus::Ended {
        assert_eq!(before, after, "{ctx}: ended sequences do not change");
        if opt_out {
            assert_eq!(
                actions,
                [Action::Record(Note::LateOptOut), Action::SuppressNumber],
                "{ctx}: a late opt-out still suppresses, and does nothing else"
            );
        } else {
            assert!(
                actions.is_empty(),
                "{ctx}: ended sequences produce no actions"
            );
        }
    }
    // No actions means nothing happened, except re-arming the wake-up.
    if actions.is_empty() {
        let rearmed = SequenceState {
            next_wake: after.next_wake,
            ..before.clone()
        };
        assert_eq!(
            &rearmed, after,
            "{ctx}: a silent transition changes only next_wake"
        );
    }
    // Endings all have the same shape.
    let ends = actions.iter().filter(|a| **a == Action::End).count();
    if after.status == SequenceStatus::Ended && before.status != SequenceStatus::Ended {
        assert_eq!(ends, 1, "{ctx}: one End");
        assert_eq!(actions.last(), Some(&Action::End), "{ctx}: End comes last");
        let description = after.outcome_description.clone().expect("description set");
        assert_eq!(
            actions.get(actions.len().wrapping_sub(2)),
            Some(&Action::Record(Note::Ended { description })),
            "{ctx}: Note::Ended right before End"
        );
        assert_eq!(after.phase, Phase::Done, "{ctx}");
        assert_eq!(after.next_wake, None, "{ctx}");
    } else {
        assert_eq!(ends, 0, "{ctx}: End only when the sequence ends");
        let done = after.phase == Phase::Done;
        assert_eq!(
            done,
            after.status == SequenceStatus::Ended,
            "{ctx}: Done iff ended"
        );
    }
    // Wake-ups are armed exactly when the scheduler has something to do.
    match (after.status, &after.phase) {
        (SequenceStatus::Active, Phase::WaitingToStart { due_at }) => {
            let wake = after
                .next_wake
                .expect("a waiting, active sequence has a wake-up");
            assert!(wake >= *due_at, "{ctx}: never woken before the due time");
        }
        _ => assert_eq!(after.next_wake, None, "{ctx}: no wake-up armed"),
    }
    // Contact happens only when everything allows it.
    for action in actions {
        if let Action::StartEncounter { step, attempt, .. } = *action {
            assert_eq!((step, attempt), (after.step, after.attempt), "{ctx}");
            assert_eq!(after.phase, Phase::InEncounter { started_at: now }, "{ctx}");
            if let Event::Wake {
                suppressed,
                contact_cap_allows_at,
                rule_cap,
            } = *event
            {
                assert!(!suppressed, "{ctx}: never contact a suppressed number");
                assert!(
                    contact_cap_allows_at.is_none_or(|cap| cap <= now),
                    "{ctx}: cap"
                );
                assert!(
                    rule_cap.is_none_or(|cap| cap.allows_at <= now),
                    "{ctx}: a rule's attempt limit"
                );
            } else {
                panic!("{ctx}: encounters start only on a wake-up");
            }
            if let Some(hours) = &plan.calling_hours {
                let local = now.with_timezone(&plan.time_zone).time();
                assert!(hours.allows(local), "{ctx}: outside calling hours");
            }
            let local = now.with_timezone(&plan.time_zone).naive_local();
            for rule in &plan.rules {
                assert!(rule.allows(local), "{ctx}: outside rule {}", rule.name);
            }
        }
        if *action == Action::SuppressNumber {
            assert!(opt_out, "{ctx}: suppress only on opt-out");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

fn render_plan(plan: &Plan) -> String {
    let steps: Vec<String> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut voicemail = String::new();
            if !s.retry_on_voicemail {
                voicemail.push_str(" no_voicemail_retry");
            }
            if s.sms_after_voicemail {
                voicemail.push_str(" sms_after_voicemail");
            }
            if s.text_after_voicemail {
                voicemail.push_str(" text_after_voicemail");
            }
            format!(
                "  {i}: {} assistant={} delay={} max_attempts={} retry_delay={}{voicemail}\n",
                s.channel,
                s.assistant_id,
                secs(s.delay),
                s.max_attempts,
                secs(s.retry_delay)
            )
        })
        .collect();
    let stop_on: Vec<String> = plan.stop_on.iter().map(kebab).collect();
    let hours = match &plan.calling_hours {
        Some(h) => format!("{}-{}", h.start.format("%H:%M"), h.end.format("%H:%M")),
        None => "none".to_string(),
    };
    let rules: Vec<String> = plan
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let days: Vec<String> = WEEK
                .iter()
                .filter(|d| r.weekdays.contains(**d))
                .map(|d| d.to_string())
                .collect();
            let hours = match &r.hours {
                Some(h) => format!("{}-{}", h.start.format("%H:%M"), h.end.format("%H:%M")),
                None => "no contact".to_string(),
            };
            format!("  rule {i}: {} [{}] {hours}\n", r.name, days.join(" "))
        })
        .collect();
    format!(
        "plan:\n{}  stop_on=[{}] calling_hours={} time_zone={}\n{}\n",
        steps.concat(),
        stop_on.join(", "),
        hours,
        plan.time_zone,
        rules.concat()
    )
}

const WEEK: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn render_event(event: &Event, tz: Tz) -> String {
    match event {
        Event::Enrolled => "Enrolled".into(),
        Event::Wake {
            suppressed,
            contact_cap_allows_at,
            rule_cap,
        } => {
            let mut s = "Wake".to_string();
            if *suppressed {
                s.push_str(" suppressed");
            }
            if let Some(cap) = contact_cap_allows_at {
                write!(s, " cap_allows_at={}", at(*cap, tz)).unwrap();
            }
            if let Some(cap) = rule_cap {
                write!(
                    s,
                    " rule_cap={} allows_at={}",
                    cap.rule,
                    at(cap.allows_at, tz)
                )
                .unwrap();
            }
            s
        }
        Event::EncounterEnded { outcome, ended_at } => {
            format!("EncounterEnded {outcome} ended_at={}", at(*ended_at, tz))
        }
        Event::Cancel => "Cancel".into(),
        Event::Pause => "Pause".into(),
        Event::Resume => "Resume".into(),
        Event::EncounterWithheld { reason } => format!("EncounterWithheld {}", kebab(reason)),
        Event::CallerNumbersAtCap { until } => {
            format!("CallerNumbersAtCap until={}", at(*until, tz))
        }
        Event::Ineligible { action, reason } => {
            format!("Ineligible {} reason={reason:?}", kebab(action))
        }
    }
}

fn render_action(action: &Action, tz: Tz) -> String {
    match action {
        Action::StartEncounter {
            step,
            attempt,
            channel,
            assistant_id,
        } => format!(
            "start-encounter step={step} attempt={attempt} {channel} assistant={assistant_id}"
        ),
        Action::SuppressNumber => "suppress-number".into(),
        Action::End => "end".into(),
        Action::Record(note) => format!("note {}", render_note(note, tz)),
    }
}

fn render_note(note: &Note, tz: Tz) -> String {
    match note {
        Note::StepScheduled {
            step,
            attempt,
            due_at,
        } => format!(
            "step-scheduled step={step} attempt={attempt} due={}",
            at(*due_at, tz)
        ),
        Note::Deferred {
            step,
            attempt,
            reason,
            until,
            rule,
        } => {
            let mut s = format!(
                "deferred step={step} attempt={attempt} reason={} until={}",
                kebab(reason),
                at(*until, tz)
            );
            if let Some(rule) = rule {
                write!(s, " rule={rule}").unwrap();
            }
            s
        }
        Note::Skipped {
            step,
            attempt,
            reason,
            action,
            hook_reason,
        } => {
            let mut s = format!(
                "skipped step={step} attempt={attempt} reason={}",
                kebab(reason)
            );
            if let Some(action) = action {
                write!(s, " action={}", kebab(action)).unwrap();
            }
            if let Some(hook_reason) = hook_reason {
                write!(s, " hook_reason={hook_reason:?}").unwrap();
            }
            s
        }
        Note::EncounterStarted {
            step,
            attempt,
            channel,
        } => format!("encounter-started step={step} attempt={attempt} {channel}"),
        Note::EncounterEnded {
            step,
            attempt,
            outcome,
        } => format!("encounter-ended step={step} attempt={attempt} {outcome}"),
        Note::RetryScheduled {
            step,
            attempt,
            due_at,
        } => format!(
            "retry-scheduled step={step} attempt={attempt} due={}",
            at(*due_at, tz)
        ),
        Note::VoicemailTextScheduled {
            step,
            attempt,
            due_at,
        } => format!(
            "voicemail-text-scheduled step={step} attempt={attempt} due={}",
            at(*due_at, tz)
        ),
        Note::VoicemailTextEnded {
            step,
            attempt,
            sent,
        } => format!("voicemail-text-ended step={step} attempt={attempt} sent={sent}"),
        Note::Paused => "paused".into(),
        Note::Resumed => "resumed".into(),
        Note::Cancelled => "cancelled".into(),
        Note::EncounterWithheld {
            step,
            attempt,
            reason,
        } => format!(
            "encounter-withheld step={step} attempt={attempt} reason={}",
            kebab(reason)
        ),
        Note::LateOptOut => "late-opt-out".into(),
        Note::Ended { description } => format!("ended {description:?}"),
    }
}

fn render_state(s: &SequenceState, tz: Tz) -> String {
    let phase = match &s.phase {
        Phase::New => "new".to_string(),
        Phase::WaitingToStart { due_at } => format!("waiting due={}", at(*due_at, tz)),
        Phase::InEncounter { started_at } => format!("in-encounter since={}", at(*started_at, tz)),
        Phase::Done => "done".to_string(),
    };
    let wake = s.next_wake.map_or("none".to_string(), |w| at(w, tz));
    let last = s.last_outcome.map_or("none".to_string(), |o| o.to_string());
    let text = if s.voicemail_text {
        " (text after voicemail)"
    } else {
        ""
    };
    format!(
        "{} step={} attempt={}{text} {phase} wake={wake} last={last}",
        kebab(&s.status),
        s.step,
        s.attempt
    )
}

/// "2025-06-02 14:00Z", with the contact's local time when it is not UTC.
fn at(instant: DateTime<Utc>, tz: Tz) -> String {
    let secs = if instant.timestamp() % 60 == 0 {
        ""
    } else {
        ":%S"
    };
    let utc = format!("{}Z", instant.format(&format!("%Y-%m-%d %H:%M{secs}")));
    if tz == Tz::UTC {
        utc
    } else {
        let local = instant.with_timezone(&tz);
        format!("{utc} [{}]", local.format(&format!("%a %H:%M{secs} %Z")))
    }
}

fn kebab<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn secs(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

/// "2025-06-02 14:00" or "2025-06-02 14:00:30", UTC.
/// A wake-up with nothing holding the contact back but the plan.
fn plain_wake() -> Event {
    Wake.event(DateTime::<Utc>::MIN_UTC)
}

fn t(s: &str) -> DateTime<Utc> {
    let fmt = if s.len() > 16 {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%Y-%m-%d %H:%M"
    };
    NaiveDateTime::parse_from_str(s, fmt).unwrap().and_utc()
}

fn d(s: &str) -> Duration {
    let (n, unit) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().unwrap();
    Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => panic!("unit {unit}"),
    })
}

fn hours(start: &str, end: &str) -> Option<CallingHours> {
    let p = |s| NaiveTime::parse_from_str(s, "%H:%M").unwrap();
    Some(CallingHours {
        start: p(start),
        end: p(end),
    })
}

fn spec(channel: Channel, assistant_id: i64) -> StepSpec {
    StepSpec {
        channel,
        assistant_id,
        delay: Duration::ZERO,
        max_attempts: 1,
        retry_delay: d("4h"),
        retry_on_voicemail: true,
        sms_after_voicemail: false,
        text_after_voicemail: false,
    }
}

fn call(assistant_id: i64) -> StepSpec {
    spec(Channel::Call, assistant_id)
}

fn sms(assistant_id: i64) -> StepSpec {
    spec(Channel::Sms, assistant_id)
}

trait StepExt {
    fn delay(self, delay: &str) -> Self;
    fn attempts(self, max: u32, retry_delay: &str) -> Self;
    fn voicemail(self, retry: bool, sms_after: bool) -> Self;
    fn text_after_voicemail(self) -> Self;
}

impl StepExt for StepSpec {
    fn delay(self, delay: &str) -> Self {
        StepSpec {
            delay: d(delay),
            ..self
        }
    }
    fn attempts(self, max_attempts: u32, retry_delay: &str) -> Self {
        StepSpec {
            max_attempts,
            retry_delay: d(retry_delay),
            ..self
        }
    }
    fn voicemail(self, retry_on_voicemail: bool, sms_after_voicemail: bool) -> Self {
        StepSpec {
            retry_on_voicemail,
            sms_after_voicemail,
            ..self
        }
    }
    fn text_after_voicemail(self) -> Self {
        StepSpec {
            text_after_voicemail: true,
            ..self
        }
    }
}

const ALL_STOPS: [StopReason; 4] = [
    StopReason::Resolved,
    StopReason::OptOut,
    StopReason::Declined,
    StopReason::Escalated,
];

/// Stops on everything, no calling hours, UTC: the plain plan most logic tests want.
fn plan(steps: Vec<StepSpec>) -> Plan {
    Plan {
        steps,
        stop_on: ALL_STOPS.to_vec(),
        calling_hours: None,
        rules: Vec::new(),
        time_zone: Tz::UTC,
        sms_timeout: d("24h"),
    }
}

/// The API default window in the given zone.
fn plan_in(tz: Tz, steps: Vec<StepSpec>) -> Plan {
    Plan {
        calling_hours: hours("08:00", "21:00"),
        time_zone: tz,
        ..plan(steps)
    }
}

// ---------------------------------------------------------------------------------------------
// Outcomes
// ---------------------------------------------------------------------------------------------

#[test]
fn every_call_outcome_on_a_first_call_step() {
    let p = plan(vec![call(11).attempts(2, "4h"), sms(12).delay("1d")]);
    for outcome in O::CALL {
        check(
            &format!("call_outcome_{outcome}"),
            &p,
            &[
                ("2025-06-02 09:00", Enrolled),
                ("2025-06-02 09:00", Wake),
                ("2025-06-02 09:05", Ended(outcome)),
            ],
        );
    }
}

#[test]
fn every_sms_outcome_on_a_first_sms_step() {
    // max_attempts 3 on purpose: SMS steps are never retried, whatever the outcome.
    let p = plan(vec![sms(21).attempts(3, "1h"), call(22).delay("2h")]);
    for outcome in O::SMS {
        check(
            &format!("sms_outcome_{outcome}"),
            &p,
            &[
                ("2025-06-02 09:00", Enrolled),
                ("2025-06-02 09:00", Wake),
                ("2025-06-03 09:00", Ended(outcome)),
            ],
        );
    }
}

#[test]
fn each_stop_reason_stops_only_when_listed() {
    let reasons = [
        (StopReason::Resolved, O::Resolved),
        (StopReason::Declined, O::Declined),
        (StopReason::Escalated, O::Escalated),
    ];
    for (reason, outcome) in reasons {
        let steps = vec![call(11), call(12).delay("1h")];
        let script = [
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:10", Ended(outcome)),
            ("2025-06-02 10:10", Wake),
            ("2025-06-02 10:20", Ended(outcome)),
        ];
        let listed = Plan {
            stop_on: vec![reason],
            ..plan(steps.clone())
        };
        let others: Vec<StopReason> = ALL_STOPS.into_iter().filter(|r| *r != reason).collect();
        let unlisted = Plan {
            stop_on: others,
            ..plan(steps)
        };
        check(
            &format!("stop_on_{}_listed", kebab(&reason)),
            &listed,
            &script,
        );
        check(
            &format!("stop_on_{}_not_listed", kebab(&reason)),
            &unlisted,
            &script,
        );
    }
}

#[test]
fn call_opt_out_stops_and_suppresses_even_with_empty_stop_on() {
    let p = Plan {
        stop_on: vec![],
        ..plan(vec![call(11).attempts(3, "1h"), sms(12)])
    };
    check(
        "call_opt_out_with_empty_stop_on",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:03", Ended(O::OptOut)),
        ],
    );
}

#[test]
fn sms_opt_out_on_a_later_step_stops_and_suppresses_even_with_empty_stop_on() {
    let p = Plan {
        stop_on: vec![],
        ..plan(vec![call(11), sms(12).delay("1d"), call(13)])
    };
    check(
        "sms_opt_out_with_empty_stop_on",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:03", Ended(O::Unresolved)),
            ("2025-06-03 09:03", Wake),
            ("2025-06-03 09:30", Ended(O::OptOut)),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Retries and the end of the template
// ---------------------------------------------------------------------------------------------

#[test]
fn call_is_retried_up_to_max_attempts_then_moves_on() {
    let p = plan(vec![call(11).attempts(3, "4h"), sms(12).delay("1d")]);
    check(
        "retries_up_to_max_attempts_then_next_step",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::NoAnswer)),
            ("2025-06-02 13:01", Wake),
            ("2025-06-02 13:02", Ended(O::Busy)),
            ("2025-06-02 17:02", Wake),
            ("2025-06-02 17:03", Ended(O::Voicemail)),
            ("2025-06-03 17:03", Wake),
            ("2025-06-04 17:03", Ended(O::NoReply)),
        ],
    );
}

#[test]
fn a_retry_that_resolves_ends_the_sequence_on_that_attempt() {
    let p = plan(vec![call(11).attempts(3, "2h"), sms(12)]);
    check(
        "retry_resolves",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::Voicemail)),
            ("2025-06-02 11:01", Wake),
            ("2025-06-02 11:09", Ended(O::Resolved)),
        ],
    );
}

#[test]
fn a_non_retryable_call_outcome_moves_on_even_with_attempts_left() {
    let p = plan(vec![call(11).attempts(3, "2h"), call(12).delay("1h")]);
    check(
        "non_retryable_outcome_moves_on",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::NoAnswer)),
            ("2025-06-02 11:01", Wake),
            ("2025-06-02 11:02", Ended(O::RequestedCallback)),
        ],
    );
}

#[test]
fn a_single_step_that_runs_out_of_attempts_says_how_many() {
    let p = plan(vec![call(11).attempts(2, "1h")]);
    check(
        "single_step_out_of_attempts",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::NoAnswer)),
            ("2025-06-02 10:01", Wake),
            ("2025-06-02 10:02", Ended(O::NoAnswer)),
        ],
    );
}

#[test]
fn all_steps_done_without_resolution() {
    let p = plan(vec![call(11), sms(12).delay("2d"), call(13).delay("3d")]);
    check(
        "all_steps_done",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:04", Ended(O::Unresolved)),
            ("2025-06-04 09:04", Wake),
            ("2025-06-05 09:04", Ended(O::NoReply)),
            ("2025-06-08 09:04", Wake),
            ("2025-06-08 09:05", Ended(O::CustomerDropped)),
        ],
    );
}

#[test]
fn delays_count_from_when_the_previous_step_ended() {
    // Step 1 is due 1 h after enrollment; step 2 is due 2 h after step 1's encounter ended,
    // even when its callback arrives late.
    let p = plan(vec![sms(11).delay("1h"), call(12).delay("2h")]);
    check(
        "delays_count_from_previous_end",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 10:00", Wake),
            ("2025-06-03 10:15", EndedAt(O::NoReply, "2025-06-03 10:00")),
            ("2025-06-03 12:00", Wake),
        ],
    );
}

#[test]
fn a_template_with_no_steps_ends_at_enrollment() {
    check("no_steps", &plan(vec![]), &[("2025-06-02 09:00", Enrolled)]);
}

// ---------------------------------------------------------------------------------------------
// Calling hours
// ---------------------------------------------------------------------------------------------

const NEW_YORK: Tz = chrono_tz::America::New_York;

#[test]
fn enrolled_before_the_window_waits_for_it_and_spurious_wakes_add_nothing() {
    let p = plan_in(NEW_YORK, vec![call(11)]);
    check(
        "hours_before_window",
        &p,
        &[
            ("2025-06-02 10:00", Enrolled),
            ("2025-06-02 10:00", Wake),
            ("2025-06-02 11:30", Wake),
            ("2025-06-02 12:00", Wake),
        ],
    );
}

#[test]
fn due_exactly_at_window_start_starts() {
    let p = plan_in(NEW_YORK, vec![call(11)]);
    check(
        "hours_exactly_at_start",
        &p,
        &[("2025-06-02 12:00", Enrolled), ("2025-06-02 12:00", Wake)],
    );
}

#[test]
fn due_in_the_last_second_of_the_window_starts() {
    let p = plan_in(NEW_YORK, vec![call(11)]);
    check(
        "hours_last_second",
        &p,
        &[
            ("2025-06-03 00:59:59", Enrolled),
            ("2025-06-03 00:59:59", Wake),
        ],
    );
}

#[test]
fn due_exactly_at_window_end_is_deferred_to_next_morning() {
    let p = plan_in(NEW_YORK, vec![call(11)]);
    check(
        "hours_exactly_at_end",
        &p,
        &[
            ("2025-06-03 01:00", Enrolled),
            ("2025-06-03 01:00", Wake),
            ("2025-06-03 12:00", Wake),
        ],
    );
}

#[test]
fn a_retry_falling_after_the_window_is_deferred_to_next_morning() {
    let p = plan_in(NEW_YORK, vec![call(11).attempts(2, "2h")]);
    check(
        "hours_retry_after_window",
        &p,
        &[
            ("2025-06-03 00:00", Enrolled),
            ("2025-06-03 00:00", Wake),
            ("2025-06-03 00:01", Ended(O::Busy)),
            ("2025-06-03 02:01", Wake),
            ("2025-06-03 12:00", Wake),
        ],
    );
}

#[test]
fn sms_steps_obey_calling_hours_too() {
    let p = plan_in(NEW_YORK, vec![sms(11)]);
    check(
        "hours_apply_to_sms",
        &p,
        &[
            ("2025-06-03 03:00", Enrolled),
            ("2025-06-03 03:00", Wake),
            ("2025-06-03 12:00", Wake),
        ],
    );
}

#[test]
fn spring_forward_night_defers_to_eight_edt() {
    // Sat 2025-03-08 23:00 EST; the clocks jump 02:00 EST -> 03:00 EDT overnight.
    let p = plan_in(NEW_YORK, vec![call(11)]);
    check(
        "hours_dst_spring_forward",
        &p,
        &[
            ("2025-03-09 04:00", Enrolled),
            ("2025-03-09 04:00", Wake),
            ("2025-03-09 12:00", Wake),
        ],
    );
}

#[test]
fn fall_back_night_defers_to_eight_est() {
    // Sat 2025-11-01 23:00 EDT; the clocks go back 02:00 EDT -> 01:00 EST overnight.
    let p = plan_in(NEW_YORK, vec![call(11)]);
    check(
        "hours_dst_fall_back",
        &p,
        &[
            ("2025-11-02 03:00", Enrolled),
            ("2025-11-02 03:00", Wake),
            ("2025-11-02 13:00", Wake),
        ],
    );
}

#[test]
fn a_window_starting_inside_the_spring_forward_gap_opens_when_the_gap_ends() {
    // 02:30 does not exist on 2025-03-09 in New York; the first instant after the gap is
    // 03:00 EDT (07:00Z).
    let p = Plan {
        calling_hours: hours("02:30", "06:00"),
        ..plan_in(NEW_YORK, vec![call(11)])
    };
    check(
        "hours_start_in_dst_gap",
        &p,
        &[
            ("2025-03-09 05:00", Enrolled),
            ("2025-03-09 05:00", Wake),
            ("2025-03-09 07:00", Wake),
        ],
    );
}

#[test]
fn far_time_zones_use_the_contacts_local_clock() {
    let cases = [
        // 01:00 AEST on Tuesday in Sydney while it is Monday afternoon in New York.
        (
            "hours_sydney",
            chrono_tz::Australia::Sydney,
            "2025-06-02 15:00",
            "2025-06-02 22:00",
        ),
        // 21:30 IST: just after the window; Kolkata is UTC+05:30.
        (
            "hours_kolkata",
            chrono_tz::Asia::Kolkata,
            "2025-06-02 16:00",
            "2025-06-03 02:30",
        ),
        // 07:00 HST: Honolulu has no DST.
        (
            "hours_honolulu",
            chrono_tz::Pacific::Honolulu,
            "2025-06-02 17:00",
            "2025-06-02 18:00",
        ),
    ];
    for (name, tz, enrolled, opens) in cases {
        let p = plan_in(tz, vec![call(11)]);
        check(
            name,
            &p,
            &[(enrolled, Enrolled), (enrolled, Wake), (opens, Wake)],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Contact caps and suppression
// ---------------------------------------------------------------------------------------------

#[test]
fn contact_cap_defers_until_it_allows() {
    let p = plan(vec![call(11)]);
    check(
        "cap_defers",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", WakeCapped("2025-06-02 12:00")),
            ("2025-06-02 12:00", Wake),
        ],
    );
}

#[test]
fn contact_cap_already_passed_does_not_defer() {
    let p = plan(vec![call(11)]);
    check(
        "cap_in_the_past",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", WakeCapped("2025-06-02 08:00")),
        ],
    );
}

#[test]
fn contact_cap_inside_the_window_defers_for_the_cap() {
    // 06:00 EDT: the window opens at 08:00 but the cap only allows 09:30, so the cap is what
    // holds the step back.
    let p = plan_in(NEW_YORK, vec![call(11)]);
    check(
        "cap_later_than_window_start",
        &p,
        &[
            ("2025-06-02 10:00", Enrolled),
            ("2025-06-02 10:00", WakeCapped("2025-06-02 13:30")),
            ("2025-06-02 13:30", Wake),
        ],
    );
}

#[test]
fn contact_cap_before_the_window_opens_defers_for_calling_hours() {
    let p = plan_in(NEW_YORK, vec![call(11)]);
    check(
        "cap_earlier_than_window_start",
        &p,
        &[
            ("2025-06-02 10:00", Enrolled),
            ("2025-06-02 10:00", WakeCapped("2025-06-02 11:00")),
            ("2025-06-02 12:00", Wake),
        ],
    );
}

#[test]
fn contact_cap_after_the_window_closes_defers_to_next_morning() {
    // 20:00 EDT, cap allows 22:00 EDT: the next allowed instant is 08:00 EDT tomorrow, and
    // calling hours are what pushed it there.
    let p = plan_in(NEW_YORK, vec![call(11)]);
    check(
        "cap_after_window_end",
        &p,
        &[
            ("2025-06-03 00:00", Enrolled),
            ("2025-06-03 00:00", WakeCapped("2025-06-03 02:00")),
            ("2025-06-03 12:00", Wake),
        ],
    );
}

#[test]
fn suppressed_number_at_the_first_wake_ends_without_contact() {
    let p = plan(vec![call(11), sms(12)]);
    check(
        "suppressed_before_first_step",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", WakeSuppressed),
        ],
    );
}

#[test]
fn number_suppressed_between_steps_ends_before_the_next_step() {
    let p = plan(vec![call(11), sms(12).delay("1d")]);
    check(
        "suppressed_before_second_step",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:02", Ended(O::Unresolved)),
            ("2025-06-03 09:02", WakeSuppressed),
        ],
    );
}

#[test]
fn number_suppressed_before_a_retry_ends_before_that_attempt() {
    let p = plan(vec![call(11).attempts(2, "1h")]);
    check(
        "suppressed_before_retry",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::NoAnswer)),
            ("2025-06-02 10:01", WakeSuppressed),
        ],
    );
}

#[test]
fn suppression_is_checked_before_calling_hours() {
    // 03:00 EDT: outside the window, but a suppressed number ends the sequence at once.
    let p = plan_in(NEW_YORK, vec![call(11)]);
    check(
        "suppressed_outside_hours",
        &p,
        &[
            ("2025-06-02 07:00", Enrolled),
            ("2025-06-02 07:00", WakeSuppressed),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Cancel, pause, resume
// ---------------------------------------------------------------------------------------------

#[test]
fn cancel_before_the_first_step_runs() {
    let p = plan(vec![call(11).delay("1h")]);
    check(
        "cancel_before_start",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:30", Cancel),
            ("2025-06-02 10:00", Wake),
        ],
    );
}

#[test]
fn cancel_during_an_encounter_ends_and_ignores_the_late_callback() {
    let p = plan(vec![call(11), sms(12)]);
    check(
        "cancel_during_encounter",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Cancel),
            ("2025-06-02 09:05", Ended(O::Resolved)),
        ],
    );
}

#[test]
fn an_opt_out_after_a_cancel_still_suppresses_the_number() {
    // The call was under way when the sequence was cancelled; its report says opt-out.
    let p = plan(vec![call(11), sms(12)]);
    check(
        "opt_out_after_cancel",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Cancel),
            ("2025-06-02 09:05", Ended(O::OptOut)),
        ],
    );
}

#[test]
fn an_opt_out_reported_twice_or_late_still_suppresses() {
    let p = plan(vec![call(11).attempts(2, "1h"), sms(12)]);
    check(
        "opt_out_late_while_waiting",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::Busy)),
            // A second report for the same call, now saying opt-out, while the retry waits.
            ("2025-06-02 09:02", Ended(O::OptOut)),
        ],
    );
}

#[test]
fn a_withheld_encounter_waits_again_and_defers_to_the_next_window() {
    // Committed at 20:59 New York; by the time of the provider request the window closed.
    let p = plan_in(NEW_YORK, vec![call(11), sms(12)]);
    check(
        "withheld_outside_calling_hours",
        &p,
        &[
            ("2025-06-02 00:59", Enrolled),
            ("2025-06-02 00:59", Wake),
            ("2025-06-02 01:00", Withhold(Withheld::OutsideCallingHours)),
            ("2025-06-02 01:00", Wake),
            ("2025-06-02 12:00", Wake),
        ],
    );
}

#[test]
fn an_encounter_with_every_caller_number_at_its_cap_is_deferred_until_one_frees_up() {
    // Two caller numbers at their caps at 09:00; the first frees up at 10:30. A spurious
    // report after the deferral changes nothing; the attempt is not used up.
    let p = plan(vec![call(11), sms(12)]);
    check(
        "caller_numbers_at_cap",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:00", NumbersAtCap("2025-06-02 10:30")),
            ("2025-06-02 09:01", NumbersAtCap("2025-06-02 11:00")),
            ("2025-06-02 10:30", Wake),
        ],
    );
}

#[test]
fn a_withheld_encounter_of_a_suppressed_number_ends_the_sequence() {
    let p = plan(vec![call(11), sms(12)]);
    check(
        "withheld_suppressed",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:00", Withhold(Withheld::Suppressed)),
        ],
    );
}

#[test]
fn a_withheld_encounter_of_a_paused_sequence_runs_on_resume() {
    let p = plan(vec![call(11), sms(12)]);
    check(
        "withheld_paused",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:00", Pause),
            ("2025-06-02 09:00", Withhold(Withheld::NotRunning)),
            ("2025-06-02 10:00", Resume),
            ("2025-06-02 10:00", Wake),
        ],
    );
}

#[test]
fn contact_check_says_no_unless_running_unsuppressed_and_inside_the_window() {
    let p = plan_in(NEW_YORK, vec![call(11)]);
    let noon = t("2025-06-02 16:00");
    let enrolled = step(&p, &SequenceState::new(), &Event::Enrolled, noon).state;
    let wake = plain_wake();
    let started = step(&p, &enrolled, &wake, noon).state;
    assert!(matches!(started.phase, Phase::InEncounter { .. }));
    assert_eq!(contact_check(&p, &started, false, noon), Ok(()));
    assert_eq!(
        contact_check(&p, &started, true, noon),
        Err(Withheld::Suppressed)
    );
    // 21:00 New York is 01:00 UTC: the window has closed.
    assert_eq!(
        contact_check(&p, &started, false, t("2025-06-03 01:00")),
        Err(Withheld::OutsideCallingHours)
    );
    let paused = step(&p, &started, &Event::Pause, noon).state;
    assert_eq!(
        contact_check(&p, &paused, false, noon),
        Err(Withheld::NotRunning)
    );
    let cancelled = step(&p, &started, &Event::Cancel, noon).state;
    assert_eq!(
        contact_check(&p, &cancelled, false, noon),
        Err(Withheld::NotRunning)
    );
    // Not in an encounter (waiting for the step): nothing may be sent.
    assert_eq!(
        contact_check(&p, &enrolled, false, noon),
        Err(Withheld::NotRunning)
    );
}

#[test]
fn cancel_while_waiting_for_a_later_step_or_a_retry() {
    let p = plan(vec![call(11).attempts(2, "1h"), sms(12).delay("1d")]);
    check(
        "cancel_waiting_for_retry",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::Busy)),
            ("2025-06-02 09:30", Cancel),
        ],
    );
    check(
        "cancel_waiting_for_second_step",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::Unresolved)),
            ("2025-06-02 09:30", Cancel),
        ],
    );
}

#[test]
fn cancel_while_paused_ends() {
    let p = plan(vec![call(11).delay("1h")]);
    check(
        "cancel_while_paused",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:10", Pause),
            ("2025-06-02 09:20", Cancel),
        ],
    );
}

#[test]
fn every_event_after_the_end_changes_nothing() {
    let p = plan(vec![call(11)]);
    check(
        "events_after_end",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:05", Ended(O::Resolved)),
            ("2025-06-02 09:06", Cancel),
            ("2025-06-02 09:07", Pause),
            ("2025-06-02 09:08", Resume),
            ("2025-06-02 09:09", Wake),
            ("2025-06-02 09:10", Ended(O::OptOut)),
            ("2025-06-02 09:11", Enrolled),
        ],
    );
}

#[test]
fn pause_and_resume_before_the_due_time_keeps_the_due_time() {
    let p = plan(vec![call(11).delay("2h")]);
    check(
        "pause_resume_before_due",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:30", Pause),
            ("2025-06-02 10:00", Resume),
            ("2025-06-02 11:00", Wake),
        ],
    );
}

#[test]
fn a_due_time_that_passed_while_paused_fires_on_resume_but_still_respects_calling_hours() {
    // Due 10:00 EDT; paused until 22:00 EDT; the wake-up at resume is deferred to morning.
    let p = plan_in(NEW_YORK, vec![call(11).delay("1h")]);
    check(
        "pause_past_due_then_resume_at_night",
        &p,
        &[
            ("2025-06-02 13:00", Enrolled),
            ("2025-06-02 13:30", Pause),
            ("2025-06-02 14:00", Wake),
            ("2025-06-03 02:00", Resume),
            ("2025-06-03 02:00", Wake),
            ("2025-06-03 12:00", Wake),
        ],
    );
}

#[test]
fn an_encounter_ending_while_paused_schedules_the_next_step_without_waking() {
    let p = plan(vec![call(11), sms(12).delay("1h")]);
    check(
        "encounter_ends_while_paused",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Pause),
            ("2025-06-02 09:05", Ended(O::Unresolved)),
            ("2025-06-02 10:05", Wake),
            ("2025-06-02 12:00", Resume),
            ("2025-06-02 12:00", Wake),
        ],
    );
}

#[test]
fn an_encounter_resolving_while_paused_ends_the_sequence() {
    let p = plan(vec![call(11), sms(12)]);
    check(
        "encounter_resolves_while_paused",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Pause),
            ("2025-06-02 09:05", Ended(O::Resolved)),
            ("2025-06-02 09:06", Resume),
        ],
    );
}

#[test]
fn pausing_during_an_encounter_and_resuming_arms_no_wake() {
    let p = plan(vec![call(11)]);
    check(
        "pause_resume_during_encounter",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Pause),
            ("2025-06-02 09:02", Resume),
            ("2025-06-02 09:05", Ended(O::NoAnswer)),
        ],
    );
}

#[test]
fn pause_twice_and_resume_while_active_change_nothing() {
    let p = plan(vec![call(11).delay("1h")]);
    check(
        "pause_resume_idempotent",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:10", Resume),
            ("2025-06-02 09:20", Pause),
            ("2025-06-02 09:30", Pause),
            ("2025-06-02 09:40", Resume),
            ("2025-06-02 09:50", Resume),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Spurious and duplicate events
// ---------------------------------------------------------------------------------------------

#[test]
fn an_early_wake_only_rearms_the_due_time() {
    let p = plan(vec![call(11).delay("1h")]);
    check(
        "early_wake",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:30", Wake),
            ("2025-06-02 09:59:59", Wake),
            ("2025-06-02 10:00", Wake),
        ],
    );
}

#[test]
fn a_wake_during_an_encounter_changes_nothing() {
    let p = plan(vec![call(11)]);
    check(
        "wake_during_encounter",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Wake),
            ("2025-06-02 09:02", WakeSuppressed),
        ],
    );
}

#[test]
fn a_duplicate_encounter_ended_is_ignored() {
    let p = plan(vec![call(11).attempts(2, "1h"), sms(12)]);
    check(
        "duplicate_encounter_ended",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::NoAnswer)),
            ("2025-06-02 09:02", EndedAt(O::NoAnswer, "2025-06-02 09:01")),
            ("2025-06-02 09:03", Ended(O::Resolved)),
        ],
    );
}

#[test]
fn encounter_ended_before_any_encounter_started_is_ignored() {
    let p = plan(vec![call(11).delay("1h")]);
    check(
        "encounter_ended_while_waiting",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:10", Ended(O::Resolved)),
        ],
    );
}

#[test]
fn a_second_enrolled_is_ignored() {
    let p = plan(vec![call(11).delay("1h")]);
    check(
        "second_enrolled",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:30", Enrolled),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Beyond scripts
// ---------------------------------------------------------------------------------------------

#[test]
fn step_is_deterministic() {
    // Same inputs, same outputs: no clock, no randomness.
    let p = plan_in(NEW_YORK, vec![call(11).attempts(2, "1h"), sms(12)]);
    let state = SequenceState::new();
    let now = t("2025-06-02 09:00");
    let a = step(&p, &state, &Event::Enrolled, now);
    let b = step(&p, &state, &Event::Enrolled, now);
    assert_eq!(a, b);
}

#[test]
fn a_deferral_wakes_exactly_at_the_next_allowed_instant() {
    // The engine and the public helper agree, so the scheduler never wakes into a deferral.
    let p = plan_in(NEW_YORK, vec![call(11)]);
    let now = t("2025-06-02 03:00");
    let enrolled = step(&p, &SequenceState::new(), &Event::Enrolled, now).state;
    let wake = plain_wake();
    let deferred = step(&p, &enrolled, &wake, now).state;
    let expected = next_allowed_instant(now, NEW_YORK, &p.calling_hours.unwrap());
    assert_eq!(deferred.next_wake, Some(expected));
    assert_eq!(expected, t("2025-06-02 12:00"));
}

#[test]
fn huge_delays_saturate_instead_of_panicking() {
    let p = plan(vec![call(11).attempts(2, "1s")]);
    let huge = Plan {
        steps: vec![StepSpec {
            delay: Duration::from_secs(u64::MAX),
            ..p.steps[0].clone()
        }],
        ..p
    };
    let tr = step(
        &huge,
        &SequenceState::new(),
        &Event::Enrolled,
        t("2025-06-02 09:00"),
    );
    assert_eq!(tr.state.next_wake, Some(DateTime::<Utc>::MAX_UTC));
}

#[test]
fn a_state_pointing_past_the_plan_ends_instead_of_panicking() {
    let p = plan(vec![call(11), sms(12)]);
    let state = SequenceState {
        step: 5,
        phase: Phase::WaitingToStart {
            due_at: t("2025-06-02 09:00"),
        },
        next_wake: Some(t("2025-06-02 09:00")),
        ..SequenceState::new()
    };
    let wake = plain_wake();
    let tr = step(&p, &state, &wake, t("2025-06-02 09:00"));
    assert_eq!(tr.state.status, SequenceStatus::Ended);
    assert_eq!(tr.actions.last(), Some(&Action::End));
    assert!(
        !tr.actions
            .iter()
            .any(|a| matches!(a, Action::StartEncounter { .. }))
    );
}

// ---------------------------------------------------------------------------------------------
// Calling rules (a state's statute, an organisation's policy): the strictest window wins
// ---------------------------------------------------------------------------------------------

const MIAMI: Tz = chrono_tz::America::New_York;
const HOUSTON: Tz = chrono_tz::America::Chicago;

fn rule(name: &str, days: &[Weekday], window: Option<(&str, &str)>) -> CallingRule {
    CallingRule {
        name: name.to_owned(),
        weekdays: days.iter().copied().collect(),
        hours: window.and_then(|(start, end)| hours(start, end)),
    }
}

/// Florida's statute as a rule: 08:00 to 20:00 every day.
fn florida() -> CallingRule {
    rule("US-FL", &WEEK, Some(("08:00", "20:00")))
}

fn with_rules(tz: Tz, rules: Vec<CallingRule>) -> Plan {
    Plan {
        rules,
        ..plan_in(tz, vec![call(11), call(12)])
    }
}

#[test]
fn a_state_window_narrower_than_the_template_defers_and_names_the_rule() {
    // 20:30 EDT: inside the template's 08:00-21:00, outside Florida's 08:00-20:00. Deferred
    // to 08:00 tomorrow, and the deferral says which rule held it back.
    let p = with_rules(MIAMI, vec![florida()]);
    check(
        "rule_florida_evening",
        &p,
        &[
            ("2025-06-03 00:30", Enrolled),
            ("2025-06-03 00:30", Wake),
            ("2025-06-03 12:00", Wake),
        ],
    );
}

#[test]
fn before_both_windows_the_template_is_named_not_the_rule() {
    // 07:00 EDT: the template's window and Florida's both open at 08:00; the template's
    // calling hours are what defer it (the rule pushed nothing later).
    let p = with_rules(MIAMI, vec![florida()]);
    check(
        "rule_florida_morning",
        &p,
        &[
            ("2025-06-02 11:00", Enrolled),
            ("2025-06-02 11:00", Wake),
            ("2025-06-02 12:00", Wake),
        ],
    );
}

#[test]
fn a_weekday_window_and_a_sunday_window_each_apply_on_their_days() {
    // Texas: 09:00-21:00 Monday to Saturday, 12:00-21:00 on Sunday. Sunday 2025-06-01 10:00
    // CDT waits for noon; Monday 08:30 CDT waits for 09:00; Monday 20:30 CDT is allowed.
    let p = with_rules(
        HOUSTON,
        vec![
            rule(
                "US-TX",
                &[
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                    Weekday::Sat,
                ],
                Some(("09:00", "21:00")),
            ),
            rule("US-TX-sunday", &[Weekday::Sun], Some(("12:00", "21:00"))),
        ],
    );
    check(
        "rule_texas_sunday",
        &p,
        &[
            ("2025-06-01 15:00", Enrolled),
            ("2025-06-01 15:00", Wake),
            ("2025-06-01 17:00", Wake),
            ("2025-06-02 01:30", Ended(O::Busy)),
            ("2025-06-02 13:30", Wake),
            ("2025-06-02 14:00", Wake),
        ],
    );
}

#[test]
fn a_banned_weekday_is_skipped_to_the_next_allowed_day() {
    // Alabama-style: no contact on Sunday. Saturday 2025-05-31 21:30 CDT is after the
    // template's window; Sunday is banned; the next allowed instant is Monday 08:00 CDT.
    let p = with_rules(HOUSTON, vec![rule("US-AL", &[Weekday::Sun], None)]);
    check(
        "rule_sunday_ban",
        &p,
        &[
            ("2025-06-01 02:30", Enrolled),
            ("2025-06-01 02:30", Wake),
            ("2025-06-02 13:00", Wake),
        ],
    );
}

#[test]
fn a_rule_attempt_limit_defers_and_names_the_rule() {
    // Florida's three attempts per 24 h reached: the driver says the rule allows the next
    // contact at 15:00 UTC (11:00 EDT), inside both windows: deferred there, naming the rule.
    let p = with_rules(MIAMI, vec![florida()]);
    check(
        "rule_attempt_limit",
        &p,
        &[
            ("2025-06-02 13:00", Enrolled),
            ("2025-06-02 13:00", WakeRuleCapped("2025-06-02 15:00", 0)),
            ("2025-06-02 15:00", Wake),
        ],
    );
}

#[test]
fn a_rule_attempt_limit_that_lands_after_the_window_defers_for_the_window() {
    // The limit allows the next contact at 20:30 EDT, inside the template's window but after
    // Florida's 20:00 close: deferred to 08:00 EDT the next day, naming Florida's window.
    let p = with_rules(MIAMI, vec![florida()]);
    check(
        "rule_attempt_limit_after_close",
        &p,
        &[
            ("2025-06-02 13:00", Enrolled),
            ("2025-06-02 13:00", WakeRuleCapped("2025-06-03 00:30", 0)),
            ("2025-06-03 12:00", Wake),
        ],
    );
}

#[test]
fn a_template_window_that_no_rule_allows_ends_the_sequence_instead_of_waiting_forever() {
    // A 20:00-21:00 template for a Florida contact: there is no allowed instant, ever.
    let p = Plan {
        calling_hours: hours("20:00", "21:00"),
        ..with_rules(MIAMI, vec![florida()])
    };
    check(
        "rule_no_window",
        &p,
        &[("2025-06-02 13:00", Enrolled), ("2025-06-02 13:00", Wake)],
    );
}

#[test]
fn the_contact_check_refuses_outside_a_rule_window() {
    let p = with_rules(MIAMI, vec![florida()]);
    let evening = t("2025-06-03 00:30"); // 20:30 EDT
    let enrolled = step(
        &p,
        &SequenceState::new(),
        &Event::Enrolled,
        t("2025-06-02 23:00"),
    )
    .state;
    let wake = plain_wake();
    // Started at 19:00 EDT, the window closed before the provider request.
    let started = step(&p, &enrolled, &wake, t("2025-06-02 23:00")).state;
    assert!(matches!(started.phase, Phase::InEncounter { .. }));
    assert_eq!(
        contact_check(&p, &started, false, evening),
        Err(Withheld::OutsideCallingHours)
    );
    assert_eq!(
        contact_check(&p, &started, false, t("2025-06-02 23:59")),
        Ok(())
    );
    // Without the rule, 20:30 EDT is inside the template's window.
    let template_only = Plan {
        rules: Vec::new(),
        ..p.clone()
    };
    assert_eq!(
        contact_check(&template_only, &started, false, evening),
        Ok(())
    );
}

#[test]
fn every_allowed_instant_is_allowed_by_every_rule_and_is_the_first_such() {
    // Exhaustive over a fortnight of 10-minute steps, across a DST change: the computed next
    // instant is allowed by the template and every rule, and no earlier 10-minute mark after
    // the start is.
    let p = with_rules(
        chrono_tz::America::Chicago,
        vec![
            rule("weekdays", &WEEK[..6], Some(("09:00", "20:00"))),
            rule("sunday", &[Weekday::Sun], Some(("12:00", "18:30"))),
        ],
    );
    let allowed_at = |at: DateTime<Utc>| {
        let local = at.with_timezone(&p.time_zone).naive_local();
        p.calling_hours.unwrap().allows(local.time()) && p.rules.iter().all(|r| r.allows(local))
    };
    let enrolled = step(
        &p,
        &SequenceState::new(),
        &Event::Enrolled,
        t("2025-10-28 00:00"),
    )
    .state;
    let wake = plain_wake();
    let mut at = t("2025-10-28 00:00");
    while at < t("2025-11-11 00:00") {
        let tr = step(&p, &enrolled, &wake, at);
        let next = tr.state.next_wake.unwrap_or(at);
        assert!(allowed_at(next), "{at}: {next} is not allowed");
        let mut probe = at;
        while probe < next {
            assert!(
                !allowed_at(probe),
                "{at}: {probe} was allowed before {next}"
            );
            probe += chrono::TimeDelta::minutes(10);
        }
        at += chrono::TimeDelta::minutes(10);
    }
}

// ---------------------------------------------------------------------------------------------
// Voicemail policy per call step
// ---------------------------------------------------------------------------------------------

#[test]
fn a_step_that_does_not_retry_voicemail_moves_on_and_its_text_comes_at_once() {
    // Three attempts, but a voicemail is not retried: the SMS step (delay 2 h) is brought
    // forward to the voicemail's end. A busy line is still retried.
    let p = plan(vec![
        call(11).attempts(3, "1h").voicemail(false, true),
        sms(21).delay("2h"),
    ]);
    check(
        "voicemail_no_retry_sms_follow_up",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::Busy)),
            ("2025-06-02 10:01", Wake),
            ("2025-06-02 10:02", Ended(O::Voicemail)),
            ("2025-06-02 10:02", Wake),
        ],
    );
}

#[test]
fn a_retried_voicemail_brings_the_text_forward_only_after_the_last_attempt() {
    // Voicemail is retried (the default) and the follow-up is on: the first voicemail is
    // retried after 1 h; the second, the last attempt, brings the SMS step forward. A no-answer
    // on the last attempt would not (only a voicemail does).
    let p = plan(vec![
        call(11).attempts(2, "1h").voicemail(true, true),
        sms(21).delay("2h"),
    ]);
    check(
        "voicemail_retry_then_follow_up",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::Voicemail)),
            ("2025-06-02 10:01", Wake),
            ("2025-06-02 10:02", Ended(O::Voicemail)),
            ("2025-06-02 10:02", Wake),
        ],
    );
    let no_answer = plan(vec![call(11).voicemail(true, true), sms(21).delay("2h")]);
    check(
        "voicemail_follow_up_not_for_no_answer",
        &no_answer,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::NoAnswer)),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// The fixed text after a voicemail
// ---------------------------------------------------------------------------------------------

#[test]
fn the_text_after_the_last_voicemail_is_sent_then_the_next_step_comes_after_its_delay() {
    // Voicemail on the last attempt: the text is due at once as attempt 3 of step 0 (an SMS
    // with the call's assistant), and the SMS step follows 2 h after the text ended.
    let p = plan(vec![
        call(11).attempts(2, "1h").text_after_voicemail(),
        sms(21).delay("2h"),
    ]);
    check(
        "voicemail_text_then_next_step",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::Voicemail)),
            ("2025-06-02 10:01", Wake),
            ("2025-06-02 10:02", Ended(O::Voicemail)),
            ("2025-06-02 10:02", Wake),
            ("2025-06-02 10:02", Ended(O::NoReply)),
            ("2025-06-02 12:02", Wake),
        ],
    );
}

#[test]
fn the_text_after_the_voicemail_of_the_last_step_ends_the_sequence_as_the_call_would_have() {
    let p = plan(vec![
        call(11).voicemail(false, false).text_after_voicemail(),
    ]);
    check(
        "voicemail_text_then_end",
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::Voicemail)),
            ("2025-06-02 09:01", Wake),
            ("2025-06-02 09:01", Ended(O::NoReply)),
        ],
    );
    // A text that failed is not sent again: the sequence goes on (here: ends) all the same.
    let tr = run(
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::Voicemail)),
            ("2025-06-02 09:01", Wake),
            ("2025-06-02 09:01", Ended(O::Error)),
        ],
    );
    assert_eq!(tr.state.status, SequenceStatus::Ended);
    assert!(
        tr.actions
            .contains(&Action::Record(Note::VoicemailTextEnded {
                step: 0,
                attempt: 2,
                sent: false,
            }))
    );
    assert!(!tr.actions.contains(&Action::SuppressNumber));
}

#[test]
fn no_text_after_an_answered_call_a_no_answer_or_a_voicemail_that_is_retried() {
    let p = plan(vec![
        call(11).attempts(2, "1h").text_after_voicemail(),
        sms(21).delay("2h"),
    ]);
    for (outcome, retried) in [
        (O::Unresolved, false),
        (O::RequestedCallback, false),
        (O::Voicemail, true),
        (O::NoAnswer, true),
    ] {
        let tr = run(
            &p,
            &[
                ("2025-06-02 09:00", Enrolled),
                ("2025-06-02 09:00", Wake),
                ("2025-06-02 09:01", Ended(outcome)),
            ],
        );
        assert!(!tr.state.voicemail_text, "{outcome}");
        assert_eq!(
            (tr.state.step, tr.state.attempt),
            if retried { (0, 2) } else { (1, 1) },
            "{outcome}"
        );
    }
    // A no-answer on the last attempt moves on without a text.
    let tr = run(
        &p,
        &[
            ("2025-06-02 09:00", Enrolled),
            ("2025-06-02 09:00", Wake),
            ("2025-06-02 09:01", Ended(O::Voicemail)),
            ("2025-06-02 10:01", Wake),
            ("2025-06-02 10:02", Ended(O::NoAnswer)),
        ],
    );
    assert!(!tr.state.voicemail_text);
    assert_eq!((tr.state.step, tr.state.attempt), (1, 1));
}

#[test]
fn the_text_after_a_voicemail_waits_for_the_window_and_is_withheld_like_any_text() {
    // The voicemail ends at 20:59 local; the text is due then, started, withheld at its claim
    // as the window closed, deferred to 08:00 and sent then. A suppressed number ends the
    // sequence before it; a carrier opt-out on the text suppresses and ends it.
    let p = Plan {
        calling_hours: hours("08:00", "21:00"),
        ..plan(vec![
            call(11).voicemail(false, false).text_after_voicemail(),
            sms(21).delay("1h"),
        ])
    };
    check(
        "voicemail_text_withheld_and_deferred",
        &p,
        &[
            ("2025-06-02 20:58", Enrolled),
            ("2025-06-02 20:58", Wake),
            ("2025-06-02 20:59", Ended(O::Voicemail)),
            ("2025-06-02 20:59", Wake),
            ("2025-06-02 21:00", Withhold(Withheld::OutsideCallingHours)),
            ("2025-06-02 21:00", Wake),
            ("2025-06-03 08:00", Wake),
            ("2025-06-03 08:00", Ended(O::OptOut)),
        ],
    );
    check(
        "voicemail_text_suppressed",
        &p,
        &[
            ("2025-06-02 10:00", Enrolled),
            ("2025-06-02 10:00", Wake),
            ("2025-06-02 10:01", Ended(O::Voicemail)),
            ("2025-06-02 10:01", WakeSuppressed),
        ],
    );
    check(
        "voicemail_text_cancelled",
        &p,
        &[
            ("2025-06-02 10:00", Enrolled),
            ("2025-06-02 10:00", Wake),
            ("2025-06-02 10:01", Ended(O::Voicemail)),
            ("2025-06-02 10:01", Cancel),
        ],
    );
}

#[test]
fn an_ineligible_step_is_skipped_and_the_next_step_is_due_after_its_delay() {
    let mut second = sms(2);
    second.delay = d("1h");
    check(
        "ineligible_skip_step",
        &plan(vec![call(1), second]),
        &[
            ("2025-06-02 09:00:00", Enrolled),
            ("2025-06-02 09:00:00", Wake),
            (
                "2025-06-02 09:00:05",
                NotEligible(EligibilityAction::SkipStep),
            ),
            ("2025-06-02 10:00:05", Wake),
            ("2025-06-02 10:30:00", Ended(O::Resolved)),
        ],
    );
}

#[test]
fn an_ineligible_last_step_ends_the_sequence_and_a_retry_is_skipped_with_its_step() {
    check(
        "ineligible_last_step",
        &plan(vec![call(1).attempts(3, "4h")]),
        &[
            ("2025-06-02 09:00:00", Enrolled),
            ("2025-06-02 09:00:00", Wake),
            ("2025-06-02 09:01:00", Ended(O::NoAnswer)),
            ("2025-06-02 13:01:00", Wake),
            (
                "2025-06-02 13:01:02",
                NotEligible(EligibilityAction::SkipStep),
            ),
        ],
    );
}

#[test]
fn an_ineligible_answer_that_ends_the_sequence_ends_it_and_a_stale_one_changes_nothing() {
    check(
        "ineligible_end_sequence",
        &plan(vec![call(1), sms(2)]),
        &[
            ("2025-06-02 09:00:00", Enrolled),
            // Before any encounter was started: not for this sequence's state.
            (
                "2025-06-02 08:59:00",
                NotEligible(EligibilityAction::EndSequence),
            ),
            ("2025-06-02 09:00:00", Wake),
            (
                "2025-06-02 09:00:03",
                NotEligible(EligibilityAction::EndSequence),
            ),
        ],
    );
}
