//! The SQLite backend (the embedded default).

mod caller_numbers;
mod capacity;
mod dashboard;
mod endpoints;
mod orgs;
mod outbox;
mod privacy;
mod recovery;
mod sequences;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};

use crate::public_id::SECRET_LEN;
use crate::secret_keys::{SecretKey, SecretKeys, key_file_beside};
use crate::{Result, StoreError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite backend: a pool for reads and one connection that writes.
#[derive(Debug, Clone)]
pub(crate) struct SqliteStore {
    /// Connections for reads outside write transactions.
    pub(crate) pool: sqlx::SqlitePool,
    /// The one connection that writes (see `connect`).
    writer: sqlx::SqlitePool,
    /// Serialises this process's write transactions (see [`SqliteTx`]).
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Seals and opens webhook endpoint secrets.
    pub(crate) keys: SecretKeys,
}

/// A write transaction. SQLite transactions here begin `IMMEDIATE`, taking the write lock up
/// front, so two writers queue on the busy timeout instead of failing on a lock upgrade.
///
/// SQLite allows one writer at a time, and its busy handler waits by sleeping (up to 100 ms a
/// try), which wrecks tail latency when this process's own writers collide. So writers in
/// this process queue on an async mutex first and reach SQLite one at a time; the busy
/// timeout only arbitrates with other processes (`clarion org create` beside `serve`).
#[derive(Debug)]
pub(crate) struct SqliteTx {
    pub(crate) inner: Transaction<'static, Sqlite>,
    _writer: tokio::sync::OwnedMutexGuard<()>,
}

impl SqliteTx {
    pub(crate) async fn commit(self) -> Result<()> {
        Ok(self.inner.commit().await?)
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        Ok(self.inner.rollback().await?)
    }
}

/// Whether `url` names a database that lives only in memory (no file to put a key beside).
fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// The file a `sqlite:` URL names; `None` for another scheme, a URL that does not parse, or
/// a database in memory.
pub(crate) fn database_file(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") || is_in_memory(url) {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_owned())
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url` (`sqlite://PATH`) and applies
    /// pending migrations.
    pub(crate) async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
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
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            // Freed space in a page is zeroed (no extra I/O in `FAST` mode), so a re-sealed or
            // deleted endpoint secret does not linger in the file's free space.
            .pragma("secure_delete", "FAST");
        let keys = match &options.secret_keys {
            Some(keys) => keys.clone(),
            None if is_in_memory(url) => SecretKeys::new(SecretKey::generate()),
            None => key_file_beside(connect.get_filename())?,
        };
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
        MIGRATOR.run(&writer).await.map_err(migrate_error)?;
        // The checkpointer's own connection waits only briefly for locks: its truncating
        // checkpoint holds the write lock while it waits for readers, and must never keep a
        // writer waiting for long.
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .connect_lazy_with(connect.clone().busy_timeout(CHECKPOINT_BUSY_TIMEOUT));
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .connect_with(connect)
            .await?;
        spawn_checkpointer(pool.clone(), checkpointer);
        let store = Self {
            pool,
            writer,
            write_lock: Arc::default(),
            keys,
        };
        if options.reseal_secrets {
            store.reseal_endpoint_secrets().await?;
            store.reseal_hook_secrets().await?;
        }
        Ok(store)
    }

    pub(crate) async fn begin(&self) -> Result<SqliteTx> {
        let writer = self.write_lock.clone().lock_owned().await;
        let inner = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok(SqliteTx {
            inner,
            _writer: writer,
        })
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// The deployment secret: drawn from the operating system's generator by whichever
    /// process starts first, then read by every later start and every other node (`INSERT OR
    /// IGNORE` under SQLite's write lock, so two first starts agree on one).
    pub(crate) async fn deployment_secret(&self) -> Result<[u8; SECRET_LEN]> {
        let candidate: [u8; SECRET_LEN] = rand::random();
        sqlx::query("INSERT OR IGNORE INTO deployment_secret (id, id_key) VALUES (1, ?)")
            .bind(candidate.as_slice())
            .execute(&self.writer)
            .await?;
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT id_key FROM deployment_secret WHERE id = 1")
                .fetch_one(&self.writer)
                .await?;
        stored
            .try_into()
            .map_err(|_| StoreError::Corrupt("deployment secret"))
    }
}

/// Driver errors become the store's: the kinds a caller acts on get their own variant, the
/// driver's error stays as the source (for logs), never in the match.
impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db)
                if matches!(
                    db.kind(),
                    sqlx::error::ErrorKind::UniqueViolation
                        | sqlx::error::ErrorKind::ForeignKeyViolation
                ) =>
            {
                StoreError::Conflict
            }
            _ if is_unavailable(&error) => StoreError::Unavailable(Box::new(error)),
            _ => StoreError::Database(Box::new(error)),
        }
    }
}

