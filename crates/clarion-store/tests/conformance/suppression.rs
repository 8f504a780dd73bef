//! Suppression: idempotent additions, the consent rule for a patient's opt-out, the history
//! written with each change, per-organisation lists, and concurrent additions of one number
//! recorded once.

use clarion_store::{ConsentRecord, OPT_OUT_REASON, OrgId, Store, Unsuppressed};
use serde_json::json;

use crate::backend;

const PHONE: &str = "+15550600";

async fn suppressed(store: &Store, org: OrgId, phone: &str) -> bool {
    let mut tx = store.begin().await.unwrap();
    let answer = store.is_suppressed(&mut tx, org, phone).await.unwrap();
    tx.commit().await.unwrap();
    answer
}

async fn suppress(store: &Store, org: OrgId, reason: &str, now: i64) {
    let mut tx = store.begin().await.unwrap();
    store
        .suppress(&mut tx, org, PHONE, reason, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn an_operators_entry_is_removed_without_consent_and_scoped_to_its_organisation() {
    let backend = backend().await;
    let store = &backend.store;
    let org = store.create_org("a", 0).await.unwrap().id;
    let other = store.create_org("b", 0).await.unwrap().id;

    assert_eq!(
        store
            .unsuppress(org, PHONE, "system", None, 1)
            .await
            .unwrap(),
        Unsuppressed::NotListed
    );
    suppress(store, org, "complaint", 10).await;
    suppress(store, org, "complaint", 20).await;
    assert!(suppressed(store, org, PHONE).await);
    assert!(
        !suppressed(store, other, PHONE).await,
        "lists are per organisation"
    );
    let listed = store.list_suppressions(org, None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].created_at, 10, "a repeat keeps the first entry");
    assert_eq!(
        store
            .unsuppress(other, PHONE, "system", None, 30)
            .await
            .unwrap(),
        Unsuppressed::NotListed,
        "another organisation cannot remove it"
    );
    assert_eq!(
        store
            .unsuppress(org, PHONE, "api-key:1", None, 30)
            .await
            .unwrap(),
        Unsuppressed::Removed
    );
    assert!(!suppressed(store, org, PHONE).await);
    let history = store.suppression_history(org, PHONE).await.unwrap();
    let actions: Vec<(&str, &str)> = history
        .iter()
        .map(|c| (c.action.as_str(), c.actor.as_str()))
        .collect();
    assert_eq!(actions, [("added", "system"), ("removed", "api-key:1")]);
    assert!(
        store
            .suppression_history(other, PHONE)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_opt_out_is_removed_only_with_a_consent_obtained_after_it() {
    let backend = backend().await;
    let store = &backend.store;
    let org = store.create_org("opt-out", 0).await.unwrap().id;
    // An operator's entry, then the patient's opt-out turns it into an opt-out from then.
    suppress(store, org, "complaint", 10).await;
    suppress(store, org, OPT_OUT_REASON, 50).await;
    let listed = store.list_suppressions(org, None, 10).await.unwrap();
    assert_eq!(
        (listed[0].reason.as_str(), listed[0].created_at),
        (OPT_OUT_REASON, 50)
    );

    let detail = json!({ "method": "written" });
    assert_eq!(
        store
            .unsuppress(org, PHONE, "api-key:1", None, 60)
            .await
            .unwrap(),
        Unsuppressed::ConsentRequired
    );
    let early = ConsentRecord {
        obtained_at: 40,
        detail: &detail,
    };
    assert_eq!(
        store
            .unsuppress(org, PHONE, "api-key:1", Some(early), 60)
            .await
            .unwrap(),
        Unsuppressed::ConsentPredatesOptOut
    );
    assert!(suppressed(store, org, PHONE).await, "nothing changed");
    let fresh = ConsentRecord {
        obtained_at: 55,
        detail: &detail,
    };
    assert_eq!(
        store
            .unsuppress(org, PHONE, "api-key:1", Some(fresh), 60)
            .await
            .unwrap(),
        Unsuppressed::Removed
    );
    assert!(!suppressed(store, org, PHONE).await);
    let history = store.suppression_history(org, PHONE).await.unwrap();
    let summary: Vec<(&str, &str, &str)> = history
        .iter()
        .map(|c| (c.action.as_str(), c.reason.as_str(), c.actor.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("added", "complaint", "system"),
            ("added", OPT_OUT_REASON, "patient"),
            ("removed", OPT_OUT_REASON, "api-key:1"),
        ]
    );
    assert_eq!(history[2].consent.as_ref(), Some(&detail));
}

/// Several handles add the same opt-out at once: one entry, one history line.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opt_outs_of_one_number_are_recorded_once() {
    let backend = backend().await;
    let org = backend.store.create_org("race", 0).await.unwrap().id;
    let handles = backend.handles(4).await;
    for round in 0..10 {
        let phone = format!("+1555061{round:04}");
        let mut tasks = Vec::new();
        for store in &handles {
            let store = store.clone();
            let phone = phone.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                store
                    .suppress(&mut tx, org, &phone, OPT_OUT_REASON, 100)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let history = backend
            .store
            .suppression_history(org, &phone)
            .await
            .unwrap();
        assert_eq!(history.len(), 1, "round {round}: {history:?}");
    }
}
