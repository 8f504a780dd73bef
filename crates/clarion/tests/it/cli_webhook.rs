//! `clarion webhook verify` and `clarion webhook listen`, run as the real binary.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clarion_webhooks::{Secret, examples};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const KAT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const KAT_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const KAT_TIMESTAMP: &str = "1614265330";
const KAT_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
const KAT_BODY: &str = r#"{"test": 2432232314}"#;
const DEADLINE: Duration = Duration::from_secs(20);

fn clarion() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clarion"));
    command
        .env_remove("CLARION_WEBHOOK_SECRET")
        .kill_on_drop(true);
    command
}

async fn verify(args: &[&str], body: &str) -> (i32, String) {
    let mut child = clarion()
        .args(["webhook", "verify", "--secret", KAT_SECRET, "--id", KAT_ID])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    // With a body file, the command may exit without reading stdin: a broken pipe is fine.
    let _ = stdin.write_all(body.as_bytes()).await;
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[tokio::test]
async fn verify_accepts_the_known_answer_vector_and_exits_zero() {
    let (code, out) = verify(
        &[
            "--timestamp",
            KAT_TIMESTAMP,
            "--signature",
            KAT_SIGNATURE,
            "--now",
            KAT_TIMESTAMP,
        ],
        KAT_BODY,
    )
    .await;
    assert_eq!((code, out.trim()), (0, "valid"));
}

#[tokio::test]
async fn verify_reads_the_body_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("body.json");
    std::fs::write(&path, KAT_BODY).unwrap();
    let (code, out) = verify(
        &[
            "--timestamp",
            KAT_TIMESTAMP,
            "--signature",
            KAT_SIGNATURE,
            "--now",
            KAT_TIMESTAMP,
            path.to_str().unwrap(),
        ],
        "this stdin is ignored",
    )
    .await;
    assert_eq!((code, out.trim()), (0, "valid"));
}

#[tokio::test]
async fn verify_rejects_a_tampered_body_with_the_reason_and_exits_one() {
    let (code, out) = verify(
        &[
            "--timestamp",
            KAT_TIMESTAMP,
            "--signature",
            KAT_SIGNATURE,
            "--now",
            KAT_TIMESTAMP,
        ],
        r#"{"test": 2432232315}"#,
    )
    .await;
    assert_eq!((code, out.trim()), (1, "invalid: no signature matches"));
}

#[tokio::test]
async fn verify_checks_the_timestamp_against_the_clock_by_default() {
    let (code, out) = verify(
        &["--timestamp", KAT_TIMESTAMP, "--signature", KAT_SIGNATURE],
        KAT_BODY,
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        out.starts_with("invalid: webhook-timestamp is too old"),
        "{out}"
    );
}

