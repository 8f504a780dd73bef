//! The transition function.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::hours::Constraints;
use crate::outcome::EncounterOutcome;
use crate::plan::{Channel, Plan};
use crate::state::{
    Action, DeferReason, EligibilityAction, Event, Note, Phase, RuleCap, SequenceState,
    SequenceStatus, SkipReason, Transition, Withheld,
};

/// Applies one event to a sequence at instant `now` and returns the new state and the actions
/// the driver must perform.
///
/// Pure: the result depends only on the arguments. Events that do not apply to the current
/// state (a duplicate callback, a wake-up before the due time, anything after the end) leave
/// the state as it is, apart from re-arming `next_wake`, and return no actions, with one
/// exception: an encounter that ends with an opt-out always suppresses the number, whatever
/// state the sequence is in (a call still running when the sequence was cancelled, a report
/// that arrives late).
pub fn step(plan: &Plan, state: &SequenceState, event: &Event, now: DateTime<Utc>) -> Transition {
    let mut m = Machine {
        plan,
        state: state.clone(),
        actions: Vec::new(),
    };
    // An ended sequence is final: its report is already queued, so nothing may change it;
    // only an opt-out still reaches the suppression list.
    if state.status == SequenceStatus::Ended {
        if let Event::EncounterEnded {
            outcome: EncounterOutcome::OptOut,
            ..
        } = *event
        {
            m.late_opt_out();
        }
    } else {
        match *event {
            Event::Enrolled => m.enrolled(now),
            Event::Wake {
                suppressed,
                contact_cap_allows_at,
                rule_cap,
            } => m.wake(now, suppressed, contact_cap_allows_at, rule_cap),
            Event::EncounterEnded { outcome, ended_at } => m.encounter_ended(outcome, ended_at),
            Event::Cancel => m.cancel(),
            Event::Pause => m.pause(),
            Event::Resume => m.resume(now),
            Event::EncounterWithheld { reason } => m.withheld(reason),
            Event::CallerNumbersAtCap { until } => m.caller_numbers_at_cap(until),
            Event::Ineligible { action, ref reason } => m.ineligible(action, reason.clone(), now),
        }
    }
    Transition {
        state: m.state,
        actions: m.actions,
    }
}

/// Whether the encounter the engine started for the current (step, attempt) may be handed to
/// its provider at `now`: the sequence is running and still in that encounter, the number is
/// not suppressed (`suppressed`, looked up by the driver), and `now` is inside the contact's
/// calling hours and every calling rule's window. The driver asks this in the transaction just before every provider
/// request; a `Withheld` goes back in as [`Event::EncounterWithheld`].
pub fn contact_check(
    plan: &Plan,
    state: &SequenceState,
    suppressed: bool,
    now: DateTime<Utc>,
) -> Result<(), Withheld> {
    if state.status != SequenceStatus::Active || !matches!(state.phase, Phase::InEncounter { .. }) {
        return Err(Withheld::NotRunning);
    }
    if suppressed {
        return Err(Withheld::Suppressed);
    }
    if !constraints(plan).allows(now.with_timezone(&plan.time_zone).naive_local()) {
        return Err(Withheld::OutsideCallingHours);
    }
    Ok(())
}

/// The template's window and every calling rule of the plan.
fn constraints(plan: &Plan) -> Constraints<'_> {
    Constraints {
        hours: plan.calling_hours.as_ref(),
        rules: &plan.rules,
    }
}

struct Machine<'a> {
    plan: &'a Plan,
    state: SequenceState,
    actions: Vec<Action>,
}

