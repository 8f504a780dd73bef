//! PHI and credentials never reach the logs: a whole run of the real `clarion serve` binary
//! (a call through the Vapi fake with its callbacks, an SMS conversation through the Twilio
//! fake with signed inbound texts, the report delivered to a receiver), logged at debug level
//! for Clarion's own crates, then the log searched for every phone number, name, variable, transcript line,
//! summary and secret that went through it.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::support;
use clarion_store::testing::TestDatabase;

use crate::support::fake_twilio::{ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, SERVICE_SID};
use crate::support::fake_vapi::{
    API_KEY, FakeVapi, PHONE_NUMBER_ID, SERVER_SECRET, end_of_call_report,
};
use crate::support::{
    Answer, TestReceiver, allow_vapi_assistant_with_cli, api_get, api_post,
    create_org_with_cli_and_id, eventually,
};
use serde_json::json;

const PHONE: &str = "+15555550199";
const NAME: &str = "Zebediah Quartermaine";
const VARIABLE: &str = "Xylophone-Appointment-77";

#[tokio::test]
async fn a_full_run_logs_no_phone_number_transcript_or_secret() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create().await;
    let (org_id, key) = create_org_with_cli_and_id(&database).await;
    // The operator lets this organisation use the fake's Vapi assistant (issue 17 defect 6).
    allow_vapi_assistant_with_cli(&database, org_id, "asst_1", true).await;
    let vapi = FakeVapi::start().await;
    let twilio = FakeTwilio::start().await;
    // Twilio signs the public URL it calls, so the server's address is fixed up front.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let public = format!("http://127.0.0.1:{port}");
    let receiver = TestReceiver::start(Answer::Status(204)).await;

    let config = dir.path().join("clarion.toml");
    std::fs::write(
        &config,
        format!(
            "[channels]\ncall = \"vapi\"\nsms = \"twilio\"\n[vapi]\nbase_url = \"{}\"\n[twilio]\nbase_url = \"{}\"\n",
            vapi.url, twilio.url
        ),
    )
    .unwrap();
    let log_path = dir.path().join("clarion.log");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"));
    command
        .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}"), "--database", database.url(), "--config"])
        .arg(&config)
        .env("CLARION_SECRET_KEY", database.secret_key_env())
        .env(
            "RUST_LOG",
            "info,clarion=debug,clarion_server=debug,clarion_scheduler=debug,clarion_delivery=debug,clarion_store=debug",
        )
        .env("CLARION_VAPI__API_KEY", API_KEY)
        .env("CLARION_VAPI__PHONE_NUMBER_ID", PHONE_NUMBER_ID)
        .env("CLARION_VAPI__SERVER_SECRET", SERVER_SECRET)
        .env("CLARION_TWILIO__ACCOUNT_SID", ACCOUNT_SID)
        .env("CLARION_TWILIO__AUTH_TOKEN", AUTH_TOKEN)
        .env("CLARION_TWILIO__MESSAGING_SERVICE_SID", SERVICE_SID)
        .env("CLARION_TWILIO__PUBLIC_BASE_URL", &public)
        .env_remove("CLARION_CRASH_AT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let base = {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(support::DEADLINE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        first.strip_prefix("listening on ").unwrap().to_owned()
    };

    let http = reqwest::Client::new();
    let endpoint = api_post(
        &http,
        &format!("{base}/v1/webhook-endpoints"),
        &key,
        Some(&json!({ "url": receiver.url })),
    )
    .await;
    let webhook_secret = endpoint["secret"].as_str().unwrap().to_owned();
    let caller = api_post(
        &http,
        &format!("{base}/v1/assistants"),
        &key,
        Some(&json!({
        "name": "Caller", "channel": "call", "config": { "vapi_assistant_id": "asst_1" } })),
    )
    .await;
    let texter = api_post(&http, &format!("{base}/v1/assistants"), &key, Some(&json!({
        "name": "Texter", "channel": "sms",
        "config": { "script": { "opening": "Hi {{first_name}}, please confirm {{appointment_date}}: reply YES.",
            "intents": [ { "name": "confirm", "keywords": ["yes"], "reply": "Wonderful, your visit is confirmed.", "resolution": "resolved" } ],
            "fallback": "Sorry, please reply YES." } } }))).await;
    let template = api_post(
        &http,
        &format!("{base}/v1/sequence-templates"),
        &key,
        Some(&json!({
        "name": "Call then text", "calling_hours": null, "stop_on": [],
        "steps": [ { "type": "call", "assistant_id": caller["id"] },
                   { "type": "sms", "assistant_id": texter["id"], "delay": "0s" } ] })),
    )
    .await;
    let sequence = api_post(&http, &format!("{base}/v1/sequences"), &key, Some(&json!({
        "template_id": template["id"],
        "contact": { "phone_number": PHONE, "time_zone": "America/New_York", "name": NAME, "external_id": "MRN-314159" },
        "variables": { "appointment_date": VARIABLE },
        "simulation": { "outcomes": ["resolved", "resolved"] } }))).await;
    let id = sequence["id"].as_i64().unwrap();

    eventually("Vapi receives the call", || async {
        !vapi.calls().is_empty()
    })
    .await;
    let report = end_of_call_report(
        "call_1",
        "customer-ended-call",
        json!({ "outcome": "unresolved" }),
    );
    let (status, _) = vapi.emit(&base, Some(SERVER_SECRET), &report).await;
    assert_eq!(status, 200);
    let (status, _) = vapi.emit(&base, Some("forged-secret"), &report).await;
    assert_eq!(status, 401);
    assert_eq!(base, public);
    eventually("Twilio receives the opening text", || async {
        !twilio.sent().is_empty()
    })
    .await;
    let (status, twiml) = twilio
        .inbound(&base, PHONE, "Yes, Quixotic Pelican here")
        .await;
    assert_eq!(status, 200, "{twiml}");
    let (status, _) = twilio.inbound(&base, PHONE, "after the end").await;
    assert_eq!(
        status, 200,
        "a signed text after the end finds no conversation"
    );
    let (status, _) = twilio
        .post_signed(
            &base,
            "/providers/twilio/inbound",
            &[("From", PHONE), ("Body", "forged")],
            "bad-token",
        )
        .await;
    assert_eq!(status, 401);
    receiver.wait_for(1).await;
    let ended = api_get(&http, &format!("{base}/v1/sequences/{id}"), &key).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    let sms = &ended["outreach"][1]["sms"];
    let sms_transcript = sms["transcript"].as_str().unwrap().to_owned();
    let sms_summary = sms["summary"].as_str().unwrap().to_owned();

    // SIGTERM: a clean stop flushes the log.
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    let _ = tokio::time::timeout(support::DEADLINE, child.wait()).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("call placed with Vapi"),
        "the log was captured:\n{log}"
    );
    assert!(
        log.contains("Vapi callback rejected"),
        "the log was captured:\n{log}"
    );
    assert!(
        log.contains("SMS conversation opened with Twilio")
            && log.contains("Twilio callback rejected"),
        "the log was captured:\n{log}"
    );

    let mut secrets: Vec<String> = vec![
        PHONE.to_owned(),
        PHONE.trim_start_matches('+').to_owned(),
        "555-0199".to_owned(),
        NAME.to_owned(),
        "Zebediah".to_owned(),
        VARIABLE.to_owned(),
        "MRN-314159".to_owned(),
        API_KEY.to_owned(),
        SERVER_SECRET.to_owned(),
        webhook_secret.clone(),
        webhook_secret.trim_start_matches("whsec_").to_owned(),
        key.clone(),
        "Patient confirmed the appointment.".to_owned(),
        "Hi Ana, this is Riverside Family Clinic".to_owned(),
        AUTH_TOKEN.to_owned(),
        "Quixotic Pelican".to_owned(),
        "Wonderful, your visit is confirmed.".to_owned(),
        twilio.sent()[0].body.clone(),
    ];
    // Every line of the SMS conversation and its summary, as the simulator wrote them.
    secrets.extend(
        sms_transcript
            .lines()
            .filter_map(|line| line.split_once(": ").map(|(_, text)| text.to_owned()))
            .filter(|text| text.len() >= 12),
    );
    secrets.push(sms_summary);
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log contains PHI or a secret ({} characters starting {:?})",
            secret.len(),
            secret.chars().take(4).collect::<String>()
        );
    }
}
