//! The operator dashboard's store: the sequence list's filters and order, sign-in sessions
//! (idle and absolute expiry, sign-out, tenant of the key) and the PHI access log (scoped to
//! its organisation, paged both ways).

use clarion_store::{
    NewAccessEntry, NewUiSession, SequenceFilter, SequenceId, SequenceStatus, SessionTouch, Store,
};
use serde_json::json;

use crate::{backend, ended, new_sequence, tenant};

/// Enrolls `phone` with `external_id`, at `now`, on `template` when given.
async fn enroll_at(
    store: &Store,
    tenant: &crate::Tenant,
    phone: &str,
    external_id: &str,
    now: i64,
    template: Option<&clarion_store::TemplateVersion>,
) -> SequenceId {
    let contact = json!({ "phone_number": phone, "external_id": external_id });
    let mut new = new_sequence(tenant, phone, &contact, None);
    new.now = now;
    if let Some(template) = template {
        new.template_id = template.template_id;
        new.template_version_id = template.version_id;
    }
    let mut tx = store.begin().await.unwrap();
    let row = store
        .insert_sequence(&mut tx, &new)
        .await
        .unwrap()
        .expect("enrolled");
    tx.commit().await.unwrap();
    row.id
}

#[tokio::test]
async fn sequence_filters_narrow_the_list_and_newest_first_pages_downwards() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "filters").await;
    let other = crate::tenant(store, "other").await;
    let second_template = store
        .create_template(tenant.org, "second", &json!({ "steps": [] }), 0)
        .await
        .unwrap();
    let a = enroll_at(store, &tenant, "+15550100001", "mrn-a", 1_000, None).await;
    let b = enroll_at(store, &tenant, "+15550100002", "mrn-b", 2_000, None).await;
    let c = enroll_at(
        store,
        &tenant,
        "+15550100003",
        "mrn-c",
        3_000,
        Some(&second_template),
    )
    .await;
    // The same number and external id in another organisation is never found.
    enroll_at(store, &other, "+15550100002", "mrn-b", 2_000, None).await;
    let mut tx = store.begin().await.unwrap();
    store
        .update_sequences(&mut tx, &[(b, ended(2_500))])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let ids = |filter: SequenceFilter| async move {
        store
            .search_sequences(tenant.org, &filter, None, 100)
            .await
            .unwrap()
            .iter()
            .map(|row| row.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(SequenceFilter::default()).await, vec![a, b, c]);
    let status = |status| SequenceFilter {
        status: Some(status),
        ..SequenceFilter::default()
    };
    assert_eq!(ids(status(SequenceStatus::Ended)).await, vec![b]);
    assert_eq!(ids(status(SequenceStatus::Active)).await, vec![a, c]);
    let template = SequenceFilter {
        template_id: Some(second_template.template_id),
        ..SequenceFilter::default()
    };
    assert_eq!(ids(template).await, vec![c]);
    let window = SequenceFilter {
        created_from: Some(2_000),
        created_before: Some(3_000),
        ..SequenceFilter::default()
    };
    assert_eq!(ids(window).await, vec![b]);
    let phone = SequenceFilter {
        phone_number: Some("+15550100002".to_owned()),
        ..SequenceFilter::default()
    };
    assert_eq!(ids(phone).await, vec![b]);
    let external = SequenceFilter {
        external_id: Some("mrn-c".to_owned()),
        ..SequenceFilter::default()
    };
    assert_eq!(ids(external).await, vec![c]);
    let nothing = SequenceFilter {
        external_id: Some("mrn-c".to_owned()),
        status: Some(SequenceStatus::Ended),
        ..SequenceFilter::default()
    };
    assert!(ids(nothing).await.is_empty());

    // Newest first, two at a time: the cursor continues below the last id.
    let newest = SequenceFilter {
        newest_first: true,
        ..SequenceFilter::default()
    };
    let first = store
        .search_sequences(tenant.org, &newest, None, 2)
        .await
        .unwrap();
    assert_eq!(first.iter().map(|r| r.id).collect::<Vec<_>>(), vec![c, b]);
    let rest = store
        .search_sequences(tenant.org, &newest, Some(b), 2)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a]);
    // The unfiltered list is the same query, oldest first.
    let listed = store
        .list_sequences(tenant.org, None, Some(a), 10)
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b, c]);
}

const MINUTE: i64 = 60_000;

