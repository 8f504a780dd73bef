//! Caller numbers (`/v1/caller-numbers`): the operator's allow-list (a number and its Vapi
//! phoneNumberId allowed to one organisation only), the resource, and the number each call or
//! conversation goes out from — the contact's area code first, else in turn, within each
//! number's daily cap, among the numbers still allowed — through the Vapi and Twilio fakes and
//! the simulator.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::capacity::events;
use crate::support::fake_twilio::FakeTwilio;
use crate::support::fake_vapi::{PHONE_NUMBER_ID, end_of_call_report};
use crate::support::{AppOptions, TestApp, spawn_app, spawn_app_with};
use crate::twilio::{enroll_in, text_to, texting_org};
use crate::vapi;
use clarion_delivery::Clock as _;
use clarion_providers::twilio::wire::Sender;
use clarion_store::{Channel, OrgId};
use serde_json::{Value, json};
use std::time::Duration;

/// What the operator and then the organisation do: allow the body's number (with its
/// `provider_id`) to `org`, then create the caller number; answers it.
async fn caller_number(app: &TestApp, org: OrgId, key: &str, body: Value) -> Value {
    let channel: Channel = body["channel"].as_str().unwrap().parse().unwrap();
    let number = body["number"].as_str().unwrap();
    app.allow_caller_number(org, channel, number, body["provider_id"].as_str())
        .await;
    let (status, number) = app.post(key, "/v1/caller-numbers", body).await;
    assert_eq!(status, 201, "{number}");
    number
}