/// Whether a driver error is transient: trying again later may work.
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        // PostgreSQL's transient answers: a serialisation failure or deadlock victim (the
        // transaction was rolled back and may simply be run again); the server shutting
        // down, crashed or still starting (57P01 "terminating connection due to
        // administrator command", which `pg_terminate_backend` and a fast shutdown send,
        // 57P02, 57P03); too many connections for now (53300); and the connection
        // exceptions (class 08). SQLite never answers these codes.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            matches!(
                code.as_ref(),
                "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
            ) || code.starts_with("08")
        }),
        // The connection failed or was lost (refused, reset, closed mid-answer), no
        // connection could be had in time, or the TLS handshake failed.
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// A migration that failed because the database went away is [`StoreError::Unavailable`]
/// (the start-up retries it); any other failure is [`StoreError::Migrate`].
pub(crate) fn migrate_error(error: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError;
    match error {
        MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _)
            if is_unavailable(&inner) =>
        {
            StoreError::Unavailable(Box::new(inner))
        }
        other => StoreError::Migrate(Box::new(other)),
    }
}

/// Write-ahead-log pages (4 KiB each) past which a committing writer runs the checkpoint
/// itself, as a backstop for the background checkpointer. The log only starts over when no
/// reader still uses it, which a busy dispatcher rarely allows, so it grows to this size under
/// load (about 200 MB) and commits would otherwise run checkpoints once it got there.
const WAL_AUTOCHECKPOINT_PAGES: &str = "50000";

/// How often the background checkpointer copies the write-ahead log into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Rounds in a row without a commit before the log counts as at rest and is truncated: a
/// second, so that the pauses of a busy database (between bursts, between a benchmark's
/// phases) do not truncate a log the next burst must grow again (each commit that grows the
/// file also makes its fsync record the new size).
const ROUNDS_AT_REST: u32 = 5;

/// How long the checkpointer's connection waits for a lock before giving up until its next
/// round.
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(20);

