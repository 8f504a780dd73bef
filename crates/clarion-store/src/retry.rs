//! Riding out a database that went away for a while (a restart, a failover, killed
//! connections): exponential backoff with jitter, and an outage that is logged once.
//!
//! Every background loop of a node (the webhook dispatcher and its writer, the scheduler's
//! loops, the wake-up listener) keeps one [`Outage`]. A pass that fails with
//! [`StoreError::Unavailable`] asks it how long to wait; the first such failure logs a
//! warning, later ones are quiet, and the first pass that works again logs how long the
//! database was away and resets the backoff, so the loop resumes at full speed. A loop never
//! exits and never spins because of an unavailable database.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::StoreError;

/// Log filter directives (`tracing_subscriber::EnvFilter` syntax) that quiet the database
/// driver's own chatter for a default log: PostgreSQL's notices (each start's "already
/// exists, skipping") and the pool's line for every dead connection it drops, which after a
/// database restart repeats what the loops log once per outage ([`Outage`]).
pub const QUIET_DRIVER_LOGS: &str = "sqlx::postgres::notice=warn,sqlx_core::pool=error";

/// The first wait after a transient failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(50);
/// The longest wait between two tries, however long the outage: a database that comes back
/// is used again within this.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Exponential backoff with jitter: each wait is drawn between half and all of the current
/// step, and the step doubles up to its ceiling. The jitter keeps the nodes of a cluster (and
/// the loops of one node) from reconnecting in lockstep after a database restart.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    step: Duration,
}

impl Default for Backoff {
    /// [`FIRST_DELAY`] doubling to [`MAX_DELAY`].
    fn default() -> Self {
        Self::new(FIRST_DELAY, MAX_DELAY)
    }
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        let first = first.max(Duration::from_millis(1));
        Self {
            first,
            max: max.max(first),
            step: first,
        }
    }

    /// The next wait (then the step doubles).
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.max);
        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=step - half)
    }

    /// Back to the first step (the database answered).
    pub fn reset(&mut self) {
        self.step = self.first;
    }
}

/// One loop's view of the database's availability (module docs).
#[derive(Debug)]
pub struct Outage {
    /// What the loop does, for the log ("webhook dispatcher", ...).
    what: &'static str,
    /// When the current outage began; `None` while the database answers.
    since: Option<Instant>,
    /// Failed tries in the current outage.
    failures: u64,
    backoff: Backoff,
}

impl Outage {
    pub fn new(what: &'static str) -> Self {
        Self::with_backoff(what, Backoff::default())
    }

    pub fn with_backoff(what: &'static str, backoff: Backoff) -> Self {
        Self {
            what,
            since: None,
            failures: 0,
            backoff,
        }
    }

    /// Whether the loop is in an outage (its last try failed with a transient error).
    pub fn ongoing(&self) -> bool {
        self.since.is_some()
    }

    /// A try failed with `error`. Transient (the database is unavailable): answers how long
    /// to wait before the next try, and logs a warning only for the first failure of an
    /// outage. Any other error: logs it and answers `None` (the loop goes on as it would).
    pub fn failed(&mut self, error: &StoreError) -> Option<Duration> {
        if !error.is_transient() {
            tracing::error!(task = self.what, error = %error_chain(error), "database operation failed");
            return None;
        }
        self.failures += 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
            // The error's chain names the failure (refused, reset, terminated by the
            // administrator), never the URL or its credentials.
            tracing::warn!(
                task = self.what,
                error = %error_chain(error),
                "the database is unavailable; retrying with backoff (logged once per outage)"
            );
        }
        Some(self.backoff.next_delay())
    }

    /// A try worked: ends an outage (logging how long it lasted) and resets the backoff.
    pub fn succeeded(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                task = self.what,
                after_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                failed_tries = self.failures,
                "the database is available again"
            );
            self.failures = 0;
            self.backoff.reset();
        }
    }
}

/// An error and its sources on one line (the store's errors say little on their own: the
/// driver's error is their source).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let text = next.to_string();
        // Some errors print their source in their own message (sqlx's I/O error does):
        // said once is enough.
        if !chain.ends_with(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = next.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_up_to_the_ceiling_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let mut step = Duration::from_millis(50);
        for _ in 0..12 {
            let wait = backoff.next_delay();
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} for step {step:?}"
            );
            step = (step * 2).min(Duration::from_secs(5));
        }
        assert_eq!(step, Duration::from_secs(5));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(50));
    }

    #[test]
    fn only_an_unavailable_database_is_waited_out() {
        let mut outage = Outage::new("test");
        assert_eq!(outage.failed(&StoreError::Corrupt("row")), None);
        assert!(!outage.ongoing());
        let unavailable = || StoreError::Unavailable("connection refused".into());
        let first = outage.failed(&unavailable()).expect("a wait");
        assert!(first <= FIRST_DELAY);
        assert!(outage.ongoing());
        for _ in 0..20 {
            assert!(outage.failed(&unavailable()).expect("a wait") <= MAX_DELAY);
        }
        outage.succeeded();
        assert!(!outage.ongoing());
        assert!(outage.failed(&unavailable()).expect("a wait") <= FIRST_DELAY);
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let error = StoreError::Unavailable(Box::new(io));
        assert_eq!(error_chain(&error), "database unavailable: reset by peer");
    }
}
