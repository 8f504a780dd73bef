//! Caller numbers: the organisation's resource (unique per organisation and channel, patched
//! field by field, another organisation's not found), the operator's allow-list (a number and
//! a provider id allowed to one organisation only), and the claim's choice — the enabled
//! numbers still allowed, with their contacts of the window, the choice recorded on the
//! encounter — with racing choosers on separate handles never taking a number past its cap.
//! A record repeated after its commit's answer was lost (a database outage) changes nothing:
//! the mark and the choice apply only to an encounter still `created`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clarion_store::{
    CallerNumber, CallerNumberPatch, Channel, EncounterId, EncounterStatus, NewCallerNumber, OrgId,
    RequestedEncounter, Store, StoreError,
};

use crate::{backend, encounter_of, enroll, insert_encounter, tenant};

fn call_number<'a>(number: &'a str, daily_cap: Option<u32>) -> NewCallerNumber<'a> {
    NewCallerNumber {
        channel: Channel::Call,
        number,
        provider_id: Some("pn_1"),
        daily_cap,
        enabled: true,
    }
}

async fn create(store: &Store, org: OrgId, new: &NewCallerNumber<'_>) -> CallerNumber {
    store.create_caller_number(org, new, 10).await.unwrap()
}

/// What the operator and then the organisation do: allow the number with its provider id,
/// then create it.
async fn allow_and_create(store: &Store, org: OrgId, new: &NewCallerNumber<'_>) -> CallerNumber {
    store
        .allow_caller_number(org, new.channel, new.number, new.provider_id, 5)
        .await
        .unwrap();
    create(store, org, new).await
}

