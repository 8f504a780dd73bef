//! Interoperability with the reference Standard Webhooks implementation (the `standardwebhooks`
//! package from PyPI): what this crate signs, it verifies; what it signs, this crate verifies.
//!
//! The Python interpreter comes from `CLARION_INTEROP_PYTHON` when set (the test script sets
//! it); otherwise the test creates a virtual environment under the target directory and
//! installs the pinned package into it. It never skips: without Python the test fails.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use clarion_webhooks::{Secret, Verifier, VerifyError, WebhookHeaders, examples, sign_header};
use serde_json::{Value, json};

const PINNED_PACKAGE: &str = "standardwebhooks==1.1.0";

fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(bootstrap_python).clone()
}

fn bootstrap_python() -> PathBuf {
    if let Some(path) = std::env::var_os("CLARION_INTEROP_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".installed");
    if !ready.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "python3 -m venv failed: Python 3 is required"
        );
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                PINNED_PACKAGE,
            ])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "installing {PINNED_PACKAGE} failed"
        );
        std::fs::write(&ready, PINNED_PACKAGE).unwrap();
    }
    python
}

/// Runs the cases through the reference library, one result per case.
fn reference(cases: &[Value]) -> Vec<Value> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/standardwebhooks_check.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the Python interop script");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(cases).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the interop script failed");
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results.len(), cases.len());
    results
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Deterministic secrets of the lengths the specification allows.
fn secret(len: usize, seed: u8) -> Secret {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    Secret::from_bytes(&bytes).unwrap()
}

fn bodies() -> Vec<String> {
    let mut bodies: Vec<String> = examples::all()
        .iter()
        .map(|(_, report)| serde_json::to_string(report).unwrap())
        .collect();
    bodies.push(r#"{"note":"non-ASCII survives: café, 東京, 🚑"}"#.to_owned());
    bodies
}

#[test]
fn the_reference_library_verifies_what_this_crate_signs() {
    let now = now();
    let mut cases = Vec::new();
    let mut expected = Vec::new();
    for (i, body) in bodies().into_iter().enumerate() {
        for len in [24, 32, 64] {
            let key = secret(len, i as u8);
            let id = format!("msg_interop_{i}_{len}");
            let signature = key.sign(&id, now, body.as_bytes());
            cases.push(json!({ "op": "verify", "secret": key.to_whsec(), "id": id,
                               "timestamp": now, "signature": signature, "body": body }));
            expected.push(true);
        }
        // Rotation: a header with the new and the old signature verifies with the old secret.
        let (old, new) = (secret(32, 100 + i as u8), secret(32, 200 + i as u8));
        let rotated = sign_header([&new, &old], "msg_rotation", now, body.as_bytes());
        cases.push(
            json!({ "op": "verify", "secret": old.to_whsec(), "id": "msg_rotation",
                           "timestamp": now, "signature": rotated, "body": body }),
        );
        expected.push(true);
        // Controls: the reference library must refuse a tampered body, a wrong secret and an
        // old timestamp, or the positive cases above would prove nothing.
        let key = secret(32, 7);
        let signature = key.sign("msg_control", now, body.as_bytes());
        cases.push(
            json!({ "op": "verify", "secret": key.to_whsec(), "id": "msg_control",
                           "timestamp": now, "signature": signature, "body": format!("{body} ") }),
        );
        expected.push(false);
        cases.push(
            json!({ "op": "verify", "secret": secret(32, 8).to_whsec(), "id": "msg_control",
                           "timestamp": now, "signature": signature, "body": body }),
        );
        expected.push(false);
        let stale = now - 600;
        let stale_signature = key.sign("msg_control", stale, body.as_bytes());
        cases.push(
            json!({ "op": "verify", "secret": key.to_whsec(), "id": "msg_control",
                           "timestamp": stale, "signature": stale_signature, "body": body }),
        );
        expected.push(false);
    }
    let results = reference(&cases);
    for ((case, result), ok) in cases.iter().zip(&results).zip(expected) {
        assert_eq!(result["ok"], json!(ok), "case {} gave {result}", case["id"]);
    }
}

#[test]
fn this_crate_verifies_what_the_reference_library_signs() {
    let now = now();
    let mut cases = Vec::new();
    let mut keys = Vec::new();
    for (i, body) in bodies().into_iter().enumerate() {
        for len in [24, 48, 64] {
            let key = secret(len, 50 + i as u8);
            cases.push(
                json!({ "op": "sign", "secret": key.to_whsec(), "id": format!("msg_py_{i}_{len}"),
                               "timestamp": now, "body": body }),
            );
            keys.push((key, body.clone()));
        }
    }
    let results = reference(&cases);
    for ((case, result), (key, body)) in cases.iter().zip(&results).zip(keys) {
        let signature = result["signature"].as_str().unwrap();
        let id = case["id"].as_str().unwrap();
        let timestamp = now.to_string();
        let headers = WebhookHeaders {
            id: Some(id),
            timestamp: Some(&timestamp),
            signature: Some(signature),
        };
        // Byte-for-byte the same signature, and it verifies.
        assert_eq!(signature, key.sign(id, now, body.as_bytes()));
        assert_eq!(
            Verifier::new(key).verify_at(&headers, body.as_bytes(), now),
            Ok(())
        );
        assert_eq!(
            Verifier::new(secret(32, 1)).verify_at(&headers, body.as_bytes(), now),
            Err(VerifyError::NoMatchingSignature)
        );
    }
}

#[test]
fn the_reference_library_reproduces_the_known_answer_vector() {
    let results = reference(&[
        json!({ "op": "sign", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "timestamp": 1614265330, "body": "{\"test\": 2432232314}" }),
    ]);
    assert_eq!(
        results[0]["signature"],
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}
