//! Webhook delivery end to end, in process: API on port 0, a temp SQLite file, a test receiver
//! whose answers change mid-test, and the dispatcher driven synchronously on a manual clock so
//! that the whole retry schedule runs without sleeping.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::support;

use std::time::Duration;

use crate::support::{Answer, AppOptions, TestReceiver, spawn_app, spawn_app_with};
use clarion_webhooks::{Secret, Verifier, WebhookHeaders, examples};
use serde_json::json;

fn verify(
    received: &support::Received,
    secret: &str,
    now_secs: i64,
) -> Result<(), clarion_webhooks::VerifyError> {
    let headers = WebhookHeaders {
        id: Some(received.header("webhook-id")),
        timestamp: Some(received.header("webhook-timestamp")),
        signature: Some(received.header("webhook-signature")),
    };
    Verifier::new(secret.parse::<Secret>().unwrap()).verify_at(&headers, &received.body, now_secs)
}

fn millis(text: &str) -> i64 {
    text.parse::<clarion_webhooks::Timestamp>()
        .unwrap()
        .unix_millis()
}

#[tokio::test]
async fn failing_deliveries_follow_the_whole_schedule_then_fail_and_a_manual_retry_delivers() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(500)).await;
    let (org, key) = app.org("Riverside").await;
    let (endpoint_id, secret) = app.endpoint(&key, &receiver.url).await;
    let report = examples::call_sms_call();
    app.enqueue(org, &report).await;

    let schedule = app.config.retry.schedule.clone();
    assert_eq!(schedule.len(), 8, "the default schedule has eight attempts");
    // Attempt 1 is due at once.
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 1);
    for (attempt, delay) in schedule.iter().enumerate().skip(1) {
        // Not due before the earliest jittered time...
        app.clock.advance(delay.mul_f64(0.79));
        assert_eq!(
            app.dispatcher.run_due_now().await.unwrap(),
            0,
            "attempt {} came early",
            attempt + 1
        );
        // ...and due by the latest.
        app.clock.advance(delay.mul_f64(0.42));
        assert_eq!(
            app.dispatcher.run_due_now().await.unwrap(),
            1,
            "attempt {} did not come",
            attempt + 1
        );
    }
    app.clock.advance(Duration::from_secs(48 * 3600));
    assert_eq!(
        app.dispatcher.run_due_now().await.unwrap(),
        0,
        "no ninth scheduled attempt"
    );

    let deliveries = app.deliveries(&key).await;
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["endpoint_id"], endpoint_id);
    assert_eq!(delivery["sequence_id"], report.id);
    assert_eq!(delivery["attempt_count"], 8);
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 8, "every attempt is recorded");
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["status_code"], 500);
        assert_eq!(attempt["error"], serde_json::Value::Null);
        if i > 0 {
            // The gap between attempts is the schedule's delay with at most 20 % jitter (plus
            // the manual clock's step granularity of this test).
            let gap = millis(attempt["at"].as_str().unwrap())
                - millis(attempts[i - 1]["at"].as_str().unwrap());
            let base = schedule[i].as_millis() as i64;
            assert!(
                gap >= base * 79 / 100 && gap <= base * 121 / 100,
                "attempt {} after {gap} ms, base {base} ms",
                i + 1
            );
        }
    }

    // Every attempt: the same webhook-id, the same bytes, a fresh timestamp, a valid signature.
    let received = receiver.received();
    assert_eq!(received.len(), 8);
    let expected_body = serde_json::to_vec(&report).unwrap();
    for (i, request) in received.iter().enumerate() {
        assert_eq!(
            request.body.as_ref(),
            expected_body.as_slice(),
            "attempt {} body changed",
            i + 1
        );
        assert_eq!(
            request.header("webhook-id"),
            received[0].header("webhook-id")
        );
        assert_eq!(request.header("content-type"), "application/json");
        assert!(request.header("user-agent").starts_with("clarion/"));
        assert_eq!(request.header("clarion-attempt"), (i + 1).to_string());
        let ts: i64 = request.header("webhook-timestamp").parse().unwrap();
        verify(request, &secret, ts).unwrap();
        if i > 0 {
            assert!(
                ts > received[i - 1]
                    .header("webhook-timestamp")
                    .parse::<i64>()
                    .unwrap()
            );
        }
    }
    assert_eq!(delivery["webhook_id"], received[0].header("webhook-id"));

    // The receiver recovers; a manual retry delivers the same message once more.
    receiver.answer(Answer::Status(204));
    let id = delivery["id"].as_i64().unwrap();
    let (status, retried) = app
        .post(
            &key,
            &format!("/v1/webhook-deliveries/{id}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{retried}");
    assert_eq!(retried["status"], "pending");
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 1);
    let (_, after) = app.get(&key, &format!("/v1/webhook-deliveries/{id}")).await;
    assert_eq!(after["status"], "delivered");
    assert_eq!(after["attempt_count"], 9);
    assert_eq!(after["attempts"][8]["status_code"], 204);
    let last = receiver.received().pop().unwrap();
    assert_eq!(last.body.as_ref(), expected_body.as_slice());
    assert_eq!(last.header("webhook-id"), received[0].header("webhook-id"));
}

