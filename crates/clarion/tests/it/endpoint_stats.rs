//! `GET /v1/webhook-endpoints/{id}/stats`: an endpoint's attempts over the last 24 hours and
//! 7 days, against a receiver that succeeds (slowly enough to measure) and one that fails, and
//! this node's adaptive concurrency limit for it.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use crate::support::{Answer, TestReceiver, spawn_app};
use clarion_delivery::Clock;
use clarion_store::{EndpointId, IdKind};
use clarion_webhooks::examples;
use serde_json::Value;

/// How long the succeeding receiver takes to answer: every attempt to it lasts at least this.
const RECEIVER_DELAY: Duration = Duration::from_millis(120);

/// The durations of the endpoint's attempts, from the deliveries API, shortest first.
async fn durations_of(app: &crate::support::TestApp, key: &str, endpoint: i64) -> Vec<u64> {
    let (status, page) = app
        .get(
            key,
            &format!("/v1/webhook-deliveries?endpoint_id={endpoint}&limit=200"),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let mut durations: Vec<u64> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|delivery| delivery["attempts"].as_array().unwrap().clone())
        .map(|attempt| attempt["duration_ms"].as_u64().unwrap())
        .collect();
    durations.sort_unstable();
    durations
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], percent: usize) -> u64 {
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn millis(text: &Value) -> i64 {
    text.as_str()
        .unwrap()
        .parse::<clarion_webhooks::Timestamp>()
        .unwrap()
        .unix_millis()
}

#[tokio::test]
async fn stats_count_a_succeeding_and_a_failing_receivers_attempts_per_window() {
    let app = spawn_app().await;
    let good = TestReceiver::start(Answer::Delay(RECEIVER_DELAY)).await;
    let bad = TestReceiver::start(Answer::Status(503)).await;
    let (org, key) = app.org("Riverside").await;
    let (good_id, _) = app.endpoint(&key, &good.url).await;
    let (bad_id, _) = app.endpoint(&key, &bad.url).await;

    // Nothing sent yet: zero counts, nulls, and the limit every endpoint starts at.
    let (status, empty) = app
        .get(&key, &format!("/v1/webhook-endpoints/{good_id}/stats"))
        .await;
    assert_eq!(status, 200, "{empty}");
    for window in ["last_24h", "last_7d"] {
        let w = &empty[window];
        assert_eq!(w["attempts"], 0, "{empty}");
        assert_eq!(w["succeeded"], 0);
        assert_eq!(w["failed"], 0);
        for field in [
            "success_rate",
            "latency_p50_ms",
            "latency_p99_ms",
            "last_success_at",
            "last_failure_at",
        ] {
            assert!(w[field].is_null(), "{window}.{field}: {empty}");
        }
    }

    // Three reports, each to both endpoints: first attempts at `first`.
    let first = app.clock.now_millis();
    for _ in 0..3 {
        app.enqueue(org, &examples::call_sms_call()).await;
    }
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 6);
    // The failing endpoint's retries, two days later: outside the 24-hour window of a
    // reading made then, inside the 7-day one.
    app.clock.advance(Duration::from_secs(2 * 24 * 60 * 60));
    let retried_at = app.clock.now_millis();
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 3);

    let ids = app.store.public_ids(org);
    let internal = |public: i64| EndpointId(ids.decode(IdKind::Endpoint, public).unwrap());

    let (status, good_stats) = app
        .get(&key, &format!("/v1/webhook-endpoints/{good_id}/stats"))
        .await;
    assert_eq!(status, 200, "{good_stats}");
    let durations = durations_of(&app, &key, good_id).await;
    assert_eq!(durations.len(), 3);
    // The good endpoint's attempts were all made two days ago.
    assert_eq!(good_stats["last_24h"]["attempts"], 0, "{good_stats}");
    assert!(good_stats["last_24h"]["last_success_at"].is_null());
    let week = &good_stats["last_7d"];
    assert_eq!(week["attempts"], 3, "{good_stats}");
    assert_eq!(week["succeeded"], 3);
    assert_eq!(week["failed"], 0);
    assert_eq!(week["success_rate"], 1.0);
    assert_eq!(week["latency_p50_ms"], percentile(&durations, 50));
    assert_eq!(week["latency_p99_ms"], percentile(&durations, 99));
    assert!(
        week["latency_p50_ms"].as_u64().unwrap() >= RECEIVER_DELAY.as_millis() as u64,
        "{good_stats}"
    );
    assert_eq!(millis(&week["last_success_at"]), first);
    assert!(week["last_failure_at"].is_null());
    assert_eq!(
        good_stats["concurrency_limit"],
        app.dispatcher.endpoint_limit(internal(good_id))
    );

    let (status, bad_stats) = app
        .get(&key, &format!("/v1/webhook-endpoints/{bad_id}/stats"))
        .await;
    assert_eq!(status, 200, "{bad_stats}");
    let day = &bad_stats["last_24h"];
    assert_eq!(day["attempts"], 3, "{bad_stats}");
    assert_eq!(day["succeeded"], 0);
    assert_eq!(day["failed"], 3);
    assert_eq!(day["success_rate"], 0.0);
    assert_eq!(millis(&day["last_failure_at"]), retried_at);
    assert!(day["last_success_at"].is_null());
    let week = &bad_stats["last_7d"];
    assert_eq!(week["attempts"], 6, "{bad_stats}");
    assert_eq!(week["failed"], 6);
    let durations = durations_of(&app, &key, bad_id).await;
    assert_eq!(week["latency_p50_ms"], percentile(&durations, 50));
    assert_eq!(week["latency_p99_ms"], percentile(&durations, 99));
    // 503s cut the endpoint's limit: the answer is this node's dispatcher's value.
    let bad_limit = app.dispatcher.endpoint_limit(internal(bad_id));
    assert_eq!(bad_stats["concurrency_limit"], bad_limit);
    assert!(
        bad_limit < good_stats["concurrency_limit"].as_u64().unwrap() as u32,
        "the failing endpoint's limit was not cut: {bad_stats} vs {good_stats}"
    );
}

#[tokio::test]
async fn another_organisations_endpoint_stats_are_not_found() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let (_, key) = app.org("Riverside").await;
    let (_, other_key) = app.org("Lakeside").await;
    let (endpoint, _) = app.endpoint(&key, &receiver.url).await;

    let (status, body) = app
        .get(
            &other_key,
            &format!("/v1/webhook-endpoints/{endpoint}/stats"),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let (status, _) = app
        .get(&key, &format!("/v1/webhook-endpoints/{endpoint}/stats"))
        .await;
    assert_eq!(status, 200);
    // A deleted endpoint has no stats either.
    let (status, _) = app
        .request(
            reqwest::Method::DELETE,
            &key,
            &format!("/v1/webhook-endpoints/{endpoint}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .get(&key, &format!("/v1/webhook-endpoints/{endpoint}/stats"))
        .await;
    assert_eq!(status, 404);
}
