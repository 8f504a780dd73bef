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
//!   committed, and claimed just before the provider is asked, after checking again that
//!   contact is allowed. An encounter claimed but never confirmed (the process died in between) is never sent
//!   again: it is looked for at the provider, or ends as `failed`.
//!
//! The `Scheduler` is one handle; its work is split by concern:
//!
//! - [`write_tx`]: the write transaction and the writes it buffers;
//! - [`enrollment`]: validating and inserting enrollments;
//! - [`transitions`]: the engine hand-off (events in, actions performed), cancel/pause/resume;
//! - [`loops`]: the three loops (`run`) and `run_due_now`;
//! - [`due`]: the due loop's work (wake, end, reconcile), database only;
//! - [`caller_numbers`]: which of the organisation's numbers a contact goes out from;
//! - [`caps`]: contact caps;
//! - [`capacity`]: the provider capacity governor (slots, pacing, fair shares, re-queues);
//! - [`channel`]: the channel interface ([`channel::Provider`]: the simulator, Vapi, Twilio),
//!   what each provider does with a claimed encounter and an overdue one;
//! - [`provider_worker`]: the contact check and claim before every provider request, the
//!   simulator hand-off;
//! - [`hook`]: the organisation's eligibility hook, asked before the claim (or the
//!   simulator's run);
//! - [`vapi`], [`twilio`]: each provider's protocol (requests, retries, protocol constants,
//!   callbacks, routing, read-backs);
//! - [`overdue`]: provider encounters whose report is late;
//! - [`privacy`]: the retention job and a contact's erasure (PHI purged in batches).

mod caller_numbers;
mod capacity;
mod caps;
mod channel;
mod due;
mod enrollment;
mod hook;
mod loops;
mod overdue;
mod privacy;
mod provider_worker;
mod transitions;
mod twilio;
mod vapi;
mod write_tx;

pub use capacity::{ProviderCapacity, ProviderLimits};
pub use caps::ContactCaps;
pub use privacy::{EraseOutcome, Erasure};
pub use twilio::TwilioChannel;

