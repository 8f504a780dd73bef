//! Contact caps with concurrent writers for one number: the number's lock
//! (`lock_contacts`), the check (`contacts_since`) and the contact it allows
//! (`insert_encounters`) happen in one write transaction, so two writers on separate handles
//! can never both see room for the last contact. (On SQLite the write transaction's database
//! lock serialises them even without `lock_contacts`; on a backend with row locks the
//! number's lock is what does.)

use clarion_store::Store;

use crate::{Tenant, backend, encounter_of, enroll, tenant};

const WRITERS: usize = 4;
const ROUNDS: usize = 10;
const CAP: usize = 2;

/// Every writer runs one sequence of its own template on the same number and, in one
/// transaction, counts the number's contacts and adds one only while under the cap. Whatever
/// the interleaving, the number gets exactly `CAP` contacts per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_exceed_a_numbers_contact_cap() {
    let backend = backend().await;
    let store = &backend.store;
    let first = tenant(store, "caps").await;
    let handles = backend.handles(WRITERS).await;
    // Separate templates, so that the one-running-sequence rule does not serialise anything.
    let mut tenants = Vec::new();
    for w in 0..WRITERS {
        let template = store
            .create_template(first.org, &format!("t{w}"), &serde_json::json!({}), 0)
            .await
            .unwrap();
        tenants.push(std::sync::Arc::new(Tenant {
            org: first.org,
            assistant: first.assistant.clone(),
            template,
        }));
    }

    for round in 0..ROUNDS {
        let phone = format!("+1555090{round:04}");
        let mut sequences = Vec::new();
        for tenant in &tenants {
            sequences.push(enroll(store, tenant, &phone).await);
        }
        let mut tasks = Vec::new();
        for ((store, tenant), sequence) in handles.iter().cloned().zip(&tenants).zip(sequences) {
            let tenant = tenant.clone();
            tasks.push(tokio::spawn(async move {
                let mut added = 0;
                // Each writer tries twice, so that CAP writers could overshoot twice over.
                for attempt in 0..2 {
                    added += try_contact(&store, &tenant, &sequence, attempt).await;
                }
                added
            }));
        }
        let mut added = 0;
        for task in tasks {
            added += task.await.unwrap();
        }
        assert_eq!(added, CAP, "round {round}: contacts allowed");
        let mut tx = store.begin().await.unwrap();
        let contacts = store
            .contacts_since(&mut tx, first.org, &phone, 0)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(contacts.len(), CAP, "round {round}: contacts stored");
    }
}

/// The number's lock, one cap check and, if allowed, one contact, in one transaction. Answers 1 if it contacted.
async fn try_contact(
    store: &Store,
    tenant: &Tenant,
    sequence: &clarion_store::SequenceRow,
    attempt: i64,
) -> usize {
    let mut tx = store.begin().await.unwrap();
    store
        .lock_contacts(
            &mut tx,
            &[(tenant.org, sequence.phone_number.as_str())],
            100,
        )
        .await
        .unwrap();
    let contacts = store
        .contacts_since(&mut tx, tenant.org, &sequence.phone_number, 0)
        .await
        .unwrap();
    let mut added = 0;
    if contacts.len() < CAP {
        let row = encounter_of(tenant, sequence, attempt, 100);
        let inserted = store.insert_encounters(&mut tx, &[&row]).await.unwrap();
        assert!(inserted[0].is_some());
        added = 1;
    }
    tx.commit().await.unwrap();
    added
}

/// An organisation's settings patch touches only the keys it names: calling rules set, kept
/// across another setting's change, cleared; another organisation's untouched.
#[tokio::test]
async fn an_organisations_calling_rules_are_stored_kept_and_cleared() {
    use clarion_store::OrganizationPatch;

    let backend = backend().await;
    let store = &backend.store;
    let mine = tenant(store, "rules").await;
    let other = tenant(store, "other").await;
    let rules = r#"[{"name":"no-weekends","weekdays":["sat","sun"]}]"#;
    let set = store
        .update_organization(
            mine.org,
            &OrganizationPatch {
                calling_rules: Some(Some(rules.to_owned())),
                ..OrganizationPatch::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(set.calling_rules.as_deref(), Some(rules));
    let kept = store
        .update_organization(
            mine.org,
            &OrganizationPatch {
                sms_help_text: Some(Some("Call us".to_owned())),
                ..OrganizationPatch::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.calling_rules.as_deref(), Some(rules));
    let untouched = store.get_organization(other.org).await.unwrap().unwrap();
    assert_eq!(untouched.calling_rules, None);
    let cleared = store
        .update_organization(
            mine.org,
            &OrganizationPatch {
                calling_rules: Some(None),
                ..OrganizationPatch::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.calling_rules, None);
    assert_eq!(cleared.sms_help_text.as_deref(), Some("Call us"));
}
