//! The fixed text a call step sends after its last voicemail (`voicemail.sms_text`), end to
//! end: the voicemail through the Vapi fake, the text through the Twilio fake (one message
//! from the organisation's sender), the report's `sms` entry for the call's step, replies to
//! the text (not a conversation; STOP still suppresses), and a send Twilio refuses (never
//! sent again; the sequence goes on).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::support::fake_twilio::{FakeTwilio, OUR_NUMBER, SendAnswer};
use crate::support::fake_vapi::{FakeVapi, SERVER_SECRET, end_of_call_report};
use crate::support::{Answer, AppOptions, TestApp, TestReceiver, schema_errors, spawn_app_with};
use clarion_providers::twilio::wire::Sender;
use serde_json::{Value, json};
use std::time::Duration;

const TEXT: &str = "This is Riverside Family Clinic. Please call us back at 555-0100.";

struct Fixture {
    app: TestApp,
    vapi: FakeVapi,
    twilio: FakeTwilio,
    key: String,
    receiver: TestReceiver,
    template: i64,
}

async fn fixture() -> Fixture {
    let vapi = FakeVapi::start().await;
    let twilio = FakeTwilio::start().await;
    let app = spawn_app_with(AppOptions {
        vapi: Some((vapi.settings(), SERVER_SECRET.to_owned())),
        twilio: Some(twilio.settings()),
        // The organisation texts from a number of its own.
        twilio_senders: [(clarion_store::OrgId(1), Sender::From(OUR_NUMBER.to_owned()))]
            .into_iter()
            .collect(),
        ..AppOptions::default()
    })
    .await;
    let (org, key) = app.org("Riverside Family Clinic").await;
    assert_eq!(org.0, 1);
    app.allow_vapi_assistant(org, "asst_1").await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    app.endpoint(&key, &receiver.url).await;
    let (status, caller) = app
        .post(
            &key,
            "/v1/assistants",
            json!({
                "name": "Reminder caller", "channel": "call",
                "config": { "vapi_assistant_id": "asst_1" },
            }),
        )
        .await;
    assert_eq!(status, 201, "{caller}");
    let (status, texter) = app
        .post(&key, "/v1/assistants", json!({
            "name": "Reminder texter", "channel": "sms",
            "config": { "script": {
                "opening": "Riverside Family Clinic: please reply YES to confirm your appointment.",
                "intents": [ { "name": "confirm", "keywords": ["yes"], "reply": "Thank you!", "resolution": "resolved" } ],
                "fallback": "Sorry, please reply YES.",
                "max_turns": 3
            } }
        }))
        .await;
    assert_eq!(status, 201, "{texter}");
    let (status, template) = app
        .post(&key, "/v1/sequence-templates", json!({
            "name": "Call, then text", "calling_hours": null, "stop_on": ["resolved"],
            "steps": [
                { "type": "call", "assistant_id": caller["id"],
                  "voicemail": { "retry": false, "action": "hang-up", "sms_text": format!(" {TEXT} ") } },
                { "type": "sms", "assistant_id": texter["id"], "delay": "1h" },
            ]
        }))
        .await;
    assert_eq!(status, 201, "{template}");
    Fixture {
        app,
        vapi,
        twilio,
        key,
        receiver,
        template: template["id"].as_i64().unwrap(),
    }
}

impl Fixture {
    async fn enroll(&self, phone: &str) -> i64 {
        self.app
            .enroll(&self.key, json!({
                "template_id": self.template,
                "contact": { "phone_number": phone, "time_zone": "America/New_York", "name": "Ana Lopez" },
            }))
            .await
    }

    async fn sequence(&self, id: i64) -> Value {
        self.app.sequence(&self.key, id).await
    }

    async fn run(&self) {
        self.app.run_due().await;
    }

