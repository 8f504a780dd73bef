//! Sequences end to end, in process: assistants, templates, enrollment, the engine on a
//! manual clock, the simulator, the report in the outbox, delivery to a receiver.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use clarion_delivery::Clock as _;

use crate::support::{Answer, TestApp, TestReceiver, schema_errors, spawn_app};
use serde_json::{Value, json};

struct Fixture {
    app: TestApp,
    key: String,
    receiver: TestReceiver,
    call_assistant: i64,
    sms_assistant: i64,
}

async fn fixture() -> Fixture {
    let app = spawn_app().await;
    let (_org, key) = app.org("Riverside Family Clinic").await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    app.endpoint(&key, &receiver.url).await;
    let (status, call) = app
        .post(&key, "/v1/assistants", json!({
            "name": "Reminder caller", "channel": "call",
            "config": { "purpose": "confirm the upcoming appointment", "organisation_name": "Riverside Family Clinic" },
            "custom_fields": [ { "name": "appointment_confirmed", "type": "boolean" } ]
        }))
        .await;
    assert_eq!(status, 201, "{call}");
    let (status, sms) = app
        .post(&key, "/v1/assistants", json!({
            "name": "Reminder texter", "channel": "sms",
            "config": { "purpose": "confirm the upcoming appointment", "organisation_name": "Riverside Family Clinic" },
            "custom_fields": [ { "name": "appointment_confirmed", "type": "boolean" } ]
        }))
        .await;
    assert_eq!(status, 201, "{sms}");
    Fixture {
        app,
        key,
        receiver,
        call_assistant: call["id"].as_i64().unwrap(),
        sms_assistant: sms["id"].as_i64().unwrap(),
    }
}

impl Fixture {
    async fn template(&self, body: Value) -> i64 {
        let (status, template) = self
            .app
            .post(&self.key, "/v1/sequence-templates", body)
            .await;
        assert_eq!(status, 201, "{template}");
        template["id"].as_i64().unwrap()
    }

    async fn enroll(&self, template: i64, phone: &str, zone: &str, outcomes: &[&str]) -> Value {
        let (status, sequence) = self
            .app
            .post(&self.key, "/v1/sequences", json!({
                "template_id": template,
                "contact": { "phone_number": phone, "time_zone": zone, "name": "Alex Rivera", "external_id": "MRN-1" },
                "variables": { "appointment_date": "January 8", "provider_name": "Dr. Patel" },
                "simulation": { "outcomes": outcomes },
            }))
            .await;
        assert_eq!(status, 201, "{sequence}");
        sequence
    }

    /// Runs the engine and the dispatcher, moving the clock an hour at a time, until the
    /// sequence has ended and its report was delivered (or the simulated days run out).
    async fn run_until_ended(&self, id: i64) -> Value {
        for _ in 0..24 * 14 {
            self.app.run_due().await;
            let sequence = self.app.sequence(&self.key, id).await;
            if sequence["status"] == "ended" {
                return sequence;
            }
            self.app.clock.advance(Duration::from_secs(3600));
        }
        panic!("sequence {id} did not end within two simulated weeks");
    }

    /// The reason and end of the sequence's first recorded deferral.
    async fn first_deferral(&self, id: i64) -> (String, chrono::DateTime<chrono::Utc>) {
        let (_, events) = self
            .app
            .get(&self.key, &format!("/v1/sequences/{id}/events"))
            .await;
        let deferred = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "deferred")
            .unwrap_or_else(|| panic!("no deferral recorded: {events}"));
        let until = deferred["detail"]["until"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        (
            deferred["detail"]["reason"].as_str().unwrap().to_owned(),
            until,
        )
    }

    fn delivered(&self, id: i64) -> Value {
        let received = self.receiver.received();
        let request = received
            .iter()
            .find(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["id"] == id)
            .unwrap_or_else(|| panic!("no report for sequence {id} reached the receiver"));
        serde_json::from_slice(&request.body).unwrap()
    }
}

