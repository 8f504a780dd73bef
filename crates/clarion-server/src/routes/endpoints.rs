//! `/v1/webhook-endpoints`: where an organisation's reports go.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clarion_delivery::ssrf::{self, SsrfPolicy};
use clarion_store::{AttemptStats, Endpoint, EndpointId, EndpointPatch, IdKind, OrgId, PublicIds};
use clarion_webhooks::Secret;
use rand::RngCore;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, IdPath, Org};
use crate::rate_limit::LimitedAction;
use crate::wire::{self, Page};

/// How long a rotated-out secret keeps signing alongside the new one.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest accepted endpoint URL.
const MAX_URL_LEN: usize = 2048;
/// How long endpoint validation waits for DNS.
const DNS_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointOut {
    pub id: i64,
    pub url: String,
    pub description: String,
    pub enabled: bool,
    /// Why Clarion disabled the endpoint by itself (e.g. it answered 410 Gone); null otherwise.
    pub disabled_reason: Option<String>,
    /// Since when every attempt to it has failed (RFC 3339), null while it is healthy; once
    /// this is older than `webhooks.disable_after`, Clarion disables the endpoint. Cleared by
    /// a 2xx and by re-enabling it.
    pub failing_since: Option<String>,
    /// The event types this endpoint receives (`sequence.ended`, `encounter.ended`,
    /// `endpoint.disabled`); test reports come whatever it subscribes to.
    pub event_types: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The signing secret (`whsec_...`): present only when creating the endpoint, rotating
    /// its secret, or reading `/secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl EndpointOut {
    fn new(ids: &PublicIds, endpoint: Endpoint, secret: Option<String>) -> Self {
        Self {
            id: ids.encode(IdKind::Endpoint, endpoint.id.0),
            url: endpoint.url,
            description: endpoint.description,
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason,
            failing_since: endpoint.failing_since.map(wire::time),
            event_types: endpoint.event_types,
            created_at: wire::time(endpoint.created_at),
            updated_at: wire::time(endpoint.updated_at),
            secret,
        }
    }
}

/// Body of `POST /v1/webhook-endpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where to POST reports: `https://` (plain `http://` only in development).
    pub url: String,
    #[serde(default)]
    pub description: String,
    /// The event types to receive, at least one of `sequence.ended`, `encounter.ended` and
    /// `endpoint.disabled`; default `["sequence.ended"]`.
    pub event_types: Option<Vec<String>>,
}

/// Body of `PATCH /v1/webhook-endpoints/{id}`; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    pub url: Option<String>,
    pub description: Option<String>,
    /// Re-enabling an endpoint Clarion disabled resumes its pending deliveries.
    pub enabled: Option<bool>,
    /// Replaces the event types it receives (as in creation).
    pub event_types: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
}

/// Answer of `POST /v1/webhook-endpoints/{id}/test`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestSent {
    /// The test message's `webhook-id` (prefixed `msg_test_`).
    pub webhook_id: String,
    pub event_type: &'static str,
}

/// The internal id of the endpoint a path names by its public id, or 404.
fn endpoint_of(state: &AppState, org: OrgId, public: i64) -> Result<EndpointId, ApiError> {
    wire::internal(
        &state.store.public_ids(org),
        IdKind::Endpoint,
        public,
        "webhook endpoint",
    )
}

/// One of the organisation's endpoints, or 404 (another organisation's id included).
async fn owned_endpoint(
    state: &AppState,
    org: OrgId,
    id: EndpointId,
) -> Result<Endpoint, ApiError> {
    state
        .store
        .get_endpoint(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

pub(crate) fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    Secret::from_bytes(&key)
        .map(|s| s.to_whsec())
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid secret length"))
}

/// The one answer to every URL the SSRF policy refuses, whatever the reason (scheme, port,
/// reserved name, internal literal, a name that resolves to an internal address): a different
/// answer per class would tell a tenant what internal names resolve to (a DNS oracle into our
/// network). The class goes to the log, without the URL.
pub const TARGET_NOT_ALLOWED: &str = "the URL is not an allowed webhook target: use https on \
     port 443 (or a port the operator allowed) and a host name or address on the public internet";

fn target_not_allowed(class: &'static str) -> ApiError {
    tracing::info!(class, "endpoint URL refused by the SSRF policy");
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "target_not_allowed",
        TARGET_NOT_ALLOWED,
    )
    .with_field("url")
}

