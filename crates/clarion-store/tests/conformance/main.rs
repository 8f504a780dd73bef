//! The storage conformance suite: the store's contract, checked once against the public API
//! (`Store`, `Tx`) so that every backend answers to the same checks.
//!
//! Each check opens its own empty database through [`backend`]. Today that is a fresh SQLite
//! file in a temporary directory, in every `cargo test` run. `CLARION_TEST_DATABASE_URL`
//! names the backend to run on: a `sqlite:` URL (or none) runs on temporary SQLite files (each
//! check needs an empty database of its own: claims and due look-ups are deployment-wide);
//! any other scheme is reported as not supported yet, in one line, and the suite runs on
//! SQLite. A second backend plugs in here, by creating one empty database (or schema) per
//! check from that URL.
//!
//! Race checks use real concurrency: several tokio tasks on a multi-threaded runtime, through
//! several `Store` handles opened on the same database (two `Store::connect` calls on one
//! path are how two Clarion processes look to the database), each with its own pool. They
//! loop enough rounds to catch a broken claim and stay well inside a few seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod contact_caps;
mod delivery_claims;
mod encounter_claims;
mod enrollment;
mod outbox;
mod paging;
mod provider_capacity;
mod sequence_claims;
mod suppression;
mod tenancy;

use std::sync::Once;

use clarion_store::{
    Assistant, Channel, EncounterId, EncounterRow, EncounterStatus, Endpoint, EndpointId, Millis,
    NewMessage, NewSequence, OrgId, Recipients, SequenceRow, SequenceStatus, SequenceUpdate, Store,
    TemplateVersion,
};
use serde_json::json;

/// One empty database for one check, and the way to open more handles on it.
#[derive(Debug)]
pub struct Backend {
    url: String,
    /// The first handle, opened on creation.
    pub store: Store,
    /// Keeps the temporary SQLite file alive for the check's duration.
    _dir: tempfile::TempDir,
}

impl Backend {
    /// `count` more handles on the same database, each with its own connections: as many
    /// processes would see it.
    pub async fn handles(&self, count: usize) -> Vec<Store> {
        let mut handles = Vec::with_capacity(count);
        for _ in 0..count {
            handles.push(Store::connect(&self.url).await.expect("another handle"));
        }
        handles
    }
}

/// The database the checks run on (see the module documentation).
pub async fn backend() -> Backend {
    static ANNOUNCE: Once = Once::new();
    if let Ok(url) = std::env::var("CLARION_TEST_DATABASE_URL")
        && !url.starts_with("sqlite:")
    {
        ANNOUNCE.call_once(|| {
            let scheme = url.split(':').next().unwrap_or("");
            eprintln!(
                "conformance: CLARION_TEST_DATABASE_URL scheme `{scheme}` is not supported yet; running on SQLite"
            );
        });
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
    let store = Store::connect(&url).await.expect("open the store");
    Backend {
        url,
        store,
        _dir: dir,
    }
}

/// A fake but well-formed whsec secret (24 bytes).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// An organisation with one call assistant and one template: what enrollment needs.
#[derive(Debug)]
pub struct Tenant {
    pub org: OrgId,
    pub assistant: Assistant,
    pub template: TemplateVersion,
}

pub async fn tenant(store: &Store, name: &str) -> Tenant {
    let org = store.create_org(name, 0).await.unwrap().id;
    let assistant = store
        .create_assistant(org, "caller", Channel::Call, &json!({}), &json!([]), 0)
        .await
        .unwrap();
    let template = store
        .create_template(org, "follow-up", &json!({ "steps": [] }), 0)
        .await
        .unwrap();
    Tenant {
        org,
        assistant,
        template,
    }
}

pub async fn endpoint(store: &Store, org: OrgId, url: &str) -> Endpoint {
    store
        .create_endpoint(org, url, "", SECRET, 0)
        .await
        .unwrap()
}

/// A new active sequence for `phone` on the tenant's template, due at `wake`.
pub fn new_sequence<'a>(
    tenant: &Tenant,
    phone: &'a str,
    contact: &'a serde_json::Value,
    idempotency_key: Option<&'a str>,
) -> NewSequence<'a> {
    NewSequence {
        org_id: tenant.org,
        template_id: tenant.template.template_id,
        template_version_id: tenant.template.version_id,
        phone_number: phone,
        contact,
        variables: contact,
        simulation: None,
        status: SequenceStatus::Active,
        state: "{}",
        next_wake_at: Some(0),
        allow_concurrent: false,
        idempotency_key,
        now: 0,
    }
}

/// Enrolls `phone` (committed) and answers the row.
pub async fn enroll(store: &Store, tenant: &Tenant, phone: &str) -> SequenceRow {
    let contact = json!({ "phone_number": phone });
    let mut tx = store.begin().await.unwrap();
    let row = store
        .insert_sequence(&mut tx, &new_sequence(tenant, phone, &contact, None))
        .await
        .unwrap()
        .expect("enrolled");
    tx.commit().await.unwrap();
    row
}

/// What the engine writes when a sequence ends.
pub fn ended(now: Millis) -> SequenceUpdate<'static> {
    SequenceUpdate {
        status: SequenceStatus::Ended,
        state: "{}",
        next_wake_at: None,
        outcome_description: Some("done"),
        now,
    }
}

/// An encounter row to insert for `sequence` (step 0, `attempt`), created at `now`.
pub fn encounter_of(
    tenant: &Tenant,
    sequence: &SequenceRow,
    attempt: i64,
    now: Millis,
) -> EncounterRow {
    EncounterRow {
        id: EncounterId(0),
        org_id: tenant.org,
        sequence_id: sequence.id,
        step: 0,
        attempt,
        channel: Channel::Call,
        assistant_id: tenant.assistant.id,
        phone_number: sequence.phone_number.clone(),
        status: EncounterStatus::Created,
        provider_ref: None,
        provider_status: None,
        outcome: None,
        report: None,
        ends_at: None,
        created_at: now,
        ended_at: None,
        conversation: None,
        claimed_at: None,
        sender: None,
    }
}

/// Inserts one encounter (committed) and answers its id.
pub async fn insert_encounter(store: &Store, row: &EncounterRow) -> EncounterId {
    let mut tx = store.begin().await.unwrap();
    let inserted = store.insert_encounters(&mut tx, &[row]).await.unwrap();
    tx.commit().await.unwrap();
    inserted[0].expect("inserted").id
}

/// Queues `count` report messages to one endpoint (committed), due at `due`.
pub async fn queue_deliveries(
    store: &Store,
    org: OrgId,
    to: EndpointId,
    count: usize,
    due: Millis,
) {
    let mut tx = store.begin().await.unwrap();
    for i in 0..count {
        let webhook_id = format!("msg_{}_{}_{i}", to.0, due);
        let message = NewMessage {
            org_id: org,
            webhook_id: &webhook_id,
            event_type: "sequence.ended",
            sequence_id: None,
            is_test: false,
            body: b"{}",
            created_at: due,
        };
        let (_, created) = store
            .insert_message(&mut tx, &message, Recipients::One(to), due)
            .await
            .unwrap();
        assert_eq!(created, 1);
    }
    tx.commit().await.unwrap();
}
