//! Encounter claims (the last check before a provider request): racing claimers on separate
//! handles, exactly one wins per encounter; a withdrawal never removes an encounter that was
//! claimed and requested, and a cancel's sweep never removes a claimed one.

use std::collections::HashMap;

use clarion_store::{Channel, EncounterId, EncounterStatus, RequestedEncounter, Store};

use crate::{Tenant, backend, encounter_of, enroll, insert_encounter, tenant};

const ENCOUNTERS: usize = 30;
const HANDLES: usize = 4;

/// Enrolls `count` sequences and commits one encounter each; answers their ids.
async fn encounters(store: &Store, tenant: &Tenant, count: usize) -> Vec<EncounterId> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let sequence = enroll(store, tenant, &format!("+1555020{i:04}")).await;
        ids.push(insert_encounter(store, &encounter_of(tenant, &sequence, 0, 0)).await);
    }
    ids
}

/// One task per handle tries to claim every encounter, each claim in its own transaction:
/// each encounter is won exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claimers_win_each_encounter_exactly_once() {
    let backend = backend().await;
    let tenant = tenant(&backend.store, "encounter claims").await;
    let ids = encounters(&backend.store, &tenant, ENCOUNTERS).await;
    let handles = backend.handles(HANDLES).await;

    let mut tasks = Vec::new();
    for (h, store) in handles.into_iter().enumerate() {
        let mut order = ids.clone();
        // Different orders, so that claimers meet on different encounters.
        order.rotate_left(h * ENCOUNTERS / HANDLES);
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for id in order {
                let mut tx = store.begin().await.unwrap();
                if store.claim_encounter(&mut tx, id, 100).await.unwrap() {
                    won.push(id);
                }
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
            "encounter {id} won {:?} times",
            wins.get(id)
        );
        let row = backend.store.encounter_by_id(*id).await.unwrap().unwrap();
        assert_eq!(row.claimed_at, Some(100));
    }
    assert!(
        backend
            .store
            .unclaimed_encounter_ids(&[Channel::Call], 100)
            .await
            .unwrap()
            .is_empty(),
        "a claimed encounter leaves the provider worker's queue"
    );
}

/// A claimer (claim, then mark requested, in one transaction) races a withdrawal of the same
/// encounter on another handle. Exactly one wins: either the encounter is requested and still
/// there, or it was withdrawn before any claim; never claimed-and-requested and then removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_withdrawal_never_removes_a_claimed_and_requested_encounter() {
    let backend = backend().await;
    let tenant = tenant(&backend.store, "withdraw").await;
    let ids = encounters(&backend.store, &tenant, ENCOUNTERS).await;
    let handles = backend.handles(2).await;

    let claimer = {
        let store = handles[0].clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut requested = Vec::new();
            for id in ids {
                let mut tx = store.begin().await.unwrap();
                if store.claim_encounter(&mut tx, id, 100).await.unwrap() {
                    store
                        .mark_encounters_requested(
                            &mut tx,
                            &[RequestedEncounter {
                                id,
                                provider_ref: format!("call-{id}"),
                                ends_at: Some(1_000),
                                report: None,
                                outcome: None,
                            }],
                        )
                        .await
                        .unwrap();
                    requested.push(id);
                }
                tx.commit().await.unwrap();
            }
            requested
        })
    };
    let withdrawer = {
        let store = handles[1].clone();
        let mut ids = ids.clone();
        ids.reverse();
        tokio::spawn(async move {
            let mut withdrawn = Vec::new();
            for id in ids {
                let mut tx = store.begin().await.unwrap();
                if store.withdraw_encounter(&mut tx, id).await.unwrap() {
                    withdrawn.push(id);
                }
                tx.commit().await.unwrap();
            }
            withdrawn
        })
    };
    let requested = claimer.await.unwrap();
    let withdrawn = withdrawer.await.unwrap();

    for id in &ids {
        let row = backend.store.encounter_by_id(*id).await.unwrap();
        match (requested.contains(id), withdrawn.contains(id)) {
            (true, false) => {
                let row = row.expect("a requested encounter stays");
                assert_eq!(row.status, EncounterStatus::Requested);
            }
            (false, true) => assert!(row.is_none(), "withdrawn"),
            (r, w) => panic!("encounter {id}: requested {r}, withdrawn {w}"),
        }
    }
    // Once requested, a withdrawal does nothing.
    for id in &requested {
        let mut tx = backend.store.begin().await.unwrap();
        assert!(
            !backend
                .store
                .withdraw_encounter(&mut tx, *id)
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
    }
}

