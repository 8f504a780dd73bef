//! Vapi: the AI voice-call channel.
//!
//! * [`wire`]: the `POST /call` request, the `Call` object and the server messages
//!   (`status-update`, `end-of-call-report`).
//! * [`mapping`]: `endedReason` + analysis → the report's `ended_reason`, `outcome`,
//!   `failure_reason` and the engine's encounter outcome; Vapi status → `call_status`.
//! * [`turns`]: the `AI:`/`User:` transcript and the repetition/interruption counts.
//! * [`report`]: the report's `Call` object from an end-of-call report.
//! * [`client`]: the HTTP client (`POST /call`, `GET /call/{id}`), the crate's only I/O.
//!
//! Authenticating Vapi's webhooks (`x-vapi-secret`, Bearer or HMAC, providers.md §1.6) is
//! configuration-dependent and lives with the HTTP server, not here.

pub mod client;
pub mod mapping;
pub mod report;
pub mod turns;
pub mod wire;