#[tokio::test]
async fn a_failed_manual_retry_goes_back_to_failed_without_restarting_the_schedule() {
    let mut options = AppOptions::default();
    options.dispatcher.retry.schedule = vec![Duration::ZERO];
    let app = spawn_app_with(options).await;
    let receiver = TestReceiver::start(Answer::Status(500)).await;
    let (org, key) = app.org("Riverside").await;
    app.endpoint(&key, &receiver.url).await;
    app.enqueue(org, &examples::call_only()).await;
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 1);
    let id = app.deliveries(&key).await[0]["id"].as_i64().unwrap();
    app.post(
        &key,
        &format!("/v1/webhook-deliveries/{id}/retry"),
        json!({}),
    )
    .await;
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 1);
    app.clock.advance(Duration::from_secs(86_400));
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 0);
    let (_, delivery) = app.get(&key, &format!("/v1/webhook-deliveries/{id}")).await;
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["attempt_count"], 2);
}

#[tokio::test]
async fn timeouts_refused_connections_and_503_are_recorded_and_retried() {
    let mut options = AppOptions::default();
    options.dispatcher.attempt_timeout = Duration::from_millis(300);
    let app = spawn_app_with(options).await;
    let receiver = TestReceiver::start(Answer::Delay(Duration::from_secs(30))).await;
    let (org, key) = app.org("Riverside").await;
    app.endpoint(&key, &receiver.url).await;
    // A port with nothing listening: bind, note the port, close.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_url = format!("http://{}/hooks", closed.local_addr().unwrap());
    drop(closed);
    app.endpoint(&key, &closed_url).await;

    app.enqueue(org, &examples::call_only()).await;
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 2);
    let deliveries = app.deliveries(&key).await;
    let mut errors: Vec<String> = deliveries
        .iter()
        .map(|d| {
            assert_eq!(d["status"], "pending", "{d}");
            assert_eq!(d["attempts"][0]["status_code"], serde_json::Value::Null);
            d["attempts"][0]["error"].as_str().unwrap().to_owned()
        })
        .collect();
    errors.sort();
    assert_eq!(errors, ["connection-refused", "timeout"]);

    // The slow receiver now answers 503 with a Retry-After beyond the next scheduled delay
    // (5 min, at most 6 min with jitter).
    receiver.answer(Answer::StatusWithHeader(503, "retry-after", "600".into()));
    app.clock.advance(Duration::from_secs(6));
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 2);
    let deliveries = app.deliveries(&key).await;
    let slow = deliveries
        .iter()
        .find(|d| d["attempts"][1]["status_code"] == 503)
        .unwrap();
    let at = millis(slow["attempts"][1]["at"].as_str().unwrap());
    let next = millis(slow["next_attempt_at"].as_str().unwrap());
    assert_eq!(next - at, 600_000, "Retry-After 600 s is honoured");

    // 429 asking for a day is clamped to retry_after_max (1 h).
    receiver.answer(Answer::StatusWithHeader(429, "retry-after", "86400".into()));
    app.clock.advance(Duration::from_secs(601));
    app.dispatcher.run_due_now().await.unwrap();
    let (_, slow) = app
        .get(&key, &format!("/v1/webhook-deliveries/{}", slow["id"]))
        .await;
    let attempts = slow["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["status_code"], 429);
    let at = millis(attempts.last().unwrap()["at"].as_str().unwrap());
    assert_eq!(
        millis(slow["next_attempt_at"].as_str().unwrap()) - at,
        3_600_000
    );
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_redirects_are_not_followed() {
    let app = spawn_app().await;
    let gone = TestReceiver::start(Answer::Status(410)).await;
    let target = TestReceiver::start(Answer::Status(204)).await;
    let redirecting = TestReceiver::start(Answer::StatusWithHeader(
        302,
        "location",
        target.url.clone(),
    ))
    .await;
    let (org, key) = app.org("Riverside").await;
    let (gone_id, _) = app.endpoint(&key, &gone.url).await;
    let (redirect_id, _) = app.endpoint(&key, &redirecting.url).await;
    app.enqueue(org, &examples::call_only()).await;
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 2);

    let (_, endpoint) = app
        .get(&key, &format!("/v1/webhook-endpoints/{gone_id}"))
        .await;
    assert_eq!(endpoint["enabled"], false);
    assert!(
        endpoint["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410")
    );
    let deliveries = app.deliveries(&key).await;
    let to_gone = deliveries
        .iter()
        .find(|d| d["endpoint_id"] == gone_id)
        .unwrap();
    assert_eq!(to_gone["status"], "failed");
    let to_redirect = deliveries
        .iter()
        .find(|d| d["endpoint_id"] == redirect_id)
        .unwrap();
    assert_eq!(to_redirect["status"], "pending");
    assert_eq!(to_redirect["attempts"][0]["status_code"], 302);
    assert!(target.received().is_empty(), "the redirect was followed");

    // A disabled endpoint gets no new deliveries.
    app.enqueue(org, &examples::cancelled()).await;
    assert_eq!(
        app.deliveries(&key)
            .await
            .iter()
            .filter(|d| d["endpoint_id"] == gone_id)
            .count(),
        1
    );
}

