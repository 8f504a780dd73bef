//! How to open the store.

use std::time::Duration;

use crate::secret_keys::SecretKeys;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the pool. SQLite has one writer at a time; readers run alongside it.
    pub max_connections: u32,
    /// How long a writer waits for the write lock before failing.
    pub busy_timeout: Duration,
    /// The key ring that seals webhook endpoint secrets. Required for PostgreSQL; on SQLite,
    /// `None` reads (or on the first start draws) the key file beside the database.
    pub secret_keys: Option<SecretKeys>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(10),
            secret_keys: None,
        }
    }
}
