//! `/v1/webhook-deliveries`: every message's delivery to every endpoint, with its attempts.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clarion_store::{
    Delivery, DeliveryFilter, DeliveryId, DeliveryStatus, EndpointId, IdKind, PublicIds, SequenceId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, IdPath, Org};
use crate::rate_limit::LimitedAction;
use crate::wire::{self, Page};

/// One message's delivery to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    pub id: i64,
    pub endpoint_id: i64,
    /// The sequence whose report this is; null for a test report.
    pub sequence_id: Option<i64>,
    /// The `webhook-id` header: the same on every attempt.
    pub webhook_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: &'static str,
    pub attempt_count: u32,
    /// When the next attempt is due; null unless pending.
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub attempts: Vec<AttemptOut>,
}

/// One attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptOut {
    pub attempt: u32,
    pub at: String,
    /// The HTTP status received; null when there was no answer.
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    /// Null, or a short class: `timeout`, `connection-refused`, `ssrf-blocked`, ...
    pub error: Option<String>,
    /// The first 256 bytes of the answer's body, as text (lossy UTF-8); null when the
    /// deployment keeps no excerpts (`webhooks.store_response_excerpt = false`).
    pub response_body: Option<String>,
}

impl DeliveryOut {
    fn new(ids: &PublicIds, delivery: Delivery) -> Self {
        Self {
            id: ids.encode(IdKind::Delivery, delivery.id.0),
            endpoint_id: ids.encode(IdKind::Endpoint, delivery.endpoint_id.0),
            sequence_id: delivery
                .sequence_id
                .map(|id| ids.encode(IdKind::Sequence, id)),
            webhook_id: delivery.webhook_id,
            event_type: delivery.event_type,
            status: delivery.status.as_str(),
            attempt_count: delivery.attempt_count,
            next_attempt_at: delivery.next_attempt_at.map(wire::time),
            created_at: wire::time(delivery.created_at),
            attempts: delivery
                .attempts
                .into_iter()
                .map(|a| AttemptOut {
                    attempt: a.attempt_number,
                    at: wire::time(a.attempted_at),
                    status_code: a.status_code,
                    duration_ms: a.duration_ms,
                    error: a.error,
                    response_body: a
                        .response_body
                        .map(|b| String::from_utf8_lossy(&b).into_owned()),
                })
                .collect(),
        }
    }
}

/// The internal id of the delivery a path names by its public id, or 404.
fn delivery_of(ids: &PublicIds, public: i64) -> Result<DeliveryId, ApiError> {
    wire::internal(ids, IdKind::Delivery, public, "webhook delivery")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub sequence_id: Option<i64>,
    pub endpoint_id: Option<i64>,
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub after: Option<String>,
}

#[utoipa::path(get, path = "/v1/webhook-deliveries", tag = "webhook deliveries",
    params(("sequence_id" = Option<i64>, Query), ("endpoint_id" = Option<i64>, Query),
           ("status" = Option<String>, Query, description = "pending, delivered or failed"),
           ("limit" = Option<u32>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = inline(Page<DeliveryOut>)), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<DeliveryOut>>, ApiError> {
    let ids = state.store.public_ids(org);
    let limit = wire::limit(query.limit)?;
    let before = wire::cursor(&ids, IdKind::Delivery, query.after.as_deref())?;
    let status = match query.status.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("delivered") => Some(DeliveryStatus::Delivered),
        Some("failed") => Some(DeliveryStatus::Failed),
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "expected pending, delivered or failed",
            ));
        }
    };
    // A filter naming none of the organisation's ids matches nothing (0 is no row's id).
    let filter = DeliveryFilter {
        sequence_id: query
            .sequence_id
            .map(|id| SequenceId(ids.decode(IdKind::Sequence, id).unwrap_or(0))),
        endpoint_id: query
            .endpoint_id
            .map(|id| EndpointId(ids.decode(IdKind::Endpoint, id).unwrap_or(0))),
        status,
    };
    let deliveries = state
        .store
        .list_deliveries(org, &filter, before, limit)
        .await?;
    let rows = deliveries
        .into_iter()
        .map(|d| {
            let cursor = wire::next_cursor(&ids, IdKind::Delivery, d.id.0);
            (DeliveryOut::new(&ids, d), cursor)
        })
        .collect();
    Ok(Json(wire::bounded_page(rows, limit)))
}

#[utoipa::path(get, path = "/v1/webhook-deliveries/{id}", tag = "webhook deliveries",
    responses((status = 200, body = DeliveryOut), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<Json<DeliveryOut>, ApiError> {
    let ids = state.store.public_ids(org);
    let id = delivery_of(&ids, id)?;
    let delivery = state
        .store
        .get_delivery(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    Ok(Json(DeliveryOut::new(&ids, delivery)))
}

/// Queues one more attempt now. At most 600 manual retries an hour per endpoint (counted on
/// the delivery's endpoint).
#[utoipa::path(post, path = "/v1/webhook-deliveries/{id}/retry", tag = "webhook deliveries",
    responses((status = 202, body = DeliveryOut), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "more than 600 manual retries an hour for the delivery's endpoint",
            headers(("Retry-After" = u64, description = "seconds until a retry is allowed again")))),
    security(("api_key" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
) -> Result<(StatusCode, Json<DeliveryOut>), ApiError> {
    let ids = state.store.public_ids(org);
    let id = delivery_of(&ids, id)?;
    let delivery = queue_retry(&state, org, id).await?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryOut::new(&ids, delivery))))
}

/// Queues one more attempt of one of the organisation's deliveries now (the API's and the
/// dashboard's action).
pub(crate) async fn queue_retry(
    state: &AppState,
    org: clarion_store::OrgId,
    id: DeliveryId,
) -> Result<Delivery, ApiError> {
    // The delivery first: its endpoint is what the limit counts on, and another
    // organisation's id is 404 without spending anything.
    let endpoint = state
        .store
        .get_delivery(org, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook delivery"))?
        .endpoint_id;
    // A delivery whose endpoint is gone or switched off could never be attempted: queueing it
    // would leave it pending for ever (and count in the queue's depth and age).
    match state.store.get_endpoint(org, endpoint).await? {
        None => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "endpoint_deleted",
                "the delivery's webhook endpoint was deleted; it cannot be retried",
            ));
        }
        Some(found) if !found.enabled => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "endpoint_disabled",
                "the delivery's webhook endpoint is disabled; enable it, then retry",
            ));
        }
        Some(_) => {}
    }
    let now = state.clock.now_millis();
    state
        .action_limits
        .check(LimitedAction::RetryDelivery, endpoint, now)?;
    let delivery = state
        .store
        .retry_delivery(org, id, now)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    state.outbox.wake();
    Ok(delivery)
}
