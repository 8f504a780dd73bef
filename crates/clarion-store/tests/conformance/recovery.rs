//! Bulk recovery: a job queues again exactly its endpoint's deliveries that became `failed`
//! in its window, a batch per transaction, never one twice; it is the organisation's alone.

use clarion_store::{
    AfterAttempt, Attempt, AttemptOutcome, DeliveryFilter, DeliveryStatus, EndpointId, OrgId, Store,
};

use crate::{backend, claim_first_attempts, endpoint, queue_deliveries, tenant};

/// Queues `count` deliveries to `to` and fails each at `at` (its one attempt refused).
async fn fail_deliveries(store: &Store, org: OrgId, to: EndpointId, count: usize, at: i64) {
    queue_deliveries(store, org, to, count, at).await;
    let mut failed = 0;
    while failed < count {
        let claimed = claim_first_attempts(store, at, at + 60_000).await;
        assert!(!claimed.is_empty(), "the queued deliveries are claimable");
        let outcomes: Vec<AttemptOutcome> = claimed
            .iter()
            .map(|c| AttemptOutcome {
                delivery_id: c.id,
                lease: c.lease.clone(),
                attempt: Attempt {
                    attempt_number: 1,
                    attempted_at: at,
                    status_code: Some(500),
                    duration_ms: 5,
                    error: None,
                    response_body: None,
                },
                next: AfterAttempt::Failed,
                disable_endpoint: None,
            })
            .collect();
        failed += outcomes.len();
        store.record_outcomes(&outcomes, at).await.unwrap();
    }
}

async fn statuses(store: &Store, org: OrgId, to: EndpointId) -> Vec<DeliveryStatus> {
    let filter = DeliveryFilter {
        endpoint_id: Some(to),
        ..DeliveryFilter::default()
    };
    let mut deliveries = store
        .list_deliveries(org, &filter, None, 100)
        .await
        .unwrap();
    deliveries.sort_by_key(|d| d.id);
    deliveries.into_iter().map(|d| d.status).collect()
}

#[tokio::test]
async fn a_recovery_requeues_its_windows_failed_deliveries_in_batches_and_never_twice() {
    let backend = backend().await;
    let store = &backend.store;
    let org = tenant(store, "recovery").await.org;
    let other = tenant(store, "elsewhere").await;
    let hook = endpoint(store, org, "https://a.example/hook").await;
    let bystander = endpoint(store, org, "https://b.example/hook").await;
    // Two failed before the window, five in it, one after; one of another endpoint in it.
    fail_deliveries(store, org, hook.id, 2, 1_000).await;
    fail_deliveries(store, org, hook.id, 5, 5_000).await;
    fail_deliveries(store, org, hook.id, 1, 9_000).await;
    fail_deliveries(store, org, bystander.id, 1, 5_000).await;

    assert!(
        store
            .create_recovery(other.org, hook.id, 4_000, 8_000, 10_000)
            .await
            .unwrap()
            .is_none()
    );
    let job = store
        .create_recovery(org, hook.id, 4_000, 8_000, 10_000)
        .await
        .unwrap()
        .unwrap();
    let twin = store
        .create_recovery(org, hook.id, 4_000, 8_000, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.finished_at, None);
    assert!(
        store
            .get_recovery(other.org, hook.id, job.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_recovery(org, bystander.id, job.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.unfinished_recoveries(10).await.unwrap(),
        [job.id, twin.id]
    );

    // Batches of three: the job goes through the endpoint's eight failed deliveries.
    let mut rounds = 0;
    let done = loop {
        rounds += 1;
        let now = store
            .advance_recovery(job.id, 3, 11_000)
            .await
            .unwrap()
            .unwrap();
        if now.finished_at.is_some() {
            break now;
        }
        assert!(rounds < 10, "the job finishes");
    };
    assert_eq!(rounds, 3);
    assert_eq!(done.requeued, 5);
    assert_eq!(done.finished_at, Some(11_000));
    use DeliveryStatus::{Failed, Pending};
    assert_eq!(
        statuses(store, org, hook.id).await,
        [
            Failed, Failed, Pending, Pending, Pending, Pending, Pending, Failed
        ]
    );
    assert_eq!(statuses(store, org, bystander.id).await, [Failed]);
    // The same window again finds them pending: nothing is queued twice.
    let twin = store
        .advance_recovery(twin.id, 100, 12_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((twin.requeued, twin.finished_at), (0, Some(12_000)));
    assert!(store.unfinished_recoveries(10).await.unwrap().is_empty());
    // A finished job stays as it is.
    let again = store
        .advance_recovery(job.id, 3, 13_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, done);
    // Each requeued delivery is due now, for one manual attempt.
    let claimed = claim_first_attempts(store, 11_000, 70_000).await;
    assert!(
        claimed.is_empty(),
        "requeued deliveries are retries, not first attempts"
    );
    let retries = store
        .claim_due(&clarion_store::ClaimRequest {
            owner: "node",
            now: 11_000,
            lease_until: 70_000,
            limit: 10,
            first_attempts: false,
            per_endpoint_limit: 10,
            in_flight: &[],
            endpoint_limits: &[],
            per_organization_limit: 100,
            in_flight_per_organization: &[],
        })
        .await
        .unwrap();
    assert_eq!(retries.len(), 5);
    assert!(retries.iter().all(|c| c.manual && c.endpoint_id == hook.id));
}
