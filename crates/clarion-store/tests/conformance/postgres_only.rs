//! Checks that only mean something on PostgreSQL (they return at once on SQLite): credentials
//! in the URL never show, a transaction of one backend passed to the other is an error, ids
//! become visible to a keyset read in commit order, and commits wake the other nodes.

use std::time::Duration;

use clarion_store::{EncounterId, NewMessage, Recipients, Store, StoreError, StoreOptions, Wakeup};

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

/// Waits (at most ten seconds) for the next wake-up a subscription receives.
async fn next_wakeup(wakeups: &mut clarion_store::Wakeups) -> Wakeup {
    tokio::time::timeout(Duration::from_secs(10), wakeups.recv())
        .await
        .expect("a wake-up within ten seconds")
}

/// Work one node commits wakes the others, after the commit; a transaction rolled back
/// wakes nobody, and neither does a node with wake-ups turned off. (A node's wake-ups reach a
/// listener in the order they were asked for, so the first one received shows what was sent
/// before it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_other_nodes_and_a_rollback_wakes_none() {
    let Some(_) = postgres_server() else { return };
    let backend = backend().await;
    let writer = &backend.store;
    let org = writer.create_org("wake-ups", 0).await.unwrap().id;
    endpoint(writer, org, "https://wake.example/").await;
    let listener = backend.handles(1).await.remove(0);
    let mut wakeups = listener.wakeups();
    // The listener's first word: it listens now (anything before may have been missed).
    assert_eq!(next_wakeup(&mut wakeups).await, Wakeup::Resync);

    // Rolled back: reports queued (which ask for `Deliveries`), nothing sent.
    let mut rolled_back = writer.begin().await.unwrap();
    for id in ["msg_r1", "msg_r2"] {
        writer
            .insert_message(
                &mut rolled_back,
                &report(org, id),
                Recipients::AllEnabled,
                0,
            )
            .await
            .unwrap();
    }
    rolled_back.wake_nodes(Wakeup::Deliveries);
    rolled_back.rollback().await.unwrap();
    let mut marker = writer.begin().await.unwrap();
    marker.wake_nodes(Wakeup::Scheduler);
    marker.commit().await.unwrap();
    assert_eq!(next_wakeup(&mut wakeups).await, Wakeup::Scheduler);

    // Committed: the outbox write asked for `Deliveries` by itself.
    let mut committed = writer.begin().await.unwrap();
    for id in ["msg_c1", "msg_c2", "msg_c3"] {
        writer
            .insert_message(&mut committed, &report(org, id), Recipients::AllEnabled, 0)
            .await
            .unwrap();
    }
    committed.commit().await.unwrap();
    assert_eq!(next_wakeup(&mut wakeups).await, Wakeup::Deliveries);

    // A node that does not send wake-ups (`notify` off) wakes nobody: the marker after its
    // commit is the next wake-up received.
    let quiet = Store::connect_with(
        &backend.url,
        StoreOptions {
            notify: false,
            ..with_keys(backend.keys.clone())
        },
    )
    .await
    .unwrap();
    let mut tx = quiet.begin().await.unwrap();
    quiet
        .insert_message(&mut tx, &report(org, "msg_q"), Recipients::AllEnabled, 0)
        .await
        .unwrap();
    tx.wake_nodes(Wakeup::Resync);
    tx.commit().await.unwrap();
    let mut marker = writer.begin().await.unwrap();
    marker.wake_nodes(Wakeup::Scheduler);
    marker.commit().await.unwrap();
    assert_eq!(next_wakeup(&mut wakeups).await, Wakeup::Scheduler);
}

/// The listener outlives its connection: killed (as a failover or an administrator does),
/// it reconnects, says so (`Resync`: wake-ups sent meanwhile may be lost), and receives
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wake_up_listener_reconnects_after_its_connection_is_killed() {
    let Some(_) = postgres_server() else { return };
    let backend = backend().await;
    let listener = backend.handles(1).await.remove(0);
    let mut wakeups = listener.wakeups();
    assert_eq!(next_wakeup(&mut wakeups).await, Wakeup::Resync);
    let killed = backend
        .raw_texts(
            "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND query ILIKE 'LISTEN%'",
        )
        .await;
    assert_eq!(killed, ["true"], "one listening connection");
    assert_eq!(next_wakeup(&mut wakeups).await, Wakeup::Resync);
    let mut tx = backend.store.begin().await.unwrap();
    tx.wake_nodes(Wakeup::Deliveries);
    tx.commit().await.unwrap();
    assert_eq!(next_wakeup(&mut wakeups).await, Wakeup::Deliveries);
}
