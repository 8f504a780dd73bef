//! The storage conformance suite: the store's contract, checked once against the public API
//! (`Store`, `Tx`) so that every backend answers to the same checks.
//!
//! Each check opens its own empty database through [`backend`], on the backend
//! `CLARION_TEST_DATABASE_URL` names (`clarion_store::testing`): a fresh SQLite file when it is
//! unset (in every `cargo test` run), a database of the check's own on a PostgreSQL server when
//! it names one (e.g. `scripts/pg-test-server start`), dropped when the check ends.
//!
//! Race checks use real concurrency: several tokio tasks on a multi-threaded runtime, through
//! several `Store` handles opened on the same database (two `Store::connect` calls on one
//! database are how two Clarion processes look to it), each with its own pool. They loop
//! enough rounds to catch a broken claim and stay well inside a few seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod caller_numbers;
mod contact_caps;
mod copy;
mod dashboard;
mod delivery_claims;
mod eligibility_hook;
mod encounter_claims;
mod endpoint_health;
mod endpoint_stats;
mod enrollment;
mod event_types;
mod outbox;
mod overview;
mod paging;
mod postgres_only;
mod privacy;
mod provider_capacity;
mod recovery;
mod secrets;
mod sequence_claims;
mod suppression;
mod tenancy;

use clarion_store::secret_keys::SecretKeys;
use clarion_store::testing::{TestDatabase, is_postgres};
use clarion_store::{
    Assistant, Channel, ClaimRequest, ClaimedDelivery, EncounterId, EncounterRow, EncounterStatus,
    Endpoint, EndpointId, Millis, NewMessage, NewSequence, OrgId, Recipients, SequenceRow,
    SequenceStatus, SequenceUpdate, Store, StoreError, StoreOptions, TemplateVersion,
};
use serde_json::json;

/// One empty database for one check, and the way to open more handles on it.
#[derive(Debug)]
pub struct Backend {
    url: String,
    /// The key ring every handle opens the store with (as every node of one deployment
    /// shares one).
    pub keys: SecretKeys,
    /// The first handle, opened on creation.
    pub store: Store,
    /// The database itself, dropped with the check.
    _database: TestDatabase,
}

impl Backend {
    /// `count` more handles on the same database, each with its own connections: as many
    /// processes would see it.
    pub async fn handles(&self, count: usize) -> Vec<Store> {
        let mut handles = Vec::with_capacity(count);
        for _ in 0..count {
            handles.push(
                self.open_with(self.keys.clone())
                    .await
                    .expect("another handle"),
            );
        }
        handles
    }

    /// Another handle on the same database, opened with the key ring `keys`.
    pub async fn open_with(&self, keys: SecretKeys) -> Result<Store, StoreError> {
        Store::connect_with(&self.url, with_keys(keys)).await
    }

    /// The text values one query returns, read with the database's own driver, under the
    /// store: what a copy of the database would show.
    pub async fn raw_texts(&self, sql: &str) -> Vec<String> {
        use sqlx::Connection;
        if is_postgres(&self.url) {
            let mut connection = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql)
                .fetch_all(&mut connection)
                .await
                .unwrap()
        } else {
            let mut connection = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql)
                .fetch_all(&mut connection)
                .await
                .unwrap()
        }
    }
}

/// Store options with the key ring `keys`.
pub fn with_keys(keys: SecretKeys) -> StoreOptions {
    StoreOptions {
        secret_keys: Some(keys),
        ..StoreOptions::default()
    }
}

/// The database the checks run on (see the module documentation).
pub async fn backend() -> Backend {
    let database = TestDatabase::create().await;
    let store = database.open().await.expect("open the store");
    Backend {
        url: database.url().to_owned(),
        keys: database.keys().expect("a key ring").clone(),
        store,
        _database: database,
    }
}

/// A fresh SQLite file in a temporary directory, whatever the suite runs on.
pub async fn sqlite_backend() -> Backend {
    let database = TestDatabase::sqlite();
    let store = database.open().await.expect("open the store");
    Backend {
        url: database.url().to_owned(),
        keys: database.keys().expect("a key ring").clone(),
        store,
        _database: database,
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
        .create_endpoint(org, url, "", clarion_store::DEFAULT_EVENT_TYPES, SECRET, 0)
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
        // Every helper-made enrollment with a key is the same request.
        idempotency_fingerprint: idempotency_key.map(|_| "fingerprint-of-the-request"),
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
        caller_number: None,
    }
}

/// Inserts one encounter (committed) and answers its id.
pub async fn insert_encounter(store: &Store, row: &EncounterRow) -> EncounterId {
    let mut tx = store.begin().await.unwrap();
    let inserted = store.insert_encounters(&mut tx, &[row]).await.unwrap();
    tx.commit().await.unwrap();
    inserted[0].expect("inserted").id
}

/// Claims the first attempts due at `now` (up to 10, 4 per endpoint), leased until
/// `lease_until`.
pub async fn claim_first_attempts(
    store: &Store,
    now: Millis,
    lease_until: Millis,
) -> Vec<ClaimedDelivery> {
    store
        .claim_due(&ClaimRequest {
            owner: "node",
            now,
            lease_until,
            limit: 10,
            first_attempts: true,
            per_endpoint_limit: 4,
            in_flight: &[],
            endpoint_limits: &[],
            per_organization_limit: 100,
            in_flight_per_organization: &[],
        })
        .await
        .unwrap()
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

/// The outcome of a first attempt of `claim` at `at`: answered `status` (none: a timeout)
/// after `duration_ms`; delivered on a 2xx, failed otherwise.
pub fn attempt_outcome(
    claim: &ClaimedDelivery,
    at: Millis,
    status: Option<u16>,
    duration_ms: u64,
) -> clarion_store::AttemptOutcome {
    clarion_store::AttemptOutcome {
        delivery_id: claim.id,
        lease: claim.lease.clone(),
        attempt: clarion_store::Attempt {
            attempt_number: 1,
            attempted_at: at,
            status_code: status,
            duration_ms,
            error: status.is_none().then(|| "timeout".to_owned()),
            response_body: None,
        },
        next: if status.is_some_and(|s| (200..300).contains(&s)) {
            clarion_store::AfterAttempt::Delivered
        } else {
            clarion_store::AfterAttempt::Failed
        },
        disable_endpoint: None,
    }
}

/// Claims up to ten first attempts due at `now`, ten per endpoint (room for every delivery a
/// check queued: the usual claim's four per endpoint would count their leases against the
/// endpoint's cap for the next claim), leased until `lease_until`.
pub async fn claim_ten_first_attempts(
    store: &Store,
    now: Millis,
    lease_until: Millis,
) -> Vec<ClaimedDelivery> {
    store
        .claim_due(&ClaimRequest {
            owner: "node",
            now,
            lease_until,
            limit: 10,
            first_attempts: true,
            per_endpoint_limit: 10,
            in_flight: &[],
            endpoint_limits: &[],
            per_organization_limit: 100,
            in_flight_per_organization: &[],
        })
        .await
        .unwrap()
}
