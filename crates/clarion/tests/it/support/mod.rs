//! Test support: an in-process Clarion (store on a test database of its own, API on port 0,
//! a dispatcher driven synchronously on a manual clock) and a receiver whose answers a test
//! can change mid-test.
//!
//! The database is a fresh SQLite file, or, when `CLARION_TEST_DATABASE_URL` names a
//! PostgreSQL server, a database of the test's own on it, dropped with the test
//! (`clarion_store::testing`): `scripts/test` runs this suite once on each.
#![allow(clippy::unwrap_used)] // test support fails loudly by design

pub mod fake_llm;
pub mod fake_twilio;
pub mod fake_vapi;
pub mod postgres;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clarion::config::{Config, Overrides};
use clarion_delivery::ssrf::SsrfPolicy;
use clarion_delivery::{Clock, Dispatcher, DispatcherConfig, ManualClock};
use clarion_server::AppState;
use clarion_store::testing::TestDatabase;
use clarion_store::{Channel, OrgId, Store};
use serde_json::Value;
use tokio::sync::Notify;

/// How long a test waits for something that should happen, before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct TestApp {
    pub base: String,
    /// The operator listener's address, when the test asked for one.
    pub admin_base: Option<String>,
    pub http: reqwest::Client,
    pub store: Store,
    pub dispatcher: Dispatcher,
    pub scheduler: clarion_scheduler::Scheduler,
    pub clock: ManualClock,
    pub config: DispatcherConfig,
    /// The database's URL, for the operator's CLI commands (with [`TestApp::secret_key`]).
    pub database_url: String,
    /// The test's database, dropped with it.
    pub database: TestDatabase,
}

/// The embedded default configuration's dispatcher settings, as `clarion serve` builds them.
pub fn default_dispatcher_config() -> DispatcherConfig {
    let config = Config::load(None, Overrides::default()).unwrap();
    clarion::cli::dispatcher_config(&config)
}

pub struct AppOptions {
    pub dispatcher: DispatcherConfig,
    /// The policy the API checks endpoint URLs against.
    pub api_ssrf: SsrfPolicy,
    pub contact_caps: Option<clarion_scheduler::ContactCaps>,
    /// Calls through Vapi (a fake's address) with this server secret, instead of the
    /// simulator.
    pub vapi: Option<(clarion_providers::vapi::client::VapiSettings, String)>,
    /// With `vapi`: Vapi's callbacks must carry this HMAC credential's signature (default
    /// headers, a five-minute window on the test clock).
    pub vapi_hmac_secret: Option<String>,
    /// Texts through Twilio (a fake's address) instead of the simulator; the public base URL
    /// is the test server's own address.
    pub twilio: Option<clarion_providers::twilio::client::TwilioSettings>,
    /// The model behind LLM SMS assistants (a fake's address).
    pub llm: Option<clarion_providers::llm::LlmSettings>,
    /// Organisations' own Twilio senders.
    pub twilio_senders: std::collections::HashMap<OrgId, clarion_providers::twilio::wire::Sender>,
    /// Who may read `/metrics`; with `metrics_on_admin_listener`, an operator listener is
    /// started too ([`TestApp::admin_base`]).
    pub operator: clarion_server::OperatorAccess,
    /// The provider capacity governor's limits, when not the embedded defaults.
    pub limits: Option<clarion_scheduler::ProviderLimits>,
    /// The listeners' client limits (timeouts, connections): the embedded defaults unless a
    /// test shortens them.
    pub server: clarion_server::ServerLimits,
    /// A SQLite file with the key file beside it (as `clarion serve` draws it without
    /// `CLARION_SECRET_KEY`) whatever `CLARION_TEST_DATABASE_URL` names: for tests of the
    /// database files themselves.
    pub sqlite_key_file: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        let mut dispatcher = default_dispatcher_config();
        dispatcher.ssrf = dev_policy();
        dispatcher.attempt_timeout = Duration::from_secs(5);
        Self {
            dispatcher,
            api_ssrf: dev_policy(),
            contact_caps: None,
            vapi: None,
            vapi_hmac_secret: None,
            twilio: None,
            llm: None,
            twilio_senders: std::collections::HashMap::new(),
            operator: clarion_server::OperatorAccess::default(),
            limits: None,
            server: Config::load(None, Overrides::default())
                .unwrap()
                .server
                .limits(),
            sqlite_key_file: false,
        }
    }
}

