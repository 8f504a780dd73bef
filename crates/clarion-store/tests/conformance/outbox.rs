//! The outbox is atomic with the change that ends a sequence: the report's message and its
//! deliveries exist exactly when the transaction that ended the sequence committed.

use clarion_store::{DeliveryFilter, NewMessage, Recipients, RequestedEncounter, SequenceStatus};

use crate::{backend, encounter_of, ended, endpoint, enroll, insert_encounter, tenant};

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

/// Queuing a sequence's report drops the report objects of its ended encounters (the
/// message holds them, transcripts included), in the same transaction: an encounter still
/// open keeps its object, and so does another sequence's ended one. Rolled back, nothing is
/// dropped.
#[tokio::test]
async fn queuing_a_report_drops_the_copies_of_its_ended_encounters_objects() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "stored once").await;
    let reported = enroll(store, &tenant, "+15550101").await;
    let other = enroll(store, &tenant, "+15550102").await;
    let object = serde_json::json!({ "transcript": "AI: Hello.\nUser: Hi." });
    let mut ids = Vec::new();
    for (sequence, attempt, end) in [
        (&reported, 1, true),
        (&reported, 2, false),
        (&other, 1, true),
    ] {
        let id = insert_encounter(store, &encounter_of(&tenant, sequence, attempt, 5)).await;
        // Requested with its object known, as a simulated encounter is.
        let mut tx = store.begin().await.unwrap();
        store
            .mark_encounters_requested(
                &mut tx,
                &[RequestedEncounter {
                    id,
                    provider_ref: format!("sim_{attempt}"),
                    ends_at: Some(6),
                    report: Some(object.to_string()),
                    outcome: None,
                }],
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
        if end {
            let mut tx = store.begin().await.unwrap();
            assert!(
                store
                    .end_encounter(&mut tx, id, "resolved", Some(&object), 6)
                    .await
                    .unwrap()
            );
            tx.commit().await.unwrap();
        }
        ids.push(id);
    }
    let message = NewMessage {
        org_id: tenant.org,
        webhook_id: "msg_once",
        event_type: "sequence.ended",
        sequence_id: Some(reported.id),
        is_test: false,
        body: b"{}",
        created_at: 10,
    };
    for commit in [false, true] {
        let mut tx = store.begin().await.unwrap();
        store
            .insert_report_messages(&mut tx, std::slice::from_ref(&message), 10)
            .await
            .unwrap();
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
        let mut kept = Vec::new();
        for id in &ids {
            let row = store.encounter_by_id(*id).await.unwrap().unwrap();
            kept.push(row.report.is_some());
        }
        if commit {
            assert_eq!(
                kept,
                [false, true, true],
                "ended+reported, open, other sequence"
            );
        } else {
            assert_eq!(kept, [true, true, true], "a rollback drops nothing");
        }
    }
}