    /// Places the sequence's call and ends it on a voicemail.
    async fn voicemail(&self, id: i64, call: &str) {
        self.run().await;
        assert_eq!(
            self.sequence(id).await["outreach"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let (status, body) = self
            .vapi
            .emit(
                &self.app.base,
                Some(SERVER_SECRET),
                &end_of_call_report(call, "voicemail", json!({})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        self.run().await;
    }

    async fn events(&self, id: i64) -> Vec<Value> {
        self.app.events(&self.key, id).await
    }

    async fn text(&self, from: &str, body: &str) -> String {
        let (status, twiml) = self.twilio.inbound(&self.app.base, from, body).await;
        assert_eq!(status, 200, "{twiml}");
        twiml
    }
}

#[tokio::test]
async fn a_voicemail_through_vapi_is_followed_by_the_fixed_text_through_twilio() {
    let f = fixture().await;
    let patient = "+15555550171";
    let id = f.enroll(patient).await;
    f.voicemail(id, "call_1").await;

    // One message: the fixed text, from the organisation's number, to the contact.
    let sent = f.twilio.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, patient);
    assert_eq!(sent[0].sender, Sender::From(OUR_NUMBER.to_owned()));
    assert_eq!(sent[0].body, TEXT, "trimmed, as stored");
    assert_eq!(
        sent[0].status_callback.as_deref(),
        Some(format!("{}/providers/twilio/status", f.app.base).as_str())
    );

    // The report: an `sms` entry for the call's step, ended, with the text as its transcript.
    let sequence = f.sequence(id).await;
    assert_eq!(
        sequence["status"], "active",
        "the SMS step is still to come"
    );
    let outreach = sequence["outreach"].as_array().unwrap();
    assert_eq!(outreach.len(), 2, "{sequence}");
    assert_eq!(
        (&outreach[1]["type"], &outreach[1]["step"]),
        (&json!("sms"), &json!(1))
    );
    let sms = &outreach[1]["sms"];
    assert_eq!(sms["status"], "ended");
    assert_eq!(sms["transcript"], format!("AI: {TEXT}"));
    assert_eq!(sms["source_number"], OUR_NUMBER);
    assert_eq!(sms["destination_number"], patient);
    assert_eq!(sms["assistant_id"], outreach[0]["call"]["assistant_id"]);
    assert_eq!(sms["ended_reason"], Value::Null, "{sequence}");
    let events = f.events(id).await;
    let ended = events
        .iter()
        .find(|e| e["type"] == "voicemail-text-ended")
        .expect("the text's end is in the events");
    assert_eq!(ended["detail"]["sent"], true, "{ended}");
    assert!(
        !Value::Array(events.clone())
            .to_string()
            .contains("Please call us back"),
        "the events say it was sent, not what it said"
    );

    // At most once: nothing more goes out on later passes.
    f.run().await;
    assert_eq!(f.twilio.sent().len(), 1);

    // A reply to it is not a conversation: no answer, nothing changes.
    let twiml = f.text(patient, "Who is this?").await;
    assert!(!twiml.contains("<Message>"), "{twiml}");
    f.run().await;
    assert_eq!(f.sequence(id).await["outreach"], sequence["outreach"]);

    // A STOP to it still suppresses the number: the SMS step never goes out.
    let twiml = f.text(patient, "STOP").await;
    assert!(!twiml.contains("<Message>"), "{twiml}");
    let (_, suppressions) = f.app.get(&f.key, "/v1/suppressions").await;
    assert!(
        suppressions["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["phone_number"] == patient && s["reason"] == "opt-out"),
        "{suppressions}"
    );
    f.app.clock.advance(Duration::from_secs(3600));
    f.run().await;
    assert_eq!(f.twilio.sent().len(), 1, "nothing after the STOP");
    let ended = f.sequence(id).await;
    assert_eq!(ended["status"], "ended", "{ended}");

    // The delivered report is the API's, and schema-valid with its `sms` entry.
    let received = f.receiver.received();
    assert_eq!(received.len(), 1);
    let report: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(schema_errors(&report), Vec::<String>::new());
    assert_eq!(report, ended);
    assert_eq!(
        report["outreach"][1]["sms"]["transcript"],
        format!("AI: {TEXT}")
    );
}

#[tokio::test]
async fn a_fixed_text_twilio_refuses_is_not_sent_again_and_the_sequence_goes_on() {
    let f = fixture().await;
    let patient = "+15555550172";
    // 21211: an invalid 'To' number, a permanent refusal.
    f.twilio.answer_next(&[SendAnswer::Error(400, 21211)]);
    let id = f.enroll(patient).await;
    f.voicemail(id, "call_1").await;
    assert_eq!(f.twilio.attempts(), 1);
    assert!(f.twilio.sent().is_empty());
    let sequence = f.sequence(id).await;
    let sms = &sequence["outreach"][1]["sms"];
    assert_eq!(sms["status"], "ended", "{sequence}");
    assert_eq!(sms["ended_reason"], "system-error");
    assert_eq!(sms["transcript"], Value::Null);
    let events = f.events(id).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "voicemail-text-ended" && e["detail"]["sent"] == false),
        "{events:?}"
    );
    f.run().await;
    assert_eq!(f.twilio.attempts(), 1, "never tried again");

    // The sequence goes on as the voicemail would have taken it: the SMS step, 1 h later.
    f.app.clock.advance(Duration::from_secs(3600));
    f.run().await;
    let sent = f.twilio.sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .body
            .starts_with("Riverside Family Clinic: please reply"),
        "{sent:?}"
    );
    let sequence = f.sequence(id).await;
    assert_eq!(
        sequence["outreach"].as_array().unwrap().len(),
        3,
        "{sequence}"
    );
    assert_eq!(sequence["outreach"][2]["step"], 2);
}

#[tokio::test]
async fn a_fixed_text_is_checked_before_it_goes_like_any_text() {
    let f = fixture().await;
    let patient = "+15555550173";
    let id = f.enroll(patient).await;
    f.run().await;
    let (status, _) = f
        .vapi
        .emit(
            &f.app.base,
            Some(SERVER_SECRET),
            &end_of_call_report("call_1", "voicemail", json!({})),
        )
        .await;
    assert_eq!(status, 200);
    // The text is committed; Twilio has not been asked yet. Then the number is suppressed.
    f.app.scheduler.run_due_pass().await.unwrap();
    let (status, _) = f
        .app
        .post(
            &f.key,
            "/v1/suppressions",
            json!({ "phone_number": patient, "reason": "asked by phone" }),
        )
        .await;
    assert_eq!(status, 201);
    f.run().await;
    assert_eq!(f.twilio.attempts(), 0, "no text requested");
    let sequence = f.sequence(id).await;
    assert_eq!(sequence["status"], "ended", "{sequence}");
    assert_eq!(
        sequence["outreach"].as_array().unwrap().len(),
        1,
        "the call only: {sequence}"
    );
    let events = f.events(id).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "encounter-withheld" && e["detail"]["reason"] == "suppressed"),
        "{events:?}"
    );
}