/// Why `report` does not validate against the committed End of Sequence Report schema (the
/// receivers' contract) or against the stricter schema of what Clarion sends (every documented
/// key present, `null` where unknown); empty when it meets both.
pub fn schema_errors(report: &Value) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/end-of-sequence-report.schema.json"
    );
    let published: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let as_sent = clarion_webhooks::schema::report_schema_as_sent();
    let mut errors = Vec::new();
    for (name, schema) in [("published", published), ("as sent", as_sent)] {
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        errors.extend(
            validator
                .iter_errors(report)
                .map(|e| format!("{name}: {e} at {}", e.instance_path())),
        );
    }
    errors
}

pub fn dev_policy() -> SsrfPolicy {
    SsrfPolicy {
        allow_private: true,
        allow_http: true,
        ..SsrfPolicy::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let database = if options.sqlite_key_file {
        TestDatabase::sqlite_with_key_file()
    } else {
        TestDatabase::create().await
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let url = database.url().to_owned();
    let store = database.open().await.unwrap();
    let clock = ManualClock::starting_now();
    let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let dispatcher = Dispatcher::new(
        store.clone(),
        shared_clock.clone(),
        options.dispatcher.clone(),
    )
    .unwrap();
    let mut scheduler_config =
        clarion::cli::scheduler_config(&Config::load(None, Overrides::default()).unwrap());
    scheduler_config.contact_caps = options.contact_caps;
    // Eligibility hooks on loopback receivers, as webhook endpoints are.
    scheduler_config.eligibility_ssrf = dev_policy();
    if let Some(limits) = options.limits {
        scheduler_config.limits = limits;
    }
    let mut providers = clarion_server::ProviderSecrets::default();
    if let Some((settings, secret)) = options.vapi {
        scheduler_config.vapi =
            Some(clarion_providers::vapi::client::VapiClient::new(settings).unwrap());
        providers.vapi = Some(secret);
        providers.vapi_hmac = options
            .vapi_hmac_secret
            .map(|secret| clarion_server::VapiHmac {
                secret: clarion_providers::vapi::signature::HmacSecret::new(secret),
                signature_header: "x-signature".to_owned(),
                timestamp_header: "x-timestamp".to_owned(),
                window: Duration::from_secs(300),
            });
    }
    if let Some(settings) = options.llm {
        scheduler_config.llm = Some(clarion_providers::llm::LlmClient::new(settings).unwrap());
    }
    if let Some(settings) = options.twilio {
        providers.twilio = Some(clarion_server::TwilioCallbacks {
            auth_token: settings.auth_token.clone(),
            public_base_url: base.clone(),
        });
        scheduler_config.twilio = Some(clarion_scheduler::TwilioChannel {
            account_sid: settings.account_sid.clone(),
            client: clarion_providers::twilio::client::TwilioClient::new(settings).unwrap(),
            public_base_url: base.clone(),
            senders: options.twilio_senders.clone(),
        });
    }
    let scheduler = clarion_scheduler::Scheduler::new(
        store.clone(),
        shared_clock.clone(),
        shared_clock.clone(),
        dispatcher.outbox(),
        scheduler_config,
    );
    let state = AppState {
        store: store.clone(),
        outbox: dispatcher.outbox(),
        scheduler: scheduler.clone(),
        clock: shared_clock,
        ssrf: options.api_ssrf,
        metrics: clarion_server::metrics_handle(),
        providers,
        action_limits: std::sync::Arc::default(),
        operator: options.operator,
        ui: std::sync::Arc::default(),
    };
    let admin_base = if state.operator.metrics_on_admin_listener {
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_base = format!("http://{}", admin_listener.local_addr().unwrap());
        let admin_router = clarion_server::admin_router(state.clone());
        let limits = options.server;
        tokio::spawn(async move {
            clarion_server::serve(admin_listener, admin_router, limits, Default::default())
                .await
                .unwrap();
        });
        Some(admin_base)
    } else {
        None
    };
    let limits = options.server;
    tokio::spawn(async move {
        clarion_server::serve(
            listener,
            clarion_server::router(state),
            limits,
            Default::default(),
        )
        .await
        .unwrap();
    });
    TestApp {
        base,
        admin_base,
        http: reqwest::Client::new(),
        store,
        dispatcher,
        scheduler,
        clock,
        config: options.dispatcher,
        database_url: url,
        database,
    }
}

impl TestApp {
    /// The database's secret key, as `CLARION_SECRET_KEY` for the operator's CLI commands run
    /// on [`TestApp::database_url`] (PostgreSQL requires it; on SQLite it replaces the key
    /// file).
    pub fn secret_key(&self) -> String {
        self.database.secret_key_env()
    }

    /// Puts a Vapi assistant id on an organisation's allow-list (what the operator does with
    /// `clarion org allow-vapi-assistant`).
    pub async fn allow_vapi_assistant(&self, org: OrgId, vapi_assistant_id: &str) {
        self.store
            .allow_vapi_assistant(org, vapi_assistant_id, self.clock.now_millis())
            .await
            .unwrap();
    }

    /// Allows a number to an organisation (what the operator does with `clarion org
    /// allow-caller-number`).
    pub async fn allow_caller_number(
        &self,
        org: OrgId,
        channel: Channel,
        number: &str,
        provider_id: Option<&str>,
    ) {
        self.store
            .allow_caller_number(org, channel, number, provider_id, self.clock.now_millis())
            .await
            .unwrap();
    }

    /// Creates an organisation and returns its id and API key.
    pub async fn org(&self, name: &str) -> (OrgId, String) {
        let created = self
            .store
            .create_org(name, self.clock.now_millis())
            .await
            .unwrap();
        (created.id, created.api_key.expose().to_owned())
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        key: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, value)
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, key, path, None).await
    }

    pub async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, key, path, Some(body))
            .await
    }

    pub async fn patch(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::PATCH, key, path, Some(body))
            .await
    }

    /// Enrolls one contact (`POST /v1/sequences` with `body`); answers the sequence id.
    pub async fn enroll(&self, key: &str, body: Value) -> i64 {
        let (status, sequence) = self.post(key, "/v1/sequences", body).await;
        assert_eq!(status, 201, "{sequence}");
        sequence["id"].as_i64().unwrap()
    }

    /// `GET /v1/sequences/{id}`: the sequence in the report's shape.
    pub async fn sequence(&self, key: &str, id: i64) -> Value {
        self.get(key, &format!("/v1/sequences/{id}")).await.1
    }

    /// `GET /v1/sequences/{id}/events?limit=200`: the sequence's history, oldest first.
    pub async fn events(&self, key: &str, id: i64) -> Vec<Value> {
        let (status, events) = self
            .get(key, &format!("/v1/sequences/{id}/events?limit=200"))
            .await;
        assert_eq!(status, 200, "{events}");
        events["data"].as_array().unwrap().clone()
    }

    /// Runs what is due now: the scheduler's work, then the dispatcher's.
    pub async fn run_due(&self) {
        self.scheduler.run_due_now().await.unwrap();
        self.dispatcher.run_due_now().await.unwrap();
    }

    /// The reason `phone` is on the organisation's suppression list, if it is.
    pub async fn suppression_reason(&self, key: &str, phone: &str) -> Option<String> {
        let (status, list) = self.get(key, "/v1/suppressions?limit=200").await;
        assert_eq!(status, 200, "{list}");
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["phone_number"] == phone)
            .map(|entry| entry["reason"].as_str().unwrap().to_owned())
    }

    /// Creates an endpoint through the API; returns (id, secret).
    pub async fn endpoint(&self, key: &str, url: &str) -> (i64, String) {
        let (status, body) = self
            .post(
                key,
                "/v1/webhook-endpoints",
                serde_json::json!({ "url": url }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_i64().unwrap(),
            body["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Queues a report through the outbox, as the engine does when a sequence ends.
    pub async fn enqueue(&self, org: OrgId, report: &clarion_webhooks::SequenceReport) {
        let outbox = self.dispatcher.outbox();
        let mut tx = self.store.begin().await.unwrap();
        outbox
            .enqueue_report(&mut tx, org, report, self.clock.now_millis())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        outbox.wake();
    }

    /// The organisation's deliveries (newest first).
    pub async fn deliveries(&self, key: &str) -> Vec<Value> {
        let (status, body) = self.get(key, "/v1/webhook-deliveries?limit=200").await;
        assert_eq!(status, 200);
        body["data"].as_array().unwrap().clone()
    }
}

/// What the test receiver answers.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    StatusWithHeader(u16, &'static str, String),
    /// This status with this body.
    StatusWithBody(u16, String),
    /// Wait this long, then answer 204.
    Delay(Duration),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct ReceiverState {
    answer: Mutex<Option<Answer>>,
    received: Mutex<Vec<Received>>,
    in_flight: Mutex<(usize, usize)>,
    arrived: Notify,
}

/// A webhook receiver on 127.0.0.1:0 that records every request and answers as told.
#[derive(Clone)]
pub struct TestReceiver {
    pub url: String,
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl TestReceiver {
    pub async fn start(answer: Answer) -> Self {
        let state = Arc::new(ReceiverState::default());
        *state.answer.lock().unwrap() = Some(answer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().fallback(receive).with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            url: format!("http://{addr}/hooks"),
            addr,
            state,
        }
    }

    pub fn answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = Some(answer);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The most requests it held at once.
    pub fn max_concurrent(&self) -> usize {
        self.state.in_flight.lock().unwrap().1
    }

    /// The requests it holds now.
    pub fn concurrent(&self) -> usize {
        self.state.in_flight.lock().unwrap().0
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        if !self
            .wait_until(deadline, |received| received.len() >= n)
            .await
        {
            panic!(
                "only {} of {n} requests arrived before the deadline",
                self.received().len()
            );
        }
        self.received()
    }

    /// Waits, woken by each arrival, until `done` holds for the requests received so far
    /// (read in place, not copied) or `deadline` passes; answers whether it held.
    pub async fn wait_until(
        &self,
        deadline: tokio::time::Instant,
        mut done: impl FnMut(&[Received]) -> bool,
    ) -> bool {
        loop {
            let notified = self.state.arrived.notified();
            if done(&self.state.received.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.state.received.lock().unwrap());
            }
        }
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    {
        let mut in_flight = state.in_flight.lock().unwrap();
        in_flight.0 += 1;
        in_flight.1 = in_flight.1.max(in_flight.0);
    }
    // Decrements when the request ends, even when the sender gives up and the future drops.
    let _guard = InFlightGuard(state.clone());
    state
        .received
        .lock()
        .unwrap()
        .push(Received { headers, body });
    state.arrived.notify_waiters();
    let answer = state
        .answer
        .lock()
        .unwrap()
        .clone()
        .unwrap_or(Answer::Status(204));
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Answer::StatusWithHeader(code, name, value) => {
            let mut response = StatusCode::from_u16(code).unwrap().into_response();
            response
                .headers_mut()
                .insert(name, HeaderValue::from_str(&value).unwrap());
            response
        }
        Answer::StatusWithBody(code, body) => {
            (StatusCode::from_u16(code).unwrap(), body).into_response()
        }
        Answer::Delay(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

struct InFlightGuard(Arc<ReceiverState>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.0.in_flight.lock() {
            in_flight.0 -= 1;
        }
    }
}

/// Waits for `condition` to hold, polling, within the deadline.
pub async fn eventually<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, DEADLINE, condition).await;
}

/// [`eventually`] with a deadline of its own, for a condition that takes several of the
/// system's own backoffs to come true (a node reconnecting after each of many outages).
pub async fn eventually_within<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `clarion serve` configuration for tests that wait on a real node: retries at once,
/// the engine 2000 times faster than real time (a simulated call or text takes well under a
/// second), and an encounter a killed node left unconfirmed reconciled after a second.
pub const FAST_NODE_CONFIG: &str = r#"
[webhooks]
retry_schedule = ["0s", "200ms", "200ms", "200ms"]
attempt_timeout = "2s"
lease_margin = "1s"
poll_interval = "100ms"
[channels]
reconcile_after = "1s"
[simulator]
time_scale = 2000.0
"#;

/// A `clarion serve --dev` process on port 0 over `database` (with its secret key), with `config` as its
/// configuration file and `CLARION_CRASH_AT` set when given. Answers the child and its base URL.
pub async fn spawn_server(
    dir: &std::path::Path,
    database: &TestDatabase,
    config: &str,
    crash_at: Option<&str>,
) -> (tokio::process::Child, String) {
    spawn_server_with_env(dir, database, config, crash_at, &[]).await
}

/// [`spawn_server`] with extra environment variables (provider credentials).
pub async fn spawn_server_with_env(
    dir: &std::path::Path,
    database: &TestDatabase,
    config: &str,
    crash_at: Option<&str>,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let key = database.secret_key_env();
    let mut all = Vec::with_capacity(env.len() + 1);
    if !key.is_empty() {
        all.push(("CLARION_SECRET_KEY", key.as_str()));
    }
    all.extend_from_slice(env);
    spawn_server_at(dir, database.url(), config, crash_at, &all).await
}

/// A `clarion serve --dev` process on port 0 over the database at `url`, configured by
/// `config` and `env` alone (the secret key included).
pub async fn spawn_server_at(
    dir: &std::path::Path,
    url: &str,
    config: &str,
    crash_at: Option<&str>,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let path = dir.join("clarion.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = serve_command(url, &path, "127.0.0.1:0");
    command.env("RUST_LOG", "warn").envs(env.iter().copied());
    if let Some(point) = crash_at {
        command.env("CLARION_CRASH_AT", point);
    }
    let (child, first) = first_line(command.spawn().unwrap()).await;
    let base = first.strip_prefix("listening on ").unwrap().to_owned();
    (child, base)
}

/// `clarion serve --dev` on `listen` over `database` with the configuration file `config`,
/// its standard output piped (see [`first_line`]), killed when dropped.
pub fn serve_command(
    database: &str,
    config: &std::path::Path,
    listen: &str,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"));
    command
        .args([
            "serve",
            "--dev",
            "--listen",
            listen,
            "--database",
            database,
            "--config",
        ])
        .arg(config)
        .env_remove("CLARION_CRASH_AT")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The first line a `clarion serve` child prints (within the deadline); the rest of its
/// output is drained in the background, so that it never blocks on a full pipe.
pub async fn first_line(mut child: tokio::process::Child) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;

    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("the server printed its first line in time")
        .unwrap()
        .expect("the server printed a line before exiting");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, first)
}

/// POSTs `body` to `base` + `path` with the API key; the JSON answer, which must be a
/// success.
pub async fn post_ok(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    body: Value,
) -> Value {
    let response = http
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// GET `url` with the API key; the JSON answer.
pub async fn api_get(http: &reqwest::Client, url: &str, key: &str) -> Value {
    http.get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// POST `body` (or nothing) to `url` with the API key; the JSON answer.
pub async fn api_post(http: &reqwest::Client, url: &str, key: &str, body: Option<&Value>) -> Value {
    let mut request = http.post(url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// `clarion doctor` with `config` (TOML) as its configuration file and `env` set:
/// (exit code, standard output).
pub async fn run_doctor(config: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clarion.toml");
    std::fs::write(&path, config).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args(["doctor", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// `clarion org create` against `database`; the new organisation's API key.
pub async fn create_org_with_cli(database: &TestDatabase) -> String {
    create_org_with_cli_and_id(database).await.1
}

/// `clarion org create` against `database`; the new organisation's id and API key.
pub async fn create_org_with_cli_and_id(database: &TestDatabase) -> (i64, String) {
    let key = database.secret_key_env();
    create_org_with_cli_env(database.url(), &[("CLARION_SECRET_KEY", key.as_str())]).await
}

/// `clarion org create` against the database at `database` with extra environment variables
/// (a PostgreSQL database needs `CLARION_SECRET_KEY`); the organisation's id and API key.
pub async fn create_org_with_cli_env(database: &str, env: &[(&str, &str)]) -> (i64, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args(["org", "create", "Riverside", "--database", database])
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    let org_id = created["org_id"].as_i64().unwrap();
    assert!(org_id > 0);
    (org_id, created["api_key"].as_str().unwrap().to_owned())
}

/// `clarion org allow-vapi-assistant` (or `disallow-…` when `allow` is false) against
/// `database`, as the deployment's operator would; answers the organisation it prints.
pub async fn allow_vapi_assistant_with_cli(
    database: &TestDatabase,
    org_id: i64,
    vapi_assistant_id: &str,
    allow: bool,
) -> Value {
    let key = database.secret_key_env();
    let env = [("CLARION_SECRET_KEY", key.as_str())];
    allow_vapi_assistant_with_cli_env(database.url(), org_id, vapi_assistant_id, allow, &env).await
}

/// [`allow_vapi_assistant_with_cli`] with extra environment variables (a PostgreSQL database
/// needs `CLARION_SECRET_KEY`).
pub async fn allow_vapi_assistant_with_cli_env(
    database: &str,
    org_id: i64,
    vapi_assistant_id: &str,
    allow: bool,
    env: &[(&str, &str)],
) -> Value {
    let command = if allow {
        "allow-vapi-assistant"
    } else {
        "disallow-vapi-assistant"
    };
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args([
            "org",
            command,
            &org_id.to_string(),
            vapi_assistant_id,
            "--database",
            database,
        ])
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A webhook receiver that accepts connections and never answers: each request hangs until
/// the sender's attempt time-out, or until [`BlackHole::close`] drops the connections.
pub struct BlackHole {
    pub url: String,
    held: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
        let task = tokio::spawn({
            let held = held.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    held.lock().unwrap().push(stream);
                }
            }
        });
        Self { url, held, task }
    }

    /// Connections it holds open now.
    pub fn connections(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Stops accepting and drops every held connection (the attempts on them end at once).
    pub fn close(&self) {
        self.task.abort();
        self.held.lock().unwrap().clear();
    }
}
