//! SMS conversations through Twilio, end to end, against the local fake of Twilio's
//! Messages API: the opening text, inbound replies answered by the scripted assistant over
//! TwiML, STOP, HELP, the conversation timeout, 21610, and forged signatures.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::support;

use crate::support::fake_twilio::{AUTH_TOKEN, FakeTwilio, SERVICE_SID, SendAnswer};
use crate::support::{Answer, AppOptions, TestApp, TestReceiver, schema_errors, spawn_app_with};
use serde_json::{Value, json};
use std::time::Duration;

struct Fixture {
    app: TestApp,
    twilio: FakeTwilio,
    key: String,
    receiver: TestReceiver,
    template: i64,
}

async fn fixture() -> Fixture {
    let twilio = FakeTwilio::start().await;
    let app = spawn_app_with(AppOptions {
        twilio: Some(twilio.settings()),
        ..AppOptions::default()
    })
    .await;
    let (_org, key) = app.org("Riverside Family Clinic").await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    app.endpoint(&key, &receiver.url).await;
    let (status, assistant) = app
        .post(&key, "/v1/assistants", json!({
            "name": "Reminder texter", "channel": "sms",
            "config": { "script": {
                "opening": "Hi {{first_name}}, Riverside Family Clinic here: your appointment is on {{appointment_date}}. Reply YES to confirm or NO to cancel.",
                "intents": [
                    { "name": "confirm", "keywords": ["yes", "confirm"], "reply": "Thank you, see you then!", "resolution": "resolved",
                      "custom": { "appointment_confirmed": true } },
                    { "name": "cancel", "keywords": ["no", "cancel appointment"], "reply": "Understood, we will call you to reschedule.", "resolution": "declined" }
                ],
                "fallback": "Sorry, please reply YES or NO.",
                "max_turns": 3
            } }
        }))
        .await;
    assert_eq!(status, 201, "{assistant}");
    let (status, template) = app
        .post(
            &key,
            "/v1/sequence-templates",
            json!({
                "name": "One text", "calling_hours": null, "sms_timeout": "24h",
                "stop_on": ["resolved", "declined", "opt-out"],
                "steps": [ { "type": "sms", "assistant_id": assistant["id"] } ]
            }),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    Fixture {
        app,
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
                "contact": { "phone_number": phone, "time_zone": "America/Denver", "name": "Ana Lopez" },
                "variables": { "appointment_date": "January 8" },
            }))
            .await
    }

    async fn sequence(&self, id: i64) -> Value {
        self.app.sequence(&self.key, id).await
    }

    async fn run(&self) {
        self.app.run_due().await;
    }

    async fn text(&self, from: &str, body: &str) -> String {
        let (status, twiml) = self.twilio.inbound(&self.app.base, from, body).await;
        assert_eq!(status, 200, "{twiml}");
        twiml
    }
}

#[tokio::test]
async fn a_conversation_opens_takes_replies_and_resolves() {
    let f = fixture().await;
    let id = f.enroll("+15555550140").await;
    f.run().await;
    let sent = f.twilio.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "+15555550140");
    assert_eq!(
        sent[0].sender,
        clarion_providers::twilio::wire::Sender::MessagingService(SERVICE_SID.to_owned())
    );
    assert_eq!(
        sent[0].body,
        "Hi Ana, Riverside Family Clinic here: your appointment is on January 8. Reply YES to confirm or NO to cancel."
    );
    assert_eq!(
        sent[0].status_callback.as_deref(),
        Some(format!("{}/providers/twilio/status", f.app.base).as_str())
    );

    // A reply the script does not know gets the fallback; the conversation goes on.
    let twiml = f.text("+15555550140", "who is this?").await;
    assert!(
        twiml.contains("<Message>Sorry, please reply YES or NO.</Message>"),
        "{twiml}"
    );
    f.run().await;
    assert_eq!(f.sequence(id).await["status"], "active");

    // HELP gets the organisation's help text and does not count as a reply.
    let (status, _) = f
        .app
        .patch(&f.key, "/v1/organization", json!({ "sms_help_text": "Riverside Family Clinic: call 555-0100. Reply STOP to opt out." }))
        .await;
    assert_eq!(status, 200);
    let twiml = f.text("+15555550140", "help").await;
    assert!(
        twiml.contains("Riverside Family Clinic: call 555-0100."),
        "{twiml}"
    );

    // YES resolves it; the sequence stops on `resolved` and the report is delivered.
    let twiml = f.text("+15555550140", "Yes").await;
    assert!(
        twiml.contains("<Message>Thank you, see you then!</Message>"),
        "{twiml}"
    );
    f.run().await;
    let ended = f.sequence(id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    assert_eq!(schema_errors(&ended), Vec::<String>::new());
    let sms = &ended["outreach"][0]["sms"];
    assert_eq!(sms["status"], "ended");
    assert_eq!(sms["ended_reason"], "resolved");
    assert_eq!(sms["destination_number"], "+15555550140");
    assert_eq!(
        sms["source_number"],
        support::fake_twilio::OUR_NUMBER,
        "the number the contact texted"
    );
    assert_eq!(
        sms["analysis"]["custom"],
        json!({ "appointment_confirmed": true }),
        "set by the intent that resolved it"
    );
    let transcript = sms["transcript"].as_str().unwrap();
    assert_eq!(transcript.lines().count(), 7, "{transcript}");
    assert!(transcript.starts_with("AI: Hi Ana"));
    assert!(transcript.contains("User: Yes\nAI: Thank you, see you then!"));
    assert!(
        sms["summary"]
            .as_str()
            .is_some_and(|s| !s.contains("+1555"))
    );
    let delivered: Value = serde_json::from_slice(&f.receiver.wait_for(1).await[0].body).unwrap();
    assert_eq!(delivered, ended);

    // Another text after the end finds no conversation: nothing is said, nothing changes.
    let twiml = f.text("+15555550140", "yes again").await;
    assert!(!twiml.contains("<Message>"), "{twiml}");
    assert_eq!(f.twilio.sent().len(), 1);
}