#[tokio::test]
async fn a_number_and_a_provider_id_are_allowed_to_one_organisation_only() {
    let backend = backend().await;
    let store = &backend.store;
    let a = store.create_org("a", 0).await.unwrap().id;
    let b = store.create_org("b", 0).await.unwrap().id;
    let number = "+12125550100";
    assert_eq!(
        store
            .allowed_caller_number(a, Channel::Call, number)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .allow_caller_number(a, Channel::Call, number, Some("pn_a"), 5)
            .await
            .unwrap()
    );
    assert!(
        !store
            .allow_caller_number(a, Channel::Call, number, Some("pn_a"), 6)
            .await
            .unwrap(),
        "allowed again as it is: nothing changes"
    );
    store
        .allow_caller_number(a, Channel::Sms, number, None, 7)
        .await
        .unwrap();
    store
        .allow_caller_number(a, Channel::Call, "+13125550100", Some("pn_a2"), 8)
        .await
        .unwrap();
    let allowed = store.allowed_caller_numbers(a).await.unwrap();
    let listed: Vec<_> = allowed
        .iter()
        .map(|n| {
            (
                n.org_id,
                n.channel,
                n.number.as_str(),
                n.provider_id.as_deref(),
                n.added_at,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (a, Channel::Call, number, Some("pn_a"), 5),
            (a, Channel::Call, "+13125550100", Some("pn_a2"), 8),
            (a, Channel::Sms, number, None, 7),
        ],
        "by channel, then number"
    );
    assert_eq!(
        store
            .allowed_caller_number(a, Channel::Call, number)
            .await
            .unwrap()
            .as_ref(),
        Some(&allowed[0])
    );

    // Another organisation can be allowed neither the number (on that channel) nor the
    // provider id: a typed conflict, and nothing of it is written.
    for (channel, number, provider_id) in [
        (Channel::Call, number, Some("pn_b")),
        (Channel::Sms, number, None),
        (Channel::Call, "+14155550100", Some("pn_a")),
    ] {
        assert!(
            matches!(
                store
                    .allow_caller_number(b, channel, number, provider_id, 9)
                    .await,
                Err(StoreError::Conflict)
            ),
            "{channel:?} {number} {provider_id:?}"
        );
    }
    assert!(
        matches!(
            store
                .allow_caller_number(a, Channel::Call, "+14155550100", Some("pn_a2"), 9)
                .await,
            Err(StoreError::Conflict)
        ),
        "one provider id, one number"
    );
    assert!(
        matches!(
            store
                .allow_caller_number(OrgId(999_999), Channel::Sms, "+14155550199", None, 9)
                .await,
            Err(StoreError::Conflict)
        ),
        "an unknown organisation"
    );
    assert!(store.allowed_caller_numbers(b).await.unwrap().is_empty());
    assert_eq!(
        store
            .allowed_caller_number(b, Channel::Call, number)
            .await
            .unwrap(),
        None,
        "another organisation's allowance is not this one's"
    );
    assert!(
        !store
            .disallow_caller_number(b, Channel::Call, number)
            .await
            .unwrap(),
        "nor can it be taken off by another organisation"
    );
    // The same provider id on the other channel is another id space.
    store
        .allow_caller_number(b, Channel::Sms, "+14155550100", Some("pn_a"), 9)
        .await
        .unwrap();

    // A new provider id for an allowed number: the organisation's caller number follows.
    let caller = create(
        store,
        a,
        &NewCallerNumber {
            provider_id: Some("pn_a"),
            ..call_number(number, None)
        },
    )
    .await;
    assert!(
        store
            .allow_caller_number(a, Channel::Call, number, Some("pn_new"), 10)
            .await
            .unwrap()
    );
    let now = store
        .get_caller_number(a, caller.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (now.provider_id.as_deref(), now.updated_at),
        (Some("pn_new"), 10)
    );
    // Its old id is free again, for anyone.
    store
        .allow_caller_number(b, Channel::Call, "+14155550101", Some("pn_a"), 11)
        .await
        .unwrap();

    // Taken off, the number is free for another organisation; the caller number stays.
    assert!(
        store
            .disallow_caller_number(a, Channel::Call, number)
            .await
            .unwrap()
    );
    assert!(
        !store
            .disallow_caller_number(a, Channel::Call, number)
            .await
            .unwrap()
    );
    assert!(
        store
            .get_caller_number(a, caller.id)
            .await
            .unwrap()
            .is_some()
    );
    store
        .allow_caller_number(b, Channel::Call, number, Some("pn_new"), 12)
        .await
        .unwrap();
    assert_eq!(store.allowed_caller_numbers(a).await.unwrap().len(), 2);
}

#[tokio::test]
async fn only_numbers_still_allowed_with_their_allowed_provider_id_are_offered_for_choice() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "allowed").await;
    let org = tenant.org;
    let kept = allow_and_create(store, org, &call_number("+12125550100", None)).await;
    let dropped = allow_and_create(
        store,
        org,
        &NewCallerNumber {
            provider_id: Some("pn_2"),
            ..call_number("+13125550100", None)
        },
    )
    .await;
    // Never allowed; and allowed with another provider id than the caller number's.
    create(
        store,
        org,
        &NewCallerNumber {
            provider_id: Some("pn_3"),
            ..call_number("+14155550100", None)
        },
    )
    .await;
    store
        .allow_caller_number(org, Channel::Call, "+16175550100", Some("pn_allowed"), 5)
        .await
        .unwrap();
    create(
        store,
        org,
        &NewCallerNumber {
            provider_id: Some("pn_other"),
            ..call_number("+16175550100", None)
        },
    )
    .await;
    // A text number allowed without a provider id keeps its own.
    store
        .allow_caller_number(org, Channel::Sms, "+12125550100", None, 5)
        .await
        .unwrap();
    let texts = create(
        store,
        org,
        &NewCallerNumber {
            channel: Channel::Sms,
            provider_id: Some("MG_informational"),
            ..call_number("+12125550100", None)
        },
    )
    .await;
    let offered = |channel| async move {
        let mut tx = store.begin().await.unwrap();
        let numbers = store
            .caller_numbers_for_choice(&mut tx, org, channel, EncounterId(0), 0)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        numbers.into_iter().map(|n| n.number.id).collect::<Vec<_>>()
    };
    assert_eq!(offered(Channel::Call).await, [kept.id, dropped.id]);
    assert_eq!(offered(Channel::Sms).await, [texts.id]);
    assert!(
        store
            .disallow_caller_number(org, Channel::Call, "+13125550100")
            .await
            .unwrap()
    );
    assert_eq!(
        offered(Channel::Call).await,
        [kept.id],
        "taken off the allow-list, a number is no longer chosen"
    );
}

