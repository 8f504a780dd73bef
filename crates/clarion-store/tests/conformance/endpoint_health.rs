//! Endpoint health: attempts keep `failing_since` (a 2xx clears it, a failure starts it once),
//! disabling a failing endpoint happens once, and re-enabling clears its health and makes its
//! kept backlog due.

use clarion_store::{
    AfterAttempt, Attempt, AttemptOutcome, ClaimedDelivery, DeliveryFilter, DeliveryStatus,
    EndpointId, EndpointPatch, OrgId, Store,
};

use crate::{backend, claim_first_attempts, endpoint, queue_deliveries, tenant};

fn outcome(claim: &ClaimedDelivery, at: i64, status: u16) -> AttemptOutcome {
    AttemptOutcome {
        delivery_id: claim.id,
        lease: claim.lease.clone(),
        attempt: Attempt {
            attempt_number: 1,
            attempted_at: at,
            status_code: Some(status),
            duration_ms: 5,
            error: None,
            response_body: None,
        },
        next: if (200..300).contains(&status) {
            AfterAttempt::Delivered
        } else {
            AfterAttempt::RetryAt(at + 1_000_000)
        },
        disable_endpoint: None,
    }
}

async fn failing_since(store: &Store, org: OrgId, id: EndpointId) -> Option<i64> {
    store
        .get_endpoint(org, id)
        .await
        .unwrap()
        .unwrap()
        .failing_since
}

/// Queues `answers.len()` deliveries at `at`, claims them and records one attempt each, the
/// i-th answered `answers[i]` at `at + i`, all in one batch.
async fn attempt(store: &Store, org: OrgId, to: EndpointId, at: i64, answers: &[u16]) {
    queue_deliveries(store, org, to, answers.len(), at).await;
    let mut claimed = claim_first_attempts(store, at, at + 60_000).await;
    claimed.sort_by_key(|c| c.id);
    assert_eq!(claimed.len(), answers.len());
    let outcomes: Vec<AttemptOutcome> = claimed
        .iter()
        .zip(answers)
        .enumerate()
        .map(|(i, (c, status))| outcome(c, at + i64::try_from(i).unwrap(), *status))
        .collect();
    store.record_outcomes(&outcomes, at).await.unwrap();
}

#[tokio::test]
async fn attempts_keep_failing_since_and_a_failing_endpoint_is_disabled_once() {
    let backend = backend().await;
    let store = &backend.store;
    let org = tenant(store, "health").await.org;
    let hook = endpoint(store, org, "https://a.example/hook").await.id;
    assert_eq!(failing_since(store, org, hook).await, None);

    // Failures start the run once; later failures keep its start.
    attempt(store, org, hook, 1_000, &[500, 503]).await;
    assert_eq!(failing_since(store, org, hook).await, Some(1_000));
    attempt(store, org, hook, 2_000, &[500]).await;
    assert_eq!(failing_since(store, org, hook).await, Some(1_000));
    // A batch whose last word is a 2xx clears it; one where a failure follows the 2xx starts
    // a run at that failure.
    attempt(store, org, hook, 3_000, &[500, 200]).await;
    assert_eq!(failing_since(store, org, hook).await, None);
    attempt(store, org, hook, 4_000, &[200, 500]).await;
    assert_eq!(failing_since(store, org, hook).await, Some(4_001));

    // Not failing long enough: nothing. Long enough: disabled once, with the reason.
    let mut tx = store.begin().await.unwrap();
    let none = store
        .disable_failing_endpoints(&mut tx, 4_000, "failing", 9_000, 10)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(none.is_empty());
    for expected in [1, 0] {
        let mut tx = store.begin().await.unwrap();
        let disabled = store
            .disable_failing_endpoints(&mut tx, 5_000, "failing", 9_000, 10)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(disabled.len(), expected);
        if let Some(endpoint) = disabled.first() {
            assert_eq!(endpoint.id, hook);
            assert!(!endpoint.enabled);
            assert_eq!(endpoint.disabled_reason.as_deref(), Some("failing"));
            assert_eq!(endpoint.failing_since, Some(4_001));
        }
    }

    // Its pending deliveries are kept; re-enabling clears its health and makes them due now.
    let filter = DeliveryFilter {
        endpoint_id: Some(hook),
        ..DeliveryFilter::default()
    };
    let pending = store
        .list_deliveries(org, &filter, None, 100)
        .await
        .unwrap();
    let kept: Vec<_> = pending
        .iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .collect();
    assert_eq!(kept.len(), 5, "every refused delivery waits");
    let patch = EndpointPatch {
        enabled: Some(true),
        ..EndpointPatch::default()
    };
    let enabled = store
        .update_endpoint(org, hook, &patch, 10_000)
        .await
        .unwrap()
        .unwrap();
    assert!(enabled.enabled);
    assert_eq!(enabled.disabled_reason, None);
    assert_eq!(enabled.failing_since, None);
    for delivery in store
        .list_deliveries(org, &filter, None, 100)
        .await
        .unwrap()
    {
        if delivery.status == DeliveryStatus::Pending {
            assert_eq!(delivery.next_attempt_at, Some(10_000));
        }
    }
}
