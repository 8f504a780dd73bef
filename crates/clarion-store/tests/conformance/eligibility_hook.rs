//! An organisation's eligibility hook: its settings kept beside the other settings, its
//! secret sealed at rest (bound to the organisation), opened for the scheduler, replaced on
//! rotation, re-sealed under a new key, erased with the hook.

use clarion_store::secret_keys::{SecretKey, SecretKeys};
use clarion_store::{OrgId, OrganizationPatch, Store, StoreError};

use crate::{backend, tenant};

const SETTINGS: &str =
    r#"{"url":"https://hook.example/check","timeout_ms":3000,"on_error":"not-eligible"}"#;
const FIRST: &str = "whsec_Zmlyc3QtaG9vay1zZWNyZXQtZmlyc3Q=";
const NEXT: &str = "whsec_bmV4dC1ob29rLXNlY3JldC1uZXh0LTE=";
const STORED: &str = "SELECT eligibility_hook_secret FROM organizations \
                      WHERE eligibility_hook_secret IS NOT NULL";
const KEY_IDS: &str = "SELECT eligibility_hook_key_id FROM organizations \
                       WHERE eligibility_hook_key_id IS NOT NULL";

/// The organisation's hook secret as the scheduler gets it.
async fn secret_of(store: &Store, org: OrgId) -> Option<String> {
    store.eligibility_hook(org).await.unwrap().unwrap().secret
}

fn set(settings: Option<&str>, secret: Option<&str>) -> OrganizationPatch {
    OrganizationPatch {
        eligibility_hook: Some(settings.map(str::to_owned)),
        eligibility_hook_secret: secret.map(str::to_owned),
        ..OrganizationPatch::default()
    }
}

#[tokio::test]
async fn a_hook_is_stored_sealed_rotated_and_removed_with_its_secret() {
    let backend = backend().await;
    let store = &backend.store;
    let org = tenant(store, "org").await.org;
    let other = tenant(store, "other").await.org;
    assert_eq!(store.eligibility_hook(org).await.unwrap(), None);

    let updated = store
        .update_organization(org, &set(Some(SETTINGS), Some(FIRST)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.eligibility_hook.as_deref(), Some(SETTINGS));
    let hook = store.eligibility_hook(org).await.unwrap().unwrap();
    assert_eq!(hook.settings, SETTINGS);
    assert_eq!(hook.secret.as_deref(), Some(FIRST));
    assert!(!format!("{hook:?}").contains("whsec_"));
    // Sealed: the database never holds the secret in the clear.
    let stored = backend.raw_texts(STORED).await;
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(FIRST.trim_start_matches("whsec_")));
    assert_eq!(
        backend.raw_texts(KEY_IDS).await,
        vec![backend.keys.current().id()]
    );
    // Another organisation has none; other settings leave the hook alone.
    assert_eq!(store.eligibility_hook(other).await.unwrap(), None);
    let other_change = OrganizationPatch {
        retention_days: Some(Some(30)),
        ..OrganizationPatch::default()
    };
    store.update_organization(org, &other_change).await.unwrap();
    assert_eq!(secret_of(store, org).await.as_deref(), Some(FIRST));

    // New settings keep the secret, and so does a first secret drawn by a setting that
    // raced the one stored (not a rotation); a rotation's secret replaces it.
    let moved = SETTINGS.replace("hook.example", "hook2.example");
    store
        .update_organization(org, &set(Some(&moved), None))
        .await
        .unwrap();
    let hook = store.eligibility_hook(org).await.unwrap().unwrap();
    assert_eq!(
        (hook.settings.as_str(), hook.secret.as_deref()),
        (moved.as_str(), Some(FIRST))
    );
    store
        .update_organization(org, &set(Some(&moved), Some(NEXT)))
        .await
        .unwrap();
    assert_eq!(
        secret_of(store, org).await.as_deref(),
        Some(FIRST),
        "a second first secret is not stored over the first"
    );
    store
        .update_organization(
            org,
            &OrganizationPatch {
                eligibility_hook_secret: Some(NEXT.to_owned()),
                eligibility_hook_secret_rotates: true,
                ..OrganizationPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(secret_of(store, org).await.as_deref(), Some(NEXT));

    // Removing the hook erases its secret.
    let removed = store
        .update_organization(org, &set(None, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.eligibility_hook, None);
    assert_eq!(store.eligibility_hook(org).await.unwrap(), None);
    assert!(backend.raw_texts(STORED).await.is_empty());
    assert!(backend.raw_texts(KEY_IDS).await.is_empty());
}

#[tokio::test]
async fn a_new_key_reseals_the_hook_secret_and_a_missing_key_stops_the_start() {
    let backend = backend().await;
    let store = &backend.store;
    let org = tenant(store, "org").await.org;
    store
        .update_organization(org, &set(Some(SETTINGS), Some(FIRST)))
        .await
        .unwrap();
    let old = backend.keys.current().clone();

    let new = SecretKey::generate();
    let rotated = SecretKeys::new(new.clone()).with_previous([old.clone()]);
    let node = backend.open_with(rotated).await.unwrap();
    assert_eq!(backend.raw_texts(KEY_IDS).await, vec![new.id()]);
    assert_eq!(
        node.eligibility_hook(org)
            .await
            .unwrap()
            .unwrap()
            .secret
            .as_deref(),
        Some(FIRST)
    );
    // A node with the new key alone opens it too; one with only the old key cannot start.
    let only_new = backend.open_with(SecretKeys::new(new)).await.unwrap();
    assert_eq!(secret_of(&only_new, org).await.as_deref(), Some(FIRST));
    let refused = backend.open_with(SecretKeys::new(old)).await;
    assert!(
        matches!(refused, Err(StoreError::UnknownSecretKey { .. })),
        "{refused:?}"
    );
}
