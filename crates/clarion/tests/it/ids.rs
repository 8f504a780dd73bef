//! Public ids (issue 17, defect 9): the ids the API and the report show carry no global order,
//! so one organisation cannot count another's sequences, calls or deliveries from the gaps
//! between its own ids; each organisation's ids name nothing for another; and every id
//! round-trips through every route that takes it, including the report's.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashSet;
use std::time::Duration;

use crate::support::{Answer, TestApp, TestReceiver, spawn_app};
use clarion_store::{IdKind, OrgId};
use serde_json::{Value, json};

/// One organisation with an endpoint, a call and an SMS assistant and a two-step template.
struct Tenant {
    org: OrgId,
    key: String,
    endpoint: i64,
    call_assistant: i64,
    sms_assistant: i64,
    template: i64,
}

async fn tenant(app: &TestApp, name: &str, receiver: &TestReceiver) -> Tenant {
    let (org, key) = app.org(name).await;
    let (endpoint, _) = app.endpoint(&key, &receiver.url).await;
    let mut assistants = Vec::new();
    for channel in ["call", "sms"] {
        let (status, assistant) = app
            .post(
                &key,
                "/v1/assistants",
                json!({
                    "name": format!("Reminder {channel}"), "channel": channel,
                    "config": { "purpose": "confirm the appointment", "organisation_name": name },
                }),
            )
            .await;
        assert_eq!(status, 201, "{assistant}");
        assistants.push(assistant["id"].as_i64().unwrap());
    }
    let (status, template) = app
        .post(
            &key,
            "/v1/sequence-templates",
            json!({
                "name": "Call then text", "calling_hours": null, "stop_on": ["resolved"],
                "steps": [
                    { "type": "call", "assistant_id": assistants[0], "max_attempts": 1 },
                    { "type": "sms", "assistant_id": assistants[1], "delay": "1h" }
                ]
            }),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    Tenant {
        org,
        key,
        endpoint,
        call_assistant: assistants[0],
        sms_assistant: assistants[1],
        template: template["id"].as_i64().unwrap(),
    }
}

async fn enroll(app: &TestApp, tenant: &Tenant, phone: &str, outcomes: &[&str]) -> i64 {
    app.enroll(
        &tenant.key,
        json!({
            "template_id": tenant.template,
            "contact": { "phone_number": phone, "time_zone": "America/New_York" },
            "simulation": { "outcomes": outcomes },
        }),
    )
    .await
}

/// Every item of a list, page by page with `limit=1`, following `next_cursor`; checks each
/// cursor is the public id of the page's last item (never an internal one). The reports'
/// cursor is the public id of the report's message, which the report does not show.
async fn walk(app: &TestApp, key: &str, path: &str) -> Vec<Value> {
    let cursor_is_item_id = !path.starts_with("/v1/reports");
    let mut items = Vec::new();
    let mut after = String::new();
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let (status, page) = app
            .get(key, &format!("{path}{separator}limit=1&after={after}"))
            .await;
        assert_eq!(status, 200, "{path}: {page}");
        let data = page["data"].as_array().unwrap().clone();
        match page["next_cursor"].as_str() {
            None => {
                items.extend(data);
                return items;
            }
            Some(cursor) => {
                if cursor_is_item_id {
                    assert_eq!(
                        cursor,
                        data[0]["id"].as_i64().unwrap().to_string(),
                        "{path}"
                    );
                }
                after = cursor.to_owned();
                items.extend(data);
            }
        }
        assert!(items.len() < 100, "{path}: the cursor does not advance");
    }
}

fn id_list(items: &[Value]) -> Vec<i64> {
    items
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn ids_reveal_neither_order_nor_how_much_another_organisation_created() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let a = tenant(&app, "Clinic A", &receiver).await;
    let b = tenant(&app, "Clinic B", &receiver).await;
    // A enrolls one contact, then B a varying number, again and again: with global counters
    // A's ids would step by B's volume each time.
    let mut a_ids = Vec::new();
    for round in 0..12 {
        a_ids.push(enroll(&app, &a, &format!("+1555555{round:04}"), &["resolved"]).await);
        for extra in 0..(round % 4) {
            enroll(
                &app,
                &b,
                &format!("+1555556{round:02}{extra:02}"),
                &["resolved"],
            )
            .await;
        }
    }
    for id in &a_ids {
        assert!((1..1_i64 << 53).contains(id), "{id} is not a JSON-safe id");
    }
    let mut sorted = a_ids.clone();
    sorted.sort_unstable();
    let close = sorted
        .windows(2)
        .filter(|pair| pair[1] - pair[0] < 1_000_000)
        .count();
    assert_eq!(close, 0, "ids close together reveal counts: {a_ids:?}");
    assert_ne!(
        a_ids, sorted,
        "ids in creation order reveal the order: {a_ids:?}"
    );
    // The same holds for every other kind of id an organisation is given.
    assert_ne!(a.template, b.template);
    assert!((a.call_assistant - a.sms_assistant).abs() > 1_000_000);
    assert!((a.endpoint - b.endpoint).abs() > 1_000_000);
    // The list is still complete and in the organisation's own creation order.
    assert_eq!(id_list(&walk(&app, &a.key, "/v1/sequences").await), a_ids);
}

