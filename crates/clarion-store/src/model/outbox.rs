//! The webhook outbox: endpoints, messages, deliveries, claims and attempts.

use std::str::FromStr;

use crate::{
    DeliveryId, EndpointId, MessageId, Millis, OrgId, RecoveryId, Result, SequenceId, StoreError,
};

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub org_id: OrgId,
    pub url: String,
    pub description: String,
    pub enabled: bool,
    /// Why Clarion disabled the endpoint by itself (e.g. the receiver answered 410 Gone).
    pub disabled_reason: Option<String>,
    /// Since when every attempt to it has failed (`None` after a 2xx, before any attempt, and
    /// once re-enabled).
    pub failing_since: Option<Millis>,
    /// The event types it subscribes to ([`DEFAULT_EVENT_TYPES`] unless chosen).
    pub event_types: Vec<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    /// Replaces the subscribed event types (the caller validates the names).
    pub event_types: Option<Vec<String>>,
}

/// What an endpoint subscribes to unless told otherwise: the End of Sequence Report.
pub const DEFAULT_EVENT_TYPES: &[&str] = &["sequence.ended"];

/// Event types as stored: a JSON array of names.
pub(crate) fn event_types_json<S: AsRef<str>>(types: &[S]) -> String {
    serde_json::Value::from(types.iter().map(|t| t.as_ref()).collect::<Vec<_>>()).to_string()
}

/// Event types as read back.
pub(crate) fn event_types_from_json(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|_| StoreError::Corrupt("endpoint event types"))
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every scheduled attempt failed (or the endpoint is gone); retryable by hand.
    Failed,
}

impl DeliveryStatus {
    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            _ => Err(StoreError::Corrupt("unknown delivery status")),
        }
    }
}

/// A message to enqueue: the exact bytes every attempt will send.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub org_id: OrgId,
    pub webhook_id: &'a str,
    pub event_type: &'a str,
    pub sequence_id: Option<SequenceId>,
    pub is_test: bool,
    pub body: &'a [u8],
    pub created_at: Millis,
}

/// The sequences whose End of Sequence Report these messages are (test reports and other
/// event types name none).
pub(crate) fn reported_sequences(messages: &[NewMessage<'_>]) -> Vec<i64> {
    messages
        .iter()
        .filter(|message| !message.is_test && message.event_type == "sequence.ended")
        .filter_map(|message| message.sequence_id.map(|id| id.0))
        .collect()
}

/// A delivery with its message's identity and every attempt so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub endpoint_id: EndpointId,
    pub message_id: MessageId,
    pub webhook_id: String,
    pub event_type: String,
    pub sequence_id: Option<SequenceId>,
    pub is_test: bool,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    pub next_attempt_at: Option<Millis>,
    pub created_at: Millis,
    pub attempts: Vec<Attempt>,
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt_number: u32,
    pub attempted_at: Millis,
    /// `None` when no HTTP answer arrived (timeout, refused connection, blocked address).
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    /// A short error class, e.g. `timeout`, `connection-refused`, `ssrf-blocked`.
    pub error: Option<String>,
    /// The first KiB of the answer's body.
    pub response_body: Option<Vec<u8>>,
}

/// Filters for listing deliveries.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub sequence_id: Option<SequenceId>,
    pub endpoint_id: Option<EndpointId>,
    pub status: Option<DeliveryStatus>,
}

/// A delivery claimed by a dispatcher, with everything needed to attempt it.
///
/// `Debug` leaves out the URL, the body and the secrets.
#[derive(Clone)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    pub endpoint_id: EndpointId,
    /// The organisation the endpoint belongs to (the claimer counts its slots per
    /// organisation, see [`ClaimRequest::per_organization_limit`]).
    pub org_id: OrgId,
    pub url: String,
    pub webhook_id: String,
    pub event_type: String,
    pub body: Vec<u8>,
    /// The endpoint's secrets that sign at claim time: the current one first, then rotated-out
    /// ones still within their overlap.
    pub signing_secrets: Vec<String>,
    /// Attempts made before this one.
    pub attempt_count: u32,
    /// A hand-requested extra attempt: on failure the delivery goes back to `failed`.
    pub manual: bool,
    /// This claim's lease token, written as the delivery's `lease_owner`: the node's name and
    /// a random suffix drawn for this claim alone. An outcome recorded under it lands only
    /// while the delivery still carries it, so a claim whose lease expired (and was claimed
    /// again, even by the same node) can no longer move the delivery.
    pub lease: String,
}

impl std::fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("id", &self.id)
            .field("endpoint_id", &self.endpoint_id)
            .field("org_id", &self.org_id)
            .field("webhook_id", &self.webhook_id)
            .field("attempt_count", &self.attempt_count)
            .field("manual", &self.manual)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// The claiming node's identity: the prefix of each claim's lease token (the token adds a
    /// random suffix per claim, see [`ClaimedDelivery::lease`]).
    pub owner: &'a str,
    pub now: Millis,
    pub lease_until: Millis,
    pub limit: u32,
    /// `true` claims first attempts only, `false` retries only, so that a backlog of retries
    /// never delays fresh reports.
    pub first_attempts: bool,
    /// At most this many deliveries of one endpoint in flight (unless the endpoint has its
    /// own limit in `endpoint_limits`), counted over every node sharing the database: the
    /// store counts the endpoint's live leases, whoever holds them, and makes that count and
    /// the claim one step across claimers...
    pub per_endpoint_limit: u32,
    /// ...and never fewer than these, in flight on the claiming node (endpoint, count).
    pub in_flight: &'a [(EndpointId, u32)],
    /// Endpoints with a limit of their own instead of `per_endpoint_limit` (the dispatcher's
    /// adaptive concurrency: raised for a receiver that keeps up, cut for one that does not).
    pub endpoint_limits: &'a [(EndpointId, u32)],
    /// At most this many deliveries of one organisation in flight on the claiming node...
    pub per_organization_limit: u32,
    /// ...counting these, already in flight there (organisation, count). Within the batch,
    /// organisations take turns, the one with the fewest in flight first, and within an
    /// organisation its endpoints do likewise: when slots are short, every organisation
    /// with due work gets its share of them before any gets more.
    pub in_flight_per_organization: &'a [(OrgId, u32)],
}

