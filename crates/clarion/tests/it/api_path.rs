//! The API path under load: concurrent single enrollments share commits (group commit) and
//! each is answered only once it is durable, with what enrolling it alone would give; a
//! process killed during a burst loses no enrollment it accepted, nor its report; and each
//! endpoint's concurrency adapts to its receiver, within its floor and ceiling.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use clarion_store::testing::TestDatabase;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use crate::support::{
    self, Answer, AppOptions, TestApp, TestReceiver, eventually, spawn_app, spawn_app_with,
};
use clarion_store::{EndpointId, IdKind, OrgId, SequenceId};
use clarion_webhooks::examples;
use serde_json::{Value, json};

/// An assistant and a one-call template for the organisation; the template's id.
async fn one_call_template(app: &TestApp, key: &str) -> Value {
    let (status, call) = app
        .post(
            key,
            "/v1/assistants",
            json!({ "name": "Caller", "channel": "call", "config": {} }),
        )
        .await;
    assert_eq!(status, 201, "{call}");
    let (status, template) = app
        .post(
            key,
            "/v1/sequence-templates",
            json!({ "name": "One call", "calling_hours": null,
                "steps": [ { "type": "call", "assistant_id": call["id"] } ] }),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    template["id"].clone()
}

/// Many single enrollments at once, for two organisations, including a number enrolled twice
/// and an unknown template: each is answered as if it had been enrolled alone, and every 201
/// is already visible to another process reading the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrollments_are_answered_one_by_one_and_only_once_durable() {
    let app = spawn_app().await;
    let (org_a, key_a) = app.org("Riverside").await;
    let (org_b, key_b) = app.org("Lakeside").await;
    let template_a = one_call_template(&app, &key_a).await;
    let template_b = one_call_template(&app, &key_b).await;
    // Another process's view: its own pool on the same file.
    let other = Arc::new(app.database.open().await.unwrap());

    let mut requests: Vec<(OrgId, String, Value, String)> = Vec::new();
    for n in 0..24 {
        let phone = format!("+1555020{n:04}");
        requests.push((org_a, key_a.clone(), template_a.clone(), phone));
        let phone = format!("+1555030{n:04}");
        requests.push((org_b, key_b.clone(), template_b.clone(), phone));
    }
    // The same number and template twice: one sequence, one `already_enrolled`.
    for _ in 0..2 {
        requests.push((
            org_a,
            key_a.clone(),
            template_a.clone(),
            "+15550409999".into(),
        ));
    }
    // Organisation B's template named by organisation A: unknown to A.
    requests.push((
        org_a,
        key_a.clone(),
        template_b.clone(),
        "+15550408888".into(),
    ));

    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let mut tasks = Vec::new();
    for (org, key, template, phone) in requests {
        let http = app.http.clone();
        let base = app.base.clone();
        let barrier = barrier.clone();
        let other = other.clone();
        let public_ids = app.store.public_ids(org);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let response = http
                .post(format!("{base}/v1/sequences"))
                .bearer_auth(&key)
                .json(&json!({ "template_id": template, "contact": { "phone_number": phone, "time_zone": "Pacific/Honolulu" } }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            if status == 201 {
                let id = public_ids
                    .decode(IdKind::Sequence, body["id"].as_i64().unwrap())
                    .unwrap();
                let stored = other.get_sequence(org, SequenceId(id)).await.unwrap();
                assert!(stored.is_some(), "answered 201 before its commit");
            }
            (phone, status, body)
        }));
    }
    let mut statuses: HashMap<String, Vec<u16>> = HashMap::new();
    for task in tasks {
        let (phone, status, body) = task.await.unwrap();
        if status != 201 {
            assert!([409, 422].contains(&status), "{phone}: {status} {body}");
        }
        statuses.entry(phone).or_default().push(status);
    }
    let mut twice = statuses.remove("+15550409999").unwrap();
    twice.sort_unstable();
    assert_eq!(
        twice,
        vec![201, 409],
        "one sequence per number and template"
    );
    assert_eq!(statuses.remove("+15550408888").unwrap(), vec![422]);
    assert_eq!(statuses.len(), 48);
    assert!(statuses.values().all(|s| s == &vec![201]), "{statuses:?}");
}

