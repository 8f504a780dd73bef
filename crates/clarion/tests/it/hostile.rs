//! Hostile and broken clients against the real listener (issue 14, defect 1): a raw TCP
//! client that never finishes its headers, one whose body stalls, one that idles on a
//! kept-alive connection, and more connections than the server serves at once. Each is
//! bounded by the `[server]` limits, shortened here so that the tests are quick.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{self, AppOptions, DEADLINE, TestApp};

/// A limit far beyond any test's run, for the clocks a test does not exercise.
const NEVER: Duration = Duration::from_secs(3600);

async fn app_with(limits: clarion_server::ServerLimits) -> TestApp {
    support::spawn_app_with(AppOptions {
        server: limits,
        ..AppOptions::default()
    })
    .await
}

fn limits(header: Duration, body: Duration, idle: Duration) -> clarion_server::ServerLimits {
    clarion_server::ServerLimits {
        header_timeout: header,
        body_timeout: body,
        idle_timeout: idle,
        max_connections: 4096,
    }
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (end of stream or reset), failing after
/// [`DEADLINE`]. Answers what was read and how long the server took to close.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(DEADLINE, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the server still held the connection open after {DEADLINE:?}"
    );
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// Reads one response (head and `Content-Length` body) from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if received.len() >= head_end + 4 + length {
                return text;
            }
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed mid-response: {text}");
        received.extend_from_slice(&chunk[..n]);
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: clarion\r\n\r\n";

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed_at_the_header_timeout() {
    let app = app_with(limits(Duration::from_millis(300), NEVER, NEVER)).await;

    // Half a request: the headers never end (a slowloris client).
    let mut half_sent = connect(&app).await;
    half_sent
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: clarion\r\nX-Slow: 1")
        .await
        .unwrap();
    let (answer, took) = read_until_closed(&mut half_sent).await;
    assert!(!answer.contains("200"), "no request was served: {answer}");
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");

    // A connection that sends nothing at all owes its first request's head as well.
    let mut silent = connect(&app).await;
    let (answer, _) = read_until_closed(&mut silent).await;
    assert!(!answer.contains("200"), "{answer}");

    // The listener still serves a well-behaved client.
    let (status, _) = app.get("unused", "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_its_connection_closed() {
    let app = app_with(limits(NEVER, Duration::from_millis(300), NEVER)).await;
    let (_org, key) = app.org("Riverside").await;

    let mut stalled = connect(&app).await;
    // Content-Length promises 200 bytes; 14 arrive, then nothing.
    let request = format!(
        "POST /v1/sequences HTTP/1.1\r\nHost: clarion\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"template_id\""
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

/// The header and idle clocks stop while a request is in the handler: a body that takes longer
/// than either (but not than the body timeout) is still read and answered.
#[tokio::test]
async fn a_request_in_progress_is_not_cut_by_the_header_or_idle_clock() {
    let short = Duration::from_millis(200);
    let app = app_with(limits(short, NEVER, short)).await;
    let (_org, key) = app.org("Riverside").await;
    let body = br#"{"url": "http://127.0.0.1:9/hook"}"#;
    let mut slow = connect(&app).await;
    let head = format!(
        "POST /v1/webhook-endpoints HTTP/1.1\r\nHost: clarion\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..10]).await.unwrap();
    // Three times either clock passes and the connection is still open...
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(3 * short, slow.read(&mut byte)).await;
    assert!(
        waited.is_err(),
        "the connection was closed mid-body: {waited:?}"
    );
    // ...and the rest of the body is read and answered.
    slow.write_all(&body[10..]).await.unwrap();
    let answer = tokio::time::timeout(DEADLINE, read_response(&mut slow))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 201 "), "{answer}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_idle_timeout() {
    let app = app_with(limits(NEVER, NEVER, Duration::from_millis(300))).await;

    let mut kept_alive = connect(&app).await;
    kept_alive.write_all(HEALTHZ).await.unwrap();
    let answer = read_response(&mut kept_alive).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The connection stays open for another request until it has been idle too long; the
    // header clock (an hour here) is not what closes it.
    let (rest, took) = read_until_closed(&mut kept_alive).await;
    assert_eq!(rest, "");
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_not_served_until_one_closes() {
    let app = app_with(clarion_server::ServerLimits {
        max_connections: 2,
        ..limits(NEVER, NEVER, NEVER)
    })
    .await;

    // Two kept-alive connections, each served once: the limit is reached.
    let mut first = connect(&app).await;
    first.write_all(HEALTHZ).await.unwrap();
    assert!(read_response(&mut first).await.starts_with("HTTP/1.1 200"));
    let mut second = connect(&app).await;
    second.write_all(HEALTHZ).await.unwrap();
    assert!(read_response(&mut second).await.starts_with("HTTP/1.1 200"));

    // A third connects (the kernel's backlog takes it) but is not served...
    let mut third = connect(&app).await;
    third.write_all(HEALTHZ).await.unwrap();
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(
        waited.is_err(),
        "a connection past the limit was served: {waited:?}"
    );
    // ...until one of the two closes.
    drop(first);
    let answer = tokio::time::timeout(DEADLINE, read_response(&mut third))
        .await
        .expect("the waiting connection is served once another closes");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Issue 14, defect 4 (HTTP layer): what hyper refuses before routing answered with the API's
/// JSON error body, not an empty one.
#[tokio::test]
async fn requests_refused_before_routing_get_the_json_error_body() {
    let app = app_with(limits(NEVER, NEVER, NEVER)).await;
    let long_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: clarion\r\nX-Big: {}\r\n\r\n",
        "h".repeat(70 * 1024)
    );
    let long_target = format!(
        "GET /v1/assistants?after={} HTTP/1.1\r\nHost: clarion\r\n\r\n",
        "1".repeat(10 * 1024)
    );
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            b"NOT HTTP AT ALL\r\n\r\n".to_vec(),
            "400",
            "invalid_request",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: clarion\r\nBad Header\r\n\r\n".to_vec(),
            "400",
            "invalid_request",
        ),
        (long_header.into_bytes(), "431", "headers_too_large"),
        (long_target.into_bytes(), "414", "uri_too_long"),
    ];
    for (request, status, code) in cases {
        let mut stream = connect(&app).await;
        // The server may answer and close before it has read all of a large request.
        let _ = stream.write_all(&request).await;
        let answer = read_response(&mut stream).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{code}: {answer}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{answer}"
        );
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["error"]["code"], code, "{answer}");
        assert!(error["error"]["message"].is_string(), "{answer}");
    }
    // Ordinary answers are untouched, including a router 4xx on a kept-alive connection.
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /v1/assistants HTTP/1.1\r\nHost: clarion\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(answer.contains(r#""code":"unauthorized""#), "{answer}");
    stream.write_all(HEALTHZ).await.unwrap();
    assert!(
        read_response(&mut stream)
            .await
            .starts_with("HTTP/1.1 200 ")
    );
}

/// A request answered from its head alone (here 415 for a Content-Type the route does not take,
/// and 401 without a key) whose body arrives after its head: the body is read and discarded
/// before the answer goes, and the kept-alive connection takes the next request. Before, hyper
/// closed the connection after such an answer without `Connection: close`, and the client's
/// next request on it failed with no response (seen in the API fuzzing run).
#[tokio::test]
async fn an_answer_given_before_the_body_arrived_keeps_the_connection_usable() {
    let app = app_with(limits(NEVER, NEVER, NEVER)).await;
    let (_org, key) = app.org("Riverside").await;
    let body = br#"{"description": null, "enabled": null, "url": null}"#;
    let mut stream = connect(&app).await;
    for authorization in [format!("Authorization: Bearer {key}\r\n"), String::new()] {
        let head = format!(
            "PATCH /v1/webhook-endpoints/1 HTTP/1.1\r\nHost: clarion\r\n{authorization}\
             Content-Type: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // The answer waits for the body (a bounded wait for something that must not come).
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await;
        assert!(early.is_err(), "answered before the body: {early:?}");
        stream.write_all(body).await.unwrap();
        let answer = tokio::time::timeout(DEADLINE, read_response(&mut stream))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    stream.write_all(HEALTHZ).await.unwrap();
    let answer = tokio::time::timeout(DEADLINE, read_response(&mut stream))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

/// A body too large to discard (over 256 KiB) to a route that answers from the head alone is
/// not waited for: the answer comes at once and says `Connection: close`, so that the client
/// opens a new connection for its next request.
#[tokio::test]
async fn an_unread_body_too_large_to_discard_closes_the_connection_and_says_so() {
    let app = app_with(limits(NEVER, NEVER, NEVER)).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /v1/assistants HTTP/1.1\r\nHost: clarion\r\nContent-Type: application/json\r\n\
              Content-Length: 10485760\r\n\r\n{",
        )
        .await
        .unwrap();
    let answer = tokio::time::timeout(DEADLINE, read_response(&mut stream))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let (rest, _) = read_until_closed(&mut stream).await;
    assert_eq!(rest, "");
}
