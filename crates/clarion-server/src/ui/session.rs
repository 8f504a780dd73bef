//! Sign-in, sessions and CSRF tokens.
//!
//! `POST /ui/login` checks the API key exactly as the API's bearer authentication does
//! ([`clarion_store::Store::authenticate_key`]) and starts a server-side session: a random
//! 32-byte token goes to the browser (cookie `clarion_session`: `HttpOnly`,
//! `SameSite=Strict`, `Path=/ui`, `Secure` when the request came over https), the database
//! keeps only its SHA-256 with the organisation, the key and the expiries, so sessions survive
//! restarts and work on every node. Each request looks the session up and moves its idle
//! expiry; sign-out deletes the row.
//!
//! The CSRF token of a session is derived from its token (SHA-256 of a label and the token):
//! only the holder of the cookie can know it, and nothing more is stored. The sign-in form
//! itself is protected by a double-submit cookie (`clarion_signin`), against a page that
//! would sign a browser into another organisation.

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clarion_store::{ApiKeyId, NewUiSession, OrgId, SessionTouch};
use maud::html;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::page::{Frame, Nav, UiError, layout, respond};
use crate::AppState;

const SESSION_COOKIE: &str = "clarion_session";
const SIGN_IN_COOKIE: &str = "clarion_signin";

/// The largest form body the dashboard reads (a sign-in or a control form is a few hundred
/// bytes).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The signed-in viewer of a page: the session's organisation scopes every query.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub org: OrgId,
    pub api_key_id: ApiKeyId,
    /// The session's CSRF token, for the page's forms.
    pub csrf: String,
    /// A reference to the session for the access log: the first 8 bytes of its token's hash
    /// in hex (the row id would be a global counter, telling one tenant how many sessions all
    /// of them open).
    pub session_ref: String,
    pub org_name: String,
}

impl Viewer {
    /// The page frame for this viewer.
    pub fn frame(&self, current: Nav) -> Frame<'_> {
        Frame {
            org_name: &self.org_name,
            csrf: &self.csrf,
            current,
        }
    }

    /// Checks a form's CSRF token against the session's, in constant time.
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), UiError> {
        let presented = presented.unwrap_or_default();
        if bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(UiError::forbidden_csrf())
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_sign_in = || Redirect::to("/ui/login").into_response();
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).and_then(decode_token) else {
            return Err(to_sign_in());
        };
        let hash: [u8; 32] = Sha256::digest(token).into();
        let settings = state.ui.settings;
        let now = state.clock.now_millis();
        let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let session = state
            .store
            .touch_ui_session(&SessionTouch {
                token_hash: &hash,
                now,
                expires_at: now.saturating_add(millis(settings.idle_timeout)),
                created_after: now.saturating_sub(millis(settings.max_lifetime)),
            })
            .await
            .map_err(|e| UiError::from(e).into_response())?;
        let Some(session) = session else {
            return Err(to_sign_in());
        };
        let org_name = state
            .store
            .get_organization(session.org_id)
            .await
            .map_err(|e| UiError::from(e).into_response())?
            .map(|org| org.name)
            .unwrap_or_default();
        Ok(Viewer {
            org: session.org_id,
            api_key_id: session.api_key_id,
            csrf: csrf_of(&token),
            session_ref: hash[..8].iter().map(|b| format!("{b:02x}")).collect(),
            org_name,
        })
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// A token from its cookie form: exactly 32 bytes, base64url without padding.
fn decode_token(text: &str) -> Option<[u8; 32]> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    bytes.try_into().ok()
}

fn csrf_of(token: &[u8; 32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"clarion-ui-csrf\0");
    hasher.update(token);
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// Whether the browser reached us over https: TLS ends at a proxy in front of Clarion, which
/// says so in `X-Forwarded-Proto` (or `Forwarded: proto=https`).
fn over_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split([';', ','])
                .any(|part| part.trim().eq_ignore_ascii_case("proto=https"))
        });
    forwarded_proto || forwarded
}

/// A `Set-Cookie` value for the dashboard's path.
fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let mut text = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if let Some(max_age) = max_age {
        text.push_str(&format!("; Max-Age={max_age}"));
    }
    if secure {
        text.push_str("; Secure");
    }
    // Only base64url characters and fixed text: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Reads an `application/x-www-form-urlencoded` body (at most [`MAX_FORM_BYTES`]).
