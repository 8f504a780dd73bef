//! Calls through Vapi, end to end, against the local fake of Vapi's API: the call request
//! Clarion sends, the callbacks Vapi sends back (authenticated by the server secret,
//! idempotent, in any order), the report built from them, and what happens when Vapi does
//! not place the call.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::support;

use crate::support::fake_vapi::{
    CallAnswer, FakeVapi, HMAC_SECRET, SERVER_SECRET, end_of_call_report, status_update,
};
use crate::support::{
    Answer, AppOptions, TestApp, TestReceiver, allow_vapi_assistant_with_cli, schema_errors,
    spawn_app_with,
};
use clarion_delivery::Clock as _;
use serde_json::{Value, json};

pub(crate) struct Fixture {
    pub(crate) app: TestApp,
    pub(crate) vapi: FakeVapi,
    pub(crate) key: String,
    receiver: TestReceiver,
    template: i64,
    pub(crate) org: clarion_store::OrgId,
}

pub(crate) async fn fixture() -> Fixture {
    fixture_with_hmac(None).await
}

/// The fixture, with Vapi's HMAC credential required on callbacks when `hmac_secret` is set.
async fn fixture_with_hmac(hmac_secret: Option<&str>) -> Fixture {
    let vapi = FakeVapi::start().await;
    let app = spawn_app_with(AppOptions {
        vapi: Some((vapi.settings(), SERVER_SECRET.to_owned())),
        vapi_hmac_secret: hmac_secret.map(str::to_owned),
        ..AppOptions::default()
    })
    .await;
    let (org, key) = app.org("Riverside Family Clinic").await;
    // The operator lets this organisation use the fake's Vapi assistant (issue 17 defect 6).
    app.allow_vapi_assistant(org, "asst_1").await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    app.endpoint(&key, &receiver.url).await;
    let (status, assistant) = app
        .post(&key, "/v1/assistants", json!({
            "name": "Reminder caller", "channel": "call",
            "config": { "vapi_assistant_id": "asst_1", "voicemail_message": "Please call Riverside Family Clinic back." },
            "custom_fields": [ { "name": "confirmed", "type": "boolean" } ]
        }))
        .await;
    assert_eq!(status, 201, "{assistant}");
    let (status, template) = app
        .post(
            &key,
            "/v1/sequence-templates",
            json!({
                "name": "One call", "calling_hours": null, "stop_on": ["resolved"],
                "steps": [ { "type": "call", "assistant_id": assistant["id"], "max_attempts": 1 } ]
            }),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    Fixture {
        app,
        vapi,
        key,
        receiver,
        template: template["id"].as_i64().unwrap(),
        org,
    }
}

impl Fixture {
    pub(crate) async fn enroll(&self, phone: &str) -> i64 {
        self.app
            .enroll(&self.key, json!({
                "template_id": self.template,
                "contact": { "phone_number": phone, "time_zone": "America/New_York", "name": "Ana Lopez" },
                "variables": { "patientFirstName": "Ana", "appointment_date": "January 8" },
            }))
            .await
    }

    /// The internal id behind a public id the API or the report shows.
    fn internal(&self, kind: clarion_store::IdKind, public: &Value) -> i64 {
        self.app
            .store
            .public_ids(self.org)
            .decode(kind, public.as_i64().unwrap())
            .unwrap()
    }

    /// The name Clarion gives Vapi for the call of a report's call object: it carries the
    /// internal encounter id (Vapi is not a tenant), the report the public one.
    fn call_name(&self, call_id: &Value) -> String {
        format!(
            "clarion-encounter-{}",
            self.internal(clarion_store::IdKind::Encounter, call_id)
        )
    }

    pub(crate) async fn sequence(&self, id: i64) -> Value {
        self.app.sequence(&self.key, id).await
    }

    pub(crate) async fn emit(&self, message: &Value) -> (u16, Value) {
        self.vapi
            .emit(&self.app.base, Some(SERVER_SECRET), message)
            .await
    }

    /// Enrolls `phone`, places its call, and lets half an hour pass without a report: Clarion
    /// has read the call back once and found it still running. Answers the sequence id.
    async fn call_read_back_once_while_running(&self, phone: &str) -> i64 {
        let id = self.enroll(phone).await;
        self.run().await;
        assert_eq!(self.vapi.calls().len(), 1);
        self.app
            .clock
            .advance(std::time::Duration::from_secs(31 * 60));
        self.run().await;
        assert_eq!(self.vapi.reads(), 1);
        assert_eq!(self.sequence(id).await["status"], "active");
        id
    }

    pub(crate) async fn run(&self) {
        self.app.run_due().await;
    }
}

#[tokio::test]
async fn a_call_through_vapi_is_placed_followed_and_reported_from_its_callbacks() {
    let f = fixture().await;
    let id = f.enroll("+15555550123").await;
    f.run().await;

    // The request Vapi received: the assistant, the number, the contact's variables, and
    // Clarion's encounter in the call's name.
    let requests = f.vapi.requests();
    assert_eq!(requests.len(), 1, "one call placed");
    let request = &requests[0];
    assert_eq!(request["assistantId"], "asst_1");
    assert_eq!(request["phoneNumberId"], "pn_1");
    assert_eq!(request["customer"]["number"], "+15555550123");
    assert_eq!(
        request["assistantOverrides"]["variableValues"]["patientFirstName"],
        "Ana"
    );
    let sequence = f.sequence(id).await;
    let call = &sequence["outreach"][0]["call"];
    assert_eq!(request["name"], f.call_name(&call["id"]), "{sequence}");
    assert_eq!(
        call["call_status"], "queued",
        "the status Vapi gave the new call"
    );

    // Status updates move the call forward, never back.
    let (status, body) = f.emit(&status_update("call_1", "ringing")).await;
    assert_eq!((status, body["applied"].as_bool()), (200, Some(true)));
    let (_, body) = f.emit(&status_update("call_1", "queued")).await;
    assert_eq!(
        body["applied"], false,
        "an older status arriving late is ignored"
    );
    assert_eq!(
        f.sequence(id).await["outreach"][0]["call"]["call_status"],
        "ringing"
    );

    // The end-of-call report ends the encounter; the sequence stops on `resolved`.
    let report = end_of_call_report(
        "call_1",
        "customer-ended-call",
        json!({ "confirmed": true, "outcome": "resolved", "notes": "not a custom field" }),
    );
    let (status, body) = f.emit(&report).await;
    assert_eq!((status, body["applied"].as_bool()), (200, Some(true)));
    f.run().await;
    let ended = f.sequence(id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    let delivered: Vec<Value> = f
        .receiver
        .received()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(delivered.len(), 1);
    let report_body = &delivered[0];
    assert_eq!(schema_errors(report_body), Vec::<String>::new());
    assert_eq!(report_body, &ended, "the API answers the delivered body");
    let call = &report_body["outreach"][0]["call"];
    assert_eq!(call["call_status"], "ended");
    assert_eq!(call["ended_reason"], "customer-ended");
    assert_eq!(call["outcome"], "resolved");
    assert_eq!(call["failure_reason"], Value::Null);
    assert_eq!(call["duration_ms"], 90_000);
    assert_eq!(call["source_number"], "+15555550100");
    assert_eq!(call["destination_number"], "+15555550123");
    assert_eq!(call["summary"], "Patient confirmed the appointment.");
    assert!(
        call["transcript"]
            .as_str()
            .unwrap()
            .starts_with("AI: Hi Ana")
    );
    assert_eq!(
        call["analysis"],
        json!({ "repetition_count": 0, "interruption_count": 1, "custom": { "confirmed": true } }),
        "the second answer began before the question ended; only custom fields are kept"
    );

    // The same report again (Vapi's retry, a replay) changes nothing.
    let (status, body) = f.emit(&report).await;
    assert_eq!((status, body["applied"].as_bool()), (200, Some(false)));
    f.run().await;
    assert_eq!(f.receiver.received().len(), 1, "no second report");
    assert_eq!(f.sequence(id).await, ended);
}

#[tokio::test]
async fn forged_callbacks_are_rejected_and_change_nothing() {
    let f = fixture().await;
    let id = f.enroll("+15555550124").await;
    f.run().await;
    let before = f.sequence(id).await;
    let report = end_of_call_report(
        "call_1",
        "customer-ended-call",
        json!({ "outcome": "resolved" }),
    );
    for secret in [
        None,
        Some("wrong-secret"),
        Some("vapi-server-secret-for-test"),
    ] {
        let (status, body) = f.vapi.emit(&f.app.base, secret, &report).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, _) = f
        .vapi
        .emit(
            &f.app.base,
            Some("wrong"),
            &status_update("call_1", "ringing"),
        )
        .await;
    assert_eq!(status, 401);
    f.run().await;
    assert_eq!(f.sequence(id).await, before, "nothing moved");
    assert!(f.receiver.received().is_empty());

    // Vapi's Bearer credential form is accepted too; a malformed body is a 400.
    let response = reqwest::Client::new()
        .post(format!("{}/providers/vapi/events", f.app.base))
        .bearer_auth(SERVER_SECRET)
        .json(&json!({ "message": status_update("call_1", "in-progress") }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = reqwest::Client::new()
        .post(format!("{}/providers/vapi/events", f.app.base))
        .header("x-vapi-secret", SERVER_SECRET)
        .body("{\"message\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_payload");
}

#[tokio::test]
async fn with_the_hmac_credential_only_fresh_correctly_signed_callbacks_are_accepted() {
    let f = fixture_with_hmac(Some(HMAC_SECRET)).await;
    let id = f.enroll("+15555550125").await;
    f.run().await;
    let before = f.sequence(id).await;
    let report = end_of_call_report(
        "call_1",
        "customer-ended-call",
        json!({ "outcome": "resolved" }),
    );
    let now = f.app.clock.now_millis() / 1000;

    // The static secret that anyone who saw one callback knows is no longer enough; nor is a
    // signature under another key, or a correct one older (or newer) than five minutes.
    let (status, body) = f.vapi.emit(&f.app.base, Some(SERVER_SECRET), &report).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    for (secret, timestamp) in [
        ("another-secret", now),
        (HMAC_SECRET, now - 6 * 60),
        (HMAC_SECRET, now + 6 * 60),
    ] {
        let (status, body) = f
            .vapi
            .emit_signed(&f.app.base, secret, timestamp, &report)
            .await;
        assert_eq!(status, 401, "{secret} at {timestamp}: {body}");
    }
    f.run().await;
    assert_eq!(f.sequence(id).await, before, "nothing moved");
    assert!(f.receiver.received().is_empty());

    // Signed with the credential, a moment ago: accepted, and the sequence ends.
    let (status, body) = f
        .vapi
        .emit_signed(&f.app.base, HMAC_SECRET, now - 30, &report)
        .await;
    assert_eq!((status, &body["applied"]), (200, &json!(true)), "{body}");
    f.run().await;
    assert_eq!(f.sequence(id).await["status"], "ended");
}

#[tokio::test]
async fn a_call_vapi_declined_with_429_is_placed_on_a_later_try() {
    let f = fixture().await;
    f.vapi.answer_next(&[CallAnswer::Error(429, Some(0))]);
    let id = f.enroll("+15555550125").await;
    f.run().await;
    assert_eq!(
        f.vapi.requests().len(),
        2,
        "429 proves the call was not placed: tried again"
    );
    assert_eq!(f.vapi.calls().len(), 1, "one call placed");
    let sequence = f.sequence(id).await;
    assert_eq!(sequence["status"], "active");
    assert_eq!(sequence["outreach"][0]["call"]["call_status"], "queued");
}

#[tokio::test]
async fn the_calls_of_one_batch_are_placed_several_at_a_time_and_each_once() {
    let f = fixture().await;
    f.vapi.hold_calls_until_in_flight(4);
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(f.enroll(&format!("+1555555014{i}")).await);
    }
    f.run().await;
    assert!(
        f.vapi.max_in_flight() >= 4,
        "calls placed one at a time: at most {} in flight",
        f.vapi.max_in_flight()
    );
    let mut numbers: Vec<String> = f
        .vapi
        .calls()
        .iter()
        .map(|call| call["customer"]["number"].as_str().unwrap().to_owned())
        .collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 6, "each contact called exactly once");
    assert_eq!(f.vapi.requests().len(), 6);
    for id in ids {
        let sequence = f.sequence(id).await;
        assert_eq!(
            sequence["outreach"][0]["call"]["call_status"], "queued",
            "every placed call is recorded: {sequence}"
        );
    }
}

#[tokio::test]
async fn a_refused_call_fails_at_once_and_is_never_retried() {
    let f = fixture().await;
    f.vapi.answer_next(&[CallAnswer::Error(400, None)]);
    let id = f.enroll("+15555550127").await;
    f.run().await;
    assert_eq!(
        f.vapi.requests().len(),
        1,
        "exactly one request, never a second"
    );
    let ended = f.sequence(id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    let call = &ended["outreach"][0]["call"];
    assert_eq!(call["outcome"], "failed");
    assert_eq!(call["ended_reason"], "failed");
    assert!(
        call["summary"]
            .as_str()
            .unwrap()
            .starts_with("The call could not be placed"),
        "{call}"
    );
    assert_eq!(schema_errors(&ended), Vec::<String>::new());
    assert!(f.vapi.calls().is_empty());
}

#[tokio::test]
async fn a_call_whose_placement_is_unknown_waits_for_its_report_and_is_never_placed_again() {
    let f = fixture().await;
    // A 500, though Vapi did place the call. Its report is matched by the call's name,
    // once Vapi confirms that call is the encounter's.
    f.vapi.answer_next(&[CallAnswer::PlacedButError(500)]);
    let reported = f.enroll("+15555550126").await;
    f.run().await;
    assert_eq!(f.vapi.requests().len(), 1);
    assert_eq!(f.sequence(reported).await["status"], "active");
    let encounter = f.sequence(reported).await["outreach"][0]["call"]["id"].clone();
    let mut report = end_of_call_report(
        "call_1",
        "customer-ended-call",
        json!({ "outcome": "resolved" }),
    );
    report["call"]["name"] = json!(f.call_name(&encounter));
    f.vapi.finish_call("call_1", &report);
    let (status, body) = f.emit(&report).await;
    assert_eq!(
        (status, body["applied"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    f.run().await;
    let ended = f.sequence(reported).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    assert_eq!(ended["outreach"][0]["call"]["outcome"], "resolved");

    // Another 500, the call really not placed, and no report: after the report timeout the
    // calls placed from Clarion's number are listed, it is not among them, and it ends
    // failed as not placed.
    f.vapi.answer_next(&[CallAnswer::Error(500, None)]);
    let silent = f.enroll("+15555550129").await;
    f.run().await;
    f.app.clock.advance(std::time::Duration::from_secs(31 * 60));
    f.run().await;
    assert_eq!(f.vapi.requests().len(), 2, "never placed again");
    let ended = f.sequence(silent).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    let call = &ended["outreach"][0]["call"];
    assert_eq!(call["outcome"], "failed");
    assert!(
        call["summary"]
            .as_str()
            .unwrap()
            .starts_with("The provider's answer did not say whether the call was placed, and the provider has no record of it"),
        "{call}"
    );
    assert_eq!(schema_errors(&ended), Vec::<String>::new());
}

#[tokio::test]
async fn a_lost_end_of_call_report_is_recovered_by_reading_the_call_back() {
    let f = fixture().await;
    let id = f.call_read_back_once_while_running("+15555550128").await;

    // The call ends but its report is lost on the way; the next read-back applies it.
    let report = end_of_call_report("call_1", "voicemail", json!({}));
    f.vapi.finish_call("call_1", &report);
    f.run().await;
    assert_eq!(
        f.vapi.reads(),
        1,
        "not read again before the next check is due"
    );
    f.app.clock.advance(std::time::Duration::from_secs(31 * 60));
    f.run().await;
    assert_eq!(f.vapi.reads(), 2);
    let ended = f.sequence(id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    let call = &ended["outreach"][0]["call"];
    assert_eq!(call["outcome"], "voicemail");
    assert_eq!(call["ended_reason"], "voicemail");
    assert_eq!(
        call["voicemail_message"],
        "Please call Riverside Family Clinic back."
    );
    assert_eq!(schema_errors(&ended), Vec::<String>::new());

    // The report arriving after all changes nothing.
    let (_, body) = f.emit(&report).await;
    assert_eq!(body["applied"], false);
    assert_eq!(
        f.vapi.requests().len(),
        1,
        "the call was never placed twice"
    );
}

#[tokio::test]
async fn a_call_never_reported_nor_readable_ends_failed_after_a_day_and_is_not_placed_again() {
    let f = fixture().await;
    // Its report never comes and Vapi keeps answering that the call is queued.
    let id = f.call_read_back_once_while_running("+15555550129").await;
    f.app
        .clock
        .advance(std::time::Duration::from_secs(22 * 3600));
    f.run().await;
    assert_eq!(
        f.sequence(id).await["status"],
        "active",
        "still within the day"
    );

    // A day after it was placed, Clarion stops waiting: the sequence goes on (here it ends).
    f.app
        .clock
        .advance(std::time::Duration::from_secs(2 * 3600));
    f.run().await;
    let ended = f.sequence(id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    let call = &ended["outreach"][0]["call"];
    assert_eq!(call["outcome"], "failed");
    assert_eq!(call["call_status"], "ended");
    assert!(
        call["summary"].as_str().unwrap().contains("never reported"),
        "{call}"
    );
    assert_eq!(schema_errors(&ended), Vec::<String>::new());
    assert_eq!(
        f.vapi.requests().len(),
        1,
        "the call was never placed twice"
    );
    let received = f.receiver.wait_for(1).await;
    let delivered: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(delivered, ended, "its report is delivered");
}

#[tokio::test]
async fn clarion_doctor_checks_the_vapi_credentials_without_placing_a_call() {
    let vapi = FakeVapi::start().await;
    let config = format!(
        "[channels]\ncall = \"vapi\"\n[vapi]\nbase_url = \"{}\"\n",
        vapi.url
    );
    let doctor = |api_key: &'static str, phone_number_id: &'static str| {
        let config = config.clone();
        async move {
            support::run_doctor(
                &config,
                &[
                    ("CLARION_VAPI__API_KEY", api_key),
                    ("CLARION_VAPI__PHONE_NUMBER_ID", phone_number_id),
                    ("CLARION_VAPI__SERVER_SECRET", SERVER_SECRET),
                ],
            )
            .await
        }
    };
    let (code, out) = doctor(support::fake_vapi::API_KEY, "pn_1").await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Vapi accepts the API key"), "{out}");
    assert!(out.contains("the phone number id exists"), "{out}");

    let (code, out) = doctor("a-wrong-key", "pn_1").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL Vapi rejects the API key"), "{out}");
    assert!(
        !out.contains("a-wrong-key"),
        "credentials are never printed"
    );

    let (code, out) = doctor(support::fake_vapi::API_KEY, "pn_404").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL Vapi has no phone number"), "{out}");
    assert!(vapi.requests().is_empty(), "no call was placed");
}

// ---------------------------------------------------------------------------------------------
// Contact safety: nothing reaches a patient unless, just before the request, it still may.
// ---------------------------------------------------------------------------------------------

impl Fixture {
    /// A template of one call with calling hours 08:00-21:00 in the contact's zone.
    async fn template_with_calling_hours(&self) -> i64 {
        let assistant = self.sequence_template_assistant().await;
        let (status, template) = self
            .app
            .post(
                &self.key,
                "/v1/sequence-templates",
                json!({
                    "name": "One call in hours", "stop_on": ["resolved"],
                    "calling_hours": { "start": "08:00", "end": "21:00" },
                    "steps": [ { "type": "call", "assistant_id": assistant, "max_attempts": 1 } ]
                }),
            )
            .await;
        assert_eq!(status, 201, "{template}");
        template["id"].as_i64().unwrap()
    }

    /// The assistant of the fixture's template.
    async fn sequence_template_assistant(&self) -> i64 {
        let (status, template) = self
            .app
            .get(
                &self.key,
                &format!("/v1/sequence-templates/{}", self.template),
            )
            .await;
        assert_eq!(status, 200, "{template}");
        template["steps"][0]["assistant_id"].as_i64().unwrap()
    }

    async fn suppressed(&self, phone: &str) -> bool {
        self.app
            .suppression_reason(&self.key, phone)
            .await
            .is_some()
    }

    async fn events(&self, id: i64) -> Vec<Value> {
        self.app.events(&self.key, id).await
    }
}

fn opt_out_report(call_id: &str) -> Value {
    end_of_call_report(
        call_id,
        "customer-ended-call",
        json!({ "outcome": "opt-out" }),
    )
}

#[tokio::test]
async fn an_opt_out_reported_after_a_cancel_suppresses_the_number_and_it_is_not_called_again() {
    let f = fixture().await;
    let id = f.enroll("+15555550150").await;
    f.run().await;
    assert_eq!(f.vapi.calls().len(), 1);

    // The organisation cancels while the call is in progress; the patient opts out on it.
    let (status, cancelled) = f
        .app
        .post(&f.key, &format!("/v1/sequences/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let (status, body) = f.emit(&opt_out_report("call_1")).await;
    assert_eq!(
        (status, body["applied"].as_bool()),
        (200, Some(true)),
        "{body}"
    );

    assert!(f.suppressed("+15555550150").await, "the opt-out was kept");
    let (status, refused) = f
        .app
        .post(
            &f.key,
            "/v1/sequences",
            json!({
                "template_id": f.template,
                "contact": { "phone_number": "+15555550150", "time_zone": "America/New_York" },
            }),
        )
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("suppressed")),
        "{refused}"
    );
    f.run().await;
    assert_eq!(f.vapi.requests().len(), 1, "never called again");
    assert!(
        f.events(id)
            .await
            .iter()
            .any(|event| event["type"] == "late-opt-out"),
        "the late opt-out is in the sequence's history"
    );
}

#[tokio::test]
async fn a_cancel_during_a_rate_limit_wait_places_no_call() {
    let f = fixture().await;
    // Vapi asks Clarion to wait a second before trying again.
    f.vapi.answer_next(&[CallAnswer::Error(429, Some(1))]);
    let id = f.enroll("+15555550151").await;
    let scheduler = f.app.scheduler.clone();
    let running = tokio::spawn(async move { scheduler.run_due_now().await.unwrap() });
    support::eventually("the first, refused, request", || async {
        f.vapi.requests().len() == 1
    })
    .await;
    let (status, _) = f
        .app
        .post(&f.key, &format!("/v1/sequences/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    running.await.unwrap();

    assert_eq!(
        f.vapi.requests().len(),
        1,
        "no second request after the cancel"
    );
    assert!(f.vapi.calls().is_empty(), "no call placed");
    assert_eq!(f.sequence(id).await["status"], "ended");
    // The encounter that was waiting to be retried ended as a call that was not made.
    let internal = f.internal(clarion_store::IdKind::Sequence, &json!(id));
    let encounters = f
        .app
        .store
        .sequence_encounters(clarion_store::SequenceId(internal))
        .await
        .unwrap();
    assert_eq!(encounters.len(), 1);
    assert_eq!(encounters[0].status, clarion_store::EncounterStatus::Ended);
    assert_eq!(encounters[0].outcome.as_deref(), Some("failed"));
}

#[tokio::test]
async fn a_number_suppressed_between_commit_and_request_is_not_called() {
    let f = fixture().await;
    let id = f.enroll("+15555550152").await;
    // The encounter is committed; the provider has not been asked yet.
    f.app.scheduler.run_due_pass().await.unwrap();
    let (status, _) = f
        .app
        .post(
            &f.key,
            "/v1/suppressions",
            json!({ "phone_number": "+15555550152", "reason": "asked by phone" }),
        )
        .await;
    assert_eq!(status, 201);
    f.run().await;

    assert!(f.vapi.requests().is_empty(), "no call requested");
    let sequence = f.sequence(id).await;
    assert_eq!(sequence["status"], "ended", "{sequence}");
    assert_eq!(sequence["outreach"], json!([]), "nobody was contacted");
    let events = f.events(id).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "encounter-withheld" && e["detail"]["reason"] == "suppressed"),
        "{events:?}"
    );
}

#[tokio::test]
async fn the_window_closing_between_commit_and_request_defers_the_call_to_the_next_window() {
    let f = fixture().await;
    let template = f.template_with_calling_hours().await;
    // 20:59:30 in New York (EDT).
    f.app
        .clock
        .set_millis(chrono_millis("2025-06-03T00:59:30Z"));
    let id = f
        .app
        .enroll(
            &f.key,
            json!({
                "template_id": template,
                "contact": { "phone_number": "+15555550153", "time_zone": "America/New_York" },
            }),
        )
        .await;
    f.app.scheduler.run_due_pass().await.unwrap();
    // 21:00:30: the window closed before the provider was asked.
    f.app.clock.advance(std::time::Duration::from_secs(60));
    f.run().await;
    assert!(f.vapi.requests().is_empty(), "no call after 21:00");
    let events = f.events(id).await;
    let deferred = events
        .iter()
        .find(|e| e["type"] == "deferred")
        .unwrap_or_else(|| panic!("a deferral: {events:?}"));
    assert_eq!(deferred["detail"]["reason"], "calling-hours");
    assert_eq!(deferred["detail"]["until"], "2025-06-03T12:00:00Z");
    assert!(
        events.iter().any(|e| e["type"] == "encounter-withheld"
            && e["detail"]["reason"] == "outside-calling-hours")
    );

    // 08:00 the next morning: called once.
    f.app
        .clock
        .set_millis(chrono_millis("2025-06-03T12:00:00Z"));
    f.run().await;
    assert_eq!(f.vapi.requests().len(), 1);
    assert_eq!(
        f.sequence(id).await["outreach"][0]["call"]["call_status"],
        "queued"
    );
}

fn chrono_millis(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn an_end_of_call_report_that_arrives_before_the_placement_is_recorded_is_applied() {
    let f = fixture().await;
    f.vapi
        .report_before_answering(&f.app.base, "customer-ended-call", "resolved");
    let id = f.enroll("+15555550154").await;
    f.run().await;

    let early = f.vapi.early_answers();
    assert_eq!(early.len(), 1);
    assert_eq!(
        (early[0].0, early[0].1["applied"].as_bool()),
        (200, Some(true)),
        "{early:?}"
    );
    f.run().await;
    let sequence = f.sequence(id).await;
    assert_eq!(sequence["status"], "ended", "{sequence}");
    assert_eq!(sequence["outreach"][0]["call"]["outcome"], "resolved");
    assert_eq!(f.vapi.requests().len(), 1);
    // The same report again (Vapi's retry) changes nothing.
    let mut report = end_of_call_report(
        "call_1",
        "customer-ended-call",
        json!({ "outcome": "resolved" }),
    );
    report["call"]["name"] = f.vapi.requests()[0]["name"].clone();
    let (status, body) = f.emit(&report).await;
    assert_eq!((status, body["applied"].as_bool()), (200, Some(false)));
}

#[tokio::test]
async fn a_report_that_names_an_encounter_of_a_call_vapi_does_not_have_is_refused() {
    let f = fixture().await;
    // Vapi answers 500 and did not place the call: Clarion waits for a report.
    f.vapi.answer_next(&[CallAnswer::Error(500, None)]);
    let id = f.enroll("+15555550155").await;
    f.run().await;
    let encounter = f.sequence(id).await["outreach"][0]["call"]["id"].clone();
    // A forged report with the right name, for a call Vapi has never seen.
    let mut forged = opt_out_report("call_forged");
    forged["call"]["name"] = json!(f.call_name(&encounter));
    forged["call"]["customer"] = json!({ "number": "+15555550155" });
    let (status, body) = f.emit(&forged).await;
    assert_eq!(
        (status, body["applied"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    assert!(!f.suppressed("+15555550155").await);
    assert_eq!(f.sequence(id).await["status"], "active");
}

#[tokio::test]
async fn a_slow_read_back_does_not_hold_up_another_sequences_due_call() {
    let f = fixture().await;
    // One call placed and silent past its report timeout: it will be read back.
    let first = f.enroll("+15555550156").await;
    f.run().await;
    assert_eq!(f.vapi.calls().len(), 1);
    // Vapi's reads now hang.
    f.vapi.hold_reads();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = f.app.scheduler.clone();
    let running = tokio::spawn(async move {
        scheduler
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    f.app.clock.advance(std::time::Duration::from_secs(31 * 60));
    support::eventually("the overdue read-back to start", || async {
        f.vapi.reads_in_flight() == 1
    })
    .await;
    // Another sequence falls due while the read hangs: its call goes out meanwhile.
    let second = f.enroll("+15555550157").await;
    support::eventually("the second sequence's call", || async {
        f.vapi.requests().len() == 2
    })
    .await;
    assert_eq!(
        f.vapi.reads_in_flight_at_create(),
        vec![0, 1],
        "the second call was placed while the read-back was still waiting"
    );
    f.vapi.release_reads();
    stop.send(()).unwrap();
    running.await.unwrap();
    assert_eq!(f.sequence(first).await["status"], "active");
    assert_eq!(
        f.sequence(second).await["outreach"][0]["call"]["call_status"],
        "queued"
    );
}

/// Issue 17 defect 6: a tenant cannot name a Vapi assistant of the shared account that the
/// operator has not allowed for it, cannot allow one itself, and can once the operator has.
#[tokio::test]
async fn only_vapi_assistants_the_operator_allowed_can_be_named() {
    let f = fixture().await;
    let other = json!({ "name": "Borrowed caller", "channel": "call",
        "config": { "vapi_assistant_id": "asst_other_tenant" } });
    let (status, error) = f.app.post(&f.key, "/v1/assistants", other.clone()).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "config.vapi_assistant_id");
    assert!(!error.to_string().contains("asst_other_tenant"), "{error}");
    // Not a string: refused too.
    let (status, error) = f
        .app
        .post(
            &f.key,
            "/v1/assistants",
            json!({ "name": "Odd", "channel": "call",
            "config": { "vapi_assistant_id": 7 } }),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "config.vapi_assistant_id");

    // The tenant sees its list, read-only: its API key cannot change it.
    let (status, organization) = f.app.get(&f.key, "/v1/organization").await;
    assert_eq!(status, 200);
    assert_eq!(organization["vapi_assistants"], json!(["asst_1"]));
    let (status, _) = f
        .app
        .patch(
            &f.key,
            "/v1/organization",
            json!({ "vapi_assistants": ["asst_other_tenant"] }),
        )
        .await;
    assert!((400..500).contains(&status), "{status}");
    let (status, error) = f.app.post(&f.key, "/v1/assistants", other.clone()).await;
    assert_eq!(status, 422, "{error}");

    // The operator allows it with the CLI; now it is accepted.
    let org_id = organization["id"].as_i64().unwrap();
    let shown =
        allow_vapi_assistant_with_cli(&f.app.database, org_id, "asst_other_tenant", true).await;
    assert_eq!(shown["org_id"], org_id);
    assert_eq!(
        shown["vapi_assistants"],
        json!(["asst_1", "asst_other_tenant"])
    );
    let (status, created) = f.app.post(&f.key, "/v1/assistants", other.clone()).await;
    assert_eq!(status, 201, "{created}");
    let (_, organization) = f.app.get(&f.key, "/v1/organization").await;
    assert_eq!(
        organization["vapi_assistants"],
        json!(["asst_1", "asst_other_tenant"])
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args([
            "org",
            "show",
            &org_id.to_string(),
            "--database",
            &f.app.database_url,
        ])
        .env("CLARION_SECRET_KEY", f.app.secret_key())
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        shown["vapi_assistants"],
        json!(["asst_1", "asst_other_tenant"])
    );

    // Another organisation's list is its own.
    let (_, other_key) = f.app.org("Other Clinic").await;
    let (status, error) = f.app.post(&other_key, "/v1/assistants", other).await;
    assert_eq!(status, 422, "{error}");
}

/// Issue 17 defect 6: the list is read again when the call is placed, so a Vapi assistant the
/// operator took off it after the assistant was created is not called.
#[tokio::test]
async fn a_call_is_not_placed_once_its_vapi_assistant_is_off_the_list() {
    let f = fixture().await;
    let (_, organization) = f.app.get(&f.key, "/v1/organization").await;
    let org_id = organization["id"].as_i64().unwrap();
    let shown = allow_vapi_assistant_with_cli(&f.app.database, org_id, "asst_1", false).await;
    assert_eq!(shown["vapi_assistants"], json!([]));
    let id = f.enroll("+15555550160").await;
    f.run().await;
    assert!(
        f.vapi.requests().is_empty(),
        "no POST /call: {:?}",
        f.vapi.requests()
    );
    assert!(f.vapi.calls().is_empty());
    let ended = f.sequence(id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    let call = &ended["outreach"][0]["call"];
    assert_eq!(call["outcome"], "failed");
    assert!(
        call["summary"]
            .as_str()
            .unwrap()
            .starts_with("The call could not be placed"),
        "{call}"
    );
    assert_eq!(schema_errors(&ended), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Spoken opt-outs (issue 14, defect 7): detected from the end-of-call report itself.
// ---------------------------------------------------------------------------------------------

impl Fixture {
    /// A template of a call, then (unless the call resolves) a simulated text at once.
    async fn call_then_text_template(&self) -> i64 {
        let caller = self.sequence_template_assistant().await;
        let (status, texter) = self
            .app
            .post(&self.key, "/v1/assistants", json!({
                "name": "Reminder texter", "channel": "sms",
                "config": { "purpose": "confirm the upcoming appointment", "organisation_name": "Riverside Family Clinic" }
            }))
            .await;
        assert_eq!(status, 201, "{texter}");
        let (status, template) = self
            .app
            .post(
                &self.key,
                "/v1/sequence-templates",
                json!({
                    "name": "Call then text", "calling_hours": null, "stop_on": ["resolved"],
                    "steps": [ { "type": "call", "assistant_id": caller, "max_attempts": 1 },
                               { "type": "sms", "assistant_id": texter["id"], "delay": "0s" } ]
                }),
            )
            .await;
        assert_eq!(status, 201, "{template}");
        template["id"].as_i64().unwrap()
    }
}

/// An end-of-call report of a connected call that Vapi's analysis did not call a success and
/// whose `outcome` is not set: before the fix, `unresolved`, and the sequence went on.
fn unresolved_report(call_id: &str, structured: Value, patient_says: &str) -> Value {
    let mut report = end_of_call_report(call_id, "customer-ended-call", structured);
    report["analysis"]["successEvaluation"] = json!("false");
    report["analysis"]["summary"] = json!("The call ended without a confirmation.");
    report["artifact"]["transcript"] = json!(format!(
        "AI: Hi Ana, this is Riverside Family Clinic calling about your appointment.\nUser: {patient_says}\nAI: I understand.\n"
    ));
    report["artifact"]["messages"] = json!([
        { "role": "bot", "message": "Hi Ana, this is Riverside Family Clinic calling about your appointment.", "time": 1_736_175_606_000_i64, "endTime": 1_736_175_610_000_i64 },
        { "role": "user", "message": patient_says, "time": 1_736_175_611_000_i64, "endTime": 1_736_175_614_000_i64 },
        { "role": "bot", "message": "I understand.", "time": 1_736_175_615_000_i64, "endTime": 1_736_175_616_000_i64 }
    ]);
    report
}

#[tokio::test]
async fn a_spoken_opt_out_in_the_end_of_call_report_ends_the_sequence_and_suppresses_the_number() {
    let f = fixture().await;
    let template = f.call_then_text_template().await;
    let cases = [
        (
            "+15555550160",
            unresolved_report(
                "call_1",
                json!({}),
                "Stop calling me, take me off your list.",
            ),
            ("transcript", "stop-contacting"),
        ),
        (
            "+15555550161",
            unresolved_report("call_2", json!({ "opt_out": true }), "Okay. Bye."),
            ("structured-data", "opt_out"),
        ),
    ];
    for (phone, report, (source, matched)) in cases {
        let id = f
            .app
            .enroll(&f.key, json!({
                "template_id": template,
                "contact": { "phone_number": phone, "time_zone": "America/New_York", "name": "Ana Lopez" },
            }))
            .await;
        f.run().await;
        let placed = f.vapi.requests().len();
        let (status, body) = f.emit(&report).await;
        assert_eq!(
            (status, body["applied"].as_bool()),
            (200, Some(true)),
            "{body}"
        );
        f.run().await;

        let sequence = f.sequence(id).await;
        assert_eq!(sequence["status"], "ended", "{phone}: {sequence}");
        let outreach = sequence["outreach"].as_array().unwrap();
        assert_eq!(outreach.len(), 1, "no further step: {sequence}");
        let call = &outreach[0]["call"];
        assert_eq!(
            (call["outcome"].as_str(), call["failure_reason"].as_str()),
            (Some("unresolved"), Some("opt-out")),
            "{phone}: {call}"
        );
        assert_eq!(
            f.app.suppression_reason(&f.key, phone).await.as_deref(),
            Some("opt-out"),
            "{phone} is on the suppression list"
        );
        let events = f.events(id).await;
        let detected = events
            .iter()
            .find(|event| event["type"] == "opt-out-detected")
            .unwrap_or_else(|| panic!("no opt-out-detected event: {events:?}"));
        assert_eq!(detected["detail"]["channel"], "call");
        assert_eq!(detected["detail"]["source"], source);
        assert_eq!(detected["detail"]["matched"], matched);

        // Nothing more is sent: no text now, nor later.
        f.app
            .clock
            .advance(std::time::Duration::from_secs(2 * 24 * 3600));
        f.run().await;
        assert_eq!(f.vapi.requests().len(), placed, "no call after the opt-out");
        let sequence = f.sequence(id).await;
        assert_eq!(sequence["outreach"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn the_assistant_saying_the_words_is_not_a_patients_opt_out() {
    let f = fixture().await;
    let template = f.call_then_text_template().await;
    let id = f
        .app
        .enroll(
            &f.key,
            json!({
                "template_id": template,
                "contact": { "phone_number": "+15555550162", "time_zone": "America/New_York" },
            }),
        )
        .await;
    f.run().await;
    let mut report = unresolved_report(
        "call_1",
        json!({ "opt_out": false }),
        "Can you call me later?",
    );
    report["artifact"]["messages"][2]["message"] =
        json!("Of course. If you ever want us to stop calling you, just say so.");
    let (status, _) = f.emit(&report).await;
    assert_eq!(status, 200);
    f.run().await;
    assert!(!f.suppressed("+15555550162").await);
    let sequence = f.sequence(id).await;
    assert_eq!(
        sequence["outreach"][0]["call"]["failure_reason"],
        Value::Null,
        "{sequence}"
    );
    assert_eq!(
        sequence["outreach"].as_array().unwrap().len(),
        2,
        "the sequence went on to its text: {sequence}"
    );
}

/// A step's voicemail policy reaches Vapi as assistant overrides (detection on, the step's
/// message or none) and shapes the report's `voicemail_message`.
#[tokio::test]
async fn a_steps_voicemail_policy_is_sent_to_vapi_and_reported() {
    let f = fixture().await;
    let (_, assistants) = f.app.get(&f.key, "/v1/assistants").await;
    let assistant = assistants["data"][0]["id"].clone();
    let message = "This is Riverside Family Clinic. Please call us back at 555-0100.";
    let mut templates = Vec::new();
    for voicemail in [
        json!({ "action": "leave-message", "message": message }),
        json!({ "action": "hang-up" }),
    ] {
        let (status, template) = f
            .app
            .post(&f.key, "/v1/sequence-templates", json!({
                "name": "One call", "calling_hours": null, "stop_on": ["resolved"],
                "steps": [ { "type": "call", "assistant_id": assistant, "voicemail": voicemail } ]
            }))
            .await;
        assert_eq!(status, 201, "{template}");
        templates.push(template["id"].as_i64().unwrap());
    }
    let mut sequences = Vec::new();
    for (template, phone) in templates.iter().zip(["+15555550190", "+15555550191"]) {
        sequences.push(
            f.app
                .enroll(
                    &f.key,
                    json!({
                        "template_id": template,
                        "contact": { "phone_number": phone, "time_zone": "America/New_York" },
                    }),
                )
                .await,
        );
        f.run().await;
    }
    let requests = f.vapi.requests();
    assert_eq!(requests.len(), 2);
    let overrides = |i: usize| requests[i]["assistantOverrides"].clone();
    assert_eq!(overrides(0)["voicemailMessage"], message);
    assert_eq!(
        overrides(0)["voicemailDetection"],
        json!({ "provider": "vapi" })
    );
    assert!(
        overrides(1).get("voicemailMessage").is_none(),
        "{}",
        overrides(1)
    );
    assert_eq!(
        overrides(1)["voicemailDetection"],
        json!({ "provider": "vapi" })
    );

    for (call, id) in ["call_1", "call_2"].into_iter().zip(&sequences) {
        let (status, _) = f
            .emit(&end_of_call_report(call, "voicemail", json!({})))
            .await;
        assert_eq!(status, 200);
        f.run().await;
        let ended = f.sequence(*id).await;
        assert_eq!(ended["status"], "ended", "{ended}");
    }
    let left = f.sequence(sequences[0]).await;
    assert_eq!(left["outreach"][0]["call"]["voicemail_message"], message);
    let hung_up = f.sequence(sequences[1]).await;
    assert_eq!(
        hung_up["outreach"][0]["call"]["voicemail_message"],
        Value::Null,
        "the assistant's own message was not left: {hung_up}"
    );
}

/// A call still running when its number is erased reports later: what the report brings
/// (transcript, summary) is purged in the same transaction, so no PHI outlives the erasure.
#[tokio::test]
async fn a_calls_report_after_its_number_was_erased_is_kept_without_phi() {
    let f = fixture().await;
    let id = f.enroll("+15555550195").await;
    f.run().await;
    assert_eq!(f.vapi.calls().len(), 1, "the call is placed and running");
    let (status, erased) = f
        .app
        .request(
            reqwest::Method::DELETE,
            &f.key,
            "/v1/contacts/%2B15555550195?cancel=true",
            None,
        )
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["cancelled"], 1, "{erased}");

    let (status, _) = f
        .emit(&end_of_call_report(
            "call_1",
            "customer-ended-call",
            json!({ "confirmed": true }),
        ))
        .await;
    assert_eq!(status, 200);
    f.run().await;
    // The encounter row took the report's outcome, and nothing of its words.
    let sequence_id =
        clarion_store::SequenceId(f.internal(clarion_store::IdKind::Sequence, &json!(id)));
    let encounters = f
        .app
        .store
        .encounters_of_sequences(f.org, &[sequence_id])
        .await
        .unwrap();
    let encounter = &encounters[&sequence_id][0];
    assert_eq!(
        encounter.outcome.as_deref(),
        Some("resolved"),
        "{encounter:?}"
    );
    let stored = format!("{:?}", encounter.report);
    assert!(
        !stored.contains("January 8") && !stored.contains("confirmed the appointment"),
        "the late transcript and summary were kept: {stored}"
    );
    let sequence = f.sequence(id).await;
    assert!(!sequence.to_string().contains("January 8"), "{sequence}");
    let (_, events) = f
        .app
        .get(&f.key, &format!("/v1/sequences/{id}/events?limit=200"))
        .await;
    assert!(
        events["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "phi-purged" && e["detail"]["reason"] == "late-report"),
        "{events}"
    );
}
