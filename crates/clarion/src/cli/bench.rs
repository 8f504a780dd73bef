//! `clarion bench delivery`: webhook delivery throughput and latency on this machine.
//!
//! Everything runs in one process on loopback: a store on a temporary SQLite file (the same
//! durability settings as `serve`) or on the PostgreSQL database `--database` names, the
//! dispatcher on the system clock, and a receiver that answers 204 and notes when each
//! message arrived. The phases:
//!
//! 1. throughput: N reports are queued up front, then the dispatcher is started; deliveries/s
//!    is N over the time until every delivery is recorded as delivered;
//! 2. latency: reports are queued one transaction each at a steady offered rate while the
//!    dispatcher runs; latency is from the commit of the enqueue to the receiver's arrival;
//! 3. backlog: the latency phase again, for another organisation, while a black-hole
//!    endpoint (it accepts the connection and never answers) of a third organisation holds a
//!    backlog of first attempts (10,000 by default): the healthy endpoint's latency is printed
//!    beside phase 2's, so a backlog that held up other tenants would show;
//! 4. commits (`--writers N`, between 2 and 3): N tasks commit one report per transaction
//!    back to back while the dispatcher delivers them; commits/s and commit latency, which is
//!    where PostgreSQL's `NOTIFY` (a lock taken by every notifying commit) would cost
//!    (`--no-notify` turns the wake-ups off to compare).
//!
//! It prints the figures and the peak resident set size of the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use clarion_delivery::ssrf::SsrfPolicy;
use clarion_delivery::{Clock, Dispatcher, SystemClock};
use clarion_store::Store;
use clarion_webhooks::SequenceReport;
use tokio_util::sync::CancellationToken;

use crate::config::Overrides;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Reports for the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub reports: usize,
    /// Offered load for the latency phase, reports per second.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Webhook endpoints of the organisation; every report is delivered to each.
    #[arg(long, default_value_t = 8)]
    pub endpoints: usize,
    /// Length of the latency phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Reports queued to the black-hole organisation before the backlog phase (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub backlog: usize,
    /// Black-hole endpoints of that organisation; each backlog report goes to every one.
    #[arg(long, default_value_t = 1)]
    pub black_hole_endpoints: usize,
    /// The database to run on instead of a temporary SQLite file: a `postgres://` URL naming
    /// an empty database (the bench seals its endpoints' secrets with a key of its own).
    #[arg(long)]
    pub database: Option<String>,
    /// PostgreSQL: commits send no wake-ups (`database.notify = false`), to see what
    /// `NOTIFY` costs.
    #[arg(long)]
    pub no_notify: bool,
    /// Writers of the commit phase, run after the latency phase: each queues one report per
    /// transaction as fast as it can for `--duration`, while the dispatcher delivers them;
    /// prints commits per second and their latency. 0 skips it.
    #[arg(long, default_value_t = 0)]
    pub writers: usize,
    /// Nodes sharing the work (PostgreSQL only): each its own store, connection pool and
    /// dispatcher on the one database, in this process, as `clarion serve` nodes would be
    /// on one machine. Reports are queued through the first.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
}

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;
/// Every request the receiver answered, duplicates included.
type Received = Arc<std::sync::atomic::AtomicU64>;

