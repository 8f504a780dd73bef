//! The real `clarion` binary's configuration from the environment and its log (issue 14,
//! defect 8): number-like values for text settings start it, unrelated `CLARION_*`
//! variables are ignored, the log is plain text when standard error is not a terminal and
//! JSON lines with `log_format = "json"`, and `doctor --help` says what it contacts.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use clarion_store::testing::TestDatabase;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::support::DEADLINE;

/// Runs `clarion serve` on a free port with `env`, waits for it to listen, asks `/healthz`,
/// stops it and answers what it wrote to standard error (a file: not a terminal).
async fn serve_and_read_the_log(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create().await;
    let log_path = dir.path().join("clarion.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            database.url(),
        ])
        .env("RUST_LOG", "info")
        .env("CLARION_SECRET_KEY", database.secret_key_env())
        .env_remove("CLARION_CRASH_AT")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let Some(first) = first else {
        let status = child.wait().await.unwrap();
        panic!(
            "clarion serve did not start ({status}): {}",
            std::fs::read_to_string(&log_path).unwrap()
        );
    };
    let base = first.strip_prefix("listening on ").unwrap().to_owned();
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert!(health.status().is_success());
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    std::fs::read_to_string(&log_path).unwrap()
}

/// Twilio switched on with every setting from the environment, the sender written as the
/// README writes it; the provider is never asked anything during start-up.
const TWILIO_FROM_THE_ENVIRONMENT: [(&str, &str); 6] = [
    ("CLARION_CHANNELS__SMS", "twilio"),
    ("CLARION_TWILIO__BASE_URL", "http://127.0.0.1:9"),
    (
        "CLARION_TWILIO__ACCOUNT_SID",
        "AC00000000000000000000000000000000",
    ),
    (
        "CLARION_TWILIO__AUTH_TOKEN",
        "12345678901234567890123456789012",
    ),
    (
        "CLARION_TWILIO__PUBLIC_BASE_URL",
        "https://clarion.example.org",
    ),
    ("CLARION_TWILIO__FROM_NUMBER", "+15555550001"),
];

#[tokio::test]
async fn serve_starts_with_number_like_values_ignores_other_clarion_variables_and_logs_plain_text()
{
    let mut env = TWILIO_FROM_THE_ENVIRONMENT.to_vec();
    env.push(("CLARION_DIR", "/tmp"));
    env.push(("CLARION_SOMETHING_ELSE", "42"));
    let log = serve_and_read_the_log(&env).await;
    assert!(log.contains("clarion serving"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour escape codes in a log that is not a terminal: {log:?}"
    );
}

#[tokio::test]
async fn the_log_is_plain_text_when_standard_error_is_not_a_terminal() {
    let log = serve_and_read_the_log(&[]).await;
    assert!(log.contains("clarion serving"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour escape codes: {log:?}");
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    let log = serve_and_read_the_log(&[("CLARION_LOG_FORMAT", "json")]).await;
    let entries: Vec<Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        entries.iter().any(
            |entry| entry["fields"]["message"] == "clarion serving" && entry["level"] == "INFO"
        ),
        "{log}"
    );
}

#[tokio::test]
async fn doctor_help_says_it_asks_vapi_and_twilio() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args(["doctor", "--help"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(
        help.contains("Vapi") && help.contains("Twilio"),
        "doctor --help must say which providers it contacts: {help}"
    );
    assert!(!help.contains("without contacting anyone"), "{help}");
}
