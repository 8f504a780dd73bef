//! Vapi on the wire: the `POST /call` request, the `Call` object, and the server messages Vapi
//! POSTs to our server URL.
//!
//! Only the subset Clarion uses is typed (providers.md §1.2, §1.3, §1.5; Vapi's TypeScript SDK
//! `CreateCallDto.ts`, `Call.ts`, `ServerMessage*.ts`). Vapi's schema grows every month, so
//! reading is lenient: unknown fields are ignored, nearly everything is optional, loosely
//! typed fields accept what Vapi has been seen to send (`timestamp` as epoch milliseconds or as
//! an ISO string; `successEvaluation` as a string, boolean or number), and a server message of
//! a type we do not handle is kept as [`ServerMessage::Other`] rather than failing.
//!
//! **Which encounter is this call?** `CreateCallDto` has no `metadata` field (checked against
//! the SDK's `CreateCallDto.ts`: `assistantOverrides.metadata` exists but is "metadata you want
//! to store on the assistant", not on the call). Clarion keeps the Vapi call id it gets back
//! from `POST /call`, and also names the call [`encounter_call_name`] (`clarion-encounter-<id>`)
//! through the call's free `name` label, which Vapi echoes on the `Call` object: that lets a
//! report be matched to its encounter even if the `POST /call` response was lost
//! ([`VapiCall::encounter_id`]). `customer.externalId` is left alone: it would carry the
//! patient's external id to Vapi, which the minimum-necessary rule argues against (§4.4).
//!
//! Parse through [`parse_server_message`] and [`parse_call`]: their errors carry a position
//! and a category only, where `serde_json`'s messages can quote a value (a phone number, a
//! transcript line). Transcripts, summaries, numbers and variables print as `<redacted>` in
//! `Debug`.

use std::fmt;

use chrono::{DateTime, Utc};
use clarion_webhooks::Timestamp;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::de;
use crate::redact::{Count, Opt};

/// The prefix of the `name` Clarion gives every call it places.
pub const ENCOUNTER_NAME_PREFIX: &str = "clarion-encounter-";

/// The call `name` that identifies Clarion's encounter `encounter_id`.
pub fn encounter_call_name(encounter_id: i64) -> String {
    format!("{ENCOUNTER_NAME_PREFIX}{encounter_id}")
}

/// The encounter id in a call `name` made by [`encounter_call_name`].
pub fn encounter_id_from_call_name(name: &str) -> Option<i64> {
    name.strip_prefix(ENCOUNTER_NAME_PREFIX)?.parse().ok()
}

/// The body of `POST /call` (a subset of `CreateCallDto`) for one outbound call with a saved
/// assistant and a saved phone number.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCallRequest {
    /// The saved Vapi assistant.
    pub assistant_id: String,
    /// The saved Vapi phone number the call comes from.
    pub phone_number_id: String,
    /// Who is called.
    pub customer: VapiCustomer,
    /// Per-call template values. PHI may go to Vapi only this way (§1.8), never in assistant
    /// configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant_overrides: Option<AssistantOverrides>,
    /// The call's free label; Clarion puts [`encounter_call_name`] here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl CreateCallRequest {
    /// A call from a saved assistant and number to `customer_number` (E.164) for Clarion's
    /// encounter `encounter_id`, with the contact's variables for the assistant's templates.
    /// No variables → no `assistantOverrides`.
    pub fn new(
        assistant_id: impl Into<String>,
        phone_number_id: impl Into<String>,
        customer_number: impl Into<String>,
        encounter_id: i64,
        variable_values: Map<String, Value>,
    ) -> Self {
        Self {
            assistant_id: assistant_id.into(),
            phone_number_id: phone_number_id.into(),
            customer: VapiCustomer {
                number: Some(customer_number.into()),
                ..VapiCustomer::default()
            },
            assistant_overrides: (!variable_values.is_empty()).then_some(AssistantOverrides {
                variable_values,
                ..AssistantOverrides::default()
            }),
            name: Some(encounter_call_name(encounter_id)),
        }
    }

    /// The step's voicemail policy: detect voicemail (Vapi's own detector) and leave
    /// `message`, or, with `None`, hang up — Vapi hangs up on a voicemail when the assistant
    /// has no `voicemailMessage` (the saved assistant must not set one of its own).
    pub fn on_voicemail(mut self, message: Option<String>) -> Self {
        let overrides = self
            .assistant_overrides
            .get_or_insert_with(Default::default);
        overrides.voicemail_detection = Some(VoicemailDetection {
            provider: "vapi".to_owned(),
        });
        overrides.voicemail_message = message;
        self
    }
}

