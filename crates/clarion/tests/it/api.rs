//! The HTTP API's contract, in process: tenant isolation on every id-bearing route,
//! authentication, precise JSON errors for bad input, the SSRF guard at endpoint creation
//! and again at attempt time, and the endpoint lifecycle.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::support::{Answer, AppOptions, TestApp, TestReceiver, spawn_app, spawn_app_with};
use clarion_delivery::ssrf::SsrfPolicy;
use clarion_webhooks::examples;
use reqwest::Method;
use serde_json::{Value, json};

/// Asserts an error answer: the status, and a body that is exactly
/// `{"error": {"code", "message", "field"}}` with the given code and field.
#[track_caller]
fn assert_error(
    (status, body): &(u16, Value),
    expected_status: u16,
    code: &str,
    field: Option<&str>,
) {
    assert_eq!(*status, expected_status, "{body}");
    let top = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(
        top.keys().collect::<Vec<_>>(),
        ["error"],
        "unexpected top-level keys: {body}"
    );
    let error = body["error"].as_object().unwrap();
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "field", "message"], "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap().is_empty(),
        "{body}"
    );
    match field {
        Some(field) => assert_eq!(body["error"]["field"], field, "{body}"),
        None => assert_eq!(body["error"]["field"], Value::Null, "{body}"),
    }
}

/// A raw body: its content type and text.
type RawBody<'a> = (&'a str, &'a str);

/// A request with full control over the Authorization header, content type and raw body.
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<RawBody<'_>>,
) -> (u16, Value) {
    let mut request = app.http.request(method, format!("{}{path}", app.base));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some((content_type, body)) = body {
        request = request
            .header("content-type", content_type)
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer {status} is not JSON: {text:?}"));
    (status, value)
}

fn data(body: &Value) -> &Vec<Value> {
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {body}"))
}

#[tokio::test]
async fn every_route_answers_404_for_another_organisations_ids() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let (org_a, key_a) = app.org("Riverside").await;
    let (_org_b, key_b) = app.org("Lakeside").await;
    let (endpoint, secret_a) = app.endpoint(&key_a, &receiver.url).await;
    app.enqueue(org_a, &examples::call_only()).await;
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 1);
    let deliveries = app.deliveries(&key_a).await;
    assert_eq!(deliveries.len(), 1);
    let delivery = deliveries[0]["id"].as_i64().unwrap();
    assert_eq!(deliveries[0]["status"], "delivered");
    let (_, before) = app
        .get(&key_a, &format!("/v1/webhook-endpoints/{endpoint}"))
        .await;

    // Sanity: the same routes work with A's key, so a 404 below is about ownership.
    assert_eq!(
        app.get(&key_a, &format!("/v1/webhook-deliveries/{delivery}"))
            .await
            .0,
        200
    );

    let ep = format!("/v1/webhook-endpoints/{endpoint}");
    let dl = format!("/v1/webhook-deliveries/{delivery}");
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, ep.clone(), None),
        (
            Method::PATCH,
            ep.clone(),
            Some(json!({ "url": "https://93.184.216.34/stolen", "enabled": false })),
        ),
        (
            Method::PATCH,
            ep.clone(),
            Some(json!({ "description": "x" })),
        ),
        (Method::GET, format!("{ep}/secret"), None),
        (Method::POST, format!("{ep}/rotate-secret"), Some(json!({}))),
        (Method::POST, format!("{ep}/test"), Some(json!({}))),
        (Method::DELETE, ep.clone(), None),
        (Method::GET, dl.clone(), None),
        (Method::POST, format!("{dl}/retry"), Some(json!({}))),
    ];
    for (method, path, body) in attempts {
        let answer = app.request(method.clone(), &key_b, &path, body).await;
        assert_eq!(answer.0, 404, "{method} {path} with B's key: {}", answer.1);
        assert_error(&answer, 404, "not_found", None);
    }

    for path in [
        "/v1/webhook-endpoints".to_owned(),
        "/v1/webhook-deliveries".to_owned(),
        format!("/v1/webhook-deliveries?endpoint_id={endpoint}"),
        "/v1/reports".to_owned(),
    ] {
        let (status, body) = app.get(&key_b, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(data(&body).is_empty(), "B sees A's data at {path}: {body}");
    }
    // A does see its own data on those lists.
    let (_, reports_a) = app.get(&key_a, "/v1/reports").await;
    assert_eq!(data(&reports_a).len(), 1);

    // A's endpoint, secret and deliveries are untouched.
    let (status, after) = app.get(&key_a, &ep).await;
    assert_eq!(status, 200, "B's DELETE removed A's endpoint: {after}");
    assert_eq!(after, before, "B's attempts changed A's endpoint");
    assert_eq!(after["url"], receiver.url);
    assert_eq!(after["enabled"], true);
    let (_, secret) = app.get(&key_a, &format!("{ep}/secret")).await;
    assert_eq!(secret["secret"], secret_a, "B rotated A's secret");
    let deliveries = app.deliveries(&key_a).await;
    assert_eq!(deliveries.len(), 1, "B's test created a delivery for A");
    assert_eq!(
        deliveries[0]["status"], "delivered",
        "B's retry requeued it"
    );
    assert_eq!(deliveries[0]["attempt_count"], 1);
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 0);
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn requests_without_a_valid_key_are_401_json() {
    let app = spawn_app().await;
    let (_org, key) = app.org("Riverside").await;
    let json_body = Some((
        "application/json",
        r#"{"url":"https://93.184.216.34/hooks"}"#,
    ));
    let routes = [
        (Method::GET, "/v1/webhook-endpoints", None),
        (Method::POST, "/v1/webhook-endpoints", json_body),
        (Method::GET, "/v1/webhook-deliveries", None),
        (Method::GET, "/v1/reports", None),
    ];
    let basic = format!("Basic {key}");
    let authorizations: [Option<&str>; 5] = [
        None,
        Some("Bearer not-a-real-key"),
        Some("Bearer "),
        Some("Basic dXNlcjpwYXNzd29yZA=="),
        Some(basic.as_str()),
    ];
    for (method, path, body) in &routes {
        for authorization in authorizations {
            let answer = raw(&app, method.clone(), path, authorization, *body).await;
            assert_eq!(
                answer.0, 401,
                "{method} {path} with {authorization:?}: {}",
                answer.1
            );
            assert_error(&answer, 401, "unauthorized", None);
        }
    }
    // Nothing was created by the refused POSTs; the real key works.
    let (status, body) = app.get(&key, "/v1/webhook-endpoints").await;
    assert_eq!(status, 200);
    assert!(data(&body).is_empty(), "{body}");
}

