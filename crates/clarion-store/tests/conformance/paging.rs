//! Cursor paging is stable under inserts: rows inserted while a client pages (concurrently,
//! from another handle) never make a page repeat a row or skip one that existed when paging
//! began.

use std::collections::HashSet;

use clarion_store::{DeliveryFilter, DeliveryId, SequenceId};

use crate::{backend, endpoint, enroll, queue_deliveries, tenant};

const BEFORE: usize = 60;
const PAGE: u32 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequence_pages_neither_repeat_nor_skip_while_rows_are_inserted() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = std::sync::Arc::new(tenant(store, "paging").await);
    for i in 0..BEFORE {
        enroll(store, &tenant, &format!("+1555080{i:04}")).await;
    }
    let existing: HashSet<SequenceId> = store
        .list_sequences(tenant.org, None, None, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();

    let inserter = {
        let other = backend.handles(1).await.remove(0);
        let tenant = tenant.clone();
        tokio::spawn(async move {
            for i in 0..BEFORE {
                enroll(&other, &tenant, &format!("+1555081{i:04}")).await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_sequences(tenant.org, None, cursor, PAGE)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        seen.extend(page.iter().map(|s| s.id));
        tokio::task::yield_now().await;
    }
    inserter.await.unwrap();

    let unique: HashSet<SequenceId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a row was repeated");
    assert!(
        existing.is_subset(&unique),
        "a row that existed was skipped"
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "pages are in cursor order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delivery_pages_neither_repeat_nor_skip_while_rows_are_inserted() {
    let backend = backend().await;
    let store = &backend.store;
    let org = store.create_org("delivery paging", 0).await.unwrap().id;
    let hook = endpoint(store, org, "https://paging.example/").await;
    queue_deliveries(store, org, hook.id, BEFORE, 0).await;
    let filter = DeliveryFilter::default();
    let existing: HashSet<DeliveryId> = store
        .list_deliveries(org, &filter, None, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();

    let inserter = {
        let other = backend.handles(1).await.remove(0);
        tokio::spawn(async move {
            for round in 1..=20 {
                queue_deliveries(&other, org, hook.id, 3, round).await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_deliveries(org, &filter, cursor, PAGE)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        seen.extend(page.iter().map(|d| d.id));
        tokio::task::yield_now().await;
    }
    inserter.await.unwrap();

    let unique: HashSet<DeliveryId> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a delivery was repeated");
    assert!(
        existing.is_subset(&unique),
        "a delivery that existed was skipped"
    );
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, in cursor order"
    );
}
