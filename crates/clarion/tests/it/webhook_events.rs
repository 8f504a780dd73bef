//! Webhook event types: endpoints subscribe to `sequence.ended`, `encounter.ended` and
//! `endpoint.disabled`; each request names its type in `clarion-event-type`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Answer, AppOptions, TestApp, TestReceiver, schema_errors, spawn_app_with};

/// Why `event` does not validate against the committed `encounter.ended` schema or against
/// the stricter schema of what Clarion sends; empty when it meets both.
pub fn encounter_event_errors(event: &Value) -> Vec<String> {
    event_errors(
        "encounter-ended.schema.json",
        clarion_webhooks::schema::encounter_ended_schema_as_sent(),
        event,
    )
}

/// Why `event` does not validate against the committed `endpoint.disabled` schema (every key
/// is required there, so it is also what Clarion sends); empty when it does.
pub fn endpoint_disabled_event_errors(event: &Value) -> Vec<String> {
    event_errors(
        "endpoint-disabled.schema.json",
        clarion_webhooks::schema::endpoint_disabled_schema(),
        event,
    )
}

fn event_errors(file: &str, as_sent: Value, event: &Value) -> Vec<String> {
    let path = format!("{}/../../schemas/{file}", env!("CARGO_MANIFEST_DIR"));
    let published: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut errors = Vec::new();
    for (name, schema) in [("published", published), ("as sent", as_sent)] {
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        errors.extend(
            validator
                .iter_errors(event)
                .map(|e| format!("{name}: {e} at {}", e.instance_path())),
        );
    }
    errors
}

/// An app whose dispatcher sends one request per endpoint at a time, so that arrival order
/// is queue order.
async fn one_at_a_time() -> TestApp {
    let mut options = AppOptions::default();
    options.dispatcher.max_in_flight_per_endpoint = 1;
    options.dispatcher.min_in_flight_per_endpoint = 1;
    spawn_app_with(options).await
}

async fn endpoint_with(app: &TestApp, key: &str, url: &str, event_types: Option<Value>) -> Value {
    let mut body = json!({ "url": url });
    if let Some(types) = event_types {
        body["event_types"] = types;
    }
    let (status, endpoint) = app.post(key, "/v1/webhook-endpoints", body).await;
    assert_eq!(status, 201, "{endpoint}");
    endpoint
}

async fn assistant(app: &TestApp, key: &str, channel: &str) -> i64 {
    let (status, assistant) = app
        .post(key, "/v1/assistants", json!({
            "name": format!("Reminder {channel}"), "channel": channel,
            "config": { "purpose": "confirm the upcoming appointment", "organisation_name": "Riverside Family Clinic" },
        }))
        .await;
    assert_eq!(status, 201, "{assistant}");
    assistant["id"].as_i64().unwrap()
}

