//! Clarion's HTTP API.
//!
//! Every `/v1` route takes the organisation from the bearer API key ([`extract::Org`]) and
//! passes it to every store call, so another organisation's ids simply are not found (404):
//! **tenant isolation is enforced by construction, here and in the store's queries.** Every
//! failure is an [`error::ApiError`], answered as JSON `{"error": {"code", "message", "field"}}`.

pub mod enroll_csv;
pub mod error;
pub mod extract;
pub mod limits;
mod openapi;
pub mod rate_limit;
mod routes;
pub mod serve;
mod strict_json;
pub mod ui;
mod wire;

use std::sync::Arc;

use axum::Router;
use clarion_clock::Clock;
use clarion_delivery::Outbox;
use clarion_delivery::ssrf::SsrfPolicy;
use clarion_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;

pub use openapi::openapi_document;
pub use routes::endpoints::validate_target;
pub use serve::{ServerLimits, serve};

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
    /// Who may read the operator surface (`/metrics`), and on which listener.
    pub operator: OperatorAccess,
    /// The operator dashboard's settings and failed sign-in limits (`/ui`).
    pub ui: Arc<ui::UiState>,
}

/// The operator surface's protection: `/metrics` shows deployment-wide volumes (queue depth,
/// attempts), which no tenant may read.
#[derive(Debug, Clone, Default)]
pub struct OperatorAccess {
    /// When set, `/metrics` answers only `Authorization: Bearer <token>`.
    pub metrics_token: Option<OperatorToken>,
    /// When true, `/metrics` is served only by [`admin_router`] (its own listener,
    /// `admin_listen`) and the public API answers 404 there.
    pub metrics_on_admin_listener: bool,
}

/// The operator's bearer token for `/metrics`: redacted in `Debug`, compared in constant time.
#[derive(Clone)]
pub struct OperatorToken(String);

impl<'de> serde::Deserialize<'de> for OperatorToken {
    /// A string, or digits: configuration layers such as environment variables read an
    /// all-digit token as a number.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TokenVisitor;
        impl serde::de::Visitor<'_> for TokenVisitor {
            type Value = OperatorToken;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a token string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(OperatorToken(text.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Self::Value, E> {
                Ok(OperatorToken(number.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Self::Value, E> {
                Ok(OperatorToken(number.to_string()))
            }
        }
        deserializer.deserialize_any(TokenVisitor)
    }
}

impl OperatorToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token as configured (to check its length at configuration time).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is the token. Both sides are hashed first, so that the comparison
    /// takes the same time whatever the presented length, and compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let expected = Sha256::digest(self.0.as_bytes());
        let presented = Sha256::digest(presented.as_bytes());
        expected.ct_eq(&presented).into()
    }
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorToken(<redacted>)")
    }
}

/// The shared secrets providers present on their callbacks; a provider without one has its
/// callback route answer 404.
#[derive(Clone, Default)]
pub struct ProviderSecrets {
    /// Vapi's server secret (`x-vapi-secret`, or `Authorization: Bearer`).
    pub vapi: Option<String>,
    /// Vapi's HMAC credential. When set, every Vapi callback must carry a valid signature
    /// with a fresh timestamp, whatever else it carries.
    pub vapi_hmac: Option<VapiHmac>,
    /// How Twilio's callbacks are checked (`X-Twilio-Signature`).
    pub twilio: Option<TwilioCallbacks>,
}

/// How Vapi's HMAC credential is checked (providers.md §1.6; the header names are the
/// credential's `signatureHeader` and `timestampHeader`).
#[derive(Debug, Clone)]
pub struct VapiHmac {
    pub secret: clarion_providers::vapi::signature::HmacSecret,
    pub signature_header: String,
    pub timestamp_header: String,
    /// How far the timestamp may be from now, either side.
    pub window: std::time::Duration,
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
            .field("vapi_hmac", &self.vapi_hmac)
            .field("twilio", &self.twilio)
            .finish()
    }
}

/// The whole API and the dashboard (`/ui`). `/metrics` is part of it unless the operator moved it to its own listener
/// ([`OperatorAccess::metrics_on_admin_listener`]).
pub fn router(state: AppState) -> Router {
    let with_metrics = !state.operator.metrics_on_admin_listener;
    routes::router(with_metrics).with_state(state)
}

/// The operator listener (`admin_listen`): `/metrics` and `/healthz` only.
pub fn admin_router(state: AppState) -> Router {
    routes::admin_router().with_state(state)
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