#[tokio::test]
async fn stop_ends_the_conversation_without_a_reply_and_suppresses_the_number() {
    let f = fixture().await;
    let id = f.enroll("+15555550141").await;
    f.run().await;
    let twiml = f.text("+15555550141", "stop").await;
    assert!(!twiml.contains("<Message>"), "no reply to STOP: {twiml}");
    f.run().await;
    let ended = f.sequence(id).await;
    assert_eq!(ended["status"], "ended");
    assert_eq!(
        ended["outreach"][0]["sms"]["ended_reason"],
        "contact-opt-out"
    );
    let (_, suppressions) = f.app.get(&f.key, "/v1/suppressions").await;
    assert!(
        suppressions["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["phone_number"] == "+15555550141" && s["reason"] == "opt-out"),
        "{suppressions}"
    );
    let (status, _) = f
        .app
        .post(
            &f.key,
            "/v1/sequences",
            json!({ "template_id": f.template,
            "contact": { "phone_number": "+15555550141", "time_zone": "America/Denver" } }),
        )
        .await;
    assert_eq!(status, 422, "an opted-out number is not enrolled again");
}

#[tokio::test]
async fn a_silent_contact_times_out_and_an_unsubscribed_one_is_an_opt_out() {
    let f = fixture().await;
    f.twilio.answer_next(&[SendAnswer::Error(400, 21610)]);
    let unsubscribed = f.enroll("+15555550143").await;
    f.run().await;
    let quiet = f.enroll("+15555550142").await;
    f.run().await;
    assert_eq!(f.twilio.attempts(), 2, "21610 is not retried");
    assert_eq!(
        f.twilio.sent().len(),
        1,
        "only the second text was accepted"
    );

    let ended = f.sequence(unsubscribed).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    assert_eq!(
        ended["outreach"][0]["sms"]["ended_reason"],
        "contact-opt-out"
    );
    // The refusal is the evidence, in the sequence's events like any other opt-out's.
    let events = f.events(unsubscribed).await;
    let detected = events
        .iter()
        .find(|event| event["type"] == "opt-out-detected")
        .unwrap_or_else(|| panic!("no opt-out-detected event: {events:?}"));
    assert_eq!(
        (
            &detected["detail"]["channel"],
            &detected["detail"]["source"],
            &detected["detail"]["matched"]
        ),
        (&json!("sms"), &json!("carrier"), &json!("21610"))
    );
    let (_, suppressions) = f.app.get(&f.key, "/v1/suppressions").await;
    assert!(
        suppressions["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["phone_number"] == "+15555550143")
    );

    assert_eq!(f.sequence(quiet).await["status"], "active");
    f.app
        .clock
        .advance(std::time::Duration::from_secs(25 * 3600));
    f.run().await;
    let ended = f.sequence(quiet).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    let sms = &ended["outreach"][0]["sms"];
    assert_eq!(sms["ended_reason"], "conversation-timeout");
    assert!(
        sms["transcript"]
            .as_str()
            .unwrap()
            .starts_with("AI: Hi Ana")
    );
    assert_eq!(schema_errors(&ended), Vec::<String>::new());
}

#[tokio::test]
async fn forged_twilio_callbacks_are_rejected_and_change_nothing() {
    let f = fixture().await;
    let id = f.enroll("+15555550144").await;
    f.run().await;
    let before = f.sequence(id).await;
    let params = [
        ("MessageSid", "SM00000000000000000000000000000099"),
        ("AccountSid", support::fake_twilio::ACCOUNT_SID),
        ("From", "+15555550144"),
        ("To", support::fake_twilio::OUR_NUMBER),
        ("Body", "yes"),
    ];
    let (status, body) = f
        .twilio
        .post_signed(
            &f.app.base,
            "/providers/twilio/inbound",
            &params,
            "not-the-token",
        )
        .await;
    assert_eq!(status, 401, "{body}");
    // Signed for another URL (a replay to a different path) fails too.
    let (status, _) = f
        .twilio
        .post_signed(&f.app.base, "/providers/twilio/status", &params, AUTH_TOKEN)
        .await;
    assert_ne!(status, 200);
    let response = reqwest::Client::new()
        .post(format!("{}/providers/twilio/inbound", f.app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("From=%2B15555550144&Body=yes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "no signature");
    f.run().await;
    assert_eq!(f.sequence(id).await, before);
}

#[tokio::test]
async fn a_status_callback_for_an_undelivered_opening_ends_the_conversation() {
    let f = fixture().await;
    let id = f.enroll("+15555550145").await;
    f.run().await;
    let sid = format!("SM{:032x}", 1);
    let status = |status: &'static str, code: Option<&'static str>| {
        let sid = sid.clone();
        let f = &f;
        async move {
            let mut params = vec![
                ("MessageSid", sid.as_str()),
                ("SmsSid", sid.as_str()),
                ("MessageStatus", status),
                ("SmsStatus", status),
                ("AccountSid", support::fake_twilio::ACCOUNT_SID),
                ("To", "+15555550145"),
                ("ApiVersion", "2010-04-01"),
            ];
            if let Some(code) = code {
                params.push(("ErrorCode", code));
            }
            f.twilio
                .post_signed(&f.app.base, "/providers/twilio/status", &params, AUTH_TOKEN)
                .await
        }
    };
    let (code, body) = status("delivered", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"applied\":false"), "{body}");
    let (code, body) = status("undelivered", Some("30003")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"applied\":true"), "{body}");
    f.run().await;
    let ended = f.sequence(id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    assert_eq!(ended["outreach"][0]["sms"]["ended_reason"], "system-error");
    let (_, body) = status("undelivered", Some("30003")).await;
    assert!(
        body.contains("\"applied\":false"),
        "a repeated callback changes nothing: {body}"
    );
}

#[tokio::test]
async fn a_whole_sequence_call_to_voicemail_then_a_text_conversation_that_resolves() {
    use support::fake_vapi::{FakeVapi, SERVER_SECRET, end_of_call_report};
    let vapi = FakeVapi::start().await;
    let twilio = FakeTwilio::start().await;
    let app = spawn_app_with(AppOptions {
        vapi: Some((vapi.settings(), SERVER_SECRET.to_owned())),
        twilio: Some(twilio.settings()),
        ..AppOptions::default()
    })
    .await;
    let (org, key) = app.org("Riverside Family Clinic").await;
    // The operator lets this organisation use the fake's Vapi assistant (issue 17 defect 6).
    app.allow_vapi_assistant(org, "asst_1").await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    app.endpoint(&key, &receiver.url).await;
    let (_, caller) = app
        .post(&key, "/v1/assistants", json!({ "name": "Caller", "channel": "call",
            "config": { "vapi_assistant_id": "asst_1", "voicemail_message": "Please call us back." } }))
        .await;
    let (_, texter) = app
        .post(&key, "/v1/assistants", json!({ "name": "Texter", "channel": "sms",
            "config": { "script": { "opening": "Hi {{first_name}}, please reply YES to confirm January 8.",
                "intents": [ { "name": "confirm", "keywords": ["yes"], "reply": "Confirmed, thank you!", "resolution": "resolved" } ],
                "fallback": "Please reply YES." } } }))
        .await;
    let (_, template) = app
        .post(
            &key,
            "/v1/sequence-templates",
            json!({ "name": "Call, then text",
            "calling_hours": null, "stop_on": ["resolved"],
            "steps": [ { "type": "call", "assistant_id": caller["id"] },
                       { "type": "sms", "assistant_id": texter["id"], "delay": "1h" } ] }),
        )
        .await;
    let (status, sequence) = app
        .post(&key, "/v1/sequences", json!({ "template_id": template["id"],
            "contact": { "phone_number": "+15555550146", "time_zone": "America/Chicago", "name": "Ana Lopez" } }))
        .await;
    assert_eq!(status, 201, "{sequence}");
    let id = sequence["id"].as_i64().unwrap();
    app.scheduler.run_due_now().await.unwrap();
    assert_eq!(vapi.calls().len(), 1);
    let (status, _) = vapi
        .emit(
            &app.base,
            Some(SERVER_SECRET),
            &end_of_call_report("call_1", "voicemail", json!({})),
        )
        .await;
    assert_eq!(status, 200);
    app.scheduler.run_due_now().await.unwrap();
    assert!(
        twilio.sent().is_empty(),
        "the text waits for the step's delay"
    );
    app.clock.advance(std::time::Duration::from_secs(3601));
    app.scheduler.run_due_now().await.unwrap();
    assert_eq!(twilio.sent().len(), 1);
    let (status, twiml) = twilio.inbound(&app.base, "+15555550146", "YES").await;
    assert_eq!(status, 200);
    assert!(twiml.contains("Confirmed, thank you!"), "{twiml}");
    app.scheduler.run_due_now().await.unwrap();
    app.dispatcher.run_due_now().await.unwrap();
    let report: Value = serde_json::from_slice(&receiver.wait_for(1).await[0].body).unwrap();
    assert_eq!(report["id"], id);
    assert_eq!(schema_errors(&report), Vec::<String>::new());
    let outreach = report["outreach"].as_array().unwrap();
    assert_eq!(outreach.len(), 2, "{report}");
    assert_eq!(outreach[0]["call"]["outcome"], "voicemail");
    assert_eq!(
        outreach[0]["call"]["voicemail_message"],
        "Please call us back."
    );
    assert_eq!(outreach[1]["sms"]["ended_reason"], "resolved");
    assert!(
        report["outcome_description"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("sms"),
        "{report}"
    );
}

#[tokio::test]
async fn clarion_doctor_checks_the_twilio_credentials_without_sending() {
    let twilio = FakeTwilio::start().await;
    let config = format!(
        "[channels]\nsms = \"twilio\"\n[twilio]\nbase_url = \"{}\"\n",
        twilio.url
    );
    let doctor = |token: &'static str| {
        let config = config.clone();
        async move {
            support::run_doctor(
                &config,
                &[
                    (
                        "CLARION_TWILIO__ACCOUNT_SID",
                        support::fake_twilio::ACCOUNT_SID,
                    ),
                    ("CLARION_TWILIO__AUTH_TOKEN", token),
                    ("CLARION_TWILIO__MESSAGING_SERVICE_SID", SERVICE_SID),
                    (
                        "CLARION_TWILIO__PUBLIC_BASE_URL",
                        "https://clarion.example.org",
                    ),
                ],
            )
            .await
        }
    };
    let (code, out) = doctor(AUTH_TOKEN).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Twilio accepts the account SID"), "{out}");
    let (code, out) = doctor("wrong-token-value").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL Twilio rejects"), "{out}");
    assert!(!out.contains("wrong-token-value"));
    assert_eq!(twilio.attempts(), 0, "nothing was sent");
}

#[tokio::test]
async fn an_llm_assistant_answers_ordinary_replies_and_the_script_covers_for_it() {
    use support::fake_llm::{FakeLlm, LlmAnswer};
    let twilio = FakeTwilio::start().await;
    let llm = FakeLlm::start().await;
    let app = spawn_app_with(AppOptions {
        twilio: Some(twilio.settings()),
        llm: Some(llm.settings()),
        ..AppOptions::default()
    })
    .await;
    let (_org, key) = app.org("Riverside Family Clinic").await;
    let (_, texter) = app
        .post(&key, "/v1/assistants", json!({ "name": "Texter", "channel": "sms",
            "config": {
                "llm": { "system_prompt": "You confirm appointments for Riverside Family Clinic." },
                "script": { "opening": "Hi {{first_name}}, can you make your visit on January 8?",
                    "intents": [ { "name": "confirm", "keywords": ["yes"], "reply": "Scripted thanks.", "resolution": "resolved" } ],
                    "fallback": "Scripted fallback: please reply YES.", "max_turns": 5 } } }))
        .await;
    let (_, template) = app
        .post(&key, "/v1/sequence-templates", json!({ "name": "Text", "calling_hours": null,
            "stop_on": ["resolved"], "steps": [ { "type": "sms", "assistant_id": texter["id"] } ] }))
        .await;
    let (_, sequence) = app
        .post(&key, "/v1/sequences", json!({ "template_id": template["id"],
            "contact": { "phone_number": "+15555550147", "time_zone": "America/Denver", "name": "Ana Lopez" } }))
        .await;
    let id = sequence["id"].as_i64().unwrap();
    app.scheduler.run_due_now().await.unwrap();
    assert_eq!(twilio.sent().len(), 1);

    // The model fails: the script answers, and the conversation goes on.
    llm.answer_next(LlmAnswer::Error(500));
    let (_, twiml) = twilio
        .inbound(&app.base, "+15555550147", "what time again?")
        .await;
    assert!(
        twiml.contains("Scripted fallback: please reply YES."),
        "{twiml}"
    );
    // The model answers with something that is not a decision: the script answers.
    llm.answer_next(LlmAnswer::Content("Sure, 10am!".to_owned()));
    let (_, twiml) = twilio
        .inbound(&app.base, "+15555550147", "and where?")
        .await;
    assert!(twiml.contains("Scripted fallback"), "{twiml}");

    // An ordinary reply goes to the model, whose decision ends the conversation.
    llm.answer_next(LlmAnswer::Content(
        r#"{"reply": "Wonderful, we will see you at 10am on January 8.", "resolution": "resolved"}"#.to_owned(),
    ));
    let (_, twiml) = twilio
        .inbound(&app.base, "+15555550147", "ok I can make it at 10")
        .await;
    assert!(
        twiml.contains("Wonderful, we will see you at 10am on January 8."),
        "{twiml}"
    );
    app.scheduler.run_due_now().await.unwrap();
    let ended = app.sequence(&key, id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    assert_eq!(ended["outreach"][0]["sms"]["ended_reason"], "resolved");

    let requests = llm.requests();
    assert_eq!(requests.len(), 3);
    let messages = requests[2]["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(
        messages[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("You confirm appointments")
    );
    assert_eq!(messages[1]["role"], "assistant");
    assert!(
        messages[1]["content"]
            .as_str()
            .unwrap()
            .starts_with("Hi Ana")
    );
    assert_eq!(
        messages.last().unwrap()["content"],
        "ok I can make it at 10"
    );
    assert_eq!(requests[2]["response_format"]["type"], "json_object");

    // A new conversation: STOP is the script's alone.
    let (_, sequence) = app
        .post(
            &key,
            "/v1/sequences",
            json!({ "template_id": template["id"],
            "contact": { "phone_number": "+15555550148", "time_zone": "America/Denver" } }),
        )
        .await;
    app.scheduler.run_due_now().await.unwrap();
    let (_, twiml) = twilio.inbound(&app.base, "+15555550148", "STOP").await;
    assert!(!twiml.contains("<Message>"), "{twiml}");
    assert_eq!(
        llm.requests().len(),
        3,
        "the model was not asked about STOP"
    );
    app.scheduler.run_due_now().await.unwrap();
    let (_, ended) = app
        .get(&key, &format!("/v1/sequences/{}", sequence["id"]))
        .await;
    assert_eq!(
        ended["outreach"][0]["sms"]["ended_reason"],
        "contact-opt-out"
    );
}

#[tokio::test]
async fn a_replayed_text_is_not_answered_twice_and_a_late_stop_still_suppresses() {
    let f = fixture().await;
    let id = f.enroll("+15555550149").await;
    f.run().await;
    let params = [
        ("MessageSid", "SM000000000000000000000000000000aa"),
        ("AccountSid", support::fake_twilio::ACCOUNT_SID),
        // Twilio names the service of the number a text was sent to.
        ("MessagingServiceSid", SERVICE_SID),
        ("From", "+15555550149"),
        ("To", support::fake_twilio::OUR_NUMBER),
        ("Body", "who is this?"),
    ];
    let (status, first) = f
        .twilio
        .post_signed(
            &f.app.base,
            "/providers/twilio/inbound",
            &params,
            AUTH_TOKEN,
        )
        .await;
    assert_eq!(status, 200);
    assert!(first.contains("<Message>"), "{first}");
    let (status, again) = f
        .twilio
        .post_signed(
            &f.app.base,
            "/providers/twilio/inbound",
            &params,
            AUTH_TOKEN,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        !again.contains("<Message>"),
        "the same message is answered once: {again}"
    );

    // The contact goes quiet; the conversation times out with one reply in it.
    f.app
        .clock
        .advance(std::time::Duration::from_secs(25 * 3600));
    f.run().await;
    let ended = f.sequence(id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    let transcript = ended["outreach"][0]["sms"]["transcript"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        transcript.matches("User: who is this?").count(),
        1,
        "{transcript}"
    );

    // A STOP after the end still puts the number on the suppression list.
    let twiml = f.text("+15555550149", "STOP").await;
    assert!(!twiml.contains("<Message>"), "{twiml}");
    let (_, suppressions) = f.app.get(&f.key, "/v1/suppressions").await;
    assert!(
        suppressions["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["phone_number"] == "+15555550149" && s["reason"] == "opt-out"),
        "{suppressions}"
    );
}

// ---------------------------------------------------------------------------------------------
// Contact safety: a cancel closes the conversation; no STOP is ever lost.
// ---------------------------------------------------------------------------------------------

impl Fixture {
    async fn suppressed(&self, phone: &str) -> bool {
        self.app
            .suppression_reason(&self.key, phone)
            .await
            .as_deref()
            == Some("opt-out")
    }
}

#[tokio::test]
async fn a_cancelled_sequences_conversation_stops_replying_and_a_stop_still_suppresses() {
    let f = fixture().await;
    let id = f.enroll("+15555550160").await;
    f.run().await;
    assert_eq!(f.twilio.sent().len(), 1);
    let (status, _) = f
        .app
        .post(&f.key, &format!("/v1/sequences/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let report = f.sequence(id).await;
    assert_eq!(report["outreach"][0]["sms"]["status"], "ended", "{report}");

    let twiml = f.text("+15555550160", "YES").await;
    assert!(
        !twiml.contains("<Message>"),
        "a cancelled conversation is not answered: {twiml}"
    );
    let twiml = f.text("+15555550160", "STOP").await;
    assert!(!twiml.contains("<Message>"), "{twiml}");
    assert!(f.suppressed("+15555550160").await, "the STOP was kept");
    f.run().await;
    assert_eq!(f.twilio.sent().len(), 1, "nothing more was sent");
}

#[tokio::test]
async fn racing_texts_and_time_outs_never_lose_a_stop() {
    let f = fixture().await;
    let racing_a_reply: Vec<String> = (0..6).map(|i| format!("+1555555017{i}")).collect();
    let racing_the_timeout: Vec<String> = (0..6).map(|i| format!("+1555555018{i}")).collect();
    for phone in racing_a_reply.iter().chain(&racing_the_timeout) {
        f.enroll(phone).await;
    }
    f.run().await;
    assert_eq!(f.twilio.sent().len(), 12);

    // "YES" and "STOP" from the same patient at the same moment: whichever ends the
    // conversation first, the STOP suppresses.
    let pairs = racing_a_reply.iter().map(|phone| async {
        tokio::join!(f.text(phone, "YES"), f.text(phone, "STOP"));
    });
    futures::future::join_all(pairs).await;
    // A STOP arriving as the conversation times out.
    f.app
        .clock
        .advance(std::time::Duration::from_secs(25 * 3600));
    let stops = racing_the_timeout
        .iter()
        .map(|phone| async { f.text(phone, "STOP").await });
    tokio::join!(futures::future::join_all(stops), f.run());
    f.run().await;

    for phone in racing_a_reply.iter().chain(&racing_the_timeout) {
        assert!(f.suppressed(phone).await, "{phone} was not suppressed");
    }
}

#[tokio::test]
async fn a_carrier_opt_out_reported_before_the_send_is_recorded_still_suppresses() {
    let f = fixture().await;
    f.enroll("+15555550161").await;
    f.run().await;
    // A status callback for a message whose send answer Clarion has not recorded (yet):
    // Twilio error 21610, the recipient unsubscribed through the carrier.
    let (status, _) = f
        .twilio
        .post_signed(
            &f.app.base,
            "/providers/twilio/status",
            &[
                ("MessageSid", "SM00000000000000000000000000ffffff"),
                ("MessageStatus", "undelivered"),
                ("AccountSid", support::fake_twilio::ACCOUNT_SID),
                ("MessagingServiceSid", SERVICE_SID),
                ("To", "+15555550161"),
                ("ErrorCode", "21610"),
            ],
            AUTH_TOKEN,
        )
        .await;
    assert_eq!(status, 200);
    assert!(f.suppressed("+15555550161").await);
}

/// A reply that arrives before Clarion has recorded the opening text it answers (Twilio's answer
/// to the send still on its way back) waits for that record and reaches the conversation the
/// text opened, instead of finding none and going unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_overtakes_the_record_of_its_opening_text_reaches_its_conversation() {
    let f = fixture().await;
    f.twilio.hold_sends();
    let id = f.enroll("+15555550170").await;
    let scheduler = f.app.scheduler.clone();
    let sending = tokio::spawn(async move { scheduler.run_due_now().await });
    support::eventually("the opening text reaches Twilio", || async {
        !f.twilio.sent().is_empty()
    })
    .await;
    // The patient answers at once; Twilio has not answered Clarion's send yet.
    let mut reply = tokio::spawn({
        let (twilio, base) = (f.twilio.clone(), f.app.base.clone());
        async move { twilio.inbound(&base, "+15555550170", "YES").await }
    });
    // The reply waits for the record of the text it answers (it was answered with nothing
    // at once before).
    if let Ok(answered) = tokio::time::timeout(Duration::from_millis(300), &mut reply).await {
        panic!("the reply did not wait for its conversation: {answered:?}");
    }
    f.twilio.release_sends();
    let (status, twiml) = reply.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        twiml.contains("<Message>Thank you, see you then!</Message>"),
        "{twiml}"
    );
    sending.await.unwrap().unwrap();
    f.run().await;
    let sequence = f.sequence(id).await;
    assert_eq!(sequence["status"], "ended", "{sequence}");
    assert!(transcript(&sequence).contains("YES"), "{sequence}");
}

// ---------------------------------------------------------------------------------------------
// Tenants: a reply reaches only the organisation whose sender it was sent to.
// ---------------------------------------------------------------------------------------------

const CLINIC_A_NUMBER: &str = "+15555550101";
const CLINIC_B_NUMBER: &str = "+15555550102";

/// An organisation with a one-text template; answers (org id, key, template id).
pub(crate) async fn texting_org(app: &TestApp, name: &str) -> (clarion_store::OrgId, String, i64) {
    let (org, key) = app.org(name).await;
    let (status, assistant) = app
        .post(&key, "/v1/assistants", json!({
            "name": "Texter", "channel": "sms",
            "config": { "script": {
                "opening": "Hi, your appointment is on {{appointment_date}}. Reply YES to confirm.",
                "intents": [ { "name": "confirm", "keywords": ["yes"], "reply": "Thank you!", "resolution": "resolved" } ],
                "fallback": "Please reply YES.", "max_turns": 3
            } }
        }))
        .await;
    assert_eq!(status, 201, "{assistant}");
    let (status, template) = app
        .post(&key, "/v1/sequence-templates", json!({
            "name": "One text", "calling_hours": null, "sms_timeout": "24h", "stop_on": ["resolved"],
            "steps": [ { "type": "sms", "assistant_id": assistant["id"] } ]
        }))
        .await;
    assert_eq!(status, 201, "{template}");
    (org, key, template["id"].as_i64().unwrap())
}

pub(crate) async fn enroll_in(app: &TestApp, key: &str, template: i64, phone: &str) -> i64 {
    app.enroll(
        key,
        json!({
            "template_id": template,
            "contact": { "phone_number": phone, "time_zone": "America/Denver" },
            "variables": { "appointment_date": "January 8" },
        }),
    )
    .await
}

/// A text from `from` to our number `to` (not through a Messaging Service), with `sid`.
pub(crate) async fn text_to(
    twilio: &FakeTwilio,
    app: &TestApp,
    sid: &str,
    from: &str,
    to: &str,
    body: &str,
) -> String {
    let (status, twiml) = twilio
        .post_signed(
            &app.base,
            "/providers/twilio/inbound",
            &[
                ("MessageSid", sid),
                ("AccountSid", support::fake_twilio::ACCOUNT_SID),
                ("From", from),
                ("To", to),
                ("Body", body),
            ],
            AUTH_TOKEN,
        )
        .await;
    assert_eq!(status, 200, "{twiml}");
    twiml
}

fn transcript(sequence: &Value) -> String {
    sequence["outreach"][0]["sms"]["transcript"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_reply_reaches_only_the_conversation_begun_from_the_number_it_was_sent_to() {
    use clarion_providers::twilio::wire::Sender;
    let twilio = FakeTwilio::start().await;
    // Organisations 1 and 2 each text from a number of their own.
    let senders = [
        (
            clarion_store::OrgId(1),
            Sender::From(CLINIC_A_NUMBER.to_owned()),
        ),
        (
            clarion_store::OrgId(2),
            Sender::From(CLINIC_B_NUMBER.to_owned()),
        ),
    ];
    let app = spawn_app_with(AppOptions {
        twilio: Some(twilio.settings()),
        twilio_senders: senders.into_iter().collect(),
        ..AppOptions::default()
    })
    .await;
    let (a, key_a, template_a) = texting_org(&app, "Clinic A").await;
    let (b, key_b, template_b) = texting_org(&app, "Clinic B").await;
    assert_eq!((a.0, b.0), (1, 2));
    let patient = "+15555550165";
    let at_a = enroll_in(&app, &key_a, template_a, patient).await;
    // Clinic B enrolls the same patient afterwards: its conversation is the newer one.
    let at_b = enroll_in(&app, &key_b, template_b, patient).await;
    app.run_due().await;
    let sent = twilio.sent();
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .any(|m| m.sender == Sender::From(CLINIC_A_NUMBER.to_owned()))
    );
    assert!(
        sent.iter()
            .any(|m| m.sender == Sender::From(CLINIC_B_NUMBER.to_owned()))
    );

    // The patient answers clinic A's number.
    let twiml = text_to(
        &twilio,
        &app,
        "SM0000000000000000000000000000a001",
        patient,
        CLINIC_A_NUMBER,
        "YES, my chemo is on Tuesday",
    )
    .await;
    assert!(twiml.contains("Thank you!"), "{twiml}");
    app.run_due().await;
    let seen_by_a = app.sequence(&key_a, at_a).await;
    assert_eq!(seen_by_a["status"], "ended");
    assert!(transcript(&seen_by_a).contains("chemo"));
    let seen_by_b = app.sequence(&key_b, at_b).await;
    assert_eq!(seen_by_b["status"], "active");
    assert!(!seen_by_b.to_string().contains("chemo"), "{seen_by_b}");

    // A STOP to clinic B's number suppresses for B, the organisation that texted from it.
    text_to(
        &twilio,
        &app,
        "SM0000000000000000000000000000a002",
        patient,
        CLINIC_B_NUMBER,
        "STOP",
    )
    .await;
    let (_, b_list) = app.get(&key_b, "/v1/suppressions").await;
    assert_eq!(b_list["data"][0]["phone_number"], patient);
}

#[tokio::test]
async fn on_a_shared_sender_a_reply_that_could_be_either_organisations_goes_to_neither_and_stop_suppresses_for_both()
 {
    let f = fixture().await;
    let (_, key_b, template_b) = texting_org(&f.app, "Clinic B").await;
    let patient = "+15555550166";
    let at_a = f.enroll(patient).await;
    let at_b = enroll_in(&f.app, &key_b, template_b, patient).await;
    f.run().await;
    assert_eq!(f.twilio.sent().len(), 2);

    let twiml = f.text(patient, "yes, DOB 01/02/1960").await;
    assert!(!twiml.contains("<Message>"), "{twiml}");
    for (key, id) in [(&f.key, at_a), (&key_b, at_b)] {
        let sequence = f.app.sequence(key, id).await;
        assert!(!sequence.to_string().contains("DOB"), "{sequence}");
    }
    f.text(patient, "STOP").await;
    assert!(f.suppressed(patient).await);
    let (_, b_list) = f.app.get(&key_b, "/v1/suppressions").await;
    assert_eq!(b_list["data"][0]["phone_number"], patient);
}

#[tokio::test]
async fn a_replayed_text_is_refused_after_its_conversation_ended() {
    let f = fixture().await;
    let patient = "+15555550167";
    let first = f.enroll(patient).await;
    f.run().await;
    let params = [
        ("MessageSid", "SM0000000000000000000000000000b001"),
        ("AccountSid", support::fake_twilio::ACCOUNT_SID),
        ("MessagingServiceSid", SERVICE_SID),
        ("From", patient),
        ("To", support::fake_twilio::OUR_NUMBER),
        ("Body", "YES"),
    ];
    let (_, twiml) = f
        .twilio
        .post_signed(
            &f.app.base,
            "/providers/twilio/inbound",
            &params,
            AUTH_TOKEN,
        )
        .await;
    assert!(twiml.contains("<Message>"), "{twiml}");
    f.run().await;
    assert_eq!(f.sequence(first).await["status"], "ended");

    // A new sequence for the same patient; the captured "YES" is replayed.
    let second = f.enroll(patient).await;
    f.run().await;
    let (status, twiml) = f
        .twilio
        .post_signed(
            &f.app.base,
            "/providers/twilio/inbound",
            &params,
            AUTH_TOKEN,
        )
        .await;
    assert_eq!(status, 200);
    assert!(!twiml.contains("<Message>"), "{twiml}");
    f.run().await;
    assert_eq!(
        f.sequence(second).await["status"],
        "active",
        "the replay resolved nothing"
    );
}

#[tokio::test]
async fn a_text_for_another_twilio_account_or_number_is_ignored() {
    let f = fixture().await;
    let patient = "+15555550168";
    let id = f.enroll(patient).await;
    f.run().await;
    for (account, service) in [
        ("AC11111111111111111111111111111111", SERVICE_SID),
        (
            support::fake_twilio::ACCOUNT_SID,
            "MG11111111111111111111111111111111",
        ),
    ] {
        let (status, twiml) = f
            .twilio
            .post_signed(
                &f.app.base,
                "/providers/twilio/inbound",
                &[
                    ("MessageSid", "SM0000000000000000000000000000c001"),
                    ("AccountSid", account),
                    ("MessagingServiceSid", service),
                    ("From", patient),
                    ("To", "+15555550199"),
                    ("Body", "YES"),
                ],
                AUTH_TOKEN,
            )
            .await;
        assert_eq!(status, 200);
        assert!(!twiml.contains("<Message>"), "{twiml}");
    }
    assert_eq!(f.sequence(id).await["status"], "active");
}

/// Issue 17 defect 2: a script that could multiply a variable without bound is refused when
/// the assistant is created, naming the field and echoing nothing.
#[tokio::test]
async fn oversized_scripts_are_refused_at_assistant_creation() {
    let f = fixture().await;
    let script = |mutate: &dyn Fn(&mut Value)| {
        let mut script = json!({
            "opening": "Hi {{first_name}}", "fallback": "Sorry?",
            "intents": [ { "name": "yes", "keywords": ["yes"], "reply": "Thanks", "resolution": "resolved" } ]
        });
        mutate(&mut script);
        json!({ "name": "Texter", "channel": "sms", "config": { "script": script } })
    };
    let cases: Vec<(Value, &str)> = vec![
        // The issue's opening: 500 placeholders.
        (
            script(&|s| s["opening"] = json!("{{x}}".repeat(500))),
            "config.script.opening",
        ),
        (
            script(&|s| s["fallback"] = json!("f".repeat(1_601))),
            "config.script.fallback",
        ),
        (
            script(&|s| s["intents"][0]["reply"] = json!("{{a}}".repeat(21))),
            "config.script.intents[0].reply",
        ),
        (
            script(&|s| s["help_text"] = json!("h".repeat(1_601))),
            "config.script.help_text",
        ),
        (
            script(&|s| s["closing"] = json!("{{c}}".repeat(21))),
            "config.script.closing",
        ),
        // The whole config: 64 KiB at most, whatever is in it.
        (
            json!({ "name": "Caller", "channel": "call", "config": { "notes": "n".repeat(70_000) } }),
            "config",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = f.app.post(&f.key, "/v1/assistants", body).await;
        assert_eq!(status, 422, "{field}: {error}");
        assert_eq!(error["error"]["field"], field, "{error}");
        let text = error.to_string();
        assert!(
            !text.contains("{{x}}{{x}}") && !text.contains("fffff") && !text.contains("nnnnn"),
            "{text}"
        );
    }
    // Within the limits: accepted.
    let (status, created) = f
        .app
        .post(
            &f.key,
            "/v1/assistants",
            script(&|s| s["opening"] = json!("{{a}} ".repeat(20))),
        )
        .await;
    assert_eq!(status, 201, "{created}");
}

/// Issue 17 defect 2: enrollment refuses oversized variables (single, batch — which is what
/// `clarion enroll` posts) and variables that would make a script's text longer than one SMS.
#[tokio::test]
async fn oversized_variables_are_refused_at_enrollment() {
    let f = fixture().await;
    let enroll = |variables: Value| {
        json!({
            "template_id": f.template,
            "contact": { "phone_number": "+15555550141", "time_zone": "America/Denver", "name": "Ana Lopez" },
            "variables": variables,
        })
    };
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("v{i}"), json!(i))).collect();
    let total: serde_json::Map<String, Value> = (0..20)
        .map(|i| (format!("v{i}"), json!("t".repeat(1_000))))
        .collect();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "appointment_date": "x".repeat(100_000) }),
            "variables.appointment_date",
        ),
        (json!({ "other": "y".repeat(1_025) }), "variables.other"),
        (Value::Object(many), "variables"),
        (Value::Object(total), "variables"),
        // Each value fits, but the opening would render past 1,600 characters.
        (
            json!({ "appointment_date": "d".repeat(1_024), "first_name": "z".repeat(1_000) }),
            "variables",
        ),
    ];
    for (variables, field) in &cases {
        let (status, error) = f
            .app
            .post(&f.key, "/v1/sequences", enroll(variables.clone()))
            .await;
        assert_eq!(status, 422, "{field}: {error}");
        assert_eq!(error["error"]["field"], *field, "{error}");
        let text = error.to_string();
        for echo in ["xxxxx", "yyyyy", "ttttt", "ddddd", "zzzzz"] {
            assert!(!text.contains(echo), "{text}");
        }
    }
    // The batch endpoint answers per item, with the item's path.
    let items: Vec<Value> = cases
        .iter()
        .map(|(variables, _)| {
            json!({ "contact": { "phone_number": "+15555550142", "time_zone": "America/Denver" }, "variables": variables })
        })
        .chain([json!({ "contact": { "phone_number": "+15555550143", "time_zone": "America/Denver" },
                        "variables": { "appointment_date": "January 8" } })])
        .collect();
    let (status, batch) = f
        .app
        .post(
            &f.key,
            "/v1/sequences/batch",
            json!({ "template_id": f.template, "items": items }),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    let data = batch["data"].as_array().unwrap();
    for (index, (_, field)) in cases.iter().enumerate() {
        assert_eq!(data[index]["status"], 422, "{}", data[index]);
        assert_eq!(
            data[index]["error"]["field"],
            format!("items[{index}].{field}")
        );
    }
    assert_eq!(data[cases.len()]["status"], 201, "{}", data[cases.len()]);
    // Nothing refused was stored: only the one valid item opened a conversation.
    f.run().await;
    assert_eq!(f.twilio.sent().len(), 1);
    assert!(f.twilio.sent()[0].body.contains("January 8"));
}

// ---------------------------------------------------------------------------------------------
// Revocations in words (issue 14, defect 7): not a STOP keyword, still an opt-out.
// ---------------------------------------------------------------------------------------------

impl Fixture {
    /// A template of two texts an hour apart that stops only on `resolved`: a second text is
    /// what an opt-out missed would send.
    async fn two_texts_template(&self) -> i64 {
        let (status, template) = self
            .app
            .get(
                &self.key,
                &format!("/v1/sequence-templates/{}", self.template),
            )
            .await;
        assert_eq!(status, 200, "{template}");
        let assistant = template["steps"][0]["assistant_id"].clone();
        let (status, template) = self
            .app
            .post(&self.key, "/v1/sequence-templates", json!({
                "name": "Two texts", "calling_hours": null, "sms_timeout": "30m", "stop_on": ["resolved"],
                "steps": [ { "type": "sms", "assistant_id": assistant },
                           { "type": "sms", "assistant_id": assistant, "delay": "1h" } ]
            }))
            .await;
        assert_eq!(status, 201, "{template}");
        template["id"].as_i64().unwrap()
    }

    async fn events(&self, id: i64) -> Vec<Value> {
        self.app.events(&self.key, id).await
    }
}

const CONFIRMATION: &str = clarion_providers::sms_assistant::DEFAULT_OPT_OUT_CONFIRMATION;

#[tokio::test]
async fn a_revocation_in_words_suppresses_the_number_is_confirmed_once_and_nothing_more_is_sent() {
    let f = fixture().await;
    let template = f.two_texts_template().await;
    let phone = "+15555550190";
    let id = f
        .app
        .enroll(&f.key, json!({
            "template_id": template,
            "contact": { "phone_number": phone, "time_zone": "America/Denver", "name": "Ana Lopez" },
            "variables": { "appointment_date": "January 8" },
        }))
        .await;
    f.run().await;
    assert_eq!(f.twilio.sent().len(), 1, "the opening text");

    let twiml = f.text(phone, "Please stop texting me").await;
    assert_eq!(
        twiml.matches("<Message>").count(),
        1,
        "one confirmation: {twiml}"
    );
    assert!(twiml.contains(CONFIRMATION), "{twiml}");
    f.run().await;

    let ended = f.sequence(id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    assert_eq!(
        ended["outreach"][0]["sms"]["ended_reason"],
        "contact-opt-out"
    );
    assert_eq!(ended["outreach"].as_array().unwrap().len(), 1, "{ended}");
    assert!(f.suppressed(phone).await, "the number is suppressed");
    let events = f.events(id).await;
    let detected = events
        .iter()
        .find(|event| event["type"] == "opt-out-detected")
        .unwrap_or_else(|| panic!("no opt-out-detected event: {events:?}"));
    assert_eq!(detected["detail"]["channel"], "sms");
    assert_eq!(detected["detail"]["source"], "phrase");
    assert_eq!(detected["detail"]["matched"], "stop-contacting");

    // Said again: no second confirmation. A day later: no second step, no text at all.
    let twiml = f.text(phone, "don't text me again").await;
    assert!(!twiml.contains("<Message>"), "confirmed once only: {twiml}");
    f.app
        .clock
        .advance(std::time::Duration::from_secs(24 * 3600));
    f.run().await;
    assert_eq!(f.twilio.sent().len(), 1, "nothing more was sent");
    assert_eq!(
        f.sequence(id).await["outreach"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_revocation_in_words_between_conversations_suppresses_and_is_confirmed_once() {
    let f = fixture().await;
    let phone = "+15555550191";
    let id = f.enroll(phone).await;
    f.run().await;
    // The conversation resolves; later the patient asks to be taken off the list.
    let twiml = f.text(phone, "YES").await;
    assert!(twiml.contains("Thank you, see you then!"), "{twiml}");
    f.run().await;
    assert_eq!(f.sequence(id).await["status"], "ended");
    assert!(!f.suppressed(phone).await);

    let twiml = f.text(phone, "Remove me from your list.").await;
    assert_eq!(twiml.matches("<Message>").count(), 1, "{twiml}");
    assert!(twiml.contains(CONFIRMATION), "{twiml}");
    assert!(f.suppressed(phone).await, "the number is suppressed");
    let twiml = f.text(phone, "Remove me from your list.").await;
    assert!(!twiml.contains("<Message>"), "confirmed once only: {twiml}");

    let (status, refused) = f
        .app
        .post(
            &f.key,
            "/v1/sequences",
            json!({
                "template_id": f.template,
                "contact": { "phone_number": phone, "time_zone": "America/Denver" },
            }),
        )
        .await;
    assert_eq!(status, 422, "not enrolled again: {refused}");
}

#[tokio::test]
async fn ordinary_replies_that_mention_stopping_are_not_opt_outs() {
    let f = fixture().await;
    let phone = "+15555550192";
    let id = f.enroll(phone).await;
    f.run().await;
    for said in ["I stopped taking my meds", "can you call me later"] {
        let twiml = f.text(phone, said).await;
        assert!(
            twiml.contains("<Message>Sorry, please reply YES or NO.</Message>"),
            "{said}: {twiml}"
        );
    }
    f.run().await;
    assert_eq!(f.sequence(id).await["status"], "active");
    assert!(!f.suppressed(phone).await);
}