#[tokio::test]
async fn sessions_live_while_used_and_end_idle_at_their_lifetime_or_on_sign_out() {
    let backend = backend().await;
    let store = &backend.store;
    let created = store.create_org("sessions", 0).await.unwrap();
    let key = store
        .authenticate_key(created.api_key.expose())
        .await
        .unwrap()
        .expect("the new key authenticates");
    let token = [7u8; 32];
    let id = store
        .create_ui_session(&NewUiSession {
            org_id: key.org_id,
            api_key_id: key.key_id,
            token_hash: &token,
            now: 0,
            expires_at: 30 * MINUTE,
        })
        .await
        .unwrap();
    let touch = |now: i64, created_after: i64| SessionTouch {
        token_hash: &token,
        now,
        expires_at: now + 30 * MINUTE,
        created_after,
    };
    // Used within its idle window, it lives on, each use moving the expiry.
    let session = store
        .touch_ui_session(&touch(20 * MINUTE, -1))
        .await
        .unwrap()
        .expect("live");
    assert_eq!(session.id, id);
    assert_eq!(session.org_id, key.org_id);
    assert_eq!(session.api_key_id, key.key_id);
    assert_eq!(
        (session.created_at, session.last_seen_at, session.expires_at),
        (0, 20 * MINUTE, 50 * MINUTE)
    );
    assert!(
        store
            .touch_ui_session(&touch(45 * MINUTE, -1))
            .await
            .unwrap()
            .is_some(),
        "45 minutes after sign-in, 25 after the last use: still live"
    );
    // Past its absolute lifetime it is over, however recently used.
    assert!(
        store
            .touch_ui_session(&touch(46 * MINUTE, 1))
            .await
            .unwrap()
            .is_none()
    );
    // Another token finds nothing.
    assert!(
        store
            .touch_ui_session(&SessionTouch {
                token_hash: &[8u8; 32],
                ..touch(46 * MINUTE, -1)
            })
            .await
            .unwrap()
            .is_none()
    );
    // Idle past its expiry (75 minutes = 45 + 30), it is over for good.
    assert!(
        store
            .touch_ui_session(&touch(75 * MINUTE, -1))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .touch_ui_session(&touch(76 * MINUTE, -1))
            .await
            .unwrap()
            .is_none()
    );

    // Sign-out ends a live session; a second sign-out finds nothing.
    let second = [9u8; 32];
    store
        .create_ui_session(&NewUiSession {
            org_id: key.org_id,
            api_key_id: key.key_id,
            token_hash: &second,
            now: 100 * MINUTE,
            expires_at: 130 * MINUTE,
        })
        .await
        .unwrap();
    let live = SessionTouch {
        token_hash: &second,
        now: 101 * MINUTE,
        expires_at: 131 * MINUTE,
        created_after: -1,
    };
    assert!(store.touch_ui_session(&live).await.unwrap().is_some());
    assert!(store.delete_ui_session(&second).await.unwrap());
    assert!(store.touch_ui_session(&live).await.unwrap().is_none());
    assert!(!store.delete_ui_session(&second).await.unwrap());
    // Creating a session purged the expired first one.
    let rows = backend
        .raw_texts("SELECT CAST(COUNT(*) AS TEXT) FROM ui_sessions")
        .await;
    assert_eq!(rows, vec!["0".to_owned()]);
}

#[tokio::test]
async fn the_access_log_is_the_organisations_own_paged_both_ways() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "audited").await;
    let other = crate::tenant(store, "other").await;
    let sequence = crate::enroll(store, &tenant, "+15550100009").await;
    let mut ours = Vec::new();
    for i in 0..5 {
        ours.push(
            store
                .record_access(&NewAccessEntry {
                    org_id: tenant.org,
                    at: i,
                    actor: "ui-session:1 api-key:2",
                    action: "sequence.viewed",
                    sequence_id: Some(sequence.id),
                    detail: "",
                })
                .await
                .unwrap(),
        );
        store
            .record_access(&NewAccessEntry {
                org_id: other.org,
                at: i,
                actor: "api-key:3",
                action: "sequences.exported",
                sequence_id: None,
                detail: "status=ended",
            })
            .await
            .unwrap();
    }
    let all = store
        .access_log(tenant.org, None, false, 100)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), ours);
    assert!(all.iter().all(|e| e.org_id == tenant.org
        && e.action == "sequence.viewed"
        && e.actor == "ui-session:1 api-key:2"
        && e.sequence_id == Some(sequence.id)));
    assert_eq!(
        all.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let page = store
        .access_log(tenant.org, Some(ours[1]), false, 2)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), ours[2..4]);
    let newest = store.access_log(tenant.org, None, true, 2).await.unwrap();
    assert_eq!(
        newest.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ours[4], ours[3]]
    );
    let older = store
        .access_log(tenant.org, Some(ours[3]), true, 10)
        .await
        .unwrap();
    assert_eq!(
        older.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![ours[2], ours[1], ours[0]]
    );
    let theirs = store.access_log(other.org, None, false, 100).await.unwrap();
    assert_eq!(theirs.len(), 5);
    assert!(
        theirs
            .iter()
            .all(|e| e.sequence_id.is_none() && e.detail == "status=ended")
    );
}
