//! `clarion migrate-store`: an installation filled through the API on SQLite is copied by the
//! real binary into PostgreSQL (a database of the test's own on `CLARION_TEST_DATABASE_URL`)
//! or, without a server, into a second SQLite file; then a `clarion serve` node on the copy
//! finishes the running sequences and delivers what was still queued, under the same ids.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::time::Duration;

use clarion_store::secret_keys::{SecretKey, key_file_path};
use clarion_store::testing::{TestDatabase, with_password};
use clarion_webhooks::{Secret, Verifier, WebhookHeaders};
use serde_json::{Value, json};

use crate::support::{self, Answer, Received, TestApp, TestReceiver, eventually};

/// Put in the target's URL: it must never be printed.
const PASSWORD: &str = "pw-migrate-never-shown";

/// The database the installation moves to.
struct Target {
    url: String,
    backend: &'static str,
    _database: Option<TestDatabase>,
    _dir: tempfile::TempDir,
}

impl Target {
    async fn create() -> Self {
        let dir = tempfile::tempdir().unwrap();
        match clarion_store::testing::postgres_server() {
            Some(_) => {
                let database = TestDatabase::create().await;
                Self {
                    url: with_password(database.url(), PASSWORD),
                    backend: "postgres",
                    _database: Some(database),
                    _dir: dir,
                }
            }
            None => Self {
                url: format!("sqlite://{}", dir.path().join("moved.db").display()),
                backend: "sqlite",
                _database: None,
                _dir: dir,
            },
        }
    }
}

/// `clarion migrate-store` with only `env` for configuration: (succeeded, stdout, stderr).
async fn migrate_store(from: &str, to: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args(["migrate-store", "--from", from, "--to", to])
        .env_remove("CLARION_SECRET_KEY")
        .env_remove("CLARION_PREVIOUS_SECRET_KEYS")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    for shown in [&stdout, &stderr] {
        assert!(
            !shown.contains(PASSWORD),
            "the password was printed: {shown}"
        );
        assert!(!shown.contains("whsec_"), "a secret was printed: {shown}");
        assert!(
            !shown.contains("+1555555"),
            "a phone number was printed: {shown}"
        );
    }
    (output.status.success(), stdout, stderr)
}

/// The table printed by a successful run: (table, source, target), in order.
fn printed_counts(stdout: &str) -> Vec<(String, u64, u64)> {
    stdout
        .lines()
        .skip_while(|line| !line.starts_with("table "))
        .skip(1)
        .take_while(|line| !line.starts_with("total "))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 3, "{line}");
            (
                fields[0].to_owned(),
                fields[1].parse().unwrap(),
                fields[2].parse().unwrap(),
            )
        })
        .collect()
}

fn body(received: &Received) -> Value {
    serde_json::from_slice(&received.body).unwrap()
}

/// Whether `received` carries a valid signature by `secret`, at its own timestamp.
fn signed_by(received: &Received, secret: &str) -> bool {
    let headers = WebhookHeaders {
        id: Some(received.header("webhook-id")),
        timestamp: Some(received.header("webhook-timestamp")),
        signature: Some(received.header("webhook-signature")),
    };
    let at: i64 = received.header("webhook-timestamp").parse().unwrap();
    Verifier::new(secret.parse::<Secret>().unwrap())
        .verify_at(&headers, &received.body, at)
        .is_ok()
}

/// One organisation of the source, as the test filled it.
struct Tenant {
    key: String,
    secret: String,
}

