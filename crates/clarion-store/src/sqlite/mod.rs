//! The SQLite backend (the embedded default).

mod endpoints;
mod orgs;
mod outbox;
mod sequences;

pub use endpoints::MAX_SIGNING_SECRETS;
pub use orgs::{Organization, OrganizationPatch};
pub use outbox::Recipients;
pub use sequences::{
    Assistant, ConsentRecord, EncounterRow, InsertSequenceError, NewSequence, OPT_OUT_REASON,
    RequestedEncounter, SequenceClaim, SequenceEvent, SequenceRow, SequenceUpdate, Suppression,
    SuppressionChange, TemplateVersion, Unsuppressed,
};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};

use crate::public_id::SECRET_LEN;
use crate::{IdCodec, OrgId, PublicIds, Result, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

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

/// A write transaction. SQLite transactions here begin `IMMEDIATE`, taking the write lock up
/// front, so two writers queue on the busy timeout instead of failing on a lock upgrade.
///
/// SQLite allows one writer at a time, and its busy handler waits by sleeping (up to 100 ms a
/// try), which wrecks tail latency when this process's own writers collide. So writers in
/// this process queue on an async mutex first and reach SQLite one at a time; the busy
/// timeout only arbitrates with other processes (`clarion org create` beside `serve`).
#[derive(Debug)]
pub struct Tx {
    pub(crate) inner: Transaction<'static, Sqlite>,
    _writer: tokio::sync::OwnedMutexGuard<()>,
}

impl Tx {
    /// Makes the transaction's writes durable.
    pub async fn commit(self) -> Result<()> {
        self.inner.commit().await.map_err(StoreError::from)
    }

    /// Discards the transaction's writes.
    pub async fn rollback(self) -> Result<()> {
        self.inner.rollback().await.map_err(StoreError::from)
    }
}

impl Store {
    /// Opens (creating it if missing) the database at `url` and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Like [`Store::connect`], with options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Self> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedUrl);
        }
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout)
            // A 16 MiB page cache per connection keeps the hot part of the queue in memory.
            .pragma("cache_size", "-16384")
            // Statement journals (the undo log of one multi-row statement inside a
            // transaction) stay in memory instead of spilling to a temporary file: the
            // batched writes touch hundreds of pages per statement.
            .pragma("temp_store", "memory")
            // Checkpoints normally run in the background (see `spawn_checkpointer`); a commit
            // checkpoints itself only if the write-ahead log grows past this many pages.
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES);
        // One connection does every write: its page cache stays valid from one transaction to
        // the next (a connection's cache is dropped whenever another connection has written),
        // which at a few hundred thousand rows saves more reads than anything else. Readers
        // use the other pool.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let ids = IdCodec::new(deployment_secret(&writer).await?);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .connect_with(connect)
            .await?;
        spawn_checkpointer(pool.clone());
        Ok(Self {
            pool,
            writer,
            write_lock: Arc::default(),
            ids,
        })
    }

    /// The ids as organisation `org` sees them (see [`crate::public_id`]).
    pub fn public_ids(&self, org: OrgId) -> PublicIds {
        self.ids.for_org(org)
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        let writer = self.write_lock.clone().lock_owned().await;
        let inner = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Tx {
            inner,
            _writer: writer,
        })
    }

    /// Checks that the database answers (for health checks).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// The deployment secret: drawn from the operating system's generator by whichever process
/// starts first, then read by every later start and every other node (`INSERT OR IGNORE`
/// under SQLite's write lock, so two first starts agree on one).
async fn deployment_secret(writer: &sqlx::SqlitePool) -> Result<[u8; SECRET_LEN]> {
    let candidate: [u8; SECRET_LEN] = rand::random();
    sqlx::query("INSERT OR IGNORE INTO deployment_secret (id, id_key) VALUES (1, ?)")
        .bind(candidate.as_slice())
        .execute(writer)
        .await?;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT id_key FROM deployment_secret WHERE id = 1")
        .fetch_one(writer)
        .await?;
    stored
        .try_into()
        .map_err(|_| StoreError::Corrupt("deployment secret"))
}

/// Write-ahead-log pages (4 KiB each) past which a committing writer runs the checkpoint
/// itself, as a backstop for the background checkpointer. The log only starts over when no
/// reader still uses it, which a busy dispatcher rarely allows, so it grows to this size under
/// load (about 200 MB) and commits would otherwise run checkpoints once it got there.
const WAL_AUTOCHECKPOINT_PAGES: &str = "50000";

/// How often the background checkpointer copies the write-ahead log into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Copies committed pages from the write-ahead log into the database file on a connection of
/// its own, so that writers do not: with SQLite's default, the commit that crosses 1,000 WAL
/// pages runs the checkpoint (writes and an fsync of the database) while holding the write
/// lock. `PASSIVE` never blocks readers or writers; it copies what it can and the next
/// round continues. A page changed by many transactions between two rounds is copied once.
/// Stops when the pool is closed.
fn spawn_checkpointer(pool: sqlx::SqlitePool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                break;
            }
            match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                Ok(_) => {}
                Err(sqlx::Error::PoolClosed) => break,
                Err(error) => tracing::warn!(error = %error, "background WAL checkpoint failed"),
            }
        }
    });
}

/// SQLite's limit on bound parameters in one statement (since 3.32).
const MAX_PARAMETERS: usize = 32_766;

/// How many rows of `columns` parameters fit in one multi-row statement.
fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMETERS / columns.max(1)).min(4_000)
}

/// `(?, ?, …), (?, ?, …), …`: placeholders for `rows` rows of `columns` values, for
/// multi-row `VALUES` statements. Binding values directly costs less than passing a JSON
/// array through `json_each`, which SQLite must parse again.
fn value_rows(columns: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::{IdKind, OrgId, Store};

    #[tokio::test]
    async fn public_ids_survive_a_restart_and_differ_between_databases() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let first = Store::connect(&url).await.unwrap();
        let before = first.public_ids(OrgId(1)).encode(IdKind::Sequence, 42);
        first.close().await;
        let again = Store::connect(&url).await.unwrap();
        assert_eq!(
            again.public_ids(OrgId(1)).encode(IdKind::Sequence, 42),
            before
        );
        // A second process opening the same database reads the same secret.
        let beside = Store::connect(&url).await.unwrap();
        assert_eq!(
            beside.public_ids(OrgId(1)).encode(IdKind::Sequence, 42),
            before
        );
        let other_url = format!("sqlite://{}", dir.path().join("b.db").display());
        let other = Store::connect(&other_url).await.unwrap();
        assert_ne!(
            other.public_ids(OrgId(1)).encode(IdKind::Sequence, 42),
            before
        );
    }
}