#[tokio::test]
async fn one_organisations_ids_name_nothing_for_another() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let a = tenant(&app, "Clinic A", &receiver).await;
    let b = tenant(&app, "Clinic B", &receiver).await;
    let sequence = enroll(&app, &a, "+15555550123", &["resolved"]).await;
    let delivery = loop {
        app.run_due().await;
        if let Some(delivery) = app.deliveries(&a.key).await.first() {
            break delivery["id"].as_i64().unwrap();
        }
        app.clock.advance(Duration::from_secs(3600));
    };
    let foreign = [
        format!("/v1/sequences/{sequence}"),
        format!("/v1/sequences/{sequence}/events"),
        format!("/v1/sequence-templates/{}", a.template),
        format!("/v1/assistants/{}", a.call_assistant),
        format!("/v1/webhook-endpoints/{}", a.endpoint),
        format!("/v1/webhook-endpoints/{}/secret", a.endpoint),
        format!("/v1/webhook-deliveries/{delivery}"),
    ];
    for path in &foreign {
        let (status, body) = app.get(&b.key, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
        let (status, _) = app.get(&a.key, path).await;
        assert_eq!(status, 200, "{path} is the owner's");
    }
    for path in [
        format!("/v1/sequences/{sequence}/cancel"),
        format!("/v1/webhook-deliveries/{delivery}/retry"),
        format!("/v1/webhook-endpoints/{}/test", a.endpoint),
    ] {
        let (status, _) = app.post(&b.key, &path, json!({})).await;
        assert_eq!(status, 404, "{path}");
    }
    // Numbers outside the id range name nothing either.
    for id in ["0", "-1", "281474976710656", "9007199254740993"] {
        let (status, _) = app.get(&a.key, &format!("/v1/sequences/{id}")).await;
        assert_eq!(status, 404, "{id}");
    }
    // Another organisation's template cannot be enrolled in, as if it did not exist.
    let (status, body) = app
        .post(
            &b.key,
            "/v1/sequences",
            json!({
                "template_id": a.template,
                "contact": { "phone_number": "+15555550124", "time_zone": "America/New_York" },
            }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("template_id")),
        "{body}"
    );
    // Nor its assistants used in a template.
    let (status, body) = app
        .post(&b.key, "/v1/sequence-templates", json!({
            "name": "Borrowed", "steps": [ { "type": "call", "assistant_id": a.call_assistant } ]
        }))
        .await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn the_reports_ids_are_the_apis_and_round_trip_through_every_route() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let a = tenant(&app, "Clinic A", &receiver).await;
    let sequence = enroll(&app, &a, "+15555550123", &["voicemail", "resolved"]).await;
    let mut ended = Value::Null;
    for _ in 0..48 {
        app.run_due().await;
        ended = app.sequence(&a.key, sequence).await;
        if ended["status"] == "ended" && !receiver.received().is_empty() {
            break;
        }
        app.clock.advance(Duration::from_secs(3600));
    }
    assert_eq!(ended["status"], "ended", "{ended}");

    // The delivered report: its id is the API's id, its calls' and texts' ids are public
    // encounter ids, its assistants the API's assistant ids.
    let delivered: Value = serde_json::from_slice(&receiver.received()[0].body).unwrap();
    assert_eq!(delivered["id"], sequence);
    assert_eq!(delivered, ended, "GET answers the delivered body");
    let call = &delivered["outreach"][0]["call"];
    let sms = &delivered["outreach"][1]["sms"];
    assert_eq!(call["assistant_id"], a.call_assistant);
    assert_eq!(sms["assistant_id"], a.sms_assistant);
    let ids = app.store.public_ids(a.org);
    let internal = ids.decode(IdKind::Sequence, sequence).unwrap();
    let rows = app
        .store
        .sequence_encounters(clarion_store::SequenceId(internal))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for (row, shown) in rows.iter().zip([call, sms]) {
        let shown = shown["id"].as_i64().unwrap();
        assert_ne!(shown, row.id.0, "the report shows an internal encounter id");
        assert_eq!(ids.decode(IdKind::Encounter, shown), Some(row.id.0));
    }

    // The pull API serves the same report; its cursor is not the internal message id.
    let reports = walk(&app, &a.key, "/v1/reports").await;
    assert_eq!(reports, std::slice::from_ref(&delivered));
    let (_, page) = app.get(&a.key, "/v1/reports?limit=1").await;
    let cursor: i64 = page["next_cursor"].as_str().unwrap().parse().unwrap();
    let stored = app
        .store
        .list_reports(a.org, "sequence.ended", None, 10)
        .await
        .unwrap();
    assert_ne!(cursor, stored[0].message_id.0);
    assert_eq!(
        ids.decode(IdKind::Message, cursor),
        Some(stored[0].message_id.0)
    );

    // Deliveries: ids, filters and cursor in public ids.
    let deliveries = walk(&app, &a.key, "/v1/webhook-deliveries").await;
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery["sequence_id"], sequence);
    assert_eq!(delivery["endpoint_id"], a.endpoint);
    for filter in [
        format!("sequence_id={sequence}"),
        format!("endpoint_id={}", a.endpoint),
    ] {
        let (_, page) = app
            .get(&a.key, &format!("/v1/webhook-deliveries?{filter}"))
            .await;
        assert_eq!(page["data"].as_array().unwrap().len(), 1, "{filter}");
    }
    let (status, one) = app
        .get(
            &a.key,
            &format!("/v1/webhook-deliveries/{}", delivery["id"]),
        )
        .await;
    assert_eq!((status, &one["id"]), (200, &delivery["id"]));
    let (status, retried) = app
        .post(
            &a.key,
            &format!("/v1/webhook-deliveries/{}/retry", delivery["id"]),
            json!({}),
        )
        .await;
    assert_eq!((status, &retried["id"]), (202, &delivery["id"]));

    // Lists and their cursors: every item once, ids as created.
    let (status, template) = app
        .request(
            reqwest::Method::PUT,
            &a.key,
            &format!("/v1/sequence-templates/{}", a.template),
            Some(json!({
                "name": "Call only", "steps": [ { "type": "call", "assistant_id": a.call_assistant } ]
            })),
        )
        .await;
    assert_eq!(
        (status, template["id"].as_i64()),
        (200, Some(a.template)),
        "{template}"
    );
    assert_eq!(template["steps"][0]["assistant_id"], a.call_assistant);
    let (status, other) = app
        .post(
            &a.key,
            "/v1/sequence-templates",
            json!({
                "name": "Text only", "steps": [ { "type": "sms", "assistant_id": a.sms_assistant } ]
            }),
        )
        .await;
    assert_eq!(status, 201);
    let second = other["id"].as_i64().unwrap();
    assert_eq!(
        id_list(&walk(&app, &a.key, "/v1/sequence-templates").await),
        [a.template, second]
    );
    assert_eq!(
        id_list(&walk(&app, &a.key, "/v1/assistants").await),
        [a.call_assistant, a.sms_assistant]
    );
    assert_eq!(
        id_list(&walk(&app, &a.key, "/v1/webhook-endpoints").await),
        [a.endpoint]
    );
    let events = walk(&app, &a.key, &format!("/v1/sequences/{sequence}/events")).await;
    let event_ids: HashSet<i64> = id_list(&events).into_iter().collect();
    assert!(events.len() >= 4, "{events:?}");
    assert_eq!(event_ids.len(), events.len(), "each event once");

    // A change's author is the API key by its public id, not the global key counter.
    let (status, _) = app
        .post(
            &a.key,
            "/v1/suppressions",
            json!({ "phone_number": "+15555550199" }),
        )
        .await;
    assert_eq!(status, 201);
    let (_, history) = app
        .get(&a.key, "/v1/suppressions/+15555550199/history")
        .await;
    let key_id = app
        .store
        .authenticate_key(&a.key)
        .await
        .unwrap()
        .unwrap()
        .key_id;
    let actor = history["data"][0]["actor"].as_str().unwrap().to_owned();
    assert_eq!(
        actor,
        format!("api-key:{}", ids.encode(IdKind::ApiKey, key_id)),
        "{history}"
    );
    assert_ne!(actor, format!("api-key:{key_id}"));
    assert_ne!(history["data"][0]["id"], 1, "{history}");

    // The second sequence, enrolled in the replaced template, round-trips through controls.
    let paused = enroll(&app, &a, "+15555550125", &["resolved"]).await;
    for action in ["pause", "resume", "cancel"] {
        let (status, body) = app
            .post(
                &a.key,
                &format!("/v1/sequences/{paused}/{action}"),
                json!({}),
            )
            .await;
        assert_eq!(
            (status, body["id"].as_i64()),
            (200, Some(paused)),
            "{action}: {body}"
        );
    }
}
