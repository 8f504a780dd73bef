//! The PostgreSQL backend: several Clarion nodes on one database, under READ COMMITTED.
//!
//! SQLite gets the store's concurrency contract for free (one writer at a time); here every
//! read-then-write says how it holds across nodes (ARCHITECTURE.md, "API boundary: the store"):
//!
//! - **Claims** are conditional `UPDATE`s whose `WHERE` re-checks the claimable state, or rows
//!   picked with `FOR UPDATE SKIP LOCKED` (a row another node is changing is skipped; one it
//!   changed and committed is re-checked against the new version). A delivery's lease is
//!   written by the statement that takes it.
//! - **Contact checks and suppression** take a transaction-scoped advisory lock per
//!   (organisation, number) ([`lock_contacts`]): `is_suppressed`, `are_suppressed` and
//!   `contacts_since` take it, and so do `suppress`/`unsuppress`, so a cap check and the
//!   contact it allows, or an opt-out and a contact, never interleave.
//! - **Provider slots**: `provider_slots_in_use` takes an advisory lock per channel before it
//!   counts, held to commit, so the count and the claim that follows are one step across nodes.
//! - **Ids in commit order** for keyset paging ([`IdOrder`]): identities are drawn before
//!   commit, so a row can commit with an id below one a client already paged past. Every
//!   transaction that inserts into a paged table holds a *shared* advisory lock for that table
//!   from before the insert to its commit; a paging read first takes the same lock
//!   *exclusively* (in a transaction of its own), which waits until every insert in flight has
//!   committed or rolled back and holds new ones back for the length of one read. Writers never
//!   wait for each other, only briefly for a reader; and whatever id a read returns, every
//!   smaller id that will ever exist is already visible to it.

mod caller_numbers;
mod capacity;
mod dashboard;
mod endpoints;
mod listen;
mod orgs;
mod outbox;
mod privacy;
mod recovery;
mod sequences;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use crate::public_id::SECRET_LEN;
use crate::secret_keys::SecretKeys;
use crate::sqlite::migrate_error;
use crate::wakeup::{Requested, Wakeup, Wakeups};
use crate::{Channel, OrgId, Result, StoreError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL backend: one pool, sized by [`StoreOptions::max_connections`], and the
/// wake-up listener's connection when the node listens ([`PgStore::wakeups`]).
#[derive(Clone)]
pub(crate) struct PgStore {
    pub(crate) pool: sqlx::PgPool,
    /// Seals and opens webhook endpoint secrets (the same ring on every node).
    pub(crate) keys: SecretKeys,
    /// Sends the wake-ups commits ask for; `None` when they send none
    /// ([`StoreOptions::notify`]).
    pub(crate) notifier: Option<Arc<listen::Notifier>>,
    /// The wake-up listener, started by the first subscription.
    hub: Arc<listen::Hub>,
}

/// Written by hand: the pool's options hold the connection settings (user, password), which
/// never appear in logs.
impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("connections", &self.pool.size())
            .field("closed", &self.pool.is_closed())
            .finish_non_exhaustive()
    }
}

/// A write transaction (READ COMMITTED, the server's default).
pub(crate) struct PgTx {
    pub(crate) inner: Transaction<'static, Postgres>,
    /// The store's notifier, when it sends wake-ups ([`StoreOptions::notify`]).
    notifier: Option<Arc<listen::Notifier>>,
    /// The wake-ups asked for, sent once the transaction has committed.
    wake: Requested,
}

impl std::fmt::Debug for PgTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTx").finish_non_exhaustive()
    }
}

impl PgTx {
    /// Commits; then the wake-ups asked for go to the other nodes (batched by the
    /// notifier, after the commit: see [`listen::Notifier`] for why not inside it).
    pub(crate) async fn commit(self) -> Result<()> {
        let Self {
            inner,
            notifier,
            wake,
        } = self;
        inner.commit().await?;
        if let Some(notifier) = notifier {
            notifier.request(wake);
        }
        Ok(())
    }

    /// Asks for a wake-up of the other nodes' loops once this transaction commits.
    pub(crate) fn wake_nodes(&mut self, wakeup: Wakeup) {
        if self.notifier.is_some() {
            self.wake.add(wakeup);
        }
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        Ok(self.inner.rollback().await?)
    }
}

/// The namespaces of the advisory locks this backend takes (the first key of the two-key
/// form), so that the kinds never collide.
const LOCK_ID_ORDER: i32 = 1;
const LOCK_CONTACT: i32 = 2;
const LOCK_PROVIDER_SLOTS: i32 = 3;

/// The tables read by keyset cursors in id order (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub(crate) enum IdOrder {
    Endpoints = 1,
    Assistants = 2,
    Templates = 3,
    Sequences = 4,
    SequenceEvents = 5,
    /// `webhook_messages`: the reports pull API pages through them.
    Messages = 6,
    /// `access_log`: `GET /v1/audit-log` pages through it.
    AccessLog = 7,
}