pub async fn delivery(args: BenchArgs) -> anyhow::Result<()> {
    let config = super::load_config(None, Overrides::default())?;
    let mut dispatcher_config = super::dispatcher_config(&config);
    dispatcher_config.ssrf = SsrfPolicy {
        allow_private: true,
        allow_http: true,
        ..SsrfPolicy::default()
    };

    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let database = match &args.database {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let postgres = database.starts_with("postgres://") || database.starts_with("postgresql://");
    anyhow::ensure!(
        postgres || args.nodes <= 1,
        "--nodes above 1 needs a PostgreSQL --database (a SQLite file has one node)"
    );
    let options = clarion_store::StoreOptions {
        notify: !args.no_notify,
        ..super::throwaway_store_options()
    };
    let store = Store::connect_with(&database, options.clone()).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let org = store.create_org("Benchmark", clock.now_millis()).await?.id;

    let arrivals: Arrivals = Arc::default();
    let received: Received = Arc::default();
    let receiver_url = start_receiver(arrivals.clone(), received.clone()).await?;
    let secret = clarion_webhooks::Secret::from_bytes(&[7; 32])?.to_whsec();
    let endpoints = args.endpoints.max(1);
    for i in 0..endpoints {
        let url = format!("{receiver_url}/{i}");
        store
            .create_endpoint(
                org,
                &url,
                "benchmark receiver",
                clarion_store::DEFAULT_EVENT_TYPES,
                &secret,
                clock.now_millis(),
            )
            .await?;
    }

    let report = realistic_report();
    let body_len = serde_json::to_vec(&report)?.len();
    println!("clarion bench delivery");
    let backend = if postgres {
        format!(
            "PostgreSQL, wake-ups (NOTIFY) {}",
            if args.no_notify { "off" } else { "on" }
        )
    } else {
        "SQLite WAL synchronous=FULL".to_owned()
    };
    println!(
        "  machine: {} cores, report body {} bytes, {backend}",
        cores(),
        body_len
    );
    println!(
        "  webhooks: max_in_flight={}, per endpoint={} (across the cluster), nodes={}",
        dispatcher_config.max_in_flight,
        dispatcher_config.max_in_flight_per_endpoint,
        args.nodes.max(1)
    );

    let dispatcher = Dispatcher::new(store.clone(), clock.clone(), dispatcher_config.clone())?;
    let outbox = dispatcher.outbox();
    let mut dispatchers = vec![dispatcher];
    for _ in 1..args.nodes.max(1) {
        let node = Store::connect_with(&database, options.clone()).await?;
        dispatchers.push(Dispatcher::new(
            node,
            clock.clone(),
            dispatcher_config.clone(),
        )?);
    }

    // Phase 1: throughput.
    let started = Instant::now();
    for chunk in (0..args.reports).collect::<Vec<_>>().chunks(500) {
        let mut tx = store.begin().await?;
        for i in chunk {
            let mut report = report.clone();
            report.id = *i as i64 + 1;
            outbox
                .enqueue_report(&mut tx, org, &report, clock.now_millis())
                .await?;
        }
        tx.commit().await?;
    }
    let enqueue_secs = started.elapsed().as_secs_f64();
    println!(
        "  throughput: queued {} reports in {:.2} s ({:.0}/s, 500 per transaction)",
        args.reports,
        enqueue_secs,
        args.reports as f64 / enqueue_secs
    );
    let stop = CancellationToken::new();
    let mut running = tokio::task::JoinSet::new();
    for dispatcher in &dispatchers {
        let (dispatcher, stop) = (dispatcher.clone(), stop.clone());
        running.spawn(async move { dispatcher.run(stop.cancelled_owned()).await });
    }
    let started = Instant::now();
    let deliveries = args.reports * endpoints;
    wait_until_drained(&store, &received, deliveries as u64).await?;
    let drain = started.elapsed().as_secs_f64();
    println!(
        "  throughput: {deliveries} deliveries ({} reports x {endpoints} endpoints) recorded delivered in {:.2} s = {:.0} deliveries/s",
        args.reports,
        drain,
        deliveries as f64 / drain
    );
    println!("  peak RSS after throughput phase: {} MiB", peak_rss_mib());

    // Phase 2: latency at a steady offered load, one transaction per report, for an
    // organisation with one endpoint (so the offered load is `rate` deliveries/s).
    let latency_org = store.create_org("Latency", clock.now_millis()).await?.id;
    store
        .create_endpoint(
            latency_org,
            &format!("{receiver_url}/latency"),
            "latency receiver",
            clarion_store::DEFAULT_EVENT_TYPES,
            &secret,
            clock.now_millis(),
        )
        .await?;
    let paced = PacedRun {
        store: &store,
        outbox: &outbox,
        clock: clock.as_ref(),
        arrivals: &arrivals,
        report: &report,
        rate: args.rate,
        duration: args.duration,
    };
    let (plain, achieved) = paced.run(latency_org, args.reports).await?;
    println!(
        "  latency: {} reports at {}/s offered to one endpoint ({achieved:.0}/s achieved), enqueue commit -> received: {plain}",
        plain.count(),
        args.rate,
    );
    println!("  peak RSS: {} MiB", peak_rss_mib());

    if args.writers > 0 {
        let commit_org = store.create_org("Commits", clock.now_millis()).await?.id;
        store
            .create_endpoint(
                commit_org,
                &format!("{receiver_url}/commits"),
                "commit receiver",
                clarion_store::DEFAULT_EVENT_TYPES,
                &secret,
                clock.now_millis(),
            )
            .await?;
        let received_before = received.load(std::sync::atomic::Ordering::Relaxed);
        let (commits, latencies, elapsed) = commit_phase(
            &store,
            &outbox,
            clock.clone(),
            commit_org,
            &report,
            args.writers,
            args.duration,
        )
        .await?;
        println!(
            "  commits: {} writers, one report per transaction: {commits} in {elapsed:.2} s = {:.0} commits/s; commit {latencies}",
            args.writers,
            commits as f64 / elapsed,
        );
        let started = Instant::now();
        wait_until_drained(&store, &received, received_before + commits as u64).await?;
        println!(
            "  commits: delivered the last of them {:.2} s after the phase",
            started.elapsed().as_secs_f64()
        );
    }

    // Phase 3: the same paced load for another organisation while a black hole holds a
    // backlog.
    if args.backlog > 0 {
        let black_hole = BlackHole::start().await?;
        let black_hole_org = store.create_org("Black hole", clock.now_millis()).await?.id;
        let black_hole_endpoints = args.black_hole_endpoints.max(1);
        for i in 0..black_hole_endpoints {
            store
                .create_endpoint(
                    black_hole_org,
                    &format!("{}/{i}", black_hole.url),
                    "black hole",
                    clarion_store::DEFAULT_EVENT_TYPES,
                    &secret,
                    clock.now_millis(),
                )
                .await?;
        }
        let first_id = args.reports + plain.count() + 1;
        let started = Instant::now();
        for chunk in (0..args.backlog).collect::<Vec<_>>().chunks(500) {
            let mut tx = store.begin().await?;
            for i in chunk {
                let mut report = report.clone();
                report.id = (first_id + i) as i64;
                outbox
                    .enqueue_report(&mut tx, black_hole_org, &report, clock.now_millis())
                    .await?;
            }
            tx.commit().await?;
        }
        outbox.wake();
        // The black hole is holding its share of the slots before the paced load starts.
        black_hole.wait_for_connections(1).await;
        println!(
            "  backlog: {} first attempts queued to {black_hole_endpoints} black-hole endpoint(s) of another organisation in {:.2} s",
            args.backlog * black_hole_endpoints,
            started.elapsed().as_secs_f64()
        );
        let healthy_org = store.create_org("Healthy", clock.now_millis()).await?.id;
        store
            .create_endpoint(
                healthy_org,
                &format!("{receiver_url}/healthy"),
                "healthy receiver",
                clarion_store::DEFAULT_EVENT_TYPES,
                &secret,
                clock.now_millis(),
            )
            .await?;
        let (behind_backlog, achieved) = paced.run(healthy_org, first_id + args.backlog).await?;
        println!(
            "  backlog: {} reports at {}/s offered to a healthy endpoint ({achieved:.0}/s achieved) while the black hole holds {} connections: {behind_backlog}",
            behind_backlog.count(),
            args.rate,
            black_hole.connections(),
        );
        println!(
            "  backlog vs plain: p50 {:.1} ms vs {:.1} ms, p99 {:.1} ms vs {:.1} ms",
            behind_backlog.quantile(0.5),
            plain.quantile(0.5),
            behind_backlog.quantile(0.99),
            plain.quantile(0.99),
        );
        // Closing the black hole's connections ends its attempts at once, so the
        // dispatcher stops without waiting out their time-outs.
        black_hole.close();
    }
    stop.cancel();
    running.join_all().await;
    Ok(())
}

/// The paced phases' load: reports queued one transaction each at `rate` for `duration`.
struct PacedRun<'a> {
    store: &'a Store,
    outbox: &'a clarion_delivery::Outbox,
    clock: &'a dyn Clock,
    arrivals: &'a Arrivals,
    report: &'a SequenceReport,
    rate: u32,
    duration: Duration,
}

