//! Enrollment: idempotency keys and one running sequence per number and template, under
//! concurrent inserts from several handles; ids assigned by the store are distinct.

use std::collections::HashSet;

use clarion_store::{InsertSequenceError, SequenceId, SequenceRow, Store};
use serde_json::json;

use crate::{Tenant, backend, ended, new_sequence, tenant};

const HANDLES: usize = 4;
const TASKS_PER_HANDLE: usize = 2;
const ROUNDS: usize = 10;

type Answer = Result<SequenceRow, InsertSequenceError>;

/// Every task inserts its sequence (own transaction, own handle) at once; answers each.
async fn insert_concurrently(
    handles: &[Store],
    tenant: &std::sync::Arc<Tenant>,
    phone: impl Fn(usize) -> String,
    key: Option<&str>,
) -> Vec<Answer> {
    let mut tasks = Vec::new();
    for (h, store) in handles.iter().enumerate() {
        for t in 0..TASKS_PER_HANDLE {
            let store = store.clone();
            let tenant = tenant.clone();
            let phone = phone(h * TASKS_PER_HANDLE + t);
            let key = key.map(str::to_owned);
            tasks.push(tokio::spawn(async move {
                let contact = json!({ "phone_number": phone });
                let new = new_sequence(&tenant, &phone, &contact, key.as_deref());
                let mut tx = store.begin().await.unwrap();
                let answer = store.insert_sequence(&mut tx, &new).await.unwrap();
                tx.commit().await.unwrap();
                answer
            }));
        }
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// Eight concurrent enrollments with one idempotency key (different numbers, so only the key
/// can refuse them): one row, and every other answer names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_makes_one_sequence_whatever_the_race() {
    let backend = backend().await;
    let tenant = std::sync::Arc::new(tenant(&backend.store, "idempotency").await);
    let handles = backend.handles(HANDLES).await;
    for round in 0..ROUNDS {
        let key = format!("key-{round}");
        let answers = insert_concurrently(
            &handles,
            &tenant,
            |i| format!("+1555{round:03}{i:04}"),
            Some(&key),
        )
        .await;
        let winners: Vec<&SequenceRow> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        let winner = winners[0].id;
        for answer in &answers {
            if let Err(refused) = answer {
                assert_eq!(refused, &InsertSequenceError::SameIdempotencyKey(winner));
            }
        }
    }
    let all = backend
        .store
        .list_sequences(tenant.org, None, None, 1_000)
        .await
        .unwrap();
    assert_eq!(all.len(), ROUNDS, "one row per key");
}

/// A key is bound to the fingerprint of the request that first used it: the same fingerprint
/// is a replay (the earlier id), another is a reuse (refused, naming the earlier id, nothing
/// inserted), including when the two race and the loser meets the winner's row on insert.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_with_another_fingerprint_is_a_reuse_not_a_replay() {
    let backend = backend().await;
    let tenant = std::sync::Arc::new(tenant(&backend.store, "fingerprints").await);
    let store = &backend.store;
    let insert = |phone: &'static str, fingerprint: Option<&'static str>| {
        let tenant = tenant.clone();
        let store = store.clone();
        async move {
            let contact = json!({ "phone_number": phone });
            let mut new = new_sequence(&tenant, phone, &contact, Some("the-key"));
            new.idempotency_fingerprint = fingerprint;
            let mut tx = store.begin().await.unwrap();
            let answer = store.insert_sequence(&mut tx, &new).await.unwrap();
            tx.commit().await.unwrap();
            answer
        }
    };
    let first = insert("+15550001001", Some("aaaa")).await.unwrap();
    assert_eq!(
        insert("+15550001001", Some("aaaa")).await,
        Err(InsertSequenceError::SameIdempotencyKey(first.id))
    );
    assert_eq!(
        insert("+15550001002", Some("bbbb")).await,
        Err(InsertSequenceError::IdempotencyKeyReused(first.id))
    );
    let mut tx = store.begin().await.unwrap();
    let keyed = store
        .sequence_by_idempotency_key(&mut tx, tenant.org, "the-key")
        .await
        .unwrap()
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(keyed.id, first.id);
    assert_eq!(keyed.fingerprint.as_deref(), Some("aaaa"));
    let all = store
        .list_sequences(tenant.org, None, None, 1_000)
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "the reused key enrolled no one");

    // Racing: eight inserts with one key, half with each of two fingerprints.
    let handles = backend.handles(HANDLES).await;
    for round in 0..ROUNDS {
        let key = format!("race-{round}");
        let mut tasks = Vec::new();
        for (h, handle) in handles.iter().enumerate() {
            for t in 0..TASKS_PER_HANDLE {
                let i = h * TASKS_PER_HANDLE + t;
                let (handle, tenant, key) = (handle.clone(), tenant.clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    let phone = format!("+1556{round:03}{i:04}");
                    let contact = json!({ "phone_number": phone });
                    let mut new = new_sequence(&tenant, &phone, &contact, Some(&key));
                    new.idempotency_fingerprint =
                        Some(if i.is_multiple_of(2) { "even" } else { "odd" });
                    let mut tx = handle.begin().await.unwrap();
                    let answer = handle.insert_sequence(&mut tx, &new).await.unwrap();
                    tx.commit().await.unwrap();
                    (i.is_multiple_of(2), answer)
                }));
            }
        }
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        let winners: Vec<(bool, SequenceId)> = answers
            .iter()
            .filter_map(|(even, a)| a.as_ref().ok().map(|row| (*even, row.id)))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        let (winner_even, winner) = winners[0];
        for (even, answer) in &answers {
            if let Err(refused) = answer {
                let expected = if *even == winner_even {
                    InsertSequenceError::SameIdempotencyKey(winner)
                } else {
                    InsertSequenceError::IdempotencyKeyReused(winner)
                };
                assert_eq!(refused, &expected, "round {round}");
            }
        }
    }
}