impl fmt::Debug for CreateCallRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateCallRequest")
            .field("assistant_id", &self.assistant_id)
            .field("phone_number_id", &self.phone_number_id)
            .field("customer", &self.customer)
            .field("assistant_overrides", &self.assistant_overrides)
            .field("name", &self.name)
            .finish()
    }
}

/// `assistantOverrides`, the part Clarion sets.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistantOverrides {
    /// Values for the assistant's LiquidJS `{{ }}` templates.
    #[serde(default)]
    pub variable_values: Map<String, Value>,
    /// What the assistant says when it reaches voicemail (a step's `leave-message` policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail_message: Option<String>,
    /// Voicemail detection, turned on by a step's voicemail policy (off by default at Vapi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voicemail_detection: Option<VoicemailDetection>,
}

/// `assistant.voicemailDetection`: the detector (Clarion asks for Vapi's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoicemailDetection {
    /// `vapi`, `google`, `openai` or `twilio`.
    pub provider: String,
}

impl fmt::Debug for AssistantOverrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssistantOverrides")
            .field("variable_values", &Count(self.variable_values.len()))
            .field("voicemail_message", &self.voicemail_message.is_some())
            .field("voicemail_detection", &self.voicemail_detection)
            .finish()
    }
}

/// A customer (`CreateCustomerDTO` when sending; the call's `customer` when reading).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VapiCustomer {
    /// E.164 number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// Display name ("just for your own reference" in Vapi's words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An external id (Clarion does not set it; see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

impl fmt::Debug for VapiCustomer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapiCustomer")
            .field("number", &Opt(&self.number))
            .field("name", &Opt(&self.name))
            .field("external_id", &Opt(&self.external_id))
            .finish()
    }
}

/// A phone number object (the saved or transient number of the call): only its number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VapiPhoneNumber {
    /// Our number, E.164 (the report's `source_number`). Not PHI: it is the clinic's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
}

/// The `Call` object (subset). Only `id` is required here; Vapi also always sends `orgId`,
/// `createdAt` and `updatedAt`, but Clarion does not depend on them.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VapiCall {
    /// Vapi's call id; the de-duplication key of end-of-call reports.
    pub id: String,
    /// The Vapi organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// `outboundPhoneCall`, `inboundPhoneCall`, `webCall`, `vapi.websocketCall`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub call_type: Option<String>,
    /// One of the eight statuses (see [`super::mapping::call_status`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why it ended (see [`super::mapping`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_reason: Option<String>,
    /// Free-text context for the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_message: Option<String>,
    /// ISO 8601, when the call started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// ISO 8601, when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// The assistant that handled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant_id: Option<String>,
    /// The saved number it used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
    /// The transient number, when no saved one was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<VapiPhoneNumber>,
    /// Who was called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<VapiCustomer>,
    /// The free label; Clarion's [`encounter_call_name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Total cost in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Cost lines, kept as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub costs: Option<Vec<Value>>,
    /// Post-call analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<VapiAnalysis>,
    /// Transcript, messages, recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<VapiArtifact>,
    /// `twilio`, `vonage`, `vapi`, `telnyx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_call_provider: Option<String>,
    /// `sip` or `pstn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_call_transport: Option<String>,
    /// The carrier's call id (the Twilio CallSid when Twilio carries the call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_call_provider_id: Option<String>,
}

impl VapiCall {
    /// Clarion's encounter id, from the call's `name`.
    pub fn encounter_id(&self) -> Option<i64> {
        self.name.as_deref().and_then(encounter_id_from_call_name)
    }

    /// `endedAt - startedAt` in milliseconds; Vapi has no duration field.
    pub fn duration_ms(&self) -> Option<u64> {
        duration_ms(self.started_at.as_deref(), self.ended_at.as_deref())
    }
}

