//! The operator dashboard at `/ui`: server-rendered HTML (maud templates, escaped by
//! default), one embedded stylesheet, plain forms, no script and nothing fetched from
//! elsewhere, so it works on an isolated network.
//!
//! It lives in the server crate (not a crate of its own) because it renders what the API's
//! handlers compute (public ids, the report, the history, deliveries) through the same
//! private helpers, shares [`AppState`], and is part of [`crate::router`], so every place that
//! serves the API (`clarion serve`, `clarion demo`, the in-process test app) serves it too.
//!
//! **Invariants kept here.** Every page but the sign-in form needs a session
//! ([`session::Viewer`]), and every query takes the session's organisation, exactly as the API
//! takes the key's: another organisation's ids answer 404. Every state-changing form carries
//! the session's CSRF token (sign-in: a double-submit cookie), checked in constant time; a
//! POST without a valid one is refused with 403. Every response is `Cache-Control: no-store`
//! (PHI must not linger in a browser's or a proxy's cache) with a strict Content Security
//! Policy. Every view of a sequence's detail and every export is recorded in the access log
//! before anything is shown ([`audit::record`]); nothing of the PHI goes to the log.

mod audit;
mod enroll;
mod overview;
mod page;
mod sequences;
mod session;
mod suppressions;
mod templates;
mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::AppState;
use crate::rate_limit::{Buckets, Rule};

pub use page::UiError;

/// The dashboard's settings (`[ui]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiSettings {
    /// A session unused for this long is over.
    pub idle_timeout: Duration,
    /// A session is over this long after sign-in, however active.
    pub max_lifetime: Duration,
    /// Failed sign-ins allowed per client address: `burst` at once, then `burst` per `window`.
    pub failed_sign_ins: Rule,
}

impl Default for UiSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            max_lifetime: Duration::from_secs(12 * 60 * 60),
            failed_sign_ins: Rule {
                burst: 10,
                window: Duration::from_secs(5 * 60),
            },
        }
    }
}

/// The dashboard's share of the server's state: its settings and this process's failed
/// sign-in buckets.
#[derive(Debug, Default)]
pub struct UiState {
    pub settings: UiSettings,
    failed_sign_ins: Buckets<std::net::IpAddr>,
}

impl UiState {
    pub fn new(settings: UiSettings) -> Self {
        Self {
            settings,
            failed_sign_ins: Buckets::default(),
        }
    }
}

/// The stylesheet, embedded; its path carries a digest of its content, so a new build's
/// stylesheet is never mixed with a cached old one.
const CSS: &str = include_str!("dashboard.css");

fn css_path() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(CSS.as_bytes());
        let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("/ui/assets/dashboard-{short}.css")
    })
}

/// The dashboard's routes, each answered with [`security_headers`].
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(overview::page))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/sequences", get(sequences::list))
        .route("/ui/sequences/export.csv", get(sequences::export_sequences))
        .route(
            "/ui/encounters/export.csv",
            get(sequences::export_encounters),
        )
        .route("/ui/sequences/{id}", get(sequences::detail))
        .route("/ui/sequences/{id}/{action}", post(sequences::control))
        .route("/ui/templates", get(templates::page))
        .route("/ui/templates/enroll", post(enroll::upload))
        .route("/ui/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/ui/webhooks/{id}", get(webhooks::detail))
        .route("/ui/webhooks/{id}/{action}", post(webhooks::action))
        .route("/ui/deliveries/{id}/retry", post(webhooks::retry))
        .route(
            "/ui/suppressions",
            get(suppressions::page).post(suppressions::add),
        )
        .route("/ui/suppressions/remove", post(suppressions::remove))
        .route("/ui/access-log", get(audit::page))
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/{*rest}", axum::routing::any(not_found))
        .layer(axum::middleware::map_response(security_headers))
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    if format!("/ui/assets/{name}") == css_path() {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            )],
            CSS,
        )
            .into_response()
    } else {
        UiError::not_found("file").into_response()
    }
}

async fn not_found() -> UiError {
    UiError::not_found("page")
}

/// `Cache-Control: no-store` and a Content Security Policy that allows nothing but this
/// server's own stylesheet and forms: no script at all, no framing.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
