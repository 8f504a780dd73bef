//! The durable scheduler: the I/O around the pure engine.
//!
//! Every state change runs in one write transaction that reads the state it changes, applies
//! `clarion_engine::step`, performs the actions (history, suppression, encounter rows, the
//! report into the outbox) and writes the new state. So:
//!
//! - **nothing is lost**: a sequence's next wake-up is in its row; a crash at any point leaves
//!   either the old state or the new one, and the worker picks it up again;
//! - **a report is queued in the transaction that ends the sequence** (transactional outbox);
//! - **contact is at most once**: the encounter row, unique per (sequence, step, attempt), is
//!   committed before the provider is asked. An encounter committed but never confirmed (the
//!   process died in between) is reconciled: it ends as `failed` and is never sent again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use clarion_delivery::{Clock, Outbox};
use clarion_engine::{Action, Event, Note, Plan, SequenceState, StepSpec, Transition};
use clarion_store::{
    Assistant, EncounterRow, InsertSequenceError, Millis, NewSequence, OrgId, SequenceRow,
    SequenceUpdate, Store, StoreError, Tx,
};
use futures::StreamExt as _;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::definition::{self, ContactInfo, Invalid, TemplateDefinition};
use crate::fault::crash_point;
use crate::report::build_report;
use clarion_providers::llm::LlmClient;
use clarion_providers::sms_assistant::{
    Conversation, ScriptConfig, SmsEnd, respond_to, sms_report,
};
use clarion_providers::twilio::client::{SendError, TwilioClient};
use clarion_providers::twilio::keywords::Keyword;
use clarion_providers::twilio::wire::{
    InboundMessage, SendFailure, SendMessage, Sender, StatusCallback,
};
use clarion_providers::vapi::client::{CreateCallError, VapiClient};
use clarion_providers::vapi::report::{EncounterFacts, call_from_end_of_call};
use clarion_providers::vapi::wire::{CreateCallRequest, EndOfCallReport};

/// Contact caps (rolling windows, per number, across sequences and channels); 0 is no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactCaps {
    pub per_day: u32,
    pub per_week: u32,
}

impl ContactCaps {
    /// An organisation's caps: its own settings where it has them (`None`: the deployment
    /// default, `default`), or `None` when neither window is capped.
    pub fn resolve(
        default: Option<ContactCaps>,
        per_day: Option<u32>,
        per_week: Option<u32>,
    ) -> Option<ContactCaps> {
        let caps = ContactCaps {
            per_day: per_day.unwrap_or(default.map_or(0, |d| d.per_day)),
            per_week: per_week.unwrap_or(default.map_or(0, |d| d.per_week)),
        };
        (caps.per_day > 0 || caps.per_week > 0).then_some(caps)
    }
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The number the simulator calls and texts from.
    pub clinic_number: String,
    /// Sequences or encounters handled per transaction.
    pub batch_size: u32,
    /// Fallback poll when nothing wakes the loop (real time).
    pub poll_interval: Duration,
    /// The deployment's default contact caps (`[compliance]`); an organisation's own
    /// settings override them.
    pub contact_caps: Option<ContactCaps>,
    /// An encounter committed but not confirmed as requested after this long (engine time)
    /// is reconciled.
    pub reconcile_after: Duration,
    /// How much faster than real time the engine clock runs (`simulator.time_scale`).
    pub time_scale: f64,
    /// Calls go through Vapi when set (`[channels] call = "vapi"`), else the simulator.
    pub vapi: Option<VapiClient>,
    /// SMS conversations go through Twilio when set (`[channels] sms = "twilio"`), else the
    /// simulator.
    pub twilio: Option<TwilioChannel>,
    /// The model behind LLM SMS assistants (`[llm]`), when configured.
    pub llm: Option<LlmClient>,
    /// How long after a provider call is placed (engine time) Clarion reads it back with
    /// `GET /call/{id}` if its end-of-call report has not arrived, and then again as often
    /// while it has not ended.
    pub provider_report_timeout: Duration,
    /// How long after a provider call is placed (engine time) Clarion stops waiting for its
    /// end: a call neither reported nor readable by then ends `failed`.
    pub provider_give_up_after: Duration,
}

/// The Twilio SMS channel.
#[derive(Debug, Clone)]
pub struct TwilioChannel {
    pub client: TwilioClient,
    /// The public address of this Clarion (`twilio.public_base_url`), for status callbacks.
    pub public_base_url: String,
    /// The Twilio account inbound texts must come from (`AccountSid`).
    pub account_sid: String,
    /// Organisations' own senders (`[twilio.senders]`); the others share the client's.
    pub senders: HashMap<OrgId, Sender>,
}

impl TwilioChannel {
    /// The sender an organisation's texts go out from.
    pub fn sender_for(&self, org: OrgId) -> &Sender {
        self.senders.get(&org).unwrap_or(self.client.sender())
    }

    /// Every sender this deployment texts from.
    fn all_senders(&self) -> impl Iterator<Item = &Sender> {
        std::iter::once(self.client.sender()).chain(self.senders.values())
    }

    /// Whether an inbound text was sent to this deployment: from its Twilio account, to one
    /// of its numbers or Messaging Services.
    fn addressed_to_us(&self, message: &InboundMessage) -> bool {
        if message.account_sid.as_deref() != Some(self.account_sid.as_str()) {
            return false;
        }
        self.all_senders().any(|sender| match sender {
            Sender::From(number) => message.to.as_deref() == Some(number.as_str()),
            Sender::MessagingService(sid) => {
                message.messaging_service_sid.as_deref() == Some(sid.as_str())
            }
        })
    }
}

/// How a sender is recorded on an encounter and matched against inbound texts: the number, or
/// the Messaging Service sid.
fn sender_key(sender: &Sender) -> &str {
    match sender {
        Sender::From(number) => number,
        Sender::MessagingService(sid) => sid,
    }
}

/// The sender keys a Twilio message (inbound, or a status callback) names: the number it was
/// sent to or from on our side, and the Messaging Service, when present.
fn message_sender_keys<'a>(number: Option<&'a str>, service: Option<&'a str>) -> Vec<&'a str> {
    number.into_iter().chain(service).collect()
}

/// How many times a text Twilio certainly did not accept (429, connection refused) is tried.
const TWILIO_SEND_ATTEMPTS: u32 = 3;

/// How many times a call Vapi certainly did not place (429, connection refused) is tried.
const VAPI_PLACE_ATTEMPTS: u32 = 3;

/// The longest wait between two of those tries, whatever `Retry-After` says: the encounter
/// row stays unconfirmed meanwhile.
const VAPI_MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// The provider reference of a call whose placement is unknown (no call id came back).
const VAPI_UNKNOWN_PREFIX: &str = "vapi_unknown_";

/// Vapi call statuses in the order a call goes through them (`ended` comes with the
/// end-of-call report).
const VAPI_STATUS_ORDER: [&str; 4] = ["queued", "ringing", "in-progress", "forwarding"];

/// Errors of scheduler operations.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no such sequence template")]
    TemplateNotFound,
    #[error("no such sequence")]
    SequenceNotFound,
    #[error("the number is on the organisation's suppression list")]
    Suppressed,
    #[error("the number is already in a running sequence of this template")]
    AlreadyRunning,
    #[error("the sequence has ended")]
    Ended,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(&'static str),
    /// A provider could not be asked to confirm something Clarion must not take on trust
    /// (a call report matched by name only); the caller should be told to try again.
    #[error("the provider could not be reached to confirm the callback")]
    ProviderUnavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One enrollment.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub template_id: i64,
    pub contact: ContactInfo,
    pub variables: Map<String, Value>,
    pub simulation: Option<Value>,
    pub idempotency_key: Option<String>,
    pub allow_concurrent: bool,
}

/// What enrolling did.
#[derive(Debug, Clone)]
pub enum Enrolled {
    Created(SequenceRow),
    /// The idempotency key was used before: that sequence, unchanged.
    Existing(SequenceRow),
}

/// API controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Cancel,
    Pause,
    Resume,
}

/// The scheduler of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// The engine's clock (sped up under `simulator.time_scale`).
    clock: Arc<dyn Clock>,
    /// Real time, for the outbox.
    real_clock: Arc<dyn Clock>,
    outbox: Outbox,
    config: SchedulerConfig,
    wake: Notify,
    /// Wakes the provider worker: encounters were committed for Vapi or Twilio.
    provider_wake: Notify,
    /// Template versions and assistants never change once written: cached by id.
    plans: Mutex<HashMap<i64, Arc<TemplateDefinition>>>,
    assistants: Mutex<HashMap<i64, Arc<Assistant>>>,
}

/// A write transaction with the writes it buffers: history entries and sequence updates are
/// written in one statement each (every statement is a round trip to SQLite's thread), when a
/// buffered sequence is read again and before the transaction commits. So they still commit
/// atomically with the rest of the transaction.
#[derive(Debug)]
struct WriteTx {
    tx: Tx,
    events: Vec<(i64, Millis, String, Value)>,
    updates: Vec<PendingUpdate>,
    updated: HashSet<i64>,
    /// A buffered update ends a sequence (frees its number for a new enrollment).
    ends: bool,
    /// Numbers suppressed in this transaction (for answers read before it started).
    suppressed: HashSet<(OrgId, String)>,
    /// Encounters to insert (their id is not known yet).
    encounters: Vec<Started>,
    /// Encounters inserted, for the provider once the transaction is committed.
    started: Vec<Started>,
    /// Sequences ended in this transaction (as ended, with the engine time of the end),
    /// whose reports go into the outbox when the buffer is written: one read of their
    /// encounters and one outbox write for all of them.
    ending: Vec<(SequenceRow, Millis)>,
    outbox: Outbox,
    /// Real time, for the outbox.
    real_clock: Arc<dyn Clock>,
}

#[derive(Debug)]
struct PendingUpdate {
    id: i64,
    status: &'static str,
    state: String,
    next_wake_at: Option<Millis>,
    outcome_description: Option<String>,
    now: Millis,
}

impl WriteTx {
    async fn begin(inner: &Inner) -> Result<Self, StoreError> {
        Ok(Self {
            tx: inner.store.begin().await?,
            ending: Vec::new(),
            outbox: inner.outbox.clone(),
            real_clock: inner.real_clock.clone(),
            events: Vec::new(),
            updates: Vec::new(),
            updated: HashSet::new(),
            ends: false,
            suppressed: HashSet::new(),
            encounters: Vec::new(),
            started: Vec::new(),
        })
    }

    fn record(&mut self, sequence_id: i64, at: Millis, kind: String, detail: Value) {
        self.events.push((sequence_id, at, kind, detail));
    }

    async fn update(&mut self, store: &Store, update: PendingUpdate) -> Result<(), StoreError> {
        if self.updated.contains(&update.id) {
            self.flush(store).await?;
        }
        self.updated.insert(update.id);
        self.ends |= update.status == "ended";
        self.updates.push(update);
        Ok(())
    }

