//! Due sequences and due encounters claimed by several handles at once: a due sequence is
//! held by one claimer while its lease is live, is claimed again once the lease expired, and
//! is free again as soon as its claim moved it, released it or rolled back; a due encounter
//! is ended by exactly one of the claimers racing to end it (its conditional `UPDATE`).

use std::collections::HashMap;

use clarion_store::{Millis, SequenceClaim, SequenceRow, SequenceUpdate, Store};

use crate::{Tenant, backend, encounter_of, enroll, insert_encounter, tenant};

const SEQUENCES: usize = 40;
const HANDLES: usize = 4;
const TASKS_PER_HANDLE: usize = 2;
const ROUNDS: i64 = 5;
/// Each round happens this long after the previous one; leases last half of it.
const ROUND_MS: Millis = 1_000;

/// Enrolls `count` sequences (committed), all due at 0; answers their ids.
async fn due_sequences(store: &Store, tenant: &Tenant, count: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        ids.push(enroll(store, tenant, &format!("+1555060{i:04}")).await.id);
    }
    ids
}

/// One claim of `ids` at `now` in its own committed transaction.
async fn claim(store: &Store, owner: &str, ids: &[i64], now: Millis) -> Vec<SequenceRow> {
    let mut tx = store.begin().await.unwrap();
    let claimed = store
        .claim_due_sequences(
            &mut tx,
            ids,
            &SequenceClaim {
                owner,
                now,
                lease_until: now + ROUND_MS / 2,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    claimed
}

/// Every claimer (several tasks on each of several handles) claims the sequences in small
/// windows, each task starting at a different place, until a whole pass over them claims
/// nothing; answers every claimed id, once per claim.
async fn claim_everything(handles: &[Store], ids: &[i64], now: Millis) -> Vec<i64> {
    let mut tasks = Vec::new();
    for (h, store) in handles.iter().enumerate() {
        for t in 0..TASKS_PER_HANDLE {
            let store = store.clone();
            let mut order = ids.to_vec();
            order.rotate_left((h * TASKS_PER_HANDLE + t) * 5 % ids.len());
            tasks.push(tokio::spawn(async move {
                let owner = format!("node{h}-{t}");
                let mut mine = Vec::new();
                for window in order.chunks(3) {
                    mine.extend(
                        claim(&store, &owner, window, now)
                            .await
                            .iter()
                            .map(|s| s.id),
                    );
                }
                mine
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

fn assert_each_claimed_once(claimed: &[i64], ids: &[i64], round: i64) {
    let mut seen = HashMap::<i64, usize>::new();
    for id in claimed {
        *seen.entry(*id).or_default() += 1;
    }
    let doubles: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubles.is_empty(),
        "round {round}: sequences held by two claimers under a live lease: {doubles:?}"
    );
    assert_eq!(
        seen.len(),
        ids.len(),
        "round {round}: every due sequence is claimed"
    );
}

/// Eight claimers on four handles race for forty due sequences: each is held by exactly one.
/// While the leases are live nobody claims anything; once they expired, the next round claims
/// every sequence again, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claimers_never_share_a_live_sequence_lease_and_expired_leases_are_claimed_again() {
    let backend = backend().await;
    let tenant = tenant(&backend.store, "sequence claims").await;
    let ids = due_sequences(&backend.store, &tenant, SEQUENCES).await;
    let handles = backend.handles(HANDLES).await;
    for round in 1..=ROUNDS {
        let claimed = claim_everything(&handles, &ids, round * ROUND_MS).await;
        assert_each_claimed_once(&claimed, &ids, round);
        let again = claim_everything(&handles, &ids, round * ROUND_MS + ROUND_MS / 4).await;
        assert!(
            again.is_empty(),
            "round {round}: claimed under a live lease: {again:?}"
        );
    }
}

/// What the engine writes when a wake leaves a sequence running and due again at `wake`.
fn still_due(wake: Millis, now: Millis) -> SequenceUpdate<'static> {
    SequenceUpdate {
        status: "active",
        state: "{}",
        next_wake_at: Some(wake),
        outcome_description: None,
        now,
    }
}

/// The claim's own write ends its lease: a sequence moved by its claimer (and still due),
/// one released unmoved, and one whose claiming transaction rolled back are each claimable
/// again at once by another handle, long before the lease would have expired. A claim never
/// takes a sequence that is not due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_ends_with_the_write_that_moves_the_sequence_its_release_or_its_rollback() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "sequence leases").await;
    let ids = due_sequences(store, &tenant, 3).await;
    let other = &backend.handles(1).await[0];
    let claim_at = |now| SequenceClaim {
        owner: "first",
        now,
        lease_until: now + 60_000,
    };

    let mut tx = store.begin().await.unwrap();
    let claimed = store
        .claim_due_sequences(&mut tx, &ids, &claim_at(100))
        .await
        .unwrap();
    assert_eq!(claimed.iter().map(|s| s.id).collect::<Vec<_>>(), ids);
    // Moved (still due), released unmoved, and the third left leased.
    store
        .update_sequences(&mut tx, &[(ids[0], still_due(0, 100))])
        .await
        .unwrap();
    store
        .release_sequence_leases(&mut tx, &ids[1..2])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let again: Vec<i64> = claim(other, "second", &ids, 200)
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        again,
        ids[..2],
        "moved and released are free; the third is leased"
    );

    // A claim rolled back leaves no lease.
    let mut tx = store.begin().await.unwrap();
    let rolled_back = store
        .claim_due_sequences(&mut tx, &ids, &claim_at(100_000))
        .await
        .unwrap();
    assert_eq!(rolled_back.len(), 3, "every lease has expired by then");
    tx.rollback().await.unwrap();
    assert_eq!(claim(other, "second", &ids, 100_000).await.len(), 3);

    // Not due: never claimed.
    let mut tx = store.begin().await.unwrap();
    store
        .update_sequences(&mut tx, &[(ids[0], still_due(500_000, 100_000))])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let later: Vec<i64> = claim(other, "second", &ids, 400_000)
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(later, ids[1..], "the sequence due at 500,000 waits");
}

/// Several handles race to end the same due encounters (requested, outcome known, end
/// passed). Each works from the ids it read outside any transaction (a hint, as the due loop
/// reads them), so on a backend without one writer its view may be stale: what decides is the
/// conditional `end_encounters` (`status != 'ended'`) in its own transaction. Every encounter
/// is ended by exactly one of them, so exactly one moves its sequence on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_enders_end_each_due_encounter_exactly_once() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "encounter ends").await;
    let mut ids = Vec::new();
    for i in 0..SEQUENCES {
        let sequence = enroll(store, &tenant, &format!("+1555070{i:04}")).await;
        ids.push(insert_encounter(store, &encounter_of(&tenant, &sequence, 0, 0)).await);
    }
    let mut tx = store.begin().await.unwrap();
    let requested: Vec<_> = ids
        .iter()
        .map(|id| {
            (
                *id,
                format!("sim-{id}"),
                Some(10),
                None,
                Some("resolved".to_owned()),
            )
        })
        .collect();
    store
        .mark_encounters_requested(&mut tx, &requested)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let handles = backend.handles(HANDLES).await;
    let mut tasks = Vec::new();
    for (h, store) in handles.into_iter().enumerate() {
        let mut hint = store.due_encounter_ids(20, 1_000).await.unwrap();
        assert_eq!(hint.len(), SEQUENCES, "every encounter is due");
        hint.rotate_left(h * SEQUENCES / HANDLES);
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for window in hint.chunks(4) {
                let mut tx = store.begin().await.unwrap();
                let ends: Vec<(i64, &str, Option<&serde_json::Value>, Millis)> = window
                    .iter()
                    .map(|id| (*id, "resolved", None, 20))
                    .collect();
                let ended = store.end_encounters(&mut tx, &ends).await.unwrap();
                won.extend(
                    window
                        .iter()
                        .zip(ended)
                        .filter(|(_, e)| *e)
                        .map(|(id, _)| *id),
                );
                tx.commit().await.unwrap();
            }
            won
        }));
    }
    let mut wins = HashMap::<i64, usize>::new();
    for task in tasks {
        for id in task.await.unwrap() {
            *wins.entry(id).or_default() += 1;
        }
    }
    for id in &ids {
        assert_eq!(
            wins.get(id),
            Some(&1),
            "encounter {id} ended {:?} times",
            wins.get(id)
        );
    }
}
