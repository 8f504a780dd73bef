//! Routes, one module per resource.

pub mod deliveries;
pub mod endpoints;
pub mod ops;
pub mod reports;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
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
        .route("/v1/webhook-deliveries", get(deliveries::list))
        .route("/v1/webhook-deliveries/{id}", get(deliveries::get))
        .route("/v1/webhook-deliveries/{id}/retry", post(deliveries::retry))
        .route("/v1/reports", get(reports::list))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
}
