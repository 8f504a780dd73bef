//! `clarion bench api`: what a customer sees, end to end through the public API.
//!
//! A real `clarion serve` child process (this same binary) on a fresh SQLite file, with the
//! production configuration except two settings a loopback benchmark needs: webhook targets on
//! loopback over plain http (`--dev`), and the simulator's engine clock run fast
//! (`[simulator] time_scale`) so that a simulated call of a few minutes ends at once, as the
//! "resolves at once" item of the comparison needs. The load generator here sends
//! `POST /v1/sequences` over many keep-alive connections; a receiver in this process verifies
//! every report's Standard Webhooks signature and notes its arrival.
//!
//! Two modes: `burst` (N enrollments as fast as C connections allow) and `paced` (R per second
//! for T). It prints accepted/s, delivered/s, enroll → report latency (p50/p99/max, from the
//! moment the request is sent to the report's arrival), the server's CPU seconds per item and
//! peak RSS (read from `/proc/<pid>`), and the database's bytes per sequence.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use clarion_store::secret_keys::{SecretKey, SecretKeys};
use clarion_store::{Store, StoreOptions};
use clarion_webhooks::{Secret, Verifier, WebhookHeaders};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

/// How the enrollments are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMode {
    /// `--items` enrollments as fast as `--concurrency` connections allow.
    Burst,
    /// `--rate` enrollments per second for `--duration`.
    Paced,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ApiBenchArgs {
    /// Burst or paced.
    #[arg(long, value_enum, default_value_t = LoadMode::Burst)]
    pub mode: LoadMode,
    /// Enrollments in a burst.
    #[arg(long, default_value_t = 10_000)]
    pub items: usize,
    /// Connections (requests in flight at once).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Offered enrollments per second (paced mode).
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// How long to offer them (paced mode).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Steps per sequence: 1 (one call, resolved) or 3 (two unanswered calls, then resolved).
    #[arg(long, default_value_t = 1)]
    pub steps: u8,
    /// Approximate size of each enrollment's `variables`, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub variables_bytes: usize,
    /// How much faster than real time the server's engine clock runs.
    #[arg(long, default_value_t = 100_000.0)]
    pub time_scale: f64,
    /// Put the server's database in this (new or empty) folder and keep it afterwards, to
    /// read where the time went (`sequences`, `encounters`, `webhook_messages` and
    /// `webhook_attempts` carry each stage's time). A temporary folder otherwise.
    #[arg(long)]
    pub keep_database_in: Option<std::path::PathBuf>,
}

/// The operator's step on a fresh benchmark database: an organisation and its API key, as
/// `clarion org create` makes them, and a secret key of the bench's own for the server (no key
/// file, no warning). Answers (API key, secret key).
pub(crate) async fn organisation_for_bench(
    database: &str,
    name: &str,
) -> anyhow::Result<(String, SecretKey)> {
    let secret_key = SecretKey::generate();
    let options = StoreOptions {
        secret_keys: Some(SecretKeys::new(secret_key.clone())),
        ..StoreOptions::default()
    };
    let store = Store::connect_with(database, options).await?;
    let created = store
        .create_org(name, chrono::Utc::now().timestamp_millis())
        .await?;
    let key = created.api_key.expose().to_owned();
    store.close().await;
    Ok((key, secret_key))
}

/// When each report arrived, by the report's sequence id.
type Arrivals = Arc<Mutex<HashMap<i64, Instant>>>;