/// Enrolls through the API (with an `Idempotency-Key` when given); the sequence's public id.
async fn enroll(app: &TestApp, key: &str, body: &Value, idempotency_key: Option<&str>) -> i64 {
    let mut request = app
        .http
        .post(format!("{}/v1/sequences", app.base))
        .bearer_auth(key)
        .json(body);
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("Idempotency-Key", idempotency_key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

fn enrollment(template: i64, phone: &str, outcomes: &[&str]) -> Value {
    json!({
        "template_id": template,
        "contact": { "phone_number": phone, "time_zone": "America/Chicago", "name": "Sam Lee" },
        "variables": { "appointment_date": "March 3" },
        "simulation": { "outcomes": outcomes },
    })
}

/// GET `path` on `base` with `key`: (status, body).
async fn get(http: &reqwest::Client, base: &str, key: &str, path: &str) -> (u16, Value) {
    call(http, reqwest::Method::GET, base, key, path).await
}

/// `method` `path` (no body) on `base` with `key`: (status, body).
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    base: &str,
    key: &str,
    path: &str,
) -> (u16, Value) {
    let response = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// An endpoint's current signing secret, as `GET /v1/webhook-endpoints/{id}/secret` shows it.
async fn current_secret(http: &reqwest::Client, base: &str, key: &str, endpoint: i64) -> String {
    let path = format!("/v1/webhook-endpoints/{endpoint}/secret");
    let (status, shown) = get(http, base, key, &path).await;
    assert_eq!(status, 200, "{shown}");
    shown["secret"].as_str().unwrap().to_owned()
}

/// Whether every entry of the list at `path` satisfies `check`, for each of `keys`.
async fn every_listed(
    http: &reqwest::Client,
    base: &str,
    keys: &[&str],
    path: &str,
    check: fn(&Value) -> bool,
) -> bool {
    for key in keys {
        let (_, listed) = get(http, base, key, path).await;
        if !listed["data"].as_array().unwrap().iter().all(check) {
            return false;
        }
    }
    true
}

/// What the API answers about an organisation's configuration and history: the same on the
/// source before the move and on the target after it.
const UNCHANGING: &[&str] = &[
    "/v1/webhook-endpoints",
    "/v1/assistants",
    "/v1/sequence-templates",
    "/v1/suppressions",
];

/// The source as [`fill_source`] leaves it.
struct Source {
    app: TestApp,
    /// Organisation A's receiver (answers 204) and organisation B's (503 until told).
    ok: TestReceiver,
    flaky: TestReceiver,
    a: Tenant,
    b: Tenant,
    org_a: clarion_store::OrgId,
    /// The sequences' public ids, a1 to a6 then b1 and b2: a1, a5, a6, b1 ended; a2, a3, b2
    /// running between steps; a4 paused.
    sequences: [i64; 8],
    /// a3's enrollment, sent with `Idempotency-Key: move-a3`.
    a3_body: Value,
    /// b1's report, refused once by B's receiver and pending for a retry.
    first_try: Received,
}

/// A SQLite installation filled through the API (the in-process app, its key file beside the
/// database), three days ago: two organisations, three endpoints (one deleted), assistants of
/// both channels, a template with two versions, sequences in every state, an opt-out and a
/// suppression added by hand, reports delivered, failed and pending.
async fn fill_source() -> Source {
    // A SQLite installation with its key file, as `clarion serve` leaves one by default.
    let app = support::spawn_app_with(support::AppOptions {
        sqlite_key_file: true,
        ..support::AppOptions::default()
    })
    .await;
    app.clock
        .set_millis(chrono::Utc::now().timestamp_millis() - 3 * 86_400_000);
    let ok = TestReceiver::start(Answer::Status(204)).await;
    let flaky = TestReceiver::start(Answer::Status(503)).await;
    let doomed = TestReceiver::start(Answer::Status(204)).await;
    let (org_a, key_a) = app.org("Riverside Family Clinic").await;
    // The operator's allow-list of Vapi assistants (`clarion org allow-vapi-assistant`).
    app.allow_vapi_assistant(org_a, "asst_moved").await;
    let (_, key_b) = app.org("Lakeside Cardiology").await;
    let (_, secret_a) = app.endpoint(&key_a, &ok.url).await;
    let (_, secret_b) = app.endpoint(&key_b, &flaky.url).await;
    let (doomed_id, _) = app.endpoint(&key_b, &doomed.url).await;
    let a = Tenant {
        key: key_a,
        secret: secret_a,
    };
    let b = Tenant {
        key: key_b,
        secret: secret_b,
    };
    let assistant = |key: &str, name: &str, channel: &str| {
        let body = json!({ "name": name, "channel": channel, "config": { "purpose": "confirm the visit" } });
        let key = key.to_owned();
        let app = &app;
        async move {
            let (status, created) = app.post(&key, "/v1/assistants", body).await;
            assert_eq!(status, 201, "{created}");
            created["id"].as_i64().unwrap()
        }
    };
    let caller_a = assistant(&a.key, "Caller", "call").await;
    let texter_a = assistant(&a.key, "Texter", "sms").await;
    let caller_b = assistant(&b.key, "Caller", "call").await;
    let (status, template_a) = app
        .post(
            &a.key,
            "/v1/sequence-templates",
            json!({
            "name": "Reminder", "calling_hours": null, "stop_on": ["resolved"],
            "steps": [ { "type": "call", "assistant_id": caller_a } ] }),
        )
        .await;
    assert_eq!(status, 201, "{template_a}");
    let template_a = template_a["id"].as_i64().unwrap();
    let (status, template_b) = app
        .post(
            &b.key,
            "/v1/sequence-templates",
            json!({
            "name": "Two calls", "calling_hours": null, "stop_on": ["resolved"],
            "steps": [ { "type": "call", "assistant_id": caller_b },
                       { "type": "call", "assistant_id": caller_b, "delay": "1d" } ] }),
        )
        .await;
    assert_eq!(status, 201, "{template_b}");
    let template_b = template_b["id"].as_i64().unwrap();

    // Version 1 of A's template: one call.
    let a1 = enroll(
        &app,
        &a.key,
        &enrollment(template_a, "+15555550101", &["resolved"]),
        None,
    )
    .await;
    // Version 2: a call, then a text two hours later.
    let (status, version) = app
        .request(reqwest::Method::PUT, &a.key, &format!("/v1/sequence-templates/{template_a}"), Some(json!({
            "name": "Reminder", "calling_hours": null, "stop_on": ["resolved"], "sms_timeout": "30m",
            "steps": [ { "type": "call", "assistant_id": caller_a },
                       { "type": "sms", "assistant_id": texter_a, "delay": "2h" } ] })))
        .await;
    assert_eq!(status, 200, "{version}");
    let a3_body = enrollment(template_a, "+15555550103", &["no-answer", "resolved"]);
    let a3 = enroll(&app, &a.key, &a3_body, Some("move-a3")).await;
    let mut enrolled = Vec::new();
    for (key, template, phone, outcomes) in [
        (
            &a.key,
            template_a,
            "+15555550102",
            &["unresolved", "resolved"][..],
        ),
        (
            &a.key,
            template_a,
            "+15555550104",
            &["unresolved", "resolved"],
        ),
        (&a.key, template_a, "+15555550105", &["resolved"]),
        (&a.key, template_a, "+15555550106", &["opt-out"]),
        (&b.key, template_b, "+15555550107", &["resolved"]),
        (&b.key, template_b, "+15555550108", &["busy", "resolved"]),
    ] {
        let body = enrollment(template, phone, outcomes);
        enrolled.push(enroll(&app, key, &body, None).await);
    }
    let [a2, a4, a5, a6, b1, b2] = enrolled[..] else {
        unreachable!("six enrollments")
    };
    let (status, _) = app
        .post(&a.key, &format!("/v1/sequences/{a5}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .post(
            &a.key,
            "/v1/suppressions",
            json!({ "phone_number": "+15555550199", "reason": "do-not-contact" }),
        )
        .await;
    assert_eq!(status, 201);
    // An hour of engine time: every first step ends; the second steps wait (2 h, 1 d).
    for _ in 0..60 {
        app.scheduler.run_due_now().await.unwrap();
        app.clock.advance(Duration::from_secs(60));
    }
    let (status, _) = app
        .post(&a.key, &format!("/v1/sequences/{a4}/pause"), json!({}))
        .await;
    assert_eq!(status, 200);
    // B's second endpoint goes before its report is sent: that delivery ends failed. The
    // first answers 503: its delivery waits for a retry, which the target will make.
    let (status, _) = app
        .request(
            reqwest::Method::DELETE,
            &b.key,
            &format!("/v1/webhook-endpoints/{doomed_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    app.dispatcher.run_due_now().await.unwrap();

    let status_of = |key: &str, id: i64| {
        let app = &app;
        let key = key.to_owned();
        async move {
            app.sequence(&key, id).await["status"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    for (key, id, status) in [
        (&a.key, a1, "ended"),
        (&a.key, a2, "active"),
        (&a.key, a3, "active"),
        (&a.key, a4, "paused"),
        (&a.key, a5, "ended"),
        (&a.key, a6, "ended"),
        (&b.key, b1, "ended"),
        (&b.key, b2, "active"),
    ] {
        assert_eq!(
            status_of(key, id).await,
            status,
            "sequence {id} before the move"
        );
    }
    assert_eq!(ok.received().len(), 3, "a1, a5 and a6 delivered");
    assert!(doomed.received().is_empty());
    let first_try = flaky.received();
    assert_eq!(first_try.len(), 1);
    assert_eq!(body(&first_try[0])["id"], b1);
    let pending_webhook_id = first_try[0].header("webhook-id").to_owned();
    let (_, deliveries_b) = get(&app.http, &app.base, &b.key, "/v1/webhook-deliveries").await;
    let statuses: Vec<(&str, &str)> = deliveries_b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["webhook_id"].as_str().unwrap(),
                d["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&(pending_webhook_id.as_str(), "pending")),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&(pending_webhook_id.as_str(), "failed")),
        "{statuses:?}"
    );

    let sequences = [a1, a2, a3, a4, a5, a6, b1, b2];
    let first_try = first_try[0].clone();
    // On one line (`rustfmt::skip` needs a statement): the test takes it apart the same way.
    #[rustfmt::skip]
    let source = Source { app, ok, flaky, a, b, org_a, sequences, a3_body, first_try };
    source
}

#[tokio::test]
async fn an_installation_moves_with_its_ids_and_a_node_on_the_copy_finishes_its_sequences() {
    let target = Target::create().await;
    // The target's own key: the copy opens the source's secrets with the key file beside the
    // SQLite source and seals them under this one.
    let target_key = SecretKey::generate().to_base64();
    let env = [("CLARION_SECRET_KEY", target_key.as_str())];

    #[rustfmt::skip]
    let Source { app, ok, flaky, a, b, org_a, sequences, a3_body, first_try } = fill_source().await;
    let [a1, a2, a3, a4, a5, a6, b1, b2] = sequences;
    let http = reqwest::Client::new();
    let pending_webhook_id = first_try.header("webhook-id").to_owned();
    // What the API answers now, to compare with the copy's answers.
    let mut before: HashMap<String, Value> = HashMap::new();
    for tenant in [&a, &b] {
        for path in UNCHANGING.iter().map(|path| (*path).to_owned()).chain([
            "/v1/sequences?limit=100".to_owned(),
            "/v1/webhook-deliveries".to_owned(),
        ]) {
            let (status, answer) = get(&http, &app.base, &tenant.key, &path).await;
            assert_eq!(status, 200, "{path}: {answer}");
            before.insert(format!("{}{path}", tenant.key), answer);
        }
    }
    for (key, id) in [(&a.key, a1), (&a.key, a5), (&a.key, a6), (&b.key, b1)] {
        before.insert(format!("{key}/{id}"), app.sequence(key, id).await);
    }
    let source_counts = app.store.table_counts().await.unwrap();

    // ---- A source secret the keys cannot open: refused, nothing written. ----
    let database = clarion_store::Store::sqlite_file(&app.database_url).unwrap();
    let key_file = key_file_path(&database);
    let file_key: SecretKey = std::fs::read_to_string(&key_file).unwrap().parse().unwrap();
    let aside = key_file.with_extension("aside");
    std::fs::rename(&key_file, &aside).unwrap();
    let (succeeded, _, stderr) = migrate_store(&app.database_url, &target.url, &env).await;
    std::fs::rename(&aside, &key_file).unwrap();
    assert!(!succeeded);
    assert!(
        stderr.contains(&format!("sealed under secret key {}", file_key.id())),
        "{stderr}"
    );

    // ---- The move. ----
    let (succeeded, stdout, stderr) = migrate_store(&app.database_url, &target.url, &env).await;
    assert!(succeeded, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with(&format!("copied sqlite -> {} in ", target.backend)),
        "{stdout}"
    );
    let printed = printed_counts(&stdout);
    let expected: Vec<(String, u64, u64)> = source_counts
        .iter()
        .map(|(table, rows)| ((*table).to_owned(), *rows, *rows))
        .collect();
    assert_eq!(printed, expected);
    let count = |table: &str| {
        printed
            .iter()
            .find(|(name, _, _)| name == table)
            .map(|(_, rows, _)| *rows)
            .unwrap()
    };
    for (table, rows) in [
        ("organizations", 2),
        ("api_keys", 2),
        ("organization_vapi_assistants", 1),
        ("webhook_endpoints", 3),
        // The deleted endpoint's secret is erased.
        ("webhook_endpoint_secrets", 2),
        ("assistants", 3),
        ("sequence_templates", 2),
        ("sequence_template_versions", 3),
        ("sequences", 8),
        // a6's opt-out and the one added through the API.
        ("suppressions", 2),
        ("webhook_messages", 4),
        ("webhook_deliveries", 5),
    ] {
        assert_eq!(count(table), rows, "{table}");
    }
    assert!(
        stdout.contains(&format!(
            "sealed under secret key {}",
            target_key.parse::<SecretKey>().unwrap().id()
        )),
        "{stdout}"
    );
    // The source is as it was: same rows, and its secrets still open with its own key file.
    assert_eq!(app.store.table_counts().await.unwrap(), source_counts);
    let (status, shown) = get(&http, &app.base, &a.key, "/v1/webhook-endpoints").await;
    assert_eq!(status, 200);
    let endpoint_a = shown["data"][0]["id"].as_i64().unwrap();
    assert_eq!(
        current_secret(&http, &app.base, &a.key, endpoint_a).await,
        a.secret
    );

    // A second run finds the copy and refuses.
    let (succeeded, _, stderr) = migrate_store(&app.database_url, &target.url, &env).await;
    assert!(!succeeded);
    assert!(
        stderr.contains("the target database is not empty"),
        "{stderr}"
    );

    // ---- A node on the copy. ----
    flaky.answer(Answer::Status(204));
    let node_dir = tempfile::tempdir().unwrap();
    let (mut node, base) = support::spawn_server_at(
        node_dir.path(),
        &target.url,
        support::FAST_NODE_CONFIG,
        None,
        &env,
    )
    .await;
    // Same keys, same public ids, same answers. The node is already delivering, so B's
    // endpoint may have had its first success since the move, which clears `failing_since`
    // (and nothing else): that one field is the source's value or, after a success, null.
    for tenant in [&a, &b] {
        for path in UNCHANGING {
            let (status, mut answer) = get(&http, &base, &tenant.key, path).await;
            assert_eq!(status, 200, "{path}");
            let mut expected = before[&format!("{}{path}", tenant.key)].clone();
            if *path == "/v1/webhook-endpoints" {
                for (now, then) in answer["data"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .zip(expected["data"].as_array_mut().unwrap())
                {
                    let now_failing = now["failing_since"].take();
                    let then_failing = then["failing_since"].take();
                    assert!(
                        now_failing.is_null() || now_failing == then_failing,
                        "failing_since {now_failing} on the copy, {then_failing} before"
                    );
                }
            }
            assert_eq!(answer, expected, "{path}");
        }
    }
    let (_, listed) = get(&http, &base, &a.key, "/v1/sequences?limit=100").await;
    let ids = |list: &Value| -> Vec<i64> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        ids(&listed),
        ids(&before[&format!("{}/v1/sequences?limit=100", a.key)])
    );
    assert_eq!(
        current_secret(&http, &base, &a.key, endpoint_a).await,
        a.secret
    );
    // The idempotency key and its fingerprint came along: the same request is a replay.
    let replay = http
        .post(format!("{base}/v1/sequences"))
        .bearer_auth(&a.key)
        .header("Idempotency-Key", "move-a3")
        .json(&a3_body)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status().as_u16(), 200);
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], a3);
    // The operator's settings came along too.
    let shown = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args([
            "org",
            "show",
            &org_a.0.to_string(),
            "--database",
            &target.url,
        ])
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(shown.status.success());
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["vapi_assistants"], json!(["asst_moved"]));
    let (status, _) = call(
        &http,
        reqwest::Method::POST,
        &base,
        &a.key,
        &format!("/v1/sequences/{a4}/resume"),
    )
    .await;
    assert_eq!(status, 200);

    // The node finishes every running sequence and delivers every report, the one queued
    // before the move under its webhook-id.
    let keys = [a.key.as_str(), b.key.as_str()];
    eventually("every sequence ended on the copy", || async {
        every_listed(&http, &base, &keys, "/v1/sequences?limit=100", |s| {
            s["status"] == "ended"
        })
        .await
    })
    .await;
    let reports_to = |receiver: &TestReceiver, ids: &[i64]| {
        let seen: Vec<i64> = receiver
            .received()
            .iter()
            .map(|r| body(r)["id"].as_i64().unwrap())
            .collect();
        ids.iter().all(|id| seen.contains(id))
    };
    eventually("A's reports delivered", || async {
        reports_to(&ok, &[a1, a2, a3, a4, a5, a6])
    })
    .await;
    eventually("B's reports delivered", || async {
        reports_to(&flaky, &[b1, b2]) && flaky.received().len() >= 3
    })
    .await;
    eventually("every delivery settled", || async {
        every_listed(&http, &base, &keys, "/v1/webhook-deliveries", |d| {
            d["status"] != "pending"
        })
        .await
    })
    .await;

    // One message per sequence (one webhook-id, whatever the attempts), signed with the
    // endpoint's secret as created on the source; b1's retry is the message queued before the
    // move (its webhook-id, its bytes); what was delivered before the move is not sent again.
    for (receiver, tenant, ids) in [
        (&ok, &a, vec![a1, a2, a3, a4, a5, a6]),
        (&flaky, &b, vec![b1, b2]),
    ] {
        let received = receiver.received();
        assert!(received.iter().all(|r| signed_by(r, &tenant.secret)));
        for id in ids {
            let mut webhook_ids: Vec<&str> = received
                .iter()
                .filter(|r| body(r)["id"] == id)
                .map(|r| r.header("webhook-id"))
                .collect();
            webhook_ids.dedup();
            assert_eq!(webhook_ids.len(), 1, "sequence {id}: {webhook_ids:?}");
        }
    }
    let sent_again: Vec<i64> = ok.received()[3..]
        .iter()
        .map(|r| body(r)["id"].as_i64().unwrap())
        .filter(|id| [a1, a5, a6].contains(id))
        .collect();
    assert!(sent_again.is_empty(), "{sent_again:?}");
    let retried: Vec<Received> = flaky
        .received()
        .into_iter()
        .filter(|r| body(r)["id"] == b1)
        .collect();
    assert!(retried.len() >= 2);
    for retry in &retried[1..] {
        assert_eq!(retry.header("webhook-id"), pending_webhook_id);
        assert_eq!(retry.body, first_try.body);
    }
    // Each new report's webhook-id is the one its delivery lists on the copy.
    let (_, deliveries_a) = get(&http, &base, &a.key, "/v1/webhook-deliveries").await;
    for request in ok.received() {
        let listed = deliveries_a["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["webhook_id"] == request.header("webhook-id"))
            .unwrap_or_else(|| panic!("{} not listed", request.header("webhook-id")));
        assert_eq!(listed["status"], "delivered");
    }
    // Sequences that ended before the move read exactly as they did.
    for (key, id) in [(&a.key, a1), (&a.key, a5), (&a.key, a6), (&b.key, b1)] {
        let (_, now) = get(&http, &base, key, &format!("/v1/sequences/{id}")).await;
        assert_eq!(now, before[&format!("{key}/{id}")], "sequence {id}");
    }
    let (_, deliveries_b) = get(&http, &base, &b.key, "/v1/webhook-deliveries").await;
    let failed: Vec<&Value> = deliveries_b["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == "failed")
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "the deleted endpoint's delivery stays failed"
    );
    assert_eq!(failed[0]["webhook_id"], pending_webhook_id.as_str());
    node.kill().await.unwrap();
}