/// The (event type, body) of every request a receiver got, in arrival order.
fn events(receiver: &TestReceiver) -> Vec<(String, Value)> {
    receiver
        .received()
        .iter()
        .map(|r| {
            (
                r.header("clarion-event-type").to_owned(),
                serde_json::from_slice(&r.body).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_endpoint_subscribed_to_encounters_gets_each_in_order_then_the_report_with_the_same_objects()
 {
    let app = one_at_a_time().await;
    let (_org, key) = app.org("Riverside Family Clinic").await;
    let both = TestReceiver::start(Answer::Status(204)).await;
    let default = TestReceiver::start(Answer::Status(204)).await;
    let encounters_only = TestReceiver::start(Answer::Status(204)).await;
    let subscribed = endpoint_with(
        &app,
        &key,
        &both.url,
        Some(json!(["encounter.ended", "sequence.ended"])),
    )
    .await;
    assert_eq!(
        subscribed["event_types"],
        json!(["encounter.ended", "sequence.ended"])
    );
    let plain = endpoint_with(&app, &key, &default.url, None).await;
    assert_eq!(plain["event_types"], json!(["sequence.ended"]));
    endpoint_with(
        &app,
        &key,
        &encounters_only.url,
        Some(json!(["encounter.ended"])),
    )
    .await;

    let call = assistant(&app, &key, "call").await;
    let sms = assistant(&app, &key, "sms").await;
    let (status, template) = app
        .post(&key, "/v1/sequence-templates", json!({
            "name": "Appointment reminder", "calling_hours": null, "stop_on": ["resolved", "opt-out"],
            "steps": [
                { "type": "call", "assistant_id": call, "max_attempts": 2, "retry_delay": "4h" },
                { "type": "sms", "assistant_id": sms, "delay": "1h" },
                { "type": "call", "assistant_id": call, "delay": "1d" },
            ]
        }))
        .await;
    assert_eq!(status, 201, "{template}");
    let id = app
        .enroll(&key, json!({
            "template_id": template["id"],
            "contact": { "phone_number": "+15555550150", "time_zone": "America/New_York", "name": "Alex Rivera" },
            "simulation": { "outcomes": ["no-answer", "voicemail", "no-reply", "resolved"] },
        }))
        .await;
    for _ in 0..24 * 7 {
        app.run_due().await;
        if app.sequence(&key, id).await["status"] == "ended" {
            break;
        }
        app.clock.advance(Duration::from_secs(3600));
    }
    app.run_due().await;

    let received = events(&both);
    let types: Vec<&str> = received.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "encounter.ended",
            "encounter.ended",
            "encounter.ended",
            "encounter.ended",
            "sequence.ended"
        ]
    );
    let report = &received[4].1;
    assert_eq!(report["id"], id);
    assert_eq!(schema_errors(report), Vec::<String>::new());
    let outreach = report["outreach"].as_array().unwrap();
    assert_eq!(outreach.len(), 4);
    for ((_, event), entry) in received.iter().zip(outreach) {
        assert_eq!(encounter_event_errors(event), Vec::<String>::new());
        assert_eq!(event["sequence_id"], id);
        // The event is the report's entry for that encounter, key for key, plus the sequence.
        let mut without_sequence = event.clone();
        without_sequence
            .as_object_mut()
            .unwrap()
            .remove("sequence_id");
        assert_eq!(&without_sequence, entry);
        // Parsed by the receivers' crate as the typed event.
        let typed = clarion_webhooks::Event::parse(
            Some("encounter.ended"),
            &serde_json::to_vec(event).unwrap(),
        )
        .unwrap();
        assert!(matches!(typed, clarion_webhooks::Event::EncounterEnded(_)));
    }

    // The default endpoint got the report alone, byte for byte the same.
    let plain_received = default.received();
    assert_eq!(plain_received.len(), 1);
    assert_eq!(
        plain_received[0].header("clarion-event-type"),
        "sequence.ended"
    );
    assert_eq!(plain_received[0].body, both.received()[4].body);
    // The encounters-only endpoint got the four events and no report.
    let only: Vec<String> = events(&encounters_only)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(only, ["encounter.ended"; 4]);

    // The sequence reads back as its report, not as an event.
    assert_eq!(&app.sequence(&key, id).await, report);
    // The pull API lists reports only.
    let (status, pulled) = app.get(&key, "/v1/reports").await;
    assert_eq!(status, 200);
    assert_eq!(pulled["data"].as_array().unwrap().len(), 1, "{pulled}");
}

#[tokio::test]
async fn event_types_are_validated_changed_and_tests_reach_any_subscription() {
    let app = one_at_a_time().await;
    let (org, key) = app.org("Riverside Family Clinic").await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    for bad in [
        json!(["sequence.started"]),
        json!([]),
        json!("sequence.ended"),
        json!([42]),
    ] {
        let (status, error) = app
            .post(
                &key,
                "/v1/webhook-endpoints",
                json!({ "url": receiver.url, "event_types": bad }),
            )
            .await;
        assert_eq!(status, 422, "{bad}: {error}");
        assert!(error["error"]["code"].is_string(), "{error}");
    }
    let (status, error) = app
        .post(
            &key,
            "/v1/webhook-endpoints",
            json!({ "url": receiver.url, "event_types": ["sequence.started"] }),
        )
        .await;
    assert_eq!(
        (status, &error["error"]["field"]),
        (422, &json!("event_types"))
    );

    let endpoint = endpoint_with(&app, &key, &receiver.url, None).await;
    let id = endpoint["id"].as_i64().unwrap();
    let path = format!("/v1/webhook-endpoints/{id}");
    let (status, changed) = app
        .patch(
            &key,
            &path,
            json!({ "event_types": ["endpoint.disabled", "encounter.ended", "encounter.ended"] }),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        changed["event_types"],
        json!(["endpoint.disabled", "encounter.ended"])
    );
    let (status, _) = app
        .patch(&key, &path, json!({ "event_types": ["nope"] }))
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        app.get(&key, &path).await.1["event_types"],
        changed["event_types"]
    );

    // A report goes nowhere now (the endpoint does not subscribe to it) ...
    app.enqueue(org, &clarion_webhooks::examples::call_only())
        .await;
    app.run_due().await;
    assert!(receiver.received().is_empty());
    // ... but a test report reaches it, named as one.
    let (status, sent) = app.post(&key, &format!("{path}/test"), json!({})).await;
    assert_eq!(status, 202, "{sent}");
    app.run_due().await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("clarion-event-type"),
        "sequence.ended.test"
    );
}
