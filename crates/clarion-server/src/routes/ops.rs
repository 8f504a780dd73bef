//! Liveness, metrics, the OpenAPI document, and the JSON answers for unknown routes.

use axum::Json;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;

/// `GET /healthz`: 200 when the database answers.
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ok" }))),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "database unavailable" })),
        ),
    }
}

/// `GET /metrics`: Prometheus text. Queue gauges are read from the database at scrape time.
/// With an operator token configured, only `Authorization: Bearer <token>` is answered;
/// anything else is 401, and the API keys of tenants do not count.
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &state.operator.metrics_token {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if !token.matches(presented) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the operator token is required: Authorization: Bearer <metrics_token>",
            ));
        }
    }
    if let Ok(stats) = state.store.queue_stats().await {
        metrics::gauge!("clarion_webhook_queue_depth").set(stats.pending as f64);
        let age = stats
            .oldest_pending_created_at
            .map(|created| (state.clock.now_millis() - created).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!("clarion_webhook_oldest_pending_age_seconds").set(age);
    }
    // The provider capacity governor, from the database (deployment-wide; no tenant labels).
    if let Ok(capacity) = state.scheduler.provider_capacity().await {
        metrics::gauge!("clarion_provider_slots_in_use", "provider" => "vapi")
            .set(capacity.call_slots_in_use as f64);
        metrics::gauge!("clarion_provider_slots", "provider" => "vapi")
            .set(capacity.call_slots as f64);
        metrics::gauge!("clarion_provider_capacity_waiting", "channel" => "call")
            .set(capacity.calls_waiting as f64);
        metrics::gauge!("clarion_provider_capacity_waiting", "channel" => "sms")
            .set(capacity.texts_waiting as f64);
    }
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}

/// `GET /openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi_document())
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
