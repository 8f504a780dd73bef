//! The store's API boundary: every method callers may use, with its contract, dispatched to
//! the backend behind the [`Store`].
//!
//! `Store` is an enum over backends rather than a trait object: each call is a `match` and
//! a direct `async fn` call (no boxed futures, no `async_trait`), a backend's internals stay
//! private to it, and a transaction cannot be handed to another backend's store by mistake
//! (the pair is matched together). The list below is the contract a backend implements: its
//! methods take the same arguments, with its own transaction type in place of [`Tx`]. The
//! concurrency rules each method keeps are in ARCHITECTURE.md ("API boundary: the store") and
//! are checked by the conformance suite (`tests/conformance/`).

#![allow(clippy::too_many_arguments)]

use crate::model::*;
use crate::postgres::{PgStore, PgTx};
use crate::sqlite::{SqliteStore, SqliteTx};
use crate::wakeup::{Wakeup, Wakeups};
use crate::{
    AssistantId, CallerNumberId, Channel, CopyError, DeliveryId, EncounterId, EndpointId, IdCodec,
    MessageId, Millis, OrgId, PublicIds, RecoveryId, Result, SequenceEventId, SequenceId,
    SequenceStatus, StoreError, TemplateId, TemplateVersionId,
};

/// The store: whichever database the URL named, behind one handle. Cheap to clone (pools are
/// shared).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// The deployment's public-id codec (its secret is read from the database at connect).
    ids: IdCodec,
}

/// The databases this build can open.
#[derive(Debug, Clone)]
enum Backend {
    /// `sqlite://PATH`: the embedded default.
    Sqlite(SqliteStore),
    /// `postgres://` or `postgresql://`: several nodes on one database.
    Postgres(PgStore),
}

/// A write transaction on the store it was begun on. Dropped without
/// [`commit`](Tx::commit), it rolls back.
#[derive(Debug)]
pub struct Tx(TxInner);

#[derive(Debug)]
enum TxInner {
    Sqlite(SqliteTx),
    Postgres(PgTx),
}

impl Tx {
    /// Makes the transaction's writes durable.
    pub async fn commit(self) -> Result<()> {
        match self.0 {
            TxInner::Sqlite(tx) => tx.commit().await,
            TxInner::Postgres(tx) => tx.commit().await,
        }
    }

    /// Asks for a wake-up of every node's loops of this kind once the transaction commits
    /// (PostgreSQL: one `NOTIFY` per kind, whatever the number of calls; nothing if it rolls
    /// back). On SQLite nothing is sent: one process owns the file and wakes its own loops.
    /// The outbox's writes ask for [`Wakeup::Deliveries`] by themselves.
    pub fn wake_nodes(&mut self, wakeup: Wakeup) {
        match &mut self.0 {
            TxInner::Sqlite(_) => {}
            TxInner::Postgres(tx) => tx.wake_nodes(wakeup),
        }
    }

    /// Discards the transaction's writes.
    pub async fn rollback(self) -> Result<()> {
        match self.0 {
            TxInner::Sqlite(tx) => tx.rollback().await,
            TxInner::Postgres(tx) => tx.rollback().await,
        }
    }
}

impl Store {
    /// Opens (creating it if missing) the database at `url` and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Like [`Store::connect`], with options.
    /// The scheme picks the backend: `sqlite:` or `postgres://` / `postgresql://`.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Self> {
        let (backend, secret) = if url.starts_with("sqlite:") {
            let db = SqliteStore::connect(url, &options).await?;
            let secret = db.deployment_secret().await?;
            (Backend::Sqlite(db), secret)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let db = PgStore::connect(url, &options).await?;
            let secret = db.deployment_secret().await?;
            (Backend::Postgres(db), secret)
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        Ok(Self {
            backend,
            ids: IdCodec::new(secret),
        })
    }

    /// The ids as organisation `org` sees them (see [`crate::public_id`]).
    pub fn public_ids(&self, org: OrgId) -> PublicIds {
        self.ids.for_org(org)
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        match &self.backend {
            Backend::Sqlite(db) => Ok(Tx(TxInner::Sqlite(db.begin().await?))),
            Backend::Postgres(db) => Ok(Tx(TxInner::Postgres(db.begin().await?))),
        }
    }

    /// The wake-ups other nodes send when they commit work ([`crate::wakeup`]): a node that
    /// runs loops subscribes once per loop. On PostgreSQL the first subscription starts a
    /// listener on a connection of its own (reconnecting with backoff; each reconnection
    /// answers [`Wakeup::Resync`]); on SQLite it never fires.
    pub fn wakeups(&self) -> Wakeups {
        match &self.backend {
            Backend::Sqlite(_) => Wakeups::new(None),
            Backend::Postgres(db) => db.wakeups(),
        }
    }

    /// Checks that the database answers (for health checks).
    pub async fn ping(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(db) => db.ping().await,
            Backend::Postgres(db) => db.ping().await,
        }
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(db) => db.close().await,
            Backend::Postgres(db) => db.close().await,
        }
    }

    /// Copies this whole installation into `target`, a new, empty database of either backend
    /// (`clarion migrate-store`): every table with its ids, the deployment secret (so public
    /// ids stay the same), each id counter moved past the highest id this store ever drew,
    /// webhook endpoint secrets opened with this store's key ring and sealed under the
    /// target's. This store is read in one snapshot and never written; the target is
    /// written in one transaction, committed only once each table's rows in the source, rows
    /// copied and rows in the target agree. Refused, with nothing written, when the target
    /// holds any row, when either schema is not the one this build knows, or when a secret
    /// does not open. No node may run on the target meanwhile (one would keep the public-id
    /// secret it drew, which the copy replaces), and writes to this store after the snapshot
    /// are not copied: stop its nodes first.
    pub async fn copy_into(&self, target: &Store) -> Result<CopyReport, CopyError> {
        crate::copy::copy(self.side(), target.side()).await
    }

    /// The rows of each table [`Store::copy_into`] copies, in the order it copies them, read
    /// in one snapshot: what a copy of this installation must hold.
    pub async fn table_counts(&self) -> Result<Vec<(&'static str, u64)>> {
        crate::copy::table_counts(self.side()).await
    }

    fn side(&self) -> crate::copy::Side<'_> {
        match &self.backend {
            Backend::Sqlite(db) => crate::copy::Side::Sqlite(db),
            Backend::Postgres(db) => crate::copy::Side::Postgres(db),
        }
    }

    /// The file a `sqlite:` URL names (`None` for another backend or a database in memory):
    /// where its key file sits ([`crate::secret_keys::key_file_path`]), and whether it exists
    /// yet.
    pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
        crate::sqlite::database_file(url)
    }

    /// The SQLite backend, for the backend's own tests (which open SQLite files).
    #[cfg(test)]
    #[allow(clippy::panic)]
    pub(crate) fn sqlite(&self) -> &SqliteStore {
        match &self.backend {
            Backend::Sqlite(db) => db,
            Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }
}