    /// Writes what is buffered.
    async fn flush(&mut self, store: &Store) -> Result<(), StoreError> {
        let encounters = std::mem::take(&mut self.encounters);
        let rows: Vec<&EncounterRow> = encounters.iter().map(|s| &s.encounter).collect();
        let inserted = store.insert_encounters(&mut self.tx, &rows).await?;
        for (mut started, inserted) in encounters.into_iter().zip(inserted) {
            match inserted {
                Some((id, ordinal)) => {
                    started.encounter.id = id;
                    started.ordinal = usize::try_from(ordinal).unwrap_or(usize::MAX);
                    self.started.push(started);
                }
                None => tracing::warn!(
                    sequence_id = started.sequence.id,
                    step = started.encounter.step,
                    attempt = started.encounter.attempt,
                    "encounter for this step attempt exists already; not starting it again"
                ),
            }
        }
        store
            .add_sequence_events(&mut self.tx, &self.events)
            .await?;
        self.events.clear();
        let updates: Vec<(i64, SequenceUpdate<'_>)> = self
            .updates
            .iter()
            .map(|u| {
                (
                    u.id,
                    SequenceUpdate {
                        status: u.status,
                        state: &u.state,
                        next_wake_at: u.next_wake_at,
                        outcome_description: u.outcome_description.as_deref(),
                        now: u.now,
                    },
                )
            })
            .collect();
        store.update_sequences(&mut self.tx, &updates).await?;
        self.updates.clear();
        self.updated.clear();
        self.ends = false;
        self.enqueue_reports(store).await
    }

    /// The reports of the sequences ended since the last flush, built from the encounters as
    /// this transaction left them, into the outbox.
    async fn enqueue_reports(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.ending.is_empty() {
            return Ok(());
        }
        let ending = std::mem::take(&mut self.ending);
        let ids: Vec<i64> = ending.iter().map(|(row, _)| row.id).collect();
        let mut encounters = store.encounters_of_sequences_tx(&mut self.tx, &ids).await?;
        let reports: Vec<(OrgId, clarion_webhooks::SequenceReport)> = ending
            .iter()
            .map(|(row, at)| {
                let encounters = encounters.remove(&row.id).unwrap_or_default();
                let ids = store.public_ids(row.org_id);
                (row.org_id, build_report(&ids, row, &encounters, *at))
            })
            .collect();
        let reports: Vec<(OrgId, &clarion_webhooks::SequenceReport)> =
            reports.iter().map(|(org, report)| (*org, report)).collect();
        self.outbox
            .enqueue_reports(&mut self.tx, &reports, self.real_clock.now_millis())
            .await?;
        Ok(())
    }

    /// A sequence read to change it, after any buffered update of it.
    async fn sequence_for_update(
        &mut self,
        store: &Store,
        id: i64,
    ) -> Result<Option<SequenceRow>, StoreError> {
        if self.updated.contains(&id) {
            self.flush(store).await?;
        }
        store.sequence_for_update(&mut self.tx, id).await
    }

    /// Commits; answers the encounters started (committed rows: the provider may be asked).
    async fn commit(mut self, store: &Store) -> Result<Vec<Started>, StoreError> {
        self.flush(store).await?;
        self.tx.commit().await?;
        Ok(self.started)
    }
}

/// An encounter committed in a transaction, with what the simulator needs to run it once
/// the transaction is committed (so nothing is read back).
#[derive(Debug, Clone)]
struct Started {
    /// The row as committed (status `created`).
    encounter: EncounterRow,
    /// Its index among the sequence's encounters in (step, attempt) order.
    ordinal: usize,
    sequence: SequenceRow,
}

/// How many due sequences (or encounters) one pass of the scheduler takes on at most, the
/// earliest due first. A pass works through its window in id order, `batch_size` per
/// transaction: rows with neighbouring ids share database pages, so a transaction writes a
/// few dozen pages instead of one or two per row, which is what a burst of work (thousands of
/// sequences enrolled together, whose encounters end at scattered times) would otherwise
/// cost. Something that falls due during a pass waits for the next one, at most one window
/// later. 131,072 ids are 1 MiB.
const DUE_WINDOW: u32 = 131_072;

/// The summary of a call whose placement stayed unknown and whose report never came.
const UNKNOWN_PLACEMENT_SUMMARY: &str = "Whether the call was placed is unknown (the provider \
     did not answer clearly) and no report of it came; it was not placed again.";

/// The summary of a call whose placement was unknown and which Vapi does not list among the
/// calls placed from Clarion's number.
const NOT_PLACED_SUMMARY: &str = "The provider's answer did not say whether the call was \
     placed, and the provider has no record of it: it was not placed, and not placed again.";

/// The summary of a placed call that was neither reported nor readable until Clarion gave up.
const NEVER_REPORTED_SUMMARY: &str = "The call was placed but its end was never reported and \
     could not be read back from the provider; it was not placed again.";

/// How an overdue provider encounter ends.
#[derive(Debug, Clone, Copy)]
enum OverdueEnd<'a> {
    /// An SMS conversation whose contact went quiet for the template's SMS timeout:
    /// `conversation-timeout`, as no reply at all or as unresolved after some.
    ConversationTimeout,
    /// A call whose report never came (and which could not be read back): `failed`, with
    /// `summary` saying why; it is never placed again.
    UnreportedCall { summary: &'a str },
}

/// Requests to Vapi or Twilio in flight at once when a batch starts several encounters.
/// Each is an HTTP round trip of a few hundred milliseconds: one at a time, a batch of 512
/// calls would take minutes to place. Both providers rate-limit per account (Vapi also caps
/// concurrent calls), and a 429 is retried, so a handful in flight is the useful range.
const PROVIDER_REQUESTS_IN_FLIGHT: usize = 8;

/// How long one pass over overdue provider encounters may go on starting read-backs; what
/// is left waits for the next pass.
const OVERDUE_PASS_BUDGET: Duration = Duration::from_secs(30);

/// How long an inbound Twilio `MessageSid` is remembered to refuse replays: a captured
/// request replayed within this time is refused. A year and a month: longer than any
/// sequence runs, so a replay cannot reach a conversation begun after the original.
const INBOUND_SID_RETENTION_MILLIS: Millis = 400 * 24 * 3600 * 1000;

/// How many calls one `GET /call` listing asks for when looking for an unrecorded call.
const VAPI_LIST_LIMIT: u32 = 100;

/// How many queued provider encounters the provider worker reads at a time.
const PROVIDER_QUEUE_BATCH: u32 = 64;

/// Which claim [`Scheduler::claim_for_request`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The first request: the encounter must be unclaimed, and is claimed.
    First,
    /// Another try after the provider certainly did not take it (a 429): the encounter must
    /// still be claimed and not requested; the check is made again.
    Retry,
}

/// What a window of due ids is.
#[derive(Debug, Clone, Copy)]
enum Due {
    Sequences,
    Encounters,
}

fn datetime(millis: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or_default()
}

fn millis(at: DateTime<Utc>) -> Millis {
    at.timestamp_millis()
}

fn status_text(state: &SequenceState) -> &'static str {
    match state.status {
        clarion_engine::SequenceStatus::Active => "active",
        clarion_engine::SequenceStatus::Paused => "paused",
        clarion_engine::SequenceStatus::Ended => "ended",
    }
}

fn note_kind(note: &Note) -> String {
    serde_json::to_value(note)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "note".to_owned())
}

/// The engine's plan for a stored definition and a contact's zone.
pub fn plan_for(definition: &TemplateDefinition, time_zone: &str) -> Result<Plan, SchedulerError> {
    let time_zone = definition::parse_time_zone("contact.time_zone", time_zone)?;
    let steps = definition
        .steps
        .iter()
        .map(|s| StepSpec {
            channel: if s.channel == "sms" {
                clarion_engine::Channel::Sms
            } else {
                clarion_engine::Channel::Call
            },
            assistant_id: s.assistant_id,
            delay: Duration::from_millis(s.delay_ms),
            max_attempts: s.max_attempts,
            retry_delay: Duration::from_millis(s.retry_delay_ms),
        })
        .collect();
    let stop_on = definition
        .stop_on
        .iter()
        .filter_map(|r| serde_json::from_value(Value::String(r.clone())).ok())
        .collect();
    Ok(Plan {
        steps,
        stop_on,
        calling_hours: definition
            .hours()
            .map(|(start, end)| clarion_engine::CallingHours { start, end }),
        time_zone,
        sms_timeout: Duration::from_millis(definition.sms_timeout_ms),
    })
}

/// A template version with its parsed definition, read once per enrollment batch.
#[derive(Debug)]
struct TemplateInfo {
    version: clarion_store::TemplateVersion,
    definition: TemplateDefinition,
}

/// An enrollment validated and run through the engine's `Enrolled` step, ready to insert.
#[derive(Debug)]
struct Prepared {
    org: OrgId,
    template_id: i64,
    template_version_id: i64,
    request: EnrollRequest,
    contact_json: Value,
    state: SequenceState,
    state_text: String,
    actions: Vec<Action>,
    now: Millis,
}

impl Prepared {
    fn new_sequence<'a>(&'a self, variables: &'a Value) -> NewSequence<'a> {
        NewSequence {
            org_id: self.org,
            template_id: self.template_id,
            template_version_id: self.template_version_id,
            phone_number: &self.request.contact.phone_number,
            contact: &self.contact_json,
            variables,
            simulation: self.request.simulation.as_ref(),
            status: status_text(&self.state),
            state: &self.state_text,
            next_wake_at: self.state.next_wake.map(millis),
            allow_concurrent: self.request.allow_concurrent,
            idempotency_key: None,
            now: self.now,
        }
    }
}

/// Validates one enrollment and runs the engine's `Enrolled` step (no I/O).
fn prepare_enrollment(
    org: OrgId,
    info: &TemplateInfo,
    request: EnrollRequest,
    now: Millis,
) -> Result<Prepared, SchedulerError> {
    let contact = &request.contact;
    definition::validate_e164("contact.phone_number", &contact.phone_number)?;
    let plan = plan_for(&info.definition, &contact.time_zone)?;
    let Transition { state, actions } = clarion_engine::step(
        &plan,
        &SequenceState::new(),
        &Event::Enrolled,
        datetime(now),
    );
    let state_text = serde_json::to_string(&state).map_err(|_| SchedulerError::Corrupt("state"))?;
    let contact_json =
        serde_json::to_value(contact).map_err(|_| SchedulerError::Corrupt("contact"))?;
    Ok(Prepared {
        org,
        template_id: info.version.template_id,
        template_version_id: info.version.version_id,
        request,
        contact_json,
        state,
        state_text,
        actions,
        now,
    })
}

