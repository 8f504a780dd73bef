//! The provider capacity governor's store contract: slots in use are the encounters claimed
//! and not ended; a claim that counts the slots in its own transaction never takes more than
//! there are, however many claimers race on separate handles; each wait is answered (and so
//! recorded) once; the queue comes round robin over organisations; a re-queue puts back only
//! an encounter still under the provider reference that was refused.

use std::collections::HashMap;

use clarion_store::{Channel, EncounterId, EncounterStatus, RequestedEncounter, Store};

use crate::{Tenant, backend, encounter_of, enroll, insert_encounter, tenant};

/// Enrolls `count` sequences of `tenant` and commits one call encounter each.
async fn calls(store: &Store, tenant: &Tenant, prefix: &str, count: usize) -> Vec<EncounterId> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let sequence = enroll(store, tenant, &format!("{prefix}{i:04}")).await;
        ids.push(insert_encounter(store, &encounter_of(tenant, &sequence, 0, 0)).await);
    }
    ids
}

const SLOTS: u64 = 5;

/// Four handles race to claim 40 queued calls, each claim counting the slots in use in its
/// own transaction first: never more than `SLOTS` are claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_that_count_slots_first_never_take_more_than_there_are() {
    let backend = backend().await;
    let tenant = tenant(&backend.store, "slots").await;
    let ids = calls(&backend.store, &tenant, "+1555030", 40).await;
    let handles = backend.handles(4).await;
    let mut tasks = Vec::new();
    for (h, store) in handles.into_iter().enumerate() {
        let mut order = ids.clone();
        order.rotate_left(h * 10);
        tasks.push(tokio::spawn(async move {
            let mut won = 0;
            for id in order {
                let mut tx = store.begin().await.unwrap();
                let in_use = store
                    .provider_slots_in_use(&mut tx, Channel::Call)
                    .await
                    .unwrap();
                if in_use < SLOTS && store.claim_encounter(&mut tx, id, 100).await.unwrap() {
                    won += 1;
                }
                tx.commit().await.unwrap();
            }
            won
        }));
    }
    let mut won = 0;
    for task in tasks {
        won += task.await.unwrap();
    }
    assert_eq!(won, SLOTS, "exactly the free slots were taken");
    let load = backend.store.provider_load(Channel::Call).await.unwrap();
    assert_eq!(load.in_use(), SLOTS);
    assert_eq!(load.in_use_by_org, vec![(tenant.org, SLOTS)]);
}

/// An encounter holds its slot from its claim until it ends; unclaimed ones hold none.
#[tokio::test]
async fn a_slot_is_held_from_the_claim_until_the_encounter_ends() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "held").await;
    let ids = calls(store, &tenant, "+1555031", 3).await;
    let in_use = || async { store.provider_load(Channel::Call).await.unwrap().in_use() };
    assert_eq!(in_use().await, 0, "queued calls hold no slot");
    let mut tx = store.begin().await.unwrap();
    assert!(store.claim_encounter(&mut tx, ids[0], 100).await.unwrap());
    assert!(store.claim_encounter(&mut tx, ids[1], 100).await.unwrap());
    store
        .mark_encounters_requested(
            &mut tx,
            &[RequestedEncounter {
                id: ids[1],
                provider_ref: "call-1".to_owned(),
                ends_at: Some(1_000),
                report: None,
                outcome: None,
            }],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(in_use().await, 2, "claimed and requested calls hold slots");
    let mut tx = store.begin().await.unwrap();
    store
        .end_encounter(&mut tx, ids[1], "resolved", None, 200)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(in_use().await, 1, "an ended call frees its slot");
    assert_eq!(
        store.provider_load(Channel::Sms).await.unwrap().in_use(),
        0,
        "slots are per channel"
    );
}

