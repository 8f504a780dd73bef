//! Vapi: the AI voice-call channel.
//!
//! * [`wire`]: the `POST /call` request, the `Call` object and the server messages
//!   (`status-update`, `end-of-call-report`).
//! * [`mapping`]: `endedReason` + analysis → the report's `ended_reason`, `outcome`,
//!   `failure_reason` and the engine's encounter outcome; Vapi status → `call_status`.
//! * [`turns`]: the `AI:`/`User:` transcript and the repetition/interruption counts.
//!
//! Authenticating Vapi's webhooks (`x-vapi-secret`, Bearer or HMAC, providers.md §1.6) is
//! configuration-dependent and lives with the HTTP server, not here.

pub mod mapping;
pub mod turns;
pub mod wire;
