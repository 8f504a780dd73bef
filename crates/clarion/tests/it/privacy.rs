//! PHI retention and erasure through the API: the retention job on the manual clock, and
//! `DELETE /v1/contacts/{phone_number}`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Answer, TestApp, TestReceiver, spawn_app};
use crate::ui::Browser;

const DAY: Duration = Duration::from_secs(86_400);

/// An organisation with a one-call template (two attempts, an hour apart, any hour).
async fn clinic(app: &TestApp, name: &str) -> (String, i64) {
    let (_, key) = app.org(name).await;
    let (status, assistant) = app
        .post(
            &key,
            "/v1/assistants",
            json!({
                "name": "Caller", "channel": "call",
                "config": { "purpose": "confirm the appointment", "organisation_name": name },
            }),
        )
        .await;
    assert_eq!(status, 201, "{assistant}");
    let (status, template) = app
        .post(
            &key,
            "/v1/sequence-templates",
            json!({
                "name": "Reminder", "calling_hours": null, "stop_on": ["resolved"],
                "steps": [{ "type": "call", "assistant_id": assistant["id"], "delay": "0s",
                            "max_attempts": 2, "retry_delay": "1h" }],
            }),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    (key, template["id"].as_i64().unwrap())
}

async fn enroll(app: &TestApp, key: &str, template: i64, phone: &str, outcomes: &[&str]) -> i64 {
    app.enroll(
        key,
        json!({
            "template_id": template,
            "contact": { "phone_number": phone, "time_zone": "America/Chicago",
                         "name": "Alex Rivera", "external_id": "MRN-1001" },
            "variables": { "appointment": "Tuesday 10:00" },
            "simulation": { "outcomes": outcomes },
        }),
    )
    .await
}

/// Runs the engine ten minutes at a time until every sequence in `ids` has ended.
async fn run_until_ended(app: &TestApp, key: &str, ids: &[i64]) {
    for _ in 0..100 {
        app.run_due().await;
        let mut all = true;
        for id in ids {
            all &= app.sequence(key, *id).await["status"] == "ended";
        }
        if all {
            return;
        }
        app.clock.advance(Duration::from_secs(600));
    }
    panic!("the sequences did not end");
}

/// Every call and text of a report: (transcript, summary, analysis) all null?
fn free_of_phi(report: &Value) -> bool {
    report["outreach"].as_array().unwrap().iter().all(|step| {
        let encounter = if step["call"].is_null() {
            &step["sms"]
        } else {
            &step["call"]
        };
        encounter["transcript"].is_null()
            && encounter["summary"].is_null()
            && encounter["analysis"].is_null()
    })
}

fn has_transcript(report: &Value) -> bool {
    report["outreach"]
        .as_array()
        .unwrap()
        .iter()
        .any(|step| step["call"]["transcript"].is_string())
}

/// The organisation's whole sequence list and delivery log.
async fn ledger(app: &TestApp, key: &str) -> (Vec<(Value, Value)>, Vec<Value>) {
    let (status, list) = app.get(key, "/v1/sequences?limit=100").await;
    assert_eq!(status, 200, "{list}");
    let sequences = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].clone(), s["status"].clone()))
        .collect();
    let deliveries = app
        .deliveries(key)
        .await
        .into_iter()
        .map(|d| json!([d["id"], d["status"], d["attempt_count"], d["endpoint_id"]]))
        .collect();
    (sequences, deliveries)
}

