//! Clarion's persistence: the schema, its migrations, and every query the other parts run.
//!
//! Callers see one [`Store`] and one transaction type, [`Tx`]; which database sits behind them
//! is this crate's business. The embedded default is SQLite (one file, WAL mode, `synchronous =
//! FULL`, so a committed transaction survives a crash and a power cut). The SQL lives in
//! `sqlite/`, one module per area, beside its migrations in `migrations/sqlite/`; a PostgreSQL
//! backend is meant to sit next to it with its own migrations and the same methods.
//!
//! **Invariant kept here: nothing is lost.** The outbox ([`Store::insert_message`]) writes a
//! message and its deliveries inside the caller's transaction, so a report exists exactly when
//! the change that produced it committed. Deliveries are claimed with an expiring lease, so work
//! held by a crashed process is claimed again once its lease runs out.
//!
//! Internal types here are plain data, not wire types: the HTTP layer maps them to its JSON.

mod ids;
pub mod public_id;
mod sqlite;

use std::str::FromStr;

pub use ids::{DeliveryId, EndpointId, MessageId, OrgId};
pub use public_id::{IdCodec, IdKind, PublicIds};
pub use sqlite::{
    Assistant, ConsentRecord, EncounterRow, InsertSequenceError, MAX_SIGNING_SECRETS, NewSequence,
    OPT_OUT_REASON, Organization, OrganizationPatch, Recipients, RequestedEncounter, SequenceClaim,
    SequenceEvent, SequenceRow, SequenceUpdate, StoreOptions, Suppression, SuppressionChange,
    TemplateVersion, Tx, Unsuppressed,
};

/// Milliseconds since the Unix epoch, UTC: the one time unit stored.
pub type Millis = i64;

/// The store: a connection pool and the queries.
#[derive(Debug, Clone)]
pub struct Store {
    /// Connections for reads outside write transactions.
    pool: sqlx::SqlitePool,
    /// The one connection that writes (see `connect_with`).
    writer: sqlx::SqlitePool,
    /// Serialises this process's write transactions (see [`Tx`]).
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The deployment's public-id codec (its secret is read from the database at connect).
    ids: IdCodec,
}

/// Errors at the store's boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names a database this build cannot open.
    #[error("unsupported database URL (expected sqlite://PATH)")]
    UnsupportedUrl,
    /// A query failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value is not what the schema allows (a bug or a hand edit).
    #[error("corrupt row: {0}")]
    Corrupt(&'static str),
}

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub org_id: OrgId,
    pub url: String,
    pub description: String,
    pub enabled: bool,
    /// Why Clarion disabled the endpoint by itself (e.g. the receiver answered 410 Gone).
    pub disabled_reason: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every scheduled attempt failed (or the endpoint is gone); retryable by hand.
    Failed,
}

impl DeliveryStatus {
    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            _ => Err(StoreError::Corrupt("unknown delivery status")),
        }
    }
}

/// A message to enqueue: the exact bytes every attempt will send.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub org_id: OrgId,
    pub webhook_id: &'a str,
    pub event_type: &'a str,
    pub sequence_id: Option<i64>,
    pub is_test: bool,
    pub body: &'a [u8],
    pub created_at: Millis,
}

/// A delivery with its message's identity and every attempt so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub endpoint_id: EndpointId,
    pub message_id: MessageId,
    pub webhook_id: String,
    pub event_type: String,
    pub sequence_id: Option<i64>,
    pub is_test: bool,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    pub next_attempt_at: Option<Millis>,
    pub created_at: Millis,
    pub attempts: Vec<Attempt>,
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt_number: u32,
    pub attempted_at: Millis,
    /// `None` when no HTTP answer arrived (timeout, refused connection, blocked address).
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    /// A short error class, e.g. `timeout`, `connection-refused`, `ssrf-blocked`.
    pub error: Option<String>,
    /// The first KiB of the answer's body.
    pub response_body: Option<Vec<u8>>,
}

/// Filters for listing deliveries.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub sequence_id: Option<i64>,
    pub endpoint_id: Option<EndpointId>,
    pub status: Option<DeliveryStatus>,
}

/// A delivery claimed by a dispatcher, with everything needed to attempt it.
///
/// `Debug` leaves out the URL, the body and the secrets.
#[derive(Clone)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    pub endpoint_id: EndpointId,
    pub url: String,
    pub webhook_id: String,
    pub event_type: String,
    pub body: Vec<u8>,
    /// The endpoint's secrets that sign at claim time: the current one first, then rotated-out
    /// ones still within their overlap.
    pub signing_secrets: Vec<String>,
    /// Attempts made before this one.
    pub attempt_count: u32,
    /// A hand-requested extra attempt: on failure the delivery goes back to `failed`.
    pub manual: bool,
    /// This claim's lease token, written as the delivery's `lease_owner`: the node's name and
    /// a random suffix drawn for this claim alone. An outcome recorded under it lands only
    /// while the delivery still carries it, so a claim whose lease expired (and was claimed
    /// again, even by the same node) can no longer move the delivery.
    pub lease: String,
}

impl std::fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("id", &self.id)
            .field("endpoint_id", &self.endpoint_id)
            .field("webhook_id", &self.webhook_id)
            .field("attempt_count", &self.attempt_count)
            .field("manual", &self.manual)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// The claiming node's identity: the prefix of each claim's lease token (the token adds a
    /// random suffix per claim, see [`ClaimedDelivery::lease`]).
    pub owner: &'a str,
    pub now: Millis,
    pub lease_until: Millis,
    pub limit: u32,
    /// `true` claims first attempts only, `false` retries only, so that a backlog of retries
    /// never delays fresh reports.
    pub first_attempts: bool,
    /// At most this many deliveries of one endpoint in flight on the claiming node...
    pub per_endpoint_limit: u32,
    /// ...counting these, already in flight there (endpoint, count).
    pub in_flight: &'a [(EndpointId, u32)],
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered,
    RetryAt(Millis),
    Failed,
}

/// The outcome of one attempt, to record.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub delivery_id: DeliveryId,
    /// The lease token of the claim the attempt was made under ([`ClaimedDelivery::lease`]).
    pub lease: String,
    pub attempt: Attempt,
    pub next: AfterAttempt,
    /// Disable the endpoint with this reason (the receiver answered 410 Gone).
    pub disable_endpoint: Option<(EndpointId, String)>,
}

/// Queue figures for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub pending: u64,
    /// When the oldest pending delivery was created.
    pub oldest_pending_created_at: Option<Millis>,
}

/// A report from the pull API: the message id is the cursor.
#[derive(Debug, Clone)]
pub struct StoredReport {
    pub message_id: MessageId,
    pub webhook_id: String,
    pub body: Vec<u8>,
}