/// A cancel's sweep (`withdraw_unclaimed_encounters`) races claimers: an encounter is either
/// claimed (and stays) or swept (and was never claimed), never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancels_sweep_never_removes_a_claimed_encounter() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "sweep").await;
    // One sequence with many step attempts: the sweep is per sequence.
    let sequence = enroll(store, &tenant, "+15550300").await;
    let mut ids = Vec::new();
    for attempt in 0..i64::try_from(ENCOUNTERS).unwrap() {
        ids.push(insert_encounter(store, &encounter_of(&tenant, &sequence, attempt, 0)).await);
    }
    let handles = backend.handles(HANDLES).await;

    let mut claimers = Vec::new();
    for store in &handles[1..] {
        let store = store.clone();
        let ids = ids.clone();
        claimers.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for id in ids {
                let mut tx = store.begin().await.unwrap();
                if store.claim_encounter(&mut tx, id, 100).await.unwrap() {
                    won.push(id);
                }
                tx.commit().await.unwrap();
            }
            won
        }));
    }
    let sweeper = {
        let store = handles[0].clone();
        tokio::spawn(async move {
            let mut swept = Vec::new();
            for _ in 0..5 {
                let mut tx = store.begin().await.unwrap();
                swept.extend(
                    store
                        .withdraw_unclaimed_encounters(&mut tx, sequence.id)
                        .await
                        .unwrap(),
                );
                tx.commit().await.unwrap();
                tokio::task::yield_now().await;
            }
            swept
        })
    };
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap());
    }
    let swept = sweeper.await.unwrap();
    for id in &ids {
        let row = store.encounter_by_id(*id).await.unwrap();
        match (
            claimed.iter().filter(|c| *c == id).count(),
            swept.contains(id),
        ) {
            (1, false) => assert!(row.unwrap().claimed_at.is_some()),
            (0, true) => assert!(row.is_none()),
            (c, s) => panic!("encounter {id}: claimed {c} times, swept {s}"),
        }
    }
}

/// An SMS encounter's opening text is "in flight" from its claim to the record of the
/// provider's answer, and only for its number and its sender (or an unrecorded sender).
#[tokio::test]
async fn an_sms_opening_is_in_flight_from_its_claim_to_its_record() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "sms openings").await;
    let sequence = enroll(store, &tenant, "+15550207777").await;
    let mut row = encounter_of(&tenant, &sequence, 0, 0);
    row.channel = Channel::Sms;
    let id = insert_encounter(store, &row).await;
    let in_flight = |number: &'static str, senders: &'static [&'static str]| async move {
        store.sms_opening_in_flight(number, senders).await.unwrap()
    };
    assert!(
        !in_flight("+15550207777", &["+15550000001"]).await,
        "not claimed yet"
    );

    let mut tx = store.begin().await.unwrap();
    assert!(store.claim_encounter(&mut tx, id, 10).await.unwrap());
    store
        .set_encounter_sender(&mut tx, id, "+15550000001")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(in_flight("+15550207777", &["+15550000001"]).await);
    assert!(
        !in_flight("+15550207777", &["+15550000002"]).await,
        "another sender"
    );
    assert!(
        !in_flight("+15550208888", &["+15550000001"]).await,
        "another number"
    );

    let mut tx = store.begin().await.unwrap();
    store
        .mark_encounters_requested(&mut tx, &[requested_text(id, "SM1", 1_000)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        !in_flight("+15550207777", &["+15550000001"]).await,
        "recorded"
    );
}

/// Two texts from one patient handled at once (a reply that ends the conversation and a
/// STOP): the conversation read in a transaction stays locked to its commit, so the second
/// reader waits and then finds it ended, never acting on a conversation the first ended (the
/// STOP would be lost: it suppresses only when it finds no conversation or ends one itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_sms_conversation_read_in_a_transaction_is_held_until_its_commit() {
    let backend = backend().await;
    let store = &backend.store;
    let other = backend.handles(1).await.remove(0);
    let tenant = tenant(store, "sms routing").await;
    let sequence = enroll(store, &tenant, "+15550206666").await;
    let mut row = encounter_of(&tenant, &sequence, 0, 0);
    row.channel = Channel::Sms;
    let id = insert_encounter(store, &row).await;
    let mut tx = store.begin().await.unwrap();
    assert!(store.claim_encounter(&mut tx, id, 10).await.unwrap());
    store
        .set_encounter_sender(&mut tx, id, "+15550000001")
        .await
        .unwrap();
    store
        .mark_encounters_requested(&mut tx, &[requested_text(id, "SM2", 1_000_000)])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The first text reads the conversation in its transaction...
    let mut first = store.begin().await.unwrap();
    let open = store
        .open_sms_conversations(Some(&mut first), "+15550206666", &["+15550000001"])
        .await
        .unwrap();
    assert_eq!(open.iter().map(|e| e.id).collect::<Vec<_>>(), vec![id]);
    // ...while the second, on another handle, reads it too.
    let mut second = tokio::spawn(async move {
        let mut tx = other.begin().await.unwrap();
        let open = other
            .open_sms_conversations(Some(&mut tx), "+15550206666", &["+15550000001"])
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        open
    });
    // Give the second every chance to read past the first (a bounded wait for something
    // that must not happen), then end the conversation and commit.
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut second).await;
    assert!(
        early.is_err(),
        "the second read did not wait for the first: {early:?}"
    );
    assert!(
        store
            .end_encounter(&mut first, id, "resolved", None, 2_000)
            .await
            .unwrap()
    );
    first.commit().await.unwrap();
    let seen_by_second = second.await.unwrap();
    assert!(
        seen_by_second.is_empty(),
        "the second read returned a conversation the first ended: {seen_by_second:?}"
    );
}

/// An SMS encounter's opening text as recorded once the provider accepted it (`sid`), its
/// conversation timing out at `ends_at`.
fn requested_text(id: clarion_store::EncounterId, sid: &str, ends_at: i64) -> RequestedEncounter {
    RequestedEncounter {
        id,
        provider_ref: sid.to_owned(),
        ends_at: Some(ends_at),
        report: None,
        outcome: None,
    }
}