impl fmt::Debug for VapiCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapiCall")
            .field("id", &self.id)
            .field("call_type", &self.call_type)
            .field("status", &self.status)
            .field("ended_reason", &self.ended_reason)
            .field("ended_message", &Opt(&self.ended_message))
            .field("started_at", &self.started_at)
            .field("ended_at", &self.ended_at)
            .field("assistant_id", &self.assistant_id)
            .field("customer", &self.customer)
            .field("name", &self.name)
            .field("analysis", &self.analysis)
            .field("artifact", &self.artifact)
            .finish_non_exhaustive()
    }
}

/// Parses an ISO 8601 / RFC 3339 time from Vapi into the report's timestamp type.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|time| Timestamp::from_datetime(time.with_timezone(&Utc)))
}

/// Milliseconds from `started_at` to `ended_at` (ISO 8601); `None` if either is missing or
/// unreadable, or if the end is before the start.
pub fn duration_ms(started_at: Option<&str>, ended_at: Option<&str>) -> Option<u64> {
    let start = parse_time(started_at?)?;
    let end = parse_time(ended_at?)?;
    u64::try_from(end.unix_millis() - start.unix_millis()).ok()
}

/// `analysis`: what Vapi's post-call analysis (the assistant's `analysisPlan`) produced.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VapiAnalysis {
    /// The summary (the report's `summary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Structured data extracted by the plan's schema (the report's `analysis.custom`). An
    /// `outcome` key here decides the call's outcome (see [`super::mapping`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_data: Option<Map<String, Value>>,
    /// Several structured extractions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_data_multi: Option<Vec<Value>>,
    /// The success evaluation: a string in the schema (`"true"`/`"false"` with the PassFail
    /// rubric); booleans and numbers are accepted too and kept as their text.
    #[serde(
        default,
        deserialize_with = "de::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub success_evaluation: Option<String>,
}

impl fmt::Debug for VapiAnalysis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapiAnalysis")
            .field("summary", &Opt(&self.summary))
            .field("structured_data", &Opt(&self.structured_data))
            .field("success_evaluation", &self.success_evaluation)
            .finish_non_exhaustive()
    }
}

/// `artifact`: what the call left behind.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VapiArtifact {
    /// Plain-text transcript with `AI:` / `User:` prefixes.
    #[serde(
        default,
        deserialize_with = "de::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub transcript: Option<String>,
    /// The timed messages (see [`super::turns`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ArtifactMessage>>,
    /// The mono recording.
    #[serde(
        default,
        deserialize_with = "de::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub recording_url: Option<String>,
}

impl fmt::Debug for VapiArtifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapiArtifact")
            .field("transcript", &Opt(&self.transcript))
            .field(
                "messages",
                &self.messages.as_ref().map(|messages| Count(messages.len())),
            )
            .field("recording_url", &Opt(&self.recording_url))
            .finish()
    }
}

/// One item of `artifact.messages`: a user, bot, system, tool-call or tool-result message.
/// Every field is optional and leniently typed, because the item kinds differ in shape and only
/// user and bot items (role, text, times) matter to Clarion.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactMessage {
    /// `user`, `bot` or `assistant`, `system`, `tool_calls`, … (free-form in the schema).
    #[serde(
        default,
        deserialize_with = "de::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub role: Option<String>,
    /// What was said.
    #[serde(
        default,
        deserialize_with = "de::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    /// When it started, epoch milliseconds.
    #[serde(
        default,
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub time: Option<f64>,
    /// When it ended, epoch milliseconds.
    #[serde(
        default,
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub end_time: Option<f64>,
    /// Seconds from the start of the call.
    #[serde(
        default,
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub seconds_from_start: Option<f64>,
    /// Duration in milliseconds.
    #[serde(
        default,
        deserialize_with = "de::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<f64>,
}

impl fmt::Debug for ArtifactMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactMessage")
            .field("role", &self.role)
            .field("message", &Opt(&self.message))
            .field("time", &self.time)
            .field("end_time", &self.end_time)
            .field("seconds_from_start", &self.seconds_from_start)
            .finish_non_exhaustive()
    }
}

/// A server message's `timestamp`: epoch milliseconds in the current spec, an ISO string in
/// older SDKs (providers.md §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VapiTime {
    /// Epoch milliseconds (kept as the JSON number received).
    Millis(serde_json::Number),
    /// ISO 8601.
    Text(String),
}

