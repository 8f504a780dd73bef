//! Wake-ups across nodes: work one node commits is started by some node at once, without
//! waiting for a poll.
//!
//! In one process the loops are woken in memory (the outbox's and the scheduler's notifies).
//! Several nodes on one PostgreSQL database learn of each other's work through
//! `LISTEN`/`NOTIFY` on one channel ([`CHANNEL`]): a transaction that made work due asks for a
//! wake-up ([`crate::Tx::wake_nodes`]; the outbox's writes ask by themselves), and once it has
//! committed, the node sends one `NOTIFY` per kind for everything asked since its last, at most
//! one every few milliseconds (`postgres::listen::Notifier`: a `NOTIFY` inside the committing
//! transaction would serialise the commits). Each node that runs loops listens on a connection
//! of its own
//! ([`crate::Store::wakeups`]), which reconnects with backoff after the database went away
//! and then answers [`Wakeup::Resync`]: anything sent meanwhile was lost, so every loop
//! looks again. Polling still covers due retries and expired leases.
//!
//! On SQLite one process owns the file, so nothing is sent and a [`Wakeups`] never fires.

use tokio::sync::broadcast;

/// The PostgreSQL channel every node listens on.
pub const CHANNEL: &str = "clarion_wake";

/// What a wake-up asks a node to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wakeup {
    /// Deliveries became due (reports queued, a retry asked for, an endpoint enabled): the
    /// webhook dispatcher.
    Deliveries,
    /// Sequences or encounters became due for the scheduler's loops (an enrollment, a
    /// cancel, pause or resume, a provider's callback on an API node).
    Scheduler,
    /// The listener (re)connected, or fell behind: wake-ups may have been lost, so every loop
    /// looks again.
    Resync,
}

impl Wakeup {
    /// The `NOTIFY` payload.
    pub(crate) fn payload(self) -> &'static str {
        match self {
            Wakeup::Deliveries => "deliveries",
            Wakeup::Scheduler => "scheduler",
            Wakeup::Resync => "resync",
        }
    }

    pub(crate) fn from_payload(payload: &str) -> Option<Self> {
        [Wakeup::Deliveries, Wakeup::Scheduler, Wakeup::Resync]
            .into_iter()
            .find(|kind| kind.payload() == payload)
    }

    /// Whether the webhook dispatcher should look again.
    pub fn for_dispatcher(self) -> bool {
        matches!(self, Wakeup::Deliveries | Wakeup::Resync)
    }

    /// Whether the scheduler's loops should look again.
    pub fn for_scheduler(self) -> bool {
        matches!(self, Wakeup::Scheduler | Wakeup::Resync)
    }
}

/// The wake-ups a transaction asked for, sent when it commits (at most one per kind).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Requested {
    deliveries: bool,
    scheduler: bool,
}

impl Requested {
    pub(crate) fn add(&mut self, wakeup: Wakeup) {
        match wakeup {
            Wakeup::Deliveries => self.deliveries = true,
            Wakeup::Scheduler => self.scheduler = true,
            Wakeup::Resync => {
                self.deliveries = true;
                self.scheduler = true;
            }
        }
    }

    /// Adds what `other` asked for.
    pub(crate) fn merge(&mut self, other: Requested) {
        self.deliveries |= other.deliveries;
        self.scheduler |= other.scheduler;
    }

    /// The payloads to send, none when nothing was asked for.
    pub(crate) fn payloads(self) -> Vec<&'static str> {
        let mut payloads = Vec::with_capacity(2);
        if self.deliveries {
            payloads.push(Wakeup::Deliveries.payload());
        }
        if self.scheduler {
            payloads.push(Wakeup::Scheduler.payload());
        }
        payloads
    }
}

/// A node's subscription to the wake-ups other nodes send ([`crate::Store::wakeups`]).
#[derive(Debug)]
pub struct Wakeups {
    receiver: Option<broadcast::Receiver<Wakeup>>,
}

impl Wakeups {
    pub(crate) fn new(receiver: Option<broadcast::Receiver<Wakeup>>) -> Self {
        Self { receiver }
    }

    /// The next wake-up. Never resolves on SQLite (nothing is sent), nor once the store is
    /// gone.
    pub async fn recv(&mut self) -> Wakeup {
        if let Some(receiver) = &mut self.receiver {
            match receiver.recv().await {
                Ok(wakeup) => return wakeup,
                // Some were dropped: whatever they said, look again at everything.
                Err(broadcast::error::RecvError::Lagged(_)) => return Wakeup::Resync,
                Err(broadcast::error::RecvError::Closed) => self.receiver = None,
            }
        }
        std::future::pending().await
    }

    /// Calls `wake` for every wake-up that `wanted` accepts, from a task of its own, until
    /// the answer is dropped: how a loop joins its in-memory notify to the other nodes'
    /// wake-ups.
    pub fn forward(
        mut self,
        wanted: fn(Wakeup) -> bool,
        wake: impl Fn() + Send + 'static,
    ) -> Forwarding {
        Forwarding(tokio::spawn(async move {
            loop {
                if wanted(self.recv().await) {
                    wake();
                }
            }
        }))
    }
}

/// A running [`Wakeups::forward`]; dropping it stops it.
#[derive(Debug)]
pub struct Forwarding(tokio::task::JoinHandle<()>);

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.0.abort();
    }
}
