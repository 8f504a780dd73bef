//! How to open the store.

use std::time::Duration;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the pool. SQLite has one writer at a time; readers run alongside it.
    pub max_connections: u32,
    /// How long a writer waits for the write lock before failing.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(10),
        }
    }
}