impl VapiTime {
    /// Epoch milliseconds, whichever form arrived.
    pub fn unix_millis(&self) -> Option<i64> {
        match self {
            VapiTime::Millis(millis) => millis.as_i64().or_else(|| {
                // A fractional value: whole milliseconds are all Clarion keeps.
                #[allow(clippy::cast_possible_truncation)]
                millis.as_f64().map(|ms| ms.round() as i64)
            }),
            VapiTime::Text(text) => parse_time(text).map(|time| time.unix_millis()),
        }
    }
}

/// The body Vapi POSTs to the server URL: `{"message": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServerMessageEnvelope {
    /// The message.
    pub message: ServerMessage,
}

/// A server message, by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// `status-update`: the call moved to a new status.
    StatusUpdate(Box<StatusUpdate>),
    /// `end-of-call-report`: sent once after post-call processing; not retried by default.
    EndOfCallReport(Box<EndOfCallReport>),
    /// Any other type (`hang`, `conversation-update`, `speech-update`, …): acknowledged and
    /// otherwise ignored. None of these needs a response body except the request types
    /// Clarion's assistants do not use (`assistant-request`, `tool-calls`, …).
    Other {
        /// The message's `type`, or empty if it had none.
        message_type: String,
    },
}

impl ServerMessage {
    /// The message's `type` as sent.
    pub fn message_type(&self) -> &str {
        match self {
            ServerMessage::StatusUpdate(_) => "status-update",
            ServerMessage::EndOfCallReport(_) => "end-of-call-report",
            ServerMessage::Other { message_type } => message_type,
        }
    }

    /// The Vapi call id the message is about, from its `call` object.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            ServerMessage::StatusUpdate(update) => update.call.as_ref().map(|c| c.id.as_str()),
            ServerMessage::EndOfCallReport(report) => report.call_id(),
            ServerMessage::Other { .. } => None,
        }
    }
}

impl<'de> Deserialize<'de> for ServerMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let message_type = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        // The inner error is dropped on purpose: serde_json can quote the offending value.
        match message_type.as_str() {
            "status-update" => serde_json::from_value(value)
                .map(|update| ServerMessage::StatusUpdate(Box::new(update)))
                .map_err(|_| D::Error::custom("malformed status-update message")),
            "end-of-call-report" => serde_json::from_value(value)
                .map(|report| ServerMessage::EndOfCallReport(Box::new(report)))
                .map_err(|_| D::Error::custom("malformed end-of-call-report message")),
            _ => Ok(ServerMessage::Other { message_type }),
        }
    }
}

/// `status-update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    /// The new status (same eight values as `Call.status`).
    pub status: String,
    /// Only when `status` is `ended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_reason: Option<String>,
    /// When Vapi sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<VapiTime>,
    /// The call, as of this update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<VapiCall>,
}

/// `end-of-call-report`: the final word on a call.
///
/// Vapi sends it once and by default does not retry; it waits about 20 s for our answer. Ack
/// fast, process asynchronously, and de-duplicate on [`EndOfCallReport::call_id`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndOfCallReport {
    /// Why the call ended (required).
    pub ended_reason: String,
    /// Transcript and messages.
    #[serde(default)]
    pub artifact: VapiArtifact,
    /// Summary, structured data, success evaluation.
    #[serde(default)]
    pub analysis: VapiAnalysis,
    /// ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Total cost in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Cost lines, kept as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub costs: Option<Vec<Value>>,
    /// When Vapi sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<VapiTime>,
    /// The call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<VapiCall>,
    /// Who was called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<VapiCustomer>,
    /// Our number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<VapiPhoneNumber>,
}

impl EndOfCallReport {
    /// The report a finished call implies, for when the end-of-call report never arrived
    /// and the call was read back with `GET /call/{id}`: `None` while the call has not
    /// ended (no `endedReason` yet).
    pub fn from_ended_call(call: VapiCall) -> Option<Self> {
        if call.status.as_deref() != Some("ended") {
            return None;
        }
        let ended_reason = call.ended_reason.clone()?;
        Some(Self {
            ended_reason,
            artifact: call.artifact.clone().unwrap_or_default(),
            analysis: call.analysis.clone().unwrap_or_default(),
            started_at: call.started_at.clone(),
            ended_at: call.ended_at.clone(),
            cost: call.cost,
            costs: call.costs.clone(),
            timestamp: None,
            customer: call.customer.clone(),
            phone_number: call.phone_number.clone(),
            call: Some(call),
        })
    }

