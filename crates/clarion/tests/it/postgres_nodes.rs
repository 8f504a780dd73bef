//! `clarion serve` as a node on PostgreSQL (the real binary): a database that goes away
//! (connections cut, refused, terminated) is ridden out, and the work is finished; a database
//! not reachable at start is waited for, within a bound.
//!
//! PostgreSQL only (`CLARION_TEST_DATABASE_URL`, see `support::postgres`): every test is named
//! `postgres_…` so that `scripts/test` runs this module in its PostgreSQL half; without a
//! server each returns at once, saying so.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio::process::Child;

use crate::support::postgres::{self, FlakyProxy, SECRET_KEY, TestDatabase};
use crate::support::{
    Answer, DEADLINE, TestReceiver, create_org_with_cli_env, eventually, first_line, post_ok,
    serve_command,
};

/// A password in the node's database URL (the test server accepts any): it must show in no
/// log line.
const PASSWORD: &str = "pw-node-Zr4-never-logged";

/// A node's configuration: `database` (the `[database]` keys), a compressed schedule and a
/// fast engine clock (the loops behave as in production).
fn node_config(database: &str) -> String {
    format!("[database]\n{database}\n{REST_OF_CONFIG}")
}

const REST_OF_CONFIG: &str = r#"
[webhooks]
retry_schedule = ["0s", "200ms", "200ms", "200ms", "200ms", "200ms"]
attempt_timeout = "2s"
lease_margin = "1s"
poll_interval = "200ms"
[simulator]
time_scale = 2000.0
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

/// Spawns `clarion serve` with `args` (its stdout piped, its stderr into `<name>.log` in
/// `dir`, at `info`, with the tests' secret key).
fn spawn(dir: &Path, name: &str, database: &str, config: &str, args: &[&str]) -> (Child, PathBuf) {
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, config).unwrap();
    let log = dir.join(format!("{name}.log"));
    let child = serve_command(database, &config_path)
        .args(args)
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
async fn postgres_a_node_rides_out_a_lost_database_and_finishes_its_work() {
    let Some(server) = postgres::server_or_skip("postgres_a_node_rides_out_a_lost_database") else {
        return;
    };
    let database = TestDatabase::create(&server);
    let proxy = FlakyProxy::start(postgres::address_of(&server)).await;
    let dir = tempfile::tempdir().unwrap();
    let key = create_org_with_cli_env(&database.url, &[("CLARION_SECRET_KEY", SECRET_KEY)])
        .await
        .1;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let http = reqwest::Client::new();
    let through_proxy = database.url_through(&proxy, PASSWORD);
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
    eventually(
        "every sequence's report is delivered despite the killed connections",
        || {
            let reported = reported(&receiver).len();
            if reported > last {
                last = reported;
                database.terminate_connections();
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
async fn postgres_serve_waits_for_a_database_that_is_not_reachable_yet() {
    let Some(server) = postgres::server_or_skip("postgres_serve_waits_for_a_database") else {
        return;
    };
    let database = TestDatabase::create(&server);
    let proxy = FlakyProxy::start(postgres::address_of(&server)).await;
    let dir = tempfile::tempdir().unwrap();
    let through_proxy = database.url_through(&proxy, PASSWORD);

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
