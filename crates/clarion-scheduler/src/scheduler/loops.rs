//! The scheduler's loops: the due loop, the provider worker and the overdue loop run side by
//! side, so that none waits on another's I/O; `run_due_now` drives them synchronously.

use super::*;

use clarion_store::retry::{Outage, error_chain};

/// A pass failed: when the database is away, the loop's outage answers how long to wait
/// before the next pass (logged once per outage); any other failure is logged and the loop
/// goes on at its usual pace (`None`).
fn pass_failed(outage: &mut Outage, error: &SchedulerError, what: &str) -> Option<Duration> {
    match error {
        SchedulerError::Store(store) if store.is_transient() => outage.failed(store),
        other => {
            tracing::error!(error = %error_chain(other), "{what}");
            None
        }
    }
}

/// Waits out a backoff, or until the scheduler stops. Nothing else wakes it: while the
/// database is away, work announced meanwhile waits for the next try.
async fn wait_out(stopped: &mut tokio::sync::watch::Receiver<bool>, wait: Duration) {
    tokio::select! {
        _ = stopped.changed() => {}
        () = tokio::time::sleep(wait) => {}
    }
}

impl Scheduler {
    /// Runs until `shutdown` resolves: four loops, so that none waits on another's I/O.
    ///
    /// - the **due loop** wakes due sequences, ends due encounters and reconciles
    ///   unconfirmed ones (database work only: it never waits on a provider);
    /// - the **provider worker** claims and sends the encounters committed for Vapi and
    ///   Twilio ([`Scheduler::place_claimable`]);
    /// - the **overdue loop** reads back provider encounters whose report is late
    ///   ([`Scheduler::settle_overdue_provider_encounters`]);
    /// - the **retention job** purges the PHI of sequences past their organisation's
    ///   retention period every few minutes ([`Scheduler::purge_expired_phi`]).
    ///
    /// A provider that answers slowly, or not at all, holds up only the provider worker and
    /// the overdue loop, and those
    /// only for its own encounters, within their concurrency and time budget.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        // Work other nodes commit for the scheduler (an enrollment or a callback on an API
        // node) wakes the loops at once; polling covers the rest.
        let forwarding =
            self.inner
                .store
                .wakeups()
                .forward(clarion_store::Wakeup::for_scheduler, {
                    let this = self.clone();
                    move || this.wake()
                });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let loops = async {
            tokio::join!(
                self.due_loop(stopped.clone()),
                self.provider_loop(stopped.clone()),
                self.overdue_loop(stopped.clone()),
                self.retention_loop(stopped),
            )
        };
        tokio::pin!(shutdown);
        tokio::pin!(loops);
        tokio::select! {
            () = &mut shutdown => {
                let _ = stop.send(true);
                loops.await;
            }
            _ = &mut loops => {}
        }
        drop(forwarding);
    }

    pub(super) async fn due_loop(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut outage = Outage::new("scheduler due loop");
        while !*stopped.borrow() {
            let backoff = match self.run_due_pass().await {
                Ok(_) => {
                    outage.succeeded();
                    None
                }
                Err(error) => pass_failed(&mut outage, &error, "running due sequences failed"),
            };
            if let Some(wait) = backoff {
                wait_out(&mut stopped, wait).await;
                continue;
            }
            let pause = self.pause().await;
            tokio::select! {
                _ = stopped.changed() => {}
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    pub(super) async fn provider_loop(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut outage = Outage::new("scheduler provider worker");
        while !*stopped.borrow() {
            let poll = tokio::time::Instant::now() + self.inner.config.poll_interval;
            // Texts held back by their sender's pace go when it allows.
            let next_pass = match self.place_claimable_pass().await {
                Ok((_, waits)) => {
                    outage.succeeded();
                    [waits.paced_until, waits.retry_at]
                        .into_iter()
                        .flatten()
                        .fold(poll, tokio::time::Instant::min)
                }
                Err(error) => {
                    match pass_failed(
                        &mut outage,
                        &error,
                        "sending encounters to their providers failed",
                    ) {
                        Some(wait) => {
                            wait_out(&mut stopped, wait).await;
                            continue;
                        }
                        None => poll,
                    }
                }
            };
            tokio::select! {
                _ = stopped.changed() => {}
                () = self.inner.provider_wake.notified() => {}
                () = tokio::time::sleep_until(next_pass) => {}
            }
        }
    }

    pub(super) async fn overdue_loop(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        // Providers' upkeep (Twilio's sweep of old inbound message ids takes the write lock):
        // each at its own interval, not on every pass. By channel, as `Channel::ALL`.
        let mut last_upkeep: [Option<tokio::time::Instant>; 2] = [None; 2];
        let mut outage = Outage::new("scheduler overdue loop");
        while !*stopped.borrow() {
            let backoff = match self.settle_overdue_provider_encounters().await {
                Ok(_) => {
                    outage.succeeded();
                    None
                }
                Err(error) => pass_failed(
                    &mut outage,
                    &error,
                    "settling overdue provider encounters failed",
                ),
            };
            if let Some(wait) = backoff {
                wait_out(&mut stopped, wait).await;
                continue;
            }
            for (channel, last) in clarion_engine::Channel::ALL
                .into_iter()
                .zip(&mut last_upkeep)
            {
                let provider = self.provider(channel);
                if let Some(every) = provider.upkeep_every()
                    && last.is_none_or(|at| at.elapsed() >= every)
                {
                    *last = Some(tokio::time::Instant::now());
                    provider.upkeep(self).await;
                }
            }
            let next = self
                .inner
                .store
                .next_open_provider_end()
                .await
                .ok()
                .flatten();
            // Due now: a short breath, so a pass whose work could not be done (a provider
            // down) does not spin.
            let pause = self.real_wait_until(next, Duration::from_millis(50));
            tokio::select! {
                _ = stopped.changed() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// How long (real time) to wait for engine time `next`, at most the poll interval;
    /// `due_now` when `next` has come.
    pub(super) fn real_wait_until(&self, next: Option<Millis>, due_now: Duration) -> Duration {
        let poll = self.inner.config.poll_interval;
        let now = self.inner.clock.now_millis();
        match next {
            Some(at) if at > now => {
                let virtual_wait = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
                poll.min(virtual_wait.div_f64(self.inner.config.time_scale.max(f64::MIN_POSITIVE)))
            }
            Some(_) => poll.min(due_now),
            None => poll,
        }
    }

    /// The earliest engine time at which something is due (a sequence wake-up or an
    /// encounter's end), if anything is scheduled.
    pub async fn next_due_at(&self) -> Result<Option<Millis>, SchedulerError> {
        let store = &self.inner.store;
        let wake = store.next_sequence_wake().await?;
        let end = store.next_encounter_end().await?;
        Ok(wake.into_iter().chain(end).min())
    }

    /// How long the due loop waits before its next pass: until the next due instant (real
    /// time), at most the poll interval.
    pub(super) async fn pause(&self) -> Duration {
        let next = self.next_due_at().await.ok().flatten();
        self.real_wait_until(next, Duration::ZERO)
    }

    /// Does everything due now, synchronously (tests and tools drive the scheduler with it):
    /// wakes due sequences, ends due encounters, reconciles unconfirmed ones, sends what is
    /// queued for the providers (waiting out a Twilio sender's pace, which is real time) and
    /// settles overdue provider encounters. Repeats until nothing is due; calls waiting for a
    /// Vapi slot stay queued. Returns the amount of work done.
    pub async fn run_due_now(&self) -> Result<usize, SchedulerError> {
        let mut total = 0;
        loop {
            let mut done = self.run_due_pass().await?;
            let (placed, waits) = self.place_claimable_pass().await?;
            done += placed;
            done += self.settle_overdue_provider_encounters().await?;
            total += done;
            if done == 0 {
                match waits.paced_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => return Ok(total),
                }
            }
        }
    }
}
