//! Checks that only mean something on PostgreSQL (they return at once on SQLite): credentials
//! in the URL never show, a transaction of one backend passed to the other is an error, and
//! ids become visible to a keyset read in commit order.

use std::time::Duration;

use clarion_store::{EncounterId, NewMessage, Recipients, Store, StoreError, StoreOptions};

use clarion_store::testing::{postgres_server, with_password};

use crate::{backend, endpoint, with_keys};

const PASSWORD: &str = "pw-Xq7-never-shown";

#[tokio::test]
async fn a_password_in_the_url_shows_in_no_debug_output_or_error() {
    let Some(_) = postgres_server() else { return };
    let backend = backend().await;
    let url = with_password(&backend.url, PASSWORD);
    let store = Store::connect_with(&url, with_keys(backend.keys.clone()))
        .await
        .expect("the server accepts it");
    let shown = format!("{store:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");

    // Nothing listens on port 1: the error, its chain and its Debug leave the URL out.
    let (_, host_and_db) = url.split_once('@').expect("userinfo");
    let db = host_and_db.split_once('/').map_or("postgres", |(_, db)| db);
    let unreachable = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/{db}");
    let options = StoreOptions {
        acquire_timeout: Duration::from_secs(2),
        ..with_keys(backend.keys.clone())
    };
    let error = Store::connect_with(&unreachable, options)
        .await
        .expect_err("nothing listens there");
    let mut shown = format!("{error} {error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        shown.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    assert!(!shown.contains(PASSWORD), "{shown}");
}

#[tokio::test]
async fn nodes_must_be_given_the_shared_secret_key() {
    let Some(_) = postgres_server() else { return };
    let backend = backend().await;
    let answer = Store::connect(&backend.url).await;
    assert!(
        matches!(answer, Err(StoreError::SecretKeyRequired)),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_transaction_of_another_backend_is_an_error() {
    let Some(_) = postgres_server() else { return };
    let backend = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("other.db").display()
    ))
    .await
    .unwrap();
    let mut sqlite_tx = sqlite.begin().await.unwrap();
    let answer = backend
        .store
        .claim_encounter(&mut sqlite_tx, EncounterId(1), 0)
        .await;
    assert!(
        matches!(answer, Err(StoreError::ForeignTransaction)),
        "{answer:?}"
    );
    let mut pg_tx = backend.store.begin().await.unwrap();
    let answer = sqlite.withdraw_encounter(&mut pg_tx, EncounterId(1)).await;
    assert!(
        matches!(answer, Err(StoreError::ForeignTransaction)),
        "{answer:?}"
    );
    let answer = sqlite
        .open_sms_conversations(Some(&mut pg_tx), "+15550000000", &[])
        .await;
    assert!(
        matches!(answer, Err(StoreError::ForeignTransaction)),
        "{answer:?}"
    );
    pg_tx.rollback().await.unwrap();
    sqlite_tx.rollback().await.unwrap();
}

fn report<'a>(org: clarion_store::OrgId, webhook_id: &'a str) -> NewMessage<'a> {
    NewMessage {
        org_id: org,
        webhook_id,
        event_type: "sequence.ended",
        sequence_id: None,
        is_test: false,
        body: b"{}",
        created_at: 0,
    }
}

/// A report committed after a later-numbered one: a pull that ran in between would have
/// moved its cursor past the first report's id, and never seen it. The read waits for the
/// insert in flight, so the page it answers has no gap that fills later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reports_page_never_skips_an_id_committed_after_a_larger_one() {
    let Some(_) = postgres_server() else { return };
    let backend = backend().await;
    let store = &backend.store;
    let org = store.create_org("id order", 0).await.unwrap().id;
    endpoint(store, org, "https://order.example/").await;
    let handles = backend.handles(2).await;

    // The first report draws the smaller id and stays uncommitted.
    let mut early = handles[0].begin().await.unwrap();
    let (early_id, _) = handles[0]
        .insert_message(
            &mut early,
            &report(org, "msg_early"),
            Recipients::AllEnabled,
            0,
        )
        .await
        .unwrap();
    // The second draws a larger id and commits first: writers never wait for each other.
    let mut late = handles[1].begin().await.unwrap();
    let (late_id, _) = handles[1]
        .insert_message(
            &mut late,
            &report(org, "msg_late"),
            Recipients::AllEnabled,
            0,
        )
        .await
        .unwrap();
    late.commit().await.unwrap();
    assert!(early_id < late_id);

    let mut reader = {
        let store = store.clone();
        tokio::spawn(async move { store.list_reports(org, "sequence.ended", None, 10).await })
    };
    // Given time to answer while the smaller id is in flight, the read must wait instead.
    let while_in_flight = tokio::time::timeout(Duration::from_millis(500), &mut reader).await;
    early.commit().await.unwrap();
    let page = match while_in_flight {
        Ok(joined) => joined.unwrap().unwrap(),
        Err(_) => tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the read ends once the smaller id is committed")
            .unwrap()
            .unwrap(),
    };
    let ids: Vec<_> = page.iter().map(|r| r.message_id).collect();
    assert_eq!(
        ids,
        vec![early_id, late_id],
        "a page skipped an id in flight"
    );
}
