//! The real `clarion serve` process: `kill -9` mid-delivery loses nothing, and SIGTERM lets
//! in-flight attempts finish and be recorded before the process exits.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::support;
use clarion_store::testing::TestDatabase;

use std::time::Duration;

use crate::support::{Answer, DEADLINE, TestReceiver, eventually};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// A compressed schedule: the dispatcher's behaviour is the same, the test is fast.
const TEST_CONFIG: &str = r#"
[webhooks]
retry_schedule = ["0s", "500ms", "500ms", "500ms", "500ms", "500ms", "500ms", "500ms"]
attempt_timeout = "2s"
lease_margin = "1s"
poll_interval = "100ms"
"#;

struct Server {
    child: Child,
    base: String,
}

async fn start_server(dir: &std::path::Path, database: &TestDatabase) -> Server {
    let (child, base) = support::spawn_server(dir, database, TEST_CONFIG, None).await;
    Server { child, base }
}

async fn deliveries(http: &reqwest::Client, base: &str, key: &str) -> Vec<Value> {
    let url = format!("{base}/v1/webhook-deliveries?limit=200");
    support::api_get(http, &url, key).await["data"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn kill_9_mid_delivery_loses_nothing_and_every_report_arrives_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create().await;
    let key = support::create_org_with_cli(&database).await;
    let http = reqwest::Client::new();
    // The receiver holds every request: the server dies with attempts in flight.
    let receiver = TestReceiver::start(Answer::Delay(Duration::from_secs(3600))).await;

    let mut server = start_server(dir.path(), &database).await;
    let created: Value = support::api_post(
        &http,
        &format!("{}/v1/webhook-endpoints", server.base),
        &key,
        Some(&json!({ "url": receiver.url })),
    )
    .await;
    let endpoint = created["id"].as_i64().unwrap();
    const MESSAGES: usize = 24;
    let mut webhook_ids = Vec::new();
    for _ in 0..MESSAGES {
        let sent: Value = support::api_post(
            &http,
            &format!("{}/v1/webhook-endpoints/{endpoint}/test", server.base),
            &key,
            None,
        )
        .await;
        webhook_ids.push(sent["webhook_id"].as_str().unwrap().to_owned());
    }
    // Sixteen in flight (the per-endpoint cap), the rest waiting: now kill -9.
    receiver.wait_for(16).await;
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();

    receiver.answer(Answer::Status(204));
    let server = start_server(dir.path(), &database).await;
    eventually("every delivery delivered after the restart", || async {
        deliveries(&http, &server.base, &key)
            .await
            .iter()
            .all(|d| d["status"] == "delivered")
    })
    .await;
    let after = deliveries(&http, &server.base, &key).await;
    assert_eq!(after.len(), MESSAGES, "no delivery lost");
    let mut delivered_ids: Vec<String> = after
        .iter()
        .map(|d| d["webhook_id"].as_str().unwrap().to_owned())
        .collect();
    delivered_ids.sort();
    webhook_ids.sort();
    assert_eq!(delivered_ids, webhook_ids);
    // The receiver saw every message with a 204 answer, under its original webhook-id.
    let seen: std::collections::HashSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    for id in &webhook_ids {
        assert!(seen.contains(id), "{id} never reached the receiver");
    }
    for delivery in &after {
        let attempts = delivery["attempts"].as_array().unwrap();
        assert_eq!(attempts.last().unwrap()["status_code"], 204, "{delivery}");
    }
}

#[tokio::test]
async fn sigterm_finishes_and_records_attempts_in_flight_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create().await;
    let key = support::create_org_with_cli(&database).await;
    let http = reqwest::Client::new();
    let receiver = TestReceiver::start(Answer::Delay(Duration::from_millis(1500))).await;
    let mut server = start_server(dir.path(), &database).await;
    let created: Value = support::api_post(
        &http,
        &format!("{}/v1/webhook-endpoints", server.base),
        &key,
        Some(&json!({ "url": receiver.url })),
    )
    .await;
    let endpoint = created["id"].as_i64().unwrap();
    for _ in 0..3 {
        let status = http
            .post(format!(
                "{}/v1/webhook-endpoints/{endpoint}/test",
                server.base
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 202);
    }
    receiver.wait_for(3).await;
    let pid = server.child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(DEADLINE, server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "clarion exited with {exit}");

    // The attempts that were in flight finished (204 after the delay) and were recorded.
    let store = database.open().await.unwrap();
    let org = store.authenticate(&key).await.unwrap().unwrap();
    let recorded = store
        .list_deliveries(org, &clarion_store::DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(recorded.len(), 3);
    for delivery in recorded {
        assert_eq!(delivery.status, clarion_store::DeliveryStatus::Delivered);
        assert_eq!(delivery.attempts.len(), 1);
        assert_eq!(delivery.attempts[0].status_code, Some(204));
    }
}
