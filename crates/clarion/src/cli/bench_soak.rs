//! `clarion bench soak`: a long steady run, to show that memory stays flat, the webhook queue
//! drains and no report is lost while a receiver keeps failing.
//!
//! Like `bench api`, a real `clarion serve` child on a fresh SQLite file (with `--dev` and a
//! fast simulator clock), enrolled through `POST /v1/sequences` at a steady rate. The receiver
//! here answers 500 to about 30 % of attempts (spread evenly, no RNG) and 204 to the rest, so about a third
//! of the reports are retried, some several times. The server's retry schedule is shortened
//! to seconds (`[webhooks] retry_schedule`, ten attempts) so that retries happen within the
//! run rather than hours later; every other setting is the production default.
//!
//! Every minute it prints the server's RSS, the queue depth (`clarion_webhook_queue_depth`
//! from `/metrics`), accepted enrollments and reports delivered so far. At the end it waits for
//! the queue to drain (at most 10 minutes) and prints lost = accepted − delivered (distinct
//! sequences whose report arrived). Not run in CI: it takes as long as `--duration` says.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::bench_api::{Api, Server, organisation_for_bench};

#[derive(Debug, Clone, clap::Args)]
pub struct SoakBenchArgs {
    /// How long to enroll for.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Enrollments per second.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// Share of attempts the receiver answers 500, in percent.
    #[arg(long, default_value_t = 30)]
    pub fail_percent: u32,
    /// How often to print the figures.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub every: Duration,
}

/// What the receiver has seen.
#[derive(Debug, Default)]
struct Seen {
    attempts: AtomicUsize,
    failed: AtomicUsize,
    /// Sequences whose report was answered 204.
    delivered: Mutex<HashSet<i64>>,
}

impl Seen {
    fn delivered(&self) -> usize {
        self.delivered.lock().map_or(0, |set| set.len())
    }
}

