//! `Store::endpoint_attempt_stats`: one endpoint's attempts since a time, counted by result,
//! with the latest of each kind and every duration's count; nothing of another endpoint, of
//! before the window, or for another organisation.

use clarion_store::{AttemptOutcome, AttemptStats, Millis};

use crate::{
    attempt_outcome, backend, claim_ten_first_attempts, endpoint, queue_deliveries, tenant,
};

#[tokio::test]
async fn attempt_stats_cover_one_endpoints_window_and_nothing_else() {
    let backend = backend().await;
    let store = &backend.store;
    let acme = tenant(store, "Acme").await;
    let other = tenant(store, "Other").await;
    let watched = endpoint(store, acme.org, "https://watched.example/hooks").await;
    let beside = endpoint(store, acme.org, "https://beside.example/hooks").await;

    queue_deliveries(store, acme.org, watched.id, 6, 1_000).await;
    queue_deliveries(store, acme.org, beside.id, 2, 1_000).await;
    // One claim with room for every delivery (the suite's usual claim takes four per
    // endpoint, and counts those four's live leases against the endpoint's cap after).
    let mut claims = claim_ten_first_attempts(store, 1_000, 61_000).await;
    assert_eq!(claims.len(), 8);
    let (watched_claims, beside_claims): (Vec<_>, Vec<_>) = claims
        .drain(..)
        .partition(|claim| claim.endpoint_id == watched.id);
    // The watched endpoint: one attempt before the window (at 1,000), then in it: 2xx in 30
    // and 10 ms, a 500 in 30 ms, a 204 in 90 ms, a timeout of 5,000 ms.
    let script: [(Millis, Option<u16>, u64); 6] = [
        (1_000, Some(200), 7),
        (10_000, Some(200), 30),
        (11_000, Some(500), 30),
        (12_000, Some(200), 10),
        (13_000, None, 5_000),
        (14_000, Some(204), 90),
    ];
    let mut outcomes: Vec<AttemptOutcome> = watched_claims
        .iter()
        .zip(script)
        .map(|(claim, (at, status, ms))| attempt_outcome(claim, at, status, ms))
        .collect();
    // The endpoint beside it: attempts in the window that must not count.
    outcomes.extend(
        beside_claims
            .iter()
            .map(|claim| attempt_outcome(claim, 12_500, Some(500), 1)),
    );
    store.record_outcomes(&outcomes, 15_000).await.unwrap();

    let stats = store
        .endpoint_attempt_stats(acme.org, watched.id, 10_000)
        .await
        .unwrap();
    assert_eq!(
        stats,
        AttemptStats {
            attempts: 5,
            succeeded: 3,
            last_success_at: Some(14_000),
            last_failure_at: Some(13_000),
            durations: vec![(10, 1), (30, 2), (90, 1), (5_000, 1)],
        }
    );
    assert_eq!(stats.failed(), 2);
    assert_eq!(stats.success_rate(), Some(0.6));
    assert_eq!(stats.latency_percentile_ms(50), Some(30));
    assert_eq!(stats.latency_percentile_ms(99), Some(5_000));

    // The whole history.
    let all = store
        .endpoint_attempt_stats(acme.org, watched.id, 0)
        .await
        .unwrap();
    assert_eq!((all.attempts, all.succeeded), (6, 4));
    // Another organisation asking about it learns nothing.
    assert_eq!(
        store
            .endpoint_attempt_stats(other.org, watched.id, 0)
            .await
            .unwrap(),
        AttemptStats::default()
    );
    // An empty window.
    let none = store
        .endpoint_attempt_stats(acme.org, watched.id, 20_000)
        .await
        .unwrap();
    assert_eq!(none, AttemptStats::default());
    assert_eq!(none.success_rate(), None);
    assert_eq!(none.latency_percentile_ms(50), None);
}
