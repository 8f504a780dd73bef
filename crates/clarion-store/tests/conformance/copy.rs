//! `Store::copy_into` (behind `clarion migrate-store`): a whole installation copied into an
//! empty database, ids, secrets and counters included, verified, refused into a non-empty
//! one. Runs SQLite → the suite's backend and the suite's backend → SQLite, so with
//! `CLARION_TEST_DATABASE_URL` naming a server both directions across backends are checked.

use clarion_store::secret_keys::{SecretKey, SecretKeys};
use clarion_store::{
    AfterAttempt, Attempt, AttemptOutcome, CopyError, DeliveryFilter, EncounterId, EndpointId,
    IdKind, NewMessage, NewSequenceEvent, OrgId, OrganizationPatch, Recipients, SequenceId, Store,
    StoreOptions,
};
use serde_json::json;

use crate::{
    Backend, SECRET, backend, claim_first_attempts, encounter_of, ended, endpoint, enroll,
    insert_encounter, sqlite_backend, tenant, with_keys,
};

const ROTATED: &str = "whsec_cm90YXRlZC1zZWNyZXQtcm90YXRlZC0x";

/// What [`fill`] made, to look up on the copy.
#[derive(Debug)]
struct Filled {
    org: OrgId,
    other_org: OrgId,
    api_key: String,
    hook: EndpointId,
    sequences: Vec<SequenceId>,
    /// The highest encounter id ever drawn: withdrawn, so no longer stored.
    withdrawn: EncounterId,
}

