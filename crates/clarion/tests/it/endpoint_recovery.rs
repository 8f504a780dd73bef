//! Bulk recovery (`POST /v1/webhook-endpoints/{id}/recover`) and endpoint health
//! (`webhooks.disable_after`), on the manual clock.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use clarion_delivery::Clock as _;
use clarion_webhooks::SequenceReport;
use serde_json::{Value, json};

use crate::support::{Answer, AppOptions, TestApp, TestReceiver, spawn_app_with};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// An app whose deliveries get one attempt each (so a refused one is `failed` at once) and
/// one request per endpoint at a time.
async fn one_attempt_app() -> TestApp {
    let mut options = AppOptions::default();
    options.dispatcher.retry.schedule = vec![Duration::ZERO];
    options.dispatcher.max_in_flight_per_endpoint = 1;
    options.dispatcher.min_in_flight_per_endpoint = 1;
    spawn_app_with(options).await
}

fn report(id: i64) -> SequenceReport {
    SequenceReport {
        id,
        ..clarion_webhooks::examples::cancelled()
    }
}

/// The report ids in the bodies a receiver got, in arrival order.
fn received_ids(receiver: &TestReceiver) -> Vec<i64> {
    receiver
        .received()
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

/// (status, attempt count) of the delivery of report `id` to the endpoint, found by the
/// `webhook-id` the receiver saw it under.
async fn delivery_of(
    app: &TestApp,
    key: &str,
    receiver: &TestReceiver,
    endpoint: i64,
    id: i64,
) -> (String, u64) {
    let webhook_id = receiver
        .received()
        .iter()
        .find(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["id"] == id)
        .map(|r| r.header("webhook-id").to_owned())
        .unwrap_or_else(|| panic!("report {id} never arrived"));
    let (_, page) = app
        .get(
            key,
            &format!("/v1/webhook-deliveries?endpoint_id={endpoint}&limit=200"),
        )
        .await;
    let delivery = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["webhook_id"] == webhook_id.as_str())
        .unwrap()
        .clone();
    (
        delivery["status"].as_str().unwrap().to_owned(),
        delivery["attempt_count"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn a_recovery_requeues_exactly_the_failed_deliveries_in_its_window_once() {
    let app = one_attempt_app().await;
    let (org, key) = app.org("Riverside Family Clinic").await;
    let receiver = TestReceiver::start(Answer::Status(500)).await;
    let (endpoint, _) = app.endpoint(&key, &receiver.url).await;
    let start = app.clock.now_millis();

    // Day 0: report 1 fails. Day 2: reports 2 and 3 fail, report 4 is delivered.
    // Day 4: report 5 fails.
    app.enqueue(org, &report(1)).await;
    app.run_due().await;
    app.clock.advance(2 * DAY);
    app.enqueue(org, &report(2)).await;
    app.enqueue(org, &report(3)).await;
    app.run_due().await;
    receiver.answer(Answer::Status(204));
    app.enqueue(org, &report(4)).await;
    app.run_due().await;
    receiver.answer(Answer::Status(500));
    app.clock.advance(2 * DAY);
    app.enqueue(org, &report(5)).await;
    app.run_due().await;
    assert_eq!(received_ids(&receiver), [1, 2, 3, 4, 5]);
    for (id, status) in [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
        (4, "delivered"),
        (5, "failed"),
    ] {
        assert_eq!(
            delivery_of(&app, &key, &receiver, endpoint, id).await,
            (status.to_owned(), 1),
            "{id}"
        );
    }

    // The receiver is fixed; the window covers day 1 to day 3. Asked twice before the
    // dispatcher runs: the second job finds nothing left to queue.
    receiver.answer(Answer::Status(204));
    let time = |millis: i64| {
        clarion_webhooks::Timestamp::from_unix_millis(millis)
            .unwrap()
            .to_string()
    };
    let day_ms = i64::try_from(DAY.as_millis()).unwrap();
    let window = json!({ "since": time(start + day_ms), "until": time(start + 3 * day_ms) });
    let path = format!("/v1/webhook-endpoints/{endpoint}/recover");
    let (status, first) = app.post(&key, &path, window.clone()).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["endpoint_id"], endpoint);
    assert_eq!(first["since"], window["since"]);
    let (status, second) = app.post(&key, &path, window.clone()).await;
    assert_eq!(status, 202, "{second}");
    app.run_due().await;

    assert_eq!(received_ids(&receiver), [1, 2, 3, 4, 5, 2, 3]);
    for (id, status, attempts) in [
        (1, "failed", 1),
        (2, "delivered", 2),
        (3, "delivered", 2),
        (4, "delivered", 1),
        (5, "failed", 1),
    ] {
        assert_eq!(
            delivery_of(&app, &key, &receiver, endpoint, id).await,
            (status.to_owned(), attempts),
            "{id}"
        );
    }
    for (job, requeued) in [(&first, 2), (&second, 0)] {
        let (status, read) = app
            .get(
                &key,
                &format!("/v1/webhook-endpoints/{endpoint}/recoveries/{}", job["id"]),
            )
            .await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["status"], "done");
        assert_eq!(read["requeued"], requeued);
        assert!(read["finished_at"].is_string());
    }
    // The same window once more: the delivered ones stay as they are.
    let (status, third) = app.post(&key, &path, window).await;
    assert_eq!(status, 202, "{third}");
    app.run_due().await;
    assert_eq!(received_ids(&receiver).len(), 7);
}

#[tokio::test]
async fn a_recovery_window_is_bounded_and_another_organisations_endpoint_is_not_found() {
    let app = one_attempt_app().await;
    let (_org, key) = app.org("Riverside Family Clinic").await;
    let (_other, other_key) = app.org("Lakeside Clinic").await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let (endpoint, _) = app.endpoint(&key, &receiver.url).await;
    let now = app.clock.now_millis();
    let time = |millis: i64| {
        clarion_webhooks::Timestamp::from_unix_millis(millis)
            .unwrap()
            .to_string()
    };
    let day = i64::try_from(DAY.as_millis()).unwrap();
    let path = format!("/v1/webhook-endpoints/{endpoint}/recover");
    for (body, field) in [
        (json!({ "since": "yesterday" }), "since"),
        (
            json!({ "since": time(now - day), "until": time(now + day) }),
            "until",
        ),
        (
            json!({ "since": time(now - day), "until": time(now - 2 * day) }),
            "since",
        ),
        (json!({ "since": time(now - 15 * day) }), "since"),
    ] {
        let (status, error) = app.post(&key, &path, body.clone()).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let (status, job) = app
        .post(&key, &path, json!({ "since": time(now - 14 * day) }))
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["status"], "running");
    assert_eq!(job["until"], time(now));

    // Another organisation sees neither the endpoint nor the job.
    let (status, _) = app
        .post(&other_key, &path, json!({ "since": time(now - day) }))
        .await;
    assert_eq!(status, 404);
    let job_path = format!("/v1/webhook-endpoints/{endpoint}/recoveries/{}", job["id"]);
    assert_eq!(app.get(&other_key, &job_path).await.0, 404);
    assert_eq!(app.get(&key, &job_path).await.0, 200);
    assert_eq!(
        app.get(
            &key,
            &format!("/v1/webhook-endpoints/{endpoint}/recoveries/x")
        )
        .await
        .0,
        404
    );
}

/// The value of the process-wide `clarion_webhook_endpoints_disabled_total` counter.
async fn disabled_total(app: &TestApp) -> u64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("clarion_webhook_endpoints_disabled_total "))
        .map_or(0, |value| value.trim().parse().unwrap())
}

