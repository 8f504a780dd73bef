//! `/providers/...`: callbacks from the channel providers. Not under `/v1` and not
//! authenticated by API keys: each provider proves itself with its own shared secret,
//! compared in constant time; anything else is answered 401 and changes nothing.
//!
//! Vapi (`POST /providers/vapi/events`, the assistant's or phone number's server URL) proves
//! itself with its HMAC credential when one is configured (`vapi.hmac_secret`: a signature
//! over `{timestamp}.{body}` with a timestamp within `vapi.hmac_window`), else with the static
//! server secret (`x-vapi-secret` or `Authorization: Bearer`).
//! `status-update` moves the call's status forward (never back: callbacks may arrive out of
//! order); `end-of-call-report` ends the encounter with the call's transcript, summary,
//! analysis and outcome, and the sequence goes on by its rules. A report for an encounter
//! that already ended (Vapi's retry, a duplicate, a replay) is answered 200 and ignored.
//! Other message types are acknowledged and ignored.
//!
//! Twilio (`POST /providers/twilio/inbound`, the number's or Messaging Service's incoming
//! message webhook; `POST /providers/twilio/status`, each sent message's status callback):
//! `X-Twilio-Signature` is checked over the public URL Twilio called and every form
//! parameter. An inbound text goes to the SMS conversation running with its sender and is
//! answered with TwiML (`<Response><Message>…</Message></Response>`, or an empty response: no
//! reply to STOP, nothing when no conversation runs). A failed opening message (error 21610:
//! the recipient unsubscribed) ends its conversation.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clarion_providers::twilio::signature::{HEADER as TWILIO_SIGNATURE, validate};
use clarion_providers::twilio::wire::{InboundMessage, StatusCallback, parse_form, twiml_response};
use clarion_providers::vapi::signature;
use clarion_providers::vapi::wire::{ServerMessage, parse_server_message};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use clarion_scheduler::SchedulerError;

/// What a callback changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackOut {
    /// Whether the callback changed anything (false for duplicates, unknown calls and
    /// message types Clarion does not use).
    pub applied: bool,
}

/// The secret Vapi presented: `x-vapi-secret`, or `Authorization: Bearer`.
fn presented_secret(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get("x-vapi-secret") {
        return value.to_str().ok();
    }
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "the callback did not carry the configured provider credential",
    )
}

#[utoipa::path(post, path = "/providers/vapi/events", tag = "providers",
    request_body(content = Object, description = "A Vapi server message: {\"message\": {\"type\": ...}}"),
    responses((status = 200, body = CallbackOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "A report matched by the call's name could not be confirmed with Vapi yet")))]
pub async fn vapi_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CallbackOut>, ApiError> {
    if let Some(hmac) = &state.providers.vapi_hmac {
        // The HMAC binds the body and the time; with it configured, the static secret alone
        // (which anyone who saw one callback knows) proves nothing.
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Err(error) = signature::verify(
            &hmac.secret,
            header(&hmac.signature_header),
            header(&hmac.timestamp_header),
            &body,
            state.clock.now_millis(),
            hmac.window.as_secs(),
        ) {
            tracing::warn!(reason = %error, "Vapi callback rejected: HMAC not valid");
            return Err(unauthorized());
        }
    } else {
        let Some(secret) = state.providers.vapi.as_deref() else {
            return Err(ApiError::not_found("route"));
        };
        // Compared as SHA-256 digests: equal lengths, so the comparison's time says nothing
        // about the secret, not even its length.
        let presented = Sha256::digest(presented_secret(&headers).unwrap_or_default().as_bytes());
        if !bool::from(presented.ct_eq(&Sha256::digest(secret.as_bytes()))) {
            tracing::warn!("Vapi callback rejected: wrong or missing secret");
            return Err(unauthorized());
        }
    }
    let message = parse_server_message(&body)
        .map_err(|error| ApiError::bad_request("invalid_payload", error.to_string()))?;
    let applied = match &message {
        ServerMessage::EndOfCallReport(report) => {
            match state.scheduler.vapi_end_of_call(report).await {
                Ok(applied) => applied,
                // A report matched only by its call's name waits for Vapi to confirm the call:
                // not acknowledged, so that it is sent again rather than lost.
                Err(SchedulerError::ProviderUnavailable) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "provider_unavailable",
                        "the call could not be confirmed with Vapi yet; send the report again",
                    ));
                }
                Err(error) => return Err(ApiError::from(error)),
            }
        }
        ServerMessage::StatusUpdate(update) => match message.call_id() {
            Some(call_id) => state
                .scheduler
                .vapi_status_update(call_id, &update.status)
                .await
                .map_err(ApiError::from)?,
            None => false,
        },
        ServerMessage::Other { .. } => false,
    };
    tracing::info!(
        message_type = message.message_type(),
        applied,
        "Vapi callback"
    );
    Ok(Json(CallbackOut { applied }))
}

/// The form parameters of a Twilio callback whose `X-Twilio-Signature` matches the public URL
/// of `path`; 401 otherwise (and 404 when Twilio is not configured).
fn verified_twilio_form(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, ApiError> {
    let Some(twilio) = state.providers.twilio.as_ref() else {
        return Err(ApiError::not_found("route"));
    };
    let url = format!("{}{path}", twilio.public_base_url.trim_end_matches('/'));
    let params = parse_form(body);
    let signature = headers.get(TWILIO_SIGNATURE).and_then(|v| v.to_str().ok());
    if validate(&twilio.auth_token, &url, &params, signature).is_err() {
        tracing::warn!(path, "Twilio callback rejected: signature does not match");
        return Err(unauthorized());
    }
    Ok(params)
}

fn twiml(reply: Option<&str>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/xml")],
        twiml_response(reply),
    )
        .into_response()
}

#[utoipa::path(post, path = "/providers/twilio/inbound", tag = "providers",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Twilio's incoming-message webhook"),
    responses((status = 200, description = "TwiML", content_type = "text/xml"), (status = 401, body = ErrorBody)))]
pub async fn twilio_inbound(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = verified_twilio_form(&state, "/providers/twilio/inbound", &headers, &body)?;
    let message = InboundMessage::from_params(&params)
        .map_err(|error| ApiError::bad_request("invalid_payload", error.to_string()))?;
    let reply = state
        .scheduler
        .twilio_inbound(&message)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(replied = reply.is_some(), "Twilio inbound message");
    Ok(twiml(reply.as_deref()))
}

#[utoipa::path(post, path = "/providers/twilio/status", tag = "providers",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Twilio's status callback"),
    responses((status = 200, body = CallbackOut), (status = 401, body = ErrorBody)))]
pub async fn twilio_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CallbackOut>, ApiError> {
    let params = verified_twilio_form(&state, "/providers/twilio/status", &headers, &body)?;
    let callback = StatusCallback::from_params(&params)
        .map_err(|error| ApiError::bad_request("invalid_payload", error.to_string()))?;
    let applied = state
        .scheduler
        .twilio_status(&callback)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(CallbackOut { applied }))
}