#[tokio::test]
async fn a_rotated_secret_signs_alongside_the_new_one_for_24_hours() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let (org, key) = app.org("Riverside").await;
    let (id, old_secret) = app.endpoint(&key, &receiver.url).await;
    let (status, rotated) = app
        .post(
            &key,
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);

    app.enqueue(org, &examples::call_only()).await;
    app.dispatcher.run_due_now().await.unwrap();
    let first = receiver.wait_for(1).await.remove(0);
    let ts: i64 = first.header("webhook-timestamp").parse().unwrap();
    assert_eq!(first.header("webhook-signature").split(' ').count(), 2);
    verify(&first, &old_secret, ts).unwrap();
    verify(&first, &new_secret, ts).unwrap();

    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    app.enqueue(org, &examples::cancelled()).await;
    app.dispatcher.run_due_now().await.unwrap();
    let second = receiver.wait_for(2).await.remove(1);
    let ts: i64 = second.header("webhook-timestamp").parse().unwrap();
    assert_eq!(second.header("webhook-signature").split(' ').count(), 1);
    verify(&second, &new_secret, ts).unwrap();
    assert!(
        verify(&second, &old_secret, ts).is_err(),
        "the old secret expired"
    );
}

/// Issue 14 defect 6: endpoint secrets were stored in the clear. Now no file of the
/// installation but the key file holds a secret's bytes (not the database, not its
/// write-ahead log), and reports are still signed with it. A test of SQLite's files (on
/// PostgreSQL, the conformance suite reads the stored values back raw).
#[tokio::test]
async fn endpoint_secrets_are_not_in_the_database_files_and_still_sign() {
    let app = spawn_app_with(AppOptions {
        sqlite_key_file: true,
        ..AppOptions::default()
    })
    .await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let (org, key) = app.org("Riverside").await;
    let (id, first) = app.endpoint(&key, &receiver.url).await;
    let (status, rotated) = app
        .post(
            &key,
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let second = rotated["secret"].as_str().unwrap().to_owned();

    let database = std::path::PathBuf::from(app.database_url.trim_start_matches("sqlite://"));
    let folder = database.parent().unwrap();
    let mut files = 0;
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for secret in [&first, &second] {
            let body = secret.trim_start_matches("whsec_");
            assert!(
                !bytes
                    .windows(body.len())
                    .any(|window| window == body.as_bytes()),
                "{} holds an endpoint secret in the clear",
                path.display()
            );
        }
    }
    assert!(files >= 2, "the database and the key file beside it");
    assert!(
        clarion_store::secret_keys::key_file_path(&database).exists(),
        "the key drawn on first start"
    );

    app.enqueue(org, &examples::call_only()).await;
    app.dispatcher.run_due_now().await.unwrap();
    let received = receiver.wait_for(1).await.remove(0);
    let ts: i64 = received.header("webhook-timestamp").parse().unwrap();
    verify(&received, &first, ts).unwrap();
    verify(&received, &second, ts).unwrap();
}