// The concern modules share their crate-private items through this module.
#[allow(unused_imports)]
use self::{
    caller_numbers::*, capacity::*, caps::*, channel::*, due::*, enrollment::*, hook::*, loops::*,
    overdue::*, privacy::*, provider_worker::*, transitions::*, twilio::*, vapi::*, write_tx::*,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use clarion_clock::Clock;
use clarion_delivery::Outbox;
use clarion_engine::{
    Action, Channel, Event, Note, Plan, RuleCap, SequenceState, SequenceStatus, StepSpec,
    Transition,
};
use clarion_store::{
    Assistant, AssistantId, CapacityWait, EncounterEnd, EncounterId, EncounterRow, EncounterStatus,
    IdKind, InsertSequenceError, Millis, NewSequence, NewSequenceEvent, OrgId, PhiPurged,
    PhiSelection, QueuedEncounter, RequestedEncounter, SequenceId, SequenceRow, SequenceUpdate,
    Store, StoreError, TemplateId, TemplateVersionId, Tx,
};
use futures::StreamExt as _;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::calling_rules::{self, ResolvedRule, RuleDefinition};
use crate::definition::{
    self, ContactInfo, Invalid, TemplateDefinition, VoicemailActionDefinition,
};
use crate::fault::crash_point;
use crate::report::build_report;
use clarion_providers::llm::LlmClient;
use clarion_providers::sms_assistant::{
    Conversation, ScriptConfig, SmsEnd, respond_to, sms_report,
};
use clarion_providers::twilio::client::{SendError, TwilioClient};
use clarion_providers::twilio::keywords::Keyword;
use clarion_providers::twilio::wire::{
    ERROR_RATE_LIMITED, InboundMessage, SendFailure, SendMessage, Sender, StatusCallback,
};
use clarion_providers::vapi::client::{
    CONCURRENCY_LIMIT_REACHED, CreateCallError, VapiClient, not_started_for_capacity,
};
use clarion_providers::vapi::report::{EncounterFacts, call_from_end_of_call};
use clarion_providers::vapi::wire::{CreateCallRequest, EndOfCallReport};

/// The outcome stored for a text after a voicemail that was sent: one message that expects no
/// reply. (The engine reads any outcome but a failure or an opt-out as "sent".)
pub(super) const VOICEMAIL_TEXT_SENT: &str = "no-reply";

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
    /// An encounter committed but not confirmed as requested after this long (real time:
    /// the node that committed it has died) is reconciled. On the engine clock the window is
    /// `time_scale` times longer, so a sped-up clock does not take a node that is still
    /// working on it (or another node's work, on a shared database) for a dead one.
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
    /// What organisations' eligibility hooks may reach (the deployment's webhook SSRF
    /// policy: `webhooks.allow_private_targets`, `allow_http`, `allowed_ports`).
    pub eligibility_ssrf: clarion_delivery::ssrf::SsrfPolicy,
    /// How long after a provider call is placed (engine time) Clarion reads it back with
    /// `GET /call/{id}` if its end-of-call report has not arrived, and then again as often
    /// while it has not ended.
    pub provider_report_timeout: Duration,
    /// How long after a provider call is placed (engine time) Clarion stops waiting for its
    /// end: a call neither reported nor readable by then ends `failed`.
    pub provider_give_up_after: Duration,
    /// The provider capacity governor's limits (`vapi.max_concurrent_calls`,
    /// `vapi.reserve_for_inbound`, `twilio.messages_per_second`).
    pub limits: ProviderLimits,
}

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
    /// The idempotency key was used before by a request with another body.
    #[error("the idempotency key was used for a different request")]
    IdempotencyKeyReused,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(&'static str),
    /// A provider could not be asked to confirm something Clarion must not take on trust
    /// (a call report matched by name only); the caller should be told to try again.
    #[error("the provider could not be reached to confirm the callback")]
    ProviderUnavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The scheduler is shutting down; nothing was done.
    #[error("the scheduler is shutting down")]
    Stopped,
}

impl SchedulerError {
    /// Whether the database was away ([`StoreError::is_transient`]): trying again later may
    /// work.
    pub fn is_transient(&self) -> bool {
        matches!(self, SchedulerError::Store(error) if error.is_transient())
    }

    /// Whether the failure is the row's own (a stored value that does not decode or parse,
    /// a definition that no longer validates), not the database's: trying again fails the
    /// same way, so the row is set aside (parked) rather than failing its batch forever.
    pub(crate) fn is_row_fault(&self) -> bool {
        matches!(
            self,
            SchedulerError::Invalid(_)
                | SchedulerError::Corrupt(_)
                | SchedulerError::Store(StoreError::Corrupt(_))
        )
    }
}

/// One enrollment. `Debug` shows the template and flags only: the contact, variables and
/// script are PHI.
#[derive(Clone)]
pub struct EnrollRequest {
    pub template_id: TemplateId,
    pub contact: ContactInfo,
    pub variables: Map<String, Value>,
    pub simulation: Option<Value>,
    pub idempotency_key: Option<String>,
    pub allow_concurrent: bool,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("template_id", &self.template_id)
            .field("allow_concurrent", &self.allow_concurrent)
            .finish_non_exhaustive()
    }
}

