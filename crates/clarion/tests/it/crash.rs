//! Crash injection between each pair of steps of an encounter (the real binary, aborted as
//! `kill -9` would stop it): after a restart no report is lost and no contact is repeated.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::support;
use clarion_store::testing::TestDatabase;

use std::time::Duration;

use crate::support::{Answer, DEADLINE, TestReceiver, eventually};
use serde_json::{Value, json};
use tokio::process::Child;

const CONFIG: &str = support::FAST_NODE_CONFIG;

async fn start(
    dir: &std::path::Path,
    database: &TestDatabase,
    crash_at: Option<&str>,
) -> (Child, String) {
    support::spawn_server(dir, database, CONFIG, crash_at).await
}

#[tokio::test]
async fn a_crash_at_any_point_of_an_encounter_loses_no_report_and_repeats_no_contact() {
    for point in clarion_scheduler::fault::CRASH_POINTS {
        let dir = tempfile::tempdir().unwrap();
        let database = TestDatabase::create().await;
        let key = support::create_org_with_cli(&database).await;
        let receiver = TestReceiver::start(Answer::Status(204)).await;
        let http = reqwest::Client::new();

        let (mut crashing, base) = start(dir.path(), &database, Some(point)).await;
        support::post_ok(
            &http,
            &base,
            &key,
            "/v1/webhook-endpoints",
            json!({ "url": receiver.url }),
        )
        .await;
        let caller = support::post_ok(
            &http,
            &base,
            &key,
            "/v1/assistants",
            json!({ "name": "Caller", "channel": "call" }),
        )
        .await;
        let texter = support::post_ok(
            &http,
            &base,
            &key,
            "/v1/assistants",
            json!({ "name": "Texter", "channel": "sms" }),
        )
        .await;
        let template = support::post_ok(&http, &base, &key, "/v1/sequence-templates", json!({
            "name": "Call then SMS", "calling_hours": null, "stop_on": ["resolved"], "sms_timeout": "1h",
            "steps": [ { "type": "call", "assistant_id": caller["id"] }, { "type": "sms", "assistant_id": texter["id"] } ]
        }))
        .await;
        // The scheduler may reach the crash point before this answer is written (it starts
        // the first step at once), so the enrollment's answer may never arrive.
        let enrolled = http
            .post(format!("{base}/v1/sequences"))
            .bearer_auth(&key)
            .json(&json!({
                "template_id": template["id"],
                "contact": { "phone_number": "+15555550142", "time_zone": "America/New_York" },
                "simulation": { "outcomes": ["unresolved", "resolved"] }
            }))
            .send()
            .await;
        if let Ok(response) = enrolled {
            assert!(response.status().is_success() || response.status().is_server_error());
        }
        let status = tokio::time::timeout(DEADLINE, crashing.wait())
            .await
            .expect("the crash point was reached")
            .unwrap();
        assert!(
            !status.success(),
            "{point}: the process should have aborted"
        );

        let (mut server, base) = start(dir.path(), &database, None).await;
        let listed: Value = support::api_get(&http, &format!("{base}/v1/sequences"), &key).await;
        let listed = listed["data"].as_array().unwrap();
        assert_eq!(
            listed.len(),
            1,
            "{point}: the enrollment committed exactly once"
        );
        let id = listed[0]["id"].as_i64().unwrap();
        eventually(
            &format!("{point}: the report is delivered after the restart"),
            || async {
                receiver
                    .received()
                    .iter()
                    .any(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["id"] == id)
            },
        )
        .await;
        let report: Value =
            support::api_get(&http, &format!("{base}/v1/sequences/{id}"), &key).await;
        assert_eq!(report["status"], "ended", "{point}");
        let steps: Vec<(i64, &str)> = report["outreach"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["step"].as_i64().unwrap(), s["type"].as_str().unwrap()))
            .collect();
        assert_eq!(
            steps,
            [(1, "call"), (2, "sms")],
            "{point}: each step attempt exactly once"
        );
        let call = &report["outreach"][0]["call"];
        if ["encounter-committed", "provider-asked"].contains(point) {
            // The provider may have been asked: never asked again; the call ends as failed.
            assert_eq!(call["outcome"], "failed", "{point}: {call}");
            assert!(
                call["summary"]
                    .as_str()
                    .unwrap()
                    .contains("not placed again"),
                "{point}"
            );
        } else {
            assert_eq!(call["outcome"], "unresolved", "{point}: {call}");
        }
        assert_eq!(
            report["outreach"][1]["sms"]["ended_reason"], "resolved",
            "{point}"
        );

        // In the database: one encounter per step attempt, every one ended.
        let store = database.open().await.unwrap();
        // The API's id is the organisation's public id; the rows are keyed by the internal one.
        let org = store.authenticate(&key).await.unwrap().unwrap();
        let internal = store
            .public_ids(org)
            .decode(clarion_store::IdKind::Sequence, id)
            .unwrap();
        let encounters = store
            .sequence_encounters(clarion_store::SequenceId(internal))
            .await
            .unwrap();
        assert_eq!(encounters.len(), 2, "{point}");
        assert!(
            encounters
                .iter()
                .all(|e| e.status == clarion_store::EncounterStatus::Ended),
            "{point}"
        );
        // The report was queued once, whatever the crash.
        let deliveries: Value = support::api_get(
            &http,
            &format!("{base}/v1/webhook-deliveries?sequence_id={id}"),
            &key,
        )
        .await;
        assert_eq!(deliveries["data"].as_array().unwrap().len(), 1, "{point}");
        server.start_kill().unwrap();
        let _ = server.wait().await;
        let _ = Duration::ZERO;
    }
}

