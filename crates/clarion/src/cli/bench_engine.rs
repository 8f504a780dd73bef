//! `clarion bench engine`: sequences through the engine and the simulator at full speed,
//! from enrollment to the report received by a webhook endpoint.
//!
//! The engine runs on a manual clock that jumps straight to the next due instant whenever
//! nothing is due now (a discrete-event simulation), so a template whose steps are hours
//! apart runs as fast as the machine allows. Everything else is production code on a
//! temporary SQLite file (or the PostgreSQL database `--database` names): the scheduler's
//! transactions, the outbox, the dispatcher on the system clock, signed POSTs to a local
//! receiver. With `--nodes N` (PostgreSQL), N schedulers and N dispatchers, each on its own
//! store and connection pool, share the database and claim the work from one another, as N
//! `clarion serve` nodes would; they share this process's cores and the engine clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use clarion_delivery::ssrf::SsrfPolicy;
use clarion_delivery::{Clock, Dispatcher, ManualClock, SystemClock};
use clarion_scheduler::definition::ContactInfo;
use clarion_scheduler::{EnrollRequest, Scheduler};
use clarion_store::{Channel, Store};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Overrides;

/// The smallest jump of the engine clock when nothing is due: ten engine minutes.
const STEP_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, Clone, clap::Args)]
pub struct EngineBenchArgs {
    /// Sequences to run (three steps each).
    #[arg(long, default_value_t = 100_000)]
    pub sequences: usize,
    /// Deliveries in flight to the benchmark's one endpoint (`webhooks.max_in_flight_per_endpoint`
    /// of the run; the production default of 16 protects a receiver of unknown capacity, while
    /// this local receiver takes whatever arrives).
    #[arg(long, default_value_t = 256)]
    pub in_flight_per_endpoint: u32,
    /// The database to run on instead of a temporary SQLite file: a `postgres://` URL naming
    /// an empty database.
    #[arg(long)]
    pub database: Option<String>,
    /// Nodes sharing the work (PostgreSQL only); enrollments are spread over them.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
}

