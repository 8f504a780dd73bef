//! Routes, one module per resource.

pub mod assistants;
pub mod audit;
pub mod caller_numbers;
pub mod contacts;
pub mod deliveries;
pub mod endpoints;
pub mod ops;
pub mod organization;
pub mod providers;
pub mod recoveries;
pub mod reports;
pub mod sequences;
pub mod suppressions;
pub mod templates;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;

/// The public API; `/metrics` only when `with_metrics` (else it answers 404 like any unknown
/// route, so the public listener does not reveal that an operator listener exists).
pub fn router(with_metrics: bool) -> Router<AppState> {
    let router = Router::new();
    let router = if with_metrics {
        router.route("/metrics", get(ops::metrics))
    } else {
        router
    };
    router
        .route("/healthz", get(ops::healthz))
        .route("/openapi.json", get(ops::openapi))
        .route(
            "/v1/organization",
            get(organization::get).patch(organization::update),
        )
        .route(
            "/v1/assistants",
            post(assistants::create).get(assistants::list),
        )
        .route("/v1/assistants/{id}", get(assistants::get))
        .route(
            "/v1/caller-numbers",
            post(caller_numbers::create).get(caller_numbers::list),
        )
        .route(
            "/v1/caller-numbers/{id}",
            get(caller_numbers::get)
                .patch(caller_numbers::update)
                .delete(caller_numbers::delete),
        )
        .route(
            "/v1/sequence-templates",
            post(templates::create).get(templates::list),
        )
        .route(
            "/v1/sequence-templates/{id}",
            get(templates::get).put(templates::replace),
        )
        .route(
            "/v1/sequences",
            post(sequences::enroll).get(sequences::list),
        )
        .route("/v1/sequences/batch", post(sequences::enroll_batch))
        .route("/v1/sequences/{id}", get(sequences::get))
        .route("/v1/sequences/{id}/cancel", post(sequences::cancel))
        .route("/v1/sequences/{id}/pause", post(sequences::pause))
        .route("/v1/sequences/{id}/resume", post(sequences::resume))
        .route("/v1/sequences/{id}/events", get(sequences::events))
        .route(
            "/v1/suppressions",
            get(suppressions::list).post(suppressions::create),
        )
        .route(
            "/v1/suppressions/{phone_number}",
            axum::routing::delete(suppressions::delete),
        )
        .route(
            "/v1/suppressions/{phone_number}/history",
            get(suppressions::history),
        )
        .route(
            "/v1/contacts/{phone_number}",
            axum::routing::delete(contacts::erase),
        )
        .route(
            "/v1/webhook-endpoints",
            post(endpoints::create).get(endpoints::list),
        )
        .route(
            "/v1/webhook-endpoints/{id}",
            get(endpoints::get)
                .patch(endpoints::update)
                .delete(endpoints::delete),
        )
        .route("/v1/webhook-endpoints/{id}/secret", get(endpoints::secret))
        .route(
            "/v1/webhook-endpoints/{id}/rotate-secret",
            post(endpoints::rotate_secret),
        )
        .route(
            "/v1/webhook-endpoints/{id}/test",
            post(endpoints::send_test),
        )
        .route("/v1/webhook-endpoints/{id}/stats", get(endpoints::stats))
        .route(
            "/v1/webhook-endpoints/{id}/recover",
            post(recoveries::recover),
        )
        .route(
            "/v1/webhook-endpoints/{id}/recoveries/{recovery_id}",
            get(recoveries::get),
        )
        .route("/v1/webhook-deliveries", get(deliveries::list))
        .route("/v1/webhook-deliveries/{id}", get(deliveries::get))
        .route("/v1/webhook-deliveries/{id}/retry", post(deliveries::retry))
        .route("/v1/reports", get(reports::list))
        .route("/v1/audit-log", get(audit::list))
        .route("/providers/vapi/events", post(providers::vapi_events))
        .route("/providers/twilio/inbound", post(providers::twilio_inbound))
        .route("/providers/twilio/status", post(providers::twilio_status))
        .merge(crate::ui::router())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
}

/// The operator listener's routes.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
}
