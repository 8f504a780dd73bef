//! `clarion enroll`, run as the real binary against the in-process API: CSV files in a
//! temporary directory, the summary and exit code, and what the store holds afterwards.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::support::{DEADLINE, TestApp, spawn_app};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clarion_store::OrgId;
use serde_json::{Value, json};
use tokio::process::Command;

const ZONES: &[&str] = &[
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "Pacific/Honolulu",
];

struct Fixture {
    app: TestApp,
    org: OrgId,
    key: String,
    template: i64,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let app = spawn_app().await;
    let (org, key) = app.org("Riverside Family Clinic").await;
    let (status, call) = app
        .post(&key, "/v1/assistants", json!({
            "name": "Reminder caller", "channel": "call",
            "config": { "purpose": "confirm the upcoming appointment", "organisation_name": "Riverside Family Clinic" },
            "custom_fields": [ { "name": "appointment_confirmed", "type": "boolean" } ]
        }))
        .await;
    assert_eq!(status, 201, "{call}");
    let (status, template) = app
        .post(
            &key,
            "/v1/sequence-templates",
            json!({ "name": "One call", "calling_hours": null,
                "steps": [ { "type": "call", "assistant_id": call["id"] } ] }),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    Fixture {
        app,
        org,
        key,
        template: template["id"].as_i64().unwrap(),
        dir: tempfile::tempdir().unwrap(),
    }
}

/// What one run of the binary gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Fixture {
    fn csv(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn enroll(&self, file: &Path) -> Run {
        self.enroll_with(&self.app.base, &self.key, file).await
    }

    async fn enroll_with(&self, url: &str, key: &str, file: &Path) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clarion"));
        command
            .args([
                "enroll",
                "--template",
                &self.template.to_string(),
                "--url",
                url,
            ])
            .arg(file)
            .env("CLARION_API_KEY", key)
            .env_remove("CLARION_URL")
            .kill_on_drop(true);
        let output = tokio::time::timeout(DEADLINE * 3, command.output())
            .await
            .expect("clarion enroll did not finish")
            .unwrap();
        Run {
            code: output.status.code().unwrap(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// Every sequence of the organisation in the store, oldest first, paging through.
    async fn stored(&self) -> Vec<clarion_store::SequenceRow> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map(|r: &clarion_store::SequenceRow| r.id);
            let page = self
                .app
                .store
                .list_sequences(self.org, None, after, 1000)
                .await
                .unwrap();
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }
}

fn phone(i: usize) -> String {
    format!("+1555555{:04}", 1000 + i)
}

#[tokio::test]
async fn a_good_file_enrolls_every_row_with_its_contact_and_variables() {
    let f = fixture().await;
    // Columns in an unusual order; a quoted name with a comma; one empty variable cell.
    let mut text =
        String::from("time_zone,appointment_date,phone_number,name,provider_name,external_id\n");
    for (i, zone) in ZONES.iter().enumerate() {
        let provider = if i == 2 { "" } else { "Dr. Patel" };
        text.push_str(&format!(
            "{zone},January {},{},\"Rivera, Alex {i}\",{provider},MRN-{i}\n",
            8 + i,
            phone(i)
        ));
    }
    let run = f.enroll(&f.csv("good.csv", &text)).await;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("enrolled 5, rejected 0"),
        "{}",
        run.stdout
    );

    let (status, list) = f.app.get(&f.key, "/v1/sequences?limit=200").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 5, "{list}");

    let stored = f.stored().await;
    assert_eq!(stored.len(), 5);
    // The API's template id is the organisation's public id; the rows hold the internal one.
    let template = f
        .app
        .store
        .public_ids(f.org)
        .decode(clarion_store::IdKind::Template, f.template)
        .unwrap();
    for (i, sequence) in stored.iter().enumerate() {
        assert_eq!(sequence.template_id, clarion_store::TemplateId(template));
        assert_eq!(sequence.phone_number, phone(i));
        assert_eq!(sequence.contact["phone_number"], phone(i));
        assert_eq!(sequence.contact["time_zone"], ZONES[i]);
        assert_eq!(sequence.contact["name"], format!("Rivera, Alex {i}"));
        assert_eq!(sequence.contact["external_id"], format!("MRN-{i}"));
        let expected = if i == 2 {
            json!({ "appointment_date": "January 10" })
        } else {
            json!({ "appointment_date": format!("January {}", 8 + i), "provider_name": "Dr. Patel" })
        };
        assert_eq!(sequence.variables, expected, "row {i}");
    }
}