#[tokio::test]
async fn bad_input_gets_a_precise_json_error_not_a_crash() {
    let app = spawn_app().await;
    let (_org, key) = app.org("Riverside").await;
    let bearer = format!("Bearer {key}");
    let auth = Some(bearer.as_str());
    let create = |content_type: &'static str, body: &'static str| {
        raw(
            &app,
            Method::POST,
            "/v1/webhook-endpoints",
            auth,
            Some((content_type, body)),
        )
    };

    let malformed = create("application/json", r#"{"url": "https://93.184.216.34/"#).await;
    assert_error(&malformed, 400, "invalid_json", None);
    let not_json = create("text/plain", r#"{"url":"https://93.184.216.34/"}"#).await;
    assert_error(&not_json, 415, "unsupported_media_type", None);
    let missing_url = create("application/json", r#"{"description":"no url"}"#).await;
    assert_error(&missing_url, 422, "invalid_field", Some("url"));
    let unknown = create(
        "application/json",
        r#"{"url":"https://93.184.216.34/","colour":"blue"}"#,
    )
    .await;
    assert_error(&unknown, 422, "invalid_field", Some("colour"));
    let not_a_string = create("application/json", r#"{"url":5}"#).await;
    assert_error(&not_a_string, 422, "invalid_field", Some("url"));
    let empty = create("application/json", "").await;
    assert_error(&empty, 400, "invalid_json", None);
    let null = create("application/json", "null").await;
    assert_error(&null, 422, "invalid_field", None);
    let credentials = create(
        "application/json",
        r#"{"url":"https://user:pw@93.184.216.34/"}"#,
    )
    .await;
    assert_error(&credentials, 422, "invalid_field", Some("url"));
    let relative = create("application/json", r#"{"url":"/hooks"}"#).await;
    assert_error(&relative, 422, "invalid_field", Some("url"));
    // None of that created anything.
    let (_, list) = app.get(&key, "/v1/webhook-endpoints").await;
    assert!(data(&list).is_empty(), "{list}");

    let bogus_status = app.get(&key, "/v1/webhook-deliveries?status=bogus").await;
    assert_error(&bogus_status, 422, "invalid_field", Some("status"));
    for path in [
        "/v1/webhook-deliveries?limit=0",
        "/v1/webhook-deliveries?limit=100000",
        "/v1/webhook-endpoints?limit=0",
        "/v1/reports?limit=100000",
    ] {
        let answer = app.get(&key, path).await;
        assert_error(&answer, 422, "invalid_field", Some("limit"));
    }
    for path in ["/v1/webhook-deliveries?after=abc", "/v1/reports?after=abc"] {
        let answer = app.get(&key, path).await;
        assert_error(&answer, 422, "invalid_field", Some("after"));
    }

    for (path, field) in [
        ("/v1/webhook-deliveries?limit=-1", "limit"),
        ("/v1/webhook-deliveries?endpoint_id=abc", "endpoint_id"),
        ("/v1/webhook-deliveries?colour=blue", "colour"),
    ] {
        let answer = app.get(&key, path).await;
        assert_error(&answer, 422, "invalid_field", Some(field));
    }
    for path in [
        "/v1/webhook-endpoints/notanumber",
        "/v1/webhook-endpoints/99999999999999999999",
        "/v1/webhook-deliveries/1.5",
    ] {
        let answer = app.get(&key, path).await;
        assert_error(&answer, 404, "not_found", None);
    }
    let unknown_route = app.get(&key, "/v1/no-such-thing").await;
    assert_error(&unknown_route, 404, "not_found", None);
    let wrong_method = app
        .request(Method::PUT, &key, "/v1/webhook-endpoints", Some(json!({})))
        .await;
    assert_error(&wrong_method, 405, "method_not_allowed", None);
    let wrong_method = app
        .request(Method::DELETE, &key, "/v1/webhook-deliveries", None)
        .await;
    assert_error(&wrong_method, 405, "method_not_allowed", None);
}

#[tokio::test]
async fn endpoints_on_internal_addresses_are_refused_outside_dev_mode() {
    let app = spawn_app_with(AppOptions {
        api_ssrf: SsrfPolicy::default(),
        ..AppOptions::default()
    })
    .await;
    let (_org, key) = app.org("Riverside").await;
    for url in [
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://10.0.0.5/",
        "https://172.16.0.1/",
        "https://192.168.1.1/",
        "https://169.254.1.1/",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/",
        "https://[fd00::1]/",
        "https://[fe80::1]/",
        "https://224.0.0.1/",
        "https://240.0.0.1/",
        "https://0.0.0.0/",
        "https://[::ffff:10.0.0.1]/",
        "https://[64:ff9b::a00:1]/",
        "https://[2002:a00:1::]/",
        "https://localhost/",
        "http://example.com/",
    ] {
        let answer = app
            .post(&key, "/v1/webhook-endpoints", json!({ "url": url }))
            .await;
        assert_eq!(answer.0, 422, "{url} was accepted: {}", answer.1);
        assert_error(&answer, 422, "target_not_allowed", Some("url"));
    }
    let (_, list) = app.get(&key, "/v1/webhook-endpoints").await;
    assert!(
        data(&list).is_empty(),
        "a refused endpoint was stored: {list}"
    );

    // A public IP literal needs no DNS and is accepted.
    let (id, _) = app.endpoint(&key, "https://93.184.216.34/hooks").await;
    let path = format!("/v1/webhook-endpoints/{id}");
    let answer = app
        .request(
            Method::PATCH,
            &key,
            &path,
            Some(json!({ "url": "https://127.0.0.1/hooks" })),
        )
        .await;
    assert_error(&answer, 422, "target_not_allowed", Some("url"));
    let (_, endpoint) = app.get(&key, &path).await;
    assert_eq!(endpoint["url"], "https://93.184.216.34/hooks");
}

#[tokio::test]
async fn connections_are_checked_again_at_attempt_time() {
    let mut options = AppOptions::default();
    let receiver = TestReceiver::start(Answer::Status(204)).await;
    let port = receiver.addr.port();
    options.dispatcher.ssrf = SsrfPolicy {
        allow_private: false,
        allow_http: true,
        static_hosts: HashMap::from([(
            "rebind.test".to_owned(),
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        )]),
        // The receiver's port is allowed, so that the address checks are what refuses.
        allowed_ports: vec![port],
    };
    let app = spawn_app_with(options).await;
    let (org, key) = app.org("Riverside").await;

    // The API (dev policy) accepts a name that now resolves to loopback.
    let (rebind, _) = app
        .endpoint(&key, &format!("http://rebind.test:{port}/hooks"))
        .await;
    app.enqueue(org, &examples::call_only()).await;
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 1);
    let deliveries = app.deliveries(&key).await;
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery["endpoint_id"], rebind);
    assert_eq!(delivery["status"], "pending", "{delivery}");
    assert_eq!(delivery["attempt_count"], 1);
    assert!(delivery["next_attempt_at"].is_string(), "{delivery}");
    assert_eq!(
        delivery["attempts"][0]["error"], "ssrf-blocked",
        "{delivery}"
    );
    assert_eq!(delivery["attempts"][0]["status_code"], Value::Null);
    assert!(
        receiver.received().is_empty(),
        "the blocked name was reached"
    );

    // An IP-literal loopback URL never reaches the resolver; it is blocked all the same.
    let (status, _) = app
        .request(
            Method::PATCH,
            &key,
            &format!("/v1/webhook-endpoints/{rebind}"),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 200);
    let (literal, _) = app
        .endpoint(&key, &format!("http://127.0.0.1:{port}/hooks"))
        .await;
    app.enqueue(org, &examples::cancelled()).await;
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 1);
    let (_, page) = app
        .get(
            &key,
            &format!("/v1/webhook-deliveries?endpoint_id={literal}"),
        )
        .await;
    let deliveries = data(&page);
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery["status"], "pending", "{delivery}");
    assert_eq!(
        delivery["attempts"][0]["error"], "ssrf-blocked",
        "{delivery}"
    );
    assert_eq!(delivery["attempts"][0]["status_code"], Value::Null);
    assert!(
        receiver.received().is_empty(),
        "the loopback literal was reached"
    );
}

#[tokio::test]
async fn endpoint_crud_round_trips() {
    let app = spawn_app().await;
    let receiver = TestReceiver::start(Answer::Status(500)).await;
    let (org, key) = app.org("Riverside").await;

    let (status, created) = app
        .post(
            &key,
            "/v1/webhook-endpoints",
            json!({ "url": receiver.url, "description": "front desk" }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(
        created["secret"].as_str().unwrap().starts_with("whsec_"),
        "{created}"
    );
    assert_eq!(created["enabled"], true);
    assert_eq!(created["url"], receiver.url);
    assert_eq!(created["description"], "front desk");
    assert_eq!(created["disabled_reason"], Value::Null);
    let id = created["id"].as_i64().unwrap();
    let path = format!("/v1/webhook-endpoints/{id}");

    let (status, fetched) = app.get(&key, &path).await;
    assert_eq!(status, 200);
    assert!(
        fetched.get("secret").is_none(),
        "GET leaks the secret: {fetched}"
    );
    assert_eq!(fetched["id"], id);
    assert_eq!(fetched["url"], receiver.url);
    assert_eq!(fetched["description"], "front desk");
    assert_eq!(fetched["enabled"], true);

    // Paging one at a time walks all three endpoints, in order, once each.
    let (second, _) = app
        .endpoint(&key, &format!("http://{}/two", receiver.addr))
        .await;
    let (third, _) = app
        .endpoint(&key, &format!("http://{}/three", receiver.addr))
        .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let query = match &cursor {
            Some(after) => format!("/v1/webhook-endpoints?limit=1&after={after}"),
            None => "/v1/webhook-endpoints?limit=1".to_owned(),
        };
        let (status, page) = app.get(&key, &query).await;
        assert_eq!(status, 200, "{page}");
        let items = data(&page);
        assert!(items.len() <= 1, "limit=1 returned {}", items.len());
        for item in items {
            assert!(item.get("secret").is_none(), "a list leaks secrets: {item}");
            seen.push(item["id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, [id, second, third]);

    // A pending delivery for each endpoint (the receiver answers 500).
    app.enqueue(org, &examples::call_only()).await;
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 3);

    let (status, patched) = app
        .request(
            Method::PATCH,
            &key,
            &path,
            Some(json!({ "description": "closed for lunch", "enabled": false })),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["description"], "closed for lunch");
    assert_eq!(patched["enabled"], false);
    assert_eq!(
        patched["url"], receiver.url,
        "PATCH changed an absent field"
    );
    assert!(patched.get("secret").is_none());
    let (_, fetched) = app.get(&key, &path).await;
    assert_eq!(fetched["description"], "closed for lunch");
    assert_eq!(fetched["enabled"], false);

    // A disabled endpoint gets no delivery for a new report; the enabled ones do.
    app.enqueue(org, &examples::cancelled()).await;
    let deliveries = app.deliveries(&key).await;
    let to_first: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["endpoint_id"] == id)
        .collect();
    assert_eq!(to_first.len(), 1, "a disabled endpoint got a delivery");
    assert_eq!(to_first[0]["status"], "pending");
    assert_eq!(
        deliveries
            .iter()
            .filter(|d| d["endpoint_id"] == second || d["endpoint_id"] == third)
            .count(),
        4
    );
    let pending = to_first[0]["id"].as_i64().unwrap();

    let (status, body) = app.request(Method::DELETE, &key, &path, None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(body, Value::Null, "204 with a body");
    assert_error(&app.get(&key, &path).await, 404, "not_found", None);
    assert_error(
        &app.request(Method::DELETE, &key, &path, None).await,
        404,
        "not_found",
        None,
    );
    let (_, list) = app.get(&key, "/v1/webhook-endpoints").await;
    let ids: Vec<i64> = data(&list)
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [second, third]);
    let (status, delivery) = app
        .get(&key, &format!("/v1/webhook-deliveries/{pending}"))
        .await;
    assert_eq!(status, 200, "{delivery}");
    assert_eq!(delivery["status"], "failed", "{delivery}");
    assert_eq!(delivery["next_attempt_at"], Value::Null);
}

/// `GET {base}/metrics` with an optional Authorization header: (status, body text).
async fn scrape(app: &TestApp, base: &str, authorization: Option<&str>) -> (u16, String) {
    let mut request = app.http.get(format!("{base}/metrics"));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_answer_only_the_operator_token_when_one_is_set() {
    let token = "operator-token-for-metrics-0001";
    let app = spawn_app_with(AppOptions {
        operator: clarion_server::OperatorAccess {
            metrics_token: Some(clarion_server::OperatorToken::new(token)),
            metrics_on_admin_listener: false,
        },
        ..AppOptions::default()
    })
    .await;
    let (_org, key) = app.org("Riverside").await;
    for authorization in [
        None,
        Some("Bearer wrong-token"),
        Some(format!("Bearer {key}").as_str()), // a tenant's API key is not the operator's
        Some("Bearer "),
        Some(token), // no scheme
    ] {
        let (status, body) = scrape(&app, &app.base, authorization).await;
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_error(&(status, body.clone()), 401, "unauthorized", None);
        assert!(!body.to_string().contains("clarion_"), "{body}");
    }
    let (status, text) = scrape(&app, &app.base, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("clarion_webhook_queue_depth"), "{text}");
}

#[tokio::test]
async fn metrics_move_to_the_admin_listener_when_one_is_configured() {
    let app = spawn_app_with(AppOptions {
        operator: clarion_server::OperatorAccess {
            metrics_token: None,
            metrics_on_admin_listener: true,
        },
        ..AppOptions::default()
    })
    .await;
    let (status, body) = scrape(&app, &app.base, None).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_error(&(status, body), 404, "not_found", None);
    let admin = app.admin_base.clone().unwrap();
    let (status, text) = scrape(&app, &admin, None).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("clarion_webhook_queue_depth"), "{text}");
    // The operator listener serves nothing of the tenant API.
    let (_org, key) = app.org("Riverside").await;
    let answer = app
        .http
        .get(format!("{admin}/v1/suppressions"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 404);
}

#[tokio::test]
async fn every_refused_target_gets_the_same_answer_whatever_the_reason() {
    let app = spawn_app_with(AppOptions {
        api_ssrf: SsrfPolicy {
            static_hosts: HashMap::from([(
                "intranet.test".to_owned(),
                vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))],
            )]),
            allowed_ports: vec![8443],
            ..SsrfPolicy::default()
        },
        ..AppOptions::default()
    })
    .await;
    let (_org, key) = app.org("Riverside").await;
    let mut answers = Vec::new();
    for url in [
        "https://intranet.test/hooks", // a name resolving to a private address
        "https://127.0.0.1/hooks",     // a loopback literal
        "https://169.254.169.254/latest", // cloud metadata
        "https://localhost/hooks",     // a reserved name
        "https://8.8.8.8:6379/",       // a public address, a port that is no receiver's
        "https://example.com:22/hooks", // a name, the same
        "http://example.com/hooks",    // plain http
    ] {
        let answer = app
            .post(&key, "/v1/webhook-endpoints", json!({ "url": url }))
            .await;
        assert_error(&answer, 422, "target_not_allowed", Some("url"));
        answers.push((url, answer.1));
    }
    for (url, body) in &answers[1..] {
        assert_eq!(
            body, &answers[0].1,
            "{url} is refused differently from {}",
            answers[0].0
        );
    }
    assert!(!answers[0].1.to_string().contains("private"));

    // 443, 80 and the configured ports are accepted, on create and on change.
    let (id, _) = app.endpoint(&key, "https://93.184.216.34/hooks").await;
    app.endpoint(&key, "https://93.184.216.34:80/hooks").await;
    app.endpoint(&key, "https://93.184.216.34:8443/hooks").await;
    let path = format!("/v1/webhook-endpoints/{id}");
    let answer = app
        .request(
            Method::PATCH,
            &key,
            &path,
            Some(json!({ "url": "https://93.184.216.34:6379/" })),
        )
        .await;
    assert_eq!(answer.1, answers[0].1);
}

#[tokio::test]
async fn a_stored_url_on_a_port_that_is_not_allowed_is_refused_at_attempt_time() {
    let mut options = AppOptions::default();
    options.dispatcher.ssrf = SsrfPolicy::default();
    let app = spawn_app_with(options).await;
    let (org, key) = app.org("Riverside").await;
    // The API here runs the dev policy, as an endpoint stored before the port rule existed.
    app.endpoint(&key, "https://93.184.216.34:6379/").await;
    app.enqueue(org, &examples::call_only()).await;
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 1);
    let deliveries = app.deliveries(&key).await;
    let attempt = &deliveries[0]["attempts"][0];
    assert_eq!(attempt["error"], "ssrf-blocked", "{attempt}");
    assert_eq!(attempt["status_code"], Value::Null);
}

#[tokio::test]
async fn only_a_short_excerpt_of_an_answer_is_kept_and_none_when_switched_off() {
    let long_answer = "x".repeat(10_000);
    let receiver = TestReceiver::start(Answer::StatusWithBody(400, long_answer.clone())).await;
    let app = spawn_app().await;
    let (org, key) = app.org("Riverside").await;
    app.endpoint(&key, &receiver.url).await;
    app.enqueue(org, &examples::call_only()).await;
    app.dispatcher.run_due_now().await.unwrap();
    let deliveries = app.deliveries(&key).await;
    let excerpt = deliveries[0]["attempts"][0]["response_body"]
        .as_str()
        .unwrap();
    assert_eq!(
        excerpt,
        &long_answer[..clarion_delivery::RESPONSE_EXCERPT_LIMIT]
    );
    assert_eq!(excerpt.len(), 256);

    let mut options = AppOptions::default();
    options.dispatcher.store_response_excerpt = false;
    let app = spawn_app_with(options).await;
    let (org, key) = app.org("Riverside").await;
    app.endpoint(&key, &receiver.url).await;
    app.enqueue(org, &examples::call_only()).await;
    app.dispatcher.run_due_now().await.unwrap();
    let deliveries = app.deliveries(&key).await;
    let attempt = &deliveries[0]["attempts"][0];
    assert_eq!(attempt["status_code"], 400, "{attempt}");
    assert_eq!(attempt["response_body"], Value::Null, "{attempt}");
}

/// The input strictness a hostile or sloppy client meets: one JSON object per body and nothing
/// after it, never an array read as an object by position, the media type matched exactly,
/// the auth scheme in any case, an oversized body refused as 413 with the JSON error, names
/// counted in characters, and durations bounded so every timestamp stays RFC 3339.
#[tokio::test]
async fn input_is_read_strictly() {
    let app = spawn_app().await;
    let (_org, key) = app.org("Riverside").await;
    let bearer = format!("Bearer {key}");
    let auth = Some(bearer.as_str());
    let send = |method: Method, path: &'static str, content_type: &'static str, body: String| {
        let app = &app;
        async move {
            let body: &'static str = Box::leak(body.into_boxed_str());
            raw(app, method, path, auth, Some((content_type, body))).await
        }
    };
    let endpoint = r#"{"url":"https://93.184.216.34/"}"#;

    let trailing = send(
        Method::POST,
        "/v1/webhook-endpoints",
        "application/json",
        format!("{endpoint} {{\"url\":\"https://93.184.216.34/2\"}}"),
    )
    .await;
    assert_error(&trailing, 400, "invalid_json", None);

    // `[null, null]` would clear both caps if read as an object by position.
    let (_, before) = app.get(&key, "/v1/organization").await;
    let array = send(
        Method::PATCH,
        "/v1/organization",
        "application/json",
        "[null,null]".to_owned(),
    )
    .await;
    assert_error(&array, 422, "invalid_field", None);
    let (_, after) = app.get(&key, "/v1/organization").await;
    assert_eq!(before, after, "a refused body changes nothing");

    // The same one level down: `contact_caps` as an array of its fields by position.
    let (status, set) = app
        .patch(
            &key,
            "/v1/organization",
            json!({ "contact_caps": { "per_day": 2, "per_week": 5 } }),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let nested = send(
        Method::PATCH,
        "/v1/organization",
        "application/json",
        r#"{"contact_caps":[null,null]}"#.to_owned(),
    )
    .await;
    assert_error(&nested, 422, "invalid_field", Some("contact_caps"));
    let (_, after_nested) = app.get(&key, "/v1/organization").await;
    assert_eq!(after_nested, set, "the caps are untouched");

    let lookalike = send(
        Method::POST,
        "/v1/webhook-endpoints",
        "application/jsonx",
        endpoint.to_owned(),
    )
    .await;
    assert_error(&lookalike, 415, "unsupported_media_type", None);
    let with_charset = send(
        Method::POST,
        "/v1/webhook-endpoints",
        "Application/JSON; charset=utf-8",
        endpoint.to_owned(),
    )
    .await;
    assert_eq!(with_charset.0, 201, "{}", with_charset.1);

    for scheme in ["bearer", "BEARER"] {
        let header = format!("{scheme} {key}");
        let answer = raw(
            &app,
            Method::GET,
            "/v1/webhook-endpoints",
            Some(&header),
            None,
        )
        .await;
        assert_eq!(answer.0, 200, "{scheme}: {}", answer.1);
    }

    let huge = format!(
        r#"{{"url":"https://93.184.216.34/","description":"{}"}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    let too_large = send(
        Method::POST,
        "/v1/webhook-endpoints",
        "application/json",
        huge,
    )
    .await;
    assert_error(&too_large, 413, "payload_too_large", None);

    // 200 characters of three bytes each are a valid name; 201 are not.
    let name = |n: usize| "é".repeat(n);
    let assistant = |name: String| {
        serde_json::json!({ "name": name, "channel": "call", "config": {} }).to_string()
    };
    let ok = send(
        Method::POST,
        "/v1/assistants",
        "application/json",
        assistant(name(200)),
    )
    .await;
    assert_eq!(ok.0, 201, "{}", ok.1);
    let long = send(
        Method::POST,
        "/v1/assistants",
        "application/json",
        assistant(name(201)),
    )
    .await;
    assert_error(&long, 422, "invalid_field", Some("name"));

    let assistant_id = ok.1["id"].clone();
    let template = serde_json::json!({
        "name": "Forever",
        "steps": [{ "type": "call", "assistant_id": assistant_id, "delay": "100000000d" }],
    })
    .to_string();
    let unbounded = send(
        Method::POST,
        "/v1/sequence-templates",
        "application/json",
        template,
    )
    .await;
    assert_error(&unbounded, 422, "invalid_field", Some("steps[0].delay"));
}