impl PacedRun<'_> {
    /// Queues the load for `org` (report ids from `first_id`), waits until every report
    /// arrived, and answers the latencies and the achieved rate.
    async fn run(
        &self,
        org: clarion_store::OrgId,
        first_id: usize,
    ) -> anyhow::Result<(Latencies, f64)> {
        self.arrivals
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clear();
        let total = (f64::from(self.rate) * self.duration.as_secs_f64()) as usize;
        let interval = Duration::from_secs_f64(1.0 / f64::from(self.rate.max(1)));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let phase_start = Instant::now();
        // Each report is committed by a task of its own, so the offered rate holds even when
        // one commit takes longer than the interval (a durable PostgreSQL commit waits for
        // its WAL flush: one writer at a time would cap the load near 1 / flush time).
        let mut commits = tokio::task::JoinSet::new();
        for i in 0..total {
            ticker.tick().await;
            let mut report = self.report.clone();
            report.id = (first_id + i) as i64;
            let (store, outbox) = (self.store.clone(), self.outbox.clone());
            let now = self.clock.now_millis();
            commits.spawn(async move {
                let mut tx = store.begin().await?;
                let queued = outbox.enqueue_report(&mut tx, org, &report, now).await?;
                tx.commit().await?;
                let committed = Instant::now();
                outbox.wake();
                anyhow::Ok((queued.webhook_id, committed))
            });
        }
        let mut enqueued: Vec<(String, Instant)> = Vec::with_capacity(total);
        while let Some(joined) = commits.join_next().await {
            enqueued.push(joined??);
        }
        let achieved = total as f64 / phase_start.elapsed().as_secs_f64();
        // Every report arrives, or the phase gives up after a minute and reports those that
        // did (a backlog that blocked them shows as a short count).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let arrived = {
                let arrivals = self
                    .arrivals
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?;
                enqueued.iter().all(|(id, _)| arrivals.contains_key(id))
            };
            if arrived || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let arrivals = self
            .arrivals
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        Ok((Latencies::between(enqueued, &arrivals), achieved))
    }
}

