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