#[tokio::test]
async fn verify_refuses_a_malformed_secret_as_a_usage_error() {
    let output = clarion()
        .args([
            "webhook",
            "verify",
            "--secret",
            "whsec_short",
            "--id",
            "x",
            "--timestamp",
            "1",
            "--signature",
            "v1,x",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a whsec_ secret"));
}

struct Listener {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    url: String,
    http: reqwest::Client,
    secret: Secret,
}

impl Listener {
    async fn start(secret: Secret) -> Self {
        let mut child = clarion()
            .args([
                "webhook",
                "listen",
                "--port",
                "0",
                "--secret",
                &secret.to_whsec(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = next_line(&mut lines).await;
        let url = first
            .strip_prefix("listening on ")
            .expect("the address comes first")
            .to_owned();
        Self {
            _child: child,
            lines,
            url,
            http: reqwest::Client::new(),
            secret,
        }
    }

    async fn post(
        &self,
        id: &str,
        timestamp: i64,
        signature: Option<String>,
        body: &[u8],
    ) -> (u16, String) {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("webhook-signature", signature);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn post_signed(&self, id: &str, body: &[u8]) -> (u16, String) {
        let now = unix_now();
        self.post(id, now, Some(self.secret.sign(id, now, body)), body)
            .await
    }

    /// Reads printed lines until one contains `needle`, within the deadline.
    async fn wait_for_line(&mut self, needle: &str) -> String {
        loop {
            let line = next_line(&mut self.lines).await;
            if line.contains(needle) {
                return line;
            }
        }
    }
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("the listener printed nothing before the deadline")
        .unwrap()
        .expect("the listener closed its output")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn error_code(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap();
    value["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn listen_accepts_signed_reports_and_prints_a_summary_of_each() {
    let mut listener = Listener::start(Secret::from_bytes(&[42; 32]).unwrap()).await;
    let body = serde_json::to_vec(&examples::call_sms_call()).unwrap();
    let (status, _) = listener.post_signed("msg_listen_1", &body).await;
    assert_eq!(status, 204);
    let header = listener.wait_for_line("sequence 1043").await;
    assert!(
        header.contains("ended") && header.contains("msg_listen_1"),
        "{header}"
    );
    assert!(
        listener
            .wait_for_line("outcome:")
            .await
            .contains("requested a callback")
    );
    let step1 = listener.wait_for_line("step  1").await;
    assert!(
        step1.contains("call 5002") && step1.contains("outcome=voicemail"),
        "{step1}"
    );
    let step2 = listener.wait_for_line("step  2").await;
    assert!(
        step2.contains("sms 5003") && step2.contains("conversation-timeout"),
        "{step2}"
    );
    let step3 = listener.wait_for_line("step  3").await;
    assert!(
        step3.contains("failure_reason=requested-callback"),
        "{step3}"
    );

    // The same message again is accepted (at-least-once) and flagged as a duplicate.
    let (status, _) = listener.post_signed("msg_listen_1", &body).await;
    assert_eq!(status, 204);
    assert!(
        listener
            .wait_for_line("sequence 1043")
            .await
            .contains("duplicate delivery")
    );
}

#[tokio::test]
async fn listen_answers_400_with_the_reason_for_every_kind_of_bad_delivery() {
    let listener = Listener::start(Secret::from_bytes(&[43; 32]).unwrap()).await;
    let body = serde_json::to_vec(&examples::call_only()).unwrap();
    let now = unix_now();

    let forged = Secret::from_bytes(&[44; 32])
        .unwrap()
        .sign("msg_bad", now, &body);
    let (status, text) = listener
        .post("msg_bad", now, Some(forged.clone()), &body)
        .await;
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "invalid_signature")
    );

    // A header stuffed with entries is refused before any of them is checked, even with the
    // right signature among them (issue 17 defect 4: each entry used to cost an HMAC).
    let mut stuffed = vec![forged.clone(); 16];
    stuffed.push(listener.secret.sign("msg_bad", now, &body));
    let (status, text) = listener
        .post("msg_bad", now, Some(stuffed.join(" ")), &body)
        .await;
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "too_many_signatures")
    );
    let oversized = format!("{forged} v1a,{}", "A".repeat(5_000));
    let (status, text) = listener.post("msg_bad", now, Some(oversized), &body).await;
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "signature_header_too_large")
    );

    let (status, text) = listener.post("msg_bad", now, None, &body).await;
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "missing_header")
    );
    assert!(text.contains("webhook-signature"), "{text}");

    let old = now - 3600;
    let stale = listener.secret.sign("msg_bad", old, &body);
    let (status, text) = listener.post("msg_bad", old, Some(stale), &body).await;
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "timestamp_too_old")
    );

    let ahead = now + 3600;
    let early = listener.secret.sign("msg_bad", ahead, &body);
    let (status, text) = listener.post("msg_bad", ahead, Some(early), &body).await;
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "timestamp_too_new")
    );

    let not_a_report = br#"{"id": 1, "status": "ended"}"#;
    let (status, text) = listener.post_signed("msg_bad", not_a_report).await;
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "invalid_report")
    );
    assert!(text.contains("last_updated"), "{text}");

    let response = listener.http.get(&listener.url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
}
