//! The Clarion sequence engine: what an outreach sequence does next.
//!
//! # The model
//!
//! A sequence walks the steps of its template in order. Each step is a call or an SMS
//! conversation; a call that did not reach the contact (no answer, busy, voicemail) may be
//! tried again up to `max_attempts` times. After every encounter the engine decides, in this
//! order: an opt-out stops the sequence and suppresses the number (always, for compliance);
//! an outcome listed in the template's `stop_on` stops it; a retryable call with attempts
//! left is retried after `retry_delay`; a call step's last voicemail is followed by its fixed
//! text when the step has one ([`StepSpec::text_after_voicemail`]: one more encounter of the
//! step, on the SMS channel, after which the engine goes on as below); otherwise the next step
//! is scheduled `delay` after the encounter ended; and after the last step the sequence ends.
//!
//! Between encounters a sequence waits for a *due time*. When the scheduler wakes it, the
//! engine checks, in order, that the number is not suppressed (else the sequence ends with
//! no further contact), that the organisation's contact cap and the calling rules' attempt
//! limits allow contact, and that the contact's local time is inside the calling hours and
//! inside every calling rule's window (a US state's statute, an organisation's own policy:
//! [`CallingRule`]; the strictest wins). If any of these says "not yet", the engine computes the exact instant it will say yes ([`next_allowed_instant`]),
//! records a deferral and asks to be woken then. Nothing is polled.
//!
//! # Pure
//!
//! Everything here is one function:
//!
//! ```text
//! step(plan, state, event, now) -> Transition { state', actions }
//! ```
//!
//! [`step`] does no I/O, never reads the clock (`now` is an argument), and uses no
//! randomness: the same inputs always give the same outputs. Facts that need I/O, such as
//! whether the number is suppressed or when the contact cap allows contact, are looked up by
//! the driver and passed in the [`Event`]. Effects come back as [`Action`]s for the driver to
//! perform: start an encounter, record a history note, suppress the number, end.
//!
//! This is what makes the engine testable as data (scripts of timed events and the trace
//! they produce, in `tests/engine.rs`) and what lets the durable scheduler keep its
//! guarantees: it stores [`Transition::state`] and the effects of [`Transition::actions`] in
//! one database transaction, so a crash either happened before the step or after it, never
//! in the middle. Because [`Action::StartEncounter`] names the (step, attempt) pair, the
//! driver can make that pair unique and so never contact a patient twice for the same
//! attempt.
//!
//! # Robustness
//!
//! Events that do not fit the current state are ignored rather than refused: a wake-up
//! before the due time (it only re-arms `next_wake`), a duplicate or late
//! `EncounterEnded`, a second `Enrolled`, anything after the end — except that an encounter
//! ending with an opt-out always suppresses the number, whatever state the sequence is in. The scheduler delivers
//! at least once, so every event must be safe to see twice. Pause, resume and cancel on an
//! ended sequence return no actions; the API layer reports that as a conflict.
//!
//! # The last word before contact
//!
//! An encounter is started in one transaction and handed to its provider after it commits;
//! meanwhile the sequence may be cancelled or paused, the number suppressed, or the calling
//! window may close. [`contact_check`] is the rule the driver applies in the transaction just
//! before each provider request; when it says no, [`Event::EncounterWithheld`] puts the
//! attempt back (a closed window becomes a deferral; a suppressed number ends the sequence).
//! An organisation's eligibility hook may say no too, just before that check:
//! [`Event::Ineligible`] skips the step (the next one is scheduled after its delay) or ends
//! the sequence, as the hook's answer says.
//!
//! # Conventions
//!
//! Step indexes are 0-based everywhere in the data ([`SequenceState::step`], notes,
//! actions); attempts are 1-based. Only the human-readable `outcome_description` says
//! "step 1". Descriptions name steps, channels and outcomes, never anything about the
//! patient.

#![warn(missing_docs)]

mod hours;
mod machine;
mod outcome;
mod plan;
mod state;

pub use hours::next_allowed_instant;
pub use machine::{contact_check, step};
pub use outcome::{EncounterOutcome, StopReason};
pub use plan::{CallingHours, CallingRule, Channel, ParseError, Plan, StepSpec, Weekdays};
pub use state::{
    Action, DeferReason, EligibilityAction, Event, Note, Phase, RuleCap, SequenceState,
    SequenceStatus, SkipReason, Transition, Withheld,
};