impl EnrollRequest {
    /// The request's fingerprint, kept with its idempotency key: the hex SHA-256 of its
    /// canonical form, so that a later request with the same key can be told apart.
    ///
    /// The canonical form is the request as parsed, not its bytes: the JSON object
    /// `{"allow_concurrent", "contact": {"external_id", "name", "phone_number", "time_zone"},
    /// "simulation", "template_id", "variables"}` (absent optional values as `null`,
    /// `allow_concurrent` as `false` when omitted), written compactly with every object's keys
    /// sorted (by their UTF-8 bytes, at every depth) and strings and numbers as serde_json
    /// writes them, after a version tag. So key order, whitespace, escapes in strings and an
    /// omitted default do not matter; any other difference does, including a number's
    /// spelling as integer or float (`1` is not `1.0`). The key itself is not part of it.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let contact = &self.contact;
        let canonical_input = serde_json::json!({
            "allow_concurrent": self.allow_concurrent,
            "contact": {
                "external_id": contact.external_id,
                "name": contact.name,
                "phone_number": contact.phone_number,
                "time_zone": contact.time_zone,
            },
            "simulation": self.simulation,
            "template_id": i64::from(self.template_id),
            "variables": self.variables,
        });
        let mut canonical = String::from("clarion-enrollment-v1\n");
        write_canonical_json(&canonical_input, &mut canonical);
        Sha256::digest(canonical.as_bytes()).iter().fold(
            String::with_capacity(64),
            |mut hex, byte| {
                use std::fmt::Write as _;
                let _ = write!(hex, "{byte:02x}");
                hex
            },
        )
    }
}

/// Writes `value` compactly with object keys sorted at every depth (serde_json keeps
/// insertion order here, as the workspace enables `preserve_order`).
fn write_canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(&String, &Value)> = object.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical_json(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
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
    /// Signalled when a sent text is recorded (see `route_inbound_after_openings`).
    sms_recorded: Notify,
    /// Each Twilio sender's pace (`twilio.messages_per_second`).
    pacer: Pacer,
    /// Set when Vapi refused a call for lack of a slot (see [`CallBackoff`]).
    call_backoff: CallBackoff,
    /// Template versions and assistants never change once written: cached by id.
    plans: Mutex<HashMap<TemplateVersionId, Arc<TemplateDefinition>>>,
    assistants: Mutex<HashMap<AssistantId, Arc<Assistant>>>,
    /// Organisations' own calling rules.
    org_rules: OrgCache<Arc<Vec<RuleDefinition>>>,
    /// Organisations' eligibility hooks (`None`: the organisation has none).
    org_hooks: OrgCache<Option<Arc<Hook>>>,
    /// Asks the hooks (`None` if the client could not be built: every check errs).
    eligibility: Option<clarion_delivery::eligibility::EligibilityClient>,
    /// Single enrollments committed together (group commit).
    enrollment_groups: enrollment::EnrollmentGroups,
}

/// How long a node uses an organisation's calling rules and eligibility hook before reading
/// them again: a change made through another node applies within this.
const ORG_RULES_TTL: Duration = Duration::from_secs(5);

/// Per-organisation settings that change rarely, read at most every [`ORG_RULES_TTL`] per
/// organisation; a change made through this node applies at once ([`OrgCache::forget`]).
#[derive(Debug)]
struct OrgCache<V> {
    entries: Mutex<HashMap<OrgId, (std::time::Instant, V)>>,
}

impl<V> Default for OrgCache<V> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<V: Clone> OrgCache<V> {
    /// The organisation's value, if it was read less than [`ORG_RULES_TTL`] ago.
    fn fresh(&self, org: OrgId) -> Option<V> {
        self.lock()
            .get(&org)
            .filter(|(read_at, _)| read_at.elapsed() < ORG_RULES_TTL)
            .map(|(_, value)| value.clone())
    }

    fn insert(&self, org: OrgId, value: V) {
        self.lock().insert(org, (std::time::Instant::now(), value));
    }