async fn endpoint_subscribed(app: &TestApp, key: &str, url: &str, types: Value) -> i64 {
    let (status, endpoint) = app
        .post(
            key,
            "/v1/webhook-endpoints",
            json!({ "url": url, "event_types": types }),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    endpoint["id"].as_i64().unwrap()
}

#[tokio::test]
async fn an_endpoint_failing_for_disable_after_is_disabled_once_and_the_organisation_is_told() {
    let mut options = AppOptions::default();
    options.dispatcher.retry.schedule = vec![Duration::ZERO];
    options.dispatcher.disable_after = 2 * DAY;
    let app = spawn_app_with(options).await;
    let (org, key) = app.org("Riverside Family Clinic").await;
    let failing = TestReceiver::start(Answer::Status(500)).await;
    let watcher = TestReceiver::start(Answer::Status(204)).await;
    let bystander = TestReceiver::start(Answer::Status(204)).await;
    let (endpoint, _) = app.endpoint(&key, &failing.url).await;
    let watcher_id =
        endpoint_subscribed(&app, &key, &watcher.url, json!(["endpoint.disabled"])).await;
    endpoint_subscribed(&app, &key, &bystander.url, json!(["sequence.ended"])).await;
    let path = format!("/v1/webhook-endpoints/{endpoint}");
    let before = disabled_total(&app).await;

    // Day 0: a failure starts the run; day 1: another; then one success resets it.
    app.enqueue(org, &report(1)).await;
    app.run_due().await;
    let (_, read) = app.get(&key, &path).await;
    assert!(read["failing_since"].is_string(), "{read}");
    app.clock.advance(DAY);
    app.enqueue(org, &report(2)).await;
    app.run_due().await;
    failing.answer(Answer::Status(204));
    app.enqueue(org, &report(3)).await;
    app.run_due().await;
    let (_, read) = app.get(&key, &path).await;
    assert_eq!(
        read["failing_since"],
        Value::Null,
        "a 2xx resets it: {read}"
    );

    // Day 1: failures again. Day 2.9 (2.9 days after the first failure, but 1.9 after the
    // run began): still enabled.
    failing.answer(Answer::Status(500));
    app.enqueue(org, &report(4)).await;
    app.run_due().await;
    let run_began = app.clock.now_millis();
    app.clock.advance(DAY.mul_f64(1.9));
    app.enqueue(org, &report(5)).await;
    app.run_due().await;
    let (_, read) = app.get(&key, &path).await;
    assert_eq!(read["enabled"], true, "not before disable_after: {read}");
    assert!(watcher.received().is_empty());

    // Two days after the run began: disabled, with its reason, and the watcher is told once.
    app.clock.advance(DAY.mul_f64(0.1));
    app.run_due().await;
    let (_, read) = app.get(&key, &path).await;
    assert_eq!(read["enabled"], false, "{read}");
    assert_eq!(
        read["disabled_reason"], "every delivery attempt failed for 2days",
        "{read}"
    );
    let received = watcher.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("clarion-event-type"),
        "endpoint.disabled"
    );
    let event: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(
        crate::webhook_events::endpoint_disabled_event_errors(&event),
        Vec::<String>::new()
    );
    assert_eq!(event["endpoint_id"], endpoint);
    assert_eq!(event["url"], failing.url.as_str());
    assert_eq!(event["reason"], read["disabled_reason"]);
    assert_eq!(event["failing_since"], read["failing_since"]);
    let failing_since = event["failing_since"]
        .as_str()
        .unwrap()
        .parse::<clarion_webhooks::Timestamp>()
        .unwrap();
    assert_eq!(failing_since.unix_millis(), run_began);
    assert!(event["disabled_at"].is_string());
    assert_ne!(watcher_id, endpoint);
    // The endpoint that does not subscribe saw reports only; nobody is told twice.
    assert!(
        bystander
            .received()
            .iter()
            .all(|r| r.header("clarion-event-type") == "sequence.ended")
    );
    app.clock.advance(DAY);
    app.run_due().await;
    assert_eq!(watcher.received().len(), 1, "sent once");
    assert!(
        disabled_total(&app).await > before,
        "clarion_webhook_endpoints_disabled_total counts it"
    );
}