#[tokio::test]
async fn every_simulator_outcome_ends_in_a_schema_valid_report_with_the_right_outreach() {
    let f = fixture().await;
    let call_template = f
        .template(json!({ "name": "One call", "calling_hours": null,
            "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    let sms_template = f
        .template(
            json!({ "name": "One SMS", "calling_hours": null, "sms_timeout": "24h",
            "steps": [ { "type": "sms", "assistant_id": f.sms_assistant } ] }),
        )
        .await;
    let calls = [
        ("resolved", "resolved", None),
        ("unresolved", "unresolved", None),
        ("voicemail", "voicemail", None),
        ("no-answer", "no-answer", None),
        ("busy", "busy", None),
        ("failed", "failed", None),
        ("declined", "unresolved", Some("declined")),
        ("escalated", "unresolved", Some("escalated")),
        (
            "requested-callback",
            "unresolved",
            Some("requested-callback"),
        ),
        ("customer-dropped", "unresolved", Some("customer-dropped")),
        ("assistant-ended", "unresolved", Some("assistant-ended")),
        ("opt-out", "unresolved", Some("opt-out")),
    ];
    let mut opted_out = Vec::new();
    for (i, (scripted, outcome, failure_reason)) in calls.iter().enumerate() {
        let phone = format!("+1555555{:04}", 300 + i);
        let sequence = f
            .enroll(call_template, &phone, "America/New_York", &[scripted])
            .await;
        let id = sequence["id"].as_i64().unwrap();
        if *scripted == "opt-out" {
            opted_out.push(id);
        }
        let ended = f.run_until_ended(id).await;
        let delivered = f.delivered(id);
        assert_eq!(
            ended, delivered,
            "GET /v1/sequences/{id} equals the delivered body"
        );
        assert_eq!(
            schema_errors(&delivered),
            Vec::<String>::new(),
            "{scripted}"
        );
        let outreach = delivered["outreach"].as_array().unwrap();
        assert_eq!(outreach.len(), 1, "{scripted}");
        assert_eq!(outreach[0]["type"], "call");
        assert_eq!(outreach[0]["step"], 1);
        let call = &outreach[0]["call"];
        assert_eq!(call["outcome"], *outcome, "{scripted}");
        assert_eq!(
            call["failure_reason"],
            failure_reason.map_or(Value::Null, |r| json!(r)),
            "{scripted}"
        );
        assert_eq!(call["call_status"], "ended");
        assert_eq!(call["destination_number"], phone.as_str());
        let description = delivered["outcome_description"].as_str().unwrap();
        assert!(
            description.contains("step") && description.contains("call"),
            "{description}"
        );
    }
    let sms = [
        ("resolved", "resolved"),
        ("no-reply", "conversation-timeout"),
        ("declined", "contact-declined"),
        ("opt-out", "contact-opt-out"),
        ("error", "system-error"),
    ];
    for (i, (scripted, ended_reason)) in sms.iter().enumerate() {
        let phone = format!("+1555555{:04}", 400 + i);
        let sequence = f
            .enroll(sms_template, &phone, "America/Chicago", &[scripted])
            .await;
        let id = sequence["id"].as_i64().unwrap();
        if *scripted == "opt-out" {
            opted_out.push(id);
        }
        f.run_until_ended(id).await;
        let delivered = f.delivered(id);
        assert_eq!(
            schema_errors(&delivered),
            Vec::<String>::new(),
            "{scripted}"
        );
        let step = &delivered["outreach"][0];
        assert_eq!(step["type"], "sms");
        assert_eq!(step["sms"]["ended_reason"], *ended_reason, "{scripted}");
        assert_eq!(step["sms"]["status"], "ended");
        assert!(
            step["sms"]["transcript"]
                .as_str()
                .unwrap()
                .starts_with("AI:"),
            "{step}"
        );
    }
    // Opt-outs put the numbers on the suppression list, and their sequences' events say what
    // in the simulated transcript was the patient's revocation (issue 14, defect 7).
    for id in &opted_out {
        let (status, events) = f
            .app
            .get(&f.key, &format!("/v1/sequences/{id}/events"))
            .await;
        assert_eq!(status, 200, "{events}");
        let detected = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "opt-out-detected")
            .unwrap_or_else(|| panic!("no opt-out-detected event: {events}"))
            .clone();
        assert!(
            ["transcript", "keyword", "phrase"]
                .contains(&detected["detail"]["source"].as_str().unwrap()),
            "{detected}"
        );
    }
    let (_, suppressions) = f.app.get(&f.key, "/v1/suppressions").await;
    let listed: Vec<&str> = suppressions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["phone_number"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&"+15555550311"), "{listed:?}");
    assert!(listed.contains(&"+15555550403"), "{listed:?}");
    assert_eq!(listed.len(), 2, "only the opt-outs: {listed:?}");
}

#[tokio::test]
async fn a_three_step_sequence_retries_calls_moves_on_and_stops_when_resolved() {
    let f = fixture().await;
    let template = f
        .template(json!({
            "name": "Appointment reminder", "calling_hours": null, "stop_on": ["resolved", "opt-out"],
            "steps": [
                { "type": "call", "assistant_id": f.call_assistant, "max_attempts": 2, "retry_delay": "4h" },
                { "type": "sms", "assistant_id": f.sms_assistant, "delay": "1h" },
                { "type": "call", "assistant_id": f.call_assistant, "delay": "1d" },
            ]
        }))
        .await;
    let sequence = f
        .enroll(
            template,
            "+15555550150",
            "America/New_York",
            &["no-answer", "voicemail", "no-reply", "resolved"],
        )
        .await;
    let id = sequence["id"].as_i64().unwrap();
    let report = f.run_until_ended(id).await;
    assert_eq!(schema_errors(&report), Vec::<String>::new());
    let steps: Vec<(i64, &str)> = report["outreach"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_i64().unwrap(), s["type"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [(1, "call"), (1, "call"), (2, "sms"), (3, "call")]);
    assert_eq!(report["outreach"][0]["call"]["outcome"], "no-answer");
    assert_eq!(report["outreach"][1]["call"]["outcome"], "voicemail");
    assert!(report["outreach"][1]["call"]["voicemail_message"].is_string());
    assert_eq!(report["outreach"][3]["call"]["outcome"], "resolved");
    let description = report["outcome_description"].as_str().unwrap();
    assert!(
        description.to_lowercase().contains("resolved") && description.contains("step 3"),
        "{description}"
    );

    // The history explains every move.
    let (_, events) = f
        .app
        .get(&f.key, &format!("/v1/sequences/{id}/events?limit=200"))
        .await;
    let kinds: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"retry-scheduled"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "encounter-started").count(),
        4,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"ended"));
}