/// `writers` tasks each committing one-report transactions back to back for `duration`:
/// the number committed, their latencies (begin to commit), and the seconds it took.
async fn commit_phase(
    store: &Store,
    outbox: &clarion_delivery::Outbox,
    clock: Arc<dyn Clock>,
    org: clarion_store::OrgId,
    report: &SequenceReport,
    writers: usize,
    duration: Duration,
) -> anyhow::Result<(usize, Latencies, f64)> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let (store, outbox, clock, report) =
            (store.clone(), outbox.clone(), clock.clone(), report.clone());
        tasks.spawn(async move {
            let mut took = Vec::new();
            while Instant::now() < deadline {
                let mut report = report.clone();
                report.id = 1_000_000_000 + (writer * 10_000_000 + took.len()) as i64;
                let begun = Instant::now();
                let mut tx = store.begin().await?;
                outbox
                    .enqueue_report(&mut tx, org, &report, clock.now_millis())
                    .await?;
                tx.commit().await?;
                took.push(begun.elapsed().as_secs_f64() * 1000.0);
                outbox.wake();
            }
            anyhow::Ok(took)
        });
    }
    let mut took = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        took.extend(joined??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = took.len();
    Ok((count, Latencies::from_millis(took), elapsed))
}

/// A receiver that accepts connections, reads nothing and never answers, until closed.
struct BlackHole {
    url: String,
    held: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
        let task = tokio::spawn({
            let held = held.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    if let Ok(mut held) = held.lock() {
                        held.push(stream);
                    }
                }
            }
        });
        Ok(Self { url, held, task })
    }

    fn connections(&self) -> usize {
        self.held.lock().map_or(0, |held| held.len())
    }

    async fn wait_for_connections(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.connections() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn close(self) {
        self.task.abort();
        if let Ok(mut held) = self.held.lock() {
            held.clear();
        }
    }
}

/// Latencies in milliseconds, sorted, from when each item started to when it arrived.
pub(crate) struct Latencies(Vec<f64>);

impl Latencies {
    /// The latency of every started item that arrived (`arrivals` by the same key).
    pub(crate) fn between<K: Eq + std::hash::Hash>(
        started: impl IntoIterator<Item = (K, Instant)>,
        arrivals: &HashMap<K, Instant>,
    ) -> Self {
        let mut ms: Vec<f64> = started
            .into_iter()
            .filter_map(|(key, at)| {
                arrivals
                    .get(&key)
                    .map(|arrived| arrived.duration_since(at).as_secs_f64() * 1000.0)
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        Self(ms)
    }

    /// Latencies measured directly, in milliseconds.
    pub(crate) fn from_millis(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        Self(ms)
    }

    pub(crate) fn count(&self) -> usize {
        self.0.len()
    }

    /// The `p` quantile (0 to 1), nearest rank; NaN when there is none.
    pub(crate) fn quantile(&self, p: f64) -> f64 {
        self.0
            .get(((self.0.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(1.0)
        )
    }
}

/// Waits until the receiver has answered `target` requests in all, then until the store has
/// no pending delivery (every outcome recorded). Counting pending rows scans them (on
/// PostgreSQL, ~40 ms for 160,000 rows, with parallel workers), CPU the dispatcher needs: so
/// the store is asked only once the receiver's count says the work is nearly done.
async fn wait_until_drained(store: &Store, received: &Received, target: u64) -> anyhow::Result<()> {
    while received.load(std::sync::atomic::Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    loop {
        if store.queue_stats().await?.pending == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn start_receiver(arrivals: Arrivals, received: Received) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let router = Router::new().fallback(move |headers: HeaderMap| {
        let (arrivals, received) = (arrivals.clone(), received.clone());
        async move {
            let now = Instant::now();
            received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok())
                && let Ok(mut arrivals) = arrivals.lock()
            {
                arrivals.entry(id.to_owned()).or_insert(now);
            }
            StatusCode::NO_CONTENT
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(url)
}

/// A three-step report of about 5 KB, like a real one.
fn realistic_report() -> SequenceReport {
    let mut report = clarion_webhooks::examples::call_sms_call();
    for step in &mut report.outreach {
        if let Some(call) = &mut step.call {
            let line = "AI: I'm calling to confirm your appointment on Thursday at 10:30 with Dr. Patel at the Riverside clinic.\nUser: Let me check my calendar, I think that should work for me.\n";
            call.transcript = Some(line.repeat(8));
        }
    }
    report
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}

/// Peak resident set size (VmHWM) of this process.
pub(crate) fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kb| kb.parse::<u64>().ok())
                })
        })
        .map_or(0, |kb| kb / 1024)
}
