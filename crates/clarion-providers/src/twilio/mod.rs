//! Twilio Programmable Messaging: the SMS channel.
//!
//! * [`signature`]: `X-Twilio-Signature` computation and verification.
//! * [`keywords`]: STOP / START / HELP and their synonyms in inbound texts.
//! * [`wire`]: the send request, the message and error JSON, status callbacks, inbound
//!   messages, the status order and what a send error means.
//! * [`client`]: the Messages API client (the module's only I/O).

pub mod client;
pub mod keywords;
pub mod signature;
pub mod wire;
