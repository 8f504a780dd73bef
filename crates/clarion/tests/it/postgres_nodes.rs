//! `clarion serve` as a node on PostgreSQL (the real binary): a database that goes away
//! (connections cut, refused, terminated) is ridden out, and the work is finished; a database
//! not reachable at start is waited for, within a bound; an API node and a worker node share
//! the work (roles).
//!
//! PostgreSQL only (`CLARION_TEST_DATABASE_URL`, see `support::postgres`): every test is
//! ignored by a plain `cargo test` and run by `scripts/test` in its PostgreSQL half
//! (`-- --ignored`); run without a server, each fails saying so.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio::process::Child;

use crate::support::postgres::{self, FlakyProxy, SECRET_KEY};
use crate::support::{
    Answer, DEADLINE, TestReceiver, allow_vapi_assistant_with_cli_env, create_org_with_cli_env,
    eventually, eventually_within, first_line, post_ok, serve_command,
};
use clarion_store::testing::TestDatabase;

/// A password in the node's database URL (the test server accepts any): it must show in no
/// log line.
const PASSWORD: &str = "pw-node-Zr4-never-logged";

/// A node's configuration: `database` (the `[database]` keys), a compressed schedule and a
/// fast engine clock (the loops behave as in production).
fn node_config(database: &str) -> String {
    format!("[database]\n{database}\n{WEBHOOKS}\n[simulator]\ntime_scale = 2000.0\n")
}

/// A compressed retry schedule.
const WEBHOOKS: &str = r#"
[webhooks]
retry_schedule = ["0s", "200ms", "200ms", "200ms", "200ms", "200ms"]
attempt_timeout = "2s"
lease_margin = "1s"
poll_interval = "200ms"
"#;

/// A `clarion serve` child with its log (standard error) in a file.
struct Node {
    child: Child,
    /// The API's base URL (the first line the node prints).
    base: String,
    log: PathBuf,
}

impl Node {
    /// Starts a node and waits for its first line on standard output.
    async fn start(dir: &Path, name: &str, database: &str, config: &str, args: &[&str]) -> Self {
        let (child, log) = spawn(dir, name, database, config, args);
        let (child, first) = first_line(child).await;
        let base = first.strip_prefix("listening on ").unwrap().to_owned();
        Self { child, base, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running (it neither exited nor crashed).
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Spawns `clarion serve` on a free port with `args` (its stdout piped, its stderr into
/// `<name>.log` in `dir`, at `info`, with the tests' secret key).
fn spawn(dir: &Path, name: &str, database: &str, config: &str, args: &[&str]) -> (Child, PathBuf) {
    spawn_on(dir, name, database, config, "127.0.0.1:0", args, &[])
}

/// [`spawn`] on `listen`, with extra environment variables.
fn spawn_on(
    dir: &Path,
    name: &str,
    database: &str,
    config: &str,
    listen: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, PathBuf) {
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, config).unwrap();
    let log = dir.join(format!("{name}.log"));
    let child = serve_command(database, &config_path, listen)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .env("CLARION_SECRET_KEY", SECRET_KEY)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// An endpoint to `receiver` and a three-step template (call, text an hour later, call an
/// hour after that: a few seconds of real time at the test's clock speed); its id.
async fn setup(http: &reqwest::Client, base: &str, key: &str, receiver: &TestReceiver) -> Value {
    post_ok(
        http,
        base,
        key,
        "/v1/webhook-endpoints",
        json!({ "url": receiver.url }),
    )
    .await;
    let caller = post_ok(
        http,
        base,
        key,
        "/v1/assistants",
        json!({ "name": "Caller", "channel": "call" }),
    )
    .await;
    let texter = post_ok(
        http,
        base,
        key,
        "/v1/assistants",
        json!({ "name": "Texter", "channel": "sms" }),
    )
    .await;
    let template = post_ok(http, base, key, "/v1/sequence-templates", json!({
        "name": "Call, text, call", "calling_hours": null, "stop_on": ["resolved"], "sms_timeout": "1h",
        "steps": [
            { "type": "call", "assistant_id": caller["id"] },
            { "type": "sms", "assistant_id": texter["id"], "delay": "1h" },
            { "type": "call", "assistant_id": caller["id"], "delay": "1h" }
        ]
    }))
    .await;
    template["id"].clone()
}

/// Enrolls `count` contacts through `base`; their sequence ids.
async fn enroll(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    template: &Value,
    count: usize,
) -> Vec<i64> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let enrolled = post_ok(http, base, key, "/v1/sequences", json!({
            "template_id": template,
            "contact": { "phone_number": format!("+1555555{:04}", 1000 + i), "time_zone": "America/New_York" },
            "simulation": { "outcomes": ["no-answer", "no-reply", "resolved"] }
        }))
        .await;
        ids.push(enrolled["id"].as_i64().unwrap());
    }
    ids
}

/// The sequence ids of the reports `receiver` got, without repeats.
fn reported(receiver: &TestReceiver) -> std::collections::BTreeSet<i64> {
    receiver
        .received()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok()?["id"].as_i64())
        .collect()
}

/// The log lines that start an outage (`retry::Outage`: once per outage and task).
fn outage_warnings(log: &str, task: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("the database is unavailable; retrying"))
        .filter(|line| line.contains(&format!("task=\"{task}\"")))
        .count()
}

