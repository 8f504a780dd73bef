//! Wake-ups across nodes on PostgreSQL ([`crate::wakeup`]): the node's listener (`LISTEN` on
//! a connection of its own, each notification passed to the node's loops) and its notifier
//! (the `NOTIFY`s its commits asked for, sent in batches after those commits).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::PgStore;
use crate::retry::Outage;
use crate::wakeup::{CHANNEL, Requested, Wakeup, Wakeups};
use crate::{Result, StoreError};

/// How long the listener waits for its connection before it counts the database as away.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Wake-ups kept for a loop that has not read them yet; a loop further behind gets
/// [`Wakeup::Resync`] (it looks at everything).
const BUFFERED: usize = 64;

/// The listener of one store (shared by its clones), started by the first subscription and
/// stopped when the last clone of the store is gone or it is closed. (No `Debug`: the
/// connection settings hold the password.)
pub(crate) struct Hub {
    sender: broadcast::Sender<Wakeup>,
    connect: PgConnectOptions,
    task: OnceLock<JoinHandle<()>>,
}

impl Hub {
    pub(crate) fn new(connect: PgConnectOptions) -> Self {
        Self {
            sender: broadcast::channel(BUFFERED).0,
            connect,
            task: OnceLock::new(),
        }
    }

    /// A subscription; the first one starts the listener (so that it receives the
    /// listener's first [`Wakeup::Resync`]).
    pub(crate) fn subscribe(&self) -> Wakeups {
        let receiver = self.sender.subscribe();
        self.task
            .get_or_init(|| tokio::spawn(listen(self.connect.clone(), self.sender.clone())));
        Wakeups::new(Some(receiver))
    }

    pub(crate) fn stop(&self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Listens until aborted: (re)connects with backoff while the database is away, answers
/// [`Wakeup::Resync`] after each (re)connection (anything sent meanwhile was lost), then
/// passes each notification on.
async fn listen(connect: PgConnectOptions, sender: broadcast::Sender<Wakeup>) {
    // A pool of one, only so that the listener can reconnect (`PgListener` takes its new
    // connection from a pool); it never shares the node's pool, whose connections all stay
    // available to queries.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(CONNECT_TIMEOUT)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(connect);
    let mut outage = Outage::new("wake-up listener");
    loop {
        let error = match subscribed(&pool).await {
            Ok(mut listener) => {
                outage.succeeded();
                let _ = sender.send(Wakeup::Resync);
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            if let Some(wakeup) = Wakeup::from_payload(notification.payload()) {
                                let _ = sender.send(wakeup);
                            }
                        }
                        // The connection was lost and made again (and `LISTEN` with it).
                        Ok(None) => {
                            let _ = sender.send(Wakeup::Resync);
                        }
                        Err(error) => break StoreError::from(error),
                    }
                }
                // Dropping the listener gives its connection back; a dead one is closed.
            }
            Err(error) => error,
        };
        let wait = outage.failed(&error).unwrap_or(crate::retry::MAX_DELAY);
        tokio::time::sleep(wait).await;
    }
}

async fn subscribed(pool: &sqlx::PgPool) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// The shortest time between two `NOTIFY`s of one node: wake-ups asked for meanwhile go
/// together in the next one. It bounds what a busy node costs the database (each `NOTIFY`
/// is a transaction that takes PostgreSQL's notification lock at commit) while adding at most
/// this much to a wake-up's delay.
const NOTIFY_EVERY: Duration = Duration::from_millis(5);

/// Sends the wake-ups this node's commits asked for, after those commits and in batches,
/// never inside them.
///
/// Why not `NOTIFY` inside the transaction that made the work: PostgreSQL serialises the
/// commits of notifying transactions behind one lock held through the commit's WAL flush, so
/// they lose group commit. Measured (BENCHMARKS.md) with 16 writers committing one report per
/// transaction on a durable server: 561–647 commits/s with a `NOTIFY` in each transaction,
/// 943–1,334 without. Here the committing transaction pays an atomic flag; one task per node
/// sends at most one `NOTIFY` per [`NOTIFY_EVERY`] for everything asked since the last, in a
/// transaction of its own with `synchronous_commit` off (a wake-up needs no durability, so it
/// does not wait for a flush while it holds the lock). A node that dies between its commit
/// and the `NOTIFY` loses that wake-up; the others' polls find the work.
pub(crate) struct Notifier {
    pending: Arc<Mutex<Requested>>,
    ready: Arc<tokio::sync::Notify>,
    pool: sqlx::PgPool,
    task: OnceLock<JoinHandle<()>>,
}

impl Notifier {
    pub(crate) fn new(pool: sqlx::PgPool) -> Self {
        Self {
            pending: Arc::default(),
            ready: Arc::default(),
            pool,
            task: OnceLock::new(),
        }
    }

    /// Asks for `wake` to be sent (soon, with whatever else is asked meanwhile).
    pub(crate) fn request(&self, wake: Requested) {
        if wake.payloads().is_empty() {
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .merge(wake);
        self.task.get_or_init(|| {
            tokio::spawn(send_batches(
                self.pending.clone(),
                self.ready.clone(),
                self.pool.clone(),
            ))
        });
        self.ready.notify_one();
    }

    pub(crate) fn stop(&self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn send_batches(
    pending: Arc<Mutex<Requested>>,
    ready: Arc<tokio::sync::Notify>,
    pool: sqlx::PgPool,
) {
    loop {
        ready.notified().await;
        let wake = std::mem::take(
            &mut *pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let payloads = wake.payloads();
        if payloads.is_empty() {
            continue;
        }
        if let Err(error) = send(&pool, &payloads).await {
            // Lost: the other nodes find the work at their next poll. Not retried, so that
            // a database that is away costs no more than one try per request.
            tracing::debug!(error = %error, "sending a wake-up to the other nodes failed");
        }
        tokio::time::sleep(NOTIFY_EVERY).await;
    }
}

/// One `NOTIFY` per payload, in a transaction of their own that does not wait for its
/// commit to be flushed.
async fn send(pool: &sqlx::PgPool, payloads: &[&str]) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit TO OFF")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

impl PgStore {
    /// Asks for a wake-up of the other nodes after a statement that committed on its own made
    /// work due (sent by the [`Notifier`]; best effort, as every wake-up).
    pub(crate) fn notify_nodes(&self, wakeup: Wakeup) {
        if let Some(notifier) = &self.notifier {
            let mut wake = Requested::default();
            wake.add(wakeup);
            notifier.request(wake);
        }
    }
}
