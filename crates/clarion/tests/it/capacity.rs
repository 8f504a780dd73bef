//! The provider capacity governor (issue 13 items 3 and 4), end to end against the local
//! fakes: a Vapi account with a fixed number of concurrent-call slots, and Twilio enforcing a
//! sender's throughput. Calls and texts beyond the providers' capacity wait (recorded once in
//! their sequence's events), start as capacity frees, are shared fairly between
//! organisations, never fail for it, and still keep calling hours.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::time::Duration;

use crate::support::fake_twilio::{FakeTwilio, SendAnswer};
use crate::support::fake_vapi::{FakeVapi, SERVER_SECRET};
use crate::support::{AppOptions, TestApp, eventually, spawn_app_with};
use serde_json::{Value, json};

/// An organisation with a one-call template (calling hours as given) and its API key.
async fn call_org(app: &TestApp, name: &str, calling_hours: Value) -> (String, i64) {
    let (org, key) = app.org(name).await;
    app.allow_vapi_assistant(org, "asst_1").await;
    let (status, assistant) = app
        .post(
            &key,
            "/v1/assistants",
            json!({ "name": "Reminder caller", "channel": "call",
                    "config": { "vapi_assistant_id": "asst_1" } }),
        )
        .await;
    assert_eq!(status, 201, "{assistant}");
    let (status, template) = app
        .post(
            &key,
            "/v1/sequence-templates",
            json!({
                "name": "One call", "calling_hours": calling_hours, "stop_on": ["resolved"],
                "steps": [ { "type": "call", "assistant_id": assistant["id"], "max_attempts": 1 } ]
            }),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    (key, template["id"].as_i64().unwrap())
}

/// A server calling through `vapi` with Clarion's own limit of `slots` concurrent calls.
async fn vapi_app(vapi: &FakeVapi, slots: u32) -> TestApp {
    spawn_app_with(AppOptions {
        vapi: Some((vapi.settings(), SERVER_SECRET.to_owned())),
        limits: Some(clarion_scheduler::ProviderLimits {
            max_concurrent_calls: slots,
            ..clarion_scheduler::ProviderLimits::default()
        }),
        ..AppOptions::default()
    })
    .await
}

async fn enroll(app: &TestApp, key: &str, template: i64, phone: &str) -> i64 {
    app.enroll(
        key,
        json!({
            "template_id": template,
            "contact": { "phone_number": phone, "time_zone": "America/New_York", "name": "Ana Lopez" },
        }),
    )
    .await
}

pub(crate) async fn events(app: &TestApp, key: &str, id: i64) -> Vec<Value> {
    let (status, events) = app.get(key, &format!("/v1/sequences/{id}/events")).await;
    assert_eq!(status, 200, "{events}");
    events["data"].as_array().unwrap().clone()
}

/// The sequence's waits for provider capacity.
async fn capacity_waits(app: &TestApp, key: &str, id: i64) -> Vec<Value> {
    events(app, key, id)
        .await
        .into_iter()
        .filter(|e| e["type"] == "deferred" && e["detail"]["reason"] == "provider-capacity")
        .collect()
}

/// The numbers of the calls Vapi started, counted.
fn started_numbers(vapi: &FakeVapi) -> HashMap<String, usize> {
    let mut numbers = HashMap::new();
    for call in vapi.started_calls() {
        *numbers
            .entry(call["customer"]["number"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    numbers
}

/// Ends every call in progress at Vapi (each sends its end-of-call report).
async fn end_active_calls(app: &TestApp, vapi: &FakeVapi) -> usize {
    let active = vapi.active_calls();
    for call_id in &active {
        let (status, body) = vapi.end_call(&app.base, call_id, "resolved").await;
        assert_eq!(status, 200, "{body}");
    }
    active.len()
}

async fn metrics(app: &TestApp) -> String {
    app.http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn thirty_calls_due_at_once_never_exceed_five_slots_and_all_are_placed_without_failing() {
    let vapi = FakeVapi::start().await;
    vapi.limit_concurrent_calls(5);
    let app = vapi_app(&vapi, 5).await;
    let (key, template) = call_org(&app, "Riverside Family Clinic", Value::Null).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(enroll(&app, &key, template, &format!("+155555{i:05}")).await);
    }

    app.run_due().await;
    assert_eq!(
        vapi.active_calls().len(),
        5,
        "the five slots are used at once"
    );
    // The queue and the slots are visible to the operator (scraped from the database; the
    // recorder is process-wide, so another test's scrape may interleave: look again).
    eventually(
        "/metrics shows 5 slots in use and 25 calls waiting",
        || async {
            let text = metrics(&app).await;
            text.contains("clarion_provider_slots_in_use{provider=\"vapi\"} 5")
                && text.contains("clarion_provider_capacity_waiting{channel=\"call\"} 25")
        },
    )
    .await;

    let mut rounds = 0;
    while started_numbers(&vapi).len() < 30 {
        rounds += 1;
        assert!(
            rounds <= 10,
            "calls stopped being placed: {:?}",
            started_numbers(&vapi)
        );
        assert!(vapi.active_calls().len() <= 5);
        assert!(
            end_active_calls(&app, &vapi).await > 0,
            "no call in progress, yet calls wait"
        );
        app.run_due().await;
    }
    end_active_calls(&app, &vapi).await;
    app.run_due().await;

    assert!(
        vapi.max_active() <= 5,
        "{} calls in progress at once",
        vapi.max_active()
    );
    assert_eq!(vapi.refused(), 0, "Clarion never asked beyond its slots");
    let numbers = started_numbers(&vapi);
    assert_eq!(numbers.len(), 30, "every contact called");
    assert!(
        numbers.values().all(|n| *n == 1),
        "each exactly once: {numbers:?}"
    );
    let mut waited = 0;
    for id in ids {
        let sequence = app.sequence(&key, id).await;
        assert_eq!(sequence["status"], "ended", "{sequence}");
        assert_eq!(
            sequence["outreach"][0]["call"]["outcome"], "resolved",
            "{sequence}"
        );
        let waits = capacity_waits(&app, &key, id).await;
        assert!(waits.len() <= 1, "a wait is recorded once: {waits:?}");
        if let Some(wait) = waits.first() {
            assert_eq!(wait["detail"]["channel"], "call");
            assert_eq!(wait["detail"]["refused_by_provider"], false);
            waited += 1;
        }
    }
    assert_eq!(
        waited, 25,
        "the 25 calls beyond the slots waited, each recorded"
    );
    eventually(
        "/metrics shows the slots free and nothing waiting",
        || async {
            let text = metrics(&app).await;
            text.contains("clarion_provider_slots_in_use{provider=\"vapi\"} 0")
                && text.contains("clarion_provider_capacity_waiting{channel=\"call\"} 0")
        },
    )
    .await;
}

#[tokio::test]
async fn a_concurrency_limit_answer_puts_the_call_back_in_the_queue_and_it_is_placed_once_a_slot_frees()
 {
    // Vapi's account has 3 slots, 2 held by inbound calls Clarion does not see; Clarion
    // believes it has 10.
    let vapi = FakeVapi::start().await;
    vapi.limit_concurrent_calls(3);
    vapi.set_inbound_calls(2);
    let app = vapi_app(&vapi, 10).await;
    let (key, template) = call_org(&app, "Riverside Family Clinic", Value::Null).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(enroll(&app, &key, template, &format!("+15555550{i:03}")).await);
    }

    app.run_due().await;
    assert_eq!(vapi.active_calls().len(), 1);
    assert_eq!(
        vapi.refused(),
        2,
        "Vapi refused two calls for lack of a slot"
    );
    let mut refused = 0;
    for id in &ids {
        let sequence = app.sequence(&key, *id).await;
        assert_eq!(sequence["status"], "active", "not failed: {sequence}");
        let waits = capacity_waits(&app, &key, *id).await;
        if let Some(wait) = waits.first() {
            assert_eq!(wait["detail"]["refused_by_provider"], true, "{wait}");
            refused += 1;
        }
    }
    assert_eq!(
        refused, 2,
        "each refused call is back in the queue, recorded"
    );
    let requested_before = vapi.requests().len();
    app.run_due().await;
    assert_eq!(
        vapi.requests().len(),
        requested_before,
        "no call is tried again before a slot frees"
    );

    // Calls end, slots free: the queued calls are placed, each once.
    let mut rounds = 0;
    while started_numbers(&vapi).len() < 3 {
        rounds += 1;
        assert!(
            rounds <= 5,
            "queued calls not placed: {:?}",
            started_numbers(&vapi)
        );
        end_active_calls(&app, &vapi).await;
        app.run_due().await;
    }
    end_active_calls(&app, &vapi).await;
    app.run_due().await;
    let numbers = started_numbers(&vapi);
    assert!(
        numbers.values().all(|n| *n == 1),
        "each placed once: {numbers:?}"
    );
    for id in ids {
        let sequence = app.sequence(&key, id).await;
        assert_eq!(sequence["status"], "ended", "{sequence}");
        assert_eq!(
            sequence["outreach"].as_array().unwrap().len(),
            1,
            "{sequence}"
        );
        assert_eq!(
            sequence["outreach"][0]["call"]["outcome"], "resolved",
            "{sequence}"
        );
    }
}

#[tokio::test]
async fn two_organisations_share_the_slots_fairly() {
    let vapi = FakeVapi::start().await;
    vapi.limit_concurrent_calls(4);
    let app = vapi_app(&vapi, 4).await;
    let (key_a, template_a) = call_org(&app, "Riverside Family Clinic", Value::Null).await;
    let (key_b, template_b) = call_org(&app, "Lakeside Pediatrics", Value::Null).await;
    // Organisation A's twelve calls are all due before any of B's.
    for i in 0..12 {
        enroll(&app, &key_a, template_a, &format!("+1555551{i:04}")).await;
    }
    for i in 0..12 {
        enroll(&app, &key_b, template_b, &format!("+1555552{i:04}")).await;
    }
    let split = |vapi: &FakeVapi| {
        let calls = vapi.calls();
        let active: Vec<&Value> = calls.iter().filter(|c| c["status"] != "ended").collect();
        let a = active
            .iter()
            .filter(|c| {
                c["customer"]["number"]
                    .as_str()
                    .unwrap()
                    .starts_with("+1555551")
            })
            .count();
        (a, active.len() - a)
    };

    app.run_due().await;
    assert_eq!(split(&vapi), (2, 2), "the first slots are shared");
    // One call ends at a time (the oldest): each freed slot keeps the shares even.
    while started_numbers(&vapi).len() < 24 {
        let (a, b) = split(&vapi);
        let waiting = 24 - started_numbers(&vapi).len();
        if waiting >= 2 {
            assert!(a.abs_diff(b) <= 1, "unfair split: A {a}, B {b}");
        }
        let oldest = vapi.active_calls()[0].clone();
        vapi.end_call(&app.base, &oldest, "resolved").await;
        app.run_due().await;
    }
    assert_eq!(vapi.refused(), 0);
    assert!(vapi.max_active() <= 4);
}

#[tokio::test]
async fn a_call_that_waited_past_the_calling_window_waits_for_the_next_one() {
    let vapi = FakeVapi::start().await;
    vapi.limit_concurrent_calls(1);
    let app = vapi_app(&vapi, 1).await;
    let (key, template) = call_org(
        &app,
        "Riverside Family Clinic",
        json!({ "start": "08:00", "end": "21:00" }),
    )
    .await;
    // 20:50 in New York (EDT).
    app.clock.set_millis(millis("2025-06-03T00:50:00Z"));
    let first = enroll(&app, &key, template, "+15555550160").await;
    let second = enroll(&app, &key, template, "+15555550161").await;
    app.run_due().await;
    assert_eq!(vapi.active_calls().len(), 1);
    let waiting = if capacity_waits(&app, &key, first).await.is_empty() {
        second
    } else {
        first
    };
    assert_eq!(capacity_waits(&app, &key, waiting).await.len(), 1);

    // 21:05: the slot frees after the window closed; the waiting call is not placed.
    app.clock.advance(Duration::from_secs(15 * 60));
    end_active_calls(&app, &vapi).await;
    app.run_due().await;
    assert_eq!(vapi.calls().len(), 1, "no call after 21:00");
    let deferrals: Vec<Value> = events(&app, &key, waiting)
        .await
        .into_iter()
        .filter(|e| e["type"] == "deferred" && e["detail"]["reason"] == "calling-hours")
        .collect();
    assert_eq!(deferrals.len(), 1, "{deferrals:?}");
    assert_eq!(deferrals[0]["detail"]["until"], "2025-06-03T12:00:00Z");

    // 08:00 the next morning: called, once.
    app.clock.set_millis(millis("2025-06-03T12:00:00Z"));
    app.run_due().await;
    assert_eq!(started_numbers(&vapi).len(), 2);
    assert_eq!(vapi.active_calls().len(), 1);
}

fn millis(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp_millis()
}

/// A server texting through `twilio` at `messages_per_second` per sender, with an
/// organisation whose template sends one text; answers the app, the key and the template.
async fn twilio_app(twilio: &FakeTwilio, messages_per_second: f64) -> (TestApp, String, i64) {
    let app = spawn_app_with(AppOptions {
        twilio: Some(twilio.settings()),
        limits: Some(clarion_scheduler::ProviderLimits {
            messages_per_second,
            ..clarion_scheduler::ProviderLimits::default()
        }),
        ..AppOptions::default()
    })
    .await;
    let (_org, key) = app.org("Riverside Family Clinic").await;
    let (status, assistant) = app
        .post(&key, "/v1/assistants", json!({
            "name": "Reminder texter", "channel": "sms",
            "config": { "script": {
                "opening": "Riverside Family Clinic: your appointment is on January 8. Reply YES to confirm.",
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
    (app, key, template["id"].as_i64().unwrap())
}

#[tokio::test]
async fn twilio_sends_are_paced_per_sender() {
    // Twilio refuses a sender's fourth send within a second; Clarion paces at two a second.
    let twilio = FakeTwilio::start().await;
    twilio.limit_per_second(3);
    let (app, key, template) = twilio_app(&twilio, 2.0).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(enroll(&app, &key, template, &format!("+15555550{i:03}")).await);
    }
    app.run_due().await;

    assert_eq!(twilio.sent().len(), 8, "every text sent");
    assert_eq!(twilio.rate_limited(), 0, "never faster than Twilio allows");
    let sent_at = twilio.sent_at();
    for pair in sent_at.windows(2) {
        let gap = pair[1].0.duration_since(pair[0].0);
        assert!(gap >= Duration::from_millis(400), "two texts {gap:?} apart");
    }
    let mut waited = 0;
    for id in ids {
        let sequence = app.sequence(&key, id).await;
        assert_eq!(
            sequence["outreach"].as_array().unwrap().len(),
            1,
            "{sequence}"
        );
        waited += capacity_waits(&app, &key, id).await.len();
    }
    assert!(waited >= 6, "the paced texts' waits are recorded: {waited}");
}

#[tokio::test]
async fn a_twilio_rate_limit_answer_puts_the_text_back_in_the_queue() {
    let twilio = FakeTwilio::start().await;
    let (app, key, template) = twilio_app(&twilio, 10.0).await;
    twilio.answer_next(&[SendAnswer::Error(429, 20429)]);
    let id = enroll(&app, &key, template, "+15555550170").await;
    app.run_due().await;

    assert_eq!(twilio.attempts(), 2, "refused once, then sent");
    assert_eq!(twilio.sent().len(), 1);
    let waits = capacity_waits(&app, &key, id).await;
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!(waits[0]["detail"]["refused_by_provider"], true);
    assert_eq!(waits[0]["detail"]["channel"], "sms");
    let sequence = app.sequence(&key, id).await;
    assert_eq!(
        sequence["status"], "active",
        "the conversation is open: {sequence}"
    );
    assert_eq!(
        sequence["outreach"].as_array().unwrap().len(),
        1,
        "{sequence}"
    );
}

#[tokio::test]
async fn a_call_reported_ended_for_lack_of_a_slot_goes_back_in_the_queue() {
    // Vapi took both requests (201, queued), then could not start the first: its end-of-call
    // report says `call.start.error-subscription-concurrency-limit-reached`.
    let vapi = FakeVapi::start().await;
    let app = vapi_app(&vapi, 10).await;
    let (key, template) = call_org(&app, "Riverside Family Clinic", Value::Null).await;
    let first = enroll(&app, &key, template, "+15555550180").await;
    let second = enroll(&app, &key, template, "+15555550181").await;
    app.run_due().await;
    let calls = vapi.calls();
    assert_eq!(calls.len(), 2);
    let refused = calls
        .iter()
        .find(|c| c["customer"]["number"] == "+15555550180")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut report = crate::support::fake_vapi::end_of_call_report(
        &refused,
        crate::support::fake_vapi::CONCURRENCY_LIMIT_REACHED,
        json!({}),
    );
    report["call"]["endedReason"] = json!(crate::support::fake_vapi::CONCURRENCY_LIMIT_REACHED);
    vapi.finish_call(&refused, &report);
    let (status, body) = vapi.emit(&app.base, Some(SERVER_SECRET), &report).await;
    assert_eq!(status, 200, "{body}");
    app.run_due().await;
    let sequence = app.sequence(&key, first).await;
    assert_eq!(sequence["status"], "active", "not failed: {sequence}");
    let waits = capacity_waits(&app, &key, first).await;
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!(waits[0]["detail"]["refused_by_provider"], true);
    assert_eq!(
        vapi.requests().len(),
        2,
        "not tried again before a slot frees"
    );

    // The other call ends: a slot is free, the first is placed again (its first start).
    let other = vapi.active_calls()[0].clone();
    vapi.end_call(&app.base, &other, "resolved").await;
    app.run_due().await;
    assert_eq!(vapi.requests().len(), 3);
    assert_eq!(started_numbers(&vapi).get("+15555550180"), Some(&1));
    let replaced = vapi.active_calls()[0].clone();
    vapi.end_call(&app.base, &replaced, "resolved").await;
    app.run_due().await;
    for id in [first, second] {
        let sequence = app.sequence(&key, id).await;
        assert_eq!(sequence["status"], "ended", "{sequence}");
        assert_eq!(
            sequence["outreach"][0]["call"]["outcome"], "resolved",
            "{sequence}"
        );
    }
}
