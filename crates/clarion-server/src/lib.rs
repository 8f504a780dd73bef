//! Clarion's HTTP API.
//!
//! Every `/v1` route takes the organisation from the bearer API key ([`extract::Org`]) and
//! passes it to every store call, so another organisation's ids simply are not found (404):
//! **tenant isolation is enforced by construction, here and in the store's queries.** Every
//! failure is an [`error::ApiError`], answered as JSON `{"error": {"code", "message", "field"}}`.

pub mod error;
pub mod extract;
mod openapi;
pub mod rate_limit;
mod routes;
mod wire;

use std::sync::Arc;

use axum::Router;
use clarion_delivery::ssrf::SsrfPolicy;
use clarion_delivery::{Clock, Outbox};
use clarion_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;

pub use openapi::openapi_document;
pub use routes::endpoints::validate_target;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub outbox: Outbox,
    /// Enrollment and sequence controls.
    pub scheduler: clarion_scheduler::Scheduler,
    pub clock: Arc<dyn Clock>,
    /// The policy endpoint URLs are checked against when created or changed.
    pub ssrf: SsrfPolicy,
    pub metrics: PrometheusHandle,
    /// Secrets that authenticate provider callbacks (`/providers/...`).
    pub providers: ProviderSecrets,
    /// Per-endpoint limits on rotations, test reports and manual retries (this process's).
    pub action_limits: Arc<rate_limit::ActionLimits>,
}

/// The shared secrets providers present on their callbacks; a provider without one has its
/// callback route answer 404.
#[derive(Clone, Default)]
pub struct ProviderSecrets {
    /// Vapi's server secret (`x-vapi-secret`, or `Authorization: Bearer`).
    pub vapi: Option<String>,
    /// How Twilio's callbacks are checked (`X-Twilio-Signature`).
    pub twilio: Option<TwilioCallbacks>,
}

/// What `X-Twilio-Signature` is checked with: the auth token, and the public address Twilio
/// used (the URL it signed).
#[derive(Debug, Clone)]
pub struct TwilioCallbacks {
    pub auth_token: clarion_providers::twilio::signature::AuthToken,
    pub public_base_url: String,
}

impl std::fmt::Debug for ProviderSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSecrets")
            .field("vapi", &self.vapi.as_ref().map(|_| "<redacted>"))
            .field("twilio", &self.twilio)
            .finish()
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    routes::router().with_state(state)
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("clarion_webhook_attempt_duration_seconds".to_owned()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder is installed already; the handle then renders
            // nothing of ours, which is acceptable for a second server in one test process.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
