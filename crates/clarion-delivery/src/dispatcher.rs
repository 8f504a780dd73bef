//! The dispatcher: claims due deliveries under a lease, attempts them, records every attempt
//! and schedules the next.
//!
//! Shape of the loop: claim as much due work as there are free slots (first attempts before
//! retries, with a share of the slots kept for first attempts), start one task per attempt,
//! and let a single writer task record finished attempts in batches. Wake-ups come from the
//! outbox (new work committed on this node), from other nodes' commits (`Store::wakeups`,
//! PostgreSQL's `NOTIFY`), from the writer (slots freed) and from a timer set to the next
//! due retry or the poll interval, whichever is sooner; the poll also picks up deliveries
//! whose lease expired because the node that held them died.
//!
//! Invariants kept here:
//! - at least once: a delivery leaves `pending` only when an attempt is recorded for it; a
//!   crash before that leaves it leased, and the lease expiring makes it due again;
//! - the same bytes and the same `webhook-id` on every attempt (both come from the message);
//!   a fresh timestamp and signature per attempt;
//! - bounded concurrency overall, per organisation and per endpoint, so a slow endpoint holds
//!   at most its own share of slots and an organisation with many slow endpoints at most its
//!   own share: the slots it may not take stay free for the others' due work, which is
//!   therefore attempted at once, and when slots are short the claim serves the organisation
//!   with the fewest in flight first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clarion_store::retry::Outage;
use clarion_store::{
    AfterAttempt, Attempt, AttemptOutcome, ClaimRequest, ClaimedDelivery, EndpointId, Millis,
    OrgId, Store, StoreError, Wakeup,
};
use clarion_webhooks::{Secret, sign_header};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::concurrency::{AdaptiveLimits, Signal};
use crate::outbox::Outbox;
use crate::schedule::{RetryPolicy, parse_retry_after};
use crate::sender::{HttpSender, SignedHeaders};
use crate::ssrf::SsrfPolicy;

/// Dispatcher settings (the `[webhooks]` section of the configuration).
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub retry: RetryPolicy,
    /// The whole attempt, connection to last byte read, must finish within this.
    pub attempt_timeout: Duration,
    /// Lease length beyond the attempt timeout; a lease outlives any attempt made under it.
    pub lease_margin: Duration,
    /// Attempts in flight on this node.
    pub max_in_flight: usize,
    /// Attempts in flight on this node for any one endpoint: the ceiling of the endpoint's
    /// adaptive limit (see [`crate::concurrency`])...
    pub max_in_flight_per_endpoint: u32,
    /// ...and its floor (equal to the ceiling: a fixed limit).
    pub min_in_flight_per_endpoint: u32,
    /// Attempts in flight on this node for any one organisation (below `max_in_flight`, so
    /// that one organisation's slow endpoints leave slots for the others).
    pub max_in_flight_per_organization: u32,
    /// How often to look for due retries and expired leases when nothing wakes the loop.
    pub poll_interval: Duration,
    pub ssrf: SsrfPolicy,
    /// Keep the first [`crate::sender::RESPONSE_EXCERPT_LIMIT`] bytes of each answer with its
    /// attempt (shown in the deliveries API), or none (`webhooks.store_response_excerpt`).
    pub store_response_excerpt: bool,
    /// Endpoint health: an endpoint whose every attempt has failed for this long is disabled
    /// (`webhooks.disable_after`); its undelivered messages are kept.
    pub disable_after: Duration,
}

/// Errors building a dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error("building the HTTP client failed")]
    Client(#[from] reqwest::Error),
}

/// The webhook dispatcher of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    config: DispatcherConfig,
    sender: HttpSender,
    /// This node's name: the prefix of every lease token it claims under (each claim adds
    /// its own random suffix, so outcomes land only on the claim that made them).
    owner: String,
    wake: Arc<Notify>,
    in_flight: Mutex<InFlight>,
    /// When this node last looked for running bulk recoveries (`None`: look at the next
    /// round; a recovery started through this node's API asks for that).
    recoveries_checked: Mutex<Option<Instant>>,
    /// When this node last looked for endpoints to disable (`None`: look at the next round).
    health_checked: Mutex<Option<Instant>>,
}

/// Deliveries a bulk recovery queues again per transaction.
pub const RECOVERY_BATCH: u32 = 500;
/// How often a dispatcher looks for bulk recoveries started on another node.
const RECOVERY_LOOK_EVERY: Duration = Duration::from_secs(1);
/// How often a dispatcher looks for endpoints to disable.
const HEALTH_LOOK_EVERY: Duration = Duration::from_secs(10);
/// Endpoints disabled per transaction by the health check.
const HEALTH_BATCH: u32 = 100;