#[tokio::test]
async fn the_retention_job_purges_exactly_the_sequences_past_the_period_and_counts_stay() {
    let app = spawn_app().await;
    let (key, template) = clinic(&app, "Riverside").await;
    let (other_key, other_template) = clinic(&app, "Lakeside").await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    app.endpoint(&key, &receiver.url).await;

    let old = enroll(&app, &key, template, "+15550100001", &["resolved"]).await;
    let other_org = enroll(
        &app,
        &other_key,
        other_template,
        "+15550100001",
        &["resolved"],
    )
    .await;
    run_until_ended(&app, &key, &[old]).await;
    run_until_ended(&app, &other_key, &[other_org]).await;
    receiver.wait_for(1).await;
    app.clock.advance(10 * DAY);
    let recent = enroll(&app, &key, template, "+15550100002", &["resolved"]).await;
    run_until_ended(&app, &key, &[recent]).await;
    let running = enroll(
        &app,
        &key,
        template,
        "+15550100003",
        &["voicemail", "resolved"],
    )
    .await;
    let (status, paused) = app
        .post(&key, &format!("/v1/sequences/{running}/pause"), json!({}))
        .await;
    assert_eq!(status, 200, "{paused}");
    receiver.wait_for(2).await;
    app.run_due().await;

    let before_old = app.sequence(&key, old).await;
    assert!(has_transcript(&before_old), "{before_old}");
    let untouched = [(&key, recent), (&key, running), (&other_key, other_org)];
    let mut before = Vec::new();
    for (key, id) in untouched {
        before.push(app.sequence(key, id).await);
    }
    let ledger_before = ledger(&app, &key).await;
    assert_eq!(ledger_before.0.len(), 3);
    assert_eq!(ledger_before.1.len(), 2);

    // No period set: nothing is purged, however old.
    app.clock.advance(40 * DAY);
    assert_eq!(app.scheduler.purge_expired_phi().await.unwrap(), 0);
    let (status, org) = app
        .patch(&key, "/v1/organization", json!({ "retention_days": 45 }))
        .await;
    assert_eq!((status, &org["retention_days"]), (200, &json!(45)), "{org}");
    let (status, refused) = app
        .patch(&key, "/v1/organization", json!({ "retention_days": 0 }))
        .await;
    assert_eq!(
        (status, &refused["error"]["field"]),
        (422, &json!("retention_days"))
    );
    // `old` ended 50 days ago, `recent` 40 days ago: only `old` is past 45 days.
    assert_eq!(app.scheduler.purge_expired_phi().await.unwrap(), 1);
    assert_eq!(
        app.scheduler.purge_expired_phi().await.unwrap(),
        0,
        "not scanned again"
    );

    let after_old = app.sequence(&key, old).await;
    assert!(after_old["phi_purged_at"].is_string(), "{after_old}");
    assert!(free_of_phi(&after_old), "{after_old}");
    assert_eq!(after_old["status"], before_old["status"]);
    assert_eq!(
        after_old["outcome_description"],
        before_old["outcome_description"]
    );
    for (purged, kept) in after_old["outreach"]
        .as_array()
        .unwrap()
        .iter()
        .zip(before_old["outreach"].as_array().unwrap())
    {
        for field in [
            "id",
            "call_status",
            "started_at",
            "ended_at",
            "outcome",
            "ended_reason",
        ] {
            assert_eq!(purged["call"][field], kept["call"][field], "{field}");
        }
    }
    for ((key, id), before) in untouched.into_iter().zip(&before) {
        assert_eq!(
            &app.sequence(key, id).await,
            before,
            "sequence {id} untouched"
        );
    }
    assert_eq!(
        ledger(&app, &key).await,
        ledger_before,
        "counts and delivery log intact"
    );
    let (_, events) = app
        .get(&key, &format!("/v1/sequences/{old}/events?limit=100"))
        .await;
    let purge = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "phi-purged")
        .expect("the purge is in the history");
    assert_eq!(purge["detail"]["reason"], "retention");
    // The delivered report, as the pull API keeps it, is purged too.
    let (_, reports) = app.get(&key, "/v1/reports?limit=100").await;
    let reports = reports["data"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().any(|r| r["id"] == old && free_of_phi(r)));

    // The dashboard still shows the purged sequence, without the name or external id.
    let browser = Browser::sign_in(&app.base, &key).await;
    let (status, html) = browser.page(&format!("/ui/sequences/{old}")).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{html}");
    assert!(html.contains("+15550100001"), "{html}");
    assert!(
        !html.contains("Alex Rivera") && !html.contains("MRN-1001"),
        "{html}"
    );
}

