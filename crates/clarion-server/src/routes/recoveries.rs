//! `/v1/webhook-endpoints/{id}/recover` and `/recoveries/{recovery_id}`: bulk recovery of an
//! endpoint's failed deliveries, as a background job whose progress can be read.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clarion_store::{EndpointId, IdKind, OrgId, PublicIds, Recovery, RecoveryId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, IdPath, Org};
use crate::wire;

/// The widest window one recovery covers.
pub const MAX_RECOVERY_WINDOW: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// Body of `POST /v1/webhook-endpoints/{id}/recover`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// RFC 3339: deliveries that became `failed` at or after this instant...
    pub since: String,
    /// ...and before this one (RFC 3339; default now). Not in the future, at most 14 days
    /// after `since`.
    pub until: Option<String>,
}

/// A bulk recovery and how far it got.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryOut {
    pub id: i64,
    pub endpoint_id: i64,
    pub since: String,
    pub until: String,
    /// `running` while the job goes through the endpoint's failed deliveries, `done` after.
    pub status: &'static str,
    /// Failed deliveries queued again for one more attempt so far (each is then attempted
    /// like any due delivery; follow them in `/v1/webhook-deliveries?endpoint_id=`).
    pub requeued: u64,
    pub created_at: String,
    /// When the job finished; null while it runs.
    pub finished_at: Option<String>,
}

impl RecoveryOut {
    fn new(ids: &PublicIds, recovery: Recovery) -> Self {
        Self {
            id: ids.encode(IdKind::Recovery, recovery.id.0),
            endpoint_id: ids.encode(IdKind::Endpoint, recovery.endpoint_id.0),
            since: wire::time(recovery.since),
            until: wire::time(recovery.until),
            status: if recovery.finished_at.is_some() {
                "done"
            } else {
                "running"
            },
            requeued: recovery.requeued,
            created_at: wire::time(recovery.created_at),
            finished_at: recovery.finished_at.map(wire::time),
        }
    }
}

fn instant(field: &str, text: &str) -> Result<i64, ApiError> {
    let at: clarion_webhooks::Timestamp = text.trim().parse().map_err(|_| {
        ApiError::invalid(
            field,
            "expected an RFC 3339 time, e.g. 2026-01-08T14:30:00Z",
        )
    })?;
    Ok(at.unix_millis())
}

fn endpoint_of(state: &AppState, org: OrgId, public: i64) -> Result<EndpointId, ApiError> {
    wire::internal(
        &state.store.public_ids(org),
        IdKind::Endpoint,
        public,
        "webhook endpoint",
    )
}

/// Queues one more attempt for every delivery of this endpoint that ended `failed` in the
/// window, as a background job: answers 202 with the job, whose progress
/// `GET /v1/webhook-endpoints/{id}/recoveries/{recovery_id}` shows. Idempotent: a delivery
/// already queued again is not queued twice.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/recover", tag = "webhook endpoints",
    request_body = RecoverRequest,
    responses((status = 202, body = RecoveryOut), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "a time that is not RFC 3339, `until` in the future or not after `since`, or a window over 14 days")),
    security(("api_key" = [])))]
pub async fn recover(
    State(state): State<AppState>,
    Org(org): Org,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<RecoverRequest>,
) -> Result<(StatusCode, Json<RecoveryOut>), ApiError> {
    let endpoint = endpoint_of(&state, org, id)?;
    // Existence first: another organisation's endpoint is 404 before any validation detail.
    state
        .store
        .get_endpoint(org, endpoint)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    let now = state.clock.now_millis();
    let since = instant("since", &body.since)?;
    let until = match &body.until {
        Some(text) => instant("until", text)?,
        None => now,
    };
    if until > now {
        return Err(ApiError::invalid(
            "until",
            "the window cannot end in the future",
        ));
    }
    if since >= until {
        return Err(ApiError::invalid("since", "`since` must be before `until`"));
    }
    let widest = i64::try_from(MAX_RECOVERY_WINDOW.as_millis()).unwrap_or(i64::MAX);
    if until - since > widest {
        return Err(ApiError::invalid(
            "since",
            "a recovery covers at most 14 days; split a longer outage into several",
        ));
    }
    let recovery = state
        .store
        .create_recovery(org, endpoint, since, until, now)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    state.outbox.recovery_started();
    Ok((
        StatusCode::ACCEPTED,
        Json(RecoveryOut::new(&state.store.public_ids(org), recovery)),
    ))
}

/// One bulk recovery of this endpoint, with its progress.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/recoveries/{recovery_id}",
    tag = "webhook endpoints",
    params(("id" = i64, Path), ("recovery_id" = i64, Path)),
    responses((status = 200, body = RecoveryOut), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Org(org): Org,
    path: Result<axum::extract::Path<(i64, i64)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<RecoveryOut>, ApiError> {
    let axum::extract::Path((id, recovery)) = path.map_err(|_| ApiError::not_found("recovery"))?;
    let endpoint = endpoint_of(&state, org, id)?;
    let ids = state.store.public_ids(org);
    let recovery: RecoveryId = wire::internal(&ids, IdKind::Recovery, recovery, "recovery")?;
    let recovery = state
        .store
        .get_recovery(org, endpoint, recovery)
        .await?
        .ok_or_else(|| ApiError::not_found("recovery"))?;
    Ok(Json(RecoveryOut::new(&ids, recovery)))
}
