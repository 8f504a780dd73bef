//! The operator dashboard's handlers over real HTTP (in process, no browser): sign-in and
//! sessions, CSRF, tenant isolation, every page's structure, the CSV exports and the PHI
//! access log. The browser tests (`ui_browser.rs`) drive the same pages in Chromium.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use clarion_delivery::Clock as _;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};

use crate::support::{TestApp, spawn_app};

/// A browser's view of the dashboard: its own cookie jar (the session cookie), no redirects
/// followed, so each answer is checked as it is.
pub struct Browser {
    base: String,
    http: reqwest::Client,
    pub session: Option<String>,
    pub csrf: String,
}

/// The value of a `Set-Cookie` named `name` in `response`, with its attributes.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The `value` of the hidden `csrf_token` input in `html`.
pub fn csrf_in(html: &str) -> String {
    let start = html
        .find(r#"name="csrf_token" value=""#)
        .unwrap_or_else(|| panic!("no CSRF token in {html}"))
        + r#"name="csrf_token" value=""#.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            session: None,
            csrf: String::new(),
        }
    }

    fn cookie_header(&self) -> Option<String> {
        self.session
            .as_ref()
            .map(|token| format!("clarion_session={token}"))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = self.cookie_header() {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    pub async fn page(&self, path: &str) -> (StatusCode, String) {
        let response = self.get(path).await;
        assert_eq!(
            response.headers()["cache-control"],
            "no-store",
            "every /ui answer is no-store ({path})"
        );
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(cookie) = self.cookie_header() {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    /// Posts `body` as `multipart/form-data` with `boundary`.
    pub async fn post_multipart(
        &self,
        path: &str,
        boundary: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        if let Some(cookie) = self.cookie_header() {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    /// Uploads `csv` for enrollment in `template` through the Templates page's form.
    pub async fn upload_csv(&self, template: &str, csv: &str) -> reqwest::Response {
        let fields = [("csrf_token", self.csrf.as_str()), ("template", template)];
        let body = multipart("b", &fields, Some(("p.csv", csv)));
        self.post_multipart("/ui/templates/enroll", "b", body).await
    }

    /// Signs in with `key` through the form; panics unless it succeeds.
    pub async fn sign_in(base: &str, key: &str) -> Self {
        let mut browser = Self::new(base);
        let response = browser.attempt_sign_in(key, &[]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()["location"], "/ui");
        let cookie = set_cookie(&response, "clarion_session").expect("a session cookie");
        browser.session = Some(cookie_value(&cookie));
        let (status, html) = browser.page("/ui/sequences").await;
        assert_eq!(status, StatusCode::OK, "{html}");
        browser.csrf = csrf_in(&html);
        browser
    }

    /// Fetches the sign-in form and posts `key` with the form's token and cookie.
    pub async fn attempt_sign_in(&self, key: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let form = self.get("/ui/login").await;
        let cookie = set_cookie(&form, "clarion_signin").expect("a sign-in cookie");
        let html = form.text().await.unwrap();
        let token = csrf_in(&html);
        let mut request = self
            .http
            .post(format!("{}/ui/login", self.base))
            .header(
                "cookie",
                format!("clarion_signin={}", cookie_value(&cookie)),
            )
            .form(&[("api_key", key), ("csrf_token", token.as_str())]);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }
}

/// An organisation with a call assistant and a template, ready to enroll.
struct Clinic {
    key: String,
    template: i64,
}

async fn clinic(app: &TestApp, name: &str, calling_hours: Value) -> Clinic {
    let (_, key) = app.org(name).await;
    let (status, assistant) = app
        .post(&key, "/v1/assistants", json!({
            "name": "Reminder caller", "channel": "call",
            "config": { "purpose": "confirm the upcoming appointment", "organisation_name": name },
        }))
        .await;
    assert_eq!(status, 201, "{assistant}");
    let (status, template) = app
        .post(&key, "/v1/sequence-templates", json!({
            "name": "Appointment reminder",
            "steps": [
                { "type": "call", "assistant_id": assistant["id"], "delay": "0s", "max_attempts": 2, "retry_delay": "1h" },
            ],
            "stop_on": ["resolved", "opt-out", "declined", "escalated"],
            "calling_hours": calling_hours,
        }))
        .await;
    assert_eq!(status, 201, "{template}");
    Clinic {
        key,
        template: template["id"].as_i64().unwrap(),
    }
}

impl Clinic {
    async fn enroll(
        &self,
        app: &TestApp,
        phone: &str,
        external_id: &str,
        outcomes: &[&str],
    ) -> i64 {
        app.enroll(&self.key, json!({
            "template_id": self.template,
            "contact": { "phone_number": phone, "time_zone": "America/Chicago", "name": "Alex Rivera", "external_id": external_id },
            "simulation": { "outcomes": outcomes },
        }))
        .await
    }
}

/// Runs the engine an hour at a time until every sequence in `ids` has ended.
async fn run_until_ended(app: &TestApp, key: &str, ids: &[i64]) {
    for _ in 0..24 * 3 {
        app.run_due().await;
        let mut all = true;
        for id in ids {
            all &= app.sequence(key, *id).await["status"] == "ended";
        }
        if all {
            return;
        }
        app.clock.advance(Duration::from_secs(3600));
    }
    panic!("the sequences did not end within three simulated days");
}

async fn audit_log(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = app.get(key, "/v1/audit-log?limit=200").await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_sign_in_form_is_labelled_and_every_page_needs_a_session() {
    let app = spawn_app().await;
    let browser = Browser::new(&app.base);
    let response = browser.get("/ui/login").await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers["cache-control"], "no-store");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let cookie = set_cookie(&response, "clarion_signin").unwrap();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/ui"),
        "{cookie}"
    );
    let html = response.text().await.unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains(r#"<html lang="en">"#));
    assert!(
        html.contains(r#"<label for="api_key">API key</label>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"id="api_key" name="api_key" type="password" required"#),
        "{html}"
    );
    assert!(html.contains(r#"<form method="post" action="/ui/login">"#));
    assert!(!csrf_in(&html).is_empty());

    // The stylesheet is served from the binary, under the path the page names.
    let css_path = html
        .split(r#"rel="stylesheet" href=""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let css = browser.get(&css_path).await;
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(css.headers()["cache-control"], "no-store");
    assert!(css.text().await.unwrap().contains("ol.chat"));

    for path in [
        "/ui",
        "/ui/sequences",
        "/ui/sequences/123",
        "/ui/access-log",
        "/ui/sequences/export.csv",
    ] {
        let response = browser.get(path).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()["location"], "/ui/login", "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
    }
    let (status, html) = browser.page("/ui/no-such-page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("No such page."), "{html}");
}

#[tokio::test]
async fn sign_in_sets_a_strict_session_cookie_that_is_secure_over_https() {
    let app = spawn_app().await;
    let (_, key) = app.org("Riverside").await;
    let browser = Browser::new(&app.base);
    let plain = browser.attempt_sign_in(&key, &[]).await;
    assert_eq!(plain.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie(&plain, "clarion_session").unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/ui"), "{cookie}");
    assert!(!cookie.contains("Secure"), "not over plain http: {cookie}");
    // The token is 32 random bytes; the database holds only its hash.
    let token = cookie_value(&cookie);
    assert_eq!(token.len(), 43);
    let https = browser
        .attempt_sign_in(&key, &[("x-forwarded-proto", "https")])
        .await;
    let cookie = set_cookie(&https, "clarion_session").unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");

    // Without the form's token (or with another browser's), sign-in is refused.
    let forged = reqwest::Client::new()
        .post(format!("{}/ui/login", app.base))
        .form(&[("api_key", key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&forged, "clarion_session").is_none());
}

#[tokio::test]
async fn failed_sign_ins_are_rate_limited_per_address() {
    let app = spawn_app().await;
    let (_, key) = app.org("Riverside").await;
    let browser = Browser::new(&app.base);
    for attempt in 0..10 {
        let response = browser.attempt_sign_in("ck_wrong", &[]).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
        let html = response.text().await.unwrap();
        assert!(html.contains("That API key was not accepted"), "{html}");
    }
    let refused = browser.attempt_sign_in("ck_wrong", &[]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    // While limited, even the right key is not checked (else guessing would go on).
    let right = browser.attempt_sign_in(&key, &[]).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    // A token comes back after a while (10 per 5 minutes: one every 30 s).
    app.clock.advance(Duration::from_secs(31));
    let right = browser.attempt_sign_in(&key, &[]).await;
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_list_filters_searches_and_shows_only_the_organisations_sequences() {
    let app = spawn_app().await;
    let riverside = clinic(&app, "Riverside", Value::Null).await;
    let other = clinic(&app, "Lakeside", Value::Null).await;
    let resolved = riverside
        .enroll(&app, "+15550100001", "MRN-1001", &["resolved"])
        .await;
    let running = riverside
        .enroll(
            &app,
            "+15550100002",
            "MRN-1002",
            &["voicemail", "voicemail"],
        )
        .await;
    let theirs = other
        .enroll(&app, "+15550100001", "MRN-1001", &["resolved"])
        .await;
    run_until_ended(&app, &riverside.key, &[resolved]).await;
    // The second one ended too by now (two voicemails); a third stays active.
    let active = riverside
        .enroll(&app, "+15550100003", "MRN-1003", &["resolved"])
        .await;

    let browser = Browser::sign_in(&app.base, &riverside.key).await;
    let (status, html) = browser.page("/ui/sequences").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<h1>Sequences</h1>"));
    assert!(
        html.contains(r#"<form class="filters" method="get" action="/ui/sequences""#),
        "{html}"
    );
    for label in [
        r#"<label for="f-status">"#,
        r#"<label for="f-template">"#,
        r#"<label for="f-from">"#,
        r#"<label for="f-to">"#,
        r#"<label for="f-q">"#,
    ] {
        assert!(html.contains(label), "{label}");
    }
    assert!(
        html.contains("<span>Riverside</span>")
            || html.contains(r#"<span class="org">Riverside</span>"#)
    );
    for id in [resolved, running, active] {
        assert!(
            html.contains(&format!(r#"href="/ui/sequences/{id}""#)),
            "sequence {id} listed"
        );
    }
    assert!(
        !html.contains(&format!("/ui/sequences/{theirs}\"")),
        "another organisation's sequence is not listed"
    );
    // Newest first.
    let position = |id: i64| html.find(&format!(r#"href="/ui/sequences/{id}""#)).unwrap();
    assert!(position(active) < position(resolved));
    // The list shows no contact name or number: those are on the audited detail page.
    assert!(!html.contains("+15550100001") && !html.contains("Alex Rivera"));

    let (_, active_only) = browser.page("/ui/sequences?status=active").await;
    assert!(active_only.contains(&format!(r#"href="/ui/sequences/{active}""#)));
    assert!(!active_only.contains(&format!(r#"href="/ui/sequences/{resolved}""#)));
    assert!(
        active_only.contains(r#"<option value="active" selected>Active</option>"#),
        "{active_only}"
    );
    let (_, by_number) = browser.page("/ui/sequences?q=%2B15550100002").await;
    assert!(by_number.contains(&format!(r#"href="/ui/sequences/{running}""#)));
    assert!(!by_number.contains(&format!(r#"href="/ui/sequences/{resolved}""#)));
    let (_, by_external) = browser.page("/ui/sequences?q=MRN-1001").await;
    assert!(by_external.contains(&format!(r#"href="/ui/sequences/{resolved}""#)));
    assert!(!by_external.contains(&format!(r#"href="/ui/sequences/{running}""#)));
    let (_, by_template) = browser
        .page(&format!("/ui/sequences?template={}", riverside.template))
        .await;
    assert!(by_template.contains(&format!(r#"href="/ui/sequences/{resolved}""#)));
    let (_, foreign_template) = browser
        .page(&format!("/ui/sequences?template={}", other.template))
        .await;
    assert!(
        foreign_template.contains("No sequence matches these filters"),
        "{foreign_template}"
    );
    let (_, future) = browser.page("/ui/sequences?from=2999-01-01").await;
    assert!(future.contains("No sequence matches these filters"));
    let (status, bad) = browser.page("/ui/sequences?from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad.contains("From must be a date"), "{bad}");
    let (status, _) = browser.page("/ui/sequences?status=finished").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = browser.page("/ui/sequences?after=not-a-cursor").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Viewing the list records nothing: it shows no contact's data.
    assert!(audit_log(&app, &riverside.key).await.is_empty());
}

#[tokio::test]
async fn the_list_pages_with_a_cursor() {
    let app = spawn_app().await;
    let riverside = clinic(&app, "Riverside", Value::Null).await;
    let mut ids = Vec::new();
    for i in 0..53 {
        ids.push(
            riverside
                .enroll(
                    &app,
                    &format!("+1555020{i:04}"),
                    &format!("MRN-{i}"),
                    &["resolved"],
                )
                .await,
        );
    }
    let browser = Browser::sign_in(&app.base, &riverside.key).await;
    let (_, first) = browser.page("/ui/sequences").await;
    let next = first
        .split(r#"rel="next""#)
        .next()
        .unwrap()
        .rsplit("href=\"")
        .next()
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert!(next.starts_with("/ui/sequences?after="), "{next}");
    let (_, second) = browser.page(&next).await;
    let listed = |html: &str| {
        ids.iter()
            .filter(|id| html.contains(&format!(r#"href="/ui/sequences/{id}""#)))
            .count()
    };
    assert_eq!(listed(&first), 50);
    assert_eq!(listed(&second), 3);
    assert!(second.contains(&format!(r#"href="/ui/sequences/{}""#, ids[0])));
    assert!(!second.contains(r#"rel="next""#));
}

#[tokio::test]
async fn the_detail_shows_the_transcript_the_deferrals_and_the_report_and_is_recorded() {
    let app = spawn_app().await;
    // Calling hours that exclude the clock's current hour (contacts in America/Chicago), so
    // the first call waits and the ledger says why and until when.
    let now = chrono::DateTime::from_timestamp_millis(app.clock.now_millis()).unwrap();
    let chicago: chrono_tz::Tz = "America/Chicago".parse().unwrap();
    let hour = chrono::Timelike::hour(&now.with_timezone(&chicago));
    let start = if (hour + 2) % 24 >= 23 {
        1
    } else {
        (hour + 2) % 24
    };
    let riverside = clinic(
        &app,
        "Riverside",
        json!({ "start": format!("{start:02}:00"), "end": format!("{:02}:00", start + 1) }),
    )
    .await;
    let receiver = crate::support::TestReceiver::start(crate::support::Answer::Status(204)).await;
    app.endpoint(&riverside.key, &receiver.url).await;
    let id = riverside
        .enroll(&app, "+15550100001", "MRN-1001", &["resolved"])
        .await;
    run_until_ended(&app, &riverside.key, &[id]).await;
    receiver.wait_for(1).await;
    app.run_due().await;

    let browser = Browser::sign_in(&app.base, &riverside.key).await;
    let (status, html) = browser.page(&format!("/ui/sequences/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(&format!("<h1>Sequence {id} ")), "{html}");
    assert!(
        html.contains("Alex Rivera") && html.contains("+15550100001") && html.contains("MRN-1001")
    );
    assert!(html.contains(r#"<h2 id="outreach-title">Outreach</h2>"#));
    assert!(
        html.contains(r#"<ol class="chat" aria-label="Transcript">"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<li class="ai"><span class="who">Assistant</span>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<li class="patient"><span class="who">Patient</span>"#),
        "{html}"
    );
    assert!(html.contains("<h4>Summary</h4>"));
    assert!(
        html.contains(" local)"),
        "the contact's local time is beside the UTC time"
    );
    // The ledger: the deferral with its reason and until-time.
    assert!(
        html.contains(r#"<span class="badge">deferred</span>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<span class="reason">calling-hours</span> until <time"#),
        "{html}"
    );
    // The report exactly as delivered, with the delivery and its attempt.
    assert!(html.contains("The End of Sequence Report, exactly as delivered"));
    assert!(
        html.contains(r#"<span class="badge ok">delivered</span>"#),
        "{html}"
    );
    assert!(html.contains("<td>204</td>"), "{html}");
    // An ended sequence offers no controls.
    assert!(!html.contains("/cancel\""));

    // The view was recorded, without PHI; the access log page shows it.
    let log = audit_log(&app, &riverside.key).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["action"], "sequence.viewed");
    assert_eq!(log[0]["sequence_id"], id);
    let actor = log[0]["actor"].as_str().unwrap();
    assert!(
        actor.starts_with("ui-session:") && actor.contains(" api-key:"),
        "{actor}"
    );
    let (status, page) = browser.page("/ui/access-log").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<h1>Access log</h1>"));
    assert!(page.contains("<td>sequence.viewed</td>"), "{page}");
    assert!(page.contains(&format!(r#"href="/ui/sequences/{id}""#)));
    assert!(!page.contains("+15550100001"));
}

#[tokio::test]
async fn another_organisations_sequence_is_404_and_forms_need_the_csrf_token() {
    let app = spawn_app().await;
    let riverside = clinic(&app, "Riverside", Value::Null).await;
    let lakeside = clinic(&app, "Lakeside", Value::Null).await;
    let ours = riverside
        .enroll(&app, "+15550100001", "MRN-1", &["voicemail", "voicemail"])
        .await;
    let theirs = lakeside
        .enroll(&app, "+15550100002", "MRN-2", &["voicemail", "voicemail"])
        .await;
    let browser = Browser::sign_in(&app.base, &riverside.key).await;

    let (status, html) = browser.page(&format!("/ui/sequences/{theirs}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("No such sequence."));
    assert!(!html.contains("+15550100002"));
    let (status, _) = browser.page("/ui/sequences/not-a-number").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let refused = browser
        .post(
            &format!("/ui/sequences/{theirs}/cancel"),
            &[("csrf_token", &browser.csrf)],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.sequence(&lakeside.key, theirs).await["status"],
        "active"
    );
    assert!(
        audit_log(&app, &riverside.key).await.is_empty(),
        "a 404 shows nothing and records nothing"
    );

    // Without the token, or with a wrong one: 403, and nothing changes.
    for form in [vec![], vec![("csrf_token", "forged")]] {
        let response = browser
            .post(&format!("/ui/sequences/{ours}/pause"), &form)
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("This form has expired")
        );
    }
    assert_eq!(app.sequence(&riverside.key, ours).await["status"], "active");
    // Another session's token is not this session's.
    let second = Browser::sign_in(&app.base, &riverside.key).await;
    assert_ne!(second.csrf, browser.csrf);
    let response = browser
        .post(
            &format!("/ui/sequences/{ours}/pause"),
            &[("csrf_token", &second.csrf)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // With it: pause, resume, cancel, each back to the detail page.
    let (_, html) = browser.page(&format!("/ui/sequences/{ours}")).await;
    assert!(html.contains(&format!(r#"action="/ui/sequences/{ours}/pause""#)));
    for (action, status) in [
        ("pause", "paused"),
        ("resume", "active"),
        ("cancel", "ended"),
    ] {
        let response = browser
            .post(
                &format!("/ui/sequences/{ours}/{action}"),
                &[("csrf_token", &browser.csrf)],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{action}");
        assert_eq!(
            response.headers()["location"],
            format!("/ui/sequences/{ours}")
        );
        assert_eq!(
            app.sequence(&riverside.key, ours).await["status"],
            status,
            "{action}"
        );
    }
    // Once ended, a control is a clear 409 page.
    let response = browser
        .post(
            &format!("/ui/sequences/{ours}/pause"),
            &[("csrf_token", &browser.csrf)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("the sequence has ended")
    );
}

#[tokio::test]
async fn exports_are_csv_guarded_against_formulas_and_recorded() {
    let app = spawn_app().await;
    let riverside = clinic(&app, "Riverside", Value::Null).await;
    let lakeside = clinic(&app, "Lakeside", Value::Null).await;
    let first = riverside
        .enroll(
            &app,
            "+15550100001",
            "=HYPERLINK(\"http://x\")",
            &["resolved"],
        )
        .await;
    let second = riverside
        .enroll(&app, "+15550100002", "MRN-2", &["voicemail", "resolved"])
        .await;
    lakeside
        .enroll(&app, "+15550100003", "MRN-3", &["resolved"])
        .await;
    run_until_ended(&app, &riverside.key, &[first, second]).await;
    let browser = Browser::sign_in(&app.base, &riverside.key).await;

    let response = browser.get("/ui/sequences/export.csv").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"clarion-sequences-"),
        "{disposition}"
    );
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "sequence_id");
    assert!(headers.iter().any(|h| h == "last_outcome"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "only this organisation's sequences: {text}");
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let row_of = |id: i64| rows.iter().find(|r| r[0] == id.to_string()).unwrap();
    assert_eq!(
        &row_of(first)[column("external_id")],
        "'=HYPERLINK(\"http://x\")"
    );
    assert_eq!(&row_of(first)[column("phone_number")], "'+15550100001");
    assert_eq!(&row_of(first)[column("last_outcome")], "resolved");
    assert_eq!(&row_of(second)[column("calls")], "2");
    assert_eq!(&row_of(second)[column("calls_answered")], "1");

    let response = browser
        .get("/ui/encounters/export.csv?q=%2B15550100002")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        rows.len(),
        2,
        "one row per call of the one matching sequence: {text}"
    );
    let outcome = headers.iter().position(|h| h == "outcome").unwrap();
    assert_eq!(&rows[0][outcome], "voicemail");
    assert_eq!(&rows[1][outcome], "resolved");

    let log = audit_log(&app, &riverside.key).await;
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["action"], "sequences.exported");
    assert_eq!(log[0]["detail"], "rows=2");
    assert_eq!(log[1]["action"], "encounters.exported");
    assert_eq!(
        log[1]["detail"],
        "search by phone number sequences=1 rows=2"
    );
    assert!(log.iter().all(|e| e["sequence_id"].is_null()));
    // The other organisation's log is its own.
    assert!(audit_log(&app, &lakeside.key).await.is_empty());
    // The audit log pages with a cursor.
    let (status, page) = app.get(&riverside.key, "/v1/audit-log?limit=1").await;
    assert_eq!(status, 200);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = app
        .get(
            &riverside.key,
            &format!("/v1/audit-log?limit=1&after={cursor}"),
        )
        .await;
    assert_eq!(rest["data"][0]["action"], "encounters.exported");
    let (status, _) = app.get(&riverside.key, "/v1/audit-log?after=twelve").await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn sign_out_and_idle_expiry_end_the_session() {
    let app = spawn_app().await;
    let (_, key) = app.org("Riverside").await;
    let browser = Browser::sign_in(&app.base, &key).await;
    // Sign-out needs the token too.
    let refused = browser.post("/ui/logout", &[]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let (status, _) = browser.page("/ui/sequences").await;
    assert_eq!(status, StatusCode::OK);
    let out = browser
        .post("/ui/logout", &[("csrf_token", &browser.csrf)])
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(out.headers()["location"], "/ui/login");
    let cleared = set_cookie(&out, "clarion_session").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The old cookie no longer opens anything: the row is gone.
    let response = browser.get("/ui/sequences").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/ui/login");

    // Idle past 30 minutes, a session is over; used within them, it lives on.
    let browser = Browser::sign_in(&app.base, &key).await;
    app.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(browser.get("/ui/sequences").await.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(browser.get("/ui/sequences").await.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        browser.get("/ui/sequences").await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn webhook_pages_show_a_rotated_secret_once_send_tests_and_retry_deliveries() {
    let app = spawn_app().await;
    let riverside = clinic(&app, "Riverside", Value::Null).await;
    let lakeside = clinic(&app, "Lakeside", Value::Null).await;
    let receiver = crate::support::TestReceiver::start(crate::support::Answer::Status(204)).await;
    let (endpoint, old_secret) = app.endpoint(&riverside.key, &receiver.url).await;
    let (their_endpoint, _) = app.endpoint(&lakeside.key, &receiver.url).await;
    let id = riverside
        .enroll(&app, "+15550100001", "MRN-1", &["resolved"])
        .await;
    run_until_ended(&app, &riverside.key, &[id]).await;
    receiver.wait_for(1).await;
    app.run_due().await;
    let browser = Browser::sign_in(&app.base, &riverside.key).await;

    let (status, list) = browser.page("/ui/webhooks").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains("<h1>Webhook endpoints</h1>"));
    assert!(
        list.contains(&format!(r#"href="/ui/webhooks/{endpoint}""#)),
        "{list}"
    );
    assert!(!list.contains(&format!(r#"href="/ui/webhooks/{their_endpoint}""#)));
    let (status, _) = browser
        .page(&format!("/ui/webhooks/{their_endpoint}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let page_path = format!("/ui/webhooks/{endpoint}");
    let (_, page) = browser.page(&page_path).await;
    assert!(page.contains("<h2>Deliveries</h2>"));
    assert!(
        page.contains(r#"<span class="badge ok">delivered</span>"#),
        "{page}"
    );
    assert!(page.contains("Retry now"));
    assert!(
        !page.contains("whsec_"),
        "the secret is never shown but once"
    );

    // Rotation: refused without the token; with it, the new secret once.
    let rotate = format!("/ui/webhooks/{endpoint}/rotate-secret");
    assert_eq!(
        browser.post(&rotate, &[]).await.status(),
        StatusCode::FORBIDDEN
    );
    let rotated = browser
        .post(&rotate, &[("csrf_token", &browser.csrf)])
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    assert_eq!(rotated.headers()["cache-control"], "no-store");
    let html = rotated.text().await.unwrap();
    let shown = html
        .split(r#"<code class="secret">"#)
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        shown.starts_with("whsec_") && shown != old_secret,
        "{shown}"
    );
    let (_, current) = app
        .get(
            &riverside.key,
            &format!("/v1/webhook-endpoints/{endpoint}/secret"),
        )
        .await;
    assert!(current.to_string().contains(&shown), "{current}");
    let (_, again) = browser.page(&page_path).await;
    assert!(!again.contains(&shown));

    // A test report goes out.
    let test = browser
        .post(
            &format!("/ui/webhooks/{endpoint}/test"),
            &[("csrf_token", &browser.csrf)],
        )
        .await;
    assert_eq!(test.status(), StatusCode::SEE_OTHER);
    app.run_due().await;
    receiver.wait_for(2).await;

    // A retry of the report's delivery, back to the page it came from.
    let deliveries = app.deliveries(&riverside.key).await;
    let report = deliveries
        .iter()
        .find(|d| d["event_type"] == "sequence.ended")
        .unwrap();
    let delivery = report["id"].as_i64().unwrap();
    let back = format!("/ui/sequences/{id}");
    let retried = browser
        .post(
            &format!("/ui/deliveries/{delivery}/retry"),
            &[("csrf_token", &browser.csrf), ("back", &back)],
        )
        .await;
    assert_eq!(retried.status(), StatusCode::SEE_OTHER);
    assert_eq!(retried.headers()["location"], back.as_str());
    app.run_due().await;
    receiver.wait_for(3).await;
    let (_, after) = app
        .get(
            &riverside.key,
            &format!("/v1/webhook-deliveries/{delivery}"),
        )
        .await;
    assert_eq!(after["attempt_count"], 2, "{after}");
    // Only a dashboard path is a way back.
    let elsewhere = browser
        .post(
            &format!("/ui/deliveries/{delivery}/retry"),
            &[
                ("csrf_token", &browser.csrf),
                ("back", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(elsewhere.headers()["location"], "/ui/webhooks");
    // Another organisation's delivery is 404.
    let theirs = app.deliveries(&lakeside.key).await;
    assert!(theirs.is_empty());
    let response = browser
        .post(
            "/ui/deliveries/12345/retry",
            &[("csrf_token", &browser.csrf)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_suppression_list_finds_adds_and_removes_numbers_an_opt_out_only_with_consent() {
    let app = spawn_app().await;
    let riverside = clinic(&app, "Riverside", Value::Null).await;
    let lakeside = clinic(&app, "Lakeside", Value::Null).await;
    // A patient's opt-out, through a sequence.
    let opted = riverside
        .enroll(&app, "+15550100009", "MRN-9", &["opt-out"])
        .await;
    run_until_ended(&app, &riverside.key, &[opted]).await;
    let browser = Browser::sign_in(&app.base, &riverside.key).await;

    let (status, page) = browser.page("/ui/suppressions").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<h1>Suppression list</h1>"));
    assert!(page.contains(r#"<label for="s-number">"#) && page.contains(r#"<label for="s-q">"#));
    assert!(page.contains("+15550100009"), "{page}");

    // Add: refused without the token, then added, recorded as made by the session's key.
    assert_eq!(
        browser
            .post("/ui/suppressions", &[("phone_number", "+15550100123")])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let added = browser
        .post(
            "/ui/suppressions",
            &[
                ("csrf_token", &browser.csrf),
                ("phone_number", "+15550100123"),
                ("reason", "asked by phone"),
            ],
        )
        .await;
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        added.headers()["location"],
        "/ui/suppressions?q=%2B15550100123"
    );
    assert_eq!(
        app.suppression_reason(&riverside.key, "+15550100123")
            .await
            .as_deref(),
        Some("asked by phone")
    );
    assert_eq!(
        app.suppression_reason(&lakeside.key, "+15550100123").await,
        None
    );
    let (_, entry) = browser.page("/ui/suppressions?q=%2B15550100123").await;
    assert!(entry.contains("On the list since"), "{entry}");
    assert!(entry.contains("<code>api-key:"), "{entry}");
    let invalid = browser
        .post(
            "/ui/suppressions",
            &[("csrf_token", &browser.csrf), ("phone_number", "555-0100")],
        )
        .await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Remove an operator's entry.
    let removed = browser
        .post(
            "/ui/suppressions/remove",
            &[
                ("csrf_token", &browser.csrf),
                ("phone_number", "+15550100123"),
            ],
        )
        .await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.suppression_reason(&riverside.key, "+15550100123").await,
        None
    );
    let (_, entry) = browser.page("/ui/suppressions?q=%2B15550100123").await;
    assert!(
        entry.contains("is not on the list") && entry.contains("<td>removed</td>"),
        "{entry}"
    );

    // A patient's opt-out asks for the new consent, and stays without it.
    let (_, entry) = browser.page("/ui/suppressions?q=%2B15550100009").await;
    assert!(
        entry.contains(r#"<label for="c-by">Obtained by</label>"#),
        "{entry}"
    );
    let refused = browser
        .post(
            "/ui/suppressions/remove",
            &[
                ("csrf_token", &browser.csrf),
                ("phone_number", "+15550100009"),
            ],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(
        app.suppression_reason(&riverside.key, "+15550100009")
            .await
            .as_deref(),
        Some("opt-out")
    );
    // The form takes minutes: a consent two minutes after the opt-out, truncated, is after it.
    app.clock.advance(Duration::from_secs(120));
    let now = chrono::DateTime::from_timestamp_millis(app.clock.now_millis()).unwrap();
    let at = now.format("%Y-%m-%dT%H:%M").to_string();
    let consented = browser
        .post(
            "/ui/suppressions/remove",
            &[
                ("csrf_token", browser.csrf.as_str()),
                ("phone_number", "+15550100009"),
                ("obtained_by", "Front desk"),
                ("obtained_at", at.as_str()),
                ("method", "written"),
                ("note", ""),
            ],
        )
        .await;
    assert_eq!(
        consented.status(),
        StatusCode::SEE_OTHER,
        "{}",
        consented.text().await.unwrap()
    );
    assert_eq!(
        app.suppression_reason(&riverside.key, "+15550100009").await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_keep_leaves_a_dashboard_full_of_sequences_to_sign_in_to() {
    use tokio::io::AsyncBufReadExt;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args(["demo", "--keep"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The tour runs first (simulated days at high speed); then the line that says where to go.
    let line = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("Dashboard: ") {
                return line;
            }
        }
        panic!("the demo ended without printing the dashboard's address");
    })
    .await
    .expect("the demo's tour finished in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = line
        .strip_prefix("Dashboard: ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let base = url.strip_suffix("/ui").unwrap();
    let key = line
        .split("sign in with the API key ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let browser = Browser::sign_in(base, key).await;
    let (status, html) = browser.page("/ui/sequences").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.matches(r#"href="/ui/sequences/"#).count() >= 10,
        "{html}"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_templates_page_shows_each_templates_steps_and_the_assistants() {
    let app = spawn_app().await;
    let riverside = clinic(
        &app,
        "Riverside",
        json!({ "start": "09:00", "end": "17:30" }),
    )
    .await;
    let lakeside = clinic(&app, "Lakeside", Value::Null).await;
    let browser = Browser::sign_in(&app.base, &riverside.key).await;
    let (status, html) = browser.page("/ui/templates").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<h1>Templates and assistants</h1>"));
    assert!(
        html.contains(r#"<a href="/ui/templates" aria-current="page">Templates</a>"#),
        "{html}"
    );
    assert!(
        html.contains("Appointment reminder") && html.contains("version 1"),
        "{html}"
    );
    assert!(
        html.contains(&format!("<dd>{}</dd>", riverside.template)),
        "{html}"
    );
    assert!(
        !html.contains(&format!("<dd>{}</dd>", lakeside.template)),
        "only this organisation's"
    );
    assert!(
        html.contains("09:00–17:30 in the contact's time zone"),
        "{html}"
    );
    assert!(html.contains("resolved, opt-out, declined, escalated"));
    // The step: a call by the reminder caller, at once, two attempts an hour apart.
    assert!(
        html.contains(
            "<td>1</td><td>call</td><td>Reminder caller</td><td>0s</td><td>2</td><td>1h</td>"
        ),
        "{html}"
    );
    assert!(html.contains(r#"<table class="assistants">"#));
}

#[tokio::test]
async fn endpoints_are_created_with_their_secret_shown_once_and_disabled_and_enabled() {
    let app = spawn_app().await;
    let riverside = clinic(&app, "Riverside", Value::Null).await;
    let lakeside = clinic(&app, "Lakeside", Value::Null).await;
    let (theirs, _) = app
        .endpoint(&lakeside.key, "http://127.0.0.1:9/hooks")
        .await;
    let browser = Browser::sign_in(&app.base, &riverside.key).await;
    let (_, list) = browser.page("/ui/webhooks").await;
    assert!(
        list.contains(r#"<label for="e-url">URL (https)</label>"#),
        "{list}"
    );
    assert!(list.contains("No endpoint yet"));

    let form = [
        ("url", "http://127.0.0.1:9/clarion"),
        ("description", "EHR bridge"),
    ];
    assert_eq!(
        browser.post("/ui/webhooks", &form).await.status(),
        StatusCode::FORBIDDEN
    );
    let created = browser
        .post(
            "/ui/webhooks",
            &[("csrf_token", browser.csrf.as_str()), form[0], form[1]],
        )
        .await;
    assert_eq!(created.status(), StatusCode::OK);
    let html = created.text().await.unwrap();
    assert!(html.contains(r#"<code class="secret">whsec_"#), "{html}");
    let (_, endpoints) = app.get(&riverside.key, "/v1/webhook-endpoints").await;
    let endpoint = endpoints["data"][0]["id"].as_i64().unwrap();
    assert_eq!(endpoints["data"][0]["description"], "EHR bridge");
    assert_eq!(endpoints["data"][0]["enabled"], true);
    // The SSRF policy and the limits are the API's: a URL it refuses is refused here too.
    let refused = browser
        .post(
            "/ui/webhooks",
            &[
                ("csrf_token", browser.csrf.as_str()),
                ("url", "ftp://example.org/"),
            ],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let path = format!("/ui/webhooks/{endpoint}");
    let disabled = browser
        .post(&format!("{path}/disable"), &[("csrf_token", &browser.csrf)])
        .await;
    assert_eq!(disabled.status(), StatusCode::SEE_OTHER);
    let (_, state) = app
        .get(&riverside.key, &format!("/v1/webhook-endpoints/{endpoint}"))
        .await;
    assert_eq!(state["enabled"], false);
    let (_, page) = browser.page(&path).await;
    assert!(
        page.contains(&format!(r#"action="{path}/enable""#)),
        "{page}"
    );
    let enabled = browser
        .post(&format!("{path}/enable"), &[("csrf_token", &browser.csrf)])
        .await;
    assert_eq!(enabled.status(), StatusCode::SEE_OTHER);
    let (_, state) = app
        .get(&riverside.key, &format!("/v1/webhook-endpoints/{endpoint}"))
        .await;
    assert_eq!(state["enabled"], true);
    // Another organisation's endpoint cannot be switched off from here.
    let foreign = browser
        .post(
            &format!("/ui/webhooks/{theirs}/disable"),
            &[("csrf_token", &browser.csrf)],
        )
        .await;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    let (_, state) = app
        .get(&lakeside.key, &format!("/v1/webhook-endpoints/{theirs}"))
        .await;
    assert_eq!(state["enabled"], true);
}

/// A `multipart/form-data` body as a browser sends one: `fields` as text, `file` (field
/// `file`) when given.
fn multipart(boundary: &str, fields: &[(&str, &str)], file: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    if let Some((file_name, content)) = file {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"{file_name}\"\r\nContent-Type: text/csv\r\n\r\n{content}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    body.into_bytes()
}

/// The number in the `data-` attribute `name` of `html` (the first one).
fn data_number(html: &str, name: &str) -> String {
    let start = html
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + name.len()
        + 2;
    html[start..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_overview_counts_statuses_answers_and_places_answered_calls_on_the_contacts_clock() {
    let app = spawn_app().await;
    let riverside = clinic(&app, "Riverside", Value::Null).await;
    let lakeside = clinic(&app, "Lakeside", Value::Null).await;
    let enroll =
        |phone: &'static str, zone: &'static str, outcomes: Value| {
            let (app, key, template) = (&app, riverside.key.clone(), riverside.template);
            async move {
                app.enroll(&key, json!({
                "template_id": template,
                "contact": { "phone_number": phone, "time_zone": zone, "external_id": phone },
                "simulation": { "outcomes": outcomes },
            }))
            .await
            }
        };
    let honolulu = enroll("+15550100001", "Pacific/Honolulu", json!(["resolved"])).await;
    let chicago = enroll(
        "+15550100002",
        "America/Chicago",
        json!(["voicemail", "no-answer"]),
    )
    .await;
    run_until_ended(&app, &riverside.key, &[honolulu, chicago]).await;
    let paused = enroll("+15550100003", "America/Chicago", json!(["resolved"])).await;
    let (status, body) = app
        .post(
            &riverside.key,
            &format!("/v1/sequences/{paused}/pause"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    enroll("+15550100004", "America/Chicago", json!(["resolved"])).await;

    let browser = Browser::sign_in(&app.base, &riverside.key).await;
    let (status, html) = browser.page("/ui").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<h1>Overview</h1>"), "{html}");
    assert!(
        html.contains(r#"<a href="/ui" aria-current="page">Overview</a>"#),
        "the overview is the home and first in the navigation: {html}"
    );
    // Sequences by status.
    assert!(
        html.contains(r#"data-status="active" data-count="1""#),
        "{html}"
    );
    assert!(
        html.contains(r#"data-status="paused" data-count="1""#),
        "{html}"
    );
    assert!(
        html.contains(r#"data-status="ended" data-count="2""#),
        "{html}"
    );
    // Outcomes per day: three calls ended (resolved, voicemail, no-answer).
    assert!(html.contains(r#"<title id="outcomes-title">"#));
    assert!(
        html.contains("3 calls and texts ended in the last 30 days"),
        "{html}"
    );
    // One answered of three.
    assert_eq!(data_number(&html, "data-answer-rate"), "33.3");
    // The answered call sits in its Honolulu hour and weekday, not the UTC ones.
    let report = app.sequence(&riverside.key, honolulu).await;
    let started = report["outreach"][0]["call"]["started_at"]
        .as_str()
        .unwrap();
    let started = chrono::DateTime::parse_from_rfc3339(started).unwrap();
    let local = started.with_timezone(&chrono_tz::Pacific::Honolulu);
    let utc = started.with_timezone(&chrono::Utc);
    use chrono::{Datelike, Timelike};
    let cell = |weekday: u32, hour: u32| {
        format!(r#"data-weekday="{weekday}" data-hour="{hour}" data-count="#)
    };
    let local_cell = cell(local.weekday().num_days_from_monday(), local.hour());
    assert!(
        html.contains(&format!(r#"{local_cell}"1""#)),
        "{local_cell} in {html}"
    );
    let utc_cell = cell(utc.weekday().num_days_from_monday(), utc.hour());
    assert!(
        html.contains(&format!(r#"{utc_cell}"0""#)),
        "{utc_cell} in {html}"
    );
    assert_eq!(
        html.matches(r#"data-count="1""#).count(),
        3,
        "active, paused, one cell"
    );
    // Every chart has a text alternative.
    assert_eq!(
        html.matches(r#"role="img""#).count(),
        html.matches("<desc id=").count()
    );
    assert!(html.contains("Answered calls by weekday and hour as a table"));
    // No endpoint yet: the deliveries' empty state says what to do.
    assert!(
        html.contains("Add an endpoint on the Webhooks page"),
        "{html}"
    );
    // No patient data on the overview.
    assert!(!html.contains("+15550100001"));

    // Another organisation's overview has none of it.
    let theirs = Browser::sign_in(&app.base, &lakeside.key).await;
    let (_, html) = theirs.page("/ui").await;
    assert!(
        html.contains(r#"data-status="ended" data-count="0""#),
        "{html}"
    );
    assert!(
        html.contains("No answered call in the last 30 days."),
        "{html}"
    );
}

#[tokio::test]
async fn a_csv_upload_enrolls_good_rows_and_lists_bad_ones_by_line_once_per_file() {
    let app = spawn_app().await;
    let riverside = clinic(&app, "Riverside", Value::Null).await;
    let riverside_org = app
        .store
        .authenticate(&riverside.key)
        .await
        .unwrap()
        .unwrap();
    let lakeside = clinic(&app, "Lakeside", Value::Null).await;
    let (status, body) = app
        .post(
            &riverside.key,
            "/v1/suppressions",
            json!({ "phone_number": "+15550100006" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let browser = Browser::sign_in(&app.base, &riverside.key).await;
    let (_, templates) = browser.page("/ui/templates").await;
    assert!(
        templates.contains(
            r#"<form class="filters" method="post" action="/ui/templates/enroll" enctype="multipart/form-data">"#
        ),
        "{templates}"
    );
    assert!(templates.contains(r#"<label for="enroll-file">CSV file</label>"#));
    assert!(templates.contains(&format!(r#"<option value="{}">"#, riverside.template)));

    let csv = "phone_number,time_zone,name,external_id,visit\n\
               +15550100001,America/Chicago,Ann Lee,MRN-1,Monday\n\
               555-0142,America/Chicago,Bob Ray,MRN-2,Tuesday\n\
               +15550100003,Mars/Olympus_Mons,Cy Dunn,MRN-3,Wednesday\n\
               +15550100004,America/Chicago\n\
               +15550100005,America/Chicago,Di Park,MRN-5,Friday\n\
               +15550100006,America/Chicago,Ed Moss,MRN-6,Friday\n";
    let template = riverside.template.to_string();
    let upload = |csrf: &str| {
        multipart(
            "----clarionBoundary7",
            &[("csrf_token", csrf), ("template", template.as_str())],
            Some(("patients.csv", csv)),
        )
    };
    let response = browser
        .post_multipart(
            "/ui/templates/enroll",
            "----clarionBoundary7",
            upload(&browser.csrf),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert_eq!(data_number(&html, "data-rows"), "6", "{html}");
    assert_eq!(data_number(&html, "data-enrolled"), "2", "{html}");
    assert_eq!(data_number(&html, "data-rejected"), "4", "{html}");
    let row = |line: u32| {
        let start = html
            .find(&format!(r#"<tr data-line="{line}">"#))
            .unwrap_or_else(|| panic!("line {line} in {html}"));
        html[start..].split("</tr>").next().unwrap().to_owned()
    };
    assert!(
        row(3).contains("invalid_field") && row(3).contains("contact.phone_number"),
        "{}",
        row(3)
    );
    assert!(row(4).contains("contact.time_zone"), "{}", row(4));
    assert!(
        row(5).contains("invalid_csv") && row(5).contains("the row has 2 fields, the header 5"),
        "{}",
        row(5)
    );
    assert!(row(7).contains("<code>suppressed</code>"), "{}", row(7));
    for value in ["555-0142", "Bob Ray", "Mars/Olympus_Mons", "Ed Moss"] {
        assert!(
            !html.contains(value),
            "no cell value on the result page: {value}"
        );
    }
    let stored = app
        .store
        .list_sequences(riverside_org, None, None, 50)
        .await
        .unwrap();
    let numbers: Vec<&str> = stored.iter().map(|s| s.phone_number.as_str()).collect();
    assert_eq!(numbers, ["+15550100001", "+15550100005"]);
    assert_eq!(stored[0].contact["external_id"], "MRN-1");
    assert_eq!(stored[0].contact["name"], "Ann Lee");
    assert_eq!(stored[0].variables, json!({ "visit": "Monday" }));

    // The same file again (a resubmitted form): nobody is enrolled twice.
    let again = browser
        .post_multipart(
            "/ui/templates/enroll",
            "----clarionBoundary7",
            upload(&browser.csrf),
        )
        .await;
    let html = again.text().await.unwrap();
    assert_eq!(data_number(&html, "data-enrolled"), "0", "{html}");
    assert_eq!(data_number(&html, "data-existing"), "2", "{html}");
    let count = |app: &TestApp| {
        let store = app.store.clone();
        async move {
            store
                .list_sequences(riverside_org, None, None, 50)
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(count(&app).await, 2);

    // Without the CSRF token: refused, nothing read.
    let forged = browser
        .post_multipart(
            "/ui/templates/enroll",
            "b",
            multipart(
                "b",
                &[("template", template.as_str())],
                Some(("p.csv", csv)),
            ),
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // Another organisation's template: 404.
    let foreign = lakeside.template.to_string();
    let response = browser.upload_csv(&foreign, csv).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // A header without a required column: the whole file is refused, saying why.
    let response = browser
        .upload_csv(&template, "phone_number,name\n+15550100009,Flo\n")
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("missing required column `time_zone`")
    );
    // More rows than a batch takes: refused whole.
    let mut big = String::from("phone_number,time_zone\n");
    for i in 0..1001 {
        big.push_str(&format!("+1555030{i:04},America/Chicago\n"));
    }
    let response = browser.upload_csv(&template, &big).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A body over the API's 2 MiB: refused before it is read whole.
    let response = browser
        .upload_csv(&template, &"x".repeat(2 * 1024 * 1024 + 1))
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(count(&app).await, 2);
}