/// A row in every copied table, through the store's own API.
async fn fill(store: &Store) -> Filled {
    let tenant = tenant(store, "Riverside").await;
    let other = store.create_org("Lakeside", 0).await.unwrap();
    let api_key = other.api_key.expose().to_owned();
    store
        .update_organization(
            tenant.org,
            &OrganizationPatch {
                max_contacts_per_day: Some(Some(3)),
                calling_rules: Some(Some(
                    r#"[{"name":"r","start":"09:00","end":"17:00"}]"#.into(),
                )),
                eligibility_hook: Some(Some(r#"{"url":"https://hook.example/"}"#.into())),
                eligibility_hook_secret: Some("whsec_aG9vay1zZWNyZXQtaG9vay1zZWNyZXQ=".into()),
                ..OrganizationPatch::default()
            },
        )
        .await
        .unwrap();
    store
        .allow_vapi_assistant(tenant.org, "asst_1", 5)
        .await
        .unwrap();
    store
        .update_template(
            tenant.org,
            tenant.template.template_id,
            None,
            &json!({ "steps": [], "v": 2 }),
            6,
        )
        .await
        .unwrap()
        .unwrap();
    let hook = endpoint(store, tenant.org, "https://hook.example/a").await;
    assert!(
        store
            .rotate_endpoint_secret(tenant.org, hook.id, ROTATED, i64::MAX, 7)
            .await
            .unwrap()
    );
    // A bulk recovery of it, finished.
    let recovery = store
        .create_recovery(tenant.org, hook.id, 0, 7, 7)
        .await
        .unwrap()
        .unwrap();
    store.advance_recovery(recovery.id, 10, 7).await.unwrap();
    let gone = endpoint(store, tenant.org, "https://hook.example/gone").await;
    assert!(store.delete_endpoint(tenant.org, gone.id, 8).await.unwrap());

    let running = enroll(store, &tenant, "+15555550101").await;
    let finished = enroll(store, &tenant, "+15555550102").await;
    let first = insert_encounter(store, &encounter_of(&tenant, &running, 1, 10)).await;
    let second = insert_encounter(store, &encounter_of(&tenant, &running, 2, 11)).await;
    assert!(second.0 > first.0);
    // A caller number the operator allowed, chosen for the running sequence's encounter.
    store
        .allow_caller_number(
            tenant.org,
            clarion_store::Channel::Call,
            "+18085550100",
            Some("pn_1"),
            9,
        )
        .await
        .unwrap();
    let caller = store
        .create_caller_number(
            tenant.org,
            &clarion_store::NewCallerNumber {
                channel: clarion_store::Channel::Call,
                number: "+18085550100",
                provider_id: Some("pn_1"),
                daily_cap: Some(5),
                enabled: true,
            },
            9,
        )
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    store
        .record_caller_number_choice(&mut tx, first, &caller, 12)
        .await
        .unwrap();
    assert!(store.withdraw_encounter(&mut tx, second).await.unwrap());
    store
        .update_sequences(&mut tx, &[(finished.id, ended(20))])
        .await
        .unwrap();
    store
        .add_sequence_events(
            &mut tx,
            &[NewSequenceEvent {
                sequence_id: finished.id,
                at: 20,
                kind: "ended".to_owned(),
                detail: json!({ "reason": "done" }),
            }],
        )
        .await
        .unwrap();
    store
        .suppress(&mut tx, tenant.org, "+15555550103", "opt-out", 21)
        .await
        .unwrap();
    store
        .record_inbound_message(&mut tx, "SM0123456789", 22)
        .await
        .unwrap();
    let message = NewMessage {
        org_id: tenant.org,
        webhook_id: "msg_copied_report",
        event_type: "sequence.ended",
        sequence_id: Some(finished.id),
        is_test: false,
        body: b"{\"id\":1}",
        created_at: 20,
    };
    store
        .insert_message(&mut tx, &message, Recipients::AllEnabled, 20)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The access log moves with the data; a dashboard session does not.
    store
        .record_access(&clarion_store::NewAccessEntry {
            org_id: tenant.org,
            at: 23,
            actor: "ui-session:0011223344556677 api-key:9",
            action: "sequence.viewed",
            sequence_id: Some(finished.id),
            detail: "",
        })
        .await
        .unwrap();

    // One failed attempt, the delivery pending for its retry with the lease still recorded.
    let claimed = claim_first_attempts(store, 30, 60_000).await;
    assert_eq!(claimed.len(), 1);
    store
        .record_outcomes(
            &[AttemptOutcome {
                delivery_id: claimed[0].id,
                lease: claimed[0].lease.clone(),
                attempt: Attempt {
                    attempt_number: 1,
                    attempted_at: 31,
                    status_code: Some(503),
                    duration_ms: 12,
                    error: Some("http-503".to_owned()),
                    response_body: Some(b"busy".to_vec()),
                },
                next: AfterAttempt::RetryAt(90_000),
                disable_endpoint: None,
            }],
            32,
        )
        .await
        .unwrap();
    Filled {
        org: tenant.org,
        other_org: other.id,
        api_key,
        hook: hook.id,
        sequences: vec![running.id, finished.id],
        withdrawn: second,
    }
}

/// Everything the API would read of the filled rows, as text: equal on source and copy.
async fn what_the_api_reads(store: &Store, filled: &Filled) -> Vec<String> {
    let org = filled.org;
    let mut seen = vec![
        format!("{:?}", store.get_organization(org).await.unwrap()),
        format!("{:?}", store.authenticate(&filled.api_key).await.unwrap()),
        // The hook's secret, opened under the target's key after the copy re-sealed it.
        format!(
            "{:?}",
            store
                .eligibility_hook(org)
                .await
                .unwrap()
                .map(|hook| (hook.settings, hook.secret))
        ),
        format!("{:?}", store.allowed_vapi_assistants(org).await.unwrap()),
        format!("{:?}", store.allowed_caller_numbers(org).await.unwrap()),
        format!("{:?}", store.list_endpoints(org, None, 10).await.unwrap()),
        format!(
            "{:?}",
            store.current_secret(org, filled.hook).await.unwrap()
        ),
        format!(
            "{:?}",
            store.signing_secrets(filled.hook, 40).await.unwrap()
        ),
        format!("{:?}", store.list_assistants(org, None, 10).await.unwrap()),
        format!(
            "{:?}",
            store.list_caller_numbers(org, None, 10).await.unwrap()
        ),
        format!("{:?}", store.list_templates(org, None, 10).await.unwrap()),
        format!(
            "{:?}",
            store.list_sequences(org, None, None, 10).await.unwrap()
        ),
        format!(
            "{:?}",
            store.list_suppressions(org, None, 10).await.unwrap()
        ),
        format!(
            "{:?}",
            store
                .suppression_history(org, "+15555550103")
                .await
                .unwrap()
        ),
        format!(
            "{:?}",
            store
                .list_deliveries(org, &DeliveryFilter::default(), None, 10)
                .await
                .unwrap()
        ),
        format!("{:?}", store.queue_stats().await.unwrap()),
        format!(
            "{:?}",
            store.access_log(org, None, false, 10).await.unwrap()
        ),
        format!(
            "{:?}",
            store.inbound_message_seen("SM0123456789").await.unwrap()
        ),
        format!(
            "{:?}",
            store.get_organization(filled.other_org).await.unwrap()
        ),
    ];
    for sequence in &filled.sequences {
        seen.push(format!(
            "{:?}",
            store.sequence_encounters(*sequence).await.unwrap()
        ));
        seen.push(format!(
            "{:?}",
            store.sequence_events(*sequence, None, 10).await.unwrap()
        ));
        seen.push(format!(
            "{:?}",
            store.public_ids(org).encode(IdKind::Sequence, sequence.0)
        ));
    }
    seen
}

/// Copies `source` into `target` and checks the copy row for row, its counters, its
/// sealing, and that a second copy into it is refused.
async fn copy_and_check(source: &Backend, target: &Backend) {
    let filled = fill(&source.store).await;
    let before = what_the_api_reads(&source.store, &filled).await;

    let report = source.store.copy_into(&target.store).await.unwrap();
    for table in &report.tables {
        assert_eq!(table.source, table.target, "{table:?}");
        assert!(table.source > 0, "the fill left {} empty", table.table);
    }
    assert_eq!(report.sealed_under, target.keys.current().id());
    // A fresh handle reads the copied deployment secret (the one open during the copy drew
    // its own at connect).
    let copy = target.open_with(target.keys.clone()).await.unwrap();
    assert_eq!(what_the_api_reads(&copy, &filled).await, before);
    let counts = source.store.table_counts().await.unwrap();
    let reported: Vec<(&str, u64)> = report
        .tables
        .iter()
        .map(|table| (table.table, table.source))
        .collect();
    assert_eq!(reported, counts);
    assert_eq!(copy.table_counts().await.unwrap(), counts);
    // Sealed under the target's key, which differs from the source's.
    assert_ne!(source.keys.current().id(), target.keys.current().id());
    assert!(
        target
            .raw_texts("SELECT key_id FROM webhook_endpoint_secrets")
            .await
            .iter()
            .all(|key_id| *key_id == target.keys.current().id())
    );

    // New rows draw ids above every id the source drew, the withdrawn encounter's included.
    let tenant_org = filled.org;
    let running = copy
        .get_sequence(tenant_org, filled.sequences[0])
        .await
        .unwrap()
        .unwrap();
    let assistant = copy.list_assistants(tenant_org, None, 1).await.unwrap()[0].clone();
    let template = copy.list_templates(tenant_org, None, 1).await.unwrap()[0].clone();
    let tenant = crate::Tenant {
        org: tenant_org,
        assistant,
        template,
    };
    let next = insert_encounter(&copy, &encounter_of(&tenant, &running, 3, 50)).await;
    assert!(
        next.0 > filled.withdrawn.0,
        "encounter id {} drawn again",
        next.0
    );
    let org = copy.create_org("after", 60).await.unwrap().id;
    assert!(org.0 > filled.other_org.0);

    // A second copy finds rows and writes nothing.
    let error = source.store.copy_into(&copy).await.unwrap_err();
    assert!(
        matches!(error, CopyError::TargetNotEmpty { .. }),
        "{error:?}"
    );
    assert_eq!(
        copy.list_sequences(tenant_org, None, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_sqlite_installation_is_copied_row_for_row_and_a_second_copy_is_refused() {
    let source = sqlite_backend().await;
    let target = backend().await;
    copy_and_check(&source, &target).await;
}

#[tokio::test]
async fn an_installation_is_copied_into_sqlite_row_for_row() {
    let source = backend().await;
    let target = sqlite_backend().await;
    copy_and_check(&source, &target).await;
}

/// A source opened with a key ring that lacks the key its secrets are sealed under: the copy
/// is refused by the key's id (never the secret) with nothing written; the same source opened
/// with that key as a previous one copies, and stays exactly as it was (opened without the
/// connect-time re-sealing).
#[tokio::test]
async fn a_secret_the_source_ring_cannot_open_refuses_the_copy_and_leaves_the_target_empty() {
    let source = backend().await;
    let target = sqlite_backend().await;
    let tenant = tenant(&source.store, "org").await;
    let hook = endpoint(&source.store, tenant.org, "https://hook.example/").await;
    let sealed_before = source
        .raw_texts("SELECT sealed_secret FROM webhook_endpoint_secrets")
        .await;

    let stranger = SecretKeys::new(SecretKey::generate());
    let read_only = |keys: SecretKeys| StoreOptions {
        reseal_secrets: false,
        ..with_keys(keys)
    };
    let blind = Store::connect_with(&source.url, read_only(stranger.clone()))
        .await
        .unwrap();
    let error = blind.copy_into(&target.store).await.unwrap_err();
    match &error {
        CopyError::SecretKeyMissing { key_id } => assert_eq!(*key_id, source.keys.current().id()),
        other => panic!("{other:?}"),
    }
    assert!(!error.to_string().contains(SECRET));
    assert!(
        target
            .raw_texts("SELECT name FROM organizations")
            .await
            .is_empty(),
        "nothing committed"
    );

    let ring = stranger.with_previous([source.keys.current().clone()]);
    let seeing = Store::connect_with(&source.url, read_only(ring))
        .await
        .unwrap();
    seeing.copy_into(&target.store).await.unwrap();
    assert_eq!(
        source
            .raw_texts("SELECT sealed_secret FROM webhook_endpoint_secrets")
            .await,
        sealed_before,
        "the source was re-sealed"
    );
    let copy = target.open_with(target.keys.clone()).await.unwrap();
    assert_eq!(
        copy.current_secret(tenant.org, hook.id).await.unwrap(),
        Some(SECRET.to_owned())
    );
}

/// Tables larger than a page (1,000 rows) are read page after page by their key, an integer
/// id or a composite or text key, and copied whole, in one transaction with the rest.
#[tokio::test]
async fn tables_larger_than_a_page_are_copied_whole() {
    const ROWS: usize = 2_500;
    let source = sqlite_backend().await;
    let target = backend().await;
    let store = &source.store;
    let tenant = tenant(store, "many").await;
    let sequence = enroll(store, &tenant, "+15555550100").await;
    let mut tx = store.begin().await.unwrap();
    let events: Vec<NewSequenceEvent> = (0..ROWS)
        .map(|i| NewSequenceEvent {
            sequence_id: sequence.id,
            at: i as i64,
            kind: "deferred".to_owned(),
            detail: json!({ "n": i }),
        })
        .collect();
    store.add_sequence_events(&mut tx, &events).await.unwrap();
    for i in 0..ROWS {
        let number = format!("+1555{i:07}");
        store
            .suppress(&mut tx, tenant.org, &number, "do-not-contact", 1)
            .await
            .unwrap();
        store
            .record_inbound_message(&mut tx, &format!("SM{i:032}"), 1)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let report = store.copy_into(&target.store).await.unwrap();
    let rows = |name: &str| {
        report
            .tables
            .iter()
            .find(|table| table.table == name)
            .map(|table| (table.source, table.target))
            .unwrap()
    };
    let expected = (ROWS as u64, ROWS as u64);
    assert_eq!(rows("sequence_events"), expected);
    assert_eq!(rows("suppressions"), expected);
    assert_eq!(rows("suppression_history"), expected);
    assert_eq!(rows("twilio_inbound_messages"), expected);
    let copy = target.open_with(target.keys.clone()).await.unwrap();
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = copy
            .list_suppressions(tenant.org, after.as_deref(), 500)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.phone_number.clone());
        listed.extend(page.into_iter().map(|entry| entry.phone_number));
    }
    let expected: Vec<String> = (0..ROWS).map(|i| format!("+1555{i:07}")).collect();
    assert_eq!(listed, expected);
    assert!(
        copy.inbound_message_seen(&format!("SM{:032}", ROWS - 1))
            .await
            .unwrap()
    );
}