#[derive(Debug)]
struct InFlight {
    total: usize,
    retries: usize,
    per_endpoint: HashMap<EndpointId, u32>,
    per_organization: HashMap<OrgId, u32>,
    /// Each endpoint's limit, learnt from its answers.
    limits: AdaptiveLimits,
}

impl InFlight {
    fn add(&mut self, delivery: &ClaimedDelivery) {
        self.total += 1;
        if delivery.attempt_count > 0 {
            self.retries += 1;
        }
        *self.per_endpoint.entry(delivery.endpoint_id).or_default() += 1;
        *self.per_organization.entry(delivery.org_id).or_default() += 1;
    }

    /// The HTTP request is over: the endpoint's and the organisation's slots are free (the
    /// caps are about concurrent requests; the lease still keeps the delivery from being
    /// claimed again until its outcome is recorded).
    /// What the attempt said about the receiver adjusts the endpoint's limit.
    fn http_done(&mut self, endpoint: EndpointId, org: OrgId, signal: Signal) {
        let in_flight = self.per_endpoint.get(&endpoint).copied().unwrap_or(1);
        let before = self.limits.limit(endpoint);
        self.limits
            .observe(endpoint, signal, in_flight, std::time::Instant::now());
        let after = self.limits.limit(endpoint);
        if after != before {
            metrics::gauge!("clarion_webhook_endpoint_concurrency_limit", "endpoint_id" => endpoint.0.to_string())
                .set(f64::from(after));
        }
        decrement(&mut self.per_endpoint, endpoint);
        decrement(&mut self.per_organization, org);
    }

    /// The outcome is recorded: the node-wide slot is free.
    fn recorded(&mut self, was_retry: bool) {
        self.total = self.total.saturating_sub(1);
        if was_retry {
            self.retries = self.retries.saturating_sub(1);
        }
    }
}

/// What an attempt's result says about its receiver's capacity.
fn signal_of(outcome: &AttemptOutcome) -> Signal {
    let attempt = &outcome.attempt;
    Signal::of(
        attempt.status_code,
        attempt.error.as_deref(),
        Duration::from_millis(attempt.duration_ms),
    )
}

fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u32>, key: K) {
    if let Some(count) = counts.get_mut(&key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

/// An instant of the store as the wire's timestamp.
fn timestamp(millis: Millis) -> Result<clarion_webhooks::Timestamp, StoreError> {
    clarion_webhooks::Timestamp::from_unix_millis(millis)
        .ok_or(StoreError::Corrupt("an instant out of range"))
}

/// A finished attempt on its way to the writer.
struct Finished {
    outcome: AttemptOutcome,
    was_retry: bool,
}

/// Records attempt outcomes; how many at most per transaction.
const WRITE_BATCH: usize = 512;
/// How many times the writer tries to record one batch before letting it go.
const WRITE_TRIES: u32 = 10;

impl Dispatcher {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        config: DispatcherConfig,
    ) -> Result<Self, DispatcherError> {
        let sender = HttpSender::new(
            config.ssrf.clone(),
            config.attempt_timeout,
            config.store_response_excerpt,
        )?;
        let owner = crate::outbox::new_webhook_id("node_");
        let limits = AdaptiveLimits::new(
            config.min_in_flight_per_endpoint,
            config.max_in_flight_per_endpoint,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                sender,
                owner,
                wake: Arc::new(Notify::new()),
                in_flight: Mutex::new(InFlight {
                    total: 0,
                    retries: 0,
                    per_endpoint: HashMap::new(),
                    per_organization: HashMap::new(),
                    limits,
                }),
                recoveries_checked: Mutex::new(None),
                health_checked: Mutex::new(None),
            }),
        })
    }

    /// The outbox that feeds this dispatcher (it wakes the dispatcher after each commit).
    pub fn outbox(&self) -> Outbox {
        Outbox::new(
            self.inner.store.clone(),
            self.inner.config.retry.first_delay(),
            self.inner.wake.clone(),
        )
        .with_dispatcher(self.clone())
    }

    /// The endpoint's current adaptive concurrency limit on this node.
    pub fn endpoint_limit(&self, endpoint: EndpointId) -> u32 {
        self.lock_in_flight().limits.limit(endpoint)
    }

    /// Wakes the loop now (new work was committed, or the clock moved).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// A bulk recovery was started: look at the running ones in the next round.
    pub fn recovery_started(&self) {
        *self
            .inner
            .recoveries_checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.wake();
    }

    /// Advances each running bulk recovery by one batch ([`RECOVERY_BATCH`] deliveries, one
    /// transaction), at most once a second unless one was just started here; answers how
    /// many are still running (the loop then comes straight back). The job's state is its
    /// row, so a recovery a dying node left half-done is taken up by any node.
    async fn advance_recoveries(&self) -> Result<usize, StoreError> {
        {
            let mut checked = self
                .inner
                .recoveries_checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if checked.is_some_and(|at| at.elapsed() < RECOVERY_LOOK_EVERY) {
                return Ok(0);
            }
            *checked = Some(Instant::now());
        }
        let store = &self.inner.store;
        let mut running = 0;
        for id in store.unfinished_recoveries(16).await? {
            let now = self.inner.clock.now_millis();
            if let Some(recovery) = store.advance_recovery(id, RECOVERY_BATCH, now).await?
                && recovery.finished_at.is_none()
            {
                running += 1;
            }
        }
        if running > 0 {
            // More batches to go: the next round looks again at once.
            *self
                .inner
                .recoveries_checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        Ok(running)
    }

    /// Endpoint health, at most every [`HEALTH_LOOK_EVERY`] (each round of `run_due_now`):
    /// disables the endpoints whose every attempt has failed for `disable_after`, and in the
    /// same transaction queues an `endpoint.disabled` event for each to the organisation's
    /// other enabled endpoints subscribed to it. Safe on several nodes: the store disables an
    /// endpoint once, so its event is queued once. Answers how many were disabled.
    pub async fn check_endpoint_health(&self) -> Result<usize, StoreError> {
        {
            let mut checked = self
                .inner
                .health_checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if checked.is_some_and(|at| at.elapsed() < HEALTH_LOOK_EVERY) {
                return Ok(0);
            }
            *checked = Some(Instant::now());
        }
        let store = &self.inner.store;
        let disable_after = self.inner.config.disable_after;
        let reason = format!(
            "every delivery attempt failed for {}",
            humantime::format_duration(disable_after)
        );
        let mut total = 0;
        loop {
            let now = self.inner.clock.now_millis();
            let failing_before = now
                .saturating_sub(Millis::try_from(disable_after.as_millis()).unwrap_or(Millis::MAX));
            let mut tx = store.begin().await?;
            let disabled = store
                .disable_failing_endpoints(&mut tx, failing_before, &reason, now, HEALTH_BATCH)
                .await?;
            let mut queued = 0;
            for endpoint in &disabled {
                let event = clarion_webhooks::EndpointDisabled {
                    // The id as the organisation's API shows it.
                    endpoint_id: store
                        .public_ids(endpoint.org_id)
                        .encode(clarion_store::IdKind::Endpoint, endpoint.id.0),
                    url: endpoint.url.clone(),
                    reason: reason.clone(),
                    failing_since: timestamp(endpoint.failing_since.unwrap_or(now))?,
                    disabled_at: timestamp(now)?,
                };
                let body = serde_json::to_vec(&event)
                    .map_err(|_| StoreError::Corrupt("an event that does not serialise"))?;
                let webhook_id = crate::outbox::new_webhook_id("msg_");
                let message = clarion_store::NewMessage {
                    org_id: endpoint.org_id,
                    webhook_id: &webhook_id,
                    event_type: clarion_webhooks::EVENT_TYPE_ENDPOINT_DISABLED,
                    sequence_id: None,
                    is_test: false,
                    body: &body,
                    created_at: now,
                };
                // The endpoint is disabled now: "every enabled endpoint" leaves it out.
                let (_, created) = store
                    .insert_message(
                        &mut tx,
                        &message,
                        clarion_store::Recipients::AllEnabled,
                        now.saturating_add(self.first_delay_ms()),
                    )
                    .await?;
                queued += created;
            }
            tx.commit().await?;
            for endpoint in &disabled {
                tracing::warn!(
                    endpoint_id = endpoint.id.0,
                    org_id = endpoint.org_id.0,
                    "webhook endpoint disabled: every attempt failed for {}",
                    humantime::format_duration(disable_after)
                );
            }
            metrics::counter!("clarion_webhook_endpoints_disabled_total")
                .increment(disabled.len() as u64);
            if queued > 0 {
                self.wake();
            }
            total += disabled.len();
            if disabled.len() < HEALTH_BATCH as usize {
                return Ok(total);
            }
        }
    }

    fn first_delay_ms(&self) -> Millis {
        Millis::try_from(self.inner.config.retry.first_delay().as_millis()).unwrap_or(0)
    }

    /// Runs until `shutdown` resolves, then stops claiming, lets in-flight attempts finish
    /// (each is bounded by the attempt timeout), records them and returns.
    ///
    /// A database that is away (a restart, a failover, killed connections) stops nothing:
    /// claims are tried again with backoff (50 ms doubling to 5 s, with jitter), the outage
    /// is logged once, and the first claim that works resumes the usual pace.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let (finished_tx, finished_rx) = mpsc::unbounded_channel::<Finished>();
        let writer = tokio::spawn(self.clone().write_outcomes(finished_rx));
        // Reports other nodes commit (on PostgreSQL) wake the loop at once, as this node's
        // outbox does.
        let forwarding = self.inner.store.wakeups().forward(Wakeup::for_dispatcher, {
            let this = self.clone();
            move || this.wake()
        });
        let mut attempts = JoinSet::new();
        let mut outage = Outage::new("webhook dispatcher");
        tokio::pin!(shutdown);
        loop {
            let backoff = match self.claim_round().await {
                Ok(claimed) => {
                    outage.succeeded();
                    for delivery in claimed {
                        let this = self.clone();
                        let finished_tx = finished_tx.clone();
                        attempts.spawn(async move {
                            let (endpoint, org) = (delivery.endpoint_id, delivery.org_id);
                            let was_retry = delivery.attempt_count > 0;
                            let outcome = this.attempt(delivery).await;
                            this.lock_in_flight()
                                .http_done(endpoint, org, signal_of(&outcome));
                            this.wake();
                            let _ = finished_tx.send(Finished { outcome, was_retry });
                        });
                    }
                    None
                }
                Err(error) => outage.failed(&error),
            };
            // Reap finished tasks so the set does not grow.
            while attempts.try_join_next().is_some() {}
            match backoff {
                // The database is away: wait out the backoff whatever wakes the loop (an
                // attempt finishing, new work announced), so that it never spins.
                Some(wait) => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                None => {
                    let pause = self.pause().await;
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = self.inner.wake.notified() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        tracing::info!(
            in_flight = attempts.len(),
            "dispatcher stopping; finishing attempts in flight"
        );
        drop(forwarding);
        while attempts.join_next().await.is_some() {}
        drop(finished_tx);
        let _ = writer.await;
    }

    /// Test and tooling driver: attempts everything due now, records the outcomes, and repeats
    /// until nothing is due. Returns the number of attempts made. Never sleeps.
    pub async fn run_due_now(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        *self
            .inner
            .recoveries_checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        while self.advance_recoveries().await? > 0 {}
        *self
            .inner
            .health_checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.check_endpoint_health().await?;
        loop {
            let claimed = self.claim_round().await?;
            if claimed.is_empty() {
                return Ok(total);
            }
            total += claimed.len();
            let mut attempts = JoinSet::new();
            for delivery in claimed {
                let this = self.clone();
                attempts.spawn(async move {
                    let (endpoint, org) = (delivery.endpoint_id, delivery.org_id);
                    let was_retry = delivery.attempt_count > 0;
                    let outcome = this.attempt(delivery).await;
                    this.lock_in_flight()
                        .http_done(endpoint, org, signal_of(&outcome));
                    Finished { outcome, was_retry }
                });
            }
            let mut batch = Vec::new();
            while let Some(joined) = attempts.join_next().await {
                if let Ok(finished) = joined {
                    batch.push(finished);
                }
            }
            self.record(batch).await.map_err(|(error, _)| error)?;
        }
    }

    /// How long to wait before looking again: until the next retry falls due, at most the
    /// poll interval.
    async fn pause(&self) -> Duration {
        let poll = self.inner.config.poll_interval;
        let now = self.inner.clock.now_millis();
        match self.inner.store.next_due_after(now).await {
            Ok(Some(due)) => {
                let wait = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
                poll.min(Duration::from_millis(wait))
            }
            Ok(None) => poll,
            // An unavailable database shows in the next claim, which waits it out.
            Err(error) if error.is_transient() => poll,
            Err(error) => {
                tracing::error!(error = %error, "reading the next due delivery failed");
                poll
            }
        }
    }

    /// Claims due work for the free slots: first attempts first, then retries, which may use
    /// at most three quarters of all slots so fresh reports always find room.
    async fn claim_round(&self) -> Result<Vec<ClaimedDelivery>, StoreError> {
        if self.advance_recoveries().await? > 0 {
            self.wake();
        }
        self.check_endpoint_health().await?;
        let config = &self.inner.config;
        let now = self.inner.clock.now_millis();
        let lease = config.attempt_timeout + config.lease_margin;
        let lease_until = now.saturating_add(Millis::try_from(lease.as_millis()).unwrap_or(0));
        let mut claimed = Vec::new();
        for first_attempts in [true, false] {
            let (free, snapshot, per_organization, endpoint_limits, start_limit) = {
                let in_flight = self.lock_in_flight();
                let free = config.max_in_flight.saturating_sub(in_flight.total);
                let free = if first_attempts {
                    free
                } else {
                    let retry_cap = (config.max_in_flight * 3 / 4).max(1);
                    free.min(retry_cap.saturating_sub(in_flight.retries))
                };
                let snapshot: Vec<(EndpointId, u32)> = in_flight
                    .per_endpoint
                    .iter()
                    .map(|(e, c)| (*e, *c))
                    .collect();
                let per_organization: Vec<(OrgId, u32)> = in_flight
                    .per_organization
                    .iter()
                    .map(|(o, c)| (*o, *c))
                    .collect();
                (
                    free,
                    snapshot,
                    per_organization,
                    in_flight.limits.snapshot(),
                    in_flight.limits.start(),
                )
            };
            if free == 0 {
                continue;
            }
            let request = ClaimRequest {
                owner: &self.inner.owner,
                now,
                lease_until,
                limit: u32::try_from(free).unwrap_or(u32::MAX),
                first_attempts,
                per_endpoint_limit: start_limit,
                in_flight: &snapshot,
                endpoint_limits: &endpoint_limits,
                per_organization_limit: config.max_in_flight_per_organization,
                in_flight_per_organization: &per_organization,
            };
            let batch = self.inner.store.claim_due(&request).await?;
            let mut in_flight = self.lock_in_flight();
            for delivery in &batch {
                in_flight.add(delivery);
            }
            drop(in_flight);
            claimed.extend(batch);
        }
        Ok(claimed)
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        // The guarded data stays consistent even if a holder panicked: counters only.
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes one attempt and decides what comes next. Never fails: every error becomes an
    /// attempt record with its class.
    #[tracing::instrument(level = "debug", name = "delivery_attempt", skip_all, fields(delivery_id = delivery.id.0, endpoint_id = delivery.endpoint_id.0))]
    async fn attempt(&self, delivery: ClaimedDelivery) -> AttemptOutcome {
        let inner = &self.inner;
        let attempt_number = delivery.attempt_count + 1;
        let attempted_at = inner.clock.now_millis();
        let started = Instant::now();
        let result = match Self::signature(&delivery, attempted_at) {
            Ok((timestamp, signature)) => {
                let headers = SignedHeaders {
                    webhook_id: &delivery.webhook_id,
                    timestamp,
                    signature: &signature,
                    event_type: &delivery.event_type,
                    attempt: attempt_number,
                };
                inner
                    .sender
                    .send(&delivery.url, &headers, delivery.body.clone())
                    .await
            }
            Err(class) => Err(class),
        };
        let duration = started.elapsed();
        metrics::histogram!("clarion_webhook_attempt_duration_seconds")
            .record(duration.as_secs_f64());

        let (status_code, error, response_body, retry_after) = match &result {
            Ok(answer) => (
                Some(answer.status),
                None,
                inner
                    .config
                    .store_response_excerpt
                    .then(|| answer.body_prefix.clone()),
                answer
                    .retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, attempted_at / 1000)),
            ),
            Err(class) => (None, Some((*class).to_owned()), None, None),
        };
        let succeeded = status_code.is_some_and(|s| (200..300).contains(&s));
        let gone = status_code == Some(410);
        let honour_retry_after = matches!(status_code, Some(429 | 503));

        let next =
            if succeeded {
                AfterAttempt::Delivered
            } else if gone || delivery.manual {
                AfterAttempt::Failed
            } else {
                let retry_after = if honour_retry_after {
                    retry_after
                } else {
                    None
                };
                match inner
                    .config
                    .retry
                    .delay_after(attempt_number, retry_after, &mut rand::rng())
                {
                    Some(delay) => AfterAttempt::RetryAt(inner.clock.now_millis().saturating_add(
                        Millis::try_from(delay.as_millis()).unwrap_or(Millis::MAX),
                    )),
                    None => AfterAttempt::Failed,
                }
            };
        let result_label = match (&result, succeeded) {
            (_, true) => "success",
            (Ok(_), false) => "http-error",
            (Err(class), _) => class,
        };
        metrics::counter!("clarion_webhook_attempts_total", "result" => result_label).increment(1);
        match next {
            AfterAttempt::Delivered => {
                metrics::counter!("clarion_webhook_deliveries_total", "result" => "delivered")
                    .increment(1);
            }
            AfterAttempt::Failed => {
                metrics::counter!("clarion_webhook_deliveries_total", "result" => "failed")
                    .increment(1);
            }
            AfterAttempt::RetryAt(_) => {}
        }
        tracing::debug!(
            delivery_id = delivery.id.0,
            endpoint_id = delivery.endpoint_id.0,
            attempt = attempt_number,
            status = status_code,
            error = error.as_deref(),
            "webhook attempt"
        );
        AttemptOutcome {
            delivery_id: delivery.id,
            lease: delivery.lease.clone(),
            attempt: Attempt {
                attempt_number,
                attempted_at,
                status_code,
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                error,
                response_body,
            },
            next,
            disable_endpoint: gone.then(|| {
                (
                    delivery.endpoint_id,
                    "the endpoint answered 410 Gone".to_owned(),
                )
            }),
        }
    }

    /// A fresh timestamp and the signatures of every secret active at claim time.
    fn signature(delivery: &ClaimedDelivery, now: Millis) -> Result<(i64, String), &'static str> {
        let secrets: Vec<Secret> = delivery
            .signing_secrets
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        if secrets.is_empty() {
            return Err("no-signing-secret");
        }
        let timestamp = now.div_euclid(1000);
        Ok((
            timestamp,
            sign_header(&secrets, &delivery.webhook_id, timestamp, &delivery.body),
        ))
    }

    /// The writer: records finished attempts in batches, then frees their slots.
    ///
    /// A batch that fails because the database is away is tried again with backoff for as
    /// long as the leases of its deliveries last (the attempt timeout plus the lease margin:
    /// meanwhile no other node claims them); another failure is tried [`WRITE_TRIES`] times.
    /// A batch still unrecorded then is let go and its slots freed, so the loop goes on; its
    /// deliveries are claimed again once their leases expire and attempted again (at least
    /// once, under the same `webhook-id`), so nothing is lost.
    async fn write_outcomes(self, mut finished: mpsc::UnboundedReceiver<Finished>) {
        let config = &self.inner.config;
        let lease = config.attempt_timeout + config.lease_margin;
        let mut outage = Outage::new("webhook attempt recorder");
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        while finished.recv_many(&mut batch, WRITE_BATCH).await > 0 {
            let mut pending = std::mem::take(&mut batch);
            let first_try = Instant::now();
            let mut tries = 0;
            loop {
                match self.record(pending).await {
                    Ok(()) => {
                        outage.succeeded();
                        break;
                    }
                    Err((error, unwritten)) => {
                        tries += 1;
                        let wait = outage.failed(&error);
                        let give_up = match wait {
                            Some(_) => first_try.elapsed() >= lease,
                            None => tries >= WRITE_TRIES,
                        };
                        if give_up {
                            tracing::error!(error = %clarion_store::retry::error_chain(&error), attempts = unwritten.len(),
                                "recording webhook attempts keeps failing; their deliveries will be retried when the leases expire");
                            self.release_slots(&unwritten);
                            break;
                        }
                        pending = unwritten;
                        tokio::time::sleep(wait.unwrap_or(Duration::from_millis(200))).await;
                    }
                }
            }
            self.wake();
        }
    }

    async fn record(&self, batch: Vec<Finished>) -> Result<(), (StoreError, Vec<Finished>)> {
        let outcomes: Vec<AttemptOutcome> = batch.iter().map(|f| f.outcome.clone()).collect();
        if let Err(error) = self
            .inner
            .store
            .record_outcomes(&outcomes, self.inner.clock.now_millis())
            .await
        {
            return Err((error, batch));
        }
        self.release_slots(&batch);
        Ok(())
    }

    fn release_slots(&self, batch: &[Finished]) {
        let mut in_flight = self.lock_in_flight();
        for finished in batch {
            in_flight.recorded(finished.was_retry);
        }
    }
}