/// Checks an endpoint URL: a well-formed http(s) URL, allowed by the SSRF policy, whose
/// host name does not resolve to a forbidden address. Connections are checked again on
/// every attempt, since DNS answers change. A name that does not resolve yet is accepted.
/// Every refusal by the policy is the same [`TARGET_NOT_ALLOWED`] answer.
pub async fn validate_target(policy: &SsrfPolicy, url: &str) -> Result<Url, ApiError> {
    if url.len() > MAX_URL_LEN {
        return Err(ApiError::invalid(
            "url",
            format!("the URL is longer than {MAX_URL_LEN} characters"),
        ));
    }
    let parsed = Url::parse(url).map_err(|_| ApiError::invalid("url", "not an absolute URL"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::invalid(
            "url",
            "credentials in the URL are not supported",
        ));
    }
    policy
        .check_url(&parsed)
        .map_err(|error| target_not_allowed(error.class()))?;
    if policy.allow_private {
        return Ok(parsed);
    }
    if let Some(url::Host::Domain(host)) = parsed.host() {
        // The policy's static names answer instead of DNS, as they do at connect time.
        let addresses: Vec<std::net::IpAddr> = match policy.static_hosts.get(host) {
            Some(addresses) => addresses.clone(),
            None => {
                let lookup =
                    tokio::net::lookup_host((host, parsed.port_or_known_default().unwrap_or(443)));
                match tokio::time::timeout(DNS_CHECK_TIMEOUT, lookup).await {
                    Ok(Ok(addresses)) => addresses.map(|a| a.ip()).collect(),
                    _ => Vec::new(),
                }
            }
        };
        if let Some(range) = addresses.into_iter().find_map(ssrf::classify) {
            return Err(target_not_allowed(range.as_str()));
        }
    }
    Ok(parsed)
}

#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhook endpoints",
    request_body = CreateEndpoint,
    responses((status = 201, body = EndpointOut), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Org(org): Org,
    ApiJson(body): ApiJson<CreateEndpoint>,
) -> Result<(StatusCode, Json<EndpointOut>), ApiError> {
    let event_types = match &body.event_types {
        Some(types) => valid_event_types(types)?,
        None => clarion_store::DEFAULT_EVENT_TYPES.to_vec(),
    };
    let (endpoint, secret) =
        create_subscribed_endpoint(&state, org, &body.url, &body.description, &event_types).await?;
    Ok((
        StatusCode::CREATED,
        Json(EndpointOut::new(
            &state.store.public_ids(org),
            endpoint,
            Some(secret),
        )),
    ))
}

/// The event types a request names, checked: each one Clarion sends, at least one, each
/// once (in the order given).
fn valid_event_types(types: &[String]) -> Result<Vec<&'static str>, ApiError> {
    let mut valid: Vec<&'static str> = Vec::with_capacity(types.len());
    for name in types {
        let Some(known) = clarion_webhooks::EVENT_TYPES
            .iter()
            .find(|known| **known == name.as_str())
        else {
            return Err(ApiError::invalid(
                "event_types",
                format!(
                    "unknown event type; the types are {}",
                    clarion_webhooks::EVENT_TYPES.join(", ")
                ),
            ));
        };
        if !valid.contains(known) {
            valid.push(known);
        }
    }
    if valid.is_empty() {
        return Err(ApiError::invalid(
            "event_types",
            "subscribe to at least one event type",
        ));
    }
    Ok(valid)
}

/// Creates an endpoint subscribed to the default event types (the dashboard's action).
pub(crate) async fn create_endpoint(
    state: &AppState,
    org: OrgId,
    url: &str,
    description: &str,
) -> Result<(Endpoint, String), ApiError> {
    create_subscribed_endpoint(
        state,
        org,
        url,
        description,
        clarion_store::DEFAULT_EVENT_TYPES,
    )
    .await
}

