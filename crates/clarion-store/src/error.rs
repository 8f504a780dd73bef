//! The store's errors: what a caller needs to decide, never a driver's type.

/// Errors at the store's boundary.
///
/// The database's own error is kept as the [`source`](std::error::Error::source) for logs
/// and is never part of the match: callers decide on the variant.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names a database this build cannot open.
    #[error("unsupported database URL (expected sqlite://PATH or postgres://...)")]
    UnsupportedUrl,
    /// A transaction begun on one store was passed to a store of another backend (a bug in
    /// the caller); nothing was run.
    #[error("transaction belongs to another store's backend")]
    ForeignTransaction,
    /// The row asked for does not exist (or belongs to another organisation).
    #[error("not found")]
    NotFound,
    /// The change conflicts with the stored state (a uniqueness rule, a row changed meanwhile).
    #[error("conflict with the stored state")]
    Conflict,
    /// The database could not be reached or did not answer in time; trying again may help.
    #[error("database unavailable")]
    Unavailable(#[source] BoxedError),
    /// A query failed for another reason.
    #[error("database error")]
    Database(#[source] BoxedError),
    /// The schema could not be brought up to date.
    #[error("database migration failed")]
    Migrate(#[source] BoxedError),
    /// PostgreSQL nodes must share a secret key (`CLARION_SECRET_KEY`) to seal webhook
    /// endpoint secrets; none was given.
    #[error(
        "a secret key is required for PostgreSQL: set CLARION_SECRET_KEY (32 random bytes in \
         base64, e.g. `openssl rand -base64 32`), the same on every node"
    )]
    SecretKeyRequired,
    /// The secret key file beside a SQLite database could not be read or written.
    #[error("secret key file {path}")]
    SecretKeyFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Stored secrets are sealed under a key the configured key ring does not hold: started
    /// with the wrong `CLARION_SECRET_KEY`, or a previous key dropped too early.
    #[error(
        "{count} webhook endpoint secret(s) are sealed under secret key {key_id}, which is not \
         configured: set it as CLARION_SECRET_KEY or in CLARION_PREVIOUS_SECRET_KEYS"
    )]
    UnknownSecretKey { key_id: String, count: u64 },
    /// A stored value is not what the schema allows (a bug or a hand edit).
    #[error("corrupt row: {0}")]
    Corrupt(&'static str),
}

/// Why a copy of an installation ([`crate::Store::copy_into`]) was refused or failed. Nothing
/// was committed to the target in any case. Messages name tables, ids and key ids, never a
/// secret, a row's content or a connection setting.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target already holds data: a copy goes only into a new, empty database.
    #[error(
        "the target database is not empty (table {table} has rows): migrate-store copies only \
         into a new, empty database"
    )]
    TargetNotEmpty { table: &'static str },
    /// A database's schema is not the one this build copies: a table or column it does not
    /// know, or one missing (`side`: `source` or `target`).
    #[error(
        "the {side} database's table {table} is not the one this build of Clarion copies \
         (different columns, missing, or unknown)"
    )]
    SchemaMismatch { side: &'static str, table: String },
    /// A webhook endpoint secret in the source is sealed under a key the source's key ring
    /// lacks.
    #[error(
        "a webhook endpoint secret in the source is sealed under secret key {key_id}, which is \
         not configured: set that key as CLARION_SECRET_KEY or in CLARION_PREVIOUS_SECRET_KEYS \
         (a SQLite source's key file beside the database is read as well)"
    )]
    SecretKeyMissing { key_id: String },
    /// A webhook endpoint secret in the source does not open with the key that sealed it
    /// (altered, truncated, or moved from another endpoint's row).
    #[error(
        "the secret of webhook endpoint {endpoint_id} in the source does not open (damaged); \
         rotate or delete that endpoint's secret on the source, then copy again"
    )]
    SecretDoesNotOpen { endpoint_id: i64 },
    /// An organisation's eligibility hook secret in the source does not open with the key
    /// that sealed it.
    #[error(
        "the eligibility hook secret of organisation {org_id} in the source does not open \
         (damaged); rotate it on the source (PATCH /v1/organization), then copy again"
    )]
    HookSecretDoesNotOpen { org_id: i64 },
    /// The rows counted in the source, copied and counted in the target differ.
    #[error(
        "table {table}: {in_source} rows in the source, {copied} copied, {in_target} in the \
         target"
    )]
    CountMismatch {
        table: &'static str,
        in_source: u64,
        copied: u64,
        in_target: u64,
    },
    /// A database error while reading or writing.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoreError {
    /// Whether trying again later may work: the database could not be reached, a
    /// connection was lost or killed, the server is restarting, or the transaction was
    /// chosen as a deadlock or serialisation victim. Background loops wait these out with
    /// backoff ([`crate::retry`]); the API answers them 503.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A backend's error, kept opaque.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for store calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