impl Machine<'_> {
    fn enrolled(&mut self, now: DateTime<Utc>) {
        // A second Enrolled (a redelivered creation event) must not restart the sequence.
        if self.state.phase != Phase::New {
            return;
        }
        match self.plan.steps.first() {
            Some(first) => {
                let due_at = after(now, first.delay);
                self.wait(0, 1, due_at);
                self.note(Note::StepScheduled {
                    step: 0,
                    attempt: 1,
                    due_at,
                });
            }
            None => self.end(
                "Ended at enrollment: the template has no steps, so no contact was made.".into(),
            ),
        }
    }

    fn wake(
        &mut self,
        now: DateTime<Utc>,
        suppressed: bool,
        contact_cap_allows_at: Option<DateTime<Utc>>,
        rule_cap: Option<RuleCap>,
    ) {
        // A paused sequence has no wake-up armed; a stray one must not start anything.
        if self.state.status != SequenceStatus::Active {
            return;
        }
        let Phase::WaitingToStart { due_at } = self.state.phase else {
            return;
        };
        if now < due_at {
            // Early (clock skew, a stale timer): keep the real wake-up armed.
            self.state.next_wake = Some(due_at);
            return;
        }
        let (step, attempt) = (self.state.step, self.state.attempt);
        let Some(spec) = self.plan.steps.get(step) else {
            return self.missing_step();
        };
        // The text after a voicemail is a contact like any other: the same checks, on the SMS
        // channel, with the call step's assistant.
        let channel = self.channel_now(spec.channel);
        // Suppression is checked first: it ends the sequence, so deferring first would only
        // postpone the same answer.
        if suppressed {
            return self.end_suppressed(step, attempt, channel);
        }
        // The caps are applied first and the windows to their result, so a cap that lands
        // after the window closes goes straight to the next window instead of waking in the
        // night.
        let contact_cap = contact_cap_allows_at.unwrap_or(now).max(now);
        let rule_cap_at = rule_cap.map_or(now, |cap| cap.allows_at.max(now));
        let cap_ok = contact_cap.max(rule_cap_at);
        let tz = self.plan.time_zone;
        let template_only = Constraints {
            hours: self.plan.calling_hours.as_ref(),
            rules: &[],
        };
        let by_template = template_only.next_allowed(cap_ok, tz);
        let allowed = constraints(self.plan).next_allowed(cap_ok, tz);
        if allowed == DateTime::<Utc>::MAX_UTC {
            return self.end_without_window(step, attempt, channel);
        }
        if allowed > now {
            // Name the constraint that pushed the contact latest: a rule's window, the
            // template's window, a rule's attempt limit, the organisation's cap.
            let (reason, rule) = if allowed > by_template {
                (DeferReason::CallingRule, self.binding_rule(cap_ok))
            } else if allowed > cap_ok {
                (DeferReason::CallingHours, None)
            } else if let Some(RuleCap { rule, .. }) = rule_cap
                && rule_cap_at >= contact_cap
            {
                let name = self.plan.rules.get(rule).map(|r| r.name.clone());
                (DeferReason::CallingRuleAttempts, name)
            } else {
                (DeferReason::ContactCap, None)
            };
            // A spurious wake-up repeats the same deferral; one history entry is enough.
            if self.state.next_wake != Some(allowed) {
                self.note(Note::Deferred {
                    step,
                    attempt,
                    reason,
                    until: allowed,
                    rule,
                });
            }
            self.state.next_wake = Some(allowed);
            return;
        }
        self.state.phase = Phase::InEncounter { started_at: now };
        self.state.next_wake = None;
        self.note(Note::EncounterStarted {
            step,
            attempt,
            channel,
        });
        self.actions.push(Action::StartEncounter {
            step,
            attempt,
            channel,
            assistant_id: spec.assistant_id,
        });
    }

    /// The channel of the current (step, attempt): the step's, or SMS for the text after a
    /// voicemail.
    fn channel_now(&self, step_channel: Channel) -> Channel {
        if self.state.voicemail_text {
            Channel::Sms
        } else {
            step_channel
        }
    }

    /// How descriptions name the current (step, attempt): "step 2 (sms)", "attempt 3 of
    /// step 1 (call)", or "the text after the voicemail of step 1 (call)".
    fn label_now(&self, step: usize, attempt: u32, channel: Channel) -> String {
        if self.state.voicemail_text {
            let call = self
                .plan
                .steps
                .get(step)
                .map_or(Channel::Call, |s| s.channel);
            format!("the text after the voicemail of step {} ({call})", step + 1)
        } else {
            label(step, attempt, channel)
        }
    }

    /// The step (or attempt) is not run because the number is suppressed: the sequence ends.
    fn end_suppressed(&mut self, step: usize, attempt: u32, channel: Channel) {
        self.note(Note::Skipped {
            step,
            attempt,
            reason: SkipReason::Suppressed,
            action: None,
            hook_reason: None,
        });
        let no_contact = no_contact(step, attempt);
        self.end(format!(
            "Ended before {}: the number is on the suppression list; {no_contact}.",
            self.label_now(step, attempt, channel),
        ));
    }

    /// The calling rule whose window, alone with the template's, allows contact latest after
    /// `from` (the first such rule on a tie).
    fn binding_rule(&self, from: DateTime<Utc>) -> Option<String> {
        let mut latest: Option<(DateTime<Utc>, &str)> = None;
        for rule in &self.plan.rules {
            let alone = Constraints {
                hours: self.plan.calling_hours.as_ref(),
                rules: std::slice::from_ref(rule),
            }
            .next_allowed(from, self.plan.time_zone);
            if latest.is_none_or(|(at, _)| alone > at) {
                latest = Some((alone, &rule.name));
            }
        }
        latest.map(|(_, name)| name.to_owned())
    }

    /// The step cannot run at any instant: the template's window and the calling rules that
    /// apply to the contact never overlap. Waiting would wait forever, so the sequence ends.
    fn end_without_window(&mut self, step: usize, attempt: u32, channel: Channel) {
        self.note(Note::Skipped {
            step,
            attempt,
            reason: SkipReason::NoAllowedWindow,
            action: None,
            hook_reason: None,
        });
        let no_contact = no_contact(step, attempt);
        self.end(format!(
            "Ended before {}: no time is inside both the template's calling hours and the calling rules that apply to the contact; {no_contact}.",
            self.label_now(step, attempt, channel),
        ));
    }

    /// An opt-out from an encounter the sequence no longer waits for: suppress, change
    /// nothing else.
    fn late_opt_out(&mut self) {
        self.note(Note::LateOptOut);
        self.actions.push(Action::SuppressNumber);
    }

    /// The encounter started for the current (step, attempt) was withheld just before its
    /// provider request. Nobody was contacted, so the attempt is not used up: the sequence
    /// waits for it again from its original due time, and the next wake-up checks calling
    /// hours, caps and suppression as for any start (a closed window becomes a deferral to
    /// the next opening). A suppressed number ends the sequence as at a wake-up.
    fn withheld(&mut self, reason: Withheld) {
        let Phase::InEncounter { started_at } = self.state.phase else {
            return;
        };
        let (step, attempt) = (self.state.step, self.state.attempt);
        self.note(Note::EncounterWithheld {
            step,
            attempt,
            reason,
        });
        let Some(spec) = self.plan.steps.get(step) else {
            return self.missing_step();
        };
        if reason == Withheld::Suppressed {
            let channel = self.channel_now(spec.channel);
            return self.end_suppressed(step, attempt, channel);
        }
        // Armed only while active: a paused sequence picks the attempt up on resume.
        self.wait(step, attempt, started_at);
    }

    /// The encounter started for the current (step, attempt) found no caller number under its
    /// cap just before its provider request. Nobody was contacted, so the attempt is not used
    /// up: it is deferred to `until` (recorded as `caller-number-cap`), when the next wake-up
    /// checks calling hours, caps and suppression as for any start.
    fn caller_numbers_at_cap(&mut self, until: DateTime<Utc>) {
        if !matches!(self.state.phase, Phase::InEncounter { .. }) {
            return;
        }
        let (step, attempt) = (self.state.step, self.state.attempt);
        self.note(Note::Deferred {
            step,
            attempt,
            reason: DeferReason::CallerNumberCap,
            until,
            rule: None,
        });
        self.wait(step, attempt, until);
    }

    /// The eligibility hook said no just before the provider request of the encounter started
    /// for the current (step, attempt). Nobody was contacted. `skip-step` moves on to the
    /// next step (due its delay after now) or ends the sequence after the last step;
    /// `end-sequence` ends it. The hook's reason goes only into the history: the outcome
    /// description, which the report carries, names the check, not its words.
    fn ineligible(
        &mut self,
        action: EligibilityAction,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) {
        if !matches!(self.state.phase, Phase::InEncounter { .. }) {
            return;
        }
        let (step, attempt) = (self.state.step, self.state.attempt);
        self.note(Note::Skipped {
            step,
            attempt,
            reason: SkipReason::Ineligible,
            action: Some(action),
            hook_reason: reason,
        });
        let Some(spec) = self.plan.steps.get(step) else {
            return self.missing_step();
        };
        let here = self.label_now(step, attempt, self.channel_now(spec.channel));
        let no_contact = no_contact(step, attempt);
        if action == EligibilityAction::SkipStep {
            if let Some(next) = self.plan.steps.get(step + 1) {
                let due_at = after(now, next.delay);
                self.wait(step + 1, 1, due_at);
                return self.note(Note::StepScheduled {
                    step: step + 1,
                    attempt: 1,
                    due_at,
                });
            }
            return self.end(format!(
                "Ended: {here}, the last step, was skipped because the eligibility check \
                 answered that the patient is not to be contacted; {no_contact}."
            ));
        }
        self.end(format!(
            "Ended before {here}: the eligibility check answered that the patient is not to be \
             contacted; {no_contact}."
        ))
    }

    fn encounter_ended(&mut self, outcome: EncounterOutcome, ended_at: DateTime<Utc>) {
        // Only the encounter we started counts; a duplicate or late callback changes nothing
        // (but an opt-out still suppresses). A paused sequence still takes it: the encounter
        // was under way before the pause.
        if !matches!(self.state.phase, Phase::InEncounter { .. }) {
            if outcome == EncounterOutcome::OptOut {
                self.late_opt_out();
            }
            return;
        }
        if self.state.voicemail_text {
            return self.voicemail_text_ended(outcome, ended_at);
        }
        let (step, attempt) = (self.state.step, self.state.attempt);
        self.state.last_outcome = Some(outcome);
        self.note(Note::EncounterEnded {
            step,
            attempt,
            outcome,
        });
        let Some(spec) = self.plan.steps.get(step) else {
            return self.missing_step();
        };
        let here = label(step, attempt, spec.channel);

        // Compliance: an opt-out always stops and suppresses, whatever `stop_on` says.
        if outcome == EncounterOutcome::OptOut {
            self.actions.push(Action::SuppressNumber);
            return self.end(format!(
                "Stopped on {here}: the contact opted out; the number is now on the suppression \
                 list."
            ));
        }
        if let Some(reason) = outcome.stop_reason()
            && self.plan.stop_on.contains(&reason)
        {
            return self.end(match outcome {
                EncounterOutcome::Resolved => format!("Resolved on {here}."),
                _ => format!("Stopped on {here}: {}.", outcome.phrase()),
            });
        }
        let voicemail = outcome == EncounterOutcome::Voicemail;
        if spec.channel == Channel::Call
            && outcome.is_retryable_call()
            && attempt < spec.max_attempts
            && (spec.retry_on_voicemail || !voicemail)
        {
            let due_at = after(ended_at, spec.retry_delay);
            self.wait(step, attempt + 1, due_at);
            return self.note(Note::RetryScheduled {
                step,
                attempt: attempt + 1,
                due_at,
            });
        }
        if voicemail && spec.channel == Channel::Call && spec.text_after_voicemail {
            // The step's last voicemail: its fixed text is due now, as the attempt after the
            // call's last (the pair stays unique); the sequence goes on when it has ended.
            self.wait(step, attempt + 1, ended_at);
            self.state.voicemail_text = true;
            return self.note(Note::VoicemailTextScheduled {
                step,
                attempt: attempt + 1,
                due_at: ended_at,
            });
        }
        self.proceed(step, attempt, outcome, ended_at);
    }

    /// The text after a voicemail ended (sent or not; never sent again): the sequence goes
    /// on exactly as the call's end would have taken it (the next step `delay` after this
    /// end, or the end of the sequence), unless the carrier refused the text as an opt-out.
    fn voicemail_text_ended(&mut self, outcome: EncounterOutcome, ended_at: DateTime<Utc>) {
        let (step, attempt) = (self.state.step, self.state.attempt);
        let sent = !matches!(
            outcome,
            EncounterOutcome::Failed | EncounterOutcome::Error | EncounterOutcome::OptOut
        );
        self.note(Note::VoicemailTextEnded {
            step,
            attempt,
            sent,
        });
        let Some(spec) = self.plan.steps.get(step) else {
            return self.missing_step();
        };
        if outcome == EncounterOutcome::OptOut {
            self.actions.push(Action::SuppressNumber);
            return self.end(format!(
                "Stopped on step {} ({}): the contact opted out when the text after the \
                 voicemail was sent; the number is now on the suppression list.",
                step + 1,
                spec.channel
            ));
        }
        let call_attempt = attempt.saturating_sub(1).max(1);
        self.proceed(step, call_attempt, EncounterOutcome::Voicemail, ended_at);
    }

    /// After (step, attempt) ended with `outcome` and is not retried: the next step, due
    /// `delay` after `ended_at` (at once for a voicemail's SMS follow-up), or the end.
    fn proceed(
        &mut self,
        step: usize,
        attempt: u32,
        outcome: EncounterOutcome,
        ended_at: DateTime<Utc>,
    ) {
        let Some(spec) = self.plan.steps.get(step) else {
            return self.missing_step();
        };
        let voicemail = outcome == EncounterOutcome::Voicemail;
        if let Some(next) = self.plan.steps.get(step + 1) {
            // A voicemail's SMS follow-up: the next step's text goes out now.
            let follow_up = voicemail && spec.sms_after_voicemail && next.channel == Channel::Sms;
            let delay = if follow_up {
                Duration::ZERO
            } else {
                next.delay
            };
            let due_at = after(ended_at, delay);
            self.wait(step + 1, 1, due_at);
            return self.note(Note::StepScheduled {
                step: step + 1,
                attempt: 1,
                due_at,
            });
        }
        let total = self.plan.steps.len();
        let unresolved = if outcome == EncounterOutcome::Resolved {
            ""
        } else {
            " without resolution"
        };
        let tries = if attempt > 1 {
            format!(" on attempt {attempt} of {}", spec.max_attempts)
        } else {
            String::new()
        };
        let what = outcome.phrase();
        let (n, channel) = (step + 1, spec.channel);
        self.end(match total {
            1 => format!("The only step ({channel}) ended{unresolved}: {what}{tries}."),
            2 => format!("Both steps done{unresolved}; step {n} ({channel}) ended: {what}{tries}."),
            _ => format!(
                "All {total} steps done{unresolved}; step {n} ({channel}) ended: {what}{tries}."
            ),
        });
    }

    fn cancel(&mut self) {
        let (step, attempt) = (self.state.step, self.state.attempt);
        let channel = self.plan.steps.get(step).map(|s| s.channel);
        let when = match (&self.state.phase, channel) {
            (Phase::InEncounter { .. }, Some(ch)) if self.state.voicemail_text => {
                format!(
                    "on step {} ({ch}), while its text after the voicemail was sent",
                    step + 1
                )
            }
            (Phase::WaitingToStart { .. }, Some(ch)) if self.state.voicemail_text => {
                format!(
                    "on step {} ({ch}), before its text after the voicemail",
                    step + 1
                )
            }
            (Phase::InEncounter { .. }, Some(ch)) => format!("on step {} ({ch})", step + 1),
            (Phase::WaitingToStart { .. }, Some(ch)) if attempt == 1 => {
                format!("before step {} ({ch}) ran", step + 1)
            }
            (Phase::WaitingToStart { .. }, Some(ch)) => {
                format!("on step {} ({ch}), before attempt {attempt}", step + 1)
            }
            _ => "before step 1 ran".to_string(),
        };
        self.note(Note::Cancelled);
        self.end(format!("Cancelled through the API {when}."));
    }

    fn pause(&mut self) {
        if self.state.status != SequenceStatus::Active {
            return;
        }
        // The phase is kept so that resume picks up exactly where the sequence stood.
        self.state.status = SequenceStatus::Paused;
        self.state.next_wake = None;
        self.note(Note::Paused);
    }

    fn resume(&mut self, now: DateTime<Utc>) {
        if self.state.status != SequenceStatus::Paused {
            return;
        }
        self.state.status = SequenceStatus::Active;
        // A due time that passed while paused fires at once; the wake-up still checks calling
        // hours, caps and suppression, so "at once" never means "at night".
        self.state.next_wake = match self.state.phase {
            Phase::WaitingToStart { due_at } => Some(due_at.max(now)),
            _ => None,
        };
        self.note(Note::Resumed);
    }

    /// Moves to "waiting for (step, attempt) at `due_at`"; armed only while active. Another
    /// (step, attempt) than the current one is a step's own attempt until said otherwise.
    fn wait(&mut self, step: usize, attempt: u32, due_at: DateTime<Utc>) {
        if (step, attempt) != (self.state.step, self.state.attempt) {
            self.state.voicemail_text = false;
        }
        self.state.step = step;
        self.state.attempt = attempt;
        self.state.phase = Phase::WaitingToStart { due_at };
        self.state.next_wake = (self.state.status == SequenceStatus::Active).then_some(due_at);
    }

    fn missing_step(&mut self) {
        let (step, attempt) = (self.state.step, self.state.attempt);
        self.note(Note::Skipped {
            step,
            attempt,
            reason: SkipReason::MissingStep,
            action: None,
            hook_reason: None,
        });
        self.end(format!(
            "Ended: step {} is not in the template; no further contact was made.",
            step + 1
        ));
    }

    /// Every ending goes through here so that each keeps the same shape: status, phase and
    /// wake-up cleared together, the description recorded, and `End` last.
    fn end(&mut self, description: String) {
        self.state.status = SequenceStatus::Ended;
        self.state.phase = Phase::Done;
        self.state.next_wake = None;
        self.state.voicemail_text = false;
        self.state.outcome_description = Some(description.clone());
        self.note(Note::Ended { description });
        self.actions.push(Action::End);
    }

    fn note(&mut self, note: Note) {
        self.actions.push(Action::Record(note));
    }
}

/// What an ending before (step, attempt) means for the patient.
fn no_contact(step: usize, attempt: u32) -> &'static str {
    if step == 0 && attempt == 1 {
        "no contact was made"
    } else {
        "no further contact was made"
    }
}

/// "step 2 (sms)", or "attempt 3 of step 1 (call)" for a retry.
fn label(step: usize, attempt: u32, channel: Channel) -> String {
    if attempt > 1 {
        format!("attempt {attempt} of step {} ({channel})", step + 1)
    } else {
        format!("step {} ({channel})", step + 1)
    }
}

/// `at + d`, saturating instead of overflowing on absurd delays.
fn after(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
