//! A local fake of Vapi's API, faithful to the documented shapes (providers.md §1.10, the
//! OpenAPI `Call` and server messages): `POST /call` with Bearer auth answers 201 with a
//! `Call` (or the scripted error), `GET /call/{id}` answers the call, and the fake emits
//! server messages to Clarion's callback URL with the `x-vapi-secret` header, as Vapi does
//! with a legacy/Bearer credential, or signed as with Vapi's HMAC credential.
//!
//! With [`FakeVapi::limit_concurrent_calls`] the fake is an account with that many
//! concurrent-call slots (docs.vapi.ai/calls/call-concurrency: inbound and outbound calls share
//! them): a call holds a slot from its creation until it ends, and a `POST /call` while every
//! slot is held is answered with a call record that ended at once with
//! `call.start.error-subscription-concurrency-limit-reached` (a start error, providers.md
//! §1.4): nobody is called.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const API_KEY: &str = "test-key";
pub const PHONE_NUMBER_ID: &str = "pn_1";
pub const SERVER_SECRET: &str = "vapi-server-secret-for-tests";
pub const HMAC_SECRET: &str = "vapi-hmac-secret-for-tests";

/// The environment that points a `clarion serve` at this fake's credentials.
pub const CLARION_ENV: [(&str, &str); 3] = [
    ("CLARION_VAPI__API_KEY", API_KEY),
    ("CLARION_VAPI__PHONE_NUMBER_ID", PHONE_NUMBER_ID),
    ("CLARION_VAPI__SERVER_SECRET", SERVER_SECRET),
];

/// Creates, through the API at `base`, a call assistant on the fake's Vapi assistant
/// `asst_1` (which the operator must have allowed) and a template of two calls that stops on
/// `resolved`; answers the template.
pub async fn two_call_template(http: &reqwest::Client, base: &str, key: &str) -> Value {
    let caller = super::post_ok(
        http,
        base,
        key,
        "/v1/assistants",
        json!({ "name": "Caller", "channel": "call", "config": { "vapi_assistant_id": "asst_1" } }),
    )
    .await;
    super::post_ok(
        http,
        base,
        key,
        "/v1/sequence-templates",
        json!({
            "name": "Two calls", "calling_hours": null, "stop_on": ["resolved"],
            "steps": [ { "type": "call", "assistant_id": caller["id"] },
                       { "type": "call", "assistant_id": caller["id"] } ]
        }),
    )
    .await
}

/// A scripted answer to the next `POST /call`.
#[derive(Debug, Clone, Copy)]
pub enum CallAnswer {
    Created,
    /// An error status, with `Retry-After` seconds for 429.
    Error(u16, Option<u64>),
    /// The call is created (Vapi places it), but the answer is this error status: what a
    /// timeout or a gateway error after the fact looks like to the client.
    PlacedButError(u16),
}

#[derive(Default)]
struct Inner {
    answers: VecDeque<CallAnswer>,
    requests: Vec<Value>,
    calls: Vec<Value>,
    reads: usize,
    /// `POST /call` requests being answered now, and the most seen at once.
    in_flight: usize,
    max_in_flight: usize,
    /// Holds each `POST /call` until this many are in flight (or two seconds pass).
    hold_until_in_flight: Option<usize>,
    /// While set, `GET /call/{id}` waits (a slow Vapi) until it is cleared.
    hold_reads: bool,
    /// `GET /call/{id}` requests being answered now.
    reads_in_flight: usize,
    /// For each `POST /call`, how many reads were in flight when it arrived.
    reads_in_flight_at_create: Vec<usize>,
    /// Sends the call's end-of-call report to Clarion (with this outcome in the structured
    /// data) before answering `POST /call`, as Vapi may for a call that ends at once.
    report_before_answer: Option<(String, &'static str, &'static str)>,
    /// Clarion's answers to those early reports: (status, body).
    early_answers: Vec<(u16, Value)>,
    /// The account's concurrent-call slots, when limited.
    slots: Option<usize>,
    /// Slots held by inbound calls (outside Clarion).
    inbound: usize,
    /// The most calls in progress (outbound, not ended) at once.
    max_active: usize,
    /// Calls refused for lack of a slot (their records ended at once).
    refused: usize,
}

/// The start error Vapi gives a call when every concurrent-call slot is held.
pub const CONCURRENCY_LIMIT_REACHED: &str =
    "call.start.error-subscription-concurrency-limit-reached";

impl Inner {
    /// Outbound calls in progress: created and not ended.
    fn active(&self) -> usize {
        self.calls.iter().filter(|c| c["status"] != "ended").count()
    }
}

#[derive(Clone)]
pub struct FakeVapi {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
}

