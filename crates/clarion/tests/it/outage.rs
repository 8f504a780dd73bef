//! A database outage at the worst moment of an encounter, on a node that stays up: the
//! provider (or the simulator) has answered and the transaction recording that answer fails
//! as if the database had gone away (`CLARION_OUTAGE_AT`). The node keeps the answer and
//! records it once the database answers again, instead of leaving the encounter to be
//! reconciled as failed.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::support;
use clarion_store::testing::TestDatabase;

use crate::support::{Answer, TestReceiver, eventually};
use serde_json::{Value, json};

/// How many times in a row the recording transaction fails: a few backoff steps, well inside
/// the configuration's `reconcile_after` (1 s).
const OUTAGE: &str = "recording-answer:3";

#[tokio::test]
async fn a_simulated_answer_is_recorded_after_an_outage_not_ended_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create().await;
    let key = support::create_org_with_cli(&database).await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let http = reqwest::Client::new();
    let (mut server, base) = support::spawn_server_with_env(
        dir.path(),
        &database,
        support::FAST_NODE_CONFIG,
        None,
        &[("CLARION_OUTAGE_AT", OUTAGE)],
    )
    .await;
    let post = |path: &'static str, body: Value| {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        async move { support::post_ok(&http, &base, &key, path, body).await }
    };
    post("/v1/webhook-endpoints", json!({ "url": receiver.url })).await;
    let caller = post(
        "/v1/assistants",
        json!({ "name": "Caller", "channel": "call" }),
    )
    .await;
    let texter = post(
        "/v1/assistants",
        json!({ "name": "Texter", "channel": "sms" }),
    )
    .await;
    let template = post(
        "/v1/sequence-templates",
        json!({
            "name": "Call then SMS", "calling_hours": null, "stop_on": ["resolved"], "sms_timeout": "1h",
            "steps": [ { "type": "call", "assistant_id": caller["id"] }, { "type": "sms", "assistant_id": texter["id"] } ]
        }),
    )
    .await;
    let sequence = post(
        "/v1/sequences",
        json!({
            "template_id": template["id"],
            "contact": { "phone_number": "+15555550143", "time_zone": "America/New_York" },
            "simulation": { "outcomes": ["unresolved", "resolved"] }
        }),
    )
    .await;
    let id = sequence["id"].as_i64().unwrap();
    eventually("the report is delivered", || async {
        receiver
            .received()
            .iter()
            .any(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["id"] == id)
    })
    .await;

    let report: Value = support::api_get(&http, &format!("{base}/v1/sequences/{id}"), &key).await;
    let outreach = report["outreach"].as_array().unwrap();
    assert_eq!(outreach.len(), 2, "{report}");
    // The call's scripted outcome, not `failed`: its answer outlived the outage.
    assert_eq!(outreach[0]["call"]["outcome"], "unresolved", "{report}");
    assert_eq!(outreach[1]["sms"]["ended_reason"], "resolved", "{report}");
    server.kill().await.unwrap();
}

/// Vapi placed the call; recording its id fails three times. The id is recorded on the
/// fourth try, so the call's end-of-call report finds its encounter by the call id, and the
/// patient is called once.
#[tokio::test]
async fn a_placed_calls_id_is_recorded_after_an_outage_and_its_report_applies() {
    use support::fake_vapi::{
        CLARION_ENV, FakeVapi, SERVER_SECRET, end_of_call_report, two_call_template,
    };

    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create().await;
    let (org_id, key) = support::create_org_with_cli_and_id(&database).await;
    support::allow_vapi_assistant_with_cli(&database, org_id, "asst_1", true).await;
    let vapi = FakeVapi::start().await;
    // Reconciling is pushed far out, so only the retry can record the call's id.
    let config = format!(
        "[channels]\ncall = \"vapi\"\nreconcile_after = \"1h\"\n[vapi]\nbase_url = \"{}\"\n[simulator]\ntime_scale = 1.0\n",
        vapi.url
    );
    let mut env = CLARION_ENV.to_vec();
    env.push(("CLARION_OUTAGE_AT", OUTAGE));
    let http = reqwest::Client::new();
    let (mut server, base) =
        support::spawn_server_with_env(dir.path(), &database, &config, None, &env).await;
    let template = two_call_template(&http, &base, &key).await;
    let sequence = support::post_ok(
        &http,
        &base,
        &key,
        "/v1/sequences",
        json!({
            "template_id": template["id"],
            "contact": { "phone_number": "+15555550191", "time_zone": "America/New_York" },
        }),
    )
    .await;
    let id = sequence["id"].as_i64().unwrap();
    let path = format!("{base}/v1/sequences/{id}");
    let store = database.open().await.unwrap();
    let internal = clarion_store::SequenceId(
        store
            .public_ids(clarion_store::OrgId(org_id))
            .decode(clarion_store::IdKind::Sequence, id)
            .unwrap(),
    );
    eventually("the call's id is recorded", || async {
        let encounters = store.sequence_encounters(internal).await.unwrap();
        encounters.len() == 1
            && encounters[0].status == clarion_store::EncounterStatus::Requested
            && encounters[0].provider_ref.as_deref() == Some("call_1")
    })
    .await;

    let mut report = end_of_call_report(
        "call_1",
        "customer-ended-call",
        json!({ "outcome": "resolved" }),
    );
    let calls = vapi.calls();
    report["call"]["name"] = calls[0]["name"].clone();
    report["call"]["customer"] = calls[0]["customer"].clone();
    vapi.finish_call("call_1", &report);
    let (status, body) = vapi.emit(&base, Some(SERVER_SECRET), &report).await;
    assert_eq!(
        (status, body["applied"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let sequence: Value = support::api_get(&http, &path, &key).await;
    assert_eq!(sequence["status"], "ended", "{sequence}");
    let outreach = sequence["outreach"].as_array().unwrap();
    assert_eq!(outreach.len(), 1, "resolved on the first call: {sequence}");
    assert_eq!(outreach[0]["call"]["outcome"], "resolved", "{sequence}");
    assert_eq!(vapi.requests().len(), 1, "the patient was called once");
    server.kill().await.unwrap();
}
