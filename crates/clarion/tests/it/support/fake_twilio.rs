//! A local fake of Twilio's Messages API, faithful to the documented shapes (providers.md
//! §2.1, §2.6): `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, HTTP
//! Basic auth, answering 201 with the message resource or the documented error JSON; and
//! the callbacks Twilio sends (inbound messages, status callbacks) as signed form POSTs,
//! `X-Twilio-Signature` computed with the published algorithm.
//!
//! With [`FakeTwilio::limit_per_second`] the fake enforces a sender's throughput as Twilio
//! does for API requests beyond it: a send from a sender that already sent that many in the
//! trailing second is answered 429 with error 20429 (providers.md §2.1) and not sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use clarion_providers::twilio::signature::{AuthToken, expected_signature};
use clarion_providers::twilio::wire::{SendMessage, Sender, parse_form};
use serde_json::{Value, json};

pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
pub const AUTH_TOKEN: &str = "twilio-auth-token-for-tests";
pub const SERVICE_SID: &str = "MG00000000000000000000000000000000";
pub const OUR_NUMBER: &str = "+15555550100";

/// A scripted answer to the next send (unscripted sends are accepted: 201).
#[derive(Debug, Clone, Copy)]
pub enum SendAnswer {
    /// HTTP status and Twilio error code.
    Error(u16, i64),
}

#[derive(Default)]
struct Inner {
    answers: VecDeque<SendAnswer>,
    sent: Vec<SendMessage>,
    attempts: usize,
    /// When each accepted message arrived, with its sender.
    sent_at: Vec<(tokio::time::Instant, String)>,
    /// Sends per sender per trailing second, when enforced.
    per_second: Option<usize>,
    /// Sends refused with 429 / 20429.
    rate_limited: usize,
    /// While set, a sent message is recorded and its answer held until released.
    holding: bool,
    released: Arc<tokio::sync::Notify>,
}

/// How a send names its sender: the number, or the Messaging Service sid.
pub fn sender_of(message: &SendMessage) -> String {
    match &message.sender {
        Sender::From(number) => number.clone(),
        Sender::MessagingService(sid) => sid.clone(),
    }
}

#[derive(Clone)]
pub struct FakeTwilio {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
}

impl FakeTwilio {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(send_message),
            )
            .route(
                "/2010-04-01/Accounts/{account}",
                axum::routing::get(get_account),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            url,
            inner,
            http: reqwest::Client::new(),
        }
    }

    /// The settings Clarion uses to reach this fake.
    pub fn settings(&self) -> clarion_providers::twilio::client::TwilioSettings {
        clarion_providers::twilio::client::TwilioSettings {
            base_url: self.url.clone(),
            account_sid: ACCOUNT_SID.to_owned(),
            auth_token: AuthToken::new(AUTH_TOKEN),
            sender: Sender::MessagingService(SERVICE_SID.to_owned()),
            timeout: std::time::Duration::from_secs(5),
        }
    }

    pub fn answer_next(&self, answers: &[SendAnswer]) {
        self.inner.lock().unwrap().answers.extend(answers);
    }

    /// The messages accepted, in order.
    pub fn sent(&self) -> Vec<SendMessage> {
        self.inner.lock().unwrap().sent.clone()
    }

    /// Refuses, with 429 / 20429, a send from a sender that sent `n` in the trailing second.
    pub fn limit_per_second(&self, n: usize) {
        self.inner.lock().unwrap().per_second = Some(n);
    }

    /// When each accepted message arrived, with its sender, in order.
    pub fn sent_at(&self) -> Vec<(tokio::time::Instant, String)> {
        self.inner.lock().unwrap().sent_at.clone()
    }

    /// Sends refused for the sender's rate.
    pub fn rate_limited(&self) -> usize {
        self.inner.lock().unwrap().rate_limited
    }

    /// Every send request received.
    pub fn attempts(&self) -> usize {
        self.inner.lock().unwrap().attempts
    }

    /// Holds the answer to every message sent from now on (the message is recorded as sent).
    pub fn hold_sends(&self) {
        self.inner.lock().unwrap().holding = true;
    }

    /// Answers the held messages, and the next ones at once.
    pub fn release_sends(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.holding = false;
        inner.released.notify_waiters();
    }

    /// POSTs a form to `clarion` + `path`, signed as Twilio signs it with `token`. Answers
    /// the status and the body text.
    pub async fn post_signed(
        &self,
        clarion: &str,
        path: &str,
        params: &[(&str, &str)],
        token: &str,
    ) -> (u16, String) {
        let url = format!("{clarion}{path}");
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let signature = expected_signature(&AuthToken::new(token), &url, &owned);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let response = self
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// An inbound text from `from` to our number, as Twilio's incoming-message webhook.
    pub async fn inbound(&self, clarion: &str, from: &str, body: &str) -> (u16, String) {
        let sid = format!("SM{:032x}", rand_sid());
        self.post_signed(
            clarion,
            "/providers/twilio/inbound",
            &[
                ("MessageSid", &sid),
                ("SmsSid", &sid),
                ("AccountSid", ACCOUNT_SID),
                ("MessagingServiceSid", SERVICE_SID),
                ("From", from),
                ("To", OUR_NUMBER),
                ("Body", body),
                ("NumMedia", "0"),
                ("NumSegments", "1"),
                ("SmsStatus", "received"),
                ("ApiVersion", "2010-04-01"),
            ],
            AUTH_TOKEN,
        )
        .await
    }
}

