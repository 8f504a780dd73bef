//! Webhook delivery: from the outbox to the receiver.
//!
//! - [`Outbox`] is how the rest of Clarion queues an End of Sequence Report: inside the
//!   caller's transaction, so a report exists exactly when the change that ended the sequence
//!   committed.
//! - [`Dispatcher`] claims due deliveries under a lease, signs each attempt (Standard
//!   Webhooks, fresh timestamp, same `webhook-id`), POSTs it through the SSRF guard, records
//!   the attempt and schedules the next from the [`RetryPolicy`].
//! - [`eligibility`] asks an organisation's eligibility hook before a contact (signed both
//!   ways, through the same SSRF guard).
//! - [`ssrf`] refuses internal targets, at endpoint creation and on every connection.
//! - [`Clock`] makes time a dependency, so tests run the whole retry schedule on a
//!   [`ManualClock`].

/// The clock, re-exported from `clarion-clock` for the delivery crate's callers.
pub mod clock {
    pub use clarion_clock::{Clock, ManualClock, SystemClock};
}
pub mod concurrency;
mod dispatcher;
pub mod eligibility;
mod outbox;
pub mod schedule;
mod sender;
pub mod ssrf;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dispatcher::{Dispatcher, DispatcherConfig, DispatcherError};
pub use outbox::{EVENT_TYPE_TEST, Enqueued, Outbox, new_webhook_id};
pub use schedule::RetryPolicy;
pub use sender::RESPONSE_EXCERPT_LIMIT;
