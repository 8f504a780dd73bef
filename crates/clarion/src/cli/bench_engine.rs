//! `clarion bench engine`: sequences through the engine and the simulator at full speed,
//! from enrollment to the report received by a webhook endpoint.
//!
//! The engine runs on a manual clock that jumps straight to the next due instant whenever
//! nothing is due now (a discrete-event simulation), so a template whose steps are hours
//! apart runs as fast as the machine allows. Everything else is production code on a
//! temporary SQLite file: the scheduler's transactions, the outbox, the dispatcher on the
//! system clock, signed POSTs to a local receiver.

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
}

pub async fn engine(args: EngineBenchArgs) -> anyhow::Result<()> {
    let config = super::load_config(None, Overrides::default())?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let database = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = Store::connect_with(&database, super::throwaway_store_options()).await?;
    let real: Arc<dyn Clock> = Arc::new(SystemClock);
    let engine_clock = ManualClock::starting_now();
    let mut dispatcher_config = super::dispatcher_config(&config);
    dispatcher_config.max_in_flight_per_endpoint = args.in_flight_per_endpoint;
    dispatcher_config.ssrf = SsrfPolicy {
        allow_private: true,
        allow_http: true,
        ..SsrfPolicy::default()
    };
    let dispatcher = Dispatcher::new(store.clone(), real.clone(), dispatcher_config)?;
    let mut scheduler_config = super::scheduler_config(&config);
    scheduler_config.batch_size = 512;
    let scheduler = Scheduler::new(
        store.clone(),
        Arc::new(engine_clock.clone()),
        real.clone(),
        dispatcher.outbox(),
        scheduler_config,
    );

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
        .create_endpoint(org, &url, "bench", &secret, now)
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
        "clarion bench engine: {} sequences x 3 steps (call, sms, call), simulator, SQLite, \
         {} deliveries in flight to the endpoint",
        args.sequences, args.in_flight_per_endpoint
    );
    let stop = CancellationToken::new();
    let dispatching = tokio::spawn({
        let (dispatcher, stop) = (dispatcher.clone(), stop.clone());
        async move { dispatcher.run(stop.cancelled_owned()).await }
    });
    let started = Instant::now();
    for chunk_start in (0..args.sequences).step_by(1000) {
        let requests = (chunk_start..(chunk_start + 1000).min(args.sequences))
            .map(|i| EnrollRequest {
                template_id: template.template_id,
                contact: ContactInfo {
                    phone_number: format!("+1555{:07}", i),
                    time_zone: "America/New_York".to_owned(),
                    name: Some("Pat Doe".to_owned()),
                    external_id: None,
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
        let moved = scheduler.run_due_now().await?;
        if moved == 0 {
            match scheduler.next_due_at().await? {
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
    let _ = dispatching.await;
    Ok(())
}