/// Copies committed pages from the write-ahead log into the database file on a connection of
/// its own, so that writers do not: with SQLite's default, the commit that crosses 1,000 WAL
/// pages runs the checkpoint (writes and an fsync of the database) while holding the write
/// lock. `PASSIVE` never blocks readers or writers; it copies what it can and the next
/// round continues. A page changed by many transactions between two rounds is copied once.
///
/// When rounds find the whole log copied and no frame added for [`ROUNDS_AT_REST`] rounds in
/// a row (no commit for a second: the database is at rest), it truncates the log to zero bytes
/// (`TRUNCATE`), so that the file at rest is empty rather than as large as the last burst
/// made it. That checkpoint waits at most [`CHECKPOINT_BUSY_TIMEOUT`] for readers and
/// writers and otherwise tries again at the next idle round. Stops when `pool` is closed.
fn spawn_checkpointer(pool: sqlx::SqlitePool, checkpointer: sqlx::SqlitePool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_log_frames = None;
        let mut idle_rounds = 0u32;
        loop {
            tick.tick().await;
            if pool.is_closed() {
                checkpointer.close().await;
                break;
            }
            // (busy, frames in the log, frames copied into the database)
            let passive = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&checkpointer)
                .await;
            match passive {
                Ok((busy, log, copied)) => {
                    let copied_all = busy == 0 && log > 0 && copied == log;
                    idle_rounds = if copied_all && last_log_frames == Some(log) {
                        idle_rounds.saturating_add(1)
                    } else {
                        0
                    };
                    if idle_rounds >= ROUNDS_AT_REST {
                        // Busy (a reader or writer arrived): the next idle round tries again.
                        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                            .execute(&checkpointer)
                            .await
                        {
                            tracing::debug!(error = %error, "WAL truncation deferred");
                        }
                    }
                    last_log_frames = Some(log);
                }
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

impl SqliteStore {
    /// The connect-time re-sealing of one kind of stored secret: `stored` (read by the
    /// caller) re-sealed under the current key and written with `update` (parameters: the
    /// sealed text, the key id, the row id, the key id read), which changes a row only if it
    /// still holds what was read, so two nodes starting together do not clash.
    pub(crate) async fn reseal_rows(
        &self,
        stored: Vec<crate::secret_keys::StoredSecret>,
        update: &str,
        what: &str,
    ) -> Result<()> {
        if stored.is_empty() {
            return Ok(());
        }
        let resealed = self.keys.reseal(stored)?;
        let mut tx = self.begin().await?;
        for secret in &resealed {
            sqlx::query(update)
                .bind(&secret.sealed.text)
                .bind(&secret.sealed.key_id)
                .bind(secret.id)
                .bind(&secret.previous_key_id)
                .execute(&mut *tx.inner)
                .await?;
        }
        tx.commit().await?;
        let key_id = self.keys.current().id();
        tracing::info!(count = resealed.len(), %key_id, what, "re-sealed secrets under the current secret key");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::str::FromStr;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use crate::{EndpointId, IdKind, OrgId, Store};

    /// Migrations 0022 and 0023 on a database the schema before them filled: each attempt
    /// gets its delivery's endpoint, and the ended encounters of a sequence whose report is
    /// stored lose their copy of the report object, while one that ended after its sequence,
    /// and those of sequences without a stored report, keep theirs.
    #[tokio::test]
    async fn migrations_0022_and_0023_move_what_the_old_schema_stored() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let connect = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect)
            .await
            .unwrap();
        let old_schema = sqlx::migrate::Migrator {
            migrations: super::MIGRATOR
                .migrations
                .iter()
                .filter(|migration| migration.version < 22)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
            ..super::MIGRATOR
        };
        old_schema.run(&pool).await.unwrap();
        for statement in [
            "INSERT INTO organizations (id, name, created_at) VALUES (1, 'old', 0)",
            "INSERT INTO webhook_endpoints (id, org_id, url, created_at, updated_at) \
             VALUES (1, 1, 'https://a.example/', 0, 0), (2, 1, 'https://b.example/', 0, 0)",
            "INSERT INTO assistants (id, org_id, name, channel, config, custom_fields, created_at, updated_at) \
             VALUES (1, 1, 'caller', 'call', '{}', '[]', 0, 0)",
            "INSERT INTO sequence_templates (id, org_id, name, current_version, created_at, updated_at) \
             VALUES (1, 1, 't', 1, 0, 0)",
            "INSERT INTO sequence_template_versions (id, template_id, version, definition, created_at) \
             VALUES (1, 1, 1, '{}', 0)",
            // 1: ended and reported; 2: ended, no stored report; 3: still running.
            "INSERT INTO sequences (id, org_id, template_id, template_version_id, phone_number, \
             contact, variables, status, state, created_at, last_updated, ended_at) VALUES \
             (1, 1, 1, 1, '+15550101', '{}', '{}', 'ended', '{}', 0, 100, 100), \
             (2, 1, 1, 1, '+15550102', '{}', '{}', 'ended', '{}', 0, 100, 100), \
             (3, 1, 1, 1, '+15550103', '{}', '{}', 'active', '{}', 0, 50, NULL)",
            // Sequence 1's second encounter ended after the sequence (a call left to finish).
            "INSERT INTO encounters (id, org_id, sequence_id, step, attempt, channel, assistant_id, \
             phone_number, status, report, created_at, ended_at) VALUES \
             (1, 1, 1, 0, 1, 'call', 1, '+15550101', 'ended', '{\"transcript\":\"a\"}', 0, 50), \
             (2, 1, 1, 1, 1, 'call', 1, '+15550101', 'ended', '{\"transcript\":\"b\"}', 0, 150), \
             (3, 1, 2, 0, 1, 'call', 1, '+15550102', 'ended', '{\"transcript\":\"c\"}', 0, 50), \
             (4, 1, 3, 0, 1, 'call', 1, '+15550103', 'ended', '{\"transcript\":\"d\"}', 0, 50)",
            "INSERT INTO webhook_messages (id, org_id, webhook_id, event_type, sequence_id, is_test, body, created_at) \
             VALUES (1, 1, 'msg_old', 'sequence.ended', 1, 0, X'7B7D', 100)",
            "INSERT INTO webhook_deliveries (id, org_id, message_id, endpoint_id, status, created_at, updated_at) \
             VALUES (1, 1, 1, 2, 'delivered', 100, 100), (2, 1, 1, 1, 'failed', 100, 100)",
            "INSERT INTO webhook_attempts (id, delivery_id, attempt_number, attempted_at, status_code, duration_ms) \
             VALUES (1, 1, 1, 110, 204, 7), (2, 2, 1, 111, 500, 9), (3, 2, 2, 120, NULL, 30)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let store = Store::connect(&url).await.unwrap();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(SqliteConnectOptions::from_str(&url).unwrap())
            .await
            .unwrap();
        let endpoints: Vec<Option<i64>> =
            sqlx::query_scalar("SELECT endpoint_id FROM webhook_attempts ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(endpoints, [Some(2), Some(1), Some(1)]);
        let reports: Vec<Option<String>> =
            sqlx::query_scalar("SELECT report FROM encounters ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        let kept: Vec<bool> = reports.iter().map(Option::is_some).collect();
        assert_eq!(kept, [false, true, true, true]);
        let stats = store
            .endpoint_attempt_stats(OrgId(1), EndpointId(1), 0)
            .await
            .unwrap();
        assert_eq!((stats.attempts, stats.succeeded), (2, 0));
        assert_eq!(stats.last_failure_at, Some(120));
    }

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

    /// Secrets stored before sealing existed (`key_id` NULL, the secret in the clear) are
    /// sealed by the next start, and the database keeps no clear copy of them.
    #[tokio::test]
    async fn secrets_stored_in_the_clear_are_sealed_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("old.db");
        let url = format!("sqlite://{}", database.display());
        let store = Store::connect(&url).await.unwrap();
        let org = store.create_org("org", 0).await.unwrap().id;
        let hook = store
            .create_endpoint(
                org,
                "https://hook.example/",
                "",
                crate::DEFAULT_EVENT_TYPES,
                "whsec_Zmlyc3Q=",
                0,
            )
            .await
            .unwrap();
        let legacy = "whsec_bGVnYWN5LXNlY3JldC1pbi10aGUtY2xlYXI=";
        sqlx::query(
            "INSERT INTO webhook_endpoint_secrets (endpoint_id, sealed_secret, key_id, created_at) \
             VALUES (?, ?, NULL, 1)",
        )
        .bind(hook.id.0)
        .bind(legacy)
        .execute(&store.sqlite().pool)
        .await
        .unwrap();
        // Before the pass, the clear secret already signs (and is the newest current one).
        assert_eq!(
            store.current_secret(org, hook.id).await.unwrap().as_deref(),
            Some(legacy)
        );
        store.close().await;

        let again = Store::connect(&url).await.unwrap();
        let stored: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT sealed_secret, key_id FROM webhook_endpoint_secrets")
                .fetch_all(&again.sqlite().pool)
                .await
                .unwrap();
        assert_eq!(stored.len(), 2);
        for (text, key_id) in &stored {
            assert!(!text.contains("bGVnYWN5"), "still in the clear");
            assert_eq!(
                key_id.as_deref(),
                Some(again.sqlite().keys.current().id().as_str())
            );
        }
        assert_eq!(
            again.current_secret(org, hook.id).await.unwrap().as_deref(),
            Some(legacy)
        );
        // The key that sealed them is the one in the file beside the database.
        let key_file = crate::secret_keys::key_file_path(&database);
        let key: crate::secret_keys::SecretKey =
            std::fs::read_to_string(key_file).unwrap().parse().unwrap();
        assert_eq!(&key, again.sqlite().keys.current());
    }
}