/// Creates an endpoint (the API's and the dashboard's action): the description's length and
/// the URL against the SSRF policy, then a new secret. Answers the endpoint and its secret.
async fn create_subscribed_endpoint(
    state: &AppState,
    org: OrgId,
    url: &str,
    description: &str,
    event_types: &[&str],
) -> Result<(Endpoint, String), ApiError> {
    crate::limits::check_text(
        "description",
        description,
        crate::limits::MAX_DESCRIPTION_CHARS,
    )?;
    let url = validate_target(&state.ssrf, url).await?;
    let secret = new_secret();
    let now = state.clock.now_millis();
    let endpoint = state
        .store
        .create_endpoint(org, url.as_str(), description, event_types, &secret, now)
        .await?;
    Ok((endpoint, secret))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhook endpoints",
    params(("limit" = Option<u32>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = inline(Page<EndpointOut>))),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<EndpointOut>>, ApiError> {
    let ids = state.store.public_ids(org);
    let limit = wire::limit(query.limit)?;
    let after = wire::cursor(&ids, IdKind::Endpoint, query.after.as_deref())?;
    let endpoints = state.store.list_endpoints(org, after, limit).await?;
    let rows = endpoints
        .into_iter()
        .map(|e| {
            let cursor = wire::next_cursor(&ids, IdKind::Endpoint, e.id.0);
            (EndpointOut::new(&ids, e, None), cursor)
        })
        .collect();
    Ok(Json(wire::bounded_page(rows, limit)))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", tag = "webhook endpoints",
    responses((status = 200, body = EndpointOut), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Json<EndpointOut>, ApiError> {
    let id = endpoint_of(&state, org, id)?;
    let endpoint = owned_endpoint(&state, org, id).await?;
    Ok(Json(EndpointOut::new(
        &state.store.public_ids(org),
        endpoint,
        None,
    )))
}

#[utoipa::path(patch, path = "/v1/webhook-endpoints/{id}", tag = "webhook endpoints",
    request_body = UpdateEndpoint,
    responses((status = 200, body = EndpointOut), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<UpdateEndpoint>,
) -> Result<Json<EndpointOut>, ApiError> {
    let id = endpoint_of(&state, org, id)?;
    let endpoint = update_endpoint(&state, org, id, body).await?;
    Ok(Json(EndpointOut::new(
        &state.store.public_ids(org),
        endpoint,
        None,
    )))
}

/// Changes an endpoint (the API's and the dashboard's action: enabling and disabling).
pub(crate) async fn update_endpoint(
    state: &AppState,
    org: OrgId,
    id: EndpointId,
    body: UpdateEndpoint,
) -> Result<Endpoint, ApiError> {
    // Existence first, so another organisation's id is 404 before any validation detail.
    owned_endpoint(state, org, id).await?;
    if let Some(description) = &body.description {
        crate::limits::check_text(
            "description",
            description,
            crate::limits::MAX_DESCRIPTION_CHARS,
        )?;
    }
    let url = match &body.url {
        Some(url) => Some(validate_target(&state.ssrf, url).await?.to_string()),
        None => None,
    };
    let event_types = match &body.event_types {
        Some(types) => Some(
            valid_event_types(types)?
                .into_iter()
                .map(str::to_owned)
                .collect(),
        ),
        None => None,
    };
    let patch = EndpointPatch {
        url,
        description: body.description,
        enabled: body.enabled,
        event_types,
    };
    let now = state.clock.now_millis();
    let endpoint = state
        .store
        .update_endpoint(org, id, &patch, now)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    if patch.enabled == Some(true) {
        state.outbox.wake();
    }
    Ok(endpoint)
}

#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhook endpoints",
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    let id = endpoint_of(&state, org, id)?;
    let now = state.clock.now_millis();
    if state.store.delete_endpoint(org, id, now).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook endpoint"))
    }
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/secret", tag = "webhook endpoints",
    responses((status = 200, body = EndpointOut), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn secret(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Json<EndpointOut>, ApiError> {
    let id = endpoint_of(&state, org, id)?;
    let endpoint = owned_endpoint(&state, org, id).await?;
    let secret = state.store.current_secret(org, id).await?;
    Ok(Json(EndpointOut::new(
        &state.store.public_ids(org),
        endpoint,
        secret,
    )))
}

/// Rotates the signing secret. The replaced secret keeps signing alongside the new one for
/// 24 hours; any older one stops at once, so at most two secrets sign. At most 10 rotations
/// an hour per endpoint.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhook endpoints",
    responses((status = 200, body = EndpointOut), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "more than 10 rotations an hour for this endpoint",
            headers(("Retry-After" = u64, description = "seconds until a rotation is allowed again")))),
    security(("api_key" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Json<EndpointOut>, ApiError> {
    let id = endpoint_of(&state, org, id)?;
    let (endpoint, secret) = rotate(&state, org, id).await?;
    Ok(Json(EndpointOut::new(
        &state.store.public_ids(org),
        endpoint,
        Some(secret),
    )))
}

/// Rotates one of the organisation's endpoints' secret (the API's and the dashboard's
/// action): ownership first (another organisation's id is 404 and never spends this one's
/// tokens), then the rate limit. Answers the endpoint and its new secret.
pub(crate) async fn rotate(
    state: &AppState,
    org: OrgId,
    id: EndpointId,
) -> Result<(Endpoint, String), ApiError> {
    owned_endpoint(state, org, id).await?;
    let now = state.clock.now_millis();
    state
        .action_limits
        .check(LimitedAction::RotateSecret, id, now)?;
    let secret = new_secret();
    let overlap = i64::try_from(ROTATION_OVERLAP.as_millis()).unwrap_or(i64::MAX);
    let rotated = state
        .store
        .rotate_endpoint_secret(org, id, &secret, now.saturating_add(overlap), now)
        .await?;
    if !rotated {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    let endpoint = owned_endpoint(state, org, id).await?;
    Ok((endpoint, secret))
}

/// Queues a test report to this endpoint. At most 60 an hour per endpoint.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/test", tag = "webhook endpoints",
    responses((status = 202, body = TestSent), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "more than 60 test reports an hour for this endpoint",
            headers(("Retry-After" = u64, description = "seconds until a test report is allowed again")))),
    security(("api_key" = [])))]
pub async fn send_test(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<(StatusCode, Json<TestSent>), ApiError> {
    let id = endpoint_of(&state, org, id)?;
    let webhook_id = queue_test(&state, org, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestSent {
            webhook_id,
            event_type: clarion_delivery::EVENT_TYPE_TEST,
        }),
    ))
}

/// Queues a test report to one of the organisation's endpoints (the API's and the
/// dashboard's action), within the rate limit; answers its `webhook-id`.
pub(crate) async fn queue_test(
    state: &AppState,
    org: OrgId,
    id: EndpointId,
) -> Result<String, ApiError> {
    owned_endpoint(state, org, id).await?;
    let now = state.clock.now_millis();
    state
        .action_limits
        .check(LimitedAction::SendTest, id, now)?;
    Ok(state.outbox.enqueue_test(org, id, now).await?.webhook_id)
}

/// The windows `GET /v1/webhook-endpoints/{id}/stats` reports on.
const LAST_DAY: Duration = Duration::from_secs(24 * 60 * 60);
const LAST_WEEK: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// An endpoint's attempts over one window, ending now.
#[derive(Debug, Serialize, ToSchema)]
pub struct WindowStats {
    /// The window's start (RFC 3339): attempts made at or after it count.
    pub since: String,
    /// Attempts made (every HTTP request, first attempts and retries alike).
    pub attempts: u64,
    /// Attempts answered 2xx.
    pub succeeded: u64,
    /// Attempts answered otherwise, or not answered (timeout, refused connection, ...).
    pub failed: u64,
    /// `succeeded / attempts`, between 0 and 1; null without attempts.
    pub success_rate: Option<f64>,
    /// Median attempt duration, connection to last byte, in milliseconds; null without
    /// attempts.
    pub latency_p50_ms: Option<u64>,
    /// 99th percentile of the attempt durations, in milliseconds; null without attempts.
    pub latency_p99_ms: Option<u64>,
    /// When the window's latest 2xx attempt was made (RFC 3339); null if none.
    pub last_success_at: Option<String>,
    /// When the window's latest failed attempt was made (RFC 3339); null if none.
    pub last_failure_at: Option<String>,
}

impl WindowStats {
    fn new(since: i64, stats: &AttemptStats) -> Self {
        Self {
            since: wire::time(since),
            attempts: stats.attempts,
            succeeded: stats.succeeded,
            failed: stats.failed(),
            success_rate: stats.success_rate(),
            latency_p50_ms: stats.latency_percentile_ms(50),
            latency_p99_ms: stats.latency_percentile_ms(99),
            last_success_at: stats.last_success_at.map(wire::time),
            last_failure_at: stats.last_failure_at.map(wire::time),
        }
    }
}

/// Answer of `GET /v1/webhook-endpoints/{id}/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointStats {
    /// The last 24 hours.
    pub last_24h: WindowStats,
    /// The last 7 days.
    pub last_7d: WindowStats,
    /// How many attempts to this endpoint the dispatcher of the node that answered lets be
    /// in flight at once now: its adaptive limit, between `webhooks.min_in_flight_per_endpoint`
    /// and `webhooks.max_in_flight_per_endpoint`, raised while the receiver answers fast and
    /// cut on timeouts, 5xx and 429. It lives in that node's memory (each node learns its own
    /// and starts over after a restart); null when the node runs no dispatcher (`role = "api"`).
    pub concurrency_limit: Option<u32>,
}

/// The endpoint's delivery figures over the last 24 hours and 7 days, and its current
/// concurrency limit on this node.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/stats", tag = "webhook endpoints",
    responses((status = 200, body = EndpointStats), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Json<EndpointStats>, ApiError> {
    let id = endpoint_of(&state, org, id)?;
    owned_endpoint(&state, org, id).await?;
    let now = state.clock.now_millis();
    Ok(Json(EndpointStats {
        last_24h: window_stats(&state, org, id, now, LAST_DAY).await?,
        last_7d: window_stats(&state, org, id, now, LAST_WEEK).await?,
        concurrency_limit: state.outbox.endpoint_concurrency_limit(id),
    }))
}

/// The endpoint's attempts over the `length` before `now`: one query.
async fn window_stats(
    state: &AppState,
    org: OrgId,
    id: EndpointId,
    now: i64,
    length: Duration,
) -> Result<WindowStats, ApiError> {
    let since = now.saturating_sub(i64::try_from(length.as_millis()).unwrap_or(i64::MAX));
    let stats = state.store.endpoint_attempt_stats(org, id, since).await?;
    Ok(WindowStats::new(since, &stats))
}