/// Eight concurrent enrollments of one number in one template: one runs, the others are
/// refused as already running; once it ends, the number can be enrolled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_running_sequence_per_number_and_template_freed_when_it_ends() {
    let backend = backend().await;
    let tenant = std::sync::Arc::new(tenant(&backend.store, "one running").await);
    let handles = backend.handles(HANDLES).await;
    for round in 0..ROUNDS {
        let phone = format!("+1555040{round:04}");
        let answers = insert_concurrently(&handles, &tenant, |_| phone.clone(), None).await;
        let winners: Vec<&SequenceRow> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        assert!(
            answers
                .iter()
                .filter_map(|a| a.as_ref().err())
                .all(|e| *e == InsertSequenceError::AlreadyRunning)
        );
        // Ending it frees the number for this template.
        let mut tx = backend.store.begin().await.unwrap();
        backend
            .store
            .update_sequences(&mut tx, &[(winners[0].id, ended(5))])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let again = insert_concurrently(&handles[..1], &tenant, |_| phone.clone(), None).await;
        assert_eq!(again.iter().filter(|a| a.is_ok()).count(), 1, "{again:?}");
    }
}

/// Concurrent enrollments of different numbers all succeed with distinct ids, each row
/// readable under its id with its own number.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserts_get_distinct_ids() {
    let backend = backend().await;
    let tenant = std::sync::Arc::new(tenant(&backend.store, "ids").await);
    let handles = backend.handles(HANDLES).await;
    let mut ids = HashSet::new();
    for round in 0..ROUNDS {
        let answers = insert_concurrently(
            &handles,
            &tenant,
            |i| format!("+1555050{round:02}{i:02}"),
            None,
        )
        .await;
        for answer in answers {
            let row = answer.expect("distinct numbers all enroll");
            assert!(ids.insert(row.id), "id {} assigned twice", row.id);
            let read = backend
                .store
                .get_sequence(tenant.org, row.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(read.phone_number, row.phone_number);
        }
    }
    assert_eq!(ids.len(), ROUNDS * HANDLES * TASKS_PER_HANDLE);
}

const BATCH: usize = 30;

/// Several handles insert batches at once (`insert_sequences`, one transaction each). In each
/// batch, rows come in pairs on one number with different contacts, so the second of each
/// pair is refused (already running) and the database skips it mid-statement. Every answer
/// must be its own input's row (its contact, its number) or `None` for exactly the refused
/// ones; ids are distinct across all batches and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batch_inserts_answer_each_input_with_its_own_row() {
    let backend = backend().await;
    let tenant = std::sync::Arc::new(tenant(&backend.store, "batch ids").await);
    let handles = backend.handles(HANDLES).await;
    let mut tasks = Vec::new();
    for (h, store) in handles.iter().enumerate() {
        for t in 0..TASKS_PER_HANDLE {
            let store = store.clone();
            let tenant = tenant.clone();
            tasks.push(tokio::spawn(async move {
                let inputs: Vec<(String, serde_json::Value)> = (0..BATCH)
                    .map(|i| {
                        let phone = format!("+1555080{h}{t}{:02}", i / 2);
                        let contact = json!({ "phone_number": phone, "n": i });
                        (phone, contact)
                    })
                    .collect();
                let rows: Vec<_> = inputs
                    .iter()
                    .map(|(phone, contact)| new_sequence(&tenant, phone, contact, None))
                    .collect();
                let mut tx = store.begin().await.unwrap();
                let answers = store.insert_sequences(&mut tx, &rows).await.unwrap();
                tx.commit().await.unwrap();
                (inputs, answers)
            }));
        }
    }
    let mut ids = HashSet::new();
    for task in tasks {
        let (inputs, answers) = task.await.unwrap();
        assert_eq!(answers.len(), inputs.len());
        for (i, ((phone, contact), answer)) in inputs.iter().zip(&answers).enumerate() {
            match answer {
                Some(row) => {
                    assert_eq!(i % 2, 0, "input {i} repeats a running number: refused");
                    assert_eq!(&row.contact, contact, "input {i} answered another's row");
                    assert_eq!(&row.phone_number, phone);
                    assert!(ids.insert(row.id), "id {} assigned twice", row.id);
                    let read = backend
                        .store
                        .get_sequence(tenant.org, row.id)
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(&read.contact, contact, "row {} is not input {i}", row.id);
                }
                None => assert_eq!(i % 2, 1, "input {i} was on a free number"),
            }
        }
    }
    let stored = backend
        .store
        .list_sequences(tenant.org, None, None, 1_000)
        .await
        .unwrap();
    assert_eq!(
        stored.len(),
        HANDLES * TASKS_PER_HANDLE * BATCH / 2,
        "nothing lost"
    );
    assert_eq!(ids.len(), stored.len());
}
