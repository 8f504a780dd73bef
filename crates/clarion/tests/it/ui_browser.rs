//! The dashboard end to end in a real headless Chromium, driven through WebDriver
//! (fantoccini, chromedriver started here on a free port) against a real `clarion serve`
//! child: sign in to the overview, see the sequences, filter, open one and read its transcript
//! and events, export CSV, retry a failed delivery, rotate a secret, enroll from a CSV file
//! through the file input, add and remove a suppression, a form POST without its CSRF token
//! refused, another organisation's sequence 404, the overview's charts, sign out. A
//! screenshot of every page goes to `target/ui-screenshots/`.
//!
//! Ignored by default (they need Debian's `chromium` and `chromium-driver`); `scripts/test`
//! runs them when `/usr/bin/chromedriver` exists.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::{
    Answer, DEADLINE, FAST_NODE_CONFIG, TestReceiver, api_get, create_org_with_cli, eventually,
    post_ok, spawn_server,
};
use clarion_store::testing::TestDatabase;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver child on a free loopback port, killed when dropped.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually("chromedriver is ready", || {
            let http = http.clone();
            let status = format!("{url}/status");
            async move {
                match http.get(&status).send().await {
                    Ok(response) => response
                        .json::<Value>()
                        .await
                        .is_ok_and(|body| body["value"]["ready"] == true),
                    Err(_) => false,
                }
            }
        })
        .await;
        Self { _child: child, url }
    }

    /// A new headless Chromium session with a fresh profile, downloading into `downloads`.
    async fn browser(&self, profile: &Path, downloads: &Path) -> Client {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

/// Where screenshots go: `target/ui-screenshots/` of this workspace.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Waits until the page's path (and query) is `expected`.
async fn wait_for_path(browser: &Client, expected: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let url = browser.current_url().await.unwrap();
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        if path == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still at {path}, waiting for {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(browser: &Client, locator: Locator<'_>) {
    browser.find(locator).await.unwrap().click().await.unwrap();
}

/// Waits until the element `css` says `needle` (the page may still be the previous one, or be
/// replaced while it is read: a form that posts back to the same address).
async fn wait_for_text(browser: &Client, css: &str, needle: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
            && text.contains(needle)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} never said {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// An organisation's assistant and templates through the API: `quick` runs at once,
/// `later` waits 30 days before its call (so its sequences stay active).
async fn templates(http: &reqwest::Client, base: &str, key: &str) -> (i64, i64) {
    let assistant = post_ok(http, base, key, "/v1/assistants", json!({
        "name": "Reminder caller", "channel": "call",
        "config": { "purpose": "confirm the upcoming appointment", "organisation_name": "Riverside Family Clinic" },
    }))
    .await;
    let mut ids = Vec::new();
    for (name, delay) in [("Appointment reminder", "0s"), ("Annual check-up", "30d")] {
        let template = post_ok(http, base, key, "/v1/sequence-templates", json!({
            "name": name,
            "steps": [{ "type": "call", "assistant_id": assistant["id"], "delay": delay, "max_attempts": 2, "retry_delay": "1h" }],
            "stop_on": ["resolved", "opt-out", "declined", "escalated"],
            "calling_hours": null,
        }))
        .await;
        ids.push(template["id"].as_i64().unwrap());
    }
    (ids[0], ids[1])
}

async fn enroll(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    template: i64,
    phone: &str,
    external_id: &str,
    outcomes: &[&str],
) -> i64 {
    let sequence = post_ok(http, base, key, "/v1/sequences", json!({
        "template_id": template,
        "contact": { "phone_number": phone, "time_zone": "America/New_York", "name": "Jordan Lee", "external_id": external_id },
        "simulation": { "outcomes": outcomes },
    }))
    .await;
    sequence["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver; scripts/test runs them when present"]
async fn ui_browser_sign_in_browse_filter_read_export_retry_rotate_suppress_and_sign_out() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create().await;
    let (_server, base) = spawn_server(dir.path(), &database, FAST_NODE_CONFIG, None).await;
    let key = create_org_with_cli(&database).await;
    let other_key = create_org_with_cli(&database).await;
    let http = reqwest::Client::new();
    let (quick, later) = templates(&http, &base, &key).await;
    // The receiver refuses at first: the reports' deliveries fail, to be retried by hand.
    let receiver = TestReceiver::start(Answer::Status(500)).await;
    let endpoint = post_ok(
        &http,
        &base,
        &key,
        "/v1/webhook-endpoints",
        json!({ "url": receiver.url }),
    )
    .await;
    let endpoint = endpoint["id"].as_i64().unwrap();
    let resolved = enroll(
        &http,
        &base,
        &key,
        quick,
        "+15550100001",
        "MRN-1001",
        &["resolved"],
    )
    .await;
    let retried = enroll(
        &http,
        &base,
        &key,
        quick,
        "+15550100002",
        "MRN-1002",
        &["no-answer", "resolved"],
    )
    .await;
    let waiting = enroll(
        &http,
        &base,
        &key,
        later,
        "+15550100003",
        "MRN-1003",
        &["resolved"],
    )
    .await;
    let (other_quick, _) = templates(&http, &base, &other_key).await;
    let theirs = enroll(
        &http,
        &base,
        &other_key,
        other_quick,
        "+15550100004",
        "MRN-9",
        &["resolved"],
    )
    .await;
    for id in [resolved, retried] {
        eventually("the quick sequences end", || {
            let http = http.clone();
            let url = format!("{base}/v1/sequences/{id}");
            let key = key.clone();
            async move { api_get(&http, &url, &key).await["status"] == "ended" }
        })
        .await;
    }

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let downloads = tempfile::tempdir().unwrap();
    let browser = driver.browser(profile.path(), downloads.path()).await;
    browser.set_window_size(1280, 800).await.unwrap();

    // Sign in.
    browser.goto(&format!("{base}/ui/sequences")).await.unwrap();
    wait_for_path(&browser, "/ui/login").await;
    screenshot(&browser, "01-sign-in").await;
    browser
        .find(Locator::Css("#api_key"))
        .await
        .unwrap()
        .send_keys(&key)
        .await
        .unwrap();
    click(
        &browser,
        Locator::Css("form[action='/ui/login'] button[type='submit']"),
    )
    .await;
    // Signed in, the overview is home; the sequences are one link away.
    wait_for_path(&browser, "/ui").await;
    assert_eq!(text_of(&browser, "h1").await, "Overview");
    click(&browser, Locator::LinkText("Sequences")).await;
    wait_for_path(&browser, "/ui/sequences").await;

    // The sequences, newest first; none of the other organisation's.
    let rows = browser
        .find_all(Locator::Css("table.sequences tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let source = browser.source().await.unwrap();
    for id in [resolved, retried, waiting] {
        assert!(
            source.contains(&format!("/ui/sequences/{id}\"")),
            "{id} listed"
        );
    }
    assert!(!source.contains(&format!("/ui/sequences/{theirs}\"")));
    screenshot(&browser, "02-sequences").await;

    // Filter: ended only.
    click(&browser, Locator::Css("#f-status option[value='ended']")).await;
    click(&browser, Locator::Css("form.filters button[type='submit']")).await;
    wait_for_path(
        &browser,
        "/ui/sequences?status=ended&template=&from=&to=&q=",
    )
    .await;
    let rows = browser
        .find_all(Locator::Css("table.sequences tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "the waiting sequence is filtered out");
    screenshot(&browser, "03-sequences-filtered").await;

    // Export the filtered list (a real download).
    click(&browser, Locator::LinkText("one row per sequence")).await;
    let csv_path = {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let done: Vec<PathBuf> = std::fs::read_dir(downloads.path())
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|e| e == "csv"))
                .collect();
            if let Some(path) = done.into_iter().next() {
                break path;
            }
            assert!(tokio::time::Instant::now() < deadline, "no CSV downloaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let exported: Vec<String> = reader.records().map(|r| r.unwrap()[0].to_owned()).collect();
    assert_eq!(exported.len(), 2, "{csv}");
    assert!(exported.contains(&resolved.to_string()) && exported.contains(&retried.to_string()));

    // Open the retried sequence: its transcript and its events.
    click(
        &browser,
        Locator::Css(&format!("a[href='/ui/sequences/{retried}']")),
    )
    .await;
    wait_for_path(&browser, &format!("/ui/sequences/{retried}")).await;
    let heading = text_of(&browser, "h1").await;
    assert!(
        heading.starts_with(&format!("Sequence {retried}")),
        "{heading}"
    );
    let assistant_line = text_of(&browser, "ol.chat li.ai .text").await;
    assert!(!assistant_line.is_empty());
    let events = browser
        .find_all(Locator::Css("table.events tbody tr"))
        .await
        .unwrap();
    assert!(events.len() >= 4, "enrolled, two calls, a retry, the end");
    let ledger = text_of(&browser, "table.events").await;
    assert!(
        ledger.contains("retry-scheduled") || ledger.contains("step-scheduled"),
        "{ledger}"
    );
    screenshot(&browser, "04-sequence-detail").await;
    browser.set_window_size(390, 844).await.unwrap();
    screenshot(&browser, "05-sequence-detail-phone").await;
    browser.set_window_size(1280, 800).await.unwrap();

    // Retry a failed delivery once the receiver is back.
    let failed = {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let list = api_get(
                &http,
                &format!("{base}/v1/webhook-deliveries?status=failed&endpoint_id={endpoint}"),
                &key,
            )
            .await;
            if let Some(first) = list["data"].as_array().and_then(|d| d.first()) {
                break first["id"].as_i64().unwrap();
            }
            assert!(tokio::time::Instant::now() < deadline, "no delivery failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    receiver.answer(Answer::Status(204));
    click(&browser, Locator::LinkText("Webhooks")).await;
    wait_for_path(&browser, "/ui/webhooks").await;
    screenshot(&browser, "09-webhooks").await;
    click(
        &browser,
        Locator::Css(&format!("a[href='/ui/webhooks/{endpoint}']")),
    )
    .await;
    wait_for_path(&browser, &format!("/ui/webhooks/{endpoint}")).await;
    click(
        &browser,
        Locator::Css(&format!(
            "form[action='/ui/deliveries/{failed}/retry'] button"
        )),
    )
    .await;
    wait_for_path(&browser, &format!("/ui/webhooks/{endpoint}")).await;
    eventually("the retried delivery is delivered", || {
        let http = http.clone();
        let url = format!("{base}/v1/webhook-deliveries/{failed}");
        let key = key.clone();
        async move { api_get(&http, &url, &key).await["status"] == "delivered" }
    })
    .await;
    browser.refresh().await.unwrap();
    screenshot(&browser, "10-endpoint-deliveries").await;

    // Rotate the endpoint's secret: the new one is shown once.
    click(
        &browser,
        Locator::Css("form[action$='/rotate-secret'] button"),
    )
    .await;
    let secret = text_of(&browser, "code.secret").await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    screenshot(&browser, "11-secret-rotated").await;
    let current = api_get(
        &http,
        &format!("{base}/v1/webhook-endpoints/{endpoint}/secret"),
        &key,
    )
    .await;
    assert!(current.to_string().contains(&secret));

    // A form posted without its CSRF token is refused, and nothing changes.
    browser
        .goto(&format!("{base}/ui/sequences/{waiting}"))
        .await
        .unwrap();
    browser
        .execute(
            "document.querySelectorAll(\"form[action$='/pause'] input[name='csrf_token']\").forEach(e => e.remove());",
            vec![],
        )
        .await
        .unwrap();
    click(&browser, Locator::Css("form[action$='/pause'] button")).await;
    let refusal = text_of(&browser, "p.error").await;
    assert!(refusal.contains("This form has expired"), "{refusal}");
    assert_eq!(browser.title().await.unwrap(), "Forbidden · Clarion");
    screenshot(&browser, "06-csrf-refused").await;
    let sequence = api_get(&http, &format!("{base}/v1/sequences/{waiting}"), &key).await;
    assert_eq!(sequence["status"], "active");

    // With its token, the same form pauses it.
    browser
        .goto(&format!("{base}/ui/sequences/{waiting}"))
        .await
        .unwrap();
    click(&browser, Locator::Css("form[action$='/pause'] button")).await;
    browser
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css("form[action$='/resume']"))
        .await
        .unwrap();
    let sequence = api_get(&http, &format!("{base}/v1/sequences/{waiting}"), &key).await;
    assert_eq!(sequence["status"], "paused");

    // Another organisation's sequence does not exist here.
    browser
        .goto(&format!("{base}/ui/sequences/{theirs}"))
        .await
        .unwrap();
    assert_eq!(text_of(&browser, "p.error").await, "No such sequence.");
    assert_eq!(browser.title().await.unwrap(), "Not Found · Clarion");
    screenshot(&browser, "07-other-organisation-404").await;

    // The access log shows the views and the export.
    browser
        .goto(&format!("{base}/ui/access-log"))
        .await
        .unwrap();
    let log = text_of(&browser, "table").await;
    assert!(
        log.contains("sequence.viewed") && log.contains("sequences.exported"),
        "{log}"
    );
    screenshot(&browser, "08-access-log").await;

    // Templates and assistants, read-only.
    click(&browser, Locator::LinkText("Templates")).await;
    wait_for_path(&browser, "/ui/templates").await;
    let steps = text_of(&browser, "table.steps").await;
    assert!(steps.contains("Reminder caller"), "{steps}");
    screenshot(&browser, "14-templates").await;

    // Enroll from a CSV file through the file input: two good rows, one bad.
    let upload = tempfile::tempdir().unwrap();
    let file = upload.path().join("patients.csv");
    std::fs::write(
        &file,
        "phone_number,time_zone,name,external_id\n\
         +15550100011,America/Chicago,Sam Ortiz,MRN-2001\n\
         555-0142,America/Chicago,Kim Lo,MRN-2002\n\
         +15550100013,Pacific/Honolulu,Ana Kealoha,MRN-2003\n",
    )
    .unwrap();
    click(
        &browser,
        Locator::Css(&format!("#enroll-template option[value='{quick}']")),
    )
    .await;
    browser
        .find(Locator::Css("#enroll-file"))
        .await
        .unwrap()
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    click(
        &browser,
        Locator::Css("form[action='/ui/templates/enroll'] button[type='submit']"),
    )
    .await;
    wait_for_path(&browser, "/ui/templates/enroll").await;
    assert_eq!(text_of(&browser, "dd[data-enrolled]").await, "2");
    let rejected = text_of(&browser, "table.rejected tr[data-line='3']").await;
    assert!(rejected.contains("contact.phone_number"), "{rejected}");
    assert!(!rejected.contains("555-0142"), "{rejected}");
    screenshot(&browser, "15-enrolled-from-csv").await;
    let listed = api_get(&http, &format!("{base}/v1/sequences?limit=50"), &key).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 5, "{listed}");

    // Add a number to the suppression list, then remove it.
    click(&browser, Locator::LinkText("Suppressions")).await;
    wait_for_path(&browser, "/ui/suppressions").await;
    browser
        .find(Locator::Css("#s-number"))
        .await
        .unwrap()
        .send_keys("+15550100777")
        .await
        .unwrap();
    browser
        .find(Locator::Css("#s-reason"))
        .await
        .unwrap()
        .send_keys("Asked by phone not to be called")
        .await
        .unwrap();
    click(
        &browser,
        Locator::Css("form[method='post'][action='/ui/suppressions'] button"),
    )
    .await;
    wait_for_path(&browser, "/ui/suppressions?q=%2B15550100777").await;
    wait_for_text(&browser, "main", "On the list since").await;
    let listed = api_get(&http, &format!("{base}/v1/suppressions"), &key).await;
    assert!(listed.to_string().contains("+15550100777"), "{listed}");
    screenshot(&browser, "12-suppression-added").await;
    click(&browser, Locator::Css("form.remove button")).await;
    wait_for_path(&browser, "/ui/suppressions?q=%2B15550100777").await;
    wait_for_text(&browser, "main", "is not on the list").await;
    let listed = api_get(&http, &format!("{base}/v1/suppressions"), &key).await;
    assert!(!listed.to_string().contains("+15550100777"), "{listed}");
    screenshot(&browser, "13-suppression-removed").await;

    // The overview: the organisation's statuses, outcomes, answered calls on the contacts'
    // clocks and the deliveries (the failed ones and the retried one).
    click(&browser, Locator::LinkText("Overview")).await;
    wait_for_path(&browser, "/ui").await;
    wait_for_text(&browser, "#h-heat", "When calls are answered").await;
    let deliveries = text_of(&browser, "section[aria-labelledby='h-deliveries']").await;
    assert!(
        deliveries.contains("delivery attempts answered 2xx"),
        "{deliveries}"
    );
    let charts = browser
        .find_all(Locator::Css("svg[role='img'] > desc"))
        .await
        .unwrap();
    assert!(charts.len() >= 5, "every chart with its description");
    let answered = browser
        .find_all(Locator::Css("rect.heat:not(.h0)"))
        .await
        .unwrap();
    assert!(
        !answered.is_empty(),
        "the resolved calls are on the heat map"
    );
    screenshot(&browser, "16-overview").await;
    browser
        .execute(
            "document.getElementById('h-heat').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    screenshot(&browser, "17-overview-heat-map").await;

    // Sign out: the session is over, the dashboard asks to sign in again.
    click(&browser, Locator::Css("form[action='/ui/logout'] button")).await;
    wait_for_path(&browser, "/ui/login").await;
    browser.goto(&format!("{base}/ui/sequences")).await.unwrap();
    wait_for_path(&browser, "/ui/login").await;
    browser.close().await.unwrap();
}
