//! A local webhook receiver: verifies each POST, parses it by its `clarion-event-type`
//! (the End of Sequence Report, `encounter.ended`, `endpoint.disabled`) and hands it to the
//! caller. Used by `clarion webhook listen`, `clarion demo` and by tests.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use clarion_webhooks::{
    Event, OutreachStep, OutreachType, SequenceReport, Verifier, VerifyError, WebhookHeaders,
};
use tokio::sync::mpsc;

/// One verified delivery as the receiver got it.
#[derive(Debug, Clone)]
pub struct ReceivedReport {
    /// The `webhook-id` header: the same on every attempt of one message.
    pub webhook_id: String,
    /// The parsed event (a report, a test report, an encounter, a disabled endpoint).
    pub event: Event,
    /// The body bytes exactly as received.
    pub body: Bytes,
    /// True when a report with this `webhook-id` was already received (a retry after a lost
    /// answer, say). Webhooks are at-least-once: receivers de-duplicate on `webhook-id`.
    pub duplicate: bool,
}

struct ReceiverState {
    verifier: Verifier,
    seen: Mutex<HashSet<String>>,
    reports: mpsc::UnboundedSender<ReceivedReport>,
}

/// A router that answers every POST: 204 for a validly signed report, 400 with a JSON error
/// body naming the reason otherwise. Accepted reports arrive on the returned channel.
pub fn router(verifier: Verifier) -> (Router, mpsc::UnboundedReceiver<ReceivedReport>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let state = Arc::new(ReceiverState {
        verifier,
        seen: Mutex::default(),
        reports: sender,
    });
    (Router::new().fallback(receive).with_state(state), receiver)
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return rejection(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "send a POST",
        );
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let webhook_headers = WebhookHeaders::from_lookup(header);
    if let Err(reason) = state.verifier.verify(&webhook_headers, &body) {
        return rejection(
            StatusCode::BAD_REQUEST,
            verify_error_code(&reason),
            &reason.to_string(),
        );
    }
    let event = match Event::parse(header(clarion_webhooks::HEADER_EVENT_TYPE), &body) {
        Ok(event) => event,
        Err(error) => {
            // serde's message names the field and position, never the value.
            let message = error.to_string();
            return rejection(StatusCode::BAD_REQUEST, "invalid_report", &message);
        }
    };
    let webhook_id = webhook_headers.id.unwrap_or_default().to_owned();
    let duplicate = match state.seen.lock() {
        Ok(mut seen) => !seen.insert(webhook_id.clone()),
        Err(poisoned) => !poisoned.into_inner().insert(webhook_id.clone()),
    };
    let _ = state.reports.send(ReceivedReport {
        webhook_id,
        event,
        body,
        duplicate,
    });
    StatusCode::NO_CONTENT.into_response()
}

/// The stable machine-readable code for each verification failure.
pub fn verify_error_code(error: &VerifyError) -> &'static str {
    match error {
        VerifyError::MissingHeader(_) => "missing_header",
        VerifyError::InvalidTimestamp => "invalid_timestamp",
        VerifyError::TimestampTooOld { .. } => "timestamp_too_old",
        VerifyError::TimestampTooNew { .. } => "timestamp_too_new",
        VerifyError::NoMatchingSignature => "invalid_signature",
        VerifyError::SignatureHeaderTooLarge { .. } => "signature_header_too_large",
        VerifyError::TooManySignatures { .. } => "too_many_signatures",
    }
}

fn rejection(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message, "field": null } });
    (status, axum::Json(body)).into_response()
}

/// A short human-readable summary of a received report: one header line, the outcome, and one
/// line per outreach step. It shows no transcript, summary or phone number.
impl ReceivedReport {
    /// The End of Sequence Report, when this is one (not a test report nor another event).
    pub fn report(&self) -> Option<&SequenceReport> {
        match &self.event {
            Event::SequenceEnded(report) => Some(report),
            _ => None,
        }
    }
}

/// A few readable lines about one delivery.
pub fn summarize(received: &ReceivedReport) -> String {
    let delivery = format!(
        "webhook-id {}{}",
        received.webhook_id,
        if received.duplicate {
            ", duplicate delivery"
        } else {
            ""
        },
    );
    match &received.event {
        Event::SequenceEnded(report) => summarize_report(report, "", &delivery),
        Event::SequenceEndedTest(report) => summarize_report(report, "test report: ", &delivery),
        Event::EncounterEnded(event) => {
            let mut text = format!(
                "encounter.ended: sequence {} ({delivery})",
                event.sequence_id
            );
            write_step(&mut text, &event.outreach_step());
            text
        }
        Event::EndpointDisabled(event) => format!(
            "endpoint.disabled: endpoint {} ({}) disabled at {} ({delivery})\n  reason: {}\n  \
             failing since {}; re-enable it to deliver what it missed",
            event.endpoint_id, event.url, event.disabled_at, event.reason, event.failing_since
        ),
        other => format!("{} ({delivery})", other.event_type()),
    }
}

fn summarize_report(report: &SequenceReport, prefix: &str, delivery: &str) -> String {
    let mut text = format!(
        "{prefix}sequence {} {} at {} ({delivery})",
        report.id, report.status, report.last_updated,
    );
    let outcome = report
        .outcome_description
        .as_deref()
        .unwrap_or("(no outcome description)");
    let _ = write!(text, "\n  outcome: {outcome}");
    if report.outreach.is_empty() {
        text.push_str("\n  no outreach was performed");
    }
    for step in &report.outreach {
        write_step(&mut text, step);
    }
    text
}

/// One outreach entry as one line.
fn write_step(text: &mut String, step: &OutreachStep) {
    let _ = write!(
        text,
        "\n  step {:>2}  {:<4}  ",
        step.step,
        kind_name(step.kind)
    );
    match (&step.call, &step.sms) {
        (Some(call), _) => {
            let _ = write!(
                text,
                "call {}  outcome={}  ended_reason={}",
                call.id,
                call.outcome.as_ref().map_or("-", |o| o.as_str()),
                call.ended_reason.as_ref().map_or("-", |r| r.as_str()),
            );
            if let Some(reason) = call.failure_reason {
                let _ = write!(text, "  failure_reason={}", enum_text(&reason));
            }
            if let Some(ms) = call.duration_ms {
                let _ = write!(text, "  duration={:.1}s", ms as f64 / 1000.0);
            }
        }
        (None, Some(sms)) => {
            let _ = write!(
                text,
                "sms {}  status={}  ended_reason={}",
                sms.id,
                enum_text(&sms.status),
                sms.ended_reason
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), enum_text),
            );
        }
        (None, None) => text.push_str("(no details)"),
    }
}

fn kind_name(kind: OutreachType) -> &'static str {
    match kind {
        OutreachType::Call => "call",
        OutreachType::Sms => "sms",
    }
}

/// The wire text of a closed enum value.
fn enum_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
