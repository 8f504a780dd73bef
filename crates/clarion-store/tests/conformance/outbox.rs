//! The outbox is atomic with the change that ends a sequence: the report's message and its
//! deliveries exist exactly when the transaction that ended the sequence committed.

use clarion_store::{DeliveryFilter, NewMessage, Recipients, SequenceStatus};

use crate::{backend, ended, endpoint, enroll, tenant};

/// A transaction ends a sequence and queues its report (one message, one delivery per
/// enabled endpoint), then is dropped without commit: neither the end nor the report nor a
/// delivery remains. The same work committed leaves all three.
#[tokio::test]
async fn a_rolled_back_end_leaves_neither_the_message_nor_its_deliveries() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "outbox").await;
    endpoint(store, tenant.org, "https://a.example/hook").await;
    endpoint(store, tenant.org, "https://b.example/hook").await;
    let sequence = enroll(store, &tenant, "+15550100").await;

    for commit in [false, true] {
        let mut tx = store.begin().await.unwrap();
        store
            .update_sequences(&mut tx, &[(sequence.id, ended(10))])
            .await
            .unwrap();
        let message = NewMessage {
            org_id: tenant.org,
            webhook_id: "msg_atomic",
            event_type: "sequence.ended",
            sequence_id: Some(sequence.id),
            is_test: false,
            body: b"{\"report\":1}",
            created_at: 10,
        };
        let (_, deliveries) = store
            .insert_message(&mut tx, &message, Recipients::AllEnabled, 10)
            .await
            .unwrap();
        assert_eq!(deliveries, 2, "one delivery per enabled endpoint");
        if commit {
            tx.commit().await.unwrap();
        } else {
            drop(tx);
        }

        let status = store
            .get_sequence(tenant.org, sequence.id)
            .await
            .unwrap()
            .unwrap()
            .status;
        let reports = store
            .list_reports(tenant.org, "sequence.ended", None, 10)
            .await
            .unwrap();
        let listed = store
            .list_deliveries(tenant.org, &DeliveryFilter::default(), None, 10)
            .await
            .unwrap();
        let queued = store.queue_stats().await.unwrap().pending;
        let body = store.report_body(tenant.org, sequence.id).await.unwrap();
        if commit {
            assert_eq!(status, SequenceStatus::Ended);
            assert_eq!(reports.len(), 1);
            assert_eq!(listed.len(), 2);
            assert_eq!(queued, 2);
            assert_eq!(body.as_deref(), Some(&b"{\"report\":1}"[..]));
        } else {
            assert_eq!(status, SequenceStatus::Active, "the end was rolled back");
            assert!(reports.is_empty(), "no message after a rollback");
            assert!(listed.is_empty(), "no delivery after a rollback");
            assert_eq!(queued, 0);
            assert_eq!(body, None);
        }
    }
}

/// The batched outbox path (`insert_report_messages`, what the scheduler uses when many
/// sequences end in one transaction) rolls back the same way, with an explicit rollback.
#[tokio::test]
async fn a_rolled_back_batch_of_ends_leaves_no_report() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "outbox batch").await;
    endpoint(store, tenant.org, "https://a.example/hook").await;
    let first = enroll(store, &tenant, "+15550101").await;
    let second = enroll(store, &tenant, "+15550102").await;

    let mut tx = store.begin().await.unwrap();
    store
        .update_sequences(&mut tx, &[(first.id, ended(10)), (second.id, ended(10))])
        .await
        .unwrap();
    let messages: Vec<NewMessage<'_>> = [(first.id, "msg_b1"), (second.id, "msg_b2")]
        .into_iter()
        .map(|(id, webhook_id)| NewMessage {
            org_id: tenant.org,
            webhook_id,
            event_type: "sequence.ended",
            sequence_id: Some(id),
            is_test: false,
            body: b"{}",
            created_at: 10,
        })
        .collect();
    let created = store
        .insert_report_messages(&mut tx, &messages, 10)
        .await
        .unwrap();
    assert_eq!(created, 2);
    tx.rollback().await.unwrap();

    for id in [first.id, second.id] {
        let row = store.get_sequence(tenant.org, id).await.unwrap().unwrap();
        assert_eq!(row.status, SequenceStatus::Active);
    }
    assert!(
        store
            .list_reports(tenant.org, "sequence.ended", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.queue_stats().await.unwrap().pending, 0);
}
