//! Clarion's provider adapters for **Vapi** (AI voice calls) and **Twilio** (SMS): the wire
//! types, the webhook signatures, the mappings from what the providers report to what
//! Clarion's report and engine say, and the scripted SMS assistant.
//!
//! Everything here is pure — no clock, no global state, no I/O — except the thin HTTP client
//! in [`vapi::client`]. The webhook routes and the scheduler that call these functions live
//! elsewhere; keeping the
//! provider knowledge in plain functions lets it be tested exhaustively against the providers'
//! published examples and reused by the local provider fakes, which must speak the same wire
//! format. The facts and their sources are in `shared/reference/providers.md`.
//!
//! * [`vapi`]: the `POST /call` request and the `Call` object ([`vapi::wire`]); the mapping
//!   from `endedReason` and post-call analysis to the report's `ended_reason`, `outcome`,
//!   `failure_reason` and the engine's encounter outcome, as a table ([`vapi::mapping`]); and
//!   the transcript with its repetition and interruption counts ([`vapi::turns`]).
//! * [`twilio`]: `X-Twilio-Signature` ([`twilio::signature`]); STOP/START/HELP keywords
//!   ([`twilio::keywords`]); the Messages API, status callbacks, inbound messages, the status
//!   order and the meaning of send errors ([`twilio::wire`]).
//! * [`sms_assistant`]: the keyword-and-intent script that answers inbound texts and decides
//!   when an SMS conversation is over.
//!
//! Both providers' results are expressed in the same vocabulary the simulator
//! (`clarion-channels`) uses, so a report reads the same whichever channel provider carried the
//! encounter.
//!
//! **PHI.** Phone numbers, message bodies, transcripts, summaries and template variables are
//! protected health information once tied to a patient. No error in this crate quotes one, and
//! every type that carries one prints `<redacted>` in its `Debug` output; the Twilio
//! [`twilio::signature::AuthToken`] is redacted the same way.
#![warn(missing_docs)]

mod de;
mod http;
pub mod llm;
mod redact;
pub mod sms_assistant;
pub mod twilio;
pub mod vapi;

pub use sms_assistant::{Conversation, Decision, ScriptConfig, SmsEnd, respond, summary};
pub use twilio::keywords::Keyword;
pub use vapi::mapping::{CallResult, map_end_of_call};