impl PgStore {
    /// Connects to `url` (`postgres://` or `postgresql://`) and applies pending migrations
    /// (sqlx's migrator holds an advisory lock while it runs: nodes starting together apply
    /// them once).
    pub(crate) async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        // Every node seals with the same key, so none may draw its own.
        let keys = options
            .secret_keys
            .clone()
            .ok_or(StoreError::SecretKeyRequired)?;
        // The parse error could quote the URL (and its password): it is not passed on.
        let connect = PgConnectOptions::from_str(url).map_err(|_| StoreError::UnsupportedUrl)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            // A query waits this long for a connection, then fails as unavailable (the API
            // answers 503 rather than hold requests while the database is away).
            .acquire_timeout(options.acquire_timeout)
            // Every connection taken from the pool is pinged first (sqlx's default, named
            // here because it matters): after a database restart or a failover the idle
            // connections are dead, and each is dropped and replaced there instead of failing
            // the query that would have used it.
            .test_before_acquire(true)
            // Connections are renewed now and then, so that after a failover behind a
            // virtual address none stays pinned to a server that no longer leads.
            .max_lifetime(Duration::from_secs(30 * 60))
            .idle_timeout(Duration::from_secs(10 * 60))
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&pool).await.map_err(migrate_error)?;
        let store = Self {
            notifier: options
                .notify
                .then(|| Arc::new(listen::Notifier::new(pool.clone()))),
            pool,
            keys,
            hub: Arc::new(listen::Hub::new(connect)),
        };
        if options.reseal_secrets {
            store.reseal_endpoint_secrets().await?;
            store.reseal_hook_secrets().await?;
        }
        Ok(store)
    }

    pub(crate) async fn begin(&self) -> Result<PgTx> {
        Ok(PgTx {
            inner: self.pool.begin().await?,
            notifier: self.notifier.clone(),
            wake: Requested::default(),
        })
    }

    /// The wake-ups other nodes send (the listener starts with the first subscription).
    pub(crate) fn wakeups(&self) -> Wakeups {
        self.hub.subscribe()
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) async fn close(&self) {
        self.hub.stop();
        if let Some(notifier) = &self.notifier {
            notifier.stop();
        }
        self.pool.close().await;
    }

    /// The deployment secret: the first node to start draws it (`ON CONFLICT DO NOTHING`: two
    /// first starts agree on one), every other reads it.
    pub(crate) async fn deployment_secret(&self) -> Result<[u8; SECRET_LEN]> {
        let candidate: [u8; SECRET_LEN] = rand::random();
        sqlx::query(
            "INSERT INTO deployment_secret (id, id_key) VALUES (1, $1) ON CONFLICT DO NOTHING",
        )
        .bind(candidate.as_slice())
        .execute(&self.pool)
        .await?;
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT id_key FROM deployment_secret WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        stored
            .try_into()
            .map_err(|_| StoreError::Corrupt("deployment secret"))
    }

    /// A transaction for one keyset read of `table`: it waits until every insert into the
    /// table in flight has ended, so the page it reads never has a gap that fills later.
    pub(crate) async fn ordered_read(&self, table: IdOrder) -> Result<PgTx> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_ID_ORDER)
            .bind(table as i32)
            .execute(&mut *tx.inner)
            .await?;
        Ok(tx)
    }
}

/// Called by a transaction before it draws ids in `table`: held (shared) until it ends.
pub(crate) async fn inserting(tx: &mut PgTx, table: IdOrder) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
        .bind(LOCK_ID_ORDER)
        .bind(table as i32)
        .execute(&mut *tx.inner)
        .await?;
    Ok(())
}

/// The lock key of one (organisation, number): the first four bytes of a SHA-256, the same on
/// every node. Two numbers sharing a key only wait for each other.
fn contact_key(org: OrgId, phone_number: &str) -> i32 {
    let digest = Sha256::new()
        .chain_update(org.0.to_be_bytes())
        .chain_update(phone_number.as_bytes())
        .finalize();
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Serialises contact checks and suppression changes for these (organisation, number)
/// pairs until the transaction ends. Keys are taken in ascending order, so two transactions
/// locking overlapping sets in one call never wait on each other in a cycle.
pub(crate) async fn lock_contacts(tx: &mut PgTx, numbers: &[(OrgId, &str)]) -> Result<()> {
    let mut keys: Vec<i32> = numbers
        .iter()
        .map(|(org, phone)| contact_key(*org, phone))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    // A function scan yields the array in order, and the locks are taken row by row.
    sqlx::query("SELECT pg_advisory_xact_lock($1, k) FROM UNNEST($2::int4[]) AS k")
        .bind(LOCK_CONTACT)
        .bind(&keys)
        .execute(&mut *tx.inner)
        .await?;
    Ok(())
}

/// Serialises slot counting and claiming on one provider channel until the transaction ends.
pub(crate) async fn lock_provider_slots(tx: &mut PgTx, channel: Channel) -> Result<()> {
    let key = match channel {
        Channel::Call => 1,
        Channel::Sms => 2,
    };
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(LOCK_PROVIDER_SLOTS)
        .bind(key)
        .execute(&mut *tx.inner)
        .await?;
    Ok(())
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Raw ids of typed ids, for `= ANY($1)` and `UNNEST`.
fn raw_ids<Id: Copy + Into<i64>>(ids: &[Id]) -> Vec<i64> {
    ids.iter().map(|id| (*id).into()).collect()
}

impl PgStore {
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
