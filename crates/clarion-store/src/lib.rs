//! Clarion's persistence: the schema, its migrations, and every query the other parts run.
//!
//! Callers see one [`Store`] and one transaction type, [`Tx`]; which database sits behind them
//! is this crate's business. The embedded default is SQLite (one file, WAL mode, `synchronous =
//! FULL`, so a committed transaction survives a crash and a power cut). The SQL lives in
//! `sqlite/`, one module per area, beside its migrations in `migrations/sqlite/`; the PostgreSQL
//! backend sits next to it in `postgres/` with its own migrations and the same methods.
//!
//! **Invariant kept here: nothing is lost.** The outbox ([`Store::insert_message`]) writes a
//! message and its deliveries inside the caller's transaction, so a report exists exactly when
//! the change that produced it committed. Deliveries are claimed with an expiring lease, so work
//! held by a crashed process is claimed again once its lease runs out.
//!
//! The public face ([`model`], [`StoreError`], the ids) is backend-neutral: no driver type
//! appears in it. Internal types are plain data, not wire types: the HTTP layer maps them to
//! its JSON.

#![recursion_limit = "512"]

mod api;
pub mod api_key;
mod copy;
mod error;
mod ids;
pub mod model;
pub(crate) mod phi;
mod postgres;
pub mod public_id;
pub mod retry;
pub mod secret_keys;
mod sqlite;
mod stored;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wakeup;

pub use api::{Store, Tx};
/// The engine's values the store keeps at the row level (one `Channel`, one `SequenceStatus`
/// in the workspace), re-exported so callers need not depend on the engine to read a row.
pub use clarion_engine::{Channel, SequenceStatus};
pub use error::{BoxedError, CopyError, Result, StoreError};
pub use ids::*;
pub use model::*;
pub use public_id::{IdCodec, IdKind, PublicIds};
pub use wakeup::{Wakeup, Wakeups};

/// Milliseconds since the Unix epoch, UTC: the one time unit stored.
pub type Millis = i64;