impl FakeVapi {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new()
            .route("/call", post(create_call).get(list_calls))
            .route("/phone-number/{id}", get(get_phone_number))
            .route("/call/{id}", get(get_call))
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
    pub fn settings(&self) -> clarion_providers::vapi::client::VapiSettings {
        clarion_providers::vapi::client::VapiSettings {
            base_url: self.url.clone(),
            api_key: API_KEY.to_owned(),
            phone_number_id: PHONE_NUMBER_ID.to_owned(),
            timeout: std::time::Duration::from_secs(5),
        }
    }

    /// Makes the fake an account with `slots` concurrent-call slots (see the module doc).
    pub fn limit_concurrent_calls(&self, slots: usize) {
        self.inner.lock().unwrap().slots = Some(slots);
    }

    /// Inbound calls now holding `n` of the account's slots.
    pub fn set_inbound_calls(&self, n: usize) {
        self.inner.lock().unwrap().inbound = n;
    }

    /// Ids of the outbound calls in progress (created, not ended), in creation order.
    pub fn active_calls(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c["status"] != "ended")
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The most outbound calls in progress at once.
    pub fn max_active(&self) -> usize {
        self.inner.lock().unwrap().max_active
    }

    /// How many `POST /call` requests were refused for lack of a slot.
    pub fn refused(&self) -> usize {
        self.inner.lock().unwrap().refused
    }

    /// The calls that were started (not refused for lack of a slot), in creation order.
    pub fn started_calls(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c["endedReason"] != CONCURRENCY_LIMIT_REACHED)
            .collect()
    }

    /// Ends call `call_id` (its slot frees) and sends Clarion its end-of-call report with
    /// `{"outcome": outcome}` as structured data, as Vapi does when a call ends.
    pub async fn end_call(&self, clarion: &str, call_id: &str, outcome: &str) -> (u16, Value) {
        let report = {
            let mut inner = self.inner.lock().unwrap();
            let call = inner
                .calls
                .iter()
                .find(|c| c["id"] == call_id)
                .unwrap()
                .clone();
            let mut report = end_of_call_report(
                call_id,
                "customer-ended-call",
                json!({ "outcome": outcome }),
            );
            report["call"]["name"] = call["name"].clone();
            report["call"]["customer"] = call["customer"].clone();
            report["customer"] = call["customer"].clone();
            finish(&mut inner, call_id, &report);
            report
        };
        self.emit(clarion, Some(SERVER_SECRET), &report).await
    }

    /// Scripts the answers to the next `POST /call` requests (then 201 again).
    pub fn answer_next(&self, answers: &[CallAnswer]) {
        self.inner.lock().unwrap().answers.extend(answers);
    }

    /// Every `POST /call` body received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The calls created, in order.
    pub fn calls(&self) -> Vec<Value> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Ends a created call as `report` (an end-of-call-report message) describes, so that
    /// `GET /call/{id}` answers the finished call — without sending the report.
    pub fn finish_call(&self, call_id: &str, report: &Value) {
        finish(&mut self.inner.lock().unwrap(), call_id, report);
    }

    /// Holds every `POST /call` until `n` are in flight at once (or two seconds pass), to
    /// show whether a client places calls concurrently.
    pub fn hold_calls_until_in_flight(&self, n: usize) {
        self.inner.lock().unwrap().hold_until_in_flight = Some(n);
    }

    /// Makes `GET /call/{id}` wait until [`FakeVapi::release_reads`].
    pub fn hold_reads(&self) {
        self.inner.lock().unwrap().hold_reads = true;
    }

    pub fn release_reads(&self) {
        self.inner.lock().unwrap().hold_reads = false;
    }

    /// How many `GET /call/{id}` requests are being answered now.
    pub fn reads_in_flight(&self) -> usize {
        self.inner.lock().unwrap().reads_in_flight
    }

    /// For each `POST /call`, how many reads were in flight when it arrived.
    pub fn reads_in_flight_at_create(&self) -> Vec<usize> {
        self.inner.lock().unwrap().reads_in_flight_at_create.clone()
    }

    /// Before answering each `POST /call`, ends the call with `ended_reason` and
    /// `{"outcome": outcome}` as structured data, and sends its end-of-call report to
    /// Clarion at `clarion` (the report arrives before Clarion hears the call was placed).
    pub fn report_before_answering(
        &self,
        clarion: &str,
        ended_reason: &'static str,
        outcome: &'static str,
    ) {
        self.inner.lock().unwrap().report_before_answer =
            Some((clarion.to_owned(), ended_reason, outcome));
    }

    /// Clarion's answers to the early reports.
    pub fn early_answers(&self) -> Vec<(u16, Value)> {
        self.inner.lock().unwrap().early_answers.clone()
    }

    /// The most `POST /call` requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.inner.lock().unwrap().max_in_flight
    }

    /// How many `POST /call` requests were answered.
    pub fn reads(&self) -> usize {
        self.inner.lock().unwrap().reads
    }

    /// POSTs a server message signed as Vapi's HMAC credential signs it (`x-signature`:
    /// hex HMAC-SHA256 of `{timestamp}.{body}`, `x-timestamp`), at Unix seconds `timestamp`.
    pub async fn emit_signed(
        &self,
        clarion: &str,
        hmac_secret: &str,
        timestamp: i64,
        message: &Value,
    ) -> (u16, Value) {
        use clarion_providers::vapi::signature::{HmacSecret, sign};
        let body = serde_json::to_vec(&json!({ "message": message })).unwrap();
        let timestamp = timestamp.to_string();
        let signature = sign(&HmacSecret::new(hmac_secret), &timestamp, &body);
        let response = self
            .http
            .post(format!("{clarion}/providers/vapi/events"))
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .header("x-timestamp", timestamp)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// POSTs a server message to Clarion's Vapi callback route with `secret`.
    pub async fn emit(&self, clarion: &str, secret: Option<&str>, message: &Value) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{clarion}/providers/vapi/events"))
            .json(&json!({ "message": message }));
        if let Some(secret) = secret {
            request = request.header("x-vapi-secret", secret);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }
}