impl ClaimRequest<'_> {
    /// How many due rows of one endpoint a claim looks at: enough for the largest limit.
    pub(crate) fn candidates_per_endpoint(&self) -> u32 {
        let largest = self
            .endpoint_limits
            .iter()
            .map(|(_, limit)| *limit)
            .fold(self.per_endpoint_limit, u32::max);
        self.limit.min(largest)
    }
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered,
    RetryAt(Millis),
    Failed,
}

/// The outcome of one attempt, to record.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub delivery_id: DeliveryId,
    /// The lease token of the claim the attempt was made under ([`ClaimedDelivery::lease`]).
    pub lease: String,
    pub attempt: Attempt,
    pub next: AfterAttempt,
    /// Disable the endpoint with this reason (the receiver answered 410 Gone).
    pub disable_endpoint: Option<(EndpointId, String)>,
}

/// One row of the grouped attempt-stats query: (duration in ms, attempts, of which 2xx,
/// latest 2xx, latest other).
pub(crate) type AttemptGroup = (i64, i64, i64, Option<Millis>, Option<Millis>);

/// An endpoint's attempts over a window (`Store::endpoint_attempt_stats`): counts, when the
/// latest of each kind was made, and every duration with how often it occurred, from which
/// exact percentiles follow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptStats {
    /// Attempts made in the window.
    pub attempts: u64,
    /// Those answered 2xx.
    pub succeeded: u64,
    /// The latest 2xx attempt's time.
    pub last_success_at: Option<Millis>,
    /// The latest other attempt's time.
    pub last_failure_at: Option<Millis>,
    /// `(duration in ms, attempts that took it)`, shortest first. One entry per distinct
    /// duration: at most the attempt timeout in milliseconds, however many attempts.
    pub durations: Vec<(u64, u64)>,
}

impl AttemptStats {
    /// The stats from a backend's grouped query: one row per distinct duration of
    /// `(duration in ms, attempts, of which 2xx, latest 2xx, latest other)`.
    pub(crate) fn from_groups(groups: Vec<AttemptGroup>) -> Self {
        let mut stats = Self::default();
        for (duration_ms, attempts, succeeded, last_success_at, last_failure_at) in groups {
            let attempts = u64::try_from(attempts).unwrap_or(0);
            stats.attempts += attempts;
            stats.succeeded += u64::try_from(succeeded).unwrap_or(0);
            stats.last_success_at = stats.last_success_at.max(last_success_at);
            stats.last_failure_at = stats.last_failure_at.max(last_failure_at);
            stats
                .durations
                .push((u64::try_from(duration_ms).unwrap_or(0), attempts));
        }
        stats
    }

    /// Attempts not answered 2xx (other statuses, timeouts, refused connections, ...).
    pub fn failed(&self) -> u64 {
        self.attempts.saturating_sub(self.succeeded)
    }

    /// `succeeded / attempts`; `None` without attempts.
    pub fn success_rate(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.succeeded as f64 / self.attempts as f64)
    }

    /// The `percent`th percentile of the durations, nearest rank (the smallest duration at
    /// least `percent` % of the attempts took no longer than); `None` without attempts.
    pub fn latency_percentile_ms(&self, percent: u8) -> Option<u64> {
        let total: u64 = self.durations.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        // Nearest rank: ceil(p/100 * N), at least 1.
        let rank = (u64::from(percent.min(100)) * total).div_ceil(100).max(1);
        let mut seen = 0;
        self.durations.iter().find_map(|(ms, n)| {
            seen += n;
            (seen >= rank).then_some(*ms)
        })
    }
}

/// Queue figures for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub pending: u64,
    /// When the oldest pending delivery was created.
    pub oldest_pending_created_at: Option<Millis>,
}

/// A report from the pull API: the message id is the cursor.
#[derive(Debug, Clone)]
pub struct StoredReport {
    pub message_id: MessageId,
    pub webhook_id: String,
    pub body: Vec<u8>,
}

/// Which endpoints a new message goes to.
#[derive(Debug, Clone, Copy)]
pub enum Recipients {
    /// Every enabled endpoint of the organisation subscribed to the message's event type.
    AllEnabled,
    /// One endpoint (a test report).
    One(EndpointId),
}

/// The most secrets that sign one attempt: the current one and the one it replaced, during
/// the replaced one's overlap. Rotation keeps no more alive; the limit in the reading queries
/// also covers databases written before it did.
pub const MAX_SIGNING_SECRETS: i64 = 2;

/// A bulk recovery: one more attempt for every delivery of an endpoint that ended `failed`
/// in a window (`Store::create_recovery`, advanced a batch at a time by
/// `Store::advance_recovery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub id: RecoveryId,
    pub org_id: OrgId,
    pub endpoint_id: EndpointId,
    /// Deliveries that became `failed` at or after this instant...
    pub since: Millis,
    /// ...and before this one.
    pub until: Millis,
    /// Failed deliveries queued again so far.
    pub requeued: u64,
    pub created_at: Millis,
    /// When the job had looked at every delivery; `None` while it runs.
    pub finished_at: Option<Millis>,
}
