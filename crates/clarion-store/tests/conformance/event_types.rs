//! Event types: an endpoint receives a message only when it subscribes to the message's type
//! (the one-endpoint test send excepted), and `subscribed_organizations` says which
//! organisations have any such endpoint.

use clarion_store::{DeliveryFilter, EndpointPatch, NewMessage, OrgId, Recipients, Store};

use crate::{SECRET, backend, tenant};

fn message<'a>(org: OrgId, webhook_id: &'a str, event_type: &'a str) -> NewMessage<'a> {
    NewMessage {
        org_id: org,
        webhook_id,
        event_type,
        sequence_id: None,
        is_test: false,
        body: b"{}",
        created_at: 10,
    }
}

/// The endpoint ids (sorted) holding a delivery of each webhook id.
async fn recipients(store: &Store, org: OrgId, webhook_id: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = store
        .list_deliveries(org, &DeliveryFilter::default(), None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.webhook_id == webhook_id)
        .map(|d| d.endpoint_id.0)
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn messages_fan_out_only_to_endpoints_subscribed_to_their_type() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "subscriptions").await;
    let other = tenant_org(store, "no-encounters").await;
    let org = tenant.org;
    let reports = store
        .create_endpoint(
            org,
            "https://a.example/",
            "",
            &["sequence.ended"],
            SECRET,
            0,
        )
        .await
        .unwrap();
    let both = store
        .create_endpoint(
            org,
            "https://b.example/",
            "",
            &["encounter.ended", "sequence.ended"],
            SECRET,
            0,
        )
        .await
        .unwrap();
    let encounters = store
        .create_endpoint(
            org,
            "https://c.example/",
            "",
            &["encounter.ended"],
            SECRET,
            0,
        )
        .await
        .unwrap();
    assert_eq!(reports.event_types, ["sequence.ended"]);
    assert_eq!(both.event_types, ["encounter.ended", "sequence.ended"]);
    store
        .create_endpoint(
            other,
            "https://d.example/",
            "",
            &["sequence.ended"],
            SECRET,
            0,
        )
        .await
        .unwrap();

    // Which organisations subscribe, read in a transaction.
    let mut tx = store.begin().await.unwrap();
    let found = store
        .subscribed_organizations(&mut tx, &[org, other], "encounter.ended")
        .await
        .unwrap();
    assert_eq!(found, [org]);
    let found = store
        .subscribed_organizations(&mut tx, &[org, other], "sequence.ended")
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert!(
        store
            .subscribed_organizations(&mut tx, &[other], "endpoint.disabled")
            .await
            .unwrap()
            .is_empty()
    );

    // One message at a time, and in a batch.
    let (_, created) = store
        .insert_message(
            &mut tx,
            &message(org, "msg_one", "encounter.ended"),
            Recipients::AllEnabled,
            10,
        )
        .await
        .unwrap();
    assert_eq!(created, 2);
    let created = store
        .insert_report_messages(
            &mut tx,
            &[
                message(org, "msg_enc", "encounter.ended"),
                message(org, "msg_rep", "sequence.ended"),
                message(org, "msg_dis", "endpoint.disabled"),
            ],
            10,
        )
        .await
        .unwrap();
    assert_eq!(created, 4);
    // A test send reaches its endpoint whatever it subscribes to.
    let (_, created) = store
        .insert_message(
            &mut tx,
            &NewMessage {
                is_test: true,
                ..message(org, "msg_test", "sequence.ended.test")
            },
            Recipients::One(encounters.id),
            10,
        )
        .await
        .unwrap();
    assert_eq!(created, 1);
    tx.commit().await.unwrap();
    assert_eq!(
        recipients(store, org, "msg_one").await,
        [both.id.0, encounters.id.0]
    );
    assert_eq!(
        recipients(store, org, "msg_enc").await,
        [both.id.0, encounters.id.0]
    );
    assert_eq!(
        recipients(store, org, "msg_rep").await,
        [reports.id.0, both.id.0]
    );
    assert!(recipients(store, org, "msg_dis").await.is_empty());
    assert_eq!(recipients(store, org, "msg_test").await, [encounters.id.0]);

    // A patch replaces the subscriptions; a disabled endpoint is not a subscriber.
    let patched = store
        .update_endpoint(
            org,
            reports.id,
            &EndpointPatch {
                event_types: Some(vec!["endpoint.disabled".to_owned()]),
                ..EndpointPatch::default()
            },
            20,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(patched.event_types, ["endpoint.disabled"]);
    assert_eq!(
        store
            .get_endpoint(org, reports.id)
            .await
            .unwrap()
            .unwrap()
            .event_types,
        ["endpoint.disabled"]
    );
    store
        .update_endpoint(
            org,
            both.id,
            &EndpointPatch {
                enabled: Some(false),
                ..EndpointPatch::default()
            },
            20,
        )
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    let created = store
        .insert_report_messages(
            &mut tx,
            &[
                message(org, "msg_rep2", "sequence.ended"),
                message(org, "msg_dis2", "endpoint.disabled"),
            ],
            30,
        )
        .await
        .unwrap();
    assert_eq!(created, 1);
    tx.commit().await.unwrap();
    assert_eq!(recipients(store, org, "msg_dis2").await, [reports.id.0]);
}

async fn tenant_org(store: &Store, name: &str) -> OrgId {
    store.create_org(name, 0).await.unwrap().id
}
