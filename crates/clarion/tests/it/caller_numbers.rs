//! Caller numbers (`/v1/caller-numbers`): the resource, and the number each call or
//! conversation goes out from — the contact's area code first, else in turn, within each
//! number's daily cap — through the Vapi and Twilio fakes and the simulator.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::capacity::events;
use crate::support::fake_twilio::FakeTwilio;
use crate::support::fake_vapi::end_of_call_report;
use crate::support::{AppOptions, TestApp, spawn_app, spawn_app_with};
use crate::twilio::{enroll_in, text_to, texting_org};
use crate::vapi;
use clarion_delivery::Clock as _;
use clarion_providers::twilio::wire::Sender;
use serde_json::{Value, json};
use std::time::Duration;

/// Creates a caller number; answers it.
async fn caller_number(app: &TestApp, key: &str, body: Value) -> Value {
    let (status, number) = app.post(key, "/v1/caller-numbers", body).await;
    assert_eq!(status, 201, "{number}");
    number
}

/// The Vapi phoneNumberId of each call placed so far, in order.
fn placed_from(f: &vapi::Fixture) -> Vec<String> {
    f.vapi
        .requests()
        .iter()
        .map(|r| r["phoneNumberId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_call_goes_out_from_a_number_with_the_contacts_area_code_else_from_each_in_turn() {
    let f = vapi::fixture().await;
    for (number, id) in [
        ("+12125550100", "pn_ny"),
        ("+18085550100", "pn_hi"),
        ("+13125550100", "pn_chi"),
    ] {
        caller_number(
            &f.app,
            &f.key,
            json!({ "channel": "call", "number": number, "provider_id": id }),
        )
        .await;
    }
    // A Honolulu contact gets the 808 number; contacts whose area code no number has get
    // the numbers in turn: never chosen first, then the least recently chosen, ties by id.
    let honolulu = f.enroll("+18085550123").await;
    f.run().await;
    for contact in ["+15555550124", "+15555550125", "+15555550126"] {
        f.enroll(contact).await;
        f.run().await;
    }
    assert_eq!(placed_from(&f), ["pn_hi", "pn_ny", "pn_chi", "pn_ny"]);
    let requests = f.vapi.requests();
    assert_eq!(requests[0]["customer"]["number"], "+18085550123");

    // The report's source_number is the number the call went out from.
    let report = end_of_call_report(
        requests[0]["id"].as_str().unwrap_or("call_1"),
        "customer-ended-call",
        json!({ "outcome": "resolved" }),
    );
    let (status, body) = f.emit(&report).await;
    assert_eq!(status, 200, "{body}");
    f.run().await;
    let ended = f.sequence(honolulu).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    assert_eq!(
        ended["outreach"][0]["call"]["source_number"],
        "+18085550100"
    );
    assert_eq!(crate::support::schema_errors(&ended), Vec::<String>::new());

    // Disabled numbers are not chosen.
    let (_, list) = f.app.get(&f.key, "/v1/caller-numbers").await;
    for number in list["data"].as_array().unwrap() {
        if number["number"] != "+13125550100" {
            let path = format!("/v1/caller-numbers/{}", number["id"]);
            let (status, _) = f
                .app
                .patch(&f.key, &path, json!({ "enabled": false }))
                .await;
            assert_eq!(status, 200);
        }
    }
    f.enroll("+18085550127").await;
    f.run().await;
    assert_eq!(placed_from(&f).last().unwrap(), "pn_chi");
}

#[tokio::test]
async fn a_number_at_its_daily_cap_gives_way_and_with_every_number_at_its_cap_nobody_is_called() {
    let f = vapi::fixture().await;
    for (number, id) in [("+18085550100", "pn_hi"), ("+12125550100", "pn_ny")] {
        caller_number(
            &f.app,
            &f.key,
            json!({ "channel": "call", "number": number, "provider_id": id, "daily_cap": 1 }),
        )
        .await;
    }
    f.enroll("+18085550131").await;
    f.run().await;
    // The 808 number has had its one contact today: the next Honolulu contact is called
    // from the other number.
    f.enroll("+18085550132").await;
    f.run().await;
    assert_eq!(placed_from(&f), ["pn_hi", "pn_ny"]);

    // Both at their caps: nobody is called, and the sequence says why and until when.
    let started = f.app.clock.now_millis();
    let third = f.enroll("+18085550133").await;
    f.run().await;
    f.run().await;
    assert_eq!(f.vapi.requests().len(), 2, "nobody else was called");
    let deferred: Vec<Value> = events(&f.app, &f.key, third)
        .await
        .into_iter()
        .filter(|e| e["type"] == "deferred")
        .collect();
    assert_eq!(deferred.len(), 1, "{deferred:?}");
    assert_eq!(deferred[0]["detail"]["reason"], "caller-number-cap");
    let until: chrono::DateTime<chrono::Utc> = deferred[0]["detail"]["until"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        until.timestamp_millis(),
        started + 24 * 3600 * 1000,
        "due again when the first number's contact leaves its 24 hours"
    );
    let sequence = f.sequence(third).await;
    assert_eq!(sequence["status"], "active");
    assert_eq!(sequence["outreach"], json!([]), "no encounter is kept");

    // A day later the numbers are free again: the waiting contact is called, locally.
    f.app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    f.run().await;
    let placed = placed_from(&f);
    assert_eq!(placed.len(), 3, "{placed:?}");
    assert_eq!(placed[2], "pn_hi");
    assert_eq!(f.vapi.requests()[2]["customer"]["number"], "+18085550133");
}

#[tokio::test]
async fn an_sms_conversation_keeps_the_number_it_began_from() {
    let twilio = FakeTwilio::start().await;
    let app = spawn_app_with(AppOptions {
        twilio: Some(twilio.settings()),
        ..AppOptions::default()
    })
    .await;
    let (_, key, template) = texting_org(&app, "Clinic A").await;
    for number in ["+12125550160", "+18085550160"] {
        caller_number(&app, &key, json!({ "channel": "sms", "number": number })).await;
    }
    let patient = "+18085550170";
    let id = enroll_in(&app, &key, template, patient).await;
    app.run_due().await;
    let sent = twilio.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].sender, Sender::From("+18085550160".to_owned()));

    // A text to the organisation's other number does not reach the conversation.
    let twiml = text_to(
        &twilio,
        &app,
        "SM0000000000000000000000000000c001",
        patient,
        "+12125550160",
        "yes",
    )
    .await;
    assert!(!twiml.contains("<Message>"), "{twiml}");
    // Replies to the number it began from are answered from it (TwiML answers from the
    // number texted), turn after turn.
    let twiml = text_to(
        &twilio,
        &app,
        "SM0000000000000000000000000000c002",
        patient,
        "+18085550160",
        "what is this?",
    )
    .await;
    assert!(twiml.contains("Please reply YES."), "{twiml}");
    let twiml = text_to(
        &twilio,
        &app,
        "SM0000000000000000000000000000c003",
        patient,
        "+18085550160",
        "YES",
    )
    .await;
    assert!(twiml.contains("Thank you!"), "{twiml}");
    app.run_due().await;
    let ended = app.sequence(&key, id).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    let sms = &ended["outreach"][0]["sms"];
    assert_eq!(sms["source_number"], "+18085550160");
    assert_eq!(sms["destination_number"], patient);
    assert_eq!(twilio.sent().len(), 1, "the conversation began once");

    // A STOP to the number suppresses the patient for the organisation that texted from it.
    text_to(
        &twilio,
        &app,
        "SM0000000000000000000000000000c004",
        patient,
        "+18085550160",
        "STOP",
    )
    .await;
    assert_eq!(
        app.suppression_reason(&key, patient).await.as_deref(),
        Some("opt-out")
    );
}