pub async fn soak(args: SoakBenchArgs) -> anyhow::Result<()> {
    if args.fail_percent >= 100 {
        bail!("--fail-percent must be below 100");
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let database = format!("sqlite://{}", dir.path().join("soak.db").display());
    let (key, secret_key) = organisation_for_bench(&database, "Soak benchmark").await?;

    let config_path = dir.path().join("clarion.toml");
    std::fs::write(
        &config_path,
        "[simulator]\ntime_scale = 100000.0\n\n[webhooks]\n\
         retry_schedule = [\"0s\", \"1s\", \"2s\", \"4s\", \"8s\", \"15s\", \"30s\", \"30s\", \"30s\", \"30s\"]\n",
    )?;
    let server = Server::start(&database, &config_path, &secret_key).await?;
    let seen = Arc::new(Seen::default());
    let receiver = start_failing_receiver(seen.clone(), args.fail_percent).await?;
    let http = reqwest::Client::new();
    let api = Api {
        http: http.clone(),
        base: server.base.clone(),
        key,
    };
    api.post(
        "/v1/webhook-endpoints",
        &json!({ "url": receiver, "description": "soak receiver" }),
    )
    .await?;
    let assistant = api
        .post(
            "/v1/assistants",
            &json!({ "name": "Caller", "channel": "call", "config": {} }),
        )
        .await?["id"]
        .clone();
    let template = api
        .post(
            "/v1/sequence-templates",
            &json!({
                "name": "Soak",
                "steps": [{ "type": "call", "assistant_id": assistant, "delay": "0s", "max_attempts": 1, "retry_delay": "0s" }],
                "stop_on": ["resolved", "opt-out"],
                "calling_hours": null,
            }),
        )
        .await?["id"]
        .clone();

    println!("clarion bench soak");
    println!(
        "  {} enrollments/s for {}; the receiver answers 500 to {} % of attempts; retry schedule in seconds",
        args.rate,
        humantime::format_duration(args.duration),
        args.fail_percent
    );
    println!("  minute  rss_mib  queue_depth  accepted  delivered  behind  attempts  failed");

    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let total = (f64::from(args.rate) * args.duration.as_secs_f64()) as usize;
    let enroller = {
        let (http, base, key) = (http.clone(), api.base.clone(), api.key.clone());
        let (accepted, refused) = (accepted.clone(), refused.clone());
        tokio::spawn(async move {
            let mut in_flight = tokio::task::JoinSet::new();
            for i in 0..total {
                tokio::time::sleep_until((started + interval.mul_f64(i as f64)).into()).await;
                let body = json!({
                    "template_id": template,
                    "contact": { "phone_number": format!("+1555{:07}", i + 1), "time_zone": "America/New_York" },
                    "simulation": { "outcomes": ["resolved"] },
                });
                let request = http
                    .post(format!("{base}/v1/sequences"))
                    .bearer_auth(&key)
                    .json(&body);
                let (accepted, refused) = (accepted.clone(), refused.clone());
                in_flight.spawn(async move {
                    match request.send().await {
                        Ok(answer) if answer.status() == reqwest::StatusCode::CREATED => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                while in_flight.try_join_next().is_some() {}
            }
            while in_flight.join_next().await.is_some() {}
        })
    };

    let print_line = |label: String, depth: Option<u64>| {
        let accepted = accepted.load(Ordering::Relaxed);
        let delivered = seen.delivered();
        println!(
            "  {label:>6}  {:>7}  {:>11}  {accepted:>8}  {delivered:>9}  {:>6}  {:>8}  {:>6}",
            server.rss_mib(),
            depth.map_or_else(|| "?".to_owned(), |d| d.to_string()),
            accepted.saturating_sub(delivered),
            seen.attempts.load(Ordering::Relaxed),
            seen.failed.load(Ordering::Relaxed),
        );
    };
    let mut next_print = started + args.every;
    while !enroller.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= next_print {
            let minutes = started.elapsed().as_secs_f64() / 60.0;
            print_line(
                format!("{minutes:.1}"),
                queue_depth(&http, &server.base).await,
            );
            next_print += args.every;
        }
    }
    enroller.await?;
    let enrolled_in = started.elapsed();

    // Drain: every accepted report delivered and nothing pending, or 10 minutes.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut depth = queue_depth(&http, &server.base).await;
    while Instant::now() < deadline
        && (seen.delivered() < accepted.load(Ordering::Relaxed) || depth != Some(0))
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        depth = queue_depth(&http, &server.base).await;
    }
    let drained_in = started.elapsed() - enrolled_in;
    print_line("end".to_owned(), depth);
    let accepted = accepted.load(Ordering::Relaxed);
    let delivered = seen.delivered();
    println!(
        "  accepted {accepted} ({} refused); queue drained {:.1} s after the last enrollment; \
         lost = accepted - delivered = {}; server peak RSS {} MiB",
        refused.load(Ordering::Relaxed),
        drained_in.as_secs_f64(),
        accepted.saturating_sub(delivered),
        server.peak_rss_mib()
    );
    server.stop().await;
    if delivered < accepted {
        bail!(
            "{} accepted enrollments' reports were lost",
            accepted - delivered
        );
    }
    Ok(())
}

/// `clarion_webhook_queue_depth` from the server's `/metrics` (open under `--dev`).
async fn queue_depth(http: &reqwest::Client, base: &str) -> Option<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("clarion_webhook_queue_depth "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

/// A receiver that answers 500 to `fail_percent` % of attempts, spread evenly, and 204 otherwise,
/// noting which sequences' reports it accepted.
async fn start_failing_receiver(seen: Arc<Seen>, fail_percent: u32) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let router = Router::new().fallback(move |body: axum::body::Bytes| {
        let seen = seen.clone();
        async move {
            let n = seen.attempts.fetch_add(1, Ordering::Relaxed) as u64;
            // A Fibonacci hash of the attempt's number: spread like random draws, no RNG.
            if (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 100 < u64::from(fail_percent) {
                seen.failed.fetch_add(1, Ordering::Relaxed);
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|report| report["id"].as_i64());
            if let (Some(id), Ok(mut delivered)) = (id, seen.delivered.lock()) {
                delivered.insert(id);
            }
            StatusCode::NO_CONTENT
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(url)
}