#[tokio::test]
async fn caller_numbers_are_unique_per_organisation_and_channel_and_patched_field_by_field() {
    let backend = backend().await;
    let store = &backend.store;
    let a = store.create_org("a", 0).await.unwrap().id;
    let b = store.create_org("b", 0).await.unwrap().id;
    let first = create(store, a, &call_number("+12125550100", Some(5))).await;
    assert_eq!(
        (first.org_id, first.channel, first.daily_cap, first.enabled),
        (a, Channel::Call, Some(5), true)
    );
    assert_eq!(first.provider_id.as_deref(), Some("pn_1"));
    assert_eq!(first.last_chosen_at, None);
    assert!(matches!(
        store
            .create_caller_number(a, &call_number("+12125550100", None), 11)
            .await,
        Err(StoreError::Conflict)
    ));
    // The same number for texts, or for another organisation, is another caller number.
    let sms = NewCallerNumber {
        channel: Channel::Sms,
        provider_id: None,
        ..call_number("+12125550100", None)
    };
    let texts = create(store, a, &sms).await;
    create(store, b, &call_number("+12125550100", None)).await;

    assert_eq!(store.get_caller_number(b, first.id).await.unwrap(), None);
    assert_eq!(
        store.get_caller_number(a, first.id).await.unwrap().as_ref(),
        Some(&first)
    );
    let page = store.list_caller_numbers(a, None, 1).await.unwrap();
    assert_eq!(page, std::slice::from_ref(&first));
    let rest = store
        .list_caller_numbers(a, Some(first.id), 10)
        .await
        .unwrap();
    assert_eq!(rest, std::slice::from_ref(&texts));

    let patch = CallerNumberPatch {
        daily_cap: Some(None),
        enabled: Some(false),
        ..CallerNumberPatch::default()
    };
    assert_eq!(
        store
            .update_caller_number(b, first.id, &patch, 20)
            .await
            .unwrap(),
        None,
        "another organisation's number is not changed"
    );
    let changed = store
        .update_caller_number(a, first.id, &patch, 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            changed.daily_cap,
            changed.enabled,
            changed.provider_id.as_deref(),
            changed.updated_at
        ),
        (None, false, Some("pn_1"), 20),
        "absent fields stay as they were"
    );
    let patch = CallerNumberPatch {
        provider_id: Some(Some("pn_2".to_owned())),
        daily_cap: Some(Some(3)),
        ..CallerNumberPatch::default()
    };
    let changed = store
        .update_caller_number(a, first.id, &patch, 30)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            changed.daily_cap,
            changed.enabled,
            changed.provider_id.as_deref()
        ),
        (Some(3), false, Some("pn_2"))
    );

    assert!(
        store
            .is_caller_number(Channel::Sms, "+12125550100")
            .await
            .unwrap()
    );
    assert!(
        !store
            .is_caller_number(Channel::Sms, "+12125550199")
            .await
            .unwrap()
    );
    assert!(!store.delete_caller_number(b, texts.id).await.unwrap());
    assert!(store.delete_caller_number(a, texts.id).await.unwrap());
    assert!(
        !store
            .is_caller_number(Channel::Sms, "+12125550100")
            .await
            .unwrap()
    );
}