/// `clarion org ARGS… --database URL`, as the deployment's operator runs it: whether it
/// succeeded, what it printed, what it said on standard error.
async fn clarion_org(app: &TestApp, args: &[&str]) -> (bool, Value, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .arg("org")
        .args(args)
        .args(["--database", &app.database_url])
        .env("CLARION_SECRET_KEY", app.secret_key())
        .output()
        .await
        .unwrap();
    let printed = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), printed, said)
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
            f.org,
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
            f.org,
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
    let (org, key, template) = texting_org(&app, "Clinic A").await;
    for number in ["+12125550160", "+18085550160"] {
        caller_number(
            &app,
            org,
            &key,
            json!({ "channel": "sms", "number": number }),
        )
        .await;
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
    let (org, key) = app.org("Riverside Family Clinic").await;
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
    for (number, id) in [("+12125550180", "pn_sim_ny"), ("+18085550180", "pn_sim_hi")] {
        caller_number(
            &app,
            org,
            &key,
            json!({ "channel": "call", "number": number, "provider_id": id, "daily_cap": 1 }),
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
    let (org, key) = app.org("Clinic A").await;
    let (_, other) = app.org("Clinic B").await;
    app.allow_caller_number(org, Channel::Call, "+12125550100", Some("pn_1"))
        .await;
    app.allow_caller_number(org, Channel::Sms, "+12125550100", None)
        .await;
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
            json!({ "channel": "call", "number": "+13125550100", "provider_id": "pn_1" }),
            "number",
        ),
        (
            json!({ "channel": "call", "number": "+12125550100", "provider_id": "" }),
            "provider_id",
        ),
        (
            json!({ "channel": "call", "number": "+12125550100", "provider_id": "pn_2" }),
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
    // The provider id is the allowed one, given or not.
    let (status, number) = app
        .post(
            &key,
            "/v1/caller-numbers",
            json!({ "channel": "call", "number": "+12125550100", "daily_cap": 50 }),
        )
        .await;
    assert_eq!(status, 201, "{number}");
    assert_eq!(number["provider_id"], "pn_1");
    assert_eq!(number["enabled"], true);
    assert_eq!(number["daily_cap"], 50);
    assert_eq!(number["last_chosen_at"], Value::Null);
    let (status, error) = app
        .post(
            &key,
            "/v1/caller-numbers",
            json!({ "channel": "call", "number": "+12125550100", "provider_id": "pn_1" }),
        )
        .await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "caller_number_exists");
    // The same number for texts is another caller number.
    let (status, texts) = app
        .post(
            &key,
            "/v1/caller-numbers",
            json!({ "channel": "sms", "number": "+12125550100" }),
        )
        .await;
    assert_eq!(status, 201, "{texts}");

    let path = format!("/v1/caller-numbers/{}", number["id"]);
    let (status, changed) = app
        .patch(
            &key,
            &path,
            json!({ "daily_cap": null, "provider_id": "pn_1" }),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (changed["daily_cap"].clone(), changed["provider_id"].clone()),
        (Value::Null, json!("pn_1"))
    );
    for patch in [
        json!({ "provider_id": null }),
        json!({ "provider_id": "pn_9" }),
    ] {
        let (status, error) = app.patch(&key, &path, patch.clone()).await;
        assert_eq!(
            (status, error["error"]["field"].clone()),
            (422, json!("provider_id")),
            "{patch}: {error}"
        );
    }
    // The operator moves the number to another phoneNumberId: the caller number follows.
    app.allow_caller_number(org, Channel::Call, "+12125550100", Some("pn_9"))
        .await;
    let (_, moved) = app.get(&key, &path).await;
    assert_eq!(moved["provider_id"], "pn_9");
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

/// The review finding: any organisation could register any number or Vapi phoneNumberId and
/// call or text patients as another clinic. Now only what the operator allowed it is
/// accepted, with the same answer whether or not another organisation has the number.
#[tokio::test]
async fn another_organisation_can_register_neither_an_allowed_number_nor_its_phone_number_id() {
    let f = vapi::fixture().await;
    // Clinic A's number, allowed by the operator; A registers it without knowing its id.
    f.app
        .allow_caller_number(f.org, Channel::Call, "+18085550100", Some("pn_a"))
        .await;
    let (status, mine) = f
        .app
        .post(
            &f.key,
            "/v1/caller-numbers",
            json!({ "channel": "call", "number": "+18085550100" }),
        )
        .await;
    assert_eq!(status, 201, "{mine}");
    assert_eq!(mine["provider_id"], "pn_a");

    let (b, b_key) = f.app.org("Clinic B").await;
    f.app
        .allow_caller_number(b, Channel::Call, "+12125550100", Some("pn_b"))
        .await;
    let refused = [
        // A's number, with A's id, with B's, or leaving the id to the allow-list.
        (
            json!({ "channel": "call", "number": "+18085550100", "provider_id": "pn_a" }),
            "number",
        ),
        (
            json!({ "channel": "call", "number": "+18085550100", "provider_id": "pn_b" }),
            "number",
        ),
        (
            json!({ "channel": "call", "number": "+18085550100" }),
            "number",
        ),
        // A's number for texts: not allowed to B either.
        (
            json!({ "channel": "sms", "number": "+18085550100" }),
            "number",
        ),
        // B's own number with A's phoneNumberId.
        (
            json!({ "channel": "call", "number": "+12125550100", "provider_id": "pn_a" }),
            "provider_id",
        ),
    ];
    let (_, never_allowed) = f
        .app
        .post(
            &b_key,
            "/v1/caller-numbers",
            json!({ "channel": "call", "number": "+13125550100" }),
        )
        .await;
    assert_eq!(never_allowed["error"]["field"], "number", "{never_allowed}");
    for (body, field) in refused {
        let (status, error) = f.app.post(&b_key, "/v1/caller-numbers", body.clone()).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["code"], "invalid_field", "{error}");
        assert_eq!(error["error"]["field"], field, "{error}");
        assert!(!error.to_string().contains("pn_a"), "{error}");
        if field == "number" {
            assert_eq!(
                error, never_allowed,
                "no oracle: the same answer as for a number nobody has"
            );
        }
    }
    // Nor can B move its own number onto A's phoneNumberId.
    let (status, own) = f
        .app
        .post(
            &b_key,
            "/v1/caller-numbers",
            json!({ "channel": "call", "number": "+12125550100" }),
        )
        .await;
    assert_eq!(status, 201, "{own}");
    let path = format!("/v1/caller-numbers/{}", own["id"]);
    let (status, error) = f
        .app
        .patch(&b_key, &path, json!({ "provider_id": "pn_a" }))
        .await;
    assert_eq!(
        (status, error["error"]["field"].clone()),
        (422, json!("provider_id"))
    );
    let (_, list) = f.app.get(&b_key, "/v1/caller-numbers").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");

    // Each organisation sees its own allow-list, read-only.
    let (_, organization) = f.app.get(&b_key, "/v1/organization").await;
    assert_eq!(
        organization["allowed_caller_numbers"],
        json!([{ "channel": "call", "number": "+12125550100", "provider_id": "pn_b" }])
    );

    // A's number still works for A.
    f.enroll("+18085550123").await;
    f.run().await;
    assert_eq!(placed_from(&f), ["pn_a"]);
}

#[tokio::test]
async fn a_number_taken_off_the_allow_list_is_no_longer_chosen() {
    let f = vapi::fixture().await;
    for (number, id) in [("+18085550100", "pn_hi"), ("+12125550100", "pn_ny")] {
        caller_number(
            &f.app,
            f.org,
            &f.key,
            json!({ "channel": "call", "number": number, "provider_id": id }),
        )
        .await;
    }
    f.enroll("+18085550141").await;
    f.run().await;
    assert_eq!(placed_from(&f), ["pn_hi"]);

    // The operator takes the Honolulu number off: a Honolulu contact is called from the other.
    let org = f.org.0.to_string();
    let (ok, shown, said) = clarion_org(
        &f.app,
        &[
            "disallow-caller-number",
            &org,
            "--channel",
            "call",
            "--number",
            "+18085550100",
        ],
    )
    .await;
    assert!(ok, "{said}");
    assert_eq!(
        shown["allowed_caller_numbers"],
        json!([{ "channel": "call", "number": "+12125550100", "provider_id": "pn_ny" }])
    );
    f.enroll("+18085550142").await;
    f.run().await;
    assert_eq!(placed_from(&f), ["pn_hi", "pn_ny"]);
    // Still the organisation's caller number (it shows it), just not chosen.
    let (_, list) = f.app.get(&f.key, "/v1/caller-numbers").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    // With none allowed, the deployment's configured number is used, as without any.
    let (ok, _, said) = clarion_org(
        &f.app,
        &[
            "disallow-caller-number",
            &org,
            "--channel",
            "call",
            "--number",
            "+12125550100",
        ],
    )
    .await;
    assert!(ok, "{said}");
    f.enroll("+18085550143").await;
    f.run().await;
    assert_eq!(placed_from(&f), ["pn_hi", "pn_ny", PHONE_NUMBER_ID]);
}

#[tokio::test]
async fn the_cli_refuses_a_number_or_a_phone_number_id_allowed_to_another_organisation() {
    let app = spawn_app().await;
    let (a, a_key) = app.org("Clinic A").await;
    let (b, _) = app.org("Clinic B").await;
    let (a, b) = (a.0.to_string(), b.0.to_string());
    let allow = |org: &str, channel: &str, number: &str, provider_id: Option<&str>| {
        let mut args = vec![
            "allow-caller-number".to_owned(),
            org.to_owned(),
            "--channel".to_owned(),
            channel.to_owned(),
            "--number".to_owned(),
            number.to_owned(),
        ];
        if let Some(id) = provider_id {
            args.extend(["--provider-id".to_owned(), id.to_owned()]);
        }
        args
    };
    let run = |args: Vec<String>| {
        let app = &app;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            clarion_org(app, &args).await
        }
    };
    let (ok, shown, said) = run(allow(&a, "call", "+18085550100", Some("pn_a"))).await;
    assert!(ok, "{said}");
    assert_eq!(
        shown["allowed_caller_numbers"],
        json!([{ "channel": "call", "number": "+18085550100", "provider_id": "pn_a" }])
    );
    let (ok, _, said) = run(allow(&a, "sms", "+18085550100", None)).await;
    assert!(ok, "{said}");

    for (args, why) in [
        (
            allow(&b, "call", "+18085550100", Some("pn_b")),
            "another organisation",
        ),
        (
            allow(&b, "sms", "+18085550100", None),
            "another organisation",
        ),
        (
            allow(&b, "call", "+12125550100", Some("pn_a")),
            "another organisation",
        ),
        (allow(&b, "call", "+12125550100", None), "phoneNumberId"),
        (
            allow(&b, "fax", "+12125550100", Some("pn_b")),
            "call or sms",
        ),
        (allow(&b, "sms", "2125550100", None), "E.164"),
    ] {
        let (ok, shown, said) = run(args.clone()).await;
        assert!(!ok, "{args:?} was accepted: {shown}");
        assert!(said.contains(why), "{args:?}: {said}");
        assert!(!said.contains("+1808"), "the number is not echoed: {said}");
    }
    let (ok, shown, said) = run(vec!["show".to_owned(), b.clone()]).await;
    assert!(ok, "{said}");
    assert_eq!(shown["allowed_caller_numbers"], json!([]));
    let (_, organization) = app.get(&a_key, "/v1/organization").await;
    assert_eq!(
        organization["allowed_caller_numbers"],
        json!([
            { "channel": "call", "number": "+18085550100", "provider_id": "pn_a" },
            { "channel": "sms", "number": "+18085550100", "provider_id": null },
        ])
    );

    // Once A's is taken off, B may have it.
    let (ok, _, said) = run(vec![
        "disallow-caller-number".to_owned(),
        a.clone(),
        "--channel".to_owned(),
        "call".to_owned(),
        "--number".to_owned(),
        "+18085550100".to_owned(),
    ])
    .await;
    assert!(ok, "{said}");
    let (ok, shown, said) = run(allow(&b, "call", "+18085550100", Some("pn_a"))).await;
    assert!(ok, "{said}");
    assert_eq!(shown["allowed_caller_numbers"][0]["provider_id"], "pn_a");
}
