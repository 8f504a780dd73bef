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
//! * [`signature`]: Vapi's HMAC credential for server messages (sign and verify).
//!
//! Which credential Vapi's webhooks must carry (`x-vapi-secret`, Bearer or HMAC, providers.md
//! §1.6) is configuration and lives with the HTTP server.

pub mod client;
pub mod mapping;
pub mod report;
pub mod signature;
pub mod turns;
pub mod wire;