/// The simulator's batch and a provider's answer are recorded again when the database went
/// away before their commit answered; if that commit went through, the second record must
/// leave the encounter as the first left it.
#[tokio::test]
async fn a_repeated_record_marks_nothing_and_changes_no_caller_number() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "repeated record").await;
    let first = allow_and_create(store, tenant.org, &call_number("+18085550110", None)).await;
    let second = allow_and_create(
        store,
        tenant.org,
        &NewCallerNumber {
            provider_id: Some("pn_2"),
            ..call_number("+12125550110", None)
        },
    )
    .await;
    let sequence = enroll(store, &tenant, "+18085550124").await;
    let encounter = insert_encounter(store, &encounter_of(&tenant, &sequence, 0, 0)).await;
    let requested = |provider_ref: &str| RequestedEncounter {
        id: encounter,
        provider_ref: provider_ref.to_owned(),
        ends_at: Some(1_000),
        report: None,
        outcome: Some("resolved".to_owned()),
    };

    let mut tx = store.begin().await.unwrap();
    store
        .record_caller_number_choice(&mut tx, encounter, &first, 100)
        .await
        .unwrap();
    let marked = store
        .mark_encounters_requested(&mut tx, &[requested("sim_1")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(marked, 1, "the first record marks the encounter");

    let mut tx = store.begin().await.unwrap();
    store
        .record_caller_number_choice(&mut tx, encounter, &second, 200)
        .await
        .unwrap();
    let marked = store
        .mark_encounters_requested(&mut tx, &[requested("sim_2")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(marked, 0, "a repeated record marks nothing");

    let row = store.encounter_by_id(encounter).await.unwrap().unwrap();
    assert_eq!(row.status, EncounterStatus::Requested);
    assert_eq!(row.provider_ref.as_deref(), Some("sim_1"));
    let chosen = row.caller_number.unwrap();
    assert_eq!(
        (chosen.id, chosen.number.as_str()),
        (first.id, "+18085550110"),
        "the number the encounter went out from is kept"
    );
    let untouched = store
        .get_caller_number(tenant.org, second.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        untouched.last_chosen_at, None,
        "the round robin does not count a choice that was not recorded"
    );
}

#[tokio::test]
async fn a_choice_is_recorded_on_the_encounter_and_counted_in_its_numbers_window() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "choice").await;
    let capped = allow_and_create(store, tenant.org, &call_number("+18085550100", Some(2))).await;
    let open = allow_and_create(
        store,
        tenant.org,
        &NewCallerNumber {
            provider_id: Some("pn_2"),
            ..call_number("+12125550100", None)
        },
    )
    .await;
    let disabled = NewCallerNumber {
        enabled: false,
        provider_id: Some("pn_3"),
        ..call_number("+13125550100", None)
    };
    allow_and_create(store, tenant.org, &disabled).await;
    let sequence = enroll(store, &tenant, "+18085550123").await;
    let first = insert_encounter(store, &encounter_of(&tenant, &sequence, 1, 0)).await;
    let second = insert_encounter(store, &encounter_of(&tenant, &sequence, 2, 0)).await;

    let mut tx = store.begin().await.unwrap();
    let numbers = store
        .caller_numbers_for_choice(&mut tx, tenant.org, Channel::Call, first, 0)
        .await
        .unwrap();
    let ids: Vec<_> = numbers.iter().map(|n| n.number.id).collect();
    assert_eq!(ids, [capped.id, open.id], "the enabled numbers, by id");
    assert!(numbers.iter().all(|n| n.uses.is_empty()));
    store
        .record_caller_number_choice(&mut tx, first, &capped, 100)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert!(
        store
            .is_caller_number(Channel::Call, "+13125550100")
            .await
            .unwrap(),
        "a disabled number is still one of ours"
    );
    let recorded = store.encounter_by_id(first).await.unwrap().unwrap();
    let chosen = recorded.caller_number.unwrap();
    assert_eq!(
        (
            chosen.id,
            chosen.number.as_str(),
            chosen.provider_id.as_deref()
        ),
        (capped.id, "+18085550100", Some("pn_1"))
    );
    let number = store
        .get_caller_number(tenant.org, capped.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(number.last_chosen_at, Some(100));

    let uses = |encounter: EncounterId, since| async move {
        let mut tx = store.begin().await.unwrap();
        let numbers = store
            .caller_numbers_for_choice(&mut tx, tenant.org, Channel::Call, encounter, since)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        numbers
            .into_iter()
            .map(|n| (n.number.id, n.uses))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        uses(second, 50).await,
        [(capped.id, vec![100]), (open.id, vec![])],
        "only a capped number's contacts are read"
    );
    assert_eq!(
        uses(second, 101).await,
        [(capped.id, vec![]), (open.id, vec![])]
    );
    assert_eq!(
        uses(first, 50).await,
        [(capped.id, vec![]), (open.id, vec![])],
        "an encounter choosing again does not count its own earlier choice"
    );
    assert!(
        store
            .delete_caller_number(tenant.org, capped.id)
            .await
            .unwrap()
    );
    assert!(
        store
            .is_caller_number(Channel::Call, "+18085550100")
            .await
            .unwrap(),
        "deleted, but an encounter went out from it"
    );

    // The provider proved the call was not placed: the encounter goes back in the queue
    // without its number (chosen again at its next claim; a contact never made counts
    // toward no cap), and the deleted number is no longer one an encounter went out from.
    let mut tx = store.begin().await.unwrap();
    assert!(store.claim_encounter(&mut tx, first, 150).await.unwrap());
    assert!(
        store
            .requeue_encounter(&mut tx, first, None, 200)
            .await
            .unwrap()
            .is_some()
    );
    tx.commit().await.unwrap();
    let requeued = store.encounter_by_id(first).await.unwrap().unwrap();
    assert!(
        requeued.caller_number.is_none(),
        "{:?}",
        requeued.caller_number
    );
    assert!(
        !store
            .is_caller_number(Channel::Call, "+18085550100")
            .await
            .unwrap()
    );
}

/// Several handles choose for many encounters at once, each choice in its own transaction:
/// read the numbers (locked), record a choice only while the capped number is under its cap.
/// The number is chosen exactly its cap times.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_choosers_never_take_a_number_past_its_cap() {
    const CAP: u32 = 3;
    const ENCOUNTERS: usize = 16;
    let backend = backend().await;
    let tenant = tenant(&backend.store, "racing choosers").await;
    let number = allow_and_create(
        &backend.store,
        tenant.org,
        &call_number("+18085550100", Some(CAP)),
    )
    .await;
    let mut encounters = Vec::new();
    for i in 0..ENCOUNTERS {
        let sequence = enroll(&backend.store, &tenant, &format!("+1808555{i:04}")).await;
        encounters
            .push(insert_encounter(&backend.store, &encounter_of(&tenant, &sequence, 1, 0)).await);
    }
    let chosen = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (h, store) in backend.handles(4).await.into_iter().enumerate() {
        let mine: Vec<EncounterId> = encounters.iter().copied().skip(h).step_by(4).collect();
        let (chosen, org) = (chosen.clone(), tenant.org);
        tasks.push(tokio::spawn(async move {
            for encounter in mine {
                let mut tx = store.begin().await.unwrap();
                let numbers = store
                    .caller_numbers_for_choice(&mut tx, org, Channel::Call, encounter, 0)
                    .await
                    .unwrap();
                let entry = &numbers[0];
                if entry.uses.len() < CAP as usize {
                    store
                        .record_caller_number_choice(&mut tx, encounter, &entry.number, 100)
                        .await
                        .unwrap();
                    chosen.fetch_add(1, Ordering::SeqCst);
                }
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(chosen.load(Ordering::SeqCst), CAP as usize);
    let mut tx = backend.store.begin().await.unwrap();
    let numbers = backend
        .store
        .caller_numbers_for_choice(&mut tx, tenant.org, Channel::Call, EncounterId(0), 0)
        .await
        .unwrap();
    assert_eq!(numbers[0].number.id, number.id);
    assert_eq!(numbers[0].uses.len(), CAP as usize);
}