#[tokio::test]
async fn calling_hours_defer_a_due_step_to_the_contacts_morning_and_say_why() {
    let f = fixture().await;
    let template = f
        .template(json!({ "name": "Daytime call", "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    // 13:00 UTC is 03:00 in Honolulu (UTC-10, no DST): outside 08:00-21:00.
    let day = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(13, 0, 0)
        .unwrap()
        .and_utc();
    f.app.clock.set_millis(day.timestamp_millis());
    let sequence = f
        .enroll(template, "+15555550160", "Pacific/Honolulu", &["resolved"])
        .await;
    let id = sequence["id"].as_i64().unwrap();
    f.app.scheduler.run_due_now().await.unwrap();
    let (reason, until) = f.first_deferral(id).await;
    assert_eq!(reason, "calling-hours");
    assert_eq!(
        until,
        day + chrono::Duration::hours(5),
        "08:00 in Honolulu is 18:00 UTC"
    );
    let current = f.app.sequence(&f.key, id).await;
    assert!(
        current["outreach"].as_array().unwrap().is_empty(),
        "nobody was called at 3 a.m."
    );

    // At 08:00 local the call goes out.
    f.app.clock.advance(Duration::from_secs(5 * 3600));
    f.app.scheduler.run_due_now().await.unwrap();
    let current = f.app.sequence(&f.key, id).await;
    assert_eq!(
        current["outreach"].as_array().unwrap().len(),
        1,
        "{current}"
    );
}

#[tokio::test]
async fn opted_out_numbers_are_never_enrolled_again_and_running_duplicates_are_refused() {
    let f = fixture().await;
    let template = f
        .template(json!({ "name": "Call", "calling_hours": null, "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    let first = f
        .enroll(template, "+15555550170", "America/New_York", &["opt-out"])
        .await;
    // While it runs, the same number cannot be enrolled in the same template again.
    let (status, error) = f
        .app
        .post(
            &f.key,
            "/v1/sequences",
            json!({ "template_id": template,
            "contact": { "phone_number": "+15555550170", "time_zone": "America/New_York" } }),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (409, Some("already_enrolled"))
    );
    f.run_until_ended(first["id"].as_i64().unwrap()).await;
    let (status, error) = f
        .app
        .post(
            &f.key,
            "/v1/sequences",
            json!({ "template_id": template,
            "contact": { "phone_number": "+15555550170", "time_zone": "America/New_York" } }),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "suppressed");
    assert_eq!(error["error"]["field"], "contact.phone_number");
    assert!(
        !error.to_string().contains("5555550170"),
        "errors never echo phone numbers"
    );
}

#[tokio::test]
async fn a_patients_opt_out_is_removed_only_with_a_new_consent_and_its_history_stays() {
    let f = fixture().await;
    let template = f
        .template(json!({ "name": "Call", "calling_hours": null, "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    let number = "+15555550175";
    let first = f
        .enroll(template, number, "America/New_York", &["opt-out"])
        .await;
    f.run_until_ended(first["id"].as_i64().unwrap()).await;
    let path = format!("/v1/suppressions/{number}");
    let enroll_again = || {
        f.app.post(
            &f.key,
            "/v1/sequences",
            json!({ "template_id": template,
                "contact": { "phone_number": number, "time_zone": "America/New_York" } }),
        )
    };

    // Without a consent the opt-out stays, and the number still cannot be enrolled.
    let (status, error) = f
        .app
        .request(reqwest::Method::DELETE, &f.key, &path, None)
        .await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "consent_required");
    assert_eq!(error["error"]["field"], "consent");
    let (status, error) = f
        .app
        .request(
            reqwest::Method::DELETE,
            &f.key,
            &path,
            Some(json!({ "consent": null })),
        )
        .await;
    assert_eq!(status, 409, "{error}");
    let (status, error) = enroll_again().await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (422, Some("suppressed"))
    );

    // A consent obtained before the opt-out is not a new one; a malformed one is a 422.
    let (status, error) = f
        .app
        .request(reqwest::Method::DELETE, &f.key, &path, Some(json!({ "consent": {
            "obtained_by": "Front desk (J. Okafor)", "obtained_at": "2001-01-01T00:00:00Z", "method": "written" } })))
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (409, Some("consent_predates_opt_out"))
    );
    let (status, error) = f
        .app
        .request(
            reqwest::Method::DELETE,
            &f.key,
            &path,
            Some(json!({ "consent": {
            "obtained_by": "Front desk", "obtained_at": "yesterday", "method": "written" } })),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "consent.obtained_at");

    // Another organisation neither sees the history nor removes the entry.
    let (_, other_key) = f.app.org("Other clinic").await;
    let history_path = format!("/v1/suppressions/{number}/history");
    assert_eq!(f.app.get(&other_key, &history_path).await.0, 404);

    // With a new consent it goes, and the history keeps both changes.
    let obtained_at = clarion_webhooks::Timestamp::from_unix_millis(f.app.clock.now_millis())
        .unwrap()
        .to_string();
    let (status, body) = f
        .app
        .request(
            reqwest::Method::DELETE,
            &f.key,
            &path,
            Some(json!({ "consent": {
            "obtained_by": "Front desk (J. Okafor)", "obtained_at": obtained_at,
            "method": "verbal", "note": "asked to be called again about results" } })),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = enroll_again().await;
    assert_eq!(status, 201);

    let (status, history) = f.app.get(&f.key, &history_path).await;
    assert_eq!(status, 200, "{history}");
    let changes = history["data"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{history}");
    assert_eq!(
        (
            &changes[0]["action"],
            &changes[0]["reason"],
            &changes[0]["actor"]
        ),
        (&json!("added"), &json!("opt-out"), &json!("patient"))
    );
    assert!(changes[0]["consent"].is_null());
    assert_eq!(changes[1]["action"], "removed");
    assert_eq!(changes[1]["reason"], "opt-out");
    assert!(
        changes[1]["actor"]
            .as_str()
            .unwrap()
            .starts_with("api-key:"),
        "{history}"
    );
    assert_eq!(
        changes[1]["consent"],
        json!({ "obtained_by": "Front desk (J. Okafor)", "obtained_at": obtained_at,
            "method": "verbal", "note": "asked to be called again about results" })
    );
}

#[tokio::test]
async fn an_operators_suppression_is_removed_without_consent_unless_the_patient_opted_out_since() {
    let f = fixture().await;
    let added = |number: &'static str| {
        f.app.post(
            &f.key,
            "/v1/suppressions",
            json!({ "phone_number": number, "reason": "wrong number" }),
        )
    };
    assert_eq!(added("+15555550176").await.0, 201);
    let (status, body) = f
        .app
        .request(
            reqwest::Method::DELETE,
            &f.key,
            "/v1/suppressions/+15555550176",
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (_, history) = f
        .app
        .get(&f.key, "/v1/suppressions/+15555550176/history")
        .await;
    let actions: Vec<(&str, &str)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["action"].as_str().unwrap(), c["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("added", "wrong number"), ("removed", "wrong number")]
    );

    // An operator's entry on which the patient then opts out (as the scheduler records a call
    // or SMS opt-out) becomes the patient's opt-out, protected as one.
    assert_eq!(added("+15555550177").await.0, 201);
    let org = f.app.store.authenticate(&f.key).await.unwrap().unwrap();
    let mut tx = f.app.store.begin().await.unwrap();
    f.app
        .store
        .suppress(
            &mut tx,
            org,
            "+15555550177",
            "opt-out",
            f.app.clock.now_millis(),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (status, error) = f
        .app
        .request(
            reqwest::Method::DELETE,
            &f.key,
            "/v1/suppressions/+15555550177",
            None,
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (409, Some("consent_required"))
    );
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_sequence() {
    let f = fixture().await;
    let template = f
        .template(json!({ "name": "Call", "calling_hours": null, "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    let body = json!({ "template_id": template, "contact": { "phone_number": "+15555550180", "time_zone": "Europe/London" } });
    let send = || async {
        let response = f
            .app
            .http
            .post(format!("{}/v1/sequences", f.app.base))
            .bearer_auth(&f.key)
            .header("Idempotency-Key", "enroll-180")
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    let (first_status, first) = send().await;
    let (second_status, second) = send().await;
    assert_eq!((first_status, second_status), (201, 200));
    assert_eq!(first["id"], second["id"]);
    let (_, list) = f.app.get(&f.key, "/v1/sequences").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

/// Issue 14, defect 3: a key reused for another patient must not silently answer the first
/// patient's sequence (the second patient would never be enrolled). The same request again,
/// even with its keys in another order and other whitespace, is still a replay.
#[tokio::test]
async fn an_idempotency_key_reused_with_another_body_is_refused_and_enrolls_no_one() {
    let f = fixture().await;
    let template = f
        .template(json!({ "name": "Call", "calling_hours": null, "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    let send = |body: String, key: &'static str| {
        let request = f
            .app
            .http
            .post(format!("{}/v1/sequences", f.app.base))
            .bearer_auth(&f.key)
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let first_body = format!(
        r#"{{"template_id": {template}, "contact": {{"phone_number": "+15555550181", "time_zone": "Europe/London"}}, "variables": {{"a": 1, "b": "x"}}}}"#
    );
    let (status, first) = send(first_body, "enroll-181").await;
    assert_eq!(status, 201, "{first}");
    // The same request: keys in another order, no whitespace, the default spelled out.
    let same_body = format!(
        r#"{{"variables":{{"b":"x","a":1}},"allow_concurrent":false,"contact":{{"time_zone":"Europe/London","phone_number":"+15555550181"}},"template_id":{template}}}"#
    );
    let (status, replayed) = send(same_body, "enroll-181").await;
    assert_eq!((status, &replayed["id"]), (200, &first["id"]), "{replayed}");
    // Another patient under the same key.
    let other_body = format!(
        r#"{{"template_id": {template}, "contact": {{"phone_number": "+15555550182", "time_zone": "Europe/London"}}, "variables": {{"a": 1, "b": "x"}}}}"#
    );
    let (status, refused) = send(other_body, "enroll-181").await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{refused}"
    );
    assert_eq!(refused["error"]["field"], "Idempotency-Key");
    assert!(
        !refused.to_string().contains("+15555550182"),
        "no submitted value is echoed: {refused}"
    );
    // A variable changed is another request too.
    let changed_variable = format!(
        r#"{{"template_id": {template}, "contact": {{"phone_number": "+15555550181", "time_zone": "Europe/London"}}, "variables": {{"a": 2, "b": "x"}}}}"#
    );
    let (status, refused) = send(changed_variable, "enroll-181").await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{refused}"
    );
    let (_, list) = f.app.get(&f.key, "/v1/sequences").await;
    let listed = list["data"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "no second sequence: {list}");
    assert_eq!(listed[0]["id"], first["id"]);
}

#[tokio::test]
async fn batch_enrollment_answers_per_item_with_field_precise_errors() {
    let f = fixture().await;
    let template = f
        .template(json!({ "name": "Call", "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    let (status, body) = f
        .app
        .post(&f.key, "/v1/sequences/batch", json!({ "template_id": template, "items": [
            { "contact": { "phone_number": "+15555550190", "time_zone": "America/Denver" } },
            { "contact": { "phone_number": "555-0191", "time_zone": "America/Denver" } },
            { "contact": { "phone_number": "+15555550192", "time_zone": "Mars/Olympus" } },
            { "contact": { "phone_number": "+15555550193", "time_zone": "Asia/Kolkata" }, "simulation": { "outcomes": ["abducted"] } },
        ] }))
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["data"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["status"], 201);
    assert!(results[0]["sequence"]["id"].is_i64());
    assert_eq!(
        results[1]["error"]["field"],
        "items[1].contact.phone_number"
    );
    assert_eq!(results[2]["error"]["field"], "items[2].contact.time_zone");
    assert_eq!(
        results[3]["error"]["field"],
        "items[3].simulation.outcomes[0]"
    );
    for result in &results[1..] {
        assert_eq!(result["status"], 422);
    }

    // One batch: a number twice, a suppressed number, then another number. Each item gets
    // what enrolling the items one by one would give, and each created sequence is the
    // item's own (the batch insert maps rows back to items).
    let (status, _) = f
        .app
        .post(
            &f.key,
            "/v1/suppressions",
            json!({ "phone_number": "+15555550196" }),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = f
        .app
        .post(
            &f.key,
            "/v1/sequences/batch",
            json!({ "template_id": template, "items": [
            { "contact": { "phone_number": "+15555550197", "time_zone": "America/Denver" } },
            { "contact": { "phone_number": "+15555550197", "time_zone": "America/Denver" } },
            { "contact": { "phone_number": "+15555550196", "time_zone": "America/Denver" } },
            { "contact": { "phone_number": "+15555550198", "time_zone": "Pacific/Honolulu" } },
        ] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["data"].as_array().unwrap();
    let statuses: Vec<i64> = results
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 409, 422, 201], "{body}");
    assert_eq!(results[1]["error"]["code"], "already_enrolled");
    assert_eq!(results[2]["error"]["code"], "suppressed");
    // The first item's sequence holds the first number: cancelling it frees that number
    // and not the other.
    let first = results[0]["sequence"]["id"].as_i64().unwrap();
    let (status, _) = f
        .app
        .post(&f.key, &format!("/v1/sequences/{first}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let (_, body) = f
        .app
        .post(
            &f.key,
            "/v1/sequences/batch",
            json!({ "template_id": template, "items": [
            { "contact": { "phone_number": "+15555550197", "time_zone": "America/Denver" } },
            { "contact": { "phone_number": "+15555550198", "time_zone": "America/Denver" } },
        ] }),
        )
        .await;
    assert_eq!(item_statuses(&body), [201, 409], "{body}");
}

/// The per-item HTTP statuses of a batch enrollment's answer.
fn item_statuses(body: &serde_json::Value) -> Vec<i64> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn cancel_pause_and_resume_work_and_an_ended_sequence_answers_409() {
    let f = fixture().await;
    let template = f
        .template(json!({ "name": "Later call", "calling_hours": null,
            "steps": [ { "type": "call", "assistant_id": f.call_assistant, "delay": "2h" } ] }))
        .await;
    let sequence = f
        .enroll(template, "+15555550195", "America/New_York", &["resolved"])
        .await;
    let id = sequence["id"].as_i64().unwrap();
    let (status, paused) = f
        .app
        .post(&f.key, &format!("/v1/sequences/{id}/pause"), json!({}))
        .await;
    assert_eq!((status, paused["status"].as_str()), (200, Some("paused")));
    // Paused: its due time passes and nothing happens.
    f.app.clock.advance(Duration::from_secs(3 * 3600));
    f.app.scheduler.run_due_now().await.unwrap();
    let current = f.app.sequence(&f.key, id).await;
    assert!(current["outreach"].as_array().unwrap().is_empty());
    let (status, resumed) = f
        .app
        .post(&f.key, &format!("/v1/sequences/{id}/resume"), json!({}))
        .await;
    assert_eq!((status, resumed["status"].as_str()), (200, Some("active")));
    f.app.scheduler.run_due_now().await.unwrap();
    let (status, cancelled) = f
        .app
        .post(&f.key, &format!("/v1/sequences/{id}/cancel"), json!({}))
        .await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("ended")));
    assert!(
        cancelled["outcome_description"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("cancel")
    );
    f.app.dispatcher.run_due_now().await.unwrap();
    assert_eq!(
        f.delivered(id)["status"],
        "ended",
        "the cancelled sequence's report is delivered"
    );
    let (status, error) = f
        .app
        .post(&f.key, &format!("/v1/sequences/{id}/pause"), json!({}))
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (409, Some("sequence_ended"))
    );

    // Another organisation sees none of it.
    let (_, other) = f.app.org("Other clinic").await;
    for path in [
        format!("/v1/sequences/{id}"),
        format!("/v1/sequences/{id}/events"),
    ] {
        assert_eq!(f.app.get(&other, &path).await.0, 404, "{path}");
    }
    for path in ["cancel", "pause", "resume"] {
        assert_eq!(
            f.app
                .post(&other, &format!("/v1/sequences/{id}/{path}"), json!({}))
                .await
                .0,
            404
        );
    }
    let (_, list) = f.app.get(&other, "/v1/sequences").await;
    assert!(list["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_replayed_enrollment_gets_its_sequence_even_after_the_number_opted_out() {
    let f = fixture().await;
    let template = f
        .template(json!({ "name": "Call", "calling_hours": null,
            "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    let body = json!({ "template_id": template,
        "contact": { "phone_number": "+15555550199", "time_zone": "America/New_York" },
        "simulation": { "outcomes": ["opt-out"] } });
    let send = |key: &'static str| {
        let request = f
            .app
            .http
            .post(format!("{}/v1/sequences", f.app.base))
            .bearer_auth(&f.key)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, first) = send("enroll-199").await;
    assert_eq!(status, 201);
    f.run_until_ended(first["id"].as_i64().unwrap()).await;
    // The same request again answers the sequence it created, not "suppressed"...
    let (status, replayed) = send("enroll-199").await;
    assert_eq!((status, &replayed["id"]), (200, &first["id"]), "{replayed}");
    // ...while a new request for the opted-out number is refused.
    let (status, refused) = send("enroll-199-again").await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("suppressed"))
    );
}

#[tokio::test]
async fn organisation_contact_caps_defer_a_second_contact_and_say_why() {
    let f = fixture().await;
    let (status, organization) = f.app.get(&f.key, "/v1/organization").await;
    assert_eq!(status, 200, "{organization}");
    assert_eq!(
        organization["contact_caps"],
        json!({ "per_day": 0, "per_week": 0, "source": "deployment" })
    );
    let (status, organization) = f
        .app
        .patch(
            &f.key,
            "/v1/organization",
            json!({ "contact_caps": { "per_day": 1, "per_week": 3 }, "sms_help_text": "Riverside Family Clinic: call 555-0100." }),
        )
        .await;
    assert_eq!(status, 200, "{organization}");
    assert_eq!(
        organization["contact_caps"],
        json!({ "per_day": 1, "per_week": 3, "source": "organization" })
    );
    assert_eq!(
        organization["sms_help_text"],
        "Riverside Family Clinic: call 555-0100."
    );

    // Two templates, one number: the second sequence's call waits a day for the cap.
    let first_template = f
        .template(json!({ "name": "Reminder", "calling_hours": null,
            "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    let second_template = f
        .template(json!({ "name": "Care gap", "calling_hours": null,
            "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    let start = clarion_delivery::Clock::now_millis(&f.app.clock);
    let first = f
        .enroll(
            first_template,
            "+15555550170",
            "America/Chicago",
            &["resolved"],
        )
        .await;
    let second = f
        .enroll(
            second_template,
            "+15555550170",
            "America/Chicago",
            &["resolved"],
        )
        .await;
    f.app.scheduler.run_due_now().await.unwrap();
    let (_, first_now) = f
        .app
        .get(&f.key, &format!("/v1/sequences/{}", first["id"]))
        .await;
    assert_eq!(first_now["outreach"].as_array().unwrap().len(), 1);
    let second_id = second["id"].as_i64().unwrap();
    let (_, second_now) = f
        .app
        .get(&f.key, &format!("/v1/sequences/{second_id}"))
        .await;
    assert!(
        second_now["outreach"].as_array().unwrap().is_empty(),
        "one contact a day: the second call waits"
    );
    let (reason, until) = f.first_deferral(second_id).await;
    assert_eq!(reason, "contact-cap");
    assert_eq!(
        until.timestamp_millis(),
        start + 24 * 3600 * 1000,
        "allowed again when the first contact leaves the rolling day"
    );

    // A day later the second call goes out and the sequence ends.
    let ended = f.run_until_ended(second_id).await;
    assert_eq!(ended["outreach"].as_array().unwrap().len(), 1);

    // Back to the deployment's default (no caps): a third template's call is not held.
    let (status, organization) = f
        .app
        .patch(&f.key, "/v1/organization", json!({ "contact_caps": null }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(organization["contact_caps"]["source"], "deployment");
    assert_eq!(
        organization["sms_help_text"], "Riverside Family Clinic: call 555-0100.",
        "keys not in the patch are kept"
    );
    let (status, error) = f
        .app
        .patch(
            &f.key,
            "/v1/organization",
            json!({ "contact_caps": { "per_day": -1 } }),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "contact_caps.per_day");
}

// ---------------------------------------------------------------------------------------------
// Calling rules: a state's statute and an organisation's own rules on top of the template's
// window (the strictest wins), checked at every wake-up and again before the provider.
// ---------------------------------------------------------------------------------------------

fn utc(text: &str) -> chrono::DateTime<chrono::Utc> {
    text.parse().unwrap()
}

impl Fixture {
    async fn enroll_in_state(
        &self,
        template: i64,
        phone: &str,
        zone: &str,
        state: Option<&str>,
        outcomes: &[&str],
    ) -> i64 {
        let mut contact = json!({ "phone_number": phone, "time_zone": zone });
        if let Some(state) = state {
            contact["state"] = json!(state);
        }
        let (status, sequence) = self
            .app
            .post(&self.key, "/v1/sequences", json!({
                "template_id": template, "contact": contact, "simulation": { "outcomes": outcomes },
            }))
            .await;
        assert_eq!(status, 201, "{sequence}");
        sequence["id"].as_i64().unwrap()
    }

    async fn events_of(&self, id: i64) -> Vec<Value> {
        let (status, events) = self
            .app
            .get(&self.key, &format!("/v1/sequences/{id}/events?limit=200"))
            .await;
        assert_eq!(status, 200, "{events}");
        events["data"].as_array().unwrap().clone()
    }

    async fn calls_made(&self, id: i64) -> usize {
        let sequence = self.app.sequence(&self.key, id).await;
        sequence["outreach"].as_array().unwrap().len()
    }

    async fn at(&self, instant: chrono::DateTime<chrono::Utc>) {
        self.app.clock.set_millis(instant.timestamp_millis());
        self.app.scheduler.run_due_now().await.unwrap();
    }
}

#[tokio::test]
async fn a_florida_number_waits_for_eight_and_stops_at_eight_while_texas_is_called_until_nine() {
    let f = fixture().await;
    let template = f
        .template(
            json!({ "name": "Evening call", "calling_hours": { "start": "08:00", "end": "21:00" },
            "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }),
        )
        .await;

    // Wednesday 07:30 EDT: before the template's window and Florida's, which both open at
    // 08:00; the template's hours are what defer it.
    f.app
        .clock
        .set_millis(utc("2025-06-04T11:30:00Z").timestamp_millis());
    let early = f
        .enroll_in_state(
            template,
            "+13055550101",
            "America/New_York",
            None,
            &["resolved"],
        )
        .await;
    f.app.scheduler.run_due_now().await.unwrap();
    assert_eq!(
        f.first_deferral(early).await,
        ("calling-hours".to_owned(), utc("2025-06-04T12:00:00Z"))
    );
    assert_eq!(f.calls_made(early).await, 0);
    f.at(utc("2025-06-04T12:00:00Z")).await;
    assert_eq!(f.calls_made(early).await, 1, "called at 08:00 EDT");

    // 20:30 EDT: inside the template's 08:00-21:00, after Florida's 20:00. A 305 number
    // (Florida by its area code) and a 212 number enrolled with `state: FL` wait for 08:00
    // the next day, and the deferral names the rule; a 212 number without a state (New York,
    // no stricter rule) is called.
    f.app
        .clock
        .set_millis(utc("2025-06-05T00:30:00Z").timestamp_millis());
    let by_area_code = f
        .enroll_in_state(
            template,
            "+13055550102",
            "America/New_York",
            None,
            &["resolved"],
        )
        .await;
    let by_state = f
        .enroll_in_state(
            template,
            "+12125550103",
            "America/New_York",
            Some("fl"),
            &["resolved"],
        )
        .await;
    let new_york = f
        .enroll_in_state(
            template,
            "+12125550104",
            "America/New_York",
            None,
            &["resolved"],
        )
        .await;
    f.app.scheduler.run_due_now().await.unwrap();
    for id in [by_area_code, by_state] {
        let deferral = f
            .events_of(id)
            .await
            .into_iter()
            .find(|e| e["type"] == "deferred")
            .unwrap_or_else(|| panic!("sequence {id} was not deferred"));
        assert_eq!(deferral["detail"]["reason"], "calling-rule", "{deferral}");
        assert_eq!(deferral["detail"]["rule"], "US-FL", "{deferral}");
        assert_eq!(
            utc(deferral["detail"]["until"].as_str().unwrap()),
            utc("2025-06-05T12:00:00Z"),
            "08:00 EDT the next morning"
        );
        assert_eq!(f.calls_made(id).await, 0, "no Florida call after 20:00");
    }
    assert_eq!(
        f.calls_made(new_york).await,
        1,
        "New York is called at 20:30"
    );

    // 20:30 CDT in Houston (a 713 number): Texas allows calls until 21:00.
    f.app
        .clock
        .set_millis(utc("2025-06-05T01:30:00Z").timestamp_millis());
    let texas = f
        .enroll_in_state(
            template,
            "+17135550105",
            "America/Chicago",
            None,
            &["resolved"],
        )
        .await;
    f.app.scheduler.run_due_now().await.unwrap();
    assert_eq!(f.calls_made(texas).await, 1, "Texas is called at 20:30");
    assert!(
        !f.events_of(texas)
            .await
            .iter()
            .any(|e| e["type"] == "deferred"),
        "no deferral for Texas at 20:30"
    );

    // The Florida sequences are called when their morning comes.
    f.at(utc("2025-06-05T12:00:00Z")).await;
    for id in [by_area_code, by_state] {
        assert_eq!(f.calls_made(id).await, 1, "sequence {id} at 08:00 EDT");
    }
}

#[tokio::test]
async fn floridas_three_attempts_in_24_hours_defer_the_fourth_until_the_first_falls_out() {
    let f = fixture().await;
    let steps: Vec<Value> = (0..4)
        .map(|_| json!({ "type": "call", "assistant_id": f.call_assistant }))
        .collect();
    let template = f
        .template(
            json!({ "name": "Four calls", "calling_hours": null, "stop_on": [], "steps": steps }),
        )
        .await;
    // Wednesday 10:00 EDT.
    f.app
        .clock
        .set_millis(utc("2025-06-04T14:00:00Z").timestamp_millis());
    let id = f
        .enroll_in_state(
            template,
            "+13055550110",
            "America/New_York",
            None,
            &["unresolved", "unresolved", "unresolved", "unresolved"],
        )
        .await;
    // Run the calls as they come, ten simulated minutes at a time, until the fourth waits.
    let mut deferral = None;
    for _ in 0..36 {
        f.app.scheduler.run_due_now().await.unwrap();
        deferral = f
            .events_of(id)
            .await
            .into_iter()
            .find(|e| e["type"] == "deferred");
        if deferral.is_some() {
            break;
        }
        f.app.clock.advance(Duration::from_secs(600));
    }
    let deferral = deferral.expect("the fourth call was never deferred");
    let events = f.events_of(id).await;
    let started: Vec<chrono::DateTime<chrono::Utc>> = events
        .iter()
        .filter(|e| e["type"] == "encounter-started")
        .map(|e| utc(e["at"].as_str().unwrap()))
        .collect();
    assert_eq!(started.len(), 3, "three calls, then the limit: {events:?}");
    assert_eq!(deferral["detail"]["reason"], "calling-rule-attempts");
    assert_eq!(deferral["detail"]["rule"], "US-FL");
    assert_eq!(deferral["detail"]["step"], 3);
    assert_eq!(
        utc(deferral["detail"]["until"].as_str().unwrap()),
        started[0] + chrono::Duration::hours(24),
        "the fourth call waits until the first is 24 hours old"
    );

    // Then it goes out.
    f.at(started[0] + chrono::Duration::hours(24)).await;
    assert_eq!(f.calls_made(id).await, 4);
}

#[tokio::test]
async fn an_organisations_own_rule_applies_to_its_contacts_only_and_bad_rules_are_refused() {
    let f = fixture().await;
    let (status, org) = f
        .app
        .patch(
            &f.key,
            "/v1/organization",
            json!({ "calling_rules": [
            { "name": "no-weekends", "weekdays": ["sat", "sun"] },
        ] }),
        )
        .await;
    assert_eq!(status, 200, "{org}");
    assert_eq!(
        org["calling_rules"],
        json!([{ "name": "no-weekends", "weekdays": ["sat", "sun"] }])
    );
    let (_, read) = f.app.get(&f.key, "/v1/organization").await;
    assert_eq!(read["calling_rules"], org["calling_rules"]);

    for (body, field) in [
        (
            json!([{ "name": "x", "start": "18:00", "end": "09:00" }]),
            "calling_rules[0].end",
        ),
        (
            json!([{ "name": "x", "states": ["Florida"] }]),
            "calling_rules[0].states[0]",
        ),
        (
            json!([{ "name": "x", "weekdays": ["someday"] }]),
            "calling_rules[0].weekdays[0]",
        ),
    ] {
        let (status, error) = f
            .app
            .patch(&f.key, "/v1/organization", json!({ "calling_rules": body }))
            .await;
        assert_eq!(status, 422, "{error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }

    let template = f
        .template(json!({ "name": "Call", "calling_hours": null,
            "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    // Saturday 2025-06-07 12:00 EDT: waits for Monday 00:00 local (the template has no
    // window of its own), naming the organisation's rule.
    f.app
        .clock
        .set_millis(utc("2025-06-07T16:00:00Z").timestamp_millis());
    let id = f
        .enroll_in_state(
            template,
            "+12125550120",
            "America/New_York",
            None,
            &["resolved"],
        )
        .await;
    f.app.scheduler.run_due_now().await.unwrap();
    let deferral = f
        .events_of(id)
        .await
        .into_iter()
        .find(|e| e["type"] == "deferred")
        .expect("deferred on a Saturday");
    assert_eq!(deferral["detail"]["reason"], "calling-rule");
    assert_eq!(deferral["detail"]["rule"], "no-weekends");
    assert_eq!(
        utc(deferral["detail"]["until"].as_str().unwrap()),
        utc("2025-06-09T04:00:00Z"),
        "Monday 00:00 EDT"
    );

    // Another organisation's contact on the same Saturday is not bound by the rule.
    let (_, other_key) = f.app.org("Lakeside Clinic").await;
    let (status, assistant) = f
        .app
        .post(&other_key, "/v1/assistants", json!({
            "name": "Caller", "channel": "call",
            "config": { "purpose": "confirm the appointment", "organisation_name": "Lakeside Clinic" },
        }))
        .await;
    assert_eq!(status, 201, "{assistant}");
    let (status, other_template) = f
        .app
        .post(
            &other_key,
            "/v1/sequence-templates",
            json!({ "name": "Call", "calling_hours": null,
            "steps": [ { "type": "call", "assistant_id": assistant["id"] } ] }),
        )
        .await;
    assert_eq!(status, 201, "{other_template}");
    let (status, other) = f
        .app
        .post(
            &other_key,
            "/v1/sequences",
            json!({
                "template_id": other_template["id"],
                "contact": { "phone_number": "+12125550121", "time_zone": "America/New_York" },
                "simulation": { "outcomes": ["resolved"] },
            }),
        )
        .await;
    assert_eq!(status, 201, "{other}");
    f.app.scheduler.run_due_now().await.unwrap();
    let other = f
        .app
        .sequence(&other_key, other["id"].as_i64().unwrap())
        .await;
    assert_eq!(other["outreach"].as_array().unwrap().len(), 1, "{other}");

    // Monday comes: the first organisation's contact is called.
    f.at(utc("2025-06-09T04:00:00Z")).await;
    assert_eq!(f.calls_made(id).await, 1);
    // `null` removes the rules.
    let (status, cleared) = f
        .app
        .patch(&f.key, "/v1/organization", json!({ "calling_rules": null }))
        .await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["calling_rules"], json!([]));
}

#[tokio::test]
async fn an_unknown_contact_state_is_refused() {
    let f = fixture().await;
    let template = f
        .template(json!({ "name": "Call", "steps": [ { "type": "call", "assistant_id": f.call_assistant } ] }))
        .await;
    let (status, error) = f
        .app
        .post(&f.key, "/v1/sequences", json!({
            "template_id": template,
            "contact": { "phone_number": "+13055550130", "time_zone": "America/New_York", "state": "Florida" },
        }))
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "contact.state", "{error}");
}

// ---------------------------------------------------------------------------------------------
// Voicemail policy per call step
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_voicemail_policy_hangs_up_or_leaves_its_message_and_brings_the_text_forward() {
    let f = fixture().await;
    let message = "This is Riverside Family Clinic. Please call us back at 555-0100.";
    // Hang up, no retry (max_attempts 3 notwithstanding), and the SMS step's 2 h delay waived.
    let hang_up = f
        .template(json!({ "name": "Call, then text", "calling_hours": null, "stop_on": ["resolved"],
            "steps": [
                { "type": "call", "assistant_id": f.call_assistant, "max_attempts": 3, "retry_delay": "1h",
                  "voicemail": { "retry": false, "action": "hang-up", "sms_follow_up": true } },
                { "type": "sms", "assistant_id": f.sms_assistant, "delay": "2h" },
            ] }))
        .await;
    let (_, read) = f
        .app
        .get(&f.key, &format!("/v1/sequence-templates/{hang_up}"))
        .await;
    assert_eq!(
        read["steps"][0]["voicemail"],
        json!({ "retry": false, "action": "hang-up", "sms_follow_up": true }),
        "{read}"
    );
    assert!(read["steps"][1].get("voicemail").is_none(), "{read}");
    let leave = f
        .template(json!({ "name": "One call", "calling_hours": null,
            "steps": [ { "type": "call", "assistant_id": f.call_assistant,
                "voicemail": { "action": "leave-message", "message": message } } ] }))
        .await;

    let first = f
        .enroll(
            hang_up,
            "+15555550180",
            "America/Chicago",
            &["voicemail", "resolved"],
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let second = f
        .enroll(leave, "+15555550181", "America/Chicago", &["voicemail"])
        .await["id"]
        .as_i64()
        .unwrap();
    f.run_until_ended(first).await;
    f.run_until_ended(second).await;

    let report = f.delivered(first);
    let outreach = report["outreach"].as_array().unwrap();
    assert_eq!(
        outreach.len(),
        2,
        "one call (not retried), one text: {report}"
    );
    let call = &outreach[0]["call"];
    assert_eq!(call["outcome"], "voicemail");
    assert_eq!(
        call["voicemail_message"],
        Value::Null,
        "hung up: no message"
    );
    assert_eq!(call["transcript"], Value::Null);
    assert!(outreach[1]["sms"].is_object(), "{report}");
    let scheduled = f
        .events_of(first)
        .await
        .into_iter()
        .find(|e| e["type"] == "step-scheduled" && e["detail"]["step"] == 1)
        .expect("the text step was scheduled");
    assert_eq!(
        utc(scheduled["detail"]["due_at"].as_str().unwrap()),
        utc(call["ended_at"].as_str().unwrap()),
        "the text was due when the voicemail ended, not 2 h later: {scheduled}"
    );

    let report = f.delivered(second);
    let call = &report["outreach"][0]["call"];
    assert_eq!(call["voicemail_message"], message, "{report}");
    assert!(schema_errors(&report).is_empty(), "{report}");

    // Refused policies name the field.
    for (steps, field) in [
        (
            json!([{ "type": "call", "assistant_id": f.call_assistant,
                "voicemail": { "action": "leave-message" } }]),
            "steps[0].voicemail.message",
        ),
        (
            json!([{ "type": "call", "assistant_id": f.call_assistant,
                "voicemail": { "action": "shout" } }]),
            "steps[0].voicemail.action",
        ),
        (
            json!([{ "type": "call", "assistant_id": f.call_assistant,
                "voicemail": { "sms_follow_up": true } }]),
            "steps[0].voicemail.sms_follow_up",
        ),
        (
            json!([{ "type": "sms", "assistant_id": f.sms_assistant,
                "voicemail": { "retry": false } }]),
            "steps[0].voicemail",
        ),
    ] {
        let (status, error) = f
            .app
            .post(
                &f.key,
                "/v1/sequence-templates",
                json!({ "name": "Bad", "steps": steps }),
            )
            .await;
        assert_eq!(status, 422, "{error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }
}

#[tokio::test]
async fn a_fixed_text_follows_the_last_voicemail_in_the_simulator_and_the_sequence_goes_on() {
    let f = fixture().await;
    let text = "This is Riverside Family Clinic. Please call us back at 555-0100.";
    let template = f
        .template(json!({ "name": "Call, text, then the text step", "calling_hours": null,
            "stop_on": ["resolved"],
            "steps": [
                { "type": "call", "assistant_id": f.call_assistant, "max_attempts": 2, "retry_delay": "1h",
                  "voicemail": { "action": "hang-up", "sms_text": format!("  {text}\n") } },
                { "type": "sms", "assistant_id": f.sms_assistant, "delay": "2h" },
            ] }))
        .await;
    let (_, read) = f
        .app
        .get(&f.key, &format!("/v1/sequence-templates/{template}"))
        .await;
    assert_eq!(
        read["steps"][0]["voicemail"],
        json!({ "retry": true, "action": "hang-up", "sms_follow_up": false, "sms_text": text }),
        "stored trimmed: {read}"
    );
    // Voicemail, retried; voicemail again (the last attempt): the text; then the SMS step,
    // which takes the next scripted outcome (the text takes none).
    let id = f
        .enroll(
            template,
            "+15555550182",
            "America/Chicago",
            &["voicemail", "voicemail", "resolved"],
        )
        .await["id"]
        .as_i64()
        .unwrap();
    f.run_until_ended(id).await;
    let report = f.delivered(id);
    assert!(schema_errors(&report).is_empty(), "{report}");
    let outreach = report["outreach"].as_array().unwrap();
    assert_eq!(
        outreach.len(),
        4,
        "two calls, the text, the SMS step: {report}"
    );
    let types: Vec<(&str, i64)> = outreach
        .iter()
        .map(|o| (o["type"].as_str().unwrap(), o["step"].as_i64().unwrap()))
        .collect();
    assert_eq!(types, [("call", 1), ("call", 1), ("sms", 1), ("sms", 2)]);
    let call = &outreach[1]["call"];
    let sms = &outreach[2]["sms"];
    assert_eq!(sms["status"], "ended");
    assert_eq!(sms["transcript"], format!("AI: {text}"));
    assert_eq!(sms["assistant_id"], call["assistant_id"], "{report}");
    assert_eq!(sms["destination_number"], "+15555550182");
    assert!(sms["source_number"].is_string(), "{report}");
    assert!(
        utc(sms["started_at"].as_str().unwrap()) >= utc(call["ended_at"].as_str().unwrap()),
        "sent after the voicemail: {report}"
    );
    assert_eq!(
        outreach[3]["sms"]["ended_reason"], "resolved",
        "the SMS step took the script's third outcome: {report}"
    );
    let events = f.events_of(id).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "voicemail-text-scheduled")
            .count(),
        1,
        "only after the last voicemail: {kinds:?}"
    );
    let ended = events
        .iter()
        .find(|e| e["type"] == "voicemail-text-ended")
        .expect("the text's end is in the events");
    assert_eq!(ended["detail"]["sent"], true, "{ended}");
    assert_eq!(ended["detail"]["step"], 0, "{ended}");
    let scheduled = events
        .iter()
        .find(|e| e["type"] == "step-scheduled" && e["detail"]["step"] == 1)
        .expect("the SMS step was scheduled");
    assert_eq!(
        utc(scheduled["detail"]["due_at"].as_str().unwrap()),
        utc(sms["ended_at"].as_str().unwrap()) + chrono::TimeDelta::hours(2),
        "the SMS step keeps its delay, counted from the text: {scheduled}"
    );

    // An answered call sends no text.
    let answered = f
        .enroll(
            template,
            "+15555550183",
            "America/Chicago",
            &["unresolved", "resolved"],
        )
        .await["id"]
        .as_i64()
        .unwrap();
    f.run_until_ended(answered).await;
    let report = f.delivered(answered);
    let types: Vec<(&str, i64)> = report["outreach"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["type"].as_str().unwrap(), o["step"].as_i64().unwrap()))
        .collect();
    assert_eq!(types, [("call", 1), ("sms", 2)], "{report}");
}

#[tokio::test]
async fn a_fixed_text_after_voicemail_is_refused_with_the_follow_up_or_outside_its_bounds() {
    let f = fixture().await;
    let call = |voicemail: Value| {
        json!([
            { "type": "call", "assistant_id": f.call_assistant, "voicemail": voicemail },
            { "type": "sms", "assistant_id": f.sms_assistant },
        ])
    };
    for (steps, field) in [
        (
            call(json!({ "sms_follow_up": true, "sms_text": "Please call us back." })),
            "steps[0].voicemail.sms_text",
        ),
        (
            call(json!({ "sms_text": "" })),
            "steps[0].voicemail.sms_text",
        ),
        (
            call(json!({ "sms_text": "   \n " })),
            "steps[0].voicemail.sms_text",
        ),
        (
            call(json!({ "sms_text": "x".repeat(321) })),
            "steps[0].voicemail.sms_text",
        ),
        (
            json!([{ "type": "sms", "assistant_id": f.sms_assistant,
                "voicemail": { "sms_text": "Please call us back." } }]),
            "steps[0].voicemail",
        ),
    ] {
        let (status, error) = f
            .app
            .post(
                &f.key,
                "/v1/sequence-templates",
                json!({ "name": "Bad", "steps": steps }),
            )
            .await;
        assert_eq!(status, 422, "{error}");
        assert_eq!(error["error"]["field"], field, "{error}");
        assert!(
            !error.to_string().contains("xxxxxxxx"),
            "the text is not echoed: {error}"
        );
    }
    // 320 characters (counted as characters, not bytes) are accepted, on the last step too.
    let longest: String = "é".repeat(320);
    let (status, template) = f
        .app
        .post(&f.key, "/v1/sequence-templates", json!({ "name": "Longest", "steps": [
            { "type": "call", "assistant_id": f.call_assistant, "voicemail": { "sms_text": longest } },
        ] }))
        .await;
    assert_eq!(status, 201, "{template}");
    assert_eq!(template["steps"][0]["voicemail"]["sms_text"], longest);
}