    fn forget(&self, org: OrgId) {
        self.lock().remove(&org);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OrgId, (std::time::Instant, V)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn datetime(millis: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or_default()
}

fn millis(at: DateTime<Utc>) -> Millis {
    at.timestamp_millis()
}

fn note_kind(note: &Note) -> String {
    serde_json::to_value(note)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "note".to_owned())
}

/// A sequence's stored contact.
fn contact_of(sequence: &SequenceRow) -> Result<ContactInfo, SchedulerError> {
    serde_json::from_value(sequence.contact.clone()).map_err(|_| SchedulerError::Corrupt("contact"))
}

/// The engine's plan for a stored definition and a contact's zone, without calling rules
/// (the scheduler adds those that apply to the contact: [`Scheduler::plan_of`]).
pub fn plan_for(definition: &TemplateDefinition, time_zone: &str) -> Result<Plan, SchedulerError> {
    let time_zone = definition::parse_time_zone("contact.time_zone", time_zone)?;
    let steps = definition
        .steps
        .iter()
        .map(|s| StepSpec {
            channel: s.channel,
            assistant_id: s.assistant_id,
            delay: Duration::from_millis(s.delay_ms),
            max_attempts: s.max_attempts,
            retry_delay: Duration::from_millis(s.retry_delay_ms),
            retry_on_voicemail: s.voicemail.retry,
            sms_after_voicemail: s.voicemail.sms_follow_up,
            text_after_voicemail: s.voicemail.sms_text.is_some(),
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
        rules: Vec::new(),
        time_zone,
        sms_timeout: Duration::from_millis(definition.sms_timeout_ms),
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
        let eligibility = eligibility_client(config.eligibility_ssrf.clone());
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                real_clock,
                outbox,
                config,
                wake: Notify::new(),
                provider_wake: Notify::new(),
                sms_recorded: Notify::new(),
                pacer: Pacer::default(),
                call_backoff: CallBackoff::default(),
                plans: Mutex::default(),
                assistants: Mutex::default(),
                org_rules: OrgCache::default(),
                org_hooks: OrgCache::default(),
                eligibility,
                enrollment_groups: enrollment::EnrollmentGroups::default(),
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

    /// Wakes the worker loops (work was committed, or an encounter ended and may have freed a
    /// provider slot).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
        self.inner.provider_wake.notify_one();
    }

    async fn definition(
        &self,
        version_id: TemplateVersionId,
    ) -> Result<Arc<TemplateDefinition>, SchedulerError> {
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

    fn lock_plans(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TemplateVersionId, Arc<TemplateDefinition>>> {
        self.inner
            .plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An assistant of the organisation (cached: assistants are never updated).
    async fn assistant(
        &self,
        org: OrgId,
        id: AssistantId,
    ) -> Result<Arc<Assistant>, SchedulerError> {
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

    /// An organisation's own calling rules (cached for [`ORG_RULES_TTL`]).
    async fn organization_rules(
        &self,
        org: OrgId,
    ) -> Result<Arc<Vec<RuleDefinition>>, SchedulerError> {
        if let Some(rules) = self.inner.org_rules.fresh(org) {
            return Ok(rules);
        }
        let stored = self.inner.store.get_organization(org).await?;
        let rules = Arc::new(calling_rules::stored(
            stored.as_ref().and_then(|o| o.calling_rules.as_deref()),
        ));
        self.inner.org_rules.insert(org, rules.clone());
        Ok(rules)
    }

    /// Drops the cached rules and eligibility hook of `org` (they were just changed through
    /// this node).
    pub fn forget_organization_rules(&self, org: OrgId) {
        self.inner.org_rules.forget(org);
        self.inner.org_hooks.forget(org);
    }

    fn lock_assistants(&self) -> std::sync::MutexGuard<'_, HashMap<AssistantId, Arc<Assistant>>> {
        self.inner
            .assistants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The plan a sequence runs under now: its template version's steps and window, and the
    /// calling rules that apply to its contact (their state's, the organisation's).
    async fn plan_of(&self, sequence: &SequenceRow) -> Result<Plan, SchedulerError> {
        let definition = self.definition(sequence.template_version_id).await?;
        let contact = contact_of(sequence)?;
        let mut plan = plan_for(&definition, &contact.time_zone)?;
        plan.rules = self
            .calling_rules(sequence.org_id, &contact)
            .await?
            .into_iter()
            .map(|resolved| resolved.rule)
            .collect();
        Ok(plan)
    }

    /// The voicemail action of step `step` (0-based) of a template version: `None` for the
    /// assistant's own behaviour.
    async fn voicemail_action(
        &self,
        version: TemplateVersionId,
        step: i64,
    ) -> Result<Option<VoicemailActionDefinition>, SchedulerError> {
        let definition = self.definition(version).await?;
        Ok(usize::try_from(step)
            .ok()
            .and_then(|step| definition.steps.get(step))
            .and_then(|step| step.voicemail.action.clone()))
    }

    /// The calling rules that apply to a contact, in the order of the plan's `rules`.
    async fn calling_rules(
        &self,
        org: OrgId,
        contact: &ContactInfo,
    ) -> Result<Vec<ResolvedRule>, SchedulerError> {
        let org_rules = self.organization_rules(org).await?;
        let state = calling_rules::state_of(contact.state.as_deref(), &contact.phone_number);
        Ok(calling_rules::rules_for(
            state.as_deref(),
            org_rules.as_slice(),
        ))
    }

    /// The report shape of a sequence: for an ended one, the delivered bytes.
    pub async fn report_json(
        &self,
        org: OrgId,
        id: SequenceId,
    ) -> Result<Option<String>, SchedulerError> {
        let Some(sequence) = self.inner.store.get_sequence(org, id).await? else {
            return Ok(None);
        };
        if sequence.status == SequenceStatus::Ended
            && let Some(body) = self.inner.store.report_body(org, id).await?
        {
            return String::from_utf8(body)
                .map(|text| Some(mark_purge(text, &sequence)))
                .map_err(|_| SchedulerError::Corrupt("report body"));
        }
        let encounters = self.inner.store.sequence_encounters(id).await?;
        let ids = self.inner.store.public_ids(org);
        let report = build_report(&ids, &sequence, &encounters, sequence.last_updated);
        serde_json::to_string(&report)
            .map(|text| Some(mark_purge(text, &sequence)))
            .map_err(|_| SchedulerError::Corrupt("report"))
    }

    /// [`Scheduler::report_json`] of each of `sequences` (rows the caller read for `org`), in
    /// their order, with two statements whatever their number: the delivered bodies of the
    /// ended ones, then the encounters of the others.
    pub async fn reports_json(
        &self,
        org: OrgId,
        sequences: &[SequenceRow],
    ) -> Result<Vec<String>, SchedulerError> {
        let ended: Vec<SequenceId> = sequences
            .iter()
            .filter(|s| s.status == SequenceStatus::Ended)
            .map(|s| s.id)
            .collect();
        let mut bodies = self.inner.store.report_bodies(org, &ended).await?;
        let built: Vec<SequenceId> = sequences
            .iter()
            .filter(|s| !bodies.contains_key(&s.id))
            .map(|s| s.id)
            .collect();
        let mut encounters = self
            .inner
            .store
            .encounters_of_sequences(org, &built)
            .await?;
        let ids = self.inner.store.public_ids(org);
        sequences
            .iter()
            .map(|sequence| match bodies.remove(&sequence.id) {
                Some(body) => String::from_utf8(body)
                    .map(|text| mark_purge(text, sequence))
                    .map_err(|_| SchedulerError::Corrupt("report body")),
                None => {
                    let encounters = encounters.remove(&sequence.id).unwrap_or_default();
                    let report = build_report(&ids, sequence, &encounters, sequence.last_updated);
                    serde_json::to_string(&report)
                        .map(|text| mark_purge(text, sequence))
                        .map_err(|_| SchedulerError::Corrupt("report"))
                }
            })
            .collect()
    }
}

/// The API's view of a sequence whose PHI was purged: its report's JSON with one more key,
/// `phi_purged_at` (absent while the PHI is kept; never in the report a webhook sends).
fn mark_purge(mut text: String, sequence: &SequenceRow) -> String {
    let Some(at) = sequence
        .phi_purged_at
        .and_then(clarion_webhooks::Timestamp::from_unix_millis)
    else {
        return text;
    };
    let trimmed = text.trim_end().len();
    if text[..trimmed].ends_with('}') {
        text.truncate(trimmed - 1);
        let at = serde_json::to_string(&at).unwrap_or_else(|_| "null".to_owned());
        text.push_str(&format!(",\"phi_purged_at\":{at}}}"));
    }
    text
}