    /// The Vapi call id (the de-duplication key).
    pub fn call_id(&self) -> Option<&str> {
        self.call.as_ref().map(|call| call.id.as_str())
    }

    /// `endedAt - startedAt` in milliseconds, from the report or else from its call.
    pub fn duration_ms(&self) -> Option<u64> {
        duration_ms(self.started_at.as_deref(), self.ended_at.as_deref())
            .or_else(|| self.call.as_ref().and_then(VapiCall::duration_ms))
    }
}

/// A Vapi payload that could not be read. Says where and what kind of problem, never what the
/// payload contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unreadable Vapi payload ({kind} at line {line}, column {column})")]
pub struct WireError {
    /// `syntax`, `data` (well-formed JSON of the wrong shape), or `eof`.
    pub kind: &'static str,
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
}

impl From<serde_json::Error> for WireError {
    fn from(error: serde_json::Error) -> Self {
        use serde_json::error::Category;
        Self {
            kind: match error.classify() {
                Category::Io => "io",
                Category::Syntax => "syntax",
                Category::Data => "data",
                Category::Eof => "eof",
            },
            line: error.line(),
            column: error.column(),
        }
    }
}

/// Parses a server-URL request body.
pub fn parse_server_message(body: &[u8]) -> Result<ServerMessage, WireError> {
    Ok(serde_json::from_slice::<ServerMessageEnvelope>(body)?.message)
}

