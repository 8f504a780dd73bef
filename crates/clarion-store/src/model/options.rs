//! How to open the store.

use std::time::Duration;

use crate::secret_keys::SecretKeys;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the pool. SQLite has one writer at a time; readers run alongside it.
    /// On PostgreSQL every query and transaction of the node draws from it (the wake-up
    /// listener has one connection of its own besides).
    pub max_connections: u32,
    /// How long a writer waits for the write lock before failing.
    pub busy_timeout: Duration,
    /// PostgreSQL: how long a query waits for a connection from the pool (or for a new one
    /// to be opened) before it fails as [`crate::StoreError::Unavailable`]: what an API
    /// request waits at most while the database is away before it is answered 503.
    pub acquire_timeout: Duration,
    /// PostgreSQL: whether a commit that made work due for other nodes sends a wake-up
    /// (`NOTIFY`, see [`crate::Store::wakeups`]). Off, the other nodes find the work at
    /// their next poll.
    pub notify: bool,
    /// The key ring that seals webhook endpoint secrets. Required for PostgreSQL; on SQLite,
    /// `None` reads (or on the first start draws) the key file beside the database.
    pub secret_keys: Option<SecretKeys>,
    /// Whether connecting re-seals, under the ring's current key, the secrets stored under an
    /// earlier key (and refuses to start when one is sealed under a key the ring lacks).
    /// `false` only for a database opened to be read, not served: the source of
    /// `clarion migrate-store`, which must stay exactly as it was (its own nodes may be
    /// started on it again with the key they had).
    pub reseal_secrets: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(5),
            notify: true,
            secret_keys: None,
            reseal_secrets: true,
        }
    }
}
