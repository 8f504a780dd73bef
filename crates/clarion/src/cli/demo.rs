//! `clarion demo`: a self-contained tour. One process runs the API on a temporary SQLite file,
//! the engine on a fast clock with the simulator, the webhook dispatcher, and a local receiver
//! that verifies every report's signature. It sets up an organisation, assistants and a
//! three-step template through the HTTP API, enrolls sample patients, shows progress, and
//! prints each verified report as it arrives, then the totals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clarion_delivery::{Clock, Dispatcher, SystemClock};
use clarion_server::AppState;
use clarion_store::Store;
use clarion_webhooks::{Secret, Verifier};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{DevOverrides, Overrides};

/// Engine time per real second: a simulated day takes about four seconds.
const TIME_SCALE: f64 = 20_000.0;
/// Sample patients: name, time zone (the phone numbers are fictional 555-01xx ones).
const PATIENTS: &[(&str, &str)] = &[
    ("Alex Rivera", "America/New_York"),
    ("Jordan Lee", "America/Chicago"),
    ("Sam Patel", "America/Denver"),
    ("Casey Nguyen", "America/Los_Angeles"),
    ("Riley Johnson", "Pacific/Honolulu"),
    ("Morgan Smith", "America/Anchorage"),
    ("Taylor Brown", "America/Phoenix"),
    ("Jamie Garcia", "America/New_York"),
    ("Avery Wilson", "America/Chicago"),
    ("Quinn Martinez", "America/Denver"),
    ("Dakota Anderson", "America/Los_Angeles"),
    ("Reese Thomas", "America/New_York"),
    ("Skyler Moore", "America/Chicago"),
    ("Parker Jackson", "America/Puerto_Rico"),
    ("Rowan White", "America/New_York"),
    ("Emerson Harris", "America/Los_Angeles"),
    ("Finley Clark", "America/Denver"),
    ("Hayden Lewis", "America/Chicago"),
    ("Kendall Young", "America/New_York"),
    ("Logan Hall", "Pacific/Honolulu"),
    ("Peyton Allen", "America/Chicago"),
    ("Sage King", "America/New_York"),
    ("Blake Wright", "America/Los_Angeles"),
    ("Cameron Scott", "America/Denver"),
    ("Drew Green", "America/New_York"),
    ("Elliot Baker", "America/Chicago"),
    ("Frankie Adams", "America/Phoenix"),
    ("Harper Nelson", "America/New_York"),
    ("Jesse Carter", "America/Los_Angeles"),
    ("Kai Mitchell", "America/Chicago"),
];
/// A few scripted journeys so every kind of ending shows up; the rest follow the simulator's
/// realistic mix (deterministic per sequence).
const SCRIPTS: &[&[&str]] = &[
    &["resolved"],
    &["no-answer", "voicemail", "resolved"],
    &["voicemail", "no-answer", "no-reply", "requested-callback"],
    &["opt-out"],
    &["busy", "no-answer", "declined"],
    &["escalated"],
];