#[tokio::test]
async fn a_disabled_endpoints_backlog_is_kept_and_delivered_in_message_order_once_re_enabled() {
    let mut options = AppOptions::default();
    options.dispatcher.max_in_flight_per_endpoint = 1;
    options.dispatcher.min_in_flight_per_endpoint = 1;
    options.dispatcher.disable_after = Duration::from_secs(3600);
    let app = spawn_app_with(options).await;
    let (org, key) = app.org("Riverside Family Clinic").await;
    let receiver = TestReceiver::start(Answer::Status(500)).await;
    let (endpoint, _) = app.endpoint(&key, &receiver.url).await;
    let path = format!("/v1/webhook-endpoints/{endpoint}");

    // Reports 1 to 3 fail once (retries scheduled); two hours later report 4 is queued and the
    // endpoint is disabled before anything more is attempted.
    for id in 1..=3 {
        app.enqueue(org, &report(id)).await;
    }
    app.dispatcher.run_due_now().await.unwrap();
    assert_eq!(received_ids(&receiver), [1, 2, 3]);
    app.clock.advance(Duration::from_secs(2 * 3600));
    app.enqueue(org, &report(4)).await;
    app.dispatcher.run_due_now().await.unwrap();
    let (_, read) = app.get(&key, &path).await;
    assert_eq!(read["enabled"], false, "{read}");
    assert_eq!(
        received_ids(&receiver),
        [1, 2, 3],
        "nothing sent once disabled"
    );

    // Days go by: the backlog is kept, neither dropped nor failed.
    app.clock.advance(3 * DAY);
    app.dispatcher.run_due_now().await.unwrap();
    assert_eq!(received_ids(&receiver).len(), 3);
    let statuses: Vec<String> = app
        .deliveries(&key)
        .await
        .iter()
        .map(|d| d["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["pending"; 4]);

    // Re-enabled: the backlog goes out in message order (retries and first attempts alike),
    // and the endpoint's health is reset.
    receiver.answer(Answer::Status(204));
    let (status, read) = app.patch(&key, &path, json!({ "enabled": true })).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["disabled_reason"], Value::Null);
    assert_eq!(read["failing_since"], Value::Null);
    app.dispatcher.run_due_now().await.unwrap();
    assert_eq!(received_ids(&receiver), [1, 2, 3, 1, 2, 3, 4]);
    for id in 1..=4 {
        assert_eq!(
            delivery_of(&app, &key, &receiver, endpoint, id).await.0,
            "delivered"
        );
    }
}