#[tokio::test]
async fn erasing_a_number_leaves_every_other_patient_untouched() {
    let app = spawn_app().await;
    let (key, template) = clinic(&app, "Riverside").await;
    let (other_key, other_template) = clinic(&app, "Lakeside").await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    app.endpoint(&key, &receiver.url).await;
    let number = "+15550100009";
    let ended = enroll(&app, &key, template, number, &["resolved"]).await;
    let neighbour = enroll(&app, &key, template, "+15550100010", &["resolved"]).await;
    let other_org = enroll(&app, &other_key, other_template, number, &["resolved"]).await;
    run_until_ended(&app, &key, &[ended, neighbour]).await;
    run_until_ended(&app, &other_key, &[other_org]).await;
    receiver.wait_for(2).await;
    let running = enroll(&app, &key, template, number, &["voicemail", "resolved"]).await;
    app.run_due().await;
    app.clock.advance(Duration::from_secs(600));
    app.run_due().await;
    assert_eq!(app.sequence(&key, running).await["status"], "active");
    let (status, _) = app
        .post(
            &key,
            "/v1/suppressions",
            json!({ "phone_number": number, "reason": "requested" }),
        )
        .await;
    assert_eq!(status, 201);

    let before_neighbour = app.sequence(&key, neighbour).await;
    let before_other = app.sequence(&other_key, other_org).await;
    let before_ended = app.sequence(&key, ended).await;
    assert!(has_transcript(&before_ended));
    let path = "/v1/contacts/%2B15550100009";

    // Running: refused, nothing erased.
    let (status, refused) = app.request(Method::DELETE, &key, path, None).await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (409, &json!("contact_running")),
        "{refused}"
    );
    assert_eq!(app.sequence(&key, ended).await, before_ended);
    let (status, _) = app
        .request(Method::DELETE, &key, "/v1/contacts/15550100009", None)
        .await;
    assert_eq!(status, 422, "not E.164");

    let (status, erased) = app
        .request(Method::DELETE, &key, &format!("{path}?cancel=true"), None)
        .await;
    assert_eq!(status, 200, "{erased}");
    assert_eq!(erased["cancelled"], 1);
    assert_eq!(erased["sequences"], 2);
    assert_eq!(erased["report_bodies"], 2);
    assert!(erased["encounters"].as_u64().unwrap() >= 2, "{erased}");

    for id in [ended, running] {
        let sequence = app.sequence(&key, id).await;
        assert_eq!(sequence["status"], "ended");
        assert!(sequence["phi_purged_at"].is_string(), "{sequence}");
        assert!(free_of_phi(&sequence), "{sequence}");
    }
    assert_eq!(app.sequence(&key, neighbour).await, before_neighbour);
    assert_eq!(app.sequence(&other_key, other_org).await, before_other);
    assert!(has_transcript(&before_other));
    // The opt-out list keeps the number.
    assert_eq!(
        app.suppression_reason(&key, number).await.as_deref(),
        Some("requested")
    );
    // The cancelled sequence's report goes out without PHI.
    app.run_due().await;
    let received = receiver.wait_for(3).await;
    let report: Value = serde_json::from_slice(&received[2].body).unwrap();
    assert_eq!(report["id"], running);
    assert!(free_of_phi(&report), "{report}");
    // Recorded in the access log, without the number.
    let (_, log) = app.get(&key, "/v1/audit-log?limit=100").await;
    let entry = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "contact.erased")
        .expect("the erasure is recorded")
        .clone();
    assert!(!entry.to_string().contains("5550100009"), "{entry}");
    // Again: nothing is running now, and the same sequences are erased (idempotent).
    let (status, again) = app.request(Method::DELETE, &key, path, None).await;
    assert_eq!(
        (status, &again["sequences"], &again["cancelled"]),
        (200, &json!(2), &json!(0))
    );
}