/// Writes each listed method as a dispatch to the backend: a method whose first argument is
/// `tx: &mut Tx` gets the backend's own transaction out of it.
macro_rules! store_api {
    () => {};
    (
        $(#[$meta:meta])*
        pub async fn $name:ident(&self, tx: &mut Tx $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
        $($rest:tt)*
    ) => {
        $(#[$meta])*
        pub async fn $name(&self, tx: &mut Tx $(, $arg: $ty)*) -> $ret {
            match (&self.backend, &mut tx.0) {
                (Backend::Sqlite(db), TxInner::Sqlite(tx)) => db.$name(tx $(, $arg)*).await,
                (Backend::Postgres(db), TxInner::Postgres(tx)) => db.$name(tx $(, $arg)*).await,
                // A transaction begun on another backend's store: a caller's bug, answered
                // as an error (never a panic, never a query on the wrong database).
                _ => Err(StoreError::ForeignTransaction),
            }
        }
        store_api! { $($rest)* }
    };
    (
        $(#[$meta:meta])*
        pub async fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
        $($rest:tt)*
    ) => {
        $(#[$meta])*
        pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
            match &self.backend {
                Backend::Sqlite(db) => db.$name($($arg),*).await,
                Backend::Postgres(db) => db.$name($($arg),*).await,
            }
        }
        store_api! { $($rest)* }
    };
}

impl Store {
    store_api! {
        // ---- orgs ----
        /// Creates an organisation with one API key and returns both. The key is returned only
        /// here; the store keeps its hash (see [`crate::api_key`]).
        pub async fn create_org(&self, name: &str, now: Millis) -> Result<CreatedOrganization>;

        /// The organisation an API key belongs to, if the key is known and not revoked.
        pub async fn authenticate(&self, key: &str) -> Result<Option<OrgId>>;

        /// [`Store::authenticate`], also answering the key's own id (changes that keep an audit
        /// trail, such as the suppression history, name the key that made them).
        pub async fn authenticate_key(&self, key: &str) -> Result<Option<AuthenticatedKey>>;

        /// An organisation with its settings.
        pub async fn get_organization(&self, org: OrgId) -> Result<Option<Organization>>;

        /// Changes an organisation's settings; answers them as they are now.
        pub async fn update_organization(&self, org: OrgId, patch: &OrganizationPatch) -> Result<Option<Organization>>;

        /// The organisation's eligibility hook with its secret opened; `None` without a hook.
        pub async fn eligibility_hook(&self, org: OrgId) -> Result<Option<EligibilityHookRow>>;

        /// Puts a Vapi assistant id on the organisation's allow-list (operator only: the CLI, never
        /// `/v1`). Answers whether it was new. An unknown organisation is a foreign-key error.
        pub async fn allow_vapi_assistant(&self, org: OrgId, vapi_assistant_id: &str, now: Millis) -> Result<bool>;

        /// Takes a Vapi assistant id off the organisation's allow-list; answers whether it was on
        /// it. Calls not yet placed with it are then refused.
        pub async fn disallow_vapi_assistant(&self, org: OrgId, vapi_assistant_id: &str) -> Result<bool>;

        /// The organisation's allowed Vapi assistant ids, sorted.
        pub async fn allowed_vapi_assistants(&self, org: OrgId) -> Result<Vec<String>>;

        /// Whether the organisation may use this Vapi assistant (it is on its allow-list).
        pub async fn vapi_assistant_allowed(&self, org: OrgId, vapi_assistant_id: &str) -> Result<bool>;

        /// The contact-cap settings of several organisations, inside a write transaction:
        /// (per day, per week), `None` where the organisation uses the deployment default.
        pub async fn organization_contact_caps(&self, tx: &mut Tx, orgs: &[OrgId]) -> Result<std::collections::HashMap<OrgId, (Option<u32>, Option<u32>)>>;

        // ---- endpoints ----
        /// Creates an enabled endpoint with its first secret, subscribed to `event_types`
        /// ([`DEFAULT_EVENT_TYPES`] unless chosen; the caller validates the names).
        pub async fn create_endpoint(&self, org: OrgId, url: &str, description: &str, event_types: &[&str], secret: &str, now: Millis) -> Result<Endpoint>;

        /// Those of `orgs` with at least one enabled endpoint subscribed to `event_type`, read
        /// inside the caller's transaction: whether an event is worth building at all (the
        /// outbox write then fans it out to exactly those endpoints).
        pub async fn subscribed_organizations(&self, tx: &mut Tx, orgs: &[OrgId], event_type: &str) -> Result<Vec<OrgId>>;

        /// One endpoint of the organisation (`None` for another organisation's or a deleted one).
        pub async fn get_endpoint(&self, org: OrgId, id: EndpointId) -> Result<Option<Endpoint>>;

        /// A page of the organisation's endpoints, by id, after the cursor.
        pub async fn list_endpoints(&self, org: OrgId, after: Option<EndpointId>, limit: u32) -> Result<Vec<Endpoint>>;

        /// Applies a patch; re-enabling clears the reason Clarion disabled it for and its
        /// `failing_since`, and makes its kept backlog (every pending delivery) due at `now`, so
        /// that it goes out in message order.
        pub async fn update_endpoint(&self, org: OrgId, id: EndpointId, patch: &EndpointPatch, now: Millis) -> Result<Option<Endpoint>>;

        /// Deletes an endpoint. Its pending deliveries end as `failed` (nothing is silently
        /// dropped: they stay listed and the reports stay in the pull API).
        pub async fn delete_endpoint(&self, org: OrgId, id: EndpointId, now: Millis) -> Result<bool>;

        /// Installs `new_secret` as the current secret; the previous current one keeps signing
        /// until `old_expires_at`, and any older secret still in its overlap stops signing now,
        /// so that at most two secrets ever sign an attempt (each live secret adds an entry to
        /// every `webhook-signature` header and an HMAC to every attempt: unbounded rotation made
        /// headers no receiver accepts). Returns `false` when the endpoint is not the
        /// organisation's.
        pub async fn rotate_endpoint_secret(&self, org: OrgId, id: EndpointId, new_secret: &str, old_expires_at: Millis, now: Millis) -> Result<bool>;

        /// The secrets that sign an attempt at `now`: the current one first, then the one it
        /// replaced while its overlap lasts ([`MAX_SIGNING_SECRETS`] at most).
        pub async fn signing_secrets(&self, id: EndpointId, now: Millis) -> Result<Vec<String>>;

        /// The current secret of one of the organisation's endpoints.
        pub async fn current_secret(&self, org: OrgId, id: EndpointId) -> Result<Option<String>>;

        /// Disables an endpoint on Clarion's own initiative, recording why.
        pub async fn disable_endpoint(&self, id: EndpointId, reason: &str, now: Millis) -> Result<()>;

        /// Endpoint health: disables, inside the caller's transaction, up to `limit` enabled
        /// endpoints whose every attempt has failed since `failing_before` or earlier
        /// (`failing_since <= failing_before`), recording `reason`; answers them (as they are
        /// now, in id order). Idempotent across nodes: an endpoint already disabled is left
        /// alone and not answered, so its `endpoint.disabled` event is queued once. Its pending
        /// deliveries stay pending (kept for when it is re-enabled).
        pub async fn disable_failing_endpoints(&self, tx: &mut Tx, failing_before: Millis, reason: &str, now: Millis, limit: u32) -> Result<Vec<Endpoint>>;

        // ---- outbox ----
        /// The outbox write: stores the message and one pending delivery per recipient endpoint,
        /// due at `first_attempt_at`, inside the caller's transaction. Returns the message id and
        /// the number of deliveries created (zero when the organisation has no enabled endpoint
        /// subscribed to the message's event type; the report is still kept for the pull API).
        pub async fn insert_message(&self, tx: &mut Tx, message: &NewMessage<'_>, recipients: Recipients, first_attempt_at: Millis) -> Result<(MessageId, u64)>;

        /// The outbox write for many reports at once (every sequence ending in one scheduler
        /// transaction): the messages in one statement, then one pending delivery per message and
        /// enabled endpoint of its organisation subscribed to the message's event type in
        /// another, all due at `first_attempt_at`.
        /// Answers the number of deliveries created. The report then holds the ended
        /// encounters of each reported sequence: their `report` objects are dropped from the
        /// encounter rows in the same transaction (stored once; an ended sequence is read back
        /// from its message).
        pub async fn insert_report_messages(&self, tx: &mut Tx, messages: &[NewMessage<'_>], first_attempt_at: Millis) -> Result<u64>;

        /// Claims due deliveries under a lease. A delivery is due when it is pending, its time has
        /// come, its endpoint is enabled and nobody holds an unexpired lease on it.
        ///
        /// Each claimed delivery gets its own lease token, `<owner>:<16 random hex digits>`, drawn
        /// by SQLite per row: a node's name alone would not tell its claims apart, and an attempt
        /// made under a lease that expired could then record over the claim that replaced it.
        pub async fn claim_due(&self, request: &ClaimRequest<'_>) -> Result<Vec<ClaimedDelivery>>;

        /// Records a batch of attempt outcomes in one transaction. Every attempt is recorded (it
        /// happened: the receiver saw it, and the history shows it); the delivery moves on only
        /// while it still carries the lease token of the claim the attempt was made under. If that
        /// lease expired and the delivery was claimed again, by another node or by this one, the
        /// newer claim decides what happens next and the stale outcome leaves the status, the
        /// attempt count, the schedule and the lease alone.
        pub async fn record_outcomes(&self, outcomes: &[AttemptOutcome], now: Millis) -> Result<()>;

        /// One endpoint's attempts made at or after `since` (first attempts and retries):
        /// counts by result (2xx or not), the latest of each, and how many took each duration
        /// in milliseconds, from which percentiles are exact. One query over one range of the
        /// index on (endpoint, attempted_at); its answer has one row per distinct duration, so
        /// its size is bounded by the attempt timeout, not by the attempts. Empty for another
        /// organisation's endpoint.
        pub async fn endpoint_attempt_stats(&self, org: OrgId, endpoint: EndpointId, since: Millis) -> Result<AttemptStats>;

        /// Gives leases back without an attempt (shutting down with claimed work not started).
        /// Each `(delivery, lease token)` pair releases only the claim that token names, the same
        /// rule as [`Store::record_outcomes`]: a lease that expired and was claimed again stays
        /// with the newer claim.
        pub async fn release_leases(&self, claims: &[(DeliveryId, &str)]) -> Result<()>;

        /// The earliest future time a pending delivery falls due, to sleep exactly until then.
        pub async fn next_due_after(&self, now: Millis) -> Result<Option<Millis>>;

        /// A page of the organisation's deliveries, newest first, with their attempts.
        pub async fn list_deliveries(&self, org: OrgId, filter: &DeliveryFilter, before: Option<DeliveryId>, limit: u32) -> Result<Vec<Delivery>>;

        /// One of the organisation's deliveries with its attempts.
        pub async fn get_delivery(&self, org: OrgId, id: DeliveryId) -> Result<Option<Delivery>>;

        /// Queues one more attempt now. A pending delivery is brought forward and keeps its
        /// schedule; a delivered or failed one gets a single manual attempt. `None` when there
        /// is no such delivery, or its endpoint is deleted or disabled (it could never be
        /// attempted, so it is left as it is).
        pub async fn retry_delivery(&self, org: OrgId, id: DeliveryId, now: Millis) -> Result<Option<Delivery>>;

        /// Starts a bulk recovery of one of the organisation's endpoints: every delivery that
        /// became `failed` at or after `since` and before `until` gets one more attempt, as
        /// [`Store::advance_recovery`] reaches it. `None` for another organisation's or a
        /// deleted endpoint.
        pub async fn create_recovery(&self, org: OrgId, endpoint: EndpointId, since: Millis, until: Millis, now: Millis) -> Result<Option<Recovery>>;

        /// One of the organisation's recoveries of `endpoint`.
        pub async fn get_recovery(&self, org: OrgId, endpoint: EndpointId, id: RecoveryId) -> Result<Option<Recovery>>;

        /// Recoveries still running, oldest first, at most `limit`: the dispatcher's work list.
        pub async fn unfinished_recoveries(&self, limit: u32) -> Result<Vec<RecoveryId>>;

        /// Advances a running recovery by one batch, in one transaction: its endpoint's next
        /// (by id) at most `batch` deliveries after its cursor that are `failed` and became so
        /// in its window go back to `pending`, due at `now`, for one manual attempt; the cursor
        /// moves past them; the recovery finishes when fewer than `batch` were found.
        /// Idempotent: only `failed` rows move (conditional UPDATE), so a delivery already
        /// queued again (by this job run twice, another node, another recovery of the same
        /// window, or a manual retry) is not queued twice, and one that failed again after the
        /// window is outside it. Answers the recovery as it now stands (`None`: no such job).
        pub async fn advance_recovery(&self, id: RecoveryId, batch: u32, now: Millis) -> Result<Option<Recovery>>;

        /// Ended sequences' reports in the order they were queued, after the cursor.
        pub async fn list_reports(&self, org: OrgId, event_type: &str, after: Option<MessageId>, limit: u32) -> Result<Vec<StoredReport>>;

        /// Pending deliveries and the creation time of the oldest, for metrics.
        pub async fn queue_stats(&self) -> Result<QueueStats>;

        // ---- sequences ----
        pub async fn create_assistant(&self, org: OrgId, name: &str, channel: Channel, config: &serde_json::Value, custom_fields: &serde_json::Value, now: Millis) -> Result<Assistant>;

        pub async fn get_assistant(&self, org: OrgId, id: AssistantId) -> Result<Option<Assistant>>;

        pub async fn list_assistants(&self, org: OrgId, after: Option<AssistantId>, limit: u32) -> Result<Vec<Assistant>>;

        /// Creates a template at version 1.
        pub async fn create_template(&self, org: OrgId, name: &str, definition: &serde_json::Value, now: Millis) -> Result<TemplateVersion>;

        /// Adds a version; running sequences keep the version they were enrolled on.
        pub async fn update_template(&self, org: OrgId, id: TemplateId, name: Option<&str>, definition: &serde_json::Value, now: Millis) -> Result<Option<TemplateVersion>>;

        /// A template at its current version.
        pub async fn get_template(&self, org: OrgId, id: TemplateId) -> Result<Option<TemplateVersion>>;

        /// One template version by its row id (what a sequence was enrolled on).
        pub async fn get_template_version(&self, version_id: TemplateVersionId) -> Result<Option<TemplateVersion>>;

        pub async fn list_templates(&self, org: OrgId, after: Option<TemplateId>, limit: u32) -> Result<Vec<TemplateVersion>>;

        /// The sequence an idempotency key created, if any, with its request's fingerprint.
        pub async fn sequence_by_idempotency_key(&self, tx: &mut Tx, org: OrgId, key: &str) -> Result<Option<KeyedSequence>>;

        /// Inserts a sequence in the caller's transaction. A repeated idempotency key answers the
        /// earlier sequence's id: as `SameIdempotencyKey` when the fingerprints match (or the
        /// earlier one has none), as `IdempotencyKeyReused` when they differ; a number already
        /// running in this template is refused.
        pub async fn insert_sequence(&self, tx: &mut Tx, new: &NewSequence<'_>) -> Result<std::result::Result<SequenceRow, InsertSequenceError>>;

        /// Inserts many new sequences in a few statements, in order (idempotency keys are the
        /// caller's to look up first).
        /// Answers, per row, the stored sequence or `None` when the number is already in a
        /// running sequence of that template (including one inserted earlier in `rows`).
        ///
        /// Ids are assigned by the database (`RETURNING`), so concurrent inserters on separate
        /// connections never compute the same one. Each returned row is matched back to its
        /// input by what was inserted (the first input still unmatched with the same values):
        /// inputs that agree on every stored value are interchangeable, and when the
        /// one-running-sequence rule skips one of several such inputs, it is a later one (rows
        /// are inserted in order), which the first-unmatched rule leaves `None`.
        pub async fn insert_sequences(&self, tx: &mut Tx, rows: &[NewSequence<'_>]) -> Result<Vec<Option<SequenceRow>>>;

        pub async fn get_sequence(&self, org: OrgId, id: SequenceId) -> Result<Option<SequenceRow>>;

        /// The sequence, read inside a write transaction (to change it).
        pub async fn sequence_for_update(&self, tx: &mut Tx, id: SequenceId) -> Result<Option<SequenceRow>>;

        /// The organisation's sequences that `filter` selects, after the cursor in the filter's
        /// order, at most `limit` ([`Store::list_sequences`] is the unfiltered list).
        pub async fn search_sequences(&self, org: OrgId, filter: &SequenceFilter, after: Option<SequenceId>, limit: u32) -> Result<Vec<SequenceRow>>;

        /// The ids of the sequences due at `now`, earliest first, at most `limit`: read from the
        /// due index alone (no row is read), outside any transaction. The caller claims them
        /// with [`Store::claim_due_sequences`].
        pub async fn due_sequence_ids(&self, now: Millis, limit: u32) -> Result<Vec<SequenceId>>;

        /// Claims those of the sequences `ids` still due at `now` (active, wake time passed), in
        /// id order, for the caller's write transaction: until it ends, no other transaction
        /// (on any connection, process or node) claims, moves or locks them, and the caller
        /// moves them before it commits, so a sequence is run by one claimer at a time and a
        /// rolled-back or crashed claim leaves it due for the next. A sequence paused,
        /// cancelled, run or claimed since its id was read is left out. The claim is a lock
        /// held to commit, not a lease: the due loop's work on a sequence never outlives its
        /// transaction, and a lock dies with its connection, so a crashed node holds nothing
        /// (SQLite: the `IMMEDIATE` transaction's write lock; PostgreSQL: `FOR UPDATE SKIP
        /// LOCKED`).
        pub async fn claim_due_sequences(&self, tx: &mut Tx, ids: &[SequenceId], now: Millis) -> Result<Vec<SequenceRow>>;

        /// The earliest future wake-up, to sleep exactly until then.
        pub async fn next_sequence_wake(&self) -> Result<Option<Millis>>;

        /// Appends many history entries in one statement, in the given order:
        /// (sequence id, at, kind, detail).
        pub async fn add_sequence_events(&self, tx: &mut Tx, events: &[NewSequenceEvent]) -> Result<()>;

        /// Writes the engine's new state of many sequences in one statement. Each id at most once.
        pub async fn update_sequences(&self, tx: &mut Tx, updates: &[(SequenceId, SequenceUpdate<'_>)]) -> Result<()>;

        pub async fn sequence_events(&self, sequence_id: SequenceId, after: Option<SequenceEventId>, limit: u32) -> Result<Vec<SequenceEvent>>;

        /// Records many encounters before the provider is asked, in two statements (the
        /// rows' org, sequence, step, attempt, channel, assistant, number and created_at). Answers, for each,
        /// `Some((id, ordinal))` if inserted, `None` if that step attempt had one already. The
        /// ordinal counts every encounter of the sequence before it, this batch's included.
        pub async fn insert_encounters(&self, tx: &mut Tx, encounters: &[&EncounterRow]) -> Result<Vec<Option<InsertedEncounter>>>;

        /// Marks many encounters as requested in one statement, each only while it is still
        /// `created`; answers how many were marked (a repeated record marks none).
        pub async fn mark_encounters_requested(&self, tx: &mut Tx, requested: &[RequestedEncounter]) -> Result<u64>;

        /// Ends an encounter with its outcome and report object (`None`: the report stored when
        /// it was requested stands). `false` if it already ended.
        pub async fn end_encounter(&self, tx: &mut Tx, id: EncounterId, outcome: &str, report: Option<&serde_json::Value>, now: Millis) -> Result<bool>;

        /// [`Store::end_encounter`] for many encounters in one statement: (id, outcome, report or
        /// `None` to keep the stored one, ended_at). Answers, for each, whether it ended now (`false`: it had ended already).
        pub async fn end_encounters(&self, tx: &mut Tx, ends: &[EncounterEnd<'_>]) -> Result<Vec<bool>>;

        /// Several sequences read inside a write transaction (to change them), in no order.
        pub async fn sequences_for_update(&self, tx: &mut Tx, ids: &[SequenceId]) -> Result<Vec<SequenceRow>>;

        /// The encounter a provider knows by `provider_ref` (a Vapi call id), inside a write
        /// transaction. Provider ids are unique per provider; the channel tells providers apart.
        pub async fn encounter_by_provider_ref(&self, tx: &mut Tx, channel: Channel, provider_ref: &str) -> Result<Option<EncounterRow>>;

        /// Records the provider's status of a running encounter (found by the provider's id, as
        /// [`Store::encounter_by_provider_ref`]), only moving forward in `order` (callbacks may
        /// arrive out of order). `false` when it changed nothing.
        pub async fn set_provider_status(&self, channel: Channel, provider_ref: &str, status: &str, order: &[&str]) -> Result<bool>;

        /// Encounters with a provider whose end was expected by `now` but never reported (no
        /// outcome yet): the provider's callback may have been lost.
        pub async fn overdue_provider_encounters(&self, now: Millis, limit: u32) -> Result<Vec<EncounterRow>>;

        /// Moves the time a running encounter is next looked at.
        pub async fn postpone_encounter_end(&self, id: EncounterId, ends_at: Millis) -> Result<()>;

        /// An encounter still waiting for its provider (no outcome) whose time is up at `now`,
        /// by id, inside a write transaction: `None` if it ended or was moved on meanwhile.
        pub async fn overdue_open_encounter(&self, tx: &mut Tx, id: EncounterId, now: Millis) -> Result<Option<EncounterRow>>;

        /// Stores a running conversation's state and when it times out.
        pub async fn save_conversation(&self, tx: &mut Tx, id: EncounterId, conversation: &str, ends_at: Millis) -> Result<()>;

        /// The ids of the requested encounters whose end is due at `now` and known (the
        /// simulator's, and a provider's once it reported), earliest first, at most `limit`: read
        /// from the due index alone, outside any transaction. The caller claims them with
        /// [`Store::due_encounters`].
        pub async fn due_encounter_ids(&self, now: Millis, limit: u32) -> Result<Vec<EncounterId>>;

        /// Those of the encounters `ids` still due to end at `now`, in id order, read inside the
        /// caller's write transaction, without their report objects (`report` is `None`: ending
        /// keeps the stored one).
        pub async fn due_encounters(&self, tx: &mut Tx, ids: &[EncounterId], now: Millis) -> Result<Vec<EncounterRow>>;

        /// Encounters committed but never confirmed as requested, older than `before`: after a
        /// crash the provider may or may not have received them. An encounter on one of
        /// `provider_channels` counts only once claimed (claimed before `before`): unclaimed, it
        /// is still in the provider worker's queue and certainly not sent.
        pub async fn unconfirmed_encounters(&self, before: Millis, provider_channels: &[Channel], limit: u32) -> Result<Vec<EncounterRow>>;

        /// Ids of the encounters committed for a provider on one of `channels` and not yet
        /// claimed (the provider worker's queue), oldest first, at most `limit`.
        pub async fn unclaimed_encounter_ids(&self, channels: &[Channel], limit: u32) -> Result<Vec<EncounterId>>;

        // ---- provider capacity ----
        /// One provider channel's load: encounters holding a slot (claimed for their request
        /// and not ended: being asked, or in progress), per organisation, and how many queued
        /// encounters are recorded as waiting for capacity. A plain read (metrics, the
        /// governor's choice); the claim re-counts with [`Store::provider_slots_in_use`].
        pub async fn provider_load(&self, channel: Channel) -> Result<ProviderLoad>;

        /// The slots in use on `channel` (as [`Store::provider_load`], all organisations), read
        /// inside the caller's write transaction: the claim that takes a slot counts first, so
        /// two claimers (two nodes) never take more slots than there are.
        pub async fn provider_slots_in_use(&self, tx: &mut Tx, channel: Channel) -> Result<u64>;

        /// The provider queue on `channel` (committed, unclaimed), at most `per_org` per
        /// organisation, each organisation's in due (id) order, ordered by rank in its
        /// organisation then id: round robin over organisations. A plain read: hints only.
        pub async fn queued_encounters(&self, channel: Channel, per_org: u32) -> Result<Vec<QueuedEncounter>>;

        /// Records that every queued encounter on `channel` except `except` waits for provider
        /// capacity since `now`; answers only those not already recorded as waiting, so each
        /// wait is recorded once (conditional UPDATE: two callers never both answer one).
        pub async fn mark_capacity_waits(&self, tx: &mut Tx, channel: Channel, except: &[EncounterId], now: Millis) -> Result<Vec<CapacityWait>>;

        /// Puts a claimed encounter back in the provider queue (unclaimed, waiting for capacity
        /// since `now`) after the provider proved it did not start it for lack of capacity:
        /// only while it has no outcome and its provider reference is still `provider_ref`
        /// (`None`: asked, no answer recorded). `None` when it had moved on. It is claimed (and
        /// re-checked) again before it is sent.
        pub async fn requeue_encounter(&self, tx: &mut Tx, id: EncounterId, provider_ref: Option<&str>, now: Millis) -> Result<Option<CapacityWait>>;

        /// An encounter by id, outside any transaction (whatever its state).
        pub async fn encounter_by_id(&self, id: EncounterId) -> Result<Option<EncounterRow>>;

        /// An encounter by id inside a write transaction (whatever its state).
        pub async fn encounter_for_update(&self, tx: &mut Tx, id: EncounterId) -> Result<Option<EncounterRow>>;

        /// Claims a committed encounter for its provider request (`created` and unclaimed →
        /// claimed at `now`). `false` when it was claimed, withdrawn or requested already: only
        /// one claimer ever sends it.
        pub async fn claim_encounter(&self, tx: &mut Tx, id: EncounterId, now: Millis) -> Result<bool>;

        /// Removes an encounter that was never handed to its provider (`created`, and known not
        /// to have gone out: unclaimed, or refused by the provider before it was placed), so the
        /// step attempt can run again. `false` if it had moved on.
        pub async fn withdraw_encounter(&self, tx: &mut Tx, id: EncounterId) -> Result<bool>;

        /// Removes a sequence's encounters that were committed but not yet claimed for their
        /// provider (a cancel: they never went out). Answers their ids.
        pub async fn withdraw_unclaimed_encounters(&self, tx: &mut Tx, sequence_id: SequenceId) -> Result<Vec<EncounterId>>;

        /// A sequence's encounters that have not ended, inside a write transaction.
        pub async fn open_encounters_of_sequence(&self, tx: &mut Tx, sequence_id: SequenceId) -> Result<Vec<EncounterRow>>;

        /// Records a provider's id for an encounter whose placement was unknown (found by reading
        /// the provider's list back), with when it is next looked at.
        pub async fn adopt_provider_ref(&self, tx: &mut Tx, id: EncounterId, provider_ref: &str, ends_at: Millis) -> Result<bool>;

        /// Every organisation that has texted `phone_number` from one of `senders` (any SMS
        /// encounter, ended or not; rows without a recorded sender count for every sender), inside
        /// a write transaction: an opt-out on a sender suppresses the number for each of them.
        pub async fn sms_organizations(&self, tx: &mut Tx, phone_number: &str, senders: &[&str]) -> Result<Vec<OrgId>>;

        /// Records the sender an SMS encounter goes out from.
        pub async fn set_encounter_sender(&self, tx: &mut Tx, id: EncounterId, sender: &str) -> Result<()>;


        /// Records an inbound text's `MessageSid` as processed; `false` if it was already (a
        /// replay, or Twilio repeating the webhook).
        pub async fn record_inbound_message(&self, tx: &mut Tx, sid: &str, now: Millis) -> Result<bool>;

        /// Whether an inbound text's `MessageSid` was processed already.
        pub async fn inbound_message_seen(&self, sid: &str) -> Result<bool>;

        /// Whether an SMS encounter with `phone_number`, from one of `senders` (or an
        /// unrecorded sender), is claimed for its opening text and not yet recorded as
        /// requested: a reply arriving now overtook the record of the text it answers.
        pub async fn sms_opening_in_flight(&self, phone_number: &str, senders: &[&str]) -> Result<bool>;

        /// Forgets processed inbound `MessageSid`s received before `before` (bounded retention),
        /// at most `limit` at a time; answers how many.
        pub async fn forget_inbound_messages(&self, before: Millis, limit: u32) -> Result<u64>;

        /// When the next encounter open with a provider is due for a look (its report overdue).
        pub async fn next_open_provider_end(&self) -> Result<Option<Millis>>;

        pub async fn next_encounter_end(&self) -> Result<Option<Millis>>;

        /// A sequence's encounters in order, for its report.
        pub async fn sequence_encounters(&self, sequence_id: SequenceId) -> Result<Vec<EncounterRow>>;

        /// The encounters of several sequences, in (step, attempt) order per sequence, inside a
        /// write transaction: one statement for every sequence ending in a batch.
        pub async fn encounters_of_sequences_tx(&self, tx: &mut Tx, sequence_ids: &[SequenceId]) -> Result<std::collections::HashMap<SequenceId, Vec<EncounterRow>>>;

        /// Serialises contact decisions per (organisation, number) inside the caller's
        /// transaction: upserts each pair's `contact_locks` row (sorted and deduplicated, so
        /// two transactions locking overlapping sets take them in one order). Call it before
        /// reading what decides a contact (contact caps: [`Store::contacts_since`];
        /// suppression: [`Store::is_suppressed`]). On SQLite the write transaction already
        /// holds the database's write lock; on a backend with row locks the upsert's lock is
        /// held to commit, so a second transaction for the same number waits, then reads what
        /// the first committed (its encounter, its suppression). `ON CONFLICT DO UPDATE` (not
        /// `DO NOTHING`) so that an existing row is written, and therefore locked, too.
        pub async fn lock_contacts(&self, tx: &mut Tx, numbers: &[(OrgId, &str)], now: Millis) -> Result<()>;

        /// Contacts (encounters started) with a number since `since`, for contact caps.
        pub async fn contacts_since(&self, tx: &mut Tx, org: OrgId, phone_number: &str, since: Millis) -> Result<Vec<Millis>>;

        /// The delivered body of an ended sequence's report.
        pub async fn report_body(&self, org: OrgId, sequence_id: SequenceId) -> Result<Option<Vec<u8>>>;

        /// The latest engine time stored (sequence updates, encounter starts and ends), so that a
        /// sped-up engine clock resumes after a restart without going back in time.
        pub async fn latest_engine_time(&self) -> Result<Option<Millis>>;

        pub async fn is_suppressed(&self, tx: &mut Tx, org: OrgId, phone_number: &str) -> Result<bool>;

        /// [`Store::is_suppressed`] for many (organisation, number) pairs in one statement: one
        /// answer per pair, in order.
        pub async fn are_suppressed(&self, tx: &mut Tx, numbers: &[(OrgId, &str)]) -> Result<Vec<bool>>;

        /// Adds a number (idempotent: an existing entry keeps its reason and time, except that a
        /// patient's opt-out turns an operator's entry into an opt-out from now, so that it is
        /// protected as one). The change is recorded in the suppression history in the same transaction, with
        /// the patient as its author for an opt-out and the system otherwise; the API names its
        /// caller through [`Store::suppress_by`].
        pub async fn suppress(&self, tx: &mut Tx, org: OrgId, phone_number: &str, reason: &str, now: Millis) -> Result<()>;

        /// [`Store::suppress`] with the change's author named (`api-key:<id>`, `patient`, ...).
        pub async fn suppress_by(&self, tx: &mut Tx, org: OrgId, phone_number: &str, reason: &str, actor: &str, now: Millis) -> Result<()>;

        /// Removes a number from the organisation's list, recording the removal (and the consent,
        /// when one is given) in the history in the same transaction. A patient's opt-out is
        /// removed only when `consent` is given; the caller validates the consent's content.
        pub async fn unsuppress(&self, org: OrgId, phone_number: &str, actor: &str, consent: Option<ConsentRecord<'_>>, now: Millis) -> Result<Unsuppressed>;

        /// Every change to one number's entry on the organisation's list, oldest first (empty
        /// when the number was never listed by this organisation).
        pub async fn suppression_history(&self, org: OrgId, phone_number: &str) -> Result<Vec<SuppressionChange>>;

        pub async fn list_suppressions(&self, org: OrgId, after: Option<&str>, limit: u32) -> Result<Vec<Suppression>>;
    }
}

impl Store {
    /// The SMS conversations running through a provider with `phone_number` that were begun
    /// from one of `senders` (or from an unrecorded sender), newest first, at most 16.
    pub async fn open_sms_conversations(
        &self,
        tx: Option<&mut Tx>,
        phone_number: &str,
        senders: &[&str],
    ) -> Result<Vec<EncounterRow>> {
        match (&self.backend, tx.map(|tx| &mut tx.0)) {
            (Backend::Sqlite(db), Some(TxInner::Sqlite(tx))) => {
                db.open_sms_conversations(Some(tx), phone_number, senders)
                    .await
            }
            (Backend::Sqlite(db), None) => {
                db.open_sms_conversations(None, phone_number, senders).await
            }
            (Backend::Postgres(db), Some(TxInner::Postgres(tx))) => {
                db.open_sms_conversations(Some(tx), phone_number, senders)
                    .await
            }
            (Backend::Postgres(db), None) => {
                db.open_sms_conversations(None, phone_number, senders).await
            }
            _ => Err(StoreError::ForeignTransaction),
        }
    }
}

/// Caller numbers (`/v1/caller-numbers`): the organisation's numbers to call and text from,
/// and the reads and writes of choosing one at a claim.
impl Store {
    store_api! {
        /// Creates a caller number. [`StoreError::Conflict`] when the organisation has that
        /// number on that channel already.
        pub async fn create_caller_number(&self, org: OrgId, new: &NewCallerNumber<'_>, now: Millis) -> Result<CallerNumber>;

        /// One of the organisation's caller numbers (`None` for another organisation's).
        pub async fn get_caller_number(&self, org: OrgId, id: CallerNumberId) -> Result<Option<CallerNumber>>;

        /// A page of the organisation's caller numbers, by id, after the cursor.
        pub async fn list_caller_numbers(&self, org: OrgId, after: Option<CallerNumberId>, limit: u32) -> Result<Vec<CallerNumber>>;

        /// Applies a patch; answers the number as it is now (`None`: not the organisation's).
        pub async fn update_caller_number(&self, org: OrgId, id: CallerNumberId, patch: &CallerNumberPatch, now: Millis) -> Result<Option<CallerNumber>>;

        /// Deletes a caller number; answers whether it was the organisation's. Encounters keep
        /// the number they went out from.
        pub async fn delete_caller_number(&self, org: OrgId, id: CallerNumberId) -> Result<bool>;

        /// The organisation's enabled caller numbers on `channel` that the operator still
        /// allows it (on its allow-list, with the allowed provider id when one is set), by
        /// id, inside a claim's transaction, each with its contacts chosen at or after `since`
        /// (oldest first; read only for a number with a daily cap, and not counting
        /// `encounter` itself). Locks the
        /// numbers' rows until the transaction ends (PostgreSQL `FOR UPDATE`; SQLite's write
        /// transaction holds the database), so concurrent choosers, on any node, choose one
        /// after the other and a cap counted here is never exceeded.
        pub async fn caller_numbers_for_choice(&self, tx: &mut Tx, org: OrgId, channel: Channel, encounter: EncounterId, since: Millis) -> Result<Vec<CallerNumberUses>>;

        /// Records on `encounter`, while it is still `created` (not yet requested), that it
        /// goes out from `number`, chosen at `now` (what the number's cap counts), and makes
        /// `now` the number's last choice (the round robin).
        pub async fn record_caller_number_choice(&self, tx: &mut Tx, encounter: EncounterId, number: &CallerNumber, now: Millis) -> Result<()>;

        /// Allows the organisation to call or text from `number` on `channel` (operator only:
        /// the CLI, never `/v1`), with the provider's id for it (required for a call number:
        /// its Vapi phoneNumberId; the caller validates). Answers whether anything changed:
        /// allowed already with another provider id, the id is replaced, on the allow-list and
        /// on the organisation's caller number of that channel and number.
        /// [`StoreError::Conflict`] when the number is allowed to another organisation, or
        /// the provider id to another number (of any organisation), on that channel, or the
        /// organisation does not exist: a number and a provider id belong to one organisation.
        pub async fn allow_caller_number(&self, org: OrgId, channel: Channel, number: &str, provider_id: Option<&str>, now: Millis) -> Result<bool>;

        /// Takes a number off the organisation's allow-list; answers whether it was on it. The
        /// organisation's caller number stays, but is no longer chosen.
        pub async fn disallow_caller_number(&self, org: OrgId, channel: Channel, number: &str) -> Result<bool>;

        /// The numbers the organisation is allowed, by channel then number.
        pub async fn allowed_caller_numbers(&self, org: OrgId) -> Result<Vec<AllowedCallerNumber>>;

        /// The allowance of `number` on `channel` for this organisation (`None`: not allowed to
        /// it, whether or not another organisation has it).
        pub async fn allowed_caller_number(&self, org: OrgId, channel: Channel, number: &str) -> Result<Option<AllowedCallerNumber>>;

        /// Whether any organisation has `number` as a caller number on `channel` (enabled or
        /// not), or an encounter went out from it (the number deleted since): an inbound text
        /// sent to it is addressed to this deployment, so a reply or a STOP is never dropped.
        pub async fn is_caller_number(&self, channel: Channel, number: &str) -> Result<bool>;
    }
}

/// PHI retention and erasure (`crate::phi` says what is purged; README, "Privacy").
impl Store {
    store_api! {
        /// Ended sequences a PHI purge should take, at most `limit`, read outside any
        /// transaction (hints: [`Store::purge_phi`] checks again under its lock). `Expired`:
        /// past their organisation's retention period and not purged yet (one range of the
        /// partial index `sequences_phi_retained` per organisation with a period); `Contact`:
        /// one organisation's ended sequences with a number, purged or not, in id order.
        pub async fn phi_purge_candidates(&self, selection: &PhiSelection<'_>, limit: u32) -> Result<Vec<SequenceId>>;

        /// Purges the PHI of those of `ids` that are ended (and, with `only_unpurged`, not
        /// purged yet) in the caller's transaction: the contact's name and external id and the
        /// variables, every encounter's report object and conversation, the PHI in every
        /// stored message body of the sequence (a delivered report, one still pending: what
        /// is sent from now on is the purged body) and receivers' answers to those messages.
        /// Ids, statuses, times, outcomes and numbers stay. Sets `phi_purged_at = now`. A row
        /// locked by another transaction is skipped (PostgreSQL: `SKIP LOCKED`; that
        /// transaction's purge, or a later pass, takes it). Answers what it purged.
        pub async fn purge_phi(&self, tx: &mut Tx, ids: &[SequenceId], only_unpurged: bool, now: Millis) -> Result<PhiPurged>;
    }
}

/// The operator dashboard's sessions and the PHI access log (`/ui`, `GET /v1/audit-log`).
impl Store {
    store_api! {
        /// Starts a dashboard session (only the token's hash is stored) and purges the
        /// sessions that have expired by `new.now`. Answers the session's id.
        pub async fn create_ui_session(&self, new: &NewUiSession<'_>) -> Result<i64>;

        /// The live session whose token hashes to `touch.token_hash`, its idle expiry moved to
        /// `touch.expires_at`; `None` when there is none, it expired (idle or absolute) or its
        /// API key was revoked.
        pub async fn touch_ui_session(&self, touch: &SessionTouch<'_>) -> Result<Option<UiSession>>;

        /// Ends a session (sign-out); answers whether there was one.
        pub async fn delete_ui_session(&self, token_hash: &[u8; 32]) -> Result<bool>;

        /// Records one access to PHI; answers the entry's id.
        pub async fn record_access(&self, entry: &NewAccessEntry<'_>) -> Result<i64>;

        /// The organisation's access log after the cursor, oldest first, or newest first (the
        /// cursor then continues below it), at most `limit`.
        pub async fn access_log(&self, org: OrgId, after: Option<i64>, newest_first: bool, limit: u32) -> Result<Vec<AccessEntry>>;

        /// The dashboard's overview of one organisation over `[query.since, query.until)`:
        /// sequences by status (running and paused now, ended in the window), encounters
        /// ended per UTC day by outcome, answered calls per contact zone and 15-minute slot of
        /// their start (at most `query.max_slots` rows), and webhook delivery attempts per UTC
        /// day (2xx share, exact nearest-rank p50/p99). Every part reads one range of an
        /// index per organisation (see ARCHITECTURE.md).
        pub async fn overview(&self, query: &OverviewQuery) -> Result<Overview>;

        /// The delivered report bodies of those of `sequence_ids` that are the organisation's
        /// and have one (the latest non-test message of each, as [`Store::report_body`]).
        pub async fn report_bodies(&self, org: OrgId, sequence_ids: &[SequenceId]) -> Result<std::collections::HashMap<SequenceId, Vec<u8>>>;

        /// The encounters of those of `sequence_ids` that are the organisation's, in (step,
        /// attempt) order per sequence (every id asked for has an entry, maybe empty): one
        /// statement for a page of reports.
        pub async fn encounters_of_sequences(&self, org: OrgId, sequence_ids: &[SequenceId]) -> Result<std::collections::HashMap<SequenceId, Vec<EncounterRow>>>;
    }

    /// The organisation's sequences, optionally of one status, oldest first after the cursor.
    pub async fn list_sequences(
        &self,
        org: OrgId,
        status: Option<SequenceStatus>,
        after: Option<SequenceId>,
        limit: u32,
    ) -> Result<Vec<SequenceRow>> {
        let filter = SequenceFilter {
            status,
            ..SequenceFilter::default()
        };
        self.search_sequences(org, &filter, after, limit).await
    }
}