#[tokio::test]
#[ignore = "PostgreSQL only: scripts/test runs it in its PostgreSQL half (cargo test -- --ignored)"]
async fn postgres_a_node_rides_out_a_lost_database_and_finishes_its_work() {
    let server = postgres::required_server("postgres_a_node_rides_out_a_lost_database");
    let database = TestDatabase::create().await;
    let proxy = FlakyProxy::start(postgres::address_of(&server)).await;
    let dir = tempfile::tempdir().unwrap();
    let key = create_org_with_cli_env(database.url(), &[("CLARION_SECRET_KEY", SECRET_KEY)])
        .await
        .1;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let http = reqwest::Client::new();
    let through_proxy = postgres::url_through(database.url(), &proxy, PASSWORD);
    let config = node_config("acquire_timeout = \"1s\"");
    let mut node = Node::start(dir.path(), "node", &through_proxy, &config, &[]).await;
    let template = setup(&http, &node.base, &key, &receiver).await;
    const SEQUENCES: usize = 12;
    let ids = enroll(&http, &node.base, &key, &template, SEQUENCES).await;

    // The database goes away mid-run: every connection dropped, new ones closed at once.
    proxy.cut();
    // The API answers 503 with its JSON error (never a 500 with a driver's message), and
    // /healthz says so too.
    let unavailable = std::cell::Cell::new(0);
    eventually(
        "the API answers 503 database_unavailable while the database is away",
        || async {
            let response = http
                .get(format!("{}/v1/sequences", node.base))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert!(
                matches!(status, 200 | 503),
                "answered {status} during the outage"
            );
            if status == 503 {
                assert!(response.headers().contains_key("retry-after"));
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "database_unavailable", "{body}");
                assert!(!body.to_string().contains("127.0.0.1"), "{body}");
                unavailable.set(unavailable.get() + 1);
            }
            unavailable.get() >= 3
        },
    )
    .await;
    let health = http
        .get(format!("{}/healthz", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 503);
    // Every loop noticed, and logged it once however many times it tried meanwhile.
    eventually("the loops waited out the outage with backoff", || async {
        let log = node.log();
        outage_warnings(&log, "webhook dispatcher") == 1
            && outage_warnings(&log, "scheduler due loop") == 1
    })
    .await;
    let tries_before = proxy.refused();
    eventually(
        "the loops kept trying (and were refused) during the outage",
        || async { proxy.refused() >= tries_before + 6 },
    )
    .await;
    let log = node.log();
    for task in [
        "webhook dispatcher",
        "scheduler due loop",
        "scheduler provider worker",
    ] {
        assert!(
            outage_warnings(&log, task) <= 1,
            "{task} logged the outage more than once:\n{log}"
        );
    }
    assert!(node.running(), "the node exited during the outage:\n{log}");

    // The database is back: the work resumes. Then the node's connections are killed
    // (pg_terminate_backend, as a failover does) each time a report arrives, until all did.
    proxy.restore();
    let mut last = 0;
    // Up to one reconnection (with the pool's backoff) per report: 6-7 s on a quiet machine,
    // more than the usual deadline on a loaded one.
    eventually_within(
        "every sequence's report is delivered despite the killed connections",
        std::time::Duration::from_secs(120),
        || {
            let reported = reported(&receiver).len();
            if reported > last {
                last = reported;
                postgres::terminate_connections(database.url());
            }
            async move { reported == SEQUENCES }
        },
    )
    .await;
    assert_eq!(
        reported(&receiver),
        ids.iter().copied().collect(),
        "exactly the enrolled sequences reported"
    );
    // It still serves, and never exited.
    eventually("the API answers again", || async {
        http.get(format!("{}/v1/sequences", node.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    })
    .await;
    let log = node.log();
    assert!(node.running(), "the node exited:\n{log}");
    assert!(log.contains("the database is available again"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the database password was logged:\n{log}"
    );
}

#[tokio::test]
#[ignore = "PostgreSQL only: scripts/test runs it in its PostgreSQL half (cargo test -- --ignored)"]
async fn postgres_serve_waits_for_a_database_that_is_not_reachable_yet() {
    let server = postgres::required_server("postgres_serve_waits_for_a_database");
    let database = TestDatabase::create().await;
    let proxy = FlakyProxy::start(postgres::address_of(&server)).await;
    let dir = tempfile::tempdir().unwrap();
    let through_proxy = postgres::url_through(database.url(), &proxy, PASSWORD);

    // Unreachable for longer than start_timeout: the start fails, saying why, without the
    // URL's password.
    proxy.cut();
    let short = node_config("start_timeout = \"1s\"\nacquire_timeout = \"500ms\"");
    let (mut child, log) = spawn(dir.path(), "short", &through_proxy, &short, &[]);
    let exit = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!exit.success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("could not be reached within 1s"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the database password was logged:\n{log}"
    );

    // Unreachable for a while, then back: the node waits, then starts and serves.
    let patient = node_config("acquire_timeout = \"1s\"");
    let (child, log) = spawn(dir.path(), "patient", &through_proxy, &patient, &[]);
    eventually(
        "the node waits for the database, saying so once",
        || async {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            outage_warnings(&log, "start-up") == 1
        },
    )
    .await;
    let refused = proxy.refused();
    eventually("it keeps trying", || async {
        proxy.refused() > refused + 2
    })
    .await;
    proxy.restore();
    let (mut child, first) = first_line(child).await;
    let base = first.strip_prefix("listening on ").unwrap();
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(child.try_wait().unwrap().is_none());
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(outage_warnings(&log, "start-up"), 1, "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the database password was logged:\n{log}"
    );
}

/// A port nothing listens on (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
#[ignore = "PostgreSQL only: scripts/test runs it in its PostgreSQL half (cargo test -- --ignored)"]
async fn postgres_an_api_node_and_a_worker_node_share_the_work() {
    use crate::support::fake_vapi::{API_KEY, FakeVapi, PHONE_NUMBER_ID, SERVER_SECRET};

    postgres::required_server("postgres_an_api_node_and_a_worker_node");
    let database = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = [("CLARION_SECRET_KEY", SECRET_KEY)];
    let (org_id, key) = create_org_with_cli_env(database.url(), &secret).await;
    allow_vapi_assistant_with_cli_env(database.url(), org_id, "asst_1", true, &secret).await;
    let vapi = FakeVapi::start().await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let http = reqwest::Client::new();
    // Calls through Vapi (a fake), on both nodes: the worker places them, the API node takes
    // Vapi's callbacks.
    let vapi_env = [
        ("CLARION_VAPI__API_KEY", API_KEY),
        ("CLARION_VAPI__PHONE_NUMBER_ID", PHONE_NUMBER_ID),
        ("CLARION_VAPI__SERVER_SECRET", SERVER_SECRET),
    ];
    // A poll far longer than the test: every hand-off between the nodes (the enrollment and
    // the callbacks to the worker's scheduler, the report to its dispatcher) is a wake-up.
    let webhooks = WEBHOOKS.replace("poll_interval = \"200ms\"", "poll_interval = \"60s\"");
    let sections = format!(
        "{webhooks}\n[channels]\ncall = \"vapi\"\n[vapi]\nbase_url = \"{}\"\n",
        vapi.url
    );

    // The worker: no API listener (its `listen` port stays closed); /healthz and /metrics on
    // its operator listener.
    let worker_listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let worker_config = format!("admin_listen = \"{admin}\"\n{sections}");
    let (worker, worker_log) = spawn_on(
        dir.path(),
        "worker",
        database.url(),
        &worker_config,
        &worker_listen,
        &["--role", "worker"],
        &vapi_env,
    );
    let (mut worker, first) = first_line(worker).await;
    assert_eq!(first, "worker running (no API listener)");
    assert!(
        tokio::net::TcpStream::connect(&worker_listen)
            .await
            .is_err(),
        "the worker listens on its API address"
    );
    let health = http
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // The API node: the API and the callbacks, no background work.
    let (api, api_log) = spawn_on(
        dir.path(),
        "api",
        database.url(),
        &sections,
        "127.0.0.1:0",
        &["--role", "api"],
        &vapi_env,
    );
    let (mut api, first) = first_line(api).await;
    let base = first.strip_prefix("listening on ").unwrap().to_owned();

    post_ok(
        &http,
        &base,
        &key,
        "/v1/webhook-endpoints",
        json!({ "url": receiver.url }),
    )
    .await;
    let caller = post_ok(
        &http,
        &base,
        &key,
        "/v1/assistants",
        json!({
        "name": "Caller", "channel": "call", "config": { "vapi_assistant_id": "asst_1" } }),
    )
    .await;
    let template = post_ok(
        &http,
        &base,
        &key,
        "/v1/sequence-templates",
        json!({
            "name": "Call twice", "calling_hours": null, "stop_on": ["resolved"],
            "steps": [
                { "type": "call", "assistant_id": caller["id"] },
                { "type": "call", "assistant_id": caller["id"] }
            ]
        }),
    )
    .await;
    let enrolled = post_ok(
        &http,
        &base,
        &key,
        "/v1/sequences",
        json!({
            "template_id": template["id"],
            "contact": { "phone_number": "+15555550142", "time_zone": "America/New_York" }
        }),
    )
    .await;
    let id = enrolled["id"].as_i64().unwrap();

    // The enrollment committed on the API node; the worker places the first call.
    eventually("the worker places the first call", || async {
        vapi.calls().len() == 1
    })
    .await;
    let first_call = vapi.calls()[0]["id"].as_str().unwrap().to_owned();
    // Vapi reports its end to the API node, which ends the encounter and commits the next
    // step's call; the worker places it.
    let (status, body) = vapi.end_call(&base, &first_call, "unresolved").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], true, "{body}");
    eventually("the worker places the second call", || async {
        vapi.calls().len() == 2
    })
    .await;
    let second_call = vapi.calls()[1]["id"].as_str().unwrap().to_owned();
    // Its report ends the sequence on the API node, which queues the End of Sequence Report;
    // the worker's dispatcher delivers it.
    let (status, body) = vapi.end_call(&base, &second_call, "resolved").await;
    assert_eq!((status, &body["applied"]), (200, &json!(true)), "{body}");
    eventually("the worker delivers the report", || async {
        reported(&receiver).contains(&id)
    })
    .await;
    assert_eq!(receiver.received().len(), 1);
    let report: Value = serde_json::from_slice(&receiver.received()[0].body).unwrap();
    assert_eq!(report["status"], "ended");
    assert_eq!(report["outreach"].as_array().unwrap().len(), 2);

    // Only the worker attempted deliveries (the API node runs no dispatcher).
    let worker_metrics = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    let worker_metrics = worker_metrics.text().await.unwrap();
    assert!(
        worker_metrics.contains("clarion_webhook_attempts_total"),
        "{worker_metrics}"
    );
    let api_metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    let api_metrics = api_metrics.text().await.unwrap();
    assert!(
        !api_metrics.contains("clarion_webhook_attempts_total"),
        "{api_metrics}"
    );
    for (node, log) in [(&mut worker, &worker_log), (&mut api, &api_log)] {
        let log = std::fs::read_to_string(log).unwrap();
        assert!(node.try_wait().unwrap().is_none(), "a node exited:\n{log}");
        assert!(!log.contains(" ERROR "), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL only: scripts/test runs it in its PostgreSQL half (cargo test -- --ignored)"]
async fn postgres_a_report_committed_on_one_node_is_attempted_by_another_at_once() {
    use clarion_delivery::{Clock, Dispatcher, SystemClock};
    use clarion_store::secret_keys::{SecretKey, SecretKeys};
    use clarion_store::{Store, StoreOptions, Wakeup};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    postgres::required_server("postgres_a_report_committed_on_one_node");
    let database = TestDatabase::create().await;
    let options = || StoreOptions {
        secret_keys: Some(SecretKeys::new(SECRET_KEY.parse::<SecretKey>().unwrap())),
        ..StoreOptions::default()
    };
    // Two nodes on one database: two stores, two dispatchers.
    let node_a = Store::connect_with(database.url(), options())
        .await
        .unwrap();
    let node_b = Store::connect_with(database.url(), options())
        .await
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // A poll far longer than the test's deadline: only a wake-up can make node B look.
    let mut config = crate::support::default_dispatcher_config();
    config.ssrf = crate::support::dev_policy();
    config.poll_interval = Duration::from_secs(60);
    let dispatcher_a = Dispatcher::new(node_a.clone(), clock.clone(), config.clone()).unwrap();
    let dispatcher_b = Dispatcher::new(node_b.clone(), clock.clone(), config).unwrap();
    let org = node_a
        .create_org("Riverside", clock.now_millis())
        .await
        .unwrap()
        .id;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    node_a
        .create_endpoint(
            org,
            &receiver.url,
            "",
            clarion_store::DEFAULT_EVENT_TYPES,
            "whsec_dGVzdC1zZWNyZXQtZm9yLW5vZGVzLTEyMzQ=",
            0,
        )
        .await
        .unwrap();

    // Node B listens (its first wake-up says so), and its dispatcher runs; node A's does not.
    let mut listening = node_b.wakeups();
    let first = tokio::time::timeout(DEADLINE, listening.recv())
        .await
        .unwrap();
    assert_eq!(first, Wakeup::Resync);
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { dispatcher_b.run(stop.cancelled_owned()).await }
    });

    let mut latencies = Vec::new();
    for round in 0..5 {
        let report = clarion_webhooks::examples::call_only();
        let mut tx = node_a.begin().await.unwrap();
        let queued = dispatcher_a
            .outbox()
            .enqueue_report(&mut tx, org, &report, clock.now_millis())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let committed = Instant::now();
        let arrived = receiver.wait_for(round + 1).await;
        let latency = committed.elapsed();
        assert_eq!(arrived[round].header("webhook-id"), queued.webhook_id);
        latencies.push(latency);
    }
    stop.cancel();
    running.await.unwrap();
    eprintln!("commit on node A -> attempt by node B: {latencies:?}");
    // Tens of milliseconds on an idle machine; the bound leaves room for a loaded one and
    // is still far below the poll.
    for latency in latencies {
        assert!(latency < Duration::from_secs(5), "{latency:?}");
    }
}
