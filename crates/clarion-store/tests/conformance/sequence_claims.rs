//! Due sequences and due encounters claimed by several handles at once: a due sequence is
//! held by one claimer until its claiming transaction ends (it moves the sequence before it
//! commits, so a second claimer finds it no longer due), is free again the moment that
//! transaction commits without moving it or rolls back (a claim is a lock held to commit, not
//! a lease: nothing lingers after a crash); a due encounter is ended by exactly one of the
//! claimers racing to end it (its conditional `UPDATE`).

use std::collections::HashMap;

use clarion_store::{
    EncounterEnd, EncounterId, Millis, RequestedEncounter, SequenceId, SequenceRow, SequenceStatus,
    SequenceUpdate, Store,
};

use crate::{Tenant, backend, encounter_of, enroll, insert_encounter, tenant};

const SEQUENCES: usize = 40;
const HANDLES: usize = 4;
const TASKS_PER_HANDLE: usize = 2;
const ROUNDS: i64 = 5;
/// Each round happens this long after the previous one.
const ROUND_MS: Millis = 1_000;

/// Enrolls `count` sequences (committed), all due at 0; answers their ids.
async fn due_sequences(store: &Store, tenant: &Tenant, count: usize) -> Vec<SequenceId> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        ids.push(enroll(store, tenant, &format!("+1555060{i:04}")).await.id);
    }
    ids
}

/// What the engine writes when a wake leaves a sequence running and due again at `wake`.
fn still_due(wake: Millis, now: Millis) -> SequenceUpdate<'static> {
    SequenceUpdate {
        status: SequenceStatus::Active,
        state: "{}",
        next_wake_at: Some(wake),
        outcome_description: None,
        now,
    }
}

/// One claim of `ids` at `now` in its own committed transaction, without moving anything.
async fn claim(store: &Store, ids: &[SequenceId], now: Millis) -> Vec<SequenceId> {
    let mut tx = store.begin().await.unwrap();
    let claimed = store.claim_due_sequences(&mut tx, ids, now).await.unwrap();
    tx.commit().await.unwrap();
    claimed.iter().map(|s| s.id).collect()
}