/// Issue 17 defect 5: each rotation used to leave the replaced secret signing for 24 hours, so
/// every rotation added a signature to every attempt. Now the replaced secret keeps its
/// overlap and every older one stops at once: at most two sign.
#[tokio::test]
async fn rotating_five_times_leaves_exactly_two_secrets_signing() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let (org, key) = app.org("Riverside").await;
    let (id, first_secret) = app.endpoint(&key, &receiver.url).await;
    let mut secrets = vec![first_secret];
    for _ in 0..5 {
        let (status, rotated) = app
            .post(
                &key,
                &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{rotated}");
        secrets.push(rotated["secret"].as_str().unwrap().to_owned());
        app.clock.advance(Duration::from_secs(60));
    }

    app.enqueue(org, &examples::call_only()).await;
    app.dispatcher.run_due_now().await.unwrap();
    let received = receiver.wait_for(1).await.remove(0);
    let ts: i64 = received.header("webhook-timestamp").parse().unwrap();
    assert_eq!(
        received.header("webhook-signature").split(' ').count(),
        2,
        "the current secret and the one it replaced"
    );
    let (newest, replaced) = (&secrets[5], &secrets[4]);
    verify(&received, newest, ts).unwrap();
    verify(&received, replaced, ts).unwrap();
    for (n, older) in secrets[..4].iter().enumerate() {
        assert!(
            verify(&received, older, ts).is_err(),
            "secret {n} should no longer sign"
        );
    }
}