pub async fn read_form<T: serde::de::DeserializeOwned>(
    body: axum::body::Body,
) -> Result<T, UiError> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| UiError::bad_request("The form could not be read."))?;
    serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| UiError::bad_request("The form's fields are not what this page sends."))
}

/// `GET /ui/login`: the sign-in form, with a fresh double-submit token.
pub async fn login_form(headers: HeaderMap) -> Response {
    sign_in_page(&headers, StatusCode::OK, None)
}

fn sign_in_page(headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let page = layout(
        "Sign in",
        None,
        html! {
            section.signin aria-labelledby="signin-title" {
                h1 id="signin-title" { "Sign in" }
                p { "Sign in with your organisation's API key. The dashboard shows exactly what \
                     the key's organisation sees through the API." }
                @if let Some(error) = error {
                    p.error role="alert" id="signin-error" { (error) }
                }
                form method="post" action="/ui/login" {
                    input type="hidden" name="csrf_token" value=(token);
                    label for="api_key" { "API key" }
                    input id="api_key" name="api_key" type="password" required
                        autocomplete="current-password" spellcheck="false"
                        aria-describedby=[error.map(|_| "signin-error")];
                    button type="submit" { "Sign in" }
                }
            }
        },
    );
    let mut response = respond(status, page);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SIGN_IN_COOKIE, &token, Some(3600), over_https(headers)),
    );
    response
}

#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    api_key: String,
    csrf_token: Option<String>,
}

/// Never lets the key reach a log through `Debug`.
impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignIn(<redacted>)")
    }
}

/// `POST /ui/login`.
pub async fn login(State(state): State<AppState>, request: Request) -> Result<Response, UiError> {
    let (parts, body) = request.into_parts();
    let form: SignIn = read_form(body).await?;
    // The double-submit check: the form's token must be the one this browser's cookie holds.
    let expected = cookie(&parts.headers, SIGN_IN_COOKIE).unwrap_or_default();
    let presented = form.csrf_token.as_deref().unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
        return Err(UiError::forbidden_csrf());
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or(
            std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            |info| info.0.ip(),
        );
    let now = state.clock.now_millis();
    let rule = state.ui.settings.failed_sign_ins;
    let limits = &state.ui.failed_sign_ins;
    if let Err(wait) = limits.check(peer, rule, now, false) {
        return Err(UiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "Too many failed sign-ins from this address. Try again in {wait} seconds."
            ),
            retry_after_secs: Some(wait),
        });
    }
    let key = form.api_key.trim();
    let found = if key.is_empty() {
        None
    } else {
        state.store.authenticate_key(key).await?
    };
    let Some(found) = found else {
        // Only failures take a token: a clinic signing in all day is never limited.
        let _ = limits.check(peer, rule, now, true);
        tracing::info!("dashboard sign-in refused: unknown or revoked key");
        return Ok(sign_in_page(
            &parts.headers,
            StatusCode::UNAUTHORIZED,
            Some("That API key was not accepted. Check it and try again."),
        ));
    };
    let token = rand::random::<[u8; 32]>();
    let hash: [u8; 32] = Sha256::digest(token).into();
    let idle = state.ui.settings.idle_timeout;
    state
        .store
        .create_ui_session(&NewUiSession {
            org_id: found.org_id,
            api_key_id: found.key_id,
            token_hash: &hash,
            now,
            expires_at: now.saturating_add(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX)),
        })
        .await?;
    let secure = over_https(&parts.headers);
    let mut response = Redirect::to("/ui").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &URL_SAFE_NO_PAD.encode(token), None, secure),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(SIGN_IN_COOKIE, "", Some(0), secure),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf_token: Option<String>,
}

/// `POST /ui/logout`: ends the session (its row is deleted) and clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    viewer: Viewer,
    request: Request,
) -> Result<Response, UiError> {
    let (parts, body) = request.into_parts();
    let form: CsrfForm = read_form(body).await?;
    viewer.check_csrf(form.csrf_token.as_deref())?;
    if let Some(token) = cookie(&parts.headers, SESSION_COOKIE).and_then(decode_token) {
        let hash: [u8; 32] = Sha256::digest(token).into();
        state.store.delete_ui_session(&hash).await?;
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", Some(0), over_https(&parts.headers)),
    );
    Ok(response)
}
