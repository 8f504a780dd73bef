//! Webhook endpoint secrets at rest: sealed in the database, opened for signing, re-sealed
//! under a new key when the key rotates, erased with their endpoint.

use clarion_store::StoreError;
use clarion_store::secret_keys::{SecretKey, SecretKeys};

use crate::{SECRET, backend, claim_first_attempts, endpoint, queue_deliveries, tenant};

const STORED: &str = "SELECT sealed_secret FROM webhook_endpoint_secrets";
const KEY_IDS: &str = "SELECT key_id FROM webhook_endpoint_secrets";

#[tokio::test]
async fn a_secret_is_sealed_in_the_database_and_opened_for_signing() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "org").await;
    let hook = endpoint(store, tenant.org, "https://hook.example/").await;

    let stored = backend.raw_texts(STORED).await;
    assert_eq!(stored.len(), 1);
    let secret_body = SECRET.trim_start_matches("whsec_");
    assert!(
        stored.iter().all(|text| !text.contains(secret_body)),
        "the secret is stored in the clear"
    );
    assert_eq!(
        backend.raw_texts(KEY_IDS).await,
        vec![backend.keys.current().id()]
    );

    assert_eq!(
        store.current_secret(tenant.org, hook.id).await.unwrap(),
        Some(SECRET.to_owned())
    );
    assert_eq!(
        store.signing_secrets(hook.id, 0).await.unwrap(),
        vec![SECRET.to_owned()]
    );
    queue_deliveries(store, tenant.org, hook.id, 1, 0).await;
    let claimed = claim_first_attempts(store, 10, 10_000).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].signing_secrets, vec![SECRET.to_owned()]);

    // A rotated-in secret is sealed too, and both sign during the overlap.
    let next = "whsec_bmV4dC1zZWNyZXQtbmV4dC1zZWNyZXQ=";
    assert!(
        store
            .rotate_endpoint_secret(tenant.org, hook.id, next, 1_000, 0)
            .await
            .unwrap()
    );
    assert!(
        backend
            .raw_texts(STORED)
            .await
            .iter()
            .all(|text| !text.contains("bmV4dC1zZWNyZXQ")),
    );
    assert_eq!(
        store.signing_secrets(hook.id, 0).await.unwrap(),
        vec![next.to_owned(), SECRET.to_owned()]
    );
}

#[tokio::test]
async fn a_new_key_reseals_every_secret_and_a_missing_key_stops_the_start() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "org").await;
    let first = endpoint(store, tenant.org, "https://one.example/").await;
    let second = endpoint(store, tenant.org, "https://two.example/").await;
    let old = backend.keys.current().clone();

    // A node started with the new key and the old one as previous re-seals everything.
    let new = SecretKey::generate();
    let rotated = SecretKeys::new(new.clone()).with_previous([old.clone()]);
    let node = backend.open_with(rotated).await.unwrap();
    assert_eq!(backend.raw_texts(KEY_IDS).await, vec![new.id(), new.id()]);
    for hook in [&first, &second] {
        assert_eq!(
            node.current_secret(tenant.org, hook.id).await.unwrap(),
            Some(SECRET.to_owned())
        );
    }

    // Once re-sealed, the old key is no longer needed…
    let new_only = backend
        .open_with(SecretKeys::new(new.clone()))
        .await
        .unwrap();
    assert_eq!(
        new_only.signing_secrets(first.id, 0).await.unwrap(),
        vec![SECRET.to_owned()]
    );
    // …and a node given neither key refuses to start, naming the key it lacks and how many
    // secrets need it, rather than sending unsigned reports.
    let answer = backend.open_with(SecretKeys::new(old.clone())).await;
    match answer {
        Err(StoreError::UnknownSecretKey { key_id, count }) => {
            assert_eq!(key_id, new.id());
            assert_eq!(count, 2);
        }
        other => panic!("expected UnknownSecretKey, got {other:?}"),
    }
    // Nothing was rewritten by the refused start.
    assert_eq!(backend.raw_texts(KEY_IDS).await, vec![new.id(), new.id()]);
}

#[tokio::test]
async fn deleting_an_endpoint_erases_its_secrets() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "org").await;
    let kept = endpoint(store, tenant.org, "https://kept.example/").await;
    let gone = endpoint(store, tenant.org, "https://gone.example/").await;
    store
        .rotate_endpoint_secret(tenant.org, gone.id, SECRET, 1_000, 0)
        .await
        .unwrap();
    assert_eq!(backend.raw_texts(STORED).await.len(), 3);

    assert!(store.delete_endpoint(tenant.org, gone.id, 5).await.unwrap());
    assert_eq!(backend.raw_texts(STORED).await.len(), 1);
    assert!(store.signing_secrets(gone.id, 5).await.unwrap().is_empty());
    assert_eq!(
        store.current_secret(tenant.org, kept.id).await.unwrap(),
        Some(SECRET.to_owned())
    );
}