pub async fn api(args: ApiBenchArgs) -> anyhow::Result<()> {
    if !matches!(args.steps, 1 | 3) {
        bail!("--steps must be 1 or 3");
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let database_folder = match &args.keep_database_in {
        Some(folder) => {
            std::fs::create_dir_all(folder).context("creating the database folder")?;
            if std::fs::read_dir(folder)?.next().is_some() {
                bail!("{} is not empty", folder.display());
            }
            folder.clone()
        }
        None => dir.path().to_owned(),
    };
    let database_path = database_folder.join("bench.db");
    let database = format!("sqlite://{}", database_path.display());
    let (key, secret_key) = organisation_for_bench(&database, "API benchmark").await?;

    let config_path = dir.path().join("clarion.toml");
    std::fs::write(
        &config_path,
        format!("[simulator]\ntime_scale = {}\n", args.time_scale),
    )?;
    let server = Server::start(&database, &config_path, &secret_key).await?;
    let base = server.base.clone();

    let rejected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let arrivals: Arrivals = Arc::default();
    // The receiver starts before the endpoint exists (its URL is the endpoint's), so the
    // verifier for the endpoint's secret is set once the endpoint is created.
    let verifier: Arc<std::sync::OnceLock<Verifier>> = Arc::default();
    let receiver = start_receiver(arrivals.clone(), rejected.clone(), verifier.clone()).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(1))
        .build()?;
    let api = Api {
        http: http.clone(),
        base: base.clone(),
        key,
    };
    let secret = api
        .post(
            "/v1/webhook-endpoints",
            &json!({ "url": receiver, "description": "bench receiver" }),
        )
        .await?["secret"]
        .as_str()
        .context("the endpoint's secret")?
        .to_owned();
    let _ = verifier.set(Verifier::new(
        secret.parse::<Secret>().context("the endpoint's secret")?,
    ));
    let assistant = api
        .post(
            "/v1/assistants",
            &json!({ "name": "Caller", "channel": "call", "config": {} }),
        )
        .await?["id"]
        .clone();
    let steps: Vec<Value> = (0..args.steps)
        .map(|_| json!({ "type": "call", "assistant_id": assistant, "delay": "0s", "max_attempts": 1, "retry_delay": "0s" }))
        .collect();
    let template = api
        .post(
            "/v1/sequence-templates",
            &json!({ "name": "Bench", "steps": steps, "stop_on": ["resolved", "opt-out"], "calling_hours": null }),
        )
        .await?["id"]
        .clone();
    let outcomes: Vec<&str> = match args.steps {
        1 => vec!["resolved"],
        _ => vec!["no-answer", "no-answer", "resolved"],
    };
    // A variable's value is at most 1,024 characters: the size is spread over several.
    let mut filler = serde_json::Map::new();
    let mut left = args.variables_bytes;
    while left > 0 {
        let chunk = left.min(1_000);
        filler.insert(
            format!("note_{}", filler.len()),
            Value::from("x".repeat(chunk)),
        );
        left -= chunk;
    }

    println!("clarion bench api");
    println!(
        "  machine: {} cores; server: clarion serve (child), SQLite WAL synchronous=FULL, time_scale {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        args.time_scale
    );
    println!(
        "  items: {}-step simulated sequences, ~{} B of variables, {} connections",
        args.steps, args.variables_bytes, args.concurrency
    );

    let cpu_before = server.cpu_seconds();
    let total = match args.mode {
        LoadMode::Burst => args.items,
        LoadMode::Paced => (f64::from(args.rate) * args.duration.as_secs_f64()) as usize,
    };
    let interval = match args.mode {
        LoadMode::Burst => None,
        LoadMode::Paced => Some(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)))),
    };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let phase = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (http, base, key) = (http.clone(), base.clone(), api.key.clone());
        let (next, sent, errors) = (next.clone(), sent.clone(), errors.clone());
        let (template, outcomes, filler) = (template.clone(), outcomes.clone(), filler.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if let Some(interval) = interval {
                    // Paced: item i is offered at its slot, whichever worker takes it.
                    let due = phase + interval.mul_f64(i as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let body = json!({
                    "template_id": template,
                    "contact": { "phone_number": format!("+1555{:07}", i + 1), "time_zone": "America/New_York" },
                    "variables": filler,
                    "simulation": { "outcomes": outcomes },
                });
                let started = Instant::now();
                let answer = http
                    .post(format!("{base}/v1/sequences"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await;
                match answer {
                    Ok(response) if response.status() == reqwest::StatusCode::CREATED => {
                        let id = response
                            .json::<Value>()
                            .await
                            .ok()
                            .and_then(|v| v["id"].as_i64());
                        if let (Some(id), Ok(mut sent)) = (id, sent.lock()) {
                            sent.insert(id, started);
                        }
                    }
                    Ok(response) => {
                        if errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                            let status = response.status();
                            let body = response.text().await.unwrap_or_default();
                            eprintln!("  first refusal: {status} {body}");
                        }
                    }
                    Err(error) => {
                        if errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                            eprintln!("  first failure: {error}");
                        }
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let accepted_at = phase.elapsed();
    let accepted = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.len();
    // Every accepted enrollment's report must arrive; a bounded wait, then report what is missing.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let arrived = arrivals
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .len();
        if arrived >= accepted || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered_at = phase.elapsed();
    let cpu = server.cpu_seconds() - cpu_before;
    let sent = sent
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let arrivals = arrivals
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let latencies = super::bench::Latencies::between(sent, &arrivals);
    let failed = errors.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "  accepted: {accepted} of {total} in {:.2} s = {:.0}/s ({failed} refused or failed)",
        accepted_at.as_secs_f64(),
        accepted as f64 / accepted_at.as_secs_f64()
    );
    println!(
        "  delivered: {} reports, all in {:.2} s = {:.0}/s; {} signatures rejected",
        latencies.count(),
        delivered_at.as_secs_f64(),
        latencies.count() as f64 / delivered_at.as_secs_f64(),
        rejected.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("  enroll -> report: {latencies}");
    println!(
        "  server: {:.2} ms CPU per item, peak RSS {} MiB",
        cpu * 1000.0 / accepted.max(1) as f64,
        server.peak_rss_mib()
    );
    // The write-ahead log while the server idles: the dispatcher records the last outcomes
    // and the background checkpointer runs (every 200 ms) before this looks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "  WAL at rest: {:.1} MiB (2 s after the last report, server running)",
        file_size(&database_folder.join("bench.db-wal")) as f64 / 1_048_576.0
    );
    server.stop().await;
    let bytes = file_size(&database_path)
        + file_size(&database_folder.join("bench.db-wal"))
        + file_size(&database_folder.join("bench.db-shm"));
    println!(
        "  database: {:.1} MiB after stop = {:.0} bytes per sequence",
        bytes as f64 / 1_048_576.0,
        bytes as f64 / accepted.max(1) as f64
    );
    if latencies.count() < accepted {
        bail!(
            "{} accepted enrollments' reports did not arrive",
            accepted - latencies.count()
        );
    }
    Ok(())
}

/// A receiver that verifies each report's signature and notes when it arrived. A report that
/// does not verify is answered 400 (and counted), so a signing fault shows.
async fn start_receiver(
    arrivals: Arrivals,
    rejected: Arc<std::sync::atomic::AtomicUsize>,
    verifier: Arc<std::sync::OnceLock<Verifier>>,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let router = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let (arrivals, rejected, verifier) = (arrivals.clone(), rejected.clone(), verifier.clone());
        async move {
            let now = Instant::now();
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            let webhook = WebhookHeaders {
                id: header("webhook-id"),
                timestamp: header("webhook-timestamp"),
                signature: header("webhook-signature"),
            };
            let verified = verifier
                .get()
                .is_some_and(|v| v.verify(&webhook, &body).is_ok());
            if !verified {
                rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return StatusCode::BAD_REQUEST;
            }
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|report| report["id"].as_i64());
            if let (Some(id), Ok(mut arrivals)) = (id, arrivals.lock()) {
                arrivals.entry(id).or_insert(now);
            }
            StatusCode::NO_CONTENT
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(url)
}

/// The API as the benchmark's set-up calls it.
pub(super) struct Api {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) key: String,
}

impl Api {
    pub(super) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        if !status.is_success() {
            bail!("{path} answered {status}: {answer}");
        }
        Ok(answer)
    }
}

/// The `clarion serve` child process.
pub(super) struct Server {
    child: tokio::process::Child,
    pid: u32,
    pub(super) base: String,
}

impl Server {
    pub(super) async fn start(
        database: &str,
        config: &Path,
        secret_key: &SecretKey,
    ) -> anyhow::Result<Self> {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--database"])
            .arg(database)
            .arg("--config")
            .arg(config)
            .env("CLARION_SECRET_KEY", secret_key.to_base64())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("starting clarion serve")?;
        let pid = child.id().context("the server's pid")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the server did not start in 30 s")??
            .context("the server exited")?;
        let base = first
            .strip_prefix("listening on ")
            .context("the server's first line")?
            .to_owned();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, pid, base })
    }

    /// User and system CPU seconds the server has used (`/proc/<pid>/stat`, in clock ticks of
    /// 1/100 s, the Linux default).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name (which is in parentheses and may hold spaces).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        ticks(11).unwrap_or(0.0) / 100.0 + ticks(12).unwrap_or(0.0) / 100.0
    }

    pub(super) fn peak_rss_mib(&self) -> u64 {
        self.status_mib("VmHWM:")
    }

    /// The server's resident set size now.
    pub(super) fn rss_mib(&self) -> u64 {
        self.status_mib("VmRSS:")
    }

    /// A `/proc/<pid>/status` figure given in kB, in MiB.
    fn status_mib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024)
    }

    pub(super) async fn stop(mut self) {
        // SIGTERM: a graceful stop that checkpoints the log; then wait for it.
        if let Ok(pid) = i32::try_from(self.pid) {
            // Through the `kill` command: no `unsafe` libc call in this crate for one signal.
            let _ = tokio::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
