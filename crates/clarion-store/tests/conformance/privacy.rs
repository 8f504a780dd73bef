//! PHI retention and erasure: which ended sequences a purge selects, what it removes and what
//! it keeps, and that racing purgers take each sequence once.

use clarion_store::{
    NewMessage, OrganizationPatch, PhiSelection, Recipients, SequenceId, SequenceRow, Store,
};
use serde_json::json;

use crate::{Tenant, backend, encounter_of, ended, enroll, insert_encounter, new_sequence, tenant};

const DAY: i64 = 86_400_000;

/// Enrolls `phone` with a name, an external id and variables; with `ended_at`, ends it then
/// with one encounter whose report object holds a transcript, and its report queued.
async fn sequence_with_phi(
    store: &Store,
    tenant: &Tenant,
    phone: &str,
    ended_at: Option<i64>,
) -> SequenceRow {
    let contact = json!({
        "phone_number": phone, "time_zone": "America/New_York",
        "name": "Pat Example", "external_id": "mrn-7",
    });
    let mut new = new_sequence(tenant, phone, &contact, None);
    let variables = json!({ "appointment": "Tuesday" });
    new.variables = &variables;
    new.allow_concurrent = true;
    let mut tx = store.begin().await.unwrap();
    let row = store.insert_sequence(&mut tx, &new).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    let Some(at) = ended_at else {
        return row;
    };
    let encounter = insert_encounter(store, &encounter_of(tenant, &row, 1, at)).await;
    let mut tx = store.begin().await.unwrap();
    store
        .end_encounter(
            &mut tx,
            encounter,
            "resolved",
            Some(&json!({ "transcript": "User: my date of birth is ...", "summary": "s" })),
            at,
        )
        .await
        .unwrap();
    store
        .update_sequences(&mut tx, &[(row.id, ended(at))])
        .await
        .unwrap();
    let body = json!({
        "id": row.id.0, "status": "ended", "outreach": [{ "type": "call", "step": 1,
        "call": { "id": 1, "transcript": "User: my date of birth is ...", "summary": "s",
                  "analysis": { "custom": { "dob": "1970" } }, "outcome": "resolved",
                  "destination_number": phone }, "sms": null }],
    })
    .to_string();
    let webhook_id = format!("msg_{}", row.id.0);
    let message = NewMessage {
        org_id: tenant.org,
        webhook_id: &webhook_id,
        event_type: "sequence.ended",
        sequence_id: Some(row.id),
        is_test: false,
        body: body.as_bytes(),
        created_at: at,
    };
    store
        .insert_message(&mut tx, &message, Recipients::AllEnabled, at)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    store
        .get_sequence(tenant.org, row.id)
        .await
        .unwrap()
        .unwrap()
}

async fn retain_for(store: &Store, tenant: &Tenant, days: u32) {
    let patch = OrganizationPatch {
        retention_days: Some(Some(days)),
        ..OrganizationPatch::default()
    };
    let org = store.update_organization(tenant.org, &patch).await.unwrap();
    assert_eq!(org.unwrap().retention_days, Some(days));
}