/// A `status-update` server message for `call_id`.
pub fn status_update(call_id: &str, status: &str) -> Value {
    json!({
        "type": "status-update", "status": status, "timestamp": 1_736_175_605_000_i64,
        "call": { "id": call_id, "orgId": "org_1", "createdAt": "2025-01-06T15:00:00.000Z",
                  "updatedAt": "2025-01-06T15:00:05.000Z", "status": status },
    })
}

/// An `end-of-call-report` for `call_id`, shaped like the documented example.
pub fn end_of_call_report(call_id: &str, ended_reason: &str, structured: Value) -> Value {
    json!({
        "type": "end-of-call-report", "endedReason": ended_reason, "timestamp": 1_736_175_700_000_i64,
        "startedAt": "2025-01-06T15:00:05.000Z", "endedAt": "2025-01-06T15:01:35.000Z",
        "cost": 0.12, "costs": [ { "type": "vapi", "subType": "normal", "minutes": 1.5, "cost": 0.075 } ],
        "analysis": { "summary": "Patient confirmed the appointment.", "structuredData": structured,
                      "successEvaluation": "true" },
        "artifact": {
            "transcript": "AI: Hi Ana, this is Riverside Family Clinic calling about your appointment.\nUser: Hi, yes.\nAI: Can you make it on January 8?\nUser: Yes, I'll be there.\n",
            "recordingUrl": "https://example.invalid/rec.wav",
            "messages": [
                { "role": "bot", "message": "Hi Ana, this is Riverside Family Clinic calling about your appointment.", "time": 1_736_175_606_000_i64, "endTime": 1_736_175_610_000_i64, "secondsFromStart": 1.0 },
                { "role": "user", "message": "Hi, yes.", "time": 1_736_175_611_000_i64, "endTime": 1_736_175_612_000_i64, "secondsFromStart": 6.0 },
                { "role": "bot", "message": "Can you make it on January 8?", "time": 1_736_175_613_000_i64, "endTime": 1_736_175_616_000_i64, "secondsFromStart": 8.0 },
                { "role": "user", "message": "Yes, I'll be there.", "time": 1_736_175_615_000_i64, "endTime": 1_736_175_617_000_i64, "secondsFromStart": 10.0 }
            ]
        },
        "phoneNumber": { "number": "+15555550100" },
        "customer": { "number": "+15555550123" },
        "call": { "id": call_id, "orgId": "org_1", "createdAt": "2025-01-06T15:00:00.000Z",
                  "updatedAt": "2025-01-06T15:01:40.000Z", "type": "outboundPhoneCall",
                  "status": "ended", "endedReason": ended_reason, "assistantId": "asst_1" },
    })
}