impl Scheduler {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        real_clock: Arc<dyn Clock>,
        outbox: Outbox,
        config: SchedulerConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                real_clock,
                outbox,
                config,
                wake: Notify::new(),
                provider_wake: Notify::new(),
                plans: Mutex::default(),
                assistants: Mutex::default(),
            }),
        }
    }

    /// The deployment's default contact caps (`[compliance]`).
    pub fn default_contact_caps(&self) -> Option<ContactCaps> {
        self.inner.config.contact_caps
    }

    /// The engine's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// Wakes the worker loop (work was committed).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    async fn definition(&self, version_id: i64) -> Result<Arc<TemplateDefinition>, SchedulerError> {
        if let Some(found) = self.lock_plans().get(&version_id) {
            return Ok(found.clone());
        }
        let version = self
            .inner
            .store
            .get_template_version(version_id)
            .await?
            .ok_or(SchedulerError::Corrupt("template version missing"))?;
        let definition: TemplateDefinition = serde_json::from_value(version.definition)
            .map_err(|_| SchedulerError::Corrupt("template definition"))?;
        let definition = Arc::new(definition);
        self.lock_plans().insert(version_id, definition.clone());
        Ok(definition)
    }

    fn lock_plans(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<TemplateDefinition>>> {
        self.inner
            .plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An assistant of the organisation (cached: assistants are never updated).
    async fn assistant(&self, org: OrgId, id: i64) -> Result<Arc<Assistant>, SchedulerError> {
        if let Some(found) = self.lock_assistants().get(&id)
            && found.org_id == org
        {
            return Ok(found.clone());
        }
        let assistant = self
            .inner
            .store
            .get_assistant(org, id)
            .await?
            .ok_or(SchedulerError::Corrupt("assistant missing"))?;
        let assistant = Arc::new(assistant);
        self.lock_assistants().insert(id, assistant.clone());
        Ok(assistant)
    }

    fn lock_assistants(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Assistant>>> {
        self.inner
            .assistants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn plan_of(&self, sequence: &SequenceRow) -> Result<Plan, SchedulerError> {
        let definition = self.definition(sequence.template_version_id).await?;
        let contact: ContactInfo = serde_json::from_value(sequence.contact.clone())
            .map_err(|_| SchedulerError::Corrupt("contact"))?;
        plan_for(&definition, &contact.time_zone)
    }

    /// Validates and enrolls one contact.
    pub async fn enroll(
        &self,
        org: OrgId,
        request: EnrollRequest,
    ) -> Result<Enrolled, SchedulerError> {
        let mut results = self.enroll_many(org, vec![request]).await?;
        results
            .pop()
            .ok_or(SchedulerError::Corrupt("no enrollment result"))?
    }

    /// Enrolls several contacts in one transaction; each gets its own result.
    ///
    /// Enrollments without an idempotency key are checked against the suppression list and
    /// inserted a batch at a time (a few statements for the lot); one with a key goes
    /// through [`Scheduler::enroll_in`], which looks the key up first. Either way the
    /// results are what enrolling the requests one by one, in order, would give.
    pub async fn enroll_many(
        &self,
        org: OrgId,
        requests: Vec<EnrollRequest>,
    ) -> Result<Vec<Result<Enrolled, SchedulerError>>, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let mut templates: HashMap<i64, Option<TemplateInfo>> = HashMap::new();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let mut results: Vec<Option<Result<Enrolled, SchedulerError>>> =
            std::iter::repeat_with(|| None)
                .take(requests.len())
                .collect();
        let mut batch: Vec<(usize, Prepared)> = Vec::new();
        for (index, request) in requests.into_iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                templates.entry(request.template_id)
            {
                let template = self
                    .inner
                    .store
                    .get_template(org, request.template_id)
                    .await?
                    .map(|version| {
                        serde_json::from_value(version.definition.clone())
                            .map(|definition| TemplateInfo {
                                version,
                                definition,
                            })
                            .map_err(|_| SchedulerError::Corrupt("template definition"))
                    })
                    .transpose()?;
                slot.insert(template);
            }
            let Some(Some(template)) = templates.get(&request.template_id) else {
                results[index] = Some(Err(SchedulerError::TemplateNotFound));
                continue;
            };
            if request.idempotency_key.is_some() {
                self.enroll_batch(&mut tx, std::mem::take(&mut batch), &mut results, now)
                    .await?;
                results[index] = Some(self.enroll_in(&mut tx, org, template, request, now).await);
                continue;
            }
            match prepare_enrollment(org, template, request, now) {
                Ok(prepared) => batch.push((index, prepared)),
                Err(error) => results[index] = Some(Err(error)),
            }
        }
        self.enroll_batch(&mut tx, batch, &mut results, now).await?;
        tx.commit(&self.inner.store).await?;
        self.wake();
        results
            .into_iter()
            .map(|result| result.ok_or(SchedulerError::Corrupt("no enrollment result")))
            .collect()
    }

    /// Enrolls prepared contacts (no idempotency keys) in one go, inside `tx`.
    async fn enroll_batch(
        &self,
        tx: &mut WriteTx,
        batch: Vec<(usize, Prepared)>,
        results: &mut [Option<Result<Enrolled, SchedulerError>>],
        now: Millis,
    ) -> Result<(), SchedulerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let store = &self.inner.store;
        let numbers: Vec<(OrgId, &str)> = batch
            .iter()
            .map(|(_, p)| (p.org, p.request.contact.phone_number.as_str()))
            .collect();
        let suppressed = store.are_suppressed(&mut tx.tx, &numbers).await?;
        let mut allowed = Vec::with_capacity(batch.len());
        for ((index, prepared), suppressed) in batch.into_iter().zip(suppressed) {
            if suppressed {
                results[index] = Some(Err(SchedulerError::Suppressed));
            } else {
                allowed.push((index, prepared));
            }
        }
        if tx.ends {
            // A sequence ended in this transaction no longer holds its number.
            tx.flush(store).await?;
        }
        let variables: Vec<Value> = allowed
            .iter()
            .map(|(_, p)| Value::Object(p.request.variables.clone()))
            .collect();
        let rows: Vec<NewSequence<'_>> = allowed
            .iter()
            .zip(&variables)
            .map(|((_, p), variables)| p.new_sequence(variables))
            .collect();
        let inserted = store.insert_sequences(&mut tx.tx, &rows).await?;
        drop(rows);
        for ((index, prepared), row) in allowed.into_iter().zip(inserted) {
            results[index] = Some(match row {
                Some(row) => {
                    self.perform(tx, &row, &prepared.state, &prepared.actions, now)
                        .await?;
                    Ok(Enrolled::Created(row))
                }
                None => Err(SchedulerError::AlreadyRunning),
            });
        }
        Ok(())
    }

    async fn enroll_in(
        &self,
        tx: &mut WriteTx,
        org: OrgId,
        info: &TemplateInfo,
        request: EnrollRequest,
        now: Millis,
    ) -> Result<Enrolled, SchedulerError> {
        let store = &self.inner.store;
        let template = &info.version;
        let contact = &request.contact;
        definition::validate_e164("contact.phone_number", &contact.phone_number)?;
        let plan = plan_for(&info.definition, &contact.time_zone)?;
        if store
            .is_suppressed(&mut tx.tx, org, &contact.phone_number)
            .await?
        {
            // A replayed request (same idempotency key) still gets the sequence the first one
            // created; a suppressed number never gets a new one.
            if let Some(key) = &request.idempotency_key
                && let Some(existing) = self.existing_by_key(tx, org, key).await?
            {
                return Ok(Enrolled::Existing(existing));
            }
            return Err(SchedulerError::Suppressed);
        }
        let Transition { state, actions } = clarion_engine::step(
            &plan,
            &SequenceState::new(),
            &Event::Enrolled,
            datetime(now),
        );
        let state_text =
            serde_json::to_string(&state).map_err(|_| SchedulerError::Corrupt("state"))?;
        let contact_json =
            serde_json::to_value(contact).map_err(|_| SchedulerError::Corrupt("contact"))?;
        let variables = Value::Object(request.variables.clone());
        let new = NewSequence {
            org_id: org,
            template_id: template.template_id,
            template_version_id: template.version_id,
            phone_number: &contact.phone_number,
            contact: &contact_json,
            variables: &variables,
            simulation: request.simulation.as_ref(),
            status: status_text(&state),
            state: &state_text,
            next_wake_at: state.next_wake.map(millis),
            allow_concurrent: request.allow_concurrent,
            idempotency_key: request.idempotency_key.as_deref(),
            now,
        };
        if tx.ends {
            // A sequence ended in this transaction no longer holds its number.
            tx.flush(store).await?;
        }
        let row = match store.insert_sequence(&mut tx.tx, &new).await? {
            Ok(row) => row,
            Err(InsertSequenceError::SameIdempotencyKey(id)) => {
                let existing = tx
                    .sequence_for_update(store, id)
                    .await?
                    .ok_or(SchedulerError::Corrupt("idempotent sequence vanished"))?;
                return Ok(Enrolled::Existing(existing));
            }
            Err(InsertSequenceError::AlreadyRunning) => return Err(SchedulerError::AlreadyRunning),
        };
        self.perform(tx, &row, &state, &actions, now).await?;
        Ok(Enrolled::Created(row))
    }

    async fn existing_by_key(
        &self,
        tx: &mut WriteTx,
        org: OrgId,
        key: &str,
    ) -> Result<Option<SequenceRow>, SchedulerError> {
        let existing = self
            .inner
            .store
            .sequence_id_by_idempotency_key(&mut tx.tx, org, key)
            .await?;
        match existing {
            Some(id) => Ok(tx.sequence_for_update(&self.inner.store, id).await?),
            None => Ok(None),
        }
    }

    /// Cancel, pause or resume.
    pub async fn control(
        &self,
        org: OrgId,
        id: i64,
        control: Control,
    ) -> Result<SequenceRow, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let sequence = tx
            .sequence_for_update(&self.inner.store, id)
            .await?
            .filter(|s| s.org_id == org)
            .ok_or(SchedulerError::SequenceNotFound)?;
        if sequence.status == "ended" {
            return Err(SchedulerError::Ended);
        }
        let event = match control {
            Control::Cancel => Event::Cancel,
            Control::Pause => Event::Pause,
            Control::Resume => Event::Resume,
        };
        if control == Control::Cancel {
            self.close_open_encounters(&mut tx, &sequence, now).await?;
        }
        self.transition(&mut tx, &sequence, &event, now).await?;
        tx.commit(&self.inner.store).await?;
        self.inner.outbox.wake();
        self.wake();
        self.inner
            .store
            .get_sequence(org, id)
            .await?
            .ok_or(SchedulerError::SequenceNotFound)
    }

    /// A cancel closes what its sequence still has open, before the report is built: an
    /// encounter committed but not yet claimed for its provider is withdrawn (it never went
    /// out, and now never will); an SMS conversation open with Twilio ends (the patient's
    /// next text is no longer answered; a STOP still suppresses). A call in progress is left
    /// to end: it cannot be unsaid, and its outcome still counts for suppression.
    async fn close_open_encounters(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let withdrawn = store
            .withdraw_unclaimed_encounters(&mut tx.tx, sequence.id)
            .await?;
        for encounter_id in withdrawn {
            tracing::info!(
                encounter_id,
                sequence_id = sequence.id,
                "cancelled before its provider request; withdrawn"
            );
        }
        for encounter in store
            .open_encounters_of_sequence(&mut tx.tx, sequence.id)
            .await?
        {
            let open_conversation = encounter.channel == "sms"
                && encounter.status == "requested"
                && encounter.outcome.is_none();
            if !open_conversation {
                continue;
            }
            let conversation = Self::conversation_of(&encounter);
            let report = self.conversation_report(&encounter, &conversation, SmsEnd::Error, now);
            let mut report =
                serde_json::to_value(&report).map_err(|_| SchedulerError::Corrupt("sms"))?;
            // Not an error of the channel: the organisation closed it.
            report["ended_reason"] = Value::String("unknown".to_owned());
            store
                .end_encounter(&mut tx.tx, encounter.id, "unresolved", Some(&report), now)
                .await?;
        }
        Ok(())
    }

    /// Applies one event to a sequence inside `tx` and performs the resulting actions.
    /// The encounters it starts are inserted with the transaction's buffered writes, and
    /// answered by [`WriteTx::commit`] (the provider is asked after commit).
    async fn transition(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        event: &Event,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let plan = self.plan_of(sequence).await?;
        let state: SequenceState =
            serde_json::from_str(&sequence.state).map_err(|_| SchedulerError::Corrupt("state"))?;
        let Transition { state, actions } =
            clarion_engine::step(&plan, &state, event, datetime(now));
        if actions.is_empty() && state.next_wake.map(millis) == sequence.next_wake_at {
            return Ok(());
        }
        self.perform(tx, sequence, &state, &actions, now).await
    }

    /// Stores the new state and performs the engine's actions, in `tx`.
    async fn perform(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        state: &SequenceState,
        actions: &[Action],
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let mut ended = false;
        for action in actions {
            match action {
                Action::Record(note) => {
                    let detail = serde_json::to_value(note).unwrap_or(Value::Null);
                    tx.record(sequence.id, now, note_kind(note), detail);
                }
                Action::SuppressNumber => {
                    store
                        .suppress(
                            &mut tx.tx,
                            sequence.org_id,
                            &sequence.phone_number,
                            "opt-out",
                            now,
                        )
                        .await?;
                    tx.suppressed
                        .insert((sequence.org_id, sequence.phone_number.clone()));
                }
                Action::StartEncounter {
                    step,
                    attempt,
                    channel,
                    assistant_id,
                } => {
                    let step = i64::try_from(*step).unwrap_or(i64::MAX);
                    let attempt = i64::from(*attempt);
                    tx.encounters.push(Started {
                        encounter: EncounterRow {
                            id: 0,
                            org_id: sequence.org_id,
                            sequence_id: sequence.id,
                            step,
                            attempt,
                            channel: channel.as_str().to_owned(),
                            assistant_id: *assistant_id,
                            phone_number: sequence.phone_number.clone(),
                            status: "created".to_owned(),
                            provider_ref: None,
                            provider_status: None,
                            conversation: None,
                            outcome: None,
                            report: None,
                            ends_at: None,
                            created_at: now,
                            ended_at: None,
                            claimed_at: None,
                            sender: None,
                        },
                        ordinal: 0,
                        sequence: sequence.clone(),
                    });
                }
                Action::End => ended = true,
            }
        }
        let state_text =
            serde_json::to_string(state).map_err(|_| SchedulerError::Corrupt("state"))?;
        let update = PendingUpdate {
            id: sequence.id,
            status: status_text(state),
            state: state_text,
            next_wake_at: state.next_wake.map(millis),
            outcome_description: state.outcome_description.clone(),
            now,
        };
        tx.update(store, update).await?;
        if ended {
            // The report is built and queued when the buffer is written, before commit.
            let mut row = sequence.clone();
            row.status = "ended".to_owned();
            row.outcome_description = state.outcome_description.clone();
            tx.ending.push((row, now));
        }
        Ok(())
    }

    /// The report shape of a sequence: for an ended one, the delivered bytes.
    pub async fn report_json(&self, org: OrgId, id: i64) -> Result<Option<String>, SchedulerError> {
        let Some(sequence) = self.inner.store.get_sequence(org, id).await? else {
            return Ok(None);
        };
        if sequence.status == "ended"
            && let Some(body) = self.inner.store.report_body(org, id).await?
        {
            return String::from_utf8(body)
                .map(Some)
                .map_err(|_| SchedulerError::Corrupt("report body"));
        }
        let encounters = self.inner.store.sequence_encounters(id).await?;
        let ids = self.inner.store.public_ids(org);
        let report = build_report(&ids, &sequence, &encounters, sequence.last_updated);
        serde_json::to_string(&report)
            .map(Some)
            .map_err(|_| SchedulerError::Corrupt("report"))
    }

    /// Runs until `shutdown` resolves: three loops, so that none waits on another's I/O.
    ///
    /// - the **due loop** wakes due sequences, ends due encounters and reconciles
    ///   unconfirmed ones (database work only: it never waits on a provider);
    /// - the **provider worker** claims and sends the encounters committed for Vapi and
    ///   Twilio ([`Scheduler::place_claimable`]);
    /// - the **overdue loop** reads back provider encounters whose report is late
    ///   ([`Scheduler::settle_overdue_provider_encounters`]).
    ///
    /// A provider that answers slowly, or not at all, holds up only the last two, and those
    /// only for its own encounters, within their concurrency and time budget.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let loops = async {
            tokio::join!(
                self.due_loop(stopped.clone()),
                self.provider_loop(stopped.clone()),
                self.overdue_loop(stopped),
            )
        };
        tokio::pin!(shutdown);
        tokio::pin!(loops);
        tokio::select! {
            () = &mut shutdown => {
                let _ = stop.send(true);
                loops.await;
            }
            _ = &mut loops => {}
        }
    }

    async fn due_loop(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        while !*stopped.borrow() {
            if let Err(error) = self.run_due_pass().await {
                tracing::error!(error = %error, "running due sequences failed");
            }
            let pause = self.pause().await;
            tokio::select! {
                _ = stopped.changed() => {}
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn provider_loop(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        while !*stopped.borrow() {
            if let Err(error) = self.place_claimable().await {
                tracing::error!(error = %error, "sending encounters to their providers failed");
            }
            tokio::select! {
                _ = stopped.changed() => {}
                () = self.inner.provider_wake.notified() => {}
                () = tokio::time::sleep(self.inner.config.poll_interval) => {}
            }
        }
    }

    async fn overdue_loop(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        while !*stopped.borrow() {
            if let Err(error) = self.settle_overdue_provider_encounters().await {
                tracing::error!(error = %error, "settling overdue provider encounters failed");
            }
            if self.inner.config.twilio.is_some() {
                let before = self
                    .inner
                    .real_clock
                    .now_millis()
                    .saturating_sub(INBOUND_SID_RETENTION_MILLIS);
                if let Err(error) = self
                    .inner
                    .store
                    .forget_inbound_messages(before, 10_000)
                    .await
                {
                    tracing::error!(error = %error, "forgetting old inbound message ids failed");
                }
            }
            let next = self
                .inner
                .store
                .next_open_provider_end()
                .await
                .ok()
                .flatten();
            let pause = self.real_wait_until(next);
            tokio::select! {
                _ = stopped.changed() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// How long (real time) to wait for engine time `next`, at most the poll interval.
    fn real_wait_until(&self, next: Option<Millis>) -> Duration {
        let poll = self.inner.config.poll_interval;
        let now = self.inner.clock.now_millis();
        match next {
            Some(at) if at > now => {
                let virtual_wait = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
                poll.min(virtual_wait.div_f64(self.inner.config.time_scale.max(f64::MIN_POSITIVE)))
            }
            // Due now: a short breath, so a pass whose work could not be done (a provider
            // down) does not spin.
            Some(_) => poll.min(Duration::from_millis(50)),
            None => poll,
        }
    }

    /// The earliest engine time at which something is due (a sequence wake-up or an
    /// encounter's end), if anything is scheduled.
    pub async fn next_due_at(&self) -> Result<Option<Millis>, SchedulerError> {
        let store = &self.inner.store;
        let wake = store.next_sequence_wake().await?;
        let end = store.next_encounter_end().await?;
        Ok(wake.into_iter().chain(end).min())
    }

    async fn pause(&self) -> Duration {
        let poll = self.inner.config.poll_interval;
        let store = &self.inner.store;
        let next = match (
            store.next_sequence_wake().await,
            store.next_encounter_end().await,
        ) {
            (Ok(a), Ok(b)) => a.into_iter().chain(b).min(),
            _ => None,
        };
        let now = self.inner.clock.now_millis();
        match next {
            Some(at) if at > now => {
                let virtual_wait = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
                poll.min(virtual_wait.div_f64(self.inner.config.time_scale.max(f64::MIN_POSITIVE)))
            }
            Some(_) => Duration::ZERO,
            None => poll,
        }
    }

    /// Does everything due now, synchronously (tests and tools drive the scheduler with it):
    /// wakes due sequences, ends due encounters, reconciles unconfirmed ones, sends what is
    /// queued for the providers and settles overdue provider encounters. Repeats until
    /// nothing is due. Returns the amount of work done.
    pub async fn run_due_now(&self) -> Result<usize, SchedulerError> {
        let mut total = 0;
        loop {
            let mut done = self.run_due_pass().await?;
            done += self.place_claimable().await?;
            done += self.settle_overdue_provider_encounters().await?;
            total += done;
            if done == 0 {
                return Ok(total);
            }
        }
    }

    /// The due loop's work: wakes due sequences, ends due encounters, reconciles
    /// unconfirmed ones, until nothing is due. No provider request is made here: encounters
    /// for Vapi and Twilio are left committed for the provider worker (tests use this to
    /// stand between the commit and the request).
    pub async fn run_due_pass(&self) -> Result<usize, SchedulerError> {
        let mut total = 0;
        loop {
            let mut done = 0;
            done += self.wake_due_sequences().await?;
            done += self.end_due_encounters().await?;
            done += self.reconcile_unconfirmed().await?;
            total += done;
            if done == 0 {
                return Ok(total);
            }
        }
    }

    /// Wakes every sequence due now: the earliest-due window of them, in id order.
    async fn wake_due_sequences(&self) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let ids = self.inner.store.due_sequence_ids(now, DUE_WINDOW).await?;
        self.in_batches(Due::Sequences, ids).await
    }

    /// Wakes the due sequences, or ends the due encounters, `ids` sorted by id,
    /// `batch_size` per transaction; answers how many were handled.
    async fn in_batches(&self, due: Due, mut ids: Vec<i64>) -> Result<usize, SchedulerError> {
        ids.sort_unstable();
        let batch_size = usize::try_from(self.inner.config.batch_size.max(1)).unwrap_or(usize::MAX);
        let mut done = 0;
        for batch in ids.chunks(batch_size) {
            done += match due {
                Due::Sequences => self.wake_sequences(batch).await?,
                Due::Encounters => self.end_encounters(batch).await?,
            };
        }
        Ok(done)
    }

    /// Wakes those of the sequences `ids` still due, in one transaction.
    async fn wake_sequences(&self, ids: &[i64]) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let store = &self.inner.store;
        let mut tx = WriteTx::begin(&self.inner).await?;
        let due = store.due_sequences(&mut tx.tx, ids, now).await?;
        let numbers: Vec<(OrgId, &str)> = due
            .iter()
            .map(|s| (s.org_id, s.phone_number.as_str()))
            .collect();
        let suppressed_numbers = store.are_suppressed(&mut tx.tx, &numbers).await?;
        let mut orgs: Vec<OrgId> = due.iter().map(|s| s.org_id).collect();
        orgs.sort_unstable_by_key(|o| o.0);
        orgs.dedup();
        let org_caps = store.organization_contact_caps(&mut tx.tx, &orgs).await?;
        for (index, sequence) in due.iter().enumerate() {
            // A number suppressed by a transition earlier in this batch counts too.
            let suppressed = suppressed_numbers.get(index).copied().unwrap_or(false)
                || tx
                    .suppressed
                    .contains(&(sequence.org_id, sequence.phone_number.clone()));
            let (per_day, per_week) = org_caps.get(&sequence.org_id).copied().unwrap_or_default();
            let caps = ContactCaps::resolve(self.inner.config.contact_caps, per_day, per_week);
            let cap = self.cap_allows_at(&mut tx, sequence, caps, now).await?;
            let event = Event::Wake {
                suppressed,
                contact_cap_allows_at: cap.map(datetime),
            };
            match self.transition(&mut tx, sequence, &event, now).await {
                Ok(()) => {}
                Err(SchedulerError::Store(error)) => return Err(error.into()),
                Err(error) => {
                    // A bad row must not stop the loop: park it and say why.
                    tracing::error!(sequence_id = sequence.id, error = %error, "sequence cannot run; parked");
                    let update = PendingUpdate {
                        id: sequence.id,
                        status: "paused",
                        state: sequence.state.clone(),
                        next_wake_at: None,
                        outcome_description: None,
                        now,
                    };
                    tx.update(store, update).await?;
                    tx.record(
                        sequence.id,
                        now,
                        "parked".to_owned(),
                        json!({ "reason": error.to_string() }),
                    );
                }
            }
        }
        let started = tx.commit(store).await?;
        if !started.is_empty() {
            crash_point("encounter-committed");
            self.request_encounters(started).await?;
        }
        Ok(due.len())
    }

    /// Rolling-window contact caps: the earliest instant another contact is allowed.
    async fn cap_allows_at(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        caps: Option<ContactCaps>,
        now: Millis,
    ) -> Result<Option<Millis>, SchedulerError> {
        let Some(caps) = caps else {
            return Ok(None);
        };
        const DAY: Millis = 24 * 3600 * 1000;
        let week_ago = now - 7 * DAY;
        if !tx.encounters.is_empty() {
            // Contacts started earlier in this transaction count.
            tx.flush(&self.inner.store).await?;
        }
        let contacts = self
            .inner
            .store
            .contacts_since(
                &mut tx.tx,
                sequence.org_id,
                &sequence.phone_number,
                week_ago,
            )
            .await?;
        let mut allows = now;
        let day: Vec<Millis> = contacts
            .iter()
            .copied()
            .filter(|t| *t >= now - DAY)
            .collect();
        for (window, cap, times) in [
            (DAY, caps.per_day, &day),
            (7 * DAY, caps.per_week, &contacts),
        ] {
            let cap = usize::try_from(cap).unwrap_or(usize::MAX);
            if cap > 0 && times.len() >= cap {
                // The contact that must fall out of the window before another is allowed.
                allows = allows.max(times[times.len() - cap] + window);
            }
        }
        Ok((allows > now).then_some(allows))
    }

    /// Hands committed encounters on: the simulator's are run now (it already knows how each
    /// encounter will go) and recorded in one transaction; those for Vapi or Twilio wait in
    /// the database for the provider worker ([`Scheduler::place_claimable`]), which claims
    /// each in the transaction just before its request. So the loop that wakes sequences
    /// never waits on a provider.
    async fn request_encounters(&self, started: Vec<Started>) -> Result<(), SchedulerError> {
        let (with_provider, simulated): (Vec<Started>, Vec<Started>) = started
            .into_iter()
            .partition(|started| self.has_provider(&started.encounter.channel));
        if !with_provider.is_empty() {
            self.inner.provider_wake.notify_one();
        }
        let mut requested = Vec::with_capacity(simulated.len());
        for started in simulated {
            let encounter_id = started.encounter.id;
            match self.simulate(&started).await {
                Ok((ends_at, outcome, report)) => requested.push((
                    encounter_id,
                    format!("sim_{encounter_id}"),
                    Some(ends_at),
                    Some(report),
                    Some(outcome),
                )),
                Err(error) => {
                    tracing::error!(encounter_id, error = %error, "starting a simulated encounter failed");
                }
            }
        }
        if requested.is_empty() {
            return Ok(());
        }
        crash_point("provider-asked");
        let mut tx = self.inner.store.begin().await?;
        self.inner
            .store
            .mark_encounters_requested(&mut tx, &requested)
            .await?;
        tx.commit().await?;
        crash_point("encounter-requested");
        Ok(())
    }

    /// Whether encounters on `channel` go to a real provider (Vapi, Twilio).
    fn has_provider(&self, channel: &str) -> bool {
        match channel {
            "call" => self.inner.config.vapi.is_some(),
            "sms" => self.inner.config.twilio.is_some(),
            _ => false,
        }
    }

    /// The channels that go to a real provider.
    fn provider_channels(&self) -> Vec<&'static str> {
        ["call", "sms"]
            .into_iter()
            .filter(|channel| self.has_provider(channel))
            .collect()
    }

    /// The provider worker's pass: every encounter committed for Vapi or Twilio and not yet
    /// claimed is claimed (the contact check, in its own transaction) and sent, up to
    /// `PROVIDER_REQUESTS_IN_FLIGHT` at a time, each answer recorded as it comes. Answers how
    /// many were taken on. Also what a restart resumes: the queue is the `created`,
    /// unclaimed rows, so nothing committed is forgotten.
    pub async fn place_claimable(&self) -> Result<usize, SchedulerError> {
        let channels = self.provider_channels();
        if channels.is_empty() {
            return Ok(0);
        }
        let mut seen = HashSet::new();
        let mut taken = 0;
        loop {
            let ids = self
                .inner
                .store
                .unclaimed_encounter_ids(&channels, PROVIDER_QUEUE_BATCH)
                .await?;
            // An id seen before in this pass could not be claimed or withdrawn (its
            // transaction failed); it waits for the next pass instead of spinning here.
            let fresh: Vec<i64> = ids.into_iter().filter(|id| seen.insert(*id)).collect();
            if fresh.is_empty() {
                return Ok(taken);
            }
            taken += fresh.len();
            // Every request in flight finishes and is recorded before an error is answered:
            // an answer dropped half-way would leave a placed call unrecorded.
            let outcomes: Vec<Result<(), SchedulerError>> = futures::stream::iter(fresh)
                .map(|id| async move { self.send_to_provider(id).await })
                .buffer_unordered(PROVIDER_REQUESTS_IN_FLIGHT)
                .collect()
                .await;
            for outcome in outcomes {
                if let Err(error) = outcome {
                    tracing::error!(error = %error, "a provider request could not be made or recorded");
                }
            }
        }
    }

    /// Claims one committed encounter and, if the contact check allows it, sends it to its
    /// provider and records the answer.
    async fn send_to_provider(&self, id: i64) -> Result<(), SchedulerError> {
        let Some(started) = self.claim_for_request(id, Claim::First).await? else {
            return Ok(());
        };
        crash_point("encounter-claimed");
        self.request_from_provider(&started).await
    }

    /// The last word before contact, in one short transaction: the encounter is still
    /// `created` (and, for a first request, unclaimed: nobody else sends it; for a retry,
    /// claimed by this request), its sequence is running and still in that encounter, the
    /// number is not suppressed and the contact's calling window is open
    /// ([`clarion_engine::contact_check`]). Then the claim is committed and the request may
    /// go out. Otherwise nobody was contacted: the encounter row is removed and the engine
    /// puts the attempt back (a closed window becomes a deferral; a suppressed number ends
    /// the sequence), and `None` is answered.
    async fn claim_for_request(
        &self,
        id: i64,
        claim: Claim,
    ) -> Result<Option<Started>, SchedulerError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let Some(encounter) = store.encounter_for_update(&mut tx.tx, id).await? else {
            return Ok(None);
        };
        let ours = match claim {
            Claim::First => encounter.claimed_at.is_none(),
            Claim::Retry => encounter.claimed_at.is_some(),
        };
        if encounter.status != "created" || !ours {
            return Ok(None);
        }
        let Some(sequence) = tx.sequence_for_update(store, encounter.sequence_id).await? else {
            store.withdraw_encounter(&mut tx.tx, id).await?;
            tx.commit(store).await?;
            return Ok(None);
        };
        let suppressed = store
            .is_suppressed(&mut tx.tx, sequence.org_id, &sequence.phone_number)
            .await?;
        let plan = self.plan_of(&sequence).await?;
        let state: SequenceState =
            serde_json::from_str(&sequence.state).map_err(|_| SchedulerError::Corrupt("state"))?;
        let this_attempt = usize::try_from(encounter.step).ok() == Some(state.step)
            && i64::from(state.attempt) == encounter.attempt;
        let check = if this_attempt {
            clarion_engine::contact_check(&plan, &state, suppressed, datetime(now))
        } else {
            Err(clarion_engine::Withheld::NotRunning)
        };
        match check {
            Ok(()) => {
                if claim == Claim::First && !store.claim_encounter(&mut tx.tx, id, now).await? {
                    return Ok(None);
                }
                if let Some(twilio) = &self.inner.config.twilio
                    && encounter.channel == "sms"
                    && claim == Claim::First
                {
                    let sender = sender_key(twilio.sender_for(sequence.org_id));
                    store.set_encounter_sender(&mut tx.tx, id, sender).await?;
                }
                tx.commit(store).await?;
                Ok(Some(Started {
                    encounter,
                    ordinal: 0,
                    sequence,
                }))
            }
            Err(reason) => {
                tracing::info!(
                    encounter_id = id,
                    sequence_id = sequence.id,
                    reason = ?reason,
                    "encounter withheld just before its provider request; nobody was contacted"
                );
                if sequence.status == "ended" {
                    // Cancelled meanwhile: its report is queued and may name this encounter,
                    // so the row stays, ended as a call or text that was not made.
                    let report = self.not_contacted_report(&encounter, now);
                    store
                        .end_encounter(&mut tx.tx, id, "failed", Some(&report), now)
                        .await?;
                } else {
                    // The attempt runs again when allowed: the row goes, nobody was contacted.
                    store.withdraw_encounter(&mut tx.tx, id).await?;
                    if this_attempt {
                        let event = Event::EncounterWithheld { reason };
                        self.transition(&mut tx, &sequence, &event, now).await?;
                    }
                }
                tx.commit(store).await?;
                self.wake();
                Ok(None)
            }
        }
    }

    /// The report object of an encounter withheld after its sequence ended: a call that was
    /// not placed, or a conversation whose opening text was not sent.
    fn not_contacted_report(&self, encounter: &EncounterRow, now: Millis) -> Value {
        const WHY: &str = "Not made: the sequence had ended before the provider was asked.";
        if encounter.channel == "sms" {
            let mut report =
                self.conversation_report(encounter, &Conversation::default(), SmsEnd::Error, now);
            report.summary = Some(WHY.to_owned());
            serde_json::to_value(&report).unwrap_or(Value::Null)
        } else {
            crate::simulator::failed_call_report(encounter, WHY)
        }
    }

    /// Places the call or opens the conversation of one claimed encounter with its
    /// provider, and records the answer at once, in its own small transaction: the
    /// provider's callbacks (a STOP, an end-of-call report) may arrive while the rest of the
    /// batch is still being sent, and must find the encounter.
    async fn request_from_provider(&self, started: &Started) -> Result<(), SchedulerError> {
        if let Some(twilio) = &self.inner.config.twilio
            && started.encounter.channel == "sms"
        {
            let Some((request, conversation)) =
                self.start_twilio_conversation(twilio, started).await
            else {
                return Ok(());
            };
            return self.record_requested(request, conversation).await;
        }
        if let Some(vapi) = &self.inner.config.vapi
            && started.encounter.channel == "call"
        {
            let Some((request, status)) = self.place_vapi_call(vapi, started).await else {
                return Ok(());
            };
            crash_point("vapi-call-placed");
            let call_id = request.1.clone();
            self.record_requested(request, None).await?;
            if let Some(status) = status {
                // The status Vapi answered with (`queued`), unless a callback moved it on.
                self.inner
                    .store
                    .set_provider_status("call", &call_id, &status, &VAPI_STATUS_ORDER)
                    .await?;
            }
            return Ok(());
        }
        Ok(())
    }

    /// Records one provider's answer for an encounter (and a conversation's state), at once.
    async fn record_requested(
        &self,
        request: clarion_store::RequestedEncounter,
        conversation: Option<String>,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let mut tx = store.begin().await?;
        if let (Some(conversation), Some(ends_at)) = (&conversation, request.2) {
            store
                .save_conversation(&mut tx, request.0, conversation, ends_at)
                .await?;
        }
        store
            .mark_encounters_requested(&mut tx, std::slice::from_ref(&request))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Places one committed call encounter with Vapi. Answers what to record: the call's id
    /// (its end arrives as a callback) with the status Vapi gave the new call, or, when the
    /// call was not placed, an encounter due to end now as `failed`. Only answers that prove
    /// Vapi did not place the call are retried.
    ///
    /// Before each retry the contact check is made again ([`Scheduler::claim_for_request`]):
    /// a cancel, a pause, an opt-out or the window closing during the wait places nothing
    /// (`None`: the encounter was withheld, nothing to record).
    async fn place_vapi_call(
        &self,
        vapi: &VapiClient,
        started: &Started,
    ) -> Option<(clarion_store::RequestedEncounter, Option<String>)> {
        let encounter = &started.encounter;
        let id = encounter.id;
        let not_placed = |reason: &str| {
            let report = crate::simulator::failed_call_report(
                encounter,
                &format!("The call could not be placed: {reason}. It was not retried."),
            );
            let request = (
                id,
                format!("vapi_unplaced_{id}"),
                Some(self.inner.clock.now_millis()),
                Some(report.to_string()),
                Some("failed".to_owned()),
            );
            Some((request, None))
        };
        let assistant = match self
            .assistant(started.sequence.org_id, encounter.assistant_id)
            .await
        {
            Ok(assistant) => assistant,
            Err(error) => {
                tracing::error!(encounter_id = id, error = %error, "assistant unreadable; call not placed");
                return not_placed("the assistant could not be read");
            }
        };
        let Some(vapi_assistant) = assistant
            .config
            .get("vapi_assistant_id")
            .and_then(Value::as_str)
        else {
            tracing::warn!(
                encounter_id = id,
                "assistant has no vapi_assistant_id; call not placed"
            );
            return not_placed("the assistant has no vapi_assistant_id");
        };
        let variables = started
            .sequence
            .variables
            .as_object()
            .cloned()
            .unwrap_or_default();
        let request = CreateCallRequest::new(
            vapi_assistant,
            vapi.phone_number_id(),
            encounter.phone_number.as_str(),
            id,
            variables,
        );
        let mut tries = 1;
        loop {
            match vapi.create_call(&request).await {
                Ok(call) => {
                    tracing::info!(encounter_id = id, "call placed with Vapi");
                    // Due for a read-back if the end-of-call report does not come.
                    let check_at = self.inner.clock.now_millis().saturating_add(
                        Millis::try_from(self.inner.config.provider_report_timeout.as_millis())
                            .unwrap_or(Millis::MAX),
                    );
                    return Some(((id, call.id, Some(check_at), None, None), call.status));
                }
                Err(CreateCallError::NotPlaced { retry_after, .. })
                    if tries < VAPI_PLACE_ATTEMPTS =>
                {
                    let wait = retry_after
                        .unwrap_or(Duration::from_millis(500 * u64::from(tries)))
                        .min(VAPI_MAX_RETRY_WAIT);
                    tracing::info!(
                        encounter_id = id,
                        tries,
                        "Vapi did not place the call; trying again"
                    );
                    tokio::time::sleep(wait).await;
                    match self.claim_for_request(id, Claim::Retry).await {
                        Ok(Some(_)) => {}
                        Ok(None) => return None,
                        Err(error) => {
                            // Not knowing whether contact is still allowed, don't call.
                            tracing::error!(encounter_id = id, error = %error, "re-checking a call before its retry failed; not placing it");
                            return not_placed("the check before retrying could not be made");
                        }
                    }
                    tries += 1;
                }
                Err(CreateCallError::Unknown { reason }) => {
                    // It may have gone out: wait for its end-of-call report (matched by the
                    // call's name), and end it as unknown if none comes.
                    tracing::warn!(
                        encounter_id = id,
                        reason,
                        "Vapi's answer does not say whether the call was placed; waiting for its report"
                    );
                    let check_at = self.inner.clock.now_millis().saturating_add(
                        Millis::try_from(self.inner.config.provider_report_timeout.as_millis())
                            .unwrap_or(Millis::MAX),
                    );
                    let request = (
                        id,
                        format!("{VAPI_UNKNOWN_PREFIX}{id}"),
                        Some(check_at),
                        None,
                        None,
                    );
                    return Some((request, None));
                }
                Err(error) => {
                    tracing::warn!(encounter_id = id, error = %error, "call not placed");
                    return not_placed(match error {
                        CreateCallError::NotPlaced { .. } => {
                            "Vapi kept declining it (rate limited)"
                        }
                        CreateCallError::Refused { .. } => "Vapi refused the request",
                        CreateCallError::Unknown { .. } => {
                            "Vapi's answer did not say whether it was placed"
                        }
                    });
                }
            }
        }
    }

    /// Applies Vapi's end-of-call report to its encounter: the report's `Call` object, the
    /// outcome to the engine, the sequence onwards — in one transaction. A report for an
    /// unknown call or an encounter that already ended changes nothing (`false`), so a
    /// duplicate or replayed report is harmless.
    pub async fn vapi_end_of_call(&self, report: &EndOfCallReport) -> Result<bool, SchedulerError> {
        let Some(call_id) = report.call_id() else {
            return Ok(false);
        };
        let store = &self.inner.store;
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        if let Some(encounter) = store
            .encounter_by_provider_ref(&mut tx.tx, "call", call_id)
            .await?
        {
            if encounter.status == "ended" {
                return Ok(false);
            }
            return self.apply_end_of_call(tx, encounter, report, now).await;
        }
        drop(tx);
        // No call id recorded for it: the report came before Clarion recorded the placement
        // (it is on its way, or the process died in between), or the placement's answer was
        // unclear. Only the call's name links it to an encounter, and a name is easy to
        // forge, so the call is read back from Vapi and its data is what gets applied.
        let Some(encounter_id) = report.call.as_ref().and_then(|call| call.encounter_id()) else {
            return Ok(false);
        };
        self.adopt_call_by_name(encounter_id, call_id).await
    }

    /// Links an encounter whose Vapi call id was never recorded to the call `call_id` that
    /// names it, after reading the call back from Vapi (its name and number must match the
    /// encounter): an ended call is applied as its end-of-call report; one still running gets
    /// its id recorded, so its report (or the next read-back) finds it. `false` when there is
    /// no such encounter or the call is not its; [`SchedulerError::ProviderUnavailable`]
    /// when Vapi could not be asked.
    async fn adopt_call_by_name(
        &self,
        encounter_id: i64,
        call_id: &str,
    ) -> Result<bool, SchedulerError> {
        let store = &self.inner.store;
        let Some(vapi) = &self.inner.config.vapi else {
            return Ok(false);
        };
        let unrecorded = |e: &EncounterRow| {
            e.channel == "call"
                && e.status != "ended"
                && e.outcome.is_none()
                && e.provider_ref
                    .as_deref()
                    .is_none_or(|r| r.starts_with(VAPI_UNKNOWN_PREFIX))
        };
        let Some(candidate) = store.encounter_by_id(encounter_id).await? else {
            return Ok(false);
        };
        if !unrecorded(&candidate) {
            return Ok(false);
        }
        let call = match vapi.get_call(call_id).await {
            Ok(call) => call,
            Err(error) if error.is_not_found() => {
                tracing::warn!(
                    encounter_id,
                    "a call report named an encounter but Vapi has no such call; ignored"
                );
                return Ok(false);
            }
            Err(error) => {
                tracing::warn!(encounter_id, error = %error, "could not read a call back to confirm its report");
                return Err(SchedulerError::ProviderUnavailable);
            }
        };
        let confirmed = call.encounter_id() == Some(encounter_id)
            && call.customer.as_ref().and_then(|c| c.number.as_deref())
                == Some(candidate.phone_number.as_str());
        if !confirmed {
            tracing::warn!(
                encounter_id,
                "a call report named an encounter whose call Vapi does not confirm; ignored"
            );
            return Ok(false);
        }
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let Some(encounter) = store
            .encounter_for_update(&mut tx.tx, encounter_id)
            .await?
            .filter(|e| unrecorded(e))
        else {
            return Ok(false);
        };
        let next_check = now.saturating_add(
            Millis::try_from(self.inner.config.provider_report_timeout.as_millis())
                .unwrap_or(Millis::MAX),
        );
        store
            .adopt_provider_ref(&mut tx.tx, encounter.id, call_id, next_check)
            .await?;
        tracing::info!(
            encounter_id,
            "a call whose placement was not recorded was found at Vapi"
        );
        match EndOfCallReport::from_ended_call(call) {
            Some(report) => self.apply_end_of_call(tx, encounter, &report, now).await,
            None => {
                self.commit_callback(tx).await?;
                Ok(false)
            }
        }
    }

    /// Applies an end-of-call report to its (open) encounter in `tx`, and commits.
    async fn apply_end_of_call(
        &self,
        mut tx: WriteTx,
        encounter: EncounterRow,
        report: &EndOfCallReport,
        now: Millis,
    ) -> Result<bool, SchedulerError> {
        let store = &self.inner.store;
        let assistant = self
            .assistant(encounter.org_id, encounter.assistant_id)
            .await?;
        let custom_fields: Vec<String> = assistant
            .custom_fields
            .as_array()
            .map(|fields| {
                fields
                    .iter()
                    .filter_map(|f| f.get("name").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let facts = EncounterFacts {
            encounter_id: encounter.id,
            assistant_id: encounter.assistant_id,
            destination_number: &encounter.phone_number,
            source_number: None,
            voicemail_message: assistant
                .config
                .get("voicemail_message")
                .and_then(Value::as_str),
            custom_fields: &custom_fields,
        };
        let (call, outcome) = call_from_end_of_call(report, &facts);
        let call = serde_json::to_value(&call).map_err(|_| SchedulerError::Corrupt("call"))?;
        self.finish_encounter(&mut tx, &encounter, outcome, Some(&call), now, now)
            .await?;
        let started = tx.commit(store).await?;
        self.inner.outbox.wake();
        self.wake();
        if !started.is_empty() {
            self.request_encounters(started).await?;
        }
        Ok(true)
    }

    /// Provider encounters whose time is up with no outcome: a Vapi call whose end-of-call
    /// report is overdue is read back with `GET /call/{id}` (an ended call is applied as if
    /// its report had arrived; one still running, or unreadable, is looked at again after
    /// `provider_report_timeout`); a call whose placement is unknown is looked for among the
    /// calls placed from Clarion's number; an SMS conversation times out. Answers the number
    /// of encounters ended.
    ///
    /// Provider reads go `PROVIDER_REQUESTS_IN_FLIGHT` at a time, and none is started once
    /// `OVERDUE_PASS_BUDGET` has passed (the rest wait for the next pass). This runs off the
    /// loop that wakes sequences ([`Scheduler::run`]), so a slow provider delays only its
    /// own read-backs, never another sequence's due step.
    pub async fn settle_overdue_provider_encounters(&self) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let overdue = self
            .inner
            .store
            .overdue_provider_encounters(now, self.inner.config.batch_size)
            .await?;
        let deadline = tokio::time::Instant::now() + OVERDUE_PASS_BUDGET;
        let outcomes: Vec<Result<bool, SchedulerError>> = futures::stream::iter(overdue)
            .map(|encounter| async move {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                self.settle_overdue(&encounter, now).await
            })
            .buffer_unordered(PROVIDER_REQUESTS_IN_FLIGHT)
            .collect()
            .await;
        let mut ended = 0;
        for outcome in outcomes {
            match outcome {
                Ok(true) => ended += 1,
                Ok(false) => {}
                Err(SchedulerError::Store(error)) => return Err(error.into()),
                Err(error) => {
                    tracing::error!(error = %error, "settling an overdue provider encounter failed");
                }
            }
        }
        Ok(ended)
    }

    /// Settles one overdue provider encounter (see
    /// [`Scheduler::settle_overdue_provider_encounters`]); answers whether it ended.
    async fn settle_overdue(
        &self,
        encounter: &EncounterRow,
        now: Millis,
    ) -> Result<bool, SchedulerError> {
        let store = &self.inner.store;
        let next_check = now.saturating_add(
            Millis::try_from(self.inner.config.provider_report_timeout.as_millis())
                .unwrap_or(Millis::MAX),
        );
        let give_up_after = Millis::try_from(self.inner.config.provider_give_up_after.as_millis())
            .unwrap_or(Millis::MAX);
        let given_up = now.saturating_sub(encounter.created_at) >= give_up_after;
        if encounter.channel == "sms" {
            // A conversation whose contact went quiet for the template's SMS timeout (also
            // when Twilio has been switched off since: nothing more can arrive).
            return self
                .end_overdue(encounter, OverdueEnd::ConversationTimeout)
                .await;
        }
        if encounter
            .provider_ref
            .as_deref()
            .is_some_and(|r| r.starts_with(VAPI_UNKNOWN_PREFIX))
        {
            return self
                .look_for_unknown_call(encounter, next_check, given_up)
                .await;
        }
        // With Vapi switched off since the call was placed, it cannot be read back (and its
        // callbacks are not accepted): only the give-up below ends it.
        let read_back = match (&self.inner.config.vapi, encounter.provider_ref.as_deref()) {
            (Some(vapi), Some(call_id)) => match vapi.get_call(call_id).await {
                Ok(call) => EndOfCallReport::from_ended_call(call),
                Err(error) => {
                    tracing::warn!(encounter_id = encounter.id, error = %error, "reading an overdue call back failed");
                    None
                }
            },
            _ => None,
        };
        if let Some(report) = read_back {
            tracing::warn!(
                encounter_id = encounter.id,
                "end-of-call report never arrived; ended from the call read back"
            );
            return self.vapi_end_of_call(&report).await;
        }
        if given_up {
            // Neither a report nor a readable end for this long: the sequence must not wait
            // forever. The call is never placed again.
            let end = OverdueEnd::UnreportedCall {
                summary: NEVER_REPORTED_SUMMARY,
            };
            return self.end_overdue(encounter, end).await;
        }
        store
            .postpone_encounter_end(encounter.id, next_check)
            .await?;
        Ok(false)
    }

    /// A call whose placement is unknown (Vapi's answer was unclear, or the process died
    /// before recording it): looked for among the calls placed from Clarion's number since it
    /// was created, by its name. Found, it is adopted (and applied if it ended). Vapi listing
    /// no such call (and not a full page) means it was never placed: it ends `failed`. Vapi
    /// not answering: looked at again later, until `provider_give_up_after`.
    async fn look_for_unknown_call(
        &self,
        encounter: &EncounterRow,
        next_check: Millis,
        given_up: bool,
    ) -> Result<bool, SchedulerError> {
        let listed = match &self.inner.config.vapi {
            Some(vapi) => {
                // A minute of slack for the clocks of Vapi and this node.
                let since = datetime(encounter.created_at.saturating_sub(60_000))
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                match vapi.list_calls(&since, VAPI_LIST_LIMIT).await {
                    Ok(calls) => Some(calls),
                    Err(error) => {
                        tracing::warn!(encounter_id = encounter.id, error = %error, "listing calls to find an unrecorded one failed");
                        None
                    }
                }
            }
            None => None,
        };
        let page_full = |calls: &[clarion_providers::vapi::wire::VapiCall]| {
            calls.len() >= VAPI_LIST_LIMIT as usize
        };
        match listed {
            Some(calls) => {
                let full = page_full(&calls);
                if let Some(call) = calls
                    .into_iter()
                    .find(|call| call.encounter_id() == Some(encounter.id))
                {
                    let call_id = call.id.clone();
                    return self.adopt_call_by_name(encounter.id, &call_id).await;
                }
                if !full {
                    let end = OverdueEnd::UnreportedCall {
                        summary: NOT_PLACED_SUMMARY,
                    };
                    return self.end_overdue(encounter, end).await;
                }
                if given_up {
                    let end = OverdueEnd::UnreportedCall {
                        summary: UNKNOWN_PLACEMENT_SUMMARY,
                    };
                    return self.end_overdue(encounter, end).await;
                }
            }
            None if given_up => {
                let end = OverdueEnd::UnreportedCall {
                    summary: UNKNOWN_PLACEMENT_SUMMARY,
                };
                return self.end_overdue(encounter, end).await;
            }
            None => {}
        }
        self.inner
            .store
            .postpone_encounter_end(encounter.id, next_check)
            .await?;
        Ok(false)
    }

    /// Opens one committed SMS encounter with Twilio: the script's opening text, rendered
    /// with the contact's name and variables, sent with a status callback. Answers what to
    /// record (the message's sid, the conversation's time-out) and the conversation's state;
    /// or, when the text was not sent, an encounter due to end now.
    async fn start_twilio_conversation(
        &self,
        twilio: &TwilioChannel,
        started: &Started,
    ) -> Option<(clarion_store::RequestedEncounter, Option<String>)> {
        let encounter = &started.encounter;
        let id = encounter.id;
        let now = self.inner.clock.now_millis();
        let source = self.twilio_source_number(encounter);
        let unsent = |end: SmsEnd| {
            let report = sms_report(
                &Conversation::default(),
                Some(end),
                (id, encounter.assistant_id),
                (source.as_deref(), &encounter.phone_number),
                (
                    clarion_webhooks::Timestamp::from_unix_millis(encounter.created_at),
                    clarion_webhooks::Timestamp::from_unix_millis(now),
                ),
            );
            let report = serde_json::to_string(&report).unwrap_or_default();
            Some((
                (
                    id,
                    format!("twilio_unsent_{id}"),
                    Some(now),
                    Some(report),
                    Some(end.engine_outcome().to_owned()),
                ),
                None,
            ))
        };
        let (assistant, definition) = match (
            self.assistant(started.sequence.org_id, encounter.assistant_id)
                .await,
            self.definition(started.sequence.template_version_id).await,
        ) {
            (Ok(assistant), Ok(definition)) => (assistant, definition),
            _ => {
                tracing::error!(
                    encounter_id = id,
                    "assistant or template unreadable; text not sent"
                );
                return unsent(SmsEnd::Error);
            }
        };
        let Ok(script) = ScriptConfig::from_assistant_config(&assistant.config) else {
            tracing::warn!(
                encounter_id = id,
                "assistant has no valid SMS script; text not sent"
            );
            return unsent(SmsEnd::Error);
        };
        let name = serde_json::from_value::<ContactInfo>(started.sequence.contact.clone())
            .ok()
            .and_then(|c| c.name);
        let variables = started
            .sequence
            .variables
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut conversation = Conversation::new(name, variables);
        let message = SendMessage {
            to: encounter.phone_number.clone(),
            sender: twilio.sender_for(started.sequence.org_id).clone(),
            body: conversation.open(&script),
            status_callback: Some(format!(
                "{}/providers/twilio/status",
                twilio.public_base_url.trim_end_matches('/')
            )),
        };
        let mut tries = 1;
        loop {
            match twilio.client.send(&message).await {
                Ok(sent) => {
                    tracing::info!(encounter_id = id, "SMS conversation opened with Twilio");
                    let ends_at = now.saturating_add(
                        Millis::try_from(definition.sms_timeout_ms).unwrap_or(Millis::MAX),
                    );
                    let state = serde_json::to_string(&conversation).ok();
                    return Some((
                        (
                            id,
                            sent.sid.unwrap_or_else(|| format!("twilio_{id}")),
                            Some(ends_at),
                            None,
                            None,
                        ),
                        state,
                    ));
                }
                Err(SendError::Rejected {
                    failure: SendFailure::Retryable,
                    ..
                }) if tries < TWILIO_SEND_ATTEMPTS => {
                    tracing::info!(
                        encounter_id = id,
                        tries,
                        "Twilio did not accept the text; trying again"
                    );
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(tries))).await;
                    match self.claim_for_request(id, Claim::Retry).await {
                        Ok(Some(_)) => {}
                        Ok(None) => return None,
                        Err(error) => {
                            tracing::error!(encounter_id = id, error = %error, "re-checking a text before its retry failed; not sending it");
                            return unsent(SmsEnd::Error);
                        }
                    }
                    tries += 1;
                }
                Err(error) => {
                    tracing::warn!(encounter_id = id, error = %error, "text not sent");
                    return unsent(match error {
                        SendError::Rejected {
                            failure: SendFailure::OptedOut,
                            ..
                        } => SmsEnd::OptOut,
                        _ => SmsEnd::Error,
                    });
                }
            }
        }
    }

    /// Ends an SMS encounter with `end`, its report built from the conversation so far, in
    /// `tx`.
    async fn end_conversation(
        &self,
        tx: &mut WriteTx,
        encounter: &EncounterRow,
        conversation: &Conversation,
        end: SmsEnd,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let report = self.conversation_report(encounter, conversation, end, now);
        let report = serde_json::to_value(&report).map_err(|_| SchedulerError::Corrupt("sms"))?;
        self.finish_encounter(tx, encounter, end.engine_outcome(), Some(&report), now, now)
            .await
    }

    /// The report's Sms object of a conversation ending now with `end`.
    fn conversation_report(
        &self,
        encounter: &EncounterRow,
        conversation: &Conversation,
        end: SmsEnd,
        now: Millis,
    ) -> clarion_webhooks::Sms {
        let source = self.twilio_source_number(encounter);
        sms_report(
            conversation,
            Some(end),
            (encounter.id, encounter.assistant_id),
            (source.as_deref(), &encounter.phone_number),
            (
                clarion_webhooks::Timestamp::from_unix_millis(encounter.created_at),
                clarion_webhooks::Timestamp::from_unix_millis(now),
            ),
        )
    }

    /// The number texts come from, when Clarion knows it (a Messaging Service picks one
    /// from its pool).
    fn twilio_source_number(&self, encounter: &EncounterRow) -> Option<String> {
        let twilio = self.inner.config.twilio.as_ref()?;
        match twilio.sender_for(encounter.org_id) {
            Sender::From(number) => Some(number.clone()),
            Sender::MessagingService(_) => None,
        }
    }

    fn conversation_of(encounter: &EncounterRow) -> Conversation {
        encounter
            .conversation
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default()
    }

    /// Commits `tx` after a provider callback changed an encounter, and lets the rest run.
    async fn commit_callback(&self, tx: WriteTx) -> Result<(), SchedulerError> {
        let started = tx.commit(&self.inner.store).await?;
        self.inner.outbox.wake();
        self.wake();
        if !started.is_empty() {
            self.request_encounters(started).await?;
        }
        Ok(())
    }

    /// An inbound text from Twilio: routed to the conversation running with its sender,
    /// answered by the assistant (STOP and its synonyms end it as an opt-out with no reply;
    /// HELP gets the organisation's help text; an ordinary reply goes to the LLM assistant
    /// when one is configured, else — or when it fails — to the script), the conversation
    /// saved or ended. Answers the reply to send back (`None`: nothing to say, or no
    /// conversation).
    ///
    /// The answer is worked out before the write transaction (a model may take seconds, and
    /// the transaction holds the database's write lock); if another text moved the
    /// conversation meanwhile, this one is answered by the script on the new state.
    pub async fn twilio_inbound(
        &self,
        message: &InboundMessage,
    ) -> Result<Option<String>, SchedulerError> {
        let store = &self.inner.store;
        let Some(twilio) = &self.inner.config.twilio else {
            return Ok(None);
        };
        if !twilio.addressed_to_us(message) {
            tracing::warn!("inbound text for another Twilio account or number; ignored");
            return Ok(None);
        }
        if store.inbound_message_seen(&message.message_sid).await? {
            // Twilio repeated the webhook, or someone replayed it: handled already.
            return Ok(None);
        }
        let senders = message_sender_keys(
            message.to.as_deref(),
            message.messaging_service_sid.as_deref(),
        );
        let Some(seen) = self.route_inbound(None, message, &senders).await? else {
            self.opt_out_without_conversation(message, &senders).await?;
            return Ok(None);
        };
        let assistant = self.assistant(seen.org_id, seen.assistant_id).await?;
        let script = ScriptConfig::from_assistant_config(&assistant.config)
            .map_err(|_| SchedulerError::Corrupt("sms script"))?;
        let (mut decision, by_model) = self
            .sms_decision(
                &assistant,
                &script,
                &Self::conversation_of(&seen),
                message,
                true,
            )
            .await;

        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        if !store
            .record_inbound_message(&mut tx.tx, &message.message_sid, now)
            .await?
        {
            return Ok(None);
        }
        let Some(encounter) = self
            .route_inbound(Some(&mut tx.tx), message, &senders)
            .await?
        else {
            // The conversation ended since it was read (another text, or its time-out): an
            // opt-out still suppresses.
            if message.keyword() == Keyword::OptOut {
                self.suppress_for_sms_senders(&mut tx.tx, &message.from, &senders)
                    .await?;
            }
            self.commit_callback(tx).await?;
            return Ok(None);
        };
        let mut conversation = Self::conversation_of(&encounter);
        if conversation.handled.contains(&message.message_sid) {
            return Ok(None);
        }
        let mut by_model = by_model;
        if encounter.id != seen.id || encounter.conversation != seen.conversation {
            (decision, by_model) = self
                .sms_decision(&assistant, &script, &conversation, message, false)
                .await;
        }
        if decision.keyword == Keyword::Help
            && let Some(organization) = store.get_organization(encounter.org_id).await?
            && let Some(help) = organization.sms_help_text
        {
            decision.reply = Some(help);
        }
        if by_model {
            conversation.record(&message.body, &decision);
        } else {
            conversation.record_with(&script, &message.body, &decision);
        }
        if conversation.our_number.is_none() {
            conversation.our_number = message.to.clone();
        }
        conversation.handled.push(message.message_sid.clone());
        match decision.end {
            Some(end) => {
                self.end_conversation(&mut tx, &encounter, &conversation, end, now)
                    .await?;
            }
            None => {
                let sequence = store
                    .sequence_for_update(&mut tx.tx, encounter.sequence_id)
                    .await?
                    .ok_or(SchedulerError::Corrupt("sequence"))?;
                let timeout = self
                    .definition(sequence.template_version_id)
                    .await?
                    .sms_timeout_ms;
                let state = serde_json::to_string(&conversation)
                    .map_err(|_| SchedulerError::Corrupt("sms"))?;
                store
                    .save_conversation(
                        &mut tx.tx,
                        encounter.id,
                        &state,
                        now.saturating_add(Millis::try_from(timeout).unwrap_or(Millis::MAX)),
                    )
                    .await?;
            }
        }
        self.commit_callback(tx).await?;
        Ok(decision.reply)
    }

    /// The conversation an inbound text belongs to: one running with its sender that was
    /// begun from the number (or Messaging Service) it was sent to. Where that sender is
    /// shared and more than one organisation has such a conversation open with the patient,
    /// the text cannot be told apart: it goes to none of them (never into another
    /// organisation's), and only an opt-out acts, for all of them.
    async fn route_inbound(
        &self,
        tx: Option<&mut Tx>,
        message: &InboundMessage,
        senders: &[&str],
    ) -> Result<Option<EncounterRow>, SchedulerError> {
        let open = self
            .inner
            .store
            .open_sms_conversations(tx, &message.from, senders)
            .await?;
        let Some(newest) = open.first() else {
            return Ok(None);
        };
        if open.iter().any(|e| e.org_id != newest.org_id) {
            tracing::warn!(
                organizations = open.len(),
                "an inbound text matches conversations of several organisations on a shared sender; routed to none"
            );
            return Ok(None);
        }
        Ok(Some(newest.clone()))
    }

    /// A STOP (or a synonym) from a number with no conversation running — after one timed
    /// out, or between steps — still puts the number on the suppression list of every
    /// organisation that has texted it from the sender it was sent to, so no later step or
    /// sequence contacts it.
    async fn opt_out_without_conversation(
        &self,
        message: &InboundMessage,
        senders: &[&str],
    ) -> Result<(), SchedulerError> {
        if message.keyword() != Keyword::OptOut {
            return Ok(());
        }
        let now = self.inner.clock.now_millis();
        let mut tx = self.inner.store.begin().await?;
        if !self
            .inner
            .store
            .record_inbound_message(&mut tx, &message.message_sid, now)
            .await?
        {
            return Ok(());
        }
        let suppressed = self
            .suppress_for_sms_senders(&mut tx, &message.from, senders)
            .await?;
        tx.commit().await?;
        tracing::info!(
            organizations = suppressed,
            "opt-out received outside a conversation; number suppressed"
        );
        self.wake();
        Ok(())
    }

    /// Suppresses `phone_number` (an opt-out) for every organisation that has texted it from
    /// one of `senders`, in `tx`; answers how many.
    async fn suppress_for_sms_senders(
        &self,
        tx: &mut Tx,
        phone_number: &str,
        senders: &[&str],
    ) -> Result<usize, SchedulerError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now_millis();
        let orgs = store.sms_organizations(tx, phone_number, senders).await?;
        for org in &orgs {
            store
                .suppress(tx, *org, phone_number, "opt-out", now)
                .await?;
        }
        Ok(orgs.len())
    }

    /// The assistant's answer to an inbound text: the script's, or — for an ordinary reply
    /// (not STOP, HELP or the turn limit), when `ask_model` and the assistant has
    /// `config.llm` and a model is configured — the model's, falling back to the script's
    /// when the model fails. The flag says whether the model answered.
    async fn sms_decision(
        &self,
        assistant: &Assistant,
        script: &ScriptConfig,
        conversation: &Conversation,
        message: &InboundMessage,
        ask_model: bool,
    ) -> (clarion_providers::Decision, bool) {
        let mut decision = respond_to(
            script,
            conversation,
            &message.body,
            message.opt_out_type.as_deref(),
        );
        let ordinary = matches!(decision.keyword, Keyword::Other | Keyword::OptIn)
            && decision.end != Some(SmsEnd::TurnLimit);
        let prompt = assistant
            .config
            .get("llm")
            .and_then(|llm| llm.get("system_prompt"))
            .and_then(Value::as_str);
        let (Some(llm), Some(prompt), true, true) =
            (&self.inner.config.llm, prompt, ordinary, ask_model)
        else {
            return (decision, false);
        };
        let model = assistant
            .config
            .get("llm")
            .and_then(|llm| llm.get("model"))
            .and_then(Value::as_str);
        match llm.decide(prompt, model, conversation, &message.body).await {
            Ok(answer) => {
                decision.reply = Some(answer.reply);
                decision.end = answer.resolution.map(SmsEnd::from);
                (decision, true)
            }
            Err(error) => {
                tracing::warn!(error = %error, "the LLM assistant did not answer; the script does");
                (decision, false)
            }
        }
    }

    /// A Twilio status callback for the message that opened a conversation: a message that
    /// failed (error 21610, the recipient unsubscribed: an opt-out) ends the conversation.
    /// Answers whether it changed anything.
    pub async fn twilio_status(&self, callback: &StatusCallback) -> Result<bool, SchedulerError> {
        if !callback.status.is_failure() {
            return Ok(false);
        }
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let opted_out =
            callback.error_code == Some(clarion_providers::twilio::wire::ERROR_OPTED_OUT);
        let Some(encounter) = self
            .inner
            .store
            .encounter_by_provider_ref(&mut tx.tx, "sms", &callback.message_sid)
            .await?
            .filter(|e| e.status != "ended")
        else {
            // The carrier's own opt-out (21610) counts even when its message is not known
            // (yet): the callback can arrive before the send's answer is recorded.
            if opted_out && let Some(to) = &callback.to {
                let senders = message_sender_keys(
                    callback.from.as_deref(),
                    callback.messaging_service_sid.as_deref(),
                );
                let suppressed = self
                    .suppress_for_sms_senders(&mut tx.tx, to, &senders)
                    .await?;
                self.commit_callback(tx).await?;
                return Ok(suppressed > 0);
            }
            return Ok(false);
        };
        let end = if opted_out {
            SmsEnd::OptOut
        } else {
            SmsEnd::Error
        };
        let conversation = Self::conversation_of(&encounter);
        self.end_conversation(&mut tx, &encounter, &conversation, end, now)
            .await?;
        self.commit_callback(tx).await?;
        Ok(true)
    }

    /// Ends an open provider encounter that is overdue (re-read in the transaction: a
    /// callback may have ended it meanwhile, then this changes nothing and answers `false`).
    async fn end_overdue(
        &self,
        encounter: &EncounterRow,
        end: OverdueEnd<'_>,
    ) -> Result<bool, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let Some(current) = self
            .inner
            .store
            .overdue_open_encounter(&mut tx.tx, encounter.id, now)
            .await?
        else {
            return Ok(false);
        };
        match end {
            OverdueEnd::ConversationTimeout => {
                let conversation = Self::conversation_of(&current);
                let end = if conversation.replies() == 0 {
                    SmsEnd::NoReply
                } else {
                    SmsEnd::TurnLimit
                };
                self.end_conversation(&mut tx, &current, &conversation, end, now)
                    .await?;
            }
            OverdueEnd::UnreportedCall { summary } => {
                tracing::warn!(
                    encounter_id = current.id,
                    "no report of the call came; ending it as failed"
                );
                let report = crate::simulator::failed_call_report(&current, summary);
                self.finish_encounter(&mut tx, &current, "failed", Some(&report), now, now)
                    .await?;
            }
        }
        self.commit_callback(tx).await?;
        Ok(true)
    }

    /// Records a Vapi status update (`queued`, `ringing`, `in-progress`, `forwarding`) on its
    /// encounter, never moving backwards. `false` when it changed nothing.
    pub async fn vapi_status_update(
        &self,
        call_id: &str,
        status: &str,
    ) -> Result<bool, SchedulerError> {
        Ok(self
            .inner
            .store
            .set_provider_status("call", call_id, status, &VAPI_STATUS_ORDER)
            .await?)
    }

    /// Runs the simulator for one encounter: (ends_at, outcome, report object).
    async fn simulate(
        &self,
        started: &Started,
    ) -> Result<(Millis, String, String), SchedulerError> {
        let Started {
            encounter,
            ordinal,
            sequence,
        } = started;
        let assistant = self
            .assistant(sequence.org_id, encounter.assistant_id)
            .await?;
        let definition = self.definition(sequence.template_version_id).await?;
        let sms_timeout = Duration::from_millis(definition.sms_timeout_ms);
        crate::simulator::simulate(
            sequence,
            encounter,
            *ordinal,
            &assistant,
            &self.inner.config.clinic_number,
            sms_timeout,
        )
    }

    /// Ends every encounter whose end is known and due now: the earliest-due window of them,
    /// in id order.
    async fn end_due_encounters(&self) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let ids = self.inner.store.due_encounter_ids(now, DUE_WINDOW).await?;
        self.in_batches(Due::Encounters, ids).await
    }

    /// Ends those of the encounters `ids` still due, and moves their sequences on, in one
    /// transaction.
    async fn end_encounters(&self, ids: &[i64]) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let store = &self.inner.store;
        let mut tx = WriteTx::begin(&self.inner).await?;
        let due = store.due_encounters(&mut tx.tx, ids, now).await?;
        // The outcome and report object were stored when the encounter was requested; ending
        // it keeps that report (not read here).
        let ends: Vec<(&EncounterRow, String, Millis)> = due
            .iter()
            .map(|encounter| {
                let outcome = encounter
                    .outcome
                    .clone()
                    .unwrap_or_else(|| "failed".to_owned());
                (encounter, outcome, encounter.ends_at.unwrap_or(now))
            })
            .collect();
        let mut sequence_ids = HashSet::with_capacity(due.len());
        if due.iter().all(|e| sequence_ids.insert(e.sequence_id)) {
            // One encounter per sequence (the usual case): end them all in one statement and
            // read their sequences in one. No transition reads another sequence's encounters'
            // ends, so this is what ending and transitioning them one by one would do.
            let batch: Vec<(i64, &str, Option<&Value>, Millis)> = ends
                .iter()
                .map(|(e, outcome, at)| (e.id, outcome.as_str(), None, *at))
                .collect();
            let ended = store.end_encounters(&mut tx.tx, &batch).await?;
            let ended_ids: Vec<i64> = ends
                .iter()
                .zip(&ended)
                .filter(|(_, ended)| **ended)
                .map(|((e, ..), _)| e.sequence_id)
                .collect();
            let mut sequences: HashMap<i64, SequenceRow> = store
                .sequences_for_update(&mut tx.tx, &ended_ids)
                .await?
                .into_iter()
                .map(|s| (s.id, s))
                .collect();
            for ((encounter, outcome, ended_at), ended) in ends.iter().zip(ended) {
                if !ended {
                    continue;
                }
                let Some(sequence) = sequences.remove(&encounter.sequence_id) else {
                    continue;
                };
                self.encounter_ended(&mut tx, &sequence, outcome, *ended_at, now)
                    .await?;
            }
        } else {
            for (encounter, outcome, ended_at) in &ends {
                self.finish_encounter(&mut tx, encounter, outcome, None, *ended_at, now)
                    .await?;
            }
        }
        let started = tx.commit(store).await?;
        if !due.is_empty() {
            crash_point("encounter-ended");
            self.inner.outbox.wake();
        }
        if !started.is_empty() {
            self.request_encounters(started).await?;
        }
        Ok(due.len())
    }

    /// Ends an encounter and feeds its outcome to the engine, in `tx`.
    async fn finish_encounter(
        &self,
        tx: &mut WriteTx,
        encounter: &EncounterRow,
        outcome: &str,
        report: Option<&Value>,
        ended_at: Millis,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        if !store
            .end_encounter(&mut tx.tx, encounter.id, outcome, report, ended_at)
            .await?
        {
            return Ok(());
        }
        let Some(sequence) = tx.sequence_for_update(store, encounter.sequence_id).await? else {
            return Ok(());
        };
        self.encounter_ended(tx, &sequence, outcome, ended_at, now)
            .await
    }

    /// Feeds an ended encounter's outcome to the engine, in `tx`.
    async fn encounter_ended(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        outcome: &str,
        ended_at: Millis,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let outcome = serde_json::from_value(Value::String(outcome.to_owned()))
            .unwrap_or(clarion_engine::EncounterOutcome::Failed);
        let event = Event::EncounterEnded {
            outcome,
            ended_at: datetime(ended_at),
        };
        // The encounters it started carry the sequence as read here: the simulator uses only
        // what never changes (contact, variables, simulation), not the engine's state.
        self.transition(tx, sequence, &event, now).await
    }

    /// Encounters committed but never confirmed: the process died between committing the row
    /// (for a provider: claiming it) and recording the provider's answer. The provider may or
    /// may not have received the request, so it is never re-sent. A Vapi call is looked for
    /// instead: it becomes a call of unknown placement, due for a read-back at once (the calls
    /// placed from Clarion's number are listed and searched for its name), and its
    /// end-of-call report is still applied if it comes. Anything else ends as `failed`, and the
    /// sequence goes on by its rules.
    async fn reconcile_unconfirmed(&self) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let before =
            now - Millis::try_from(self.inner.config.reconcile_after.as_millis()).unwrap_or(0);
        let channels = self.provider_channels();
        let stale = self
            .inner
            .store
            .unconfirmed_encounters(before, &channels, self.inner.config.batch_size)
            .await?;
        if stale.is_empty() {
            return Ok(0);
        }
        let mut tx = WriteTx::begin(&self.inner).await?;
        let mut unknown = Vec::new();
        for encounter in &stale {
            if encounter.channel == "call"
                && encounter.claimed_at.is_some()
                && self.inner.config.vapi.is_some()
            {
                tracing::warn!(
                    encounter_id = encounter.id,
                    "call was claimed but its placement never recorded; looking for it at Vapi"
                );
                unknown.push((
                    encounter.id,
                    format!("{VAPI_UNKNOWN_PREFIX}{}", encounter.id),
                    Some(now),
                    None,
                    None,
                ));
                continue;
            }
            tracing::warn!(
                encounter_id = encounter.id,
                "encounter was never confirmed by the provider; ending it as failed, not re-sending"
            );
            let report = crate::simulator::unknown_outcome_report(
                encounter,
                &self.inner.config.clinic_number,
            );
            self.finish_encounter(&mut tx, encounter, "failed", Some(&report), now, now)
                .await?;
        }
        if !unknown.is_empty() {
            self.inner
                .store
                .mark_encounters_requested(&mut tx.tx, &unknown)
                .await?;
        }
        let started = tx.commit(&self.inner.store).await?;
        self.inner.outbox.wake();
        if !started.is_empty() {
            self.request_encounters(started).await?;
        }
        Ok(stale.len())
    }
}