/// Two handles race to record the waits of the same queue: each encounter is answered once,
/// and `except` is never marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_wait_is_answered_once() {
    let backend = backend().await;
    let tenant = tenant(&backend.store, "waits").await;
    let ids = calls(&backend.store, &tenant, "+1555032", 30).await;
    let except = vec![ids[0]];
    let handles = backend.handles(2).await;
    let mut tasks = Vec::new();
    for store in handles {
        let except = except.clone();
        tasks.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            for _ in 0..5 {
                let mut tx = store.begin().await.unwrap();
                let waits = store
                    .mark_capacity_waits(&mut tx, Channel::Call, &except, 100)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                answered.extend(waits.into_iter().map(|w| w.id));
            }
            answered
        }));
    }
    let mut counts = HashMap::<EncounterId, usize>::new();
    for task in tasks {
        for id in task.await.unwrap() {
            *counts.entry(id).or_default() += 1;
        }
    }
    assert!(!counts.contains_key(&ids[0]), "`except` is not waiting");
    for id in &ids[1..] {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "encounter {id} answered {:?} times",
            counts.get(id)
        );
    }
    let load = backend.store.provider_load(Channel::Call).await.unwrap();
    assert_eq!(load.waiting, 29);
}

/// The queue comes round robin over organisations, each in due (id) order, at most
/// `per_org` each.
#[tokio::test]
async fn the_queue_comes_round_robin_over_organisations() {
    let backend = backend().await;
    let store = &backend.store;
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let a_ids = calls(store, &a, "+1555033", 4).await;
    let b_ids = calls(store, &b, "+1555034", 2).await;
    let queued = store.queued_encounters(Channel::Call, 3).await.unwrap();
    let order: Vec<EncounterId> = queued.iter().map(|q| q.id).collect();
    assert_eq!(
        order,
        vec![a_ids[0], b_ids[0], a_ids[1], b_ids[1], a_ids[2]]
    );
    assert_eq!(queued[2].rank_in_org, 1);
    assert_eq!(queued[2].org_id, a.org);
}

/// A re-queue puts back a claimed encounter with no outcome, only under the provider
/// reference that was refused; it is then queued (unclaimed) and waiting.
#[tokio::test]
async fn a_requeue_puts_back_only_the_refused_encounter() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "requeue").await;
    let ids = calls(store, &tenant, "+1555035", 3).await;
    let mut tx = store.begin().await.unwrap();
    for id in &ids {
        assert!(store.claim_encounter(&mut tx, *id, 100).await.unwrap());
    }
    store
        .mark_encounters_requested(
            &mut tx,
            &[RequestedEncounter {
                id: ids[1],
                provider_ref: "call-refused".to_owned(),
                ends_at: Some(1_000),
                report: None,
                outcome: None,
            }],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    // Refused at request time (no reference recorded).
    assert!(
        store
            .requeue_encounter(&mut tx, ids[0], None, 200)
            .await
            .unwrap()
            .is_some()
    );
    // Reported refused under another reference than the one recorded: left alone.
    assert!(
        store
            .requeue_encounter(&mut tx, ids[1], Some("call-other"), 200)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .requeue_encounter(&mut tx, ids[1], Some("call-refused"), 200)
            .await
            .unwrap()
            .is_some()
    );
    tx.commit().await.unwrap();
    for id in &ids[..2] {
        let row = store.encounter_by_id(*id).await.unwrap().unwrap();
        assert_eq!(row.status, EncounterStatus::Created);
        assert_eq!(row.claimed_at, None);
        assert_eq!(row.provider_ref, None);
    }
    let queued: Vec<EncounterId> = store
        .queued_encounters(Channel::Call, 10)
        .await
        .unwrap()
        .iter()
        .map(|q| q.id)
        .collect();
    assert_eq!(queued, ids[..2].to_vec());
    assert_eq!(store.provider_load(Channel::Call).await.unwrap().waiting, 2);

    // An ended encounter is never put back.
    let mut tx = store.begin().await.unwrap();
    store
        .end_encounter(&mut tx, ids[2], "failed", None, 300)
        .await
        .unwrap();
    assert!(
        store
            .requeue_encounter(&mut tx, ids[2], None, 300)
            .await
            .unwrap()
            .is_none()
    );
    tx.commit().await.unwrap();
}