pub async fn engine(args: EngineBenchArgs) -> anyhow::Result<()> {
    let config = super::load_config(None, Overrides::default())?;
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
    let options = super::throwaway_store_options();
    let store = Store::connect_with(&database, options.clone()).await?;
    let real: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine_clock = ManualClock::starting_now();
    let mut dispatcher_config = super::dispatcher_config(&config);
    dispatcher_config.max_in_flight_per_endpoint = args.in_flight_per_endpoint;
    dispatcher_config.ssrf = SsrfPolicy {
        allow_private: true,
        allow_http: true,
        ..SsrfPolicy::default()
    };
    let mut scheduler_config = super::scheduler_config(&config);
    scheduler_config.batch_size = 512;
    // One node: a store, its dispatcher, and a scheduler queueing reports through that
    // dispatcher's outbox.
    let mut nodes = Vec::new();
    for node in 0..args.nodes.max(1) {
        let store = if node == 0 {
            store.clone()
        } else {
            Store::connect_with(&database, options.clone()).await?
        };
        let dispatcher = Dispatcher::new(store.clone(), real.clone(), dispatcher_config.clone())?;
        let scheduler = Scheduler::new(
            store,
            Arc::new(engine_clock.clone()),
            real.clone(),
            dispatcher.outbox(),
            scheduler_config.clone(),
        );
        nodes.push((scheduler, dispatcher));
    }

    let received = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let counter = received.clone();
    let router = Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
    });
    tokio::spawn(async move { axum::serve(listener, router).await });

    let now = real.now_millis();
    let org = store.create_org("Benchmark", now).await?.id;
    let secret = clarion_webhooks::Secret::from_bytes(&[9; 32])?.to_whsec();
    store
        .create_endpoint(
            org,
            &url,
            "bench",
            clarion_store::DEFAULT_EVENT_TYPES,
            &secret,
            now,
        )
        .await?;
    let profile = json!({ "purpose": "confirm the upcoming appointment", "organisation_name": "Riverside Family Clinic" });
    let fields = json!([{ "name": "appointment_confirmed", "type": "boolean" }]);
    let caller = store
        .create_assistant(org, "Caller", Channel::Call, &profile, &fields, now)
        .await?;
    let texter = store
        .create_assistant(org, "Texter", Channel::Sms, &profile, &fields, now)
        .await?;
    let definition = json!({
        "steps": [
            { "channel": "call", "assistant_id": caller.id.0, "delay_ms": 0, "max_attempts": 1, "retry_delay_ms": 0 },
            { "channel": "sms", "assistant_id": texter.id.0, "delay_ms": 3_600_000, "max_attempts": 1, "retry_delay_ms": 0 },
            { "channel": "call", "assistant_id": caller.id.0, "delay_ms": 3_600_000, "max_attempts": 1, "retry_delay_ms": 0 },
        ],
        "stop_on": [],
        "calling_hours": null,
        "sms_timeout_ms": 3_600_000,
    });
    let template = store
        .create_template(org, "Three steps", &definition, now)
        .await?;

    println!(
        "clarion bench engine: {} sequences x 3 steps (call, sms, call), simulator, {}, \
         {} node(s), {} deliveries in flight to the endpoint",
        args.sequences,
        if postgres { "PostgreSQL" } else { "SQLite" },
        nodes.len(),
        args.in_flight_per_endpoint
    );
    let stop = CancellationToken::new();
    let mut dispatching = tokio::task::JoinSet::new();
    for (_, dispatcher) in &nodes {
        let (dispatcher, stop) = (dispatcher.clone(), stop.clone());
        dispatching.spawn(async move { dispatcher.run(stop.cancelled_owned()).await });
    }
    let started = Instant::now();
    for (chunk, chunk_start) in (0..args.sequences).step_by(1000).enumerate() {
        let scheduler = &nodes[chunk % nodes.len()].0;
        let requests = (chunk_start..(chunk_start + 1000).min(args.sequences))
            .map(|i| EnrollRequest {
                template_id: template.template_id,
                contact: ContactInfo {
                    phone_number: format!("+1555{:07}", i),
                    time_zone: "America/New_York".to_owned(),
                    name: Some("Pat Doe".to_owned()),
                    external_id: None,
                    state: None,
                },
                variables: serde_json::Map::new(),
                simulation: Some(json!({ "outcomes": ["unresolved", "no-reply", "resolved"] })),
                idempotency_key: None,
                allow_concurrent: false,
            })
            .collect();
        for result in scheduler.enroll_many(org, requests).await? {
            result?;
        }
    }
    let enrolled_secs = started.elapsed().as_secs_f64();
    println!("  enrolled in {enrolled_secs:.1} s");
    let target = args.sequences as u64;
    let mut last_print = Instant::now();
    loop {
        // Every node's scheduler takes a pass at once; they claim due work from one another.
        let passes = futures::future::try_join_all(
            nodes.iter().map(|(scheduler, _)| scheduler.run_due_now()),
        )
        .await?;
        let moved: usize = passes.into_iter().sum();
        if moved == 0 {
            match nodes[0].0.next_due_at().await? {
                // Jump to the next due instant, and at least a few engine minutes on, so that
                // encounters ending seconds apart are handled in one batch (one transaction)
                // instead of one fsync each.
                Some(next) => {
                    engine_clock.set_millis(next.max(engine_clock.now_millis() + STEP_MS))
                }
                None => break,
            }
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            println!(
                "  ... {:.0} s: {} reports received",
                started.elapsed().as_secs_f64(),
                received.load(Ordering::Relaxed)
            );
            last_print = Instant::now();
        }
    }
    let engine_done = started.elapsed().as_secs_f64();
    while received.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(20)).await;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "reports stopped arriving"
        );
    }
    let total = started.elapsed().as_secs_f64();
    let encounters = args.sequences * 3;
    println!(
        "  engine finished every sequence in {engine_done:.1} s; last report received at {total:.1} s"
    );
    println!(
        "  {:.0} sequences/s, {:.0} encounters/s (enrollment to report received), peak RSS {} MiB",
        args.sequences as f64 / total,
        encounters as f64 / total,
        super::bench::peak_rss_mib()
    );
    stop.cancel();
    dispatching.join_all().await;
    Ok(())
}