/// `kill -9` while enrollments pour in: every enrollment answered 201 ends and its report is
/// delivered after the restart, each report under one `webhook-id`; and so is every sequence
/// committed whose answer the kill cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_burst_loses_no_accepted_enrollment_nor_its_report() {
    const CONFIG: &str = r#"
[webhooks]
retry_schedule = ["0s", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms"]
attempt_timeout = "2s"
lease_margin = "1s"
poll_interval = "100ms"

[channels]
reconcile_after = "1s"

[simulator]
time_scale = 100000.0
"#;
    const ITEMS: usize = 400;
    const CONNECTIONS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create().await;
    let key = support::create_org_with_cli(&database).await;
    let http = reqwest::Client::new();
    let receiver = TestReceiver::start(Answer::Status(204)).await;

    let (mut child, base) = support::spawn_server(dir.path(), &database, CONFIG, None).await;
    let post = |path: &str, body: Value| {
        let (http, url, key) = (http.clone(), format!("{base}{path}"), key.clone());
        async move { support::api_post(&http, &url, &key, Some(&body)).await }
    };
    post("/v1/webhook-endpoints", json!({ "url": receiver.url })).await;
    let assistant = post(
        "/v1/assistants",
        json!({ "name": "Caller", "channel": "call", "config": {} }),
    )
    .await;
    let template = post(
        "/v1/sequence-templates",
        json!({ "name": "One call", "calling_hours": null,
            "steps": [ { "type": "call", "assistant_id": assistant["id"] } ] }),
    )
    .await;

    let next = Arc::new(AtomicUsize::new(0));
    let accepted_so_far = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (http, base, key, template, next, accepted_so_far) = (
            http.clone(),
            base.clone(),
            key.clone(),
            template["id"].clone(),
            next.clone(),
            accepted_so_far.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= ITEMS {
                    return accepted;
                }
                let body = json!({
                    "template_id": template,
                    "contact": { "phone_number": format!("+1555060{n:04}"), "time_zone": "America/Chicago" },
                    "simulation": { "outcomes": ["resolved"] },
                });
                let Ok(response) = http
                    .post(format!("{base}/v1/sequences"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                else {
                    return accepted; // the server is gone
                };
                if response.status() == 201
                    && let Ok(created) = response.json::<Value>().await
                {
                    accepted.push(created["id"].as_i64().unwrap());
                    accepted_so_far.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Kill once reports are flowing, or half the burst is in, whichever comes first: either
    // way enrollments are still coming in.
    eventually("reports flowing or half the burst accepted", || async {
        receiver.received().len() >= 20 || accepted_so_far.load(Ordering::Relaxed) >= ITEMS / 2
    })
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let mut accepted = HashSet::new();
    for worker in workers {
        accepted.extend(worker.await.unwrap());
    }
    assert!(accepted.len() >= 20, "the burst was under way");
    assert!(accepted.len() < ITEMS, "the kill came during the burst");

    let (_child, base) = support::spawn_server(dir.path(), &database, CONFIG, None).await;
    let stored = all_sequence_ids(&http, &base, &key).await;
    assert!(
        accepted.is_subset(&stored),
        "an enrollment answered 201 is missing after the restart"
    );
    let reported = |receiver: &TestReceiver| -> HashMap<i64, HashSet<String>> {
        let mut by_sequence: HashMap<i64, HashSet<String>> = HashMap::new();
        for received in receiver.received() {
            let report: Value = serde_json::from_slice(&received.body).unwrap();
            by_sequence
                .entry(report["id"].as_i64().unwrap())
                .or_default()
                .insert(received.header("webhook-id").to_owned());
        }
        by_sequence
    };
    eventually("a report for every stored sequence", || async {
        reported(&receiver).len() == stored.len()
    })
    .await;
    let reports = reported(&receiver);
    let ids: HashSet<i64> = reports.keys().copied().collect();
    assert_eq!(ids, stored);
    assert!(
        reports.values().all(|webhook_ids| webhook_ids.len() == 1),
        "a report was sent under two webhook-ids"
    );
}

/// Every sequence id the organisation has, through the API's cursor.
async fn all_sequence_ids(http: &reqwest::Client, base: &str, key: &str) -> HashSet<i64> {
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(after) => format!("{base}/v1/sequences?limit=200&after={after}"),
            None => format!("{base}/v1/sequences?limit=200"),
        };
        let page = support::api_get(http, &url, key).await;
        for sequence in page["data"].as_array().unwrap() {
            ids.insert(sequence["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
}

/// An organisation with one endpoint to `receiver`; the endpoint's internal id.
async fn organisation_with_endpoint(app: &TestApp, receiver: &TestReceiver) -> (OrgId, EndpointId) {
    let (org, key) = app.org("Riverside").await;
    let (public_id, _) = app.endpoint(&key, &receiver.url).await;
    let internal = app
        .store
        .public_ids(org)
        .decode(IdKind::Endpoint, public_id)
        .unwrap();
    (org, EndpointId(internal))
}

/// The dispatcher's loop, running until the returned token is cancelled.
fn run_dispatcher(app: &TestApp) -> tokio_util::sync::CancellationToken {
    let dispatcher = app.dispatcher.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { dispatcher.run(stop.cancelled_owned()).await }
    });
    stop
}

/// A receiver that keeps up: the endpoint's limit rises past where it starts (16) and the
/// receiver sees more requests at once than that, never more than the ceiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_rises_against_a_fast_receiver_up_to_the_ceiling() {
    const CEILING: u32 = 28;
    let mut options = AppOptions::default();
    options.dispatcher.max_in_flight_per_endpoint = CEILING;
    options.dispatcher.min_in_flight_per_endpoint = 2;
    let app = spawn_app_with(options).await;
    // Answers in 20 ms whatever the load: each slot's latency stays at its lowest.
    let receiver = TestReceiver::start(Answer::Delay(Duration::from_millis(20))).await;
    let (org, endpoint) = organisation_with_endpoint(&app, &receiver).await;
    for _ in 0..2_500 {
        app.enqueue(org, &examples::call_only()).await;
    }
    assert_eq!(
        app.dispatcher.endpoint_limit(endpoint),
        16,
        "where it starts"
    );
    let stop = run_dispatcher(&app);
    eventually("the limit rising to the ceiling", || async {
        app.dispatcher.endpoint_limit(endpoint) == CEILING
    })
    .await;
    eventually(
        "the receiver holding more than the starting limit",
        || async { receiver.max_concurrent() > 20 },
    )
    .await;
    receiver.wait_for(2_500).await;
    stop.cancel();
    assert!(
        receiver.max_concurrent() <= CEILING as usize,
        "{} in flight at once, above the ceiling",
        receiver.max_concurrent()
    );
}

/// A receiver that times out: the endpoint's limit halves (once per second, not once per
/// failed attempt) down to the floor, and the receiver is then sent no more than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_falls_against_a_receiver_that_times_out_down_to_the_floor() {
    const FLOOR: u32 = 2;
    let mut options = AppOptions::default();
    options.dispatcher.max_in_flight_per_endpoint = 64;
    options.dispatcher.min_in_flight_per_endpoint = FLOOR;
    options.dispatcher.attempt_timeout = Duration::from_millis(300);
    let app = spawn_app_with(options).await;
    let receiver = TestReceiver::start(Answer::Delay(Duration::from_secs(60))).await;
    let (org, endpoint) = organisation_with_endpoint(&app, &receiver).await;
    for _ in 0..200 {
        app.enqueue(org, &examples::call_only()).await;
    }
    let stop = run_dispatcher(&app);
    // The first sixteen time out together: one cut, to eight.
    receiver.wait_for(16).await;
    eventually("one cut after the first wave", || async {
        app.dispatcher.endpoint_limit(endpoint) == 8
    })
    .await;
    eventually("the limit at the floor", || async {
        app.dispatcher.endpoint_limit(endpoint) == FLOOR
    })
    .await;
    // From here on, the receiver is never sent more than the floor at once.
    let seen = receiver.received().len();
    receiver.wait_for(seen + 2 * FLOOR as usize).await;
    assert!(
        receiver.concurrent() <= FLOOR as usize,
        "{}",
        receiver.concurrent()
    );
    stop.cancel();
    assert_eq!(
        receiver.max_concurrent(),
        16,
        "never more than where it starts"
    );
}
