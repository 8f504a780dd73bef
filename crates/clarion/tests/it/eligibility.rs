//! The pre-contact eligibility hook, end to end, against real hook receivers (HTTP servers on
//! port 0): its configuration through `PATCH /v1/organization`, the signed request it gets
//! before each contact, and what each answer does — eligible (contacted), not eligible
//! (the step skipped or the sequence ended, the reason in the events), no answer in time and
//! forged answers (not eligible by default, never a contact on a forged "yes") — through the
//! simulator and through Vapi's fake.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clarion_webhooks::{EligibilityAnswer, IneligibleAction, Secret, Verifier, WebhookHeaders};
use serde_json::{Value, json};

use crate::support::fake_vapi::{FakeVapi, SERVER_SECRET};
use crate::support::{
    Answer, AppOptions, TestApp, TestReceiver, schema_errors, spawn_app, spawn_app_with,
};

/// What the hook receiver answers.
#[derive(Debug, Clone)]
enum Reply {
    Eligible,
    NotEligible(IneligibleAction, &'static str),
    /// Never answers (the client's timeout ends the exchange).
    Hang,
    /// `{"eligible": true}`, signed with a secret that is not the hook's.
    OtherSecret,
    /// `{"eligible": true}` for the request's id, with no signature at all.
    Unsigned,
    /// `{"eligible": true}`, signed with the hook's secret but for another `webhook-id`.
    WrongId,
}

/// One request the hook got.
#[derive(Debug, Clone)]
struct Check {
    headers: HeaderMap,
    body: Bytes,
}

impl Check {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Debug)]
struct HookState {
    reply: Mutex<Reply>,
    secret: Mutex<Option<Secret>>,
    checks: Mutex<Vec<Check>>,
}

/// A hook receiver whose answer a test can change mid-test.
struct HookReceiver {
    url: String,
    state: Arc<HookState>,
}