async fn create_call(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({ "message": "Invalid API key", "error": "Unauthorized", "statusCode": 401 }),
            ),
        )
            .into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let hold = {
        let mut inner = inner.lock().unwrap();
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        inner.hold_until_in_flight
    };
    if let Some(n) = hold {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while inner.lock().unwrap().max_in_flight < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    let early = {
        let mut guard = inner.lock().unwrap();
        let reads = guard.reads_in_flight;
        guard.reads_in_flight_at_create.push(reads);
        guard.report_before_answer.clone()
    };
    if let Some((clarion, ended_reason, outcome)) = early
        && request["name"].is_string()
    {
        let id = {
            let mut guard = inner.lock().unwrap();
            let id = format!("call_{}", guard.calls.len() + 1);
            let call = new_call(&id, &request);
            guard.calls.push(call);
            id
        };
        let mut report = end_of_call_report(&id, ended_reason, json!({ "outcome": outcome }));
        report["call"]["name"] = request["name"].clone();
        report["call"]["customer"] = request["customer"].clone();
        finish(&mut inner.lock().unwrap(), &id, &report);
        let answer = reqwest::Client::new()
            .post(format!("{clarion}/providers/vapi/events"))
            .header("x-vapi-secret", SERVER_SECRET)
            .json(&json!({ "message": report }))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body = answer.json().await.unwrap_or(Value::Null);
        let mut guard = inner.lock().unwrap();
        guard.early_answers.push((status, body));
        guard.in_flight -= 1;
        guard.requests.push(request.clone());
        let call = guard
            .calls
            .iter()
            .find(|c| c["id"] == id.as_str())
            .cloned()
            .unwrap();
        return (StatusCode::CREATED, axum::Json(call)).into_response();
    }
    let mut inner = inner.lock().unwrap();
    inner.in_flight -= 1;
    inner.requests.push(request.clone());
    if request["assistantId"].as_str().is_none()
        || request["phoneNumberId"].as_str().is_none()
        || request["customer"]["number"].as_str().is_none()
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "message": ["customer.number must be a valid E.164 number"], "error": "Bad Request", "statusCode": 400 })),
        )
            .into_response();
    }
    match inner.answers.pop_front().unwrap_or(CallAnswer::Created) {
        CallAnswer::Error(status, retry_after) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({ "message": "scripted failure", "statusCode": status })),
            )
                .into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().unwrap());
            }
            response
        }
        CallAnswer::PlacedButError(status) => {
            let id = format!("call_{}", inner.calls.len() + 1);
            let call = new_call(&id, &request);
            inner.calls.push(call);
            (
                StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({ "message": "scripted failure", "statusCode": status })),
            )
                .into_response()
        }
        CallAnswer::Created => {
            let id = format!("call_{}", inner.calls.len() + 1);
            let mut call = new_call(&id, &request);
            if inner
                .slots
                .is_some_and(|slots| inner.active() + inner.inbound >= slots)
            {
                // Every slot is held: the call's record ends at once, never started.
                inner.refused += 1;
                call["status"] = json!("ended");
                call["endedReason"] = json!(CONCURRENCY_LIMIT_REACHED);
                inner.calls.push(call.clone());
                return (StatusCode::CREATED, axum::Json(call)).into_response();
            }
            inner.calls.push(call.clone());
            inner.max_active = inner.max_active.max(inner.active());
            (StatusCode::CREATED, axum::Json(call)).into_response()
        }
    }
}

/// Ends a created call as `report` describes.
fn finish(inner: &mut Inner, call_id: &str, report: &Value) {
    let call = inner.calls.iter_mut().find(|c| c["id"] == call_id).unwrap();
    call["status"] = json!("ended");
    for (from, to) in [
        ("endedReason", "endedReason"),
        ("startedAt", "startedAt"),
        ("endedAt", "endedAt"),
        ("analysis", "analysis"),
        ("artifact", "artifact"),
        ("phoneNumber", "phoneNumber"),
    ] {
        call[to] = report[from].clone();
    }
}

/// The `Call` Vapi creates for a `POST /call` request.
fn new_call(id: &str, request: &Value) -> Value {
    json!({
        "id": id, "orgId": "org_1", "createdAt": "2025-01-06T15:00:00.000Z",
        "updatedAt": "2025-01-06T15:00:00.000Z", "type": "outboundPhoneCall",
        "status": "queued", "assistantId": request["assistantId"],
        "phoneNumberId": request["phoneNumberId"], "customer": request["customer"],
        "name": request["name"], "phoneCallProvider": "twilio", "phoneCallTransport": "pstn",
    })
}

async fn get_call(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    inner.lock().unwrap().reads_in_flight += 1;
    // Counts the read out when it ends, also when the client gives up and the future drops.
    let _reading = ReadGuard(inner.clone());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while inner.lock().unwrap().hold_reads && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut inner = inner.lock().unwrap();
    inner.reads += 1;
    match inner.calls.iter().find(|c| c["id"] == id.as_str()) {
        Some(call) => axum::Json(call.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

struct ReadGuard(Arc<Mutex<Inner>>);

impl Drop for ReadGuard {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.0.lock() {
            inner.reads_in_flight -= 1;
        }
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {API_KEY}"))
}

async fn list_calls(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(Value::Array(inner.lock().unwrap().calls.clone())).into_response()
}

async fn get_phone_number(headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if id != PHONE_NUMBER_ID {
        return StatusCode::NOT_FOUND.into_response();
    }
    axum::Json(
        json!({ "id": id, "orgId": "org_1", "number": "+15555550100", "provider": "vapi",
        "createdAt": "2025-01-06T15:00:00.000Z", "updatedAt": "2025-01-06T15:00:00.000Z" }),
    )
    .into_response()
}