/// Parses a `Call` (the `POST /call` 201 body, or `GET /call/{id}`).
pub fn parse_call(body: &[u8]) -> Result<VapiCall, WireError> {
    Ok(serde_json::from_slice(body)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    // providers.md §1.10.
    const REQUEST: &str = r#"{"assistantId":"asst_1","phoneNumberId":"pn_1","customer":{"number":"+15555550123"},"assistantOverrides":{"variableValues":{"patientFirstName":"Ana"}}}"#;
    const CREATED: &str = r#"{"id":"call_1","orgId":"org_1","createdAt":"2025-01-06T15:00:00.000Z","updatedAt":"2025-01-06T15:00:00.000Z","type":"outboundPhoneCall",
 "status":"queued","assistantId":"asst_1","phoneNumberId":"pn_1","customer":{"number":"+15555550123"},"phoneCallProvider":"twilio","phoneCallTransport":"pstn"}"#;
    const STATUS_UPDATE: &str = r#"{"message":{"type":"status-update","status":"in-progress","timestamp":1736175605000,"call":{"id":"call_1","orgId":"org_1","createdAt":"2025-01-06T15:00:00.000Z","updatedAt":"2025-01-06T15:00:05.000Z","status":"in-progress"}}}"#;
    pub(crate) const END_OF_CALL: &str = r#"{"message":{"type":"end-of-call-report","endedReason":"customer-ended-call","timestamp":1736175700000,"startedAt":"2025-01-06T15:00:05.000Z",
 "endedAt":"2025-01-06T15:01:35.000Z","cost":0.12,"costs":[{"type":"vapi","subType":"normal","minutes":1.5,"cost":0.075}],
 "analysis":{"summary":"Patient confirmed appointment.","structuredData":{"confirmed":true},"successEvaluation":"true"},
 "artifact":{"transcript":"AI: Hi Ana, this is Clinic X.\nUser: Hi.\n","recordingUrl":"https://example.invalid/rec.wav",
   "messages":[{"role":"bot","message":"Hi Ana, this is Clinic X.","time":1736175606000,"endTime":1736175608000,"secondsFromStart":1.0}]},
 "customer":{"number":"+15555550123"},
 "call":{"id":"call_1","orgId":"org_1","createdAt":"2025-01-06T15:00:00.000Z","updatedAt":"2025-01-06T15:01:40.000Z",
   "type":"outboundPhoneCall","status":"ended","endedReason":"customer-ended-call","assistantId":"asst_1"}}}"#;

    #[test]
    fn the_reference_request_round_trips() {
        let mut variables = Map::new();
        variables.insert("patientFirstName".into(), Value::from("Ana"));
        let mut request = CreateCallRequest::new("asst_1", "pn_1", "+15555550123", 42, variables);
        assert_eq!(request.name.as_deref(), Some("clarion-encounter-42"));
        // The reference request carries no name; without it the bytes are identical.
        request.name = None;
        assert_eq!(serde_json::to_string(&request).unwrap(), REQUEST);
        let parsed: CreateCallRequest = serde_json::from_str(REQUEST).unwrap();
        assert_eq!(parsed, request);
    }

    #[test]
    fn a_request_names_the_encounter_and_omits_empty_overrides() {
        let request = CreateCallRequest::new("a", "p", "+15555550123", 7, Map::new());
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["name"], "clarion-encounter-7");
        assert!(json.get("assistantOverrides").is_none());
        assert!(json["customer"].get("name").is_none());
        let debug = format!("{request:?}");
        assert!(!debug.contains("5555550123"), "{debug}");
    }

    #[test]
    fn a_voicemail_policy_turns_detection_on_and_leaves_its_message_or_none() {
        let leave = CreateCallRequest::new("a", "p", "+15555550123", 7, Map::new())
            .on_voicemail(Some("Please call the clinic back.".into()));
        let json = serde_json::to_value(&leave).unwrap();
        assert_eq!(
            json["assistantOverrides"],
            serde_json::json!({
                "variableValues": {},
                "voicemailMessage": "Please call the clinic back.",
                "voicemailDetection": { "provider": "vapi" },
            })
        );
        let hang_up =
            CreateCallRequest::new("a", "p", "+15555550123", 7, Map::new()).on_voicemail(None);
        let json = serde_json::to_value(&hang_up).unwrap();
        assert!(json["assistantOverrides"].get("voicemailMessage").is_none());
        assert_eq!(
            json["assistantOverrides"]["voicemailDetection"]["provider"],
            "vapi"
        );
        assert!(!format!("{leave:?}").contains("clinic back"));
    }

    #[test]
    fn encounter_names_round_trip_and_reject_others() {
        assert_eq!(
            encounter_id_from_call_name(&encounter_call_name(9001)),
            Some(9001)
        );
        assert_eq!(encounter_id_from_call_name("clarion-encounter-"), None);
        assert_eq!(encounter_id_from_call_name("clarion-encounter-x1"), None);
        assert_eq!(encounter_id_from_call_name("my call"), None);
    }

    #[test]
    fn the_reference_call_parses() {
        let call = parse_call(CREATED.as_bytes()).unwrap();
        assert_eq!(call.id, "call_1");
        assert_eq!(call.status.as_deref(), Some("queued"));
        assert_eq!(call.call_type.as_deref(), Some("outboundPhoneCall"));
        assert_eq!(
            call.customer.as_ref().unwrap().number.as_deref(),
            Some("+15555550123")
        );
        assert_eq!(call.phone_call_provider.as_deref(), Some("twilio"));
        assert_eq!(call.duration_ms(), None);
        assert_eq!(call.encounter_id(), None);
        let debug = format!("{call:?}");
        assert!(!debug.contains("5555550123"), "{debug}");
    }

    #[test]
    fn a_call_with_unknown_fields_and_odd_types_still_parses() {
        let call = parse_call(
            br#"{"id":"c","name":"clarion-encounter-5","startedAt":"2025-01-06T15:00:05Z","endedAt":"2025-01-06T15:00:06.250Z",
                "somethingNew":{"deep":[1,2]},"analysis":{"successEvaluation":true},
                "artifact":{"messages":[{"role":"tool_calls","toolCalls":[{"id":"t"}],"message":null},{"role":"user","message":"Hi","time":"1736175606000"}]}}"#,
        )
        .unwrap();
        assert_eq!(call.encounter_id(), Some(5));
        assert_eq!(call.duration_ms(), Some(1250));
        assert_eq!(
            call.analysis.unwrap().success_evaluation.as_deref(),
            Some("true")
        );
        let messages = call.artifact.unwrap().messages.unwrap();
        assert_eq!(messages[0].message, None);
        assert_eq!(messages[1].time, Some(1_736_175_606_000.0));
    }

    #[test]
    fn the_reference_status_update_parses() {
        let message = parse_server_message(STATUS_UPDATE.as_bytes()).unwrap();
        assert_eq!(message.message_type(), "status-update");
        assert_eq!(message.call_id(), Some("call_1"));
        let ServerMessage::StatusUpdate(update) = message else {
            panic!("not a status update");
        };
        assert_eq!(update.status, "in-progress");
        assert_eq!(update.ended_reason, None);
        assert_eq!(
            update.timestamp.and_then(|t| t.unix_millis()),
            Some(1_736_175_605_000)
        );
    }

    #[test]
    fn the_reference_end_of_call_report_parses() {
        let message = parse_server_message(END_OF_CALL.as_bytes()).unwrap();
        assert_eq!(message.call_id(), Some("call_1"));
        let ServerMessage::EndOfCallReport(report) = message else {
            panic!("not an end-of-call report");
        };
        assert_eq!(report.ended_reason, "customer-ended-call");
        assert_eq!(report.duration_ms(), Some(90_000));
        assert_eq!(report.cost, Some(0.12));
        assert_eq!(report.costs.as_ref().map(Vec::len), Some(1));
        assert_eq!(report.analysis.success_evaluation.as_deref(), Some("true"));
        assert_eq!(
            report.analysis.summary.as_deref(),
            Some("Patient confirmed appointment.")
        );
        assert_eq!(
            report.analysis.structured_data.as_ref().unwrap()["confirmed"],
            Value::Bool(true)
        );
        assert_eq!(
            report.artifact.transcript.as_deref(),
            Some("AI: Hi Ana, this is Clinic X.\nUser: Hi.\n")
        );
        let messages = report.artifact.messages.as_ref().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].role.as_deref(), Some("bot"));
        assert_eq!(messages[0].end_time, Some(1_736_175_608_000.0));
        assert_eq!(messages[0].seconds_from_start, Some(1.0));
        let call = report.call.as_ref().unwrap();
        assert_eq!(call.status.as_deref(), Some("ended"));
        assert_eq!(call.assistant_id.as_deref(), Some("asst_1"));
        let debug = format!("{report:?}");
        for phi in ["5555550123", "Hi Ana", "confirmed appointment"] {
            assert!(!debug.contains(phi), "{phi} in {debug}");
        }
    }

    #[test]
    fn other_message_types_are_kept_by_name() {
        let message = parse_server_message(
            br#"{"message":{"type":"hang","timestamp":"2025-01-06T15:00:00Z"}}"#,
        )
        .unwrap();
        assert_eq!(
            message,
            ServerMessage::Other {
                message_type: "hang".into()
            }
        );
        let untyped = parse_server_message(br#"{"message":{}}"#).unwrap();
        assert_eq!(untyped.message_type(), "");
        assert_eq!(untyped.call_id(), None);
    }

    #[test]
    fn iso_timestamps_are_accepted() {
        let time: VapiTime = serde_json::from_str(r#""2025-01-06T15:00:05.000Z""#).unwrap();
        assert_eq!(time.unix_millis(), Some(1_736_175_605_000));
        let time: VapiTime = serde_json::from_str("1736175605000").unwrap();
        assert_eq!(time.unix_millis(), Some(1_736_175_605_000));
        let bad: VapiTime = serde_json::from_str(r#""yesterday""#).unwrap();
        assert_eq!(bad.unix_millis(), None);
    }

    #[test]
    fn parse_errors_quote_nothing_from_the_payload() {
        let error = parse_server_message(
            br#"{"message":{"type":"end-of-call-report","endedReason":"+15555550123"#,
        )
        .unwrap_err();
        assert_eq!(error.kind, "eof");
        let error = parse_server_message(
            br#"{"message":{"type":"end-of-call-report","endedReason":5,"artifact":{"transcript":"User: call +15555550123"}}}"#,
        )
        .unwrap_err();
        assert_eq!(error.kind, "data");
        let text = error.to_string();
        assert!(!text.contains("555") && !text.contains("User"), "{text}");
        let missing = parse_server_message(br#"{"message":{"type":"status-update"}}"#).unwrap_err();
        assert_eq!(missing.kind, "data");
        assert!(parse_call(br#"{"orgId":"org_1"}"#).is_err());
    }

    #[test]
    fn durations_need_both_ends_in_order() {
        assert_eq!(
            duration_ms(Some("2025-01-06T15:00:00Z"), Some("2025-01-06T14:59:59Z")),
            None
        );
        assert_eq!(duration_ms(None, Some("2025-01-06T15:00:00Z")), None);
        assert_eq!(
            duration_ms(Some("garbage"), Some("2025-01-06T15:00:00Z")),
            None
        );
        assert_eq!(
            duration_ms(
                Some("2025-01-06T10:00:00-05:00"),
                Some("2025-01-06T15:00:01Z")
            ),
            Some(1000)
        );
    }
}