impl HookReceiver {
    async fn start(reply: Reply) -> Self {
        let state = Arc::new(HookState {
            reply: Mutex::new(reply),
            secret: Mutex::new(None),
            checks: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/check", axum::routing::post(answer))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/check", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { url, state }
    }

    fn reply(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
    }

    /// The hook's secret, as the organisation's `PATCH` answered it.
    fn use_secret(&self, secret: &str) {
        *self.state.secret.lock().unwrap() = Some(secret.parse().unwrap());
    }

    fn checks(&self) -> Vec<Check> {
        self.state.checks.lock().unwrap().clone()
    }
}

fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

async fn answer(State(state): State<Arc<HookState>>, headers: HeaderMap, body: Bytes) -> Response {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    state.checks.lock().unwrap().push(Check { headers, body });
    let reply = state.reply.lock().unwrap().clone();
    let secret = state.secret.lock().unwrap().clone().unwrap();
    let now = unix_now();
    let signed = |answer: EligibilityAnswer, secret: &Secret, id: &str| {
        let (body, signature) = answer.signed(secret, id, now);
        (
            StatusCode::OK,
            [
                ("content-type", "application/json".to_owned()),
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", now.to_string()),
                ("webhook-signature", signature),
            ],
            body,
        )
            .into_response()
    };
    match reply {
        Reply::Eligible => signed(EligibilityAnswer::eligible(), &secret, &id),
        Reply::NotEligible(action, reason) => signed(
            EligibilityAnswer::not_eligible(reason, action),
            &secret,
            &id,
        ),
        Reply::Hang => std::future::pending().await,
        Reply::OtherSecret => {
            let other: Secret = "whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXk="
                .parse()
                .unwrap();
            signed(EligibilityAnswer::eligible(), &other, &id)
        }
        Reply::Unsigned => (
            StatusCode::OK,
            [
                ("content-type", "application/json".to_owned()),
                ("webhook-id", id),
                ("webhook-timestamp", now.to_string()),
            ],
            r#"{"eligible":true}"#,
        )
            .into_response(),
        Reply::WrongId => signed(EligibilityAnswer::eligible(), &secret, "chk_someoneelse"),
    }
}

struct Fixture {
    app: TestApp,
    key: String,
    hook: HookReceiver,
    /// Reports land here.
    receiver: TestReceiver,
    call_assistant: i64,
    sms_assistant: i64,
}

async fn fixture(reply: Reply) -> Fixture {
    let app = spawn_app().await;
    let (_, key) = app.org("Riverside Family Clinic").await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    app.endpoint(&key, &receiver.url).await;
    let mut ids = Vec::new();
    for channel in ["call", "sms"] {
        let (status, assistant) = app
            .post(&key, "/v1/assistants", json!({
                "name": format!("Reminder {channel}"), "channel": channel,
                "config": { "purpose": "confirm the upcoming appointment", "organisation_name": "Riverside Family Clinic" }
            }))
            .await;
        assert_eq!(status, 201, "{assistant}");
        ids.push(assistant["id"].as_i64().unwrap());
    }
    let hook = HookReceiver::start(reply).await;
    let f = Fixture {
        app,
        key,
        hook,
        receiver,
        call_assistant: ids[0],
        sms_assistant: ids[1],
    };
    f.set_hook(json!({ "url": f.hook.url, "timeout_ms": 2000 }))
        .await;
    f
}

impl Fixture {
    /// Sets the hook (`PATCH /v1/organization`); a secret in the answer goes to the receiver.
    async fn set_hook(&self, hook: Value) -> Value {
        let (status, org) = self
            .app
            .patch(
                &self.key,
                "/v1/organization",
                json!({ "eligibility_hook": hook }),
            )
            .await;
        assert_eq!(status, 200, "{org}");
        if let Some(secret) = org["eligibility_hook"]["secret"].as_str() {
            self.hook.use_secret(secret);
        }
        org
    }

    async fn template(&self, steps: Value) -> i64 {
        let (status, template) = self
            .app
            .post(&self.key, "/v1/sequence-templates", json!({
                "name": "Reminder", "calling_hours": null, "stop_on": ["resolved"], "steps": steps
            }))
            .await;
        assert_eq!(status, 201, "{template}");
        template["id"].as_i64().unwrap()
    }

    async fn enroll(&self, template: i64, phone: &str, outcomes: &[&str]) -> i64 {
        self.app
            .enroll(&self.key, json!({
                "template_id": template,
                "contact": { "phone_number": phone, "time_zone": "America/New_York", "name": "Alex Rivera", "external_id": "MRN-1" },
                "simulation": { "outcomes": outcomes },
            }))
            .await
    }

    /// Runs the engine and the dispatcher, an hour of the manual clock at a time, until the
    /// sequence has ended.
    async fn run_until_ended(&self, id: i64) -> Value {
        for _ in 0..24 * 7 {
            self.app.run_due().await;
            let sequence = self.app.sequence(&self.key, id).await;
            if sequence["status"] == "ended" {
                return sequence;
            }
            self.app.clock.advance(std::time::Duration::from_secs(3600));
        }
        panic!("sequence {id} did not end within a simulated week");
    }

    async fn events(&self, id: i64) -> Vec<Value> {
        self.app.events(&self.key, id).await
    }

    /// The sequence's `skipped` history entries' details.
    async fn skips(&self, id: i64) -> Vec<Value> {
        self.events(id)
            .await
            .into_iter()
            .filter(|e| e["type"] == "skipped")
            .map(|e| e["detail"].clone())
            .collect()
    }

    /// The delivered report of sequence `id` (its bytes as the receiver got them).
    fn delivered(&self, id: i64) -> (Value, String) {
        let received = self.receiver.received();
        let request = received
            .iter()
            .find(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["id"] == id)
            .unwrap_or_else(|| panic!("no report for sequence {id} reached the receiver"));
        (
            serde_json::from_slice(&request.body).unwrap(),
            String::from_utf8(request.body.to_vec()).unwrap(),
        )
    }
}

#[tokio::test]
async fn an_eligible_answer_lets_the_call_go_ahead_and_the_request_is_signed_and_names_no_phone_number()
 {
    let f = fixture(Reply::Eligible).await;
    let template = f
        .template(json!([{ "type": "call", "assistant_id": f.call_assistant }]))
        .await;
    let id = f.enroll(template, "+15555550161", &["resolved"]).await;
    let report = f.run_until_ended(id).await;
    assert_eq!(report["outreach"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["outreach"][0]["call"]["outcome"], "resolved");

    let checks = f.hook.checks();
    assert_eq!(checks.len(), 1);
    let check = &checks[0];
    // Signed Standard Webhooks style with the hook's secret, typed by its header.
    let secret: Secret = f.hook.state.secret.lock().unwrap().clone().unwrap();
    let headers = WebhookHeaders::from_lookup(|name| check.headers.get(name)?.to_str().ok());
    Verifier::new(secret).verify(&headers, &check.body).unwrap();
    assert!(check.header("webhook-id").starts_with("chk_"));
    assert_eq!(check.header("clarion-event-type"), "encounter.eligibility");
    assert_eq!(check.header("content-type"), "application/json");
    assert_eq!(
        check.json(),
        json!({ "type": "encounter.eligibility", "sequence_id": id, "external_id": "MRN-1",
                "step": 1, "attempt": 1, "channel": "call" })
    );
    let body = String::from_utf8(check.body.to_vec()).unwrap();
    assert!(
        !body.contains("5555550161") && !body.contains("Alex"),
        "{body}"
    );
}

#[tokio::test]
async fn a_not_eligible_answer_skips_the_step_and_the_next_step_runs_with_the_reason_in_the_events()
{
    let f = fixture(Reply::NotEligible(
        IneligibleAction::SkipStep,
        "  appointment confirmed in the EHR  ",
    ))
    .await;
    let template = f
        .template(json!([
            { "type": "call", "assistant_id": f.call_assistant, "max_attempts": 2 },
            { "type": "sms", "assistant_id": f.sms_assistant, "delay": "2h" },
        ]))
        .await;
    let id = f.enroll(template, "+15555550162", &["resolved"]).await;
    f.app.run_due().await;
    // The call was not made; the text is due two hours after the skip.
    let sequence = f.app.sequence(&f.key, id).await;
    assert_eq!(sequence["status"], "active");
    assert_eq!(sequence["outreach"], json!([]), "{sequence}");
    let skips = f.skips(id).await;
    assert_eq!(
        skips,
        [
            json!({ "type": "skipped", "step": 0, "attempt": 1, "reason": "ineligible",
                 "action": "skip-step", "hook_reason": "appointment confirmed in the EHR" })
        ]
    );
    let scheduled = f
        .events(id)
        .await
        .into_iter()
        .rfind(|e| e["type"] == "step-scheduled")
        .unwrap();
    assert_eq!(scheduled["detail"]["step"], 1);

    f.hook.reply(Reply::Eligible);
    let report = f.run_until_ended(id).await;
    let steps: Vec<(i64, &str)> = report["outreach"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_i64().unwrap(), s["type"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [(2, "sms")]);
    let checks: Vec<Value> = f.hook.checks().iter().map(Check::json).collect();
    assert_eq!(checks.len(), 2);
    assert_eq!(
        (checks[1]["step"].clone(), checks[1]["channel"].clone()),
        (json!(2), json!("sms"))
    );
    // The hook's words stay in the events: never in the report.
    f.app.run_due().await;
    let (delivered, bytes) = f.delivered(id);
    assert_eq!(schema_errors(&delivered), Vec::<String>::new());
    assert!(!bytes.contains("EHR"), "{bytes}");
}

#[tokio::test]
async fn an_end_sequence_answer_ends_the_sequence_and_its_report_is_delivered() {
    let f = fixture(Reply::NotEligible(
        IneligibleAction::EndSequence,
        "deceased",
    ))
    .await;
    let template = f
        .template(json!([
            { "type": "call", "assistant_id": f.call_assistant },
            { "type": "sms", "assistant_id": f.sms_assistant, "delay": "1h" },
        ]))
        .await;
    let id = f.enroll(template, "+15555550163", &["resolved"]).await;
    f.app.run_due().await;
    let sequence = f.app.sequence(&f.key, id).await;
    assert_eq!(sequence["status"], "ended");
    let (report, bytes) = f.delivered(id);
    assert_eq!(schema_errors(&report), Vec::<String>::new());
    assert_eq!(report["outreach"], json!([]));
    let description = report["outcome_description"].as_str().unwrap();
    assert!(
        description.contains("eligibility check") && description.contains("step 1"),
        "{description}"
    );
    assert!(!bytes.contains("deceased"));
    assert_eq!(
        f.skips(id).await,
        [
            json!({ "type": "skipped", "step": 0, "attempt": 1, "reason": "ineligible",
                 "action": "end-sequence", "hook_reason": "deceased" })
        ]
    );
    assert_eq!(
        f.hook.checks().len(),
        1,
        "the text step is never asked about"
    );
}

#[tokio::test]
async fn a_hook_that_does_not_answer_in_time_means_not_eligible_unless_the_organisation_says_otherwise()
 {
    let f = fixture(Reply::Hang).await;
    f.set_hook(json!({ "url": f.hook.url, "timeout_ms": 200 }))
        .await;
    let template = f
        .template(json!([{ "type": "call", "assistant_id": f.call_assistant }]))
        .await;
    let id = f.enroll(template, "+15555550164", &["resolved"]).await;
    let ended = f.run_until_ended(id).await;
    assert_eq!(ended["outreach"], json!([]), "nobody was called: {ended}");
    assert_eq!(
        f.skips(id).await,
        [
            json!({ "type": "skipped", "step": 0, "attempt": 1, "reason": "ineligible",
                 "action": "skip-step", "hook_reason": "hook-error: timeout" })
        ]
    );

    let org = f
        .set_hook(json!({ "url": f.hook.url, "timeout_ms": 200, "on_error": "eligible" }))
        .await;
    assert_eq!(org["eligibility_hook"]["on_error"], "eligible");
    let second = f.enroll(template, "+15555550165", &["resolved"]).await;
    let report = f.run_until_ended(second).await;
    assert_eq!(
        report["outreach"][0]["call"]["outcome"], "resolved",
        "{report}"
    );
    assert!(f.skips(second).await.is_empty());
    assert_eq!(f.hook.checks().len(), 2);
}

#[tokio::test]
async fn forged_answers_never_make_a_patient_eligible() {
    let f = fixture(Reply::Eligible).await;
    let template = f
        .template(json!([{ "type": "call", "assistant_id": f.call_assistant }]))
        .await;
    for (n, (reply, why)) in [
        (Reply::OtherSecret, "hook-error: bad-signature"),
        (Reply::Unsigned, "hook-error: bad-signature"),
        (Reply::WrongId, "hook-error: wrong-id"),
    ]
    .into_iter()
    .enumerate()
    {
        f.hook.reply(reply.clone());
        let id = f
            .enroll(template, &format!("+1555555017{n}"), &["resolved"])
            .await;
        let ended = f.run_until_ended(id).await;
        assert_eq!(ended["outreach"], json!([]), "{reply:?} made a contact");
        assert_eq!(f.skips(id).await[0]["hook_reason"], why, "{reply:?}");
    }
    assert_eq!(f.hook.checks().len(), 3);
}

/// Several first settings of the hook at once: one secret is kept, and only the answer
/// that set it shows it; the others, told nothing, never hold a secret that signs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_racing_first_hook_settings_only_the_one_whose_secret_is_kept_shows_it() {
    let f = fixture(Reply::Eligible).await;
    let (org, key) = f.app.org("Racing clinic").await;
    let answers = futures::future::join_all((0..8).map(|_| {
        f.app.patch(
            &key,
            "/v1/organization",
            json!({ "eligibility_hook": { "url": f.hook.url } }),
        )
    }))
    .await;
    let shown: Vec<&str> = answers
        .iter()
        .filter_map(|(status, answer)| {
            assert_eq!(*status, 200, "{answer}");
            answer["eligibility_hook"]["secret"].as_str()
        })
        .collect();
    assert_eq!(shown.len(), 1, "one answer shows a secret: {shown:?}");
    let stored = f.app.store.eligibility_hook(org).await.unwrap().unwrap();
    assert_eq!(stored.secret.as_deref(), Some(shown[0]));
}

#[tokio::test]
async fn the_hook_is_configured_validated_shown_without_its_secret_rotated_and_removed() {
    let f = fixture(Reply::Eligible).await;
    let (status, org) = f.app.get(&f.key, "/v1/organization").await;
    assert_eq!(status, 200);
    assert_eq!(
        org["eligibility_hook"],
        json!({ "url": f.hook.url, "timeout_ms": 2000, "on_error": "not-eligible" })
    );
    let first = f.hook.state.secret.lock().unwrap().clone().unwrap();

    // Changing the settings keeps the secret and does not show it again.
    let changed = f
        .set_hook(json!({ "url": f.hook.url, "timeout_ms": 500 }))
        .await;
    assert_eq!(changed["eligibility_hook"]["timeout_ms"], 500);
    assert!(changed["eligibility_hook"].get("secret").is_none());
    // A rotation shows the new one once.
    let rotated = f
        .set_hook(json!({ "url": f.hook.url, "rotate_secret": true }))
        .await;
    let new = rotated["eligibility_hook"]["secret"].as_str().unwrap();
    assert!(new.starts_with("whsec_"));
    assert_ne!(new.parse::<Secret>().unwrap(), first);
    assert_eq!(rotated["eligibility_hook"]["timeout_ms"], 3000);

    for (hook, field) in [
        (
            json!({ "url": "ftp://hook.example/" }),
            "eligibility_hook.url",
        ),
        (json!({ "url": "not a url" }), "eligibility_hook.url"),
        (
            json!({ "url": f.hook.url, "timeout_ms": 99 }),
            "eligibility_hook.timeout_ms",
        ),
        (
            json!({ "url": f.hook.url, "timeout_ms": 10001 }),
            "eligibility_hook.timeout_ms",
        ),
        (
            json!({ "url": f.hook.url, "on_error": "maybe" }),
            "eligibility_hook.on_error",
        ),
        (json!({ "timeout_ms": 300 }), "eligibility_hook"),
    ] {
        let (status, error) = f
            .app
            .patch(
                &f.key,
                "/v1/organization",
                json!({ "eligibility_hook": hook }),
            )
            .await;
        assert_eq!(status, 422, "{hook}: {error}");
        assert!(
            error["error"]["field"].as_str().unwrap().starts_with(field),
            "{hook}: {error}"
        );
        assert!(!error.to_string().contains("whsec_"));
    }

    let (status, removed) = f
        .app
        .patch(
            &f.key,
            "/v1/organization",
            json!({ "eligibility_hook": null }),
        )
        .await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["eligibility_hook"], Value::Null);
    // Without a hook nobody is asked.
    let template = f
        .template(json!([{ "type": "call", "assistant_id": f.call_assistant }]))
        .await;
    let id = f.enroll(template, "+15555550180", &["resolved"]).await;
    let report = f.run_until_ended(id).await;
    assert_eq!(report["outreach"].as_array().unwrap().len(), 1);
    assert!(f.hook.checks().is_empty());

    // Another organisation sees none of it.
    let (_, other) = f.app.org("Lakeside").await;
    let (_, theirs) = f.app.get(&other, "/v1/organization").await;
    assert_eq!(theirs["eligibility_hook"], Value::Null);
}

#[tokio::test]
async fn a_vapi_call_the_hook_refuses_is_never_placed_and_one_it_allows_is() {
    let vapi = FakeVapi::start().await;
    let app = spawn_app_with(AppOptions {
        vapi: Some((vapi.settings(), SERVER_SECRET.to_owned())),
        ..AppOptions::default()
    })
    .await;
    let (org, key) = app.org("Riverside Family Clinic").await;
    app.allow_vapi_assistant(org, "asst_1").await;
    let hook = HookReceiver::start(Reply::NotEligible(
        IneligibleAction::SkipStep,
        "already seen",
    ))
    .await;
    let (status, answer) = app
        .patch(
            &key,
            "/v1/organization",
            json!({ "eligibility_hook": { "url": hook.url } }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    hook.use_secret(answer["eligibility_hook"]["secret"].as_str().unwrap());
    let (status, assistant) = app
        .post(&key, "/v1/assistants", json!({
            "name": "Reminder caller", "channel": "call", "config": { "vapi_assistant_id": "asst_1" }
        }))
        .await;
    assert_eq!(status, 201, "{assistant}");
    let (status, template) = app
        .post(
            &key,
            "/v1/sequence-templates",
            json!({
                "name": "One call", "calling_hours": null, "stop_on": ["resolved"],
                "steps": [ { "type": "call", "assistant_id": assistant["id"] } ]
            }),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    let enroll = |phone: &'static str| {
        let app = &app;
        let key = &key;
        let template = template["id"].clone();
        async move {
            app.enroll(key, json!({
                "template_id": template,
                "contact": { "phone_number": phone, "time_zone": "America/New_York", "external_id": "MRN-7" },
            }))
            .await
        }
    };

    let refused = enroll("+15555550190").await;
    app.run_due().await;
    assert!(vapi.calls().is_empty(), "a refused call was placed");
    assert_eq!(app.sequence(&key, refused).await["status"], "ended");
    let checks = hook.checks();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].json()["external_id"], "MRN-7");
    assert!(
        !String::from_utf8(checks[0].body.to_vec())
            .unwrap()
            .contains("5555550190")
    );

    hook.reply(Reply::Eligible);
    let allowed = enroll("+15555550191").await;
    app.run_due().await;
    assert_eq!(vapi.calls().len(), 1, "the allowed call was placed once");
    assert_eq!(app.sequence(&key, allowed).await["status"], "active");
    assert_eq!(hook.checks().len(), 2);
}
