//! The one error type of the API: every failure answers JSON
//! `{"error": {"code", "message", "field"}}` with the right status, never a panic.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::atomic::{AtomicI64, Ordering};
use utoipa::ToSchema;

/// An API error: status, stable machine-readable code, human message, and the offending
/// field when one is to blame.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Sent as `Retry-After` (seconds) with a 429 or a 503.
    pub retry_after_secs: Option<u64>,
}

/// The JSON error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `not_found`, `invalid_field`.
    code: &'static str,
    /// What went wrong, for people. Never contains PHI or secrets.
    message: String,
    /// The request field at fault (a JSON path such as `steps[0].delay`), or null.
    field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    /// 429 `rate_limited`, with `Retry-After: retry_after_secs`.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        error.retry_after_secs = Some(retry_after_secs);
        error
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).with_field(field)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <api_key>",
        )
    }

    /// An internal failure: the cause is logged here, the client sees a generic message.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        let chain = clarion_store::retry::error_chain(cause);
        tracing::error!(error = %chain, "internal error answering a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }

    /// 503 `database_unavailable`, with `Retry-After`: the database is away for now (a
    /// restart, a failover). The cause is logged at most once every
    /// [`UNAVAILABLE_LOG_EVERY_MS`], so an outage under load does not flood the log; the
    /// client sees neither the driver's message nor the database's address.
    pub fn database_unavailable(cause: &dyn std::error::Error) -> Self {
        static LAST_LOGGED: AtomicI64 = AtomicI64::new(i64::MIN);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        let last = LAST_LOGGED.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= UNAVAILABLE_LOG_EVERY_MS
            && LAST_LOGGED
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %clarion_store::retry::error_chain(cause),
                "answering 503: the database is unavailable");
        }
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable for the moment; try again shortly",
        );
        error.retry_after_secs = Some(1);
        error
    }
}

/// How often (milliseconds) a 503 for an unavailable database is logged at most.
pub const UNAVAILABLE_LOG_EVERY_MS: i64 = 10_000;

impl From<clarion_store::StoreError> for ApiError {
    fn from(error: clarion_store::StoreError) -> Self {
        if error.is_transient() {
            Self::database_unavailable(&error)
        } else {
            Self::internal(&error)
        }
    }
}

impl From<clarion_scheduler::SchedulerError> for ApiError {
    /// For the paths that have no better answer than 503 (the database is away) or 500.
    fn from(error: clarion_scheduler::SchedulerError) -> Self {
        match error {
            clarion_scheduler::SchedulerError::Store(store) => Self::from(store),
            other => Self::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