/// One wake as the due loop does it: claim `ids` at `now` and, in the same transaction, move
/// every claimed sequence on (due again at `next`).
async fn claim_and_move(
    store: &Store,
    ids: &[SequenceId],
    now: Millis,
    next: Millis,
) -> Vec<SequenceRow> {
    let mut tx = store.begin().await.unwrap();
    let claimed = store.claim_due_sequences(&mut tx, ids, now).await.unwrap();
    let moves: Vec<(SequenceId, SequenceUpdate<'_>)> = claimed
        .iter()
        .map(|s| (s.id, still_due(next, now)))
        .collect();
    store.update_sequences(&mut tx, &moves).await.unwrap();
    tx.commit().await.unwrap();
    claimed
}

/// Every claimer (several tasks on each of several handles) runs the sequences in small
/// windows, each task starting at a different place; answers every claimed id, once per claim.
async fn run_everything(handles: &[Store], ids: &[SequenceId], round: i64) -> Vec<SequenceId> {
    let mut tasks = Vec::new();
    for (h, store) in handles.iter().enumerate() {
        for t in 0..TASKS_PER_HANDLE {
            let store = store.clone();
            let mut order = ids.to_vec();
            order.rotate_left((h * TASKS_PER_HANDLE + t) * 5 % ids.len());
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for window in order.chunks(3) {
                    let now = round * ROUND_MS;
                    let claimed = claim_and_move(&store, window, now, now + ROUND_MS).await;
                    mine.extend(claimed.iter().map(|s| s.id));
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

/// Eight claimers on four handles race for forty due sequences, round after round: each due
/// sequence is run by exactly one of them per round (the claim and the move share one
/// transaction, so no second claimer sees it due), and every one is run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claimers_run_each_due_sequence_exactly_once() {
    let backend = backend().await;
    let tenant = tenant(&backend.store, "sequence claims").await;
    let ids = due_sequences(&backend.store, &tenant, SEQUENCES).await;
    let handles = backend.handles(HANDLES).await;
    for round in 1..=ROUNDS {
        let claimed = run_everything(&handles, &ids, round).await;
        let mut seen = HashMap::<SequenceId, usize>::new();
        for id in &claimed {
            *seen.entry(*id).or_default() += 1;
        }
        let doubles: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            doubles.is_empty(),
            "round {round}: sequences run by two claimers: {doubles:?}"
        );
        assert_eq!(
            seen.len(),
            ids.len(),
            "round {round}: every due sequence is run"
        );
    }
}

/// A claim lasts exactly as long as its transaction. While one handle's claim is open,
/// another handle's claim never gets a sequence the first moves (it waits for the first to
/// end, or skips what the first holds); the moment the first commits, what it left unmoved is
/// due for anyone, and a rolled-back claim frees everything at once. A claim never takes a
/// sequence that is not due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_lasts_as_long_as_its_transaction() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "sequence claim span").await;
    let ids = due_sequences(store, &tenant, 3).await;
    let other = backend.handles(1).await.remove(0);

    let mut tx = store.begin().await.unwrap();
    let claimed = store.claim_due_sequences(&mut tx, &ids, 100).await.unwrap();
    assert_eq!(claimed.iter().map(|s| s.id).collect::<Vec<_>>(), ids);
    let racing = tokio::spawn({
        let (other, ids) = (other.clone(), ids.clone());
        async move { claim(&other, &ids, 100).await }
    });
    store
        .update_sequences(&mut tx, &[(ids[0], still_due(10_000, 100))])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let raced = racing.await.unwrap();
    assert!(
        raced.iter().all(|id| ids[1..].contains(id)),
        "a claim racing an open one got a sequence that one moved: {raced:?}"
    );
    assert_eq!(
        claim(&other, &ids, 200).await,
        ids[1..],
        "what the committed claim left unmoved is due again at once"
    );

    // A claim rolled back frees every sequence at once.
    let mut tx = store.begin().await.unwrap();
    let rolled_back = store
        .claim_due_sequences(&mut tx, &ids, 100_000)
        .await
        .unwrap();
    assert_eq!(rolled_back.len(), 3);
    tx.rollback().await.unwrap();
    assert_eq!(claim(&other, &ids, 100_000).await.len(), 3);

    // Not due: never claimed.
    let mut tx = store.begin().await.unwrap();
    store
        .update_sequences(&mut tx, &[(ids[0], still_due(500_000, 100_000))])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        claim(&other, &ids, 400_000).await,
        ids[1..],
        "the sequence due at 500,000 waits"
    );
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
    let requested: Vec<RequestedEncounter> = ids
        .iter()
        .map(|id| RequestedEncounter {
            id: *id,
            provider_ref: format!("sim-{id}"),
            ends_at: Some(10),
            report: None,
            outcome: Some("resolved".to_owned()),
        })
        .collect();
    store
        .mark_encounters_requested(&mut tx, &requested)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Every handle reads its hint before any of them starts ending encounters.
    let mut hinted = Vec::new();
    for (h, store) in backend.handles(HANDLES).await.into_iter().enumerate() {
        let mut hint = store.due_encounter_ids(20, 1_000).await.unwrap();
        assert_eq!(hint.len(), SEQUENCES, "every encounter is due");
        hint.rotate_left(h * SEQUENCES / HANDLES);
        hinted.push((store, hint));
    }
    let mut tasks = Vec::new();
    for (store, hint) in hinted {
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for window in hint.chunks(4) {
                let mut tx = store.begin().await.unwrap();
                let ends: Vec<EncounterEnd<'_>> = window
                    .iter()
                    .map(|id| EncounterEnd {
                        id: *id,
                        outcome: "resolved",
                        report: None,
                        ended_at: 20,
                    })
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
    let mut wins = HashMap::<EncounterId, usize>::new();
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
