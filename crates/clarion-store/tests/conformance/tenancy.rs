//! Every read is scoped to its organisation: another organisation's id answers nothing.

use clarion_store::{DeliveryFilter, EndpointPatch};

use crate::{backend, ended, endpoint, enroll, queue_deliveries, tenant};

#[tokio::test]
async fn another_organisations_ids_answer_nothing() {
    let backend = backend().await;
    let store = &backend.store;
    let owner = tenant(store, "owner").await;
    let stranger = tenant(store, "stranger").await;
    let hook = endpoint(store, owner.org, "https://owner.example/").await;
    let sequence = enroll(store, &owner, "+15550700").await;
    queue_deliveries(store, owner.org, hook.id, 1, 0).await;
    let delivery = store
        .list_deliveries(owner.org, &DeliveryFilter::default(), None, 10)
        .await
        .unwrap()[0]
        .id;
    let mut tx = store.begin().await.unwrap();
    store
        .update_sequences(&mut tx, &[(sequence.id, ended(1))])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The owner sees everything (so the look-ups below are not trivially empty).
    assert!(
        store
            .get_sequence(owner.org, sequence.id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .get_endpoint(owner.org, hook.id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .get_delivery(owner.org, delivery)
            .await
            .unwrap()
            .is_some()
    );

    let other = stranger.org;
    assert_eq!(store.get_sequence(other, sequence.id).await.unwrap(), None);
    assert_eq!(
        store
            .get_template(other, owner.template.template_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_assistant(other, owner.assistant.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_endpoint(other, hook.id).await.unwrap(), None);
    assert_eq!(store.current_secret(other, hook.id).await.unwrap(), None);
    assert_eq!(store.get_delivery(other, delivery).await.unwrap(), None);
    assert_eq!(
        store.retry_delivery(other, delivery, 5).await.unwrap(),
        None
    );
    assert!(
        store
            .update_template(
                other,
                owner.template.template_id,
                None,
                &serde_json::json!({}),
                5
            )
            .await
            .unwrap()
            .is_none()
    );
    let patch = EndpointPatch {
        enabled: Some(false),
        ..EndpointPatch::default()
    };
    assert_eq!(
        store
            .update_endpoint(other, hook.id, &patch, 5)
            .await
            .unwrap(),
        None
    );
    assert!(!store.delete_endpoint(other, hook.id, 5).await.unwrap());
    assert_eq!(store.report_body(other, sequence.id).await.unwrap(), None);
    assert!(
        store
            .list_sequences(other, None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_endpoints(other, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let assistants = store.list_assistants(other, None, 10).await.unwrap();
    assert!(
        assistants
            .iter()
            .all(|a| a.org_id == other && a.id != owner.assistant.id)
    );
    let templates = store.list_templates(other, None, 10).await.unwrap();
    assert!(
        templates
            .iter()
            .all(|t| t.template_id != owner.template.template_id)
    );
    assert!(
        store
            .list_reports(other, "sequence.ended", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_deliveries(other, &DeliveryFilter::default(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let filtered = DeliveryFilter {
        endpoint_id: Some(hook.id),
        ..DeliveryFilter::default()
    };
    assert!(
        store
            .list_deliveries(other, &filtered, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The stranger's attempts to change things changed nothing.
    let hook_now = store
        .get_endpoint(owner.org, hook.id)
        .await
        .unwrap()
        .unwrap();
    assert!(hook_now.enabled);
    assert_eq!(
        store
            .get_template(owner.org, owner.template.template_id)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
}