pub async fn run(keep: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let database = format!("sqlite://{}", dir.path().join("demo.db").display());
    let overrides = Overrides {
        database_url: Some(database.clone()),
        webhooks: Some(DevOverrides {
            allow_private_targets: true,
            allow_http: true,
        }),
        ..Overrides::default()
    };
    let mut config = super::load_config(None, overrides)?;
    config.simulator.time_scale = TIME_SCALE;

    let store = Store::connect(&database).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let dispatcher = Dispatcher::new(
        store.clone(),
        clock.clone(),
        super::dispatcher_config(&config),
    )?;
    let engine_clock: Arc<dyn Clock> = Arc::new(clarion_scheduler::ScaledClock::new(TIME_SCALE));
    let scheduler = clarion_scheduler::Scheduler::new(
        store.clone(),
        engine_clock,
        clock.clone(),
        dispatcher.outbox(),
        super::scheduler_config(&config),
    );
    let state = AppState {
        store: store.clone(),
        outbox: dispatcher.outbox(),
        scheduler: scheduler.clone(),
        clock: clock.clone(),
        ssrf: super::ssrf_policy(&config),
        metrics: clarion_server::metrics_handle(),
        providers: clarion_server::ProviderSecrets::default(),
        action_limits: std::sync::Arc::default(),
        // The demo's API is on a loopback port of its own, for the tour only.
        operator: clarion_server::OperatorAccess::default(),
        ui: std::sync::Arc::default(),
    };
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", api_listener.local_addr()?);
    let receiver_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_url = format!("http://{}/hooks", receiver_listener.local_addr()?);

    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            axum::serve(api_listener, clarion_server::router(state))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });
    let dispatch = tokio::spawn({
        let (dispatcher, stop) = (dispatcher.clone(), stop.clone());
        async move { dispatcher.run(stop.cancelled_owned()).await }
    });
    let schedule = tokio::spawn({
        let (scheduler, stop) = (scheduler.clone(), stop.clone());
        async move { scheduler.run(stop.cancelled_owned()).await }
    });

    println!("Clarion demo: API {api}, webhook receiver {receiver_url}");
    println!(
        "  engine clock x{TIME_SCALE} (a day takes ~{:.1} s); calling hours 08:00-21:00 in each patient's zone",
        86_400.0 / TIME_SCALE
    );
    let created = store
        .create_org("Riverside Family Clinic", clock.now_millis())
        .await?;
    let (org, key) = (created.id, created.api_key.expose().to_owned());
    let _ = org;
    let api_client = ApiClient {
        http: reqwest::Client::new(),
        base: api.clone(),
        key: key.clone(),
    };
    let post = |path: &'static str, body: Value| api_client.post(path, body);
    let endpoint = post(
        "/v1/webhook-endpoints",
        json!({ "url": receiver_url, "description": "demo receiver" }),
    )
    .await?;
    let secret: Secret = endpoint["secret"].as_str().unwrap_or_default().parse()?;
    let (receiver, mut reports) = crate::receiver::router(Verifier::new(secret));
    tokio::spawn(async move { axum::serve(receiver_listener, receiver).await });

    let assistant = |name: &str, channel: &str| {
        json!({ "name": name, "channel": channel,
            "config": { "purpose": "confirm the upcoming appointment", "organisation_name": "Riverside Family Clinic" },
            "custom_fields": [
                { "name": "appointment_confirmed", "type": "boolean", "description": "The patient confirmed" },
                { "name": "preferred_contact", "type": "enum", "values": ["call", "sms"] }
            ] })
    };
    let caller = post("/v1/assistants", assistant("Appointment caller", "call")).await?;
    let texter = post("/v1/assistants", assistant("Appointment texter", "sms")).await?;
    let template = post("/v1/sequence-templates", json!({
        "name": "Appointment confirmation",
        "stop_on": ["resolved", "opt-out", "declined", "escalated"],
        "sms_timeout": "12h",
        "steps": [
            { "type": "call", "assistant_id": caller["id"], "delay": "0s", "max_attempts": 2, "retry_delay": "4h" },
            { "type": "sms", "assistant_id": texter["id"], "delay": "2h" },
            { "type": "call", "assistant_id": caller["id"], "delay": "1d" }
        ]
    }))
    .await?;
    println!(
        "  created an organisation, 2 assistants, and template {} (call, SMS, call)",
        template["id"]
    );

    let items: Vec<Value> = PATIENTS
        .iter()
        .enumerate()
        .map(|(i, (name, zone))| {
            let mut item = json!({
                "contact": { "phone_number": format!("+1555555{:04}", 1000 + i), "time_zone": zone,
                             "name": name, "external_id": format!("MRN-{:05}", 20_000 + i) },
                "variables": { "appointment_date": "Thursday, January 8", "provider_name": "Dr. Patel" },
            });
            if let Some(script) = SCRIPTS.get(i) {
                item["simulation"] = json!({ "outcomes": script });
            }
            item
        })
        .collect();
    let enrolled = post(
        "/v1/sequences/batch",
        json!({ "template_id": template["id"], "items": items }),
    )
    .await?;
    let total = enrolled["data"]
        .as_array()
        .map_or(0, |d| d.iter().filter(|r| r["status"] == 201).count());
    println!("  enrolled {total} patients\n");

    let progress = indicatif::ProgressBar::new(total as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "  {bar:40} {pos}/{len} reports delivered, {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut seen = std::collections::HashSet::new();
    let mut endings: BTreeMap<String, usize> = BTreeMap::new();
    let mut encounters = 0;
    while seen.len() < total {
        let received = tokio::time::timeout(Duration::from_secs(120), reports.recv())
            .await
            .context("no report arrived for two minutes")?
            .context("the receiver stopped")?;
        let Some(report) = received.report() else {
            continue;
        };
        if received.duplicate || !seen.insert(report.id) {
            continue;
        }
        encounters += report.outreach.len();
        *endings.entry(ending(report)).or_default() += 1;
        // To stdout, around the bar (which draws on stderr, and only on a terminal).
        let summary = crate::receiver::summarize(&received);
        progress.suspend(|| println!("{summary}\n"));
        progress.inc(1);
    }
    progress.finish();
    println!(
        "\nDone: {total} sequences, {encounters} encounters, every report signed and verified, in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    for (ending, count) in &endings {
        println!("  {count:>3}  {ending}");
    }
    if keep {
        // `--keep`: the server stays up with everything the tour made, for the dashboard.
        // The line's shape is what scripts (and the tests) read: address, then key.
        println!(
            "\nDashboard: {api}/ui (sign in with the API key {key}); API at {api}. Ctrl-C stops the demo."
        );
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    } else {
        println!(
            "\nThe API was at {api} with key {key} (it stops with the demo; `clarion demo --keep` keeps it, with its dashboard)."
        );
    }
    stop.cancel();
    let _ = tokio::join!(server, dispatch, schedule);
    Ok(())
}

struct ApiClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl ApiClient {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{path} answered {status}: {body}");
        }
        Ok(body)
    }
}

/// A short label for how a sequence ended, for the totals.
fn ending(report: &clarion_webhooks::SequenceReport) -> String {
    let last = report.outreach.last();
    match last {
        None => "ended without contact".to_owned(),
        Some(step) => match (&step.call, &step.sms) {
            (Some(call), _) => match (&call.failure_reason, &call.outcome) {
                (Some(reason), _) => format!(
                    "last call: {}",
                    serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ),
                (None, Some(outcome)) => format!("last call: {outcome}"),
                _ => "last call: unknown".to_owned(),
            },
            (None, Some(sms)) => format!(
                "last SMS: {}",
                sms.ended_reason
                    .and_then(|r| serde_json::to_value(r).ok())
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            _ => "unknown".to_owned(),
        },
    }
}