/// Issue 17 defect 5: rotation, test reports and manual retries are limited per endpoint; past
/// the limit the API answers 429 with `Retry-After` and the JSON error body, and the action is
/// allowed again once that long has passed.
#[tokio::test]
async fn rotation_test_reports_and_manual_retries_are_rate_limited_per_endpoint() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let (org, key) = app.org("Riverside").await;
    let (id, _) = app.endpoint(&key, &receiver.url).await;
    let (other_id, _) = app.endpoint(&key, &receiver.url).await;
    let post = |path: String| {
        let request = app
            .http
            .post(format!("{}{path}", app.base))
            .bearer_auth(&key)
            .json(&json!({}));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let body: serde_json::Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    };

    let rotate = format!("/v1/webhook-endpoints/{id}/rotate-secret");
    for n in 0..10 {
        let (status, _, body) = post(rotate.clone()).await;
        assert_eq!(status, 200, "rotation {n}: {}", body["error"]);
    }
    let (status, retry_after, body) = post(rotate.clone()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after, Some(360), "one rotation every 6 minutes");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["field"], serde_json::Value::Null);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret rotations"),
        "{body}"
    );
    // Another endpoint has its own allowance; this one gets a token back after Retry-After.
    let (status, _, _) = post(format!("/v1/webhook-endpoints/{other_id}/rotate-secret")).await;
    assert_eq!(status, 200);
    app.clock.advance(Duration::from_secs(360));
    assert_eq!(post(rotate.clone()).await.0, 200);
    assert_eq!(post(rotate.clone()).await.0, 429);

    let test = format!("/v1/webhook-endpoints/{id}/test");
    for n in 0..60 {
        let (status, _, body) = post(test.clone()).await;
        assert_eq!(status, 202, "test report {n}: {body}");
    }
    let (status, retry_after, body) = post(test.clone()).await;
    assert_eq!((status, retry_after), (429, Some(60)), "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");

    app.enqueue(org, &examples::call_only()).await;
    app.dispatcher.run_due_now().await.unwrap();
    let delivery = app
        .deliveries(&key)
        .await
        .into_iter()
        .find(|d| d["endpoint_id"] == id && d["event_type"] != "sequence.ended.test")
        .unwrap();
    let retry = format!("/v1/webhook-deliveries/{}/retry", delivery["id"]);
    for n in 0..600 {
        let (status, _, body) = post(retry.clone()).await;
        assert_eq!(status, 202, "retry {n}: {body}");
    }
    let (status, retry_after, body) = post(retry.clone()).await;
    assert_eq!((status, retry_after), (429, Some(6)), "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");

    // The OpenAPI document tells clients about the 429 and its Retry-After.
    let (_, openapi) = app.get(&key, "/openapi.json").await;
    for path in [
        "/v1/webhook-endpoints/{id}/rotate-secret",
        "/v1/webhook-endpoints/{id}/test",
        "/v1/webhook-deliveries/{id}/retry",
    ] {
        let limited = &openapi["paths"][path]["post"]["responses"]["429"];
        assert!(
            limited["headers"].get("Retry-After").is_some(),
            "{path}: {limited}"
        );
    }
}