fn rand_sid() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1_000);
    u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `GET /2010-04-01/Accounts/{AccountSid}.json` (the path segment includes `.json`).
async fn get_account(Path(account): Path<String>, headers: HeaderMap) -> Response {
    if account != format!("{ACCOUNT_SID}.json") || !authorized(&headers) {
        return error(401, 20003, "Authenticate");
    }
    axum::Json(json!({ "sid": ACCOUNT_SID, "status": "active", "type": "Full" })).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"))
    );
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

async fn send_message(
    State(state): State<Arc<Mutex<Inner>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if account != ACCOUNT_SID || !authorized(&headers) {
        return error(401, 20003, "Authenticate");
    }
    let Ok(message) = SendMessage::from_params(&parse_form(&body)) else {
        return error(400, 21604, "A 'To' phone number is required.");
    };
    let (sid, released) = {
        let mut inner = state.lock().unwrap();
        inner.attempts += 1;
        if let Some(SendAnswer::Error(status, code)) = inner.answers.pop_front() {
            return error(status, code, "scripted failure");
        }
        let now = tokio::time::Instant::now();
        let sender = sender_of(&message);
        if let Some(limit) = inner.per_second {
            let recent = inner
                .sent_at
                .iter()
                .filter(|(at, s)| {
                    *s == sender && now.duration_since(*at) < std::time::Duration::from_secs(1)
                })
                .count();
            if recent >= limit {
                inner.rate_limited += 1;
                return error(429, 20429, "Too Many Requests");
            }
        }
        inner.sent_at.push((now, sender));
        inner.sent.push(message.clone());
        (
            format!("SM{:032x}", inner.sent.len()),
            inner.released.clone(),
        )
    };
    // Held: the message is recorded as sent, its answer waits for `release_sends`.
    loop {
        let wait = released.notified();
        let holding = state.lock().unwrap().holding;
        if !holding {
            break;
        }
        wait.await;
    }
    let resource: Value = json!({
        "sid": sid, "account_sid": ACCOUNT_SID, "messaging_service_sid": SERVICE_SID,
        "from": null, "to": message.to, "body": message.body, "status": "accepted",
        "direction": "outbound-api", "num_segments": "0", "num_media": "0", "price": null,
        "price_unit": "USD", "error_code": null, "error_message": null,
        "date_created": "Mon, 06 Jan 2025 15:00:00 +0000", "date_updated": "Mon, 06 Jan 2025 15:00:00 +0000",
        "date_sent": null, "api_version": "2010-04-01",
        "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"),
        "subresource_uris": { "media": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media.json") },
    });
    (StatusCode::CREATED, axum::Json(resource)).into_response()
}

fn error(status: u16, code: i64, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({
            "code": code, "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status,
        })),
    )
        .into_response()
}