/// `kill -9` after Vapi placed the call and before Clarion recorded it: after the restart the
/// call's end-of-call report (matched by the encounter in the call's name, confirmed by reading
/// the call back from Vapi) still ends the step with its real outcome, an opt-out suppresses
/// the number, and the next step never calls the patient.
#[tokio::test]
async fn a_crash_between_placing_a_call_and_recording_it_keeps_the_calls_outcome() {
    use support::fake_vapi::{
        CLARION_ENV, FakeVapi, SERVER_SECRET, end_of_call_report, two_call_template,
    };

    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create().await;
    let (org_id, key) = support::create_org_with_cli_and_id(&database).await;
    // The operator lets this organisation use the fake's Vapi assistant (issue 17 defect 6).
    support::allow_vapi_assistant_with_cli(&database, org_id, "asst_1", true).await;
    let vapi = FakeVapi::start().await;
    let config = format!(
        "[channels]\ncall = \"vapi\"\n[vapi]\nbase_url = \"{}\"\n[simulator]\ntime_scale = 1.0\n",
        vapi.url
    );
    let env = CLARION_ENV;
    let http = reqwest::Client::new();

    let (mut crashing, base) = support::spawn_server_with_env(
        dir.path(),
        &database,
        &config,
        Some("vapi-call-placed"),
        &env,
    )
    .await;
    let template = two_call_template(&http, &base, &key).await;
    let enrolled = http
        .post(format!("{base}/v1/sequences"))
        .bearer_auth(&key)
        .json(&json!({
            "template_id": template["id"],
            "contact": { "phone_number": "+15555550190", "time_zone": "America/New_York" },
        }))
        .send()
        .await;
    if let Ok(response) = enrolled {
        assert!(response.status().is_success() || response.status().is_server_error());
    }
    let status = tokio::time::timeout(DEADLINE, crashing.wait())
        .await
        .expect("the crash point was reached")
        .unwrap();
    assert!(!status.success(), "the process should have aborted");
    let calls = vapi.calls();
    assert_eq!(calls.len(), 1, "Vapi placed the call before the crash");

    let (mut server, base) =
        support::spawn_server_with_env(dir.path(), &database, &config, None, &env).await;
    // The patient opted out on that call; Vapi ends it and sends its report.
    let mut report = end_of_call_report(
        "call_1",
        "customer-ended-call",
        json!({ "outcome": "opt-out" }),
    );
    report["call"]["name"] = calls[0]["name"].clone();
    report["call"]["customer"] = calls[0]["customer"].clone();
    vapi.finish_call("call_1", &report);
    let (status, body) = vapi.emit(&base, Some(SERVER_SECRET), &report).await;
    assert_eq!(
        (status, body["applied"].as_bool()),
        (200, Some(true)),
        "{body}"
    );

    let suppressions = support::api_get(&http, &format!("{base}/v1/suppressions"), &key).await;
    assert_eq!(
        suppressions["data"][0]["phone_number"], "+15555550190",
        "{suppressions}"
    );
    let listed: Value = support::api_get(&http, &format!("{base}/v1/sequences"), &key).await;
    let id = listed["data"][0]["id"].as_i64().unwrap();
    let sequence: Value = support::api_get(&http, &format!("{base}/v1/sequences/{id}"), &key).await;
    assert_eq!(sequence["status"], "ended", "{sequence}");
    let outreach = sequence["outreach"].as_array().unwrap();
    assert_eq!(outreach.len(), 1, "step 2 never ran: {sequence}");
    assert_eq!(
        outreach[0]["call"]["failure_reason"], "opt-out",
        "{sequence}"
    );
    assert_eq!(vapi.requests().len(), 1, "the patient was called once");
    server.kill().await.unwrap();
}