#[tokio::test]
async fn a_slow_endpoint_holds_only_its_own_slots_while_others_are_delivered() {
    let mut options = AppOptions::default();
    options.dispatcher.max_in_flight = 8;
    options.dispatcher.max_in_flight_per_endpoint = 2;
    options.dispatcher.attempt_timeout = Duration::from_secs(30);
    let app = spawn_app_with(options).await;
    let slow = TestReceiver::start(Answer::Delay(Duration::from_secs(4))).await;
    let fast = TestReceiver::start(Answer::Status(204)).await;
    let (org, key) = app.org("Riverside").await;
    let (_slow_id, _) = app.endpoint(&key, &slow.url).await;
    let (fast_id, _) = app.endpoint(&key, &fast.url).await;

    let dispatcher = app.dispatcher.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { dispatcher.run(stop.cancelled_owned()).await }
    });
    for _ in 0..10 {
        app.enqueue(org, &examples::call_only()).await;
    }
    // All ten reach the fast endpoint while the slow one sits on two requests at most.
    fast.wait_for(10).await;
    support::eventually("fast deliveries recorded", || async {
        app.deliveries(&key)
            .await
            .iter()
            .filter(|d| d["endpoint_id"] == fast_id && d["status"] == "delivered")
            .count()
            == 10
    })
    .await;
    assert_eq!(slow.max_concurrent(), 2, "per-endpoint cap");
    assert_eq!(slow.received().len(), 2);
    stop.cancel();
    // Shutdown lets the two slow attempts finish rather than abandoning them.
    tokio::time::timeout(Duration::from_secs(40), running)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_pull_api_lists_reports_in_order_byte_for_byte_and_skips_test_messages() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let (org, key) = app.org("Riverside").await;
    let (endpoint, _) = app.endpoint(&key, &receiver.url).await;
    let reports = [
        examples::call_only(),
        examples::call_sms_call(),
        examples::cancelled(),
    ];
    for report in &reports {
        app.enqueue(org, report).await;
    }
    let (status, _) = app
        .post(
            &key,
            &format!("/v1/webhook-endpoints/{endpoint}/test"),
            json!({}),
        )
        .await;
    assert_eq!(status, 202);
    app.dispatcher.run_due_now().await.unwrap();
    let delivered = receiver.wait_for(4).await;
    let test_message = delivered
        .iter()
        .find(|r| r.header("webhook-id").starts_with("msg_test_"))
        .unwrap();
    assert_eq!(
        test_message.header("clarion-event-type"),
        "sequence.ended.test"
    );

    let (status, page1) = app.get(&key, "/v1/reports?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(page1["data"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .get(&key, &format!("/v1/reports?limit=2&after={cursor}"))
        .await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    assert_eq!(page2["next_cursor"], serde_json::Value::Null);
    let ids: Vec<i64> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["data"].as_array().unwrap())
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, reports.iter().map(|r| r.id).collect::<Vec<_>>());

    // Byte for byte what was delivered.
    let raw = app
        .http
        .get(format!("{}/v1/reports?limit=1", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sent = String::from_utf8(serde_json::to_vec(&reports[0]).unwrap()).unwrap();
    assert!(raw.contains(&sent), "{raw}");
}

#[tokio::test]
async fn metrics_health_and_openapi_are_served() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let (org, key) = app.org("Riverside").await;
    app.endpoint(&key, &receiver.url).await;
    app.enqueue(org, &examples::call_only()).await;
    app.dispatcher.run_due_now().await.unwrap();

    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "clarion_webhook_attempts_total",
        "clarion_webhook_deliveries_total",
        "clarion_webhook_attempt_duration_seconds_bucket",
        "clarion_webhook_queue_depth",
        "clarion_webhook_oldest_pending_age_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let (status, openapi) = app.get(&key, "/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/v1/webhook-endpoints",
        "/v1/webhook-endpoints/{id}/rotate-secret",
        "/v1/webhook-deliveries/{id}/retry",
        "/v1/reports",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

/// A delivery whose endpoint is disabled or deleted could never be attempted: a manual retry
/// is refused with 409 and leaves it `failed`, instead of leaving it `pending` for ever (and
/// counted in the queue's depth and age).
#[tokio::test]
async fn a_retry_for_a_disabled_or_deleted_endpoint_is_refused_and_leaves_nothing_pending() {
    let mut options = AppOptions::default();
    options.dispatcher.retry.schedule = vec![Duration::ZERO];
    let app = spawn_app_with(options).await;
    let receiver = TestReceiver::start(Answer::Status(500)).await;
    let (org, key) = app.org("Riverside").await;
    let (endpoint, _) = app.endpoint(&key, &receiver.url).await;
    app.enqueue(org, &examples::call_only()).await;
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 1);
    let id = app.deliveries(&key).await[0]["id"].as_i64().unwrap();
    let retry = format!("/v1/webhook-deliveries/{id}/retry");
    let delivery = format!("/v1/webhook-deliveries/{id}");

    let (status, _) = app
        .patch(
            &key,
            &format!("/v1/webhook-endpoints/{endpoint}"),
            json!({ "enabled": false }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, answer) = app.post(&key, &retry, json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "endpoint_disabled");
    assert_eq!(app.get(&key, &delivery).await.1["status"], "failed");

    let (status, _) = app
        .request(
            reqwest::Method::DELETE,
            &key,
            &format!("/v1/webhook-endpoints/{endpoint}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, answer) = app.post(&key, &retry, json!({})).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "endpoint_deleted");
    let (_, after) = app.get(&key, &delivery).await;
    assert_eq!(after["status"], "failed");
    assert_eq!(app.store.queue_stats().await.unwrap().pending, 0);
}