async fn purge(
    store: &Store,
    ids: &[SequenceId],
    only_unpurged: bool,
    now: i64,
) -> Vec<SequenceId> {
    let mut tx = store.begin().await.unwrap();
    let purged = store
        .purge_phi(&mut tx, ids, only_unpurged, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    purged.sequences
}

/// Only the ended sequences past their organisation's period are selected; the purge removes
/// the PHI of exactly those and keeps ids, status, times, outcomes and the number.
#[tokio::test]
async fn retention_selects_and_purges_exactly_the_sequences_past_their_period() {
    let backend = backend().await;
    let store = &backend.store;
    let kept_forever = tenant(store, "no retention").await;
    let retaining = tenant(store, "thirty days").await;
    retain_for(store, &retaining, 30).await;
    let now = 100 * DAY;
    let old = sequence_with_phi(store, &retaining, "+15550101", Some(now - 30 * DAY)).await;
    let recent = sequence_with_phi(store, &retaining, "+15550102", Some(now - 30 * DAY + 1)).await;
    let running = sequence_with_phi(store, &retaining, "+15550103", None).await;
    let other_org = sequence_with_phi(store, &kept_forever, "+15550101", Some(0)).await;

    let expired = PhiSelection::Expired { now };
    assert_eq!(
        store.phi_purge_candidates(&expired, 100).await.unwrap(),
        vec![old.id]
    );

    let mut tx = store.begin().await.unwrap();
    // A purge of rows not ended purges nothing of them (the check is made under the lock).
    let purged = store
        .purge_phi(&mut tx, &[old.id, running.id], true, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(purged.sequences, vec![old.id]);
    assert_eq!(purged.encounters, 1);
    assert_eq!(purged.report_bodies, 1);

    let after = store
        .get_sequence(retaining.org, old.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.phi_purged_at, Some(now));
    assert_eq!(after.contact["name"], json!(null));
    assert_eq!(after.contact["external_id"], json!(null));
    assert_eq!(after.contact["phone_number"], json!("+15550101"));
    assert_eq!(after.contact["time_zone"], json!("America/New_York"));
    assert_eq!(after.variables, json!({}));
    assert_eq!(
        (after.status, after.ended_at, after.phone_number.as_str()),
        (old.status, old.ended_at, old.phone_number.as_str())
    );
    let encounters = store.sequence_encounters(old.id).await.unwrap();
    assert_eq!(encounters.len(), 1);
    assert_eq!(encounters[0].report, None);
    assert_eq!(encounters[0].outcome.as_deref(), Some("resolved"));
    let body: serde_json::Value = serde_json::from_slice(
        &store
            .report_body(retaining.org, old.id)
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let call = &body["outreach"][0]["call"];
    assert_eq!(
        (&call["transcript"], &call["summary"], &call["analysis"]),
        (&json!(null), &json!(null), &json!(null))
    );
    assert_eq!(call["outcome"], json!("resolved"));

    // Nothing else changed, and the purged sequence is not selected again.
    for (tenant, row) in [
        (&retaining, &recent),
        (&retaining, &running),
        (&kept_forever, &other_org),
    ] {
        assert_eq!(
            &store
                .get_sequence(tenant.org, row.id)
                .await
                .unwrap()
                .unwrap(),
            row
        );
    }
    assert!(
        store
            .phi_purge_candidates(&expired, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(purge(store, &[old.id], true, now + 1).await.is_empty());
    // An hour later the recent one is past its period too.
    let later = PhiSelection::Expired { now: now + 1 };
    assert_eq!(
        store.phi_purge_candidates(&later, 100).await.unwrap(),
        vec![recent.id]
    );
}

/// A contact's selection is one organisation's ended sequences with the number, purged or
/// not, in id order after the cursor.
#[tokio::test]
async fn a_contacts_selection_is_its_organisations_ended_sequences_with_the_number() {
    let backend = backend().await;
    let store = &backend.store;
    let a = tenant(store, "a").await;
    let b = tenant(store, "b").await;
    let first = sequence_with_phi(store, &a, "+15550111", Some(10)).await;
    let second = sequence_with_phi(store, &a, "+15550111", Some(20)).await;
    sequence_with_phi(store, &a, "+15550111", None).await;
    sequence_with_phi(store, &a, "+15550112", Some(10)).await;
    sequence_with_phi(store, &b, "+15550111", Some(10)).await;
    enroll(store, &b, "+15550111").await;
    purge(store, &[first.id], false, 30).await;

    let select = |after| PhiSelection::Contact {
        org: a.org,
        phone_number: "+15550111",
        after,
    };
    let all = store
        .phi_purge_candidates(&select(None), 100)
        .await
        .unwrap();
    assert_eq!(all, vec![first.id, second.id]);
    let page = store.phi_purge_candidates(&select(None), 1).await.unwrap();
    assert_eq!(page, vec![first.id]);
    let rest = store
        .phi_purge_candidates(&select(Some(first.id)), 100)
        .await
        .unwrap();
    assert_eq!(rest, vec![second.id]);
    // Erasing again what a purge took: the row is taken (not `only_unpurged`).
    assert_eq!(purge(store, &all, false, 40).await, all);
}

/// Several handles purging the same expired sequences at once purge each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_retention_purges_take_each_sequence_once() {
    let backend = backend().await;
    let store = &backend.store;
    let retaining = tenant(store, "racing").await;
    retain_for(store, &retaining, 1).await;
    let mut expected = Vec::new();
    for i in 0..12 {
        let row = sequence_with_phi(store, &retaining, &format!("+155501{i:02}"), Some(0)).await;
        expected.push(row.id);
    }
    let now = 2 * DAY;
    let handles = backend.handles(3).await;
    let tasks: Vec<_> = handles
        .into_iter()
        .map(|handle| {
            tokio::spawn(async move {
                let ids = handle
                    .phi_purge_candidates(&PhiSelection::Expired { now }, 100)
                    .await
                    .unwrap();
                purge(&handle, &ids, true, now).await
            })
        })
        .collect();
    let mut purged = Vec::new();
    for task in tasks {
        purged.extend(task.await.unwrap());
    }
    purged.sort();
    assert_eq!(
        purged, expected,
        "each sequence purged by exactly one handle"
    );
}

/// An eligibility hook's reason in a `skipped` history entry goes with the PHI; the rest of the
/// entry, and every other entry, stays as it was, key order included.
#[tokio::test]
async fn a_purge_removes_the_eligibility_hooks_reasons_from_the_history_and_nothing_else() {
    let backend = backend().await;
    let store = &backend.store;
    let tenant = tenant(store, "org").await;
    let purged = sequence_with_phi(store, &tenant, "+15550111", Some(DAY)).await;
    let kept = sequence_with_phi(store, &tenant, "+15550112", Some(DAY)).await;
    let skipped = json!({ "type": "skipped", "step": 0, "attempt": 1, "reason": "ineligible",
                          "action": "skip-step", "hook_reason": "seen by Dr. Example" });
    let started = json!({ "type": "encounter-started", "step": 1, "attempt": 1, "channel": "sms" });
    let mut tx = store.begin().await.unwrap();
    let events: Vec<clarion_store::NewSequenceEvent> = [purged.id, kept.id]
        .into_iter()
        .flat_map(|sequence_id| {
            [("skipped", &skipped), ("encounter-started", &started)].map(|(kind, detail)| {
                clarion_store::NewSequenceEvent {
                    sequence_id,
                    at: DAY,
                    kind: kind.to_owned(),
                    detail: detail.clone(),
                }
            })
        })
        .collect();
    store.add_sequence_events(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(
        purge(store, &[purged.id], true, 2 * DAY).await,
        vec![purged.id]
    );
    let details = |id| async move {
        store
            .sequence_events(id, None, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind != "step-scheduled")
            .map(|e| e.detail.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        details(purged.id).await,
        [
            r#"{"type":"skipped","step":0,"attempt":1,"reason":"ineligible","action":"skip-step"}"#,
            started.to_string().as_str(),
        ]
    );
    assert_eq!(
        details(kept.id).await,
        [skipped.to_string(), started.to_string()]
    );
}