#[tokio::test]
async fn bad_rows_are_reported_by_line_without_phi_and_the_rest_are_enrolled() {
    let f = fixture().await;
    let phones = [
        phone(0),
        "555-0142".to_owned(), // line 3: not E.164
        phone(2),
        phone(3), // line 5: bad time zone
        phone(4),
        phone(5),
    ];
    let mut text = String::from("phone_number,time_zone,name,visit\n");
    for (i, number) in phones.iter().enumerate() {
        let zone = if i == 3 {
            "Mars/Olympus_Mons"
        } else {
            ZONES[i % ZONES.len()]
        };
        text.push_str(&format!("{number},{zone},Patient Number{i},checkup\n"));
    }
    let run = f.enroll(&f.csv("mixed.csv", &text)).await;
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout
            .contains("line 3: invalid_field (contact.phone_number): "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("line 5: invalid_field (contact.time_zone): "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("enrolled 4, rejected 2"),
        "{}",
        run.stdout
    );
    for number in &phones {
        assert!(!run.stdout.contains(number.as_str()), "{}", run.stdout);
        assert!(!run.stderr.contains(number.as_str()), "{}", run.stderr);
    }
    assert!(!run.stdout.contains("Patient Number"), "{}", run.stdout);
    assert!(!run.stderr.contains("Patient Number"), "{}", run.stderr);

    let stored: Vec<String> = f
        .stored()
        .await
        .into_iter()
        .map(|s| s.phone_number)
        .collect();
    assert_eq!(stored, [phone(0), phone(2), phone(4), phone(5)]);
}

#[tokio::test]
async fn a_row_that_does_not_parse_is_rejected_with_its_line_and_not_sent() {
    let f = fixture().await;
    // The first row spans lines 2 and 3 (a quoted newline); line 4 has a field too many.
    let text = format!(
        "phone_number,time_zone,name\n{},America/Chicago,\"Alex\nRivera\"\n{},America/Denver,Sam,extra\n{},America/New_York,Casey\n",
        phone(0),
        phone(1),
        phone(2)
    );
    let run = f.enroll(&f.csv("ragged.csv", &text)).await;
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("line 4: invalid_csv: "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("enrolled 2, rejected 1"),
        "{}",
        run.stdout
    );
    let stored: Vec<String> = f
        .stored()
        .await
        .into_iter()
        .map(|s| s.phone_number)
        .collect();
    assert_eq!(stored, [phone(0), phone(2)]);
}

/// A proxy in front of the API that notes how many items each batch request carried.
async fn counting_proxy(target: String) -> (String, Arc<Mutex<Vec<usize>>>) {
    #[derive(Clone)]
    struct Proxy {
        target: String,
        http: reqwest::Client,
        batches: Arc<Mutex<Vec<usize>>>,
    }
    async fn forward(
        State(proxy): State<Proxy>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        if uri.path() == "/v1/sequences/batch" {
            let items = serde_json::from_slice::<Value>(&body).unwrap()["items"]
                .as_array()
                .unwrap()
                .len();
            proxy.batches.lock().unwrap().push(items);
        }
        let mut request = proxy
            .http
            .request(method, format!("{}{uri}", proxy.target))
            .body(body);
        for name in ["authorization", "content-type"] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        let response = request.send().await.unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let body = response.bytes().await.unwrap();
        (status, [("content-type", "application/json")], body).into_response()
    }
    let batches = Arc::new(Mutex::new(Vec::new()));
    let proxy = Proxy {
        target,
        http: reqwest::Client::new(),
        batches: batches.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new().fallback(forward).with_state(proxy);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, batches)
}

#[tokio::test]
async fn a_large_file_is_sent_in_batches_of_a_thousand() {
    let f = fixture().await;
    let mut text = String::from("phone_number,time_zone,external_id,row\n");
    for i in 0..2500 {
        text.push_str(&format!(
            "+1555{:07},{},MRN-{i},{i}\n",
            i,
            ZONES[i % ZONES.len()]
        ));
    }
    let (proxy, batches) = counting_proxy(f.app.base.clone()).await;
    let run = f
        .enroll_with(&proxy, &f.key, &f.csv("large.csv", &text))
        .await;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("enrolled 2500, rejected 0"),
        "{}",
        run.stdout
    );
    assert_eq!(*batches.lock().unwrap(), [1000, 1000, 500]);

    let stored = f.stored().await;
    assert_eq!(stored.len(), 2500);
    for (i, sequence) in stored.iter().enumerate() {
        assert_eq!(sequence.phone_number, format!("+1555{i:07}"));
        assert_eq!(sequence.variables, json!({ "row": i.to_string() }));
    }
}

#[tokio::test]
async fn a_missing_required_column_is_a_usage_error_and_nothing_is_sent() {
    let f = fixture().await;
    let text = format!("phone_number,name\n{},Alex\n", phone(0));
    let (proxy, batches) = counting_proxy(f.app.base.clone()).await;
    let run = f
        .enroll_with(&proxy, &f.key, &f.csv("no-zone.csv", &text))
        .await;
    assert_eq!(
        run.code, 2,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains("missing required column `time_zone`"),
        "{}",
        run.stderr
    );
    assert!(batches.lock().unwrap().is_empty());
    assert!(f.stored().await.is_empty());
}

#[tokio::test]
async fn a_wrong_api_key_stops_with_the_api_error_and_exit_two() {
    let f = fixture().await;
    let text = format!("phone_number,time_zone\n{},America/Chicago\n", phone(0));
    let run = f
        .enroll_with(&f.app.base, "ck_wrong", &f.csv("good.csv", &text))
        .await;
    assert_eq!(
        run.code, 2,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(run.stderr.contains("unauthorized"), "{}", run.stderr);
    assert!(!run.stderr.contains(&phone(0)), "{}", run.stderr);
    assert!(f.stored().await.is_empty());
}

#[tokio::test]
async fn an_unreachable_api_is_exit_two() {
    let f = fixture().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let text = format!("phone_number,time_zone\n{},America/Chicago\n", phone(0));
    let run = f
        .enroll_with(&closed, &f.key, &f.csv("good.csv", &text))
        .await;
    assert_eq!(
        run.code, 2,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains("could not reach the API"),
        "{}",
        run.stderr
    );
}
