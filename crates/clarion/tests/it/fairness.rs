//! Fair delivery under contention (issue 13 items 1 and 2), against the real dispatcher loop:
//! a deep backlog to an endpoint that never answers, or an organisation with many such
//! endpoints, does not delay another organisation's reports.
//!
//! The black holes accept connections and never answer, so their attempts hold slots until
//! the attempt time-out; the tests close them at the end so the dispatcher stops at once.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use clarion_delivery::Clock;
use clarion_store::OrgId;
use clarion_webhooks::examples;
use tokio_util::sync::CancellationToken;

use crate::support::{self, Answer, AppOptions, BlackHole, TestApp, TestReceiver, spawn_app_with};

/// How soon another organisation's reports must be attempted (issue 13: within a second;
/// 0.01–0.02 s with nothing in the way).
const PROMPTLY: Duration = Duration::from_secs(1);

fn options() -> AppOptions {
    let mut options = AppOptions::default();
    // Long enough that no black-hole attempt ends within the measured second (so nothing
    // frees a slot for the healthy organisation by timing out), short enough for the test.
    options.dispatcher.attempt_timeout = Duration::from_secs(5);
    options
}

/// Queues `count` reports for `org` in one transaction.
async fn queue_reports(app: &TestApp, org: OrgId, count: usize) {
    let outbox = app.dispatcher.outbox();
    let mut tx = app.store.begin().await.unwrap();
    for i in 0..count {
        let mut report = examples::call_only();
        report.id = i64::try_from(i).unwrap() + 1;
        outbox
            .enqueue_report(&mut tx, org, &report, app.clock.now_millis())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

fn run_dispatcher(app: &TestApp) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let dispatcher = app.dispatcher.clone();
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { dispatcher.run(stop.cancelled_owned()).await }
    });
    (stop, running)
}

/// Ten reports of a healthy organisation, queued now, all reach its receiver within
/// [`PROMPTLY`] (the time counted from before the first is queued).
async fn healthy_reports_arrive_promptly(app: &TestApp, org: OrgId, receiver: &TestReceiver) {
    let started = Instant::now();
    for _ in 0..10 {
        app.enqueue(org, &examples::call_only()).await;
    }
    let arrived = tokio::time::timeout(PROMPTLY, receiver.wait_for(10)).await;
    let elapsed = started.elapsed();
    assert!(
        arrived.is_ok(),
        "only {} of the healthy organisation's 10 reports were attempted within {PROMPTLY:?}",
        receiver.received().len()
    );
    assert!(elapsed <= PROMPTLY, "took {elapsed:?}");
}

async fn stop(
    black_hole: &BlackHole,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<()>,
) {
    black_hole.close();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .unwrap()
        .unwrap();
}

/// 2,000 first attempts queued to an endpoint that never answers, all due before another
/// organisation's reports: those reports are attempted within a second. (Before the
/// per-endpoint claim, the claim looked only at the `4 × free slots` earliest due rows, all
/// the black hole's and it at its cap, so the others waited for the backlog to drain.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2000_deep_backlog_to_an_unresponsive_endpoint_does_not_delay_another_organisation() {
    let app = spawn_app_with(options()).await;
    let black_hole = BlackHole::start().await;
    let healthy = TestReceiver::start(Answer::Status(204)).await;
    let (stuck_org, stuck_key) = app.org("Stuck").await;
    app.endpoint(&stuck_key, &black_hole.url).await;
    let (healthy_org, healthy_key) = app.org("Healthy").await;
    app.endpoint(&healthy_key, &healthy.url).await;

    queue_reports(&app, stuck_org, 2_000).await;
    let (stop_token, running) = run_dispatcher(&app);
    // The black hole holds its endpoint's whole share before the healthy reports come: the
    // limit an endpoint starts at (it never answers, so it never earns more).
    let cap = usize::try_from(
        clarion_delivery::concurrency::START.min(app.config.max_in_flight_per_endpoint),
    )
    .unwrap();
    support::eventually("the black hole holds its endpoint's slots", || async {
        black_hole.connections() >= cap
    })
    .await;

    healthy_reports_arrive_promptly(&app, healthy_org, &healthy).await;
    assert_eq!(black_hole.connections(), cap, "per-endpoint cap");
    stop(&black_hole, stop_token, running).await;
}

/// An organisation with 20 endpoints that never answer, each with more due than its own cap
/// (20 × 16 = 320 wanted, 256 slots): another organisation's reports are still attempted
/// within a second, because one organisation may hold only its share of the slots. (Without
/// the per-organisation share, the 20 endpoints took all 256 slots and the other
/// organisation waited for their attempts to time out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_with_20_unresponsive_endpoints_does_not_delay_another() {
    let app = spawn_app_with(options()).await;
    let black_hole = BlackHole::start().await;
    let healthy = TestReceiver::start(Answer::Status(204)).await;
    let (stuck_org, stuck_key) = app.org("Stuck").await;
    for i in 0..20 {
        app.endpoint(&stuck_key, &format!("{}/{i}", black_hole.url))
            .await;
    }
    let (healthy_org, healthy_key) = app.org("Healthy").await;
    app.endpoint(&healthy_key, &healthy.url).await;

    // 20 reports to each of the 20 endpoints: 400 first attempts, 20 per endpoint.
    queue_reports(&app, stuck_org, 20).await;
    let (stop_token, running) = run_dispatcher(&app);
    let share = usize::try_from(app.config.max_in_flight_per_organization).unwrap();
    assert!(
        share < app.config.max_in_flight,
        "the test needs a share below every slot"
    );
    // Slots are counted when claimed, before the connections open: once the black hole holds
    // the organisation's share, the claim that took it is over.
    support::eventually("the black hole holds the organisation's share", || async {
        black_hole.connections() >= share
    })
    .await;

    healthy_reports_arrive_promptly(&app, healthy_org, &healthy).await;
    assert_eq!(black_hole.connections(), share, "per-organisation share");
    stop(&black_hole, stop_token, running).await;
}
