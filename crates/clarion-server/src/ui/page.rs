//! The page frame, the error page and the small formatting helpers every page shares.
//!
//! Times are shown in UTC, ISO 8601 to the second (`2026-03-01T14:05:09Z`): one zone for
//! every operator, whatever their browser says, and what the API and the report carry. Where
//! the contact's own clock matters (when they were called or texted, against their calling
//! hours) the contact's local time is shown beside it.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::error::ApiError;

/// Who is looking, for the frame: the organisation's name and the sign-out form's token.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub org_name: &'a str,
    pub csrf: &'a str,
    /// Which navigation entry is the current page.
    pub current: Nav,
}

/// The navigation entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Sequences,
    Templates,
    Webhooks,
    Suppressions,
    AccessLog,
}

/// A whole page: `frame` is `None` for the signed-out pages (sign-in, errors before a
/// session).
pub fn layout(title: &str, frame: Option<Frame<'_>>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · Clarion" }
                link rel="stylesheet" href=(super::css_path());
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui" { "Clarion" }
                    @if let Some(frame) = frame {
                        nav aria-label="Main" {
                            ul {
                                (nav_item("/ui", "Overview", frame.current == Nav::Overview))
                                (nav_item("/ui/sequences", "Sequences", frame.current == Nav::Sequences))
                                (nav_item("/ui/templates", "Templates", frame.current == Nav::Templates))
                                (nav_item("/ui/webhooks", "Webhooks", frame.current == Nav::Webhooks))
                                (nav_item("/ui/suppressions", "Suppressions", frame.current == Nav::Suppressions))
                                (nav_item("/ui/access-log", "Access log", frame.current == Nav::AccessLog))
                            }
                        }
                        div.who {
                            span.org { (frame.org_name) }
                            form method="post" action="/ui/logout" {
                                input type="hidden" name="csrf_token" value=(frame.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    (body)
                }
            }
        }
    }
}

fn nav_item(href: &str, label: &str, current: bool) -> Markup {
    html! {
        li {
            @if current {
                a href=(href) aria-current="page" { (label) }
            } @else {
                a href=(href) { (label) }
            }
        }
    }
}

/// An HTML response with `status`.
pub fn respond(status: StatusCode, page: Markup) -> Response {
    (status, Html(page.into_string())).into_response()
}

/// Anything a dashboard page can fail with: an HTML error page with the right status. The
/// message is for people and never carries PHI (it comes from [`ApiError`]s, whose messages
/// never do, or from this module).
#[derive(Debug)]
pub struct UiError {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `Retry-After` with a 429.
    pub retry_after_secs: Option<u64>,
}

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("No such {what}."))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// A state-changing request without a valid CSRF token.
    pub fn forbidden_csrf() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this dashboard. Go back, reload the \
             page and try again.",
        )
    }
}

impl From<ApiError> for UiError {
    fn from(error: ApiError) -> Self {
        Self {
            status: error.status,
            message: error.message,
            retry_after_secs: error.retry_after_secs,
        }
    }
}

impl From<clarion_store::StoreError> for UiError {
    fn from(error: clarion_store::StoreError) -> Self {
        ApiError::from(error).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error").to_owned();
        let page = layout(
            &title,
            None,
            html! {
                h1 { (title) }
                p.error role="alert" { (self.message) }
                p { a href="/ui" { "Back to the dashboard" } }
            },
        );
        let mut response = respond(self.status, page);
        if let Some(seconds) = self.retry_after_secs {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

/// `millis` as UTC ISO 8601 to the second, in a `<time>` element.
pub fn utc(millis: i64) -> Markup {
    let Some(instant) = chrono::DateTime::from_timestamp_millis(millis) else {
        return html! { "—" };
    };
    html! {
        time datetime=(instant.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) {
            (instant.format("%Y-%m-%dT%H:%M:%SZ"))
        }
    }
}

/// An optional instant: [`utc`], or a dash.
pub fn utc_opt(millis: Option<i64>) -> Markup {
    match millis {
        Some(millis) => utc(millis),
        None => html! { "—" },
    }
}

/// `millis` on the contact's clock (`2026-03-01 09:05 EST`), when the zone is known.
pub fn local(millis: i64, zone: Option<chrono_tz::Tz>) -> Option<String> {
    let zone = zone?;
    let instant = chrono::DateTime::from_timestamp_millis(millis)?;
    Some(
        instant
            .with_timezone(&zone)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string(),
    )
}

/// [`utc`] with the contact's local time beside it.
pub fn utc_and_local(millis: i64, zone: Option<chrono_tz::Tz>) -> Markup {
    html! {
        (utc(millis))
        @if let Some(local) = local(millis, zone) {
            " " span.local { "(" (local) " local)" }
        }
    }
}

/// How a serialisable enum is spelled on the wire (`no-answer`), for display.
pub fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// A status as a badge (the class carries the colour; the text says it).
pub fn badge(text: &str) -> Markup {
    let class = match text {
        "ended" | "delivered" | "completed" | "resolved" => "badge ok",
        "failed" | "error" | "opt-out" | "declined" => "badge bad",
        "paused" | "pending" => "badge warn",
        _ => "badge",
    };
    html! { span class=(class) { (text) } }
}

/// A duration in milliseconds as `1 min 05 s`.
pub fn duration(ms: u64) -> String {
    let seconds = ms / 1000;
    if seconds >= 60 {
        format!("{} min {:02} s", seconds / 60, seconds % 60)
    } else {
        format!("{}.{} s", seconds, (ms % 1000) / 100)
    }
}

/// The internal id behind a public id of `kind` in a path, or 404 naming `what`: text that is
/// not a number, or not one of this organisation's ids, names nothing.
pub fn internal_id(
    ids: &clarion_store::PublicIds,
    kind: clarion_store::IdKind,
    public: &str,
    what: &str,
) -> Result<i64, UiError> {
    public
        .parse::<i64>()
        .ok()
        .and_then(|public| ids.decode(kind, public))
        .ok_or_else(|| UiError::not_found(what))
}