#[tokio::test]
async fn a_simulated_call_reports_the_caller_number_it_was_given() {
    let app = spawn_app().await;
    let (_, key) = app.org("Riverside Family Clinic").await;
    let (status, assistant) = app
        .post(&key, "/v1/assistants", json!({
            "name": "Reminder caller", "channel": "call",
            "config": { "purpose": "confirm the upcoming appointment", "organisation_name": "Riverside Family Clinic" }
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
    for number in ["+12125550180", "+18085550180"] {
        caller_number(
            &app,
            &key,
            json!({ "channel": "call", "number": number, "provider_id": "pn_sim", "daily_cap": 1 }),
        )
        .await;
    }
    let mut ids = Vec::new();
    for contact in ["+18085550190", "+18085550191", "+18085550192"] {
        ids.push(
            app.enroll(
                &key,
                json!({
                    "template_id": template["id"],
                    "contact": { "phone_number": contact, "time_zone": "Pacific/Honolulu" },
                    "simulation": { "outcomes": ["resolved"] },
                }),
            )
            .await,
        );
    }
    app.run_due().await;
    // The simulated calls end within the hour.
    app.clock.advance(Duration::from_secs(3600));
    app.run_due().await;
    let mut sources = Vec::new();
    for id in &ids[..2] {
        let sequence = app.sequence(&key, *id).await;
        sources.push(sequence["outreach"][0]["call"]["source_number"].clone());
    }
    assert_eq!(sources, [json!("+18085550180"), json!("+12125550180")]);
    let third = app.sequence(&key, ids[2]).await;
    assert_eq!(third["outreach"], json!([]), "{third}");
    let reasons: Vec<Value> = events(&app, &key, ids[2])
        .await
        .into_iter()
        .filter(|e| e["type"] == "deferred")
        .map(|e| e["detail"]["reason"].clone())
        .collect();
    assert_eq!(reasons, [json!("caller-number-cap")]);
}

#[tokio::test]
async fn caller_numbers_are_validated_unique_per_channel_and_another_organisations_are_not_found() {
    let app = spawn_app().await;
    let (_, key) = app.org("Clinic A").await;
    let (_, other) = app.org("Clinic B").await;
    let refused = [
        (
            json!({ "channel": "fax", "number": "+12125550100" }),
            "channel",
        ),
        (
            json!({ "channel": "sms", "number": "2125550100" }),
            "number",
        ),
        (
            json!({ "channel": "call", "number": "+12125550100" }),
            "provider_id",
        ),
        (
            json!({ "channel": "call", "number": "+12125550100", "provider_id": "" }),
            "provider_id",
        ),
        (
            json!({ "channel": "sms", "number": "+12125550100", "daily_cap": 0 }),
            "daily_cap",
        ),
    ];
    for (body, field) in refused {
        let (status, error) = app.post(&key, "/v1/caller-numbers", body.clone()).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    let number = caller_number(
        &app,
        &key,
        json!({ "channel": "call", "number": "+12125550100", "provider_id": "pn_1", "daily_cap": 50 }),
    )
    .await;
    assert_eq!(number["enabled"], true);
    assert_eq!(number["daily_cap"], 50);
    assert_eq!(number["last_chosen_at"], Value::Null);
    let (status, error) = app
        .post(
            &key,
            "/v1/caller-numbers",
            json!({ "channel": "call", "number": "+12125550100", "provider_id": "pn_2" }),
        )
        .await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "caller_number_exists");
    // The same number for texts, or for another organisation, is another caller number.
    caller_number(
        &app,
        &key,
        json!({ "channel": "sms", "number": "+12125550100" }),
    )
    .await;
    caller_number(
        &app,
        &other,
        json!({ "channel": "sms", "number": "+12125550100" }),
    )
    .await;

    let path = format!("/v1/caller-numbers/{}", number["id"]);
    let (status, changed) = app
        .patch(
            &key,
            &path,
            json!({ "daily_cap": null, "provider_id": "pn_9" }),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (changed["daily_cap"].clone(), changed["provider_id"].clone()),
        (Value::Null, json!("pn_9"))
    );
    let (status, error) = app.patch(&key, &path, json!({ "provider_id": null })).await;
    assert_eq!(
        (status, error["error"]["field"].clone()),
        (422, json!("provider_id"))
    );
    let (status, list) = app.get(&key, "/v1/caller-numbers?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let next = list["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get(&key, &format!("/v1/caller-numbers?limit=10&after={next}"))
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);

    // Another organisation's number is not found, whatever the method.
    let (status, _) = app.get(&other, &path).await;
    assert_eq!(status, 404);
    let (status, _) = app.patch(&other, &path, json!({ "enabled": false })).await;
    assert_eq!(status, 404);
    let (status, _) = app
        .request(reqwest::Method::DELETE, &other, &path, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .request(reqwest::Method::DELETE, &key, &path, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = app.get(&key, &path).await;
    assert_eq!(status, 404);
}
