//! Hostile and broken webhook receivers (issue 14, "Build into CI"): a raw TCP listener on
//! port 0 that reads the attempt and then answers badly on purpose: headers trickled a byte
//! at a time, a 10 MB body, a connection reset before or after the status line, a megabyte of
//! header, 429 with an HTTP-date `Retry-After`. Each attempt must be recorded with a class the
//! README documents, end within the attempt timeout, and keep at most the response excerpt.
//!
//! Already covered in `delivery.rs` and not repeated here: 410 disables the endpoint, a 302
//! is recorded and not followed, a receiver that never answers times out, and 429/503 with a
//! `Retry-After` in seconds are honoured (and clamped to `retry_after_max`).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::future::Future;
use std::time::{Duration, Instant};

use clarion_delivery::{Clock, RESPONSE_EXCERPT_LIMIT};
use clarion_webhooks::examples;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{AppOptions, TestApp, spawn_app_with};

/// Short, so that the tests are quick; every bound below is stated in terms of it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an attempt may take beyond the timeout (scheduling on a loaded machine).
const SLACK: Duration = Duration::from_secs(3);

/// The error classes the README documents for an attempt without an HTTP status.
const DOCUMENTED_CLASSES: &[&str] = &[
    "timeout",
    "connection-refused",
    "connection-reset",
    "connection-error",
    "dns-error",
    "tls-error",
    "ssrf-blocked",
    "invalid-url",
    "redirect",
    "invalid-response",
];

/// A receiver that reads each request whole and then hands the connection to `answer`.
async fn raw_receiver<F, Fut>(answer: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let answer = std::sync::Arc::new(answer);
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                if read_request(&mut stream).await {
                    answer(stream).await;
                }
            });
        }
    });
    url
}

/// Reads one request's head and its `Content-Length` body; false when the client went away.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut seen = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if seen.len() >= end + 4 + length {
                return true;
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Closes with a TCP reset rather than a clean FIN.
fn reset(stream: TcpStream) {
    stream.set_zero_linger().unwrap();
    drop(stream);
}

async fn app() -> TestApp {
    let mut options = AppOptions::default();
    options.dispatcher.attempt_timeout = ATTEMPT_TIMEOUT;
    spawn_app_with(options).await
}

/// Sends one report to `url`, runs the due attempt, and returns the delivery with how long
/// the run took.
async fn deliver_once(app: &TestApp, url: &str) -> (Value, Duration) {
    let (org, key) = app.org("Riverside").await;
    app.endpoint(&key, url).await;
    app.enqueue(org, &examples::call_only()).await;
    let started = Instant::now();
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 1);
    let took = started.elapsed();
    let deliveries = app.deliveries(&key).await;
    assert_eq!(deliveries.len(), 1);
    (deliveries[0].clone(), took)
}

/// The attempt failed without a status, with `class`, and is pending a retry.
fn assert_failed_with(delivery: &Value, class: &str) {
    assert!(DOCUMENTED_CLASSES.contains(&class));
    let attempt = &delivery["attempts"][0];
    assert_eq!(delivery["status"], "pending", "{delivery}");
    assert_eq!(attempt["status_code"], Value::Null, "{delivery}");
    assert_eq!(attempt["error"], class, "{delivery}");
}

fn assert_bounded_in_time(delivery: &Value, took: Duration) {
    let limit = ATTEMPT_TIMEOUT + SLACK;
    assert!(took < limit, "the run took {took:?}");
    let duration_ms = delivery["attempts"][0]["duration_ms"].as_u64().unwrap();
    assert!(
        u128::from(duration_ms) < limit.as_millis(),
        "the attempt took {duration_ms} ms"
    );
}

fn excerpt_len(delivery: &Value) -> usize {
    delivery["attempts"][0]["response_body"]
        .as_str()
        .map_or(0, str::len)
}

#[tokio::test]
async fn a_receiver_trickling_its_headers_forever_times_out_at_the_attempt_timeout() {
    let app = app().await;
    let url = raw_receiver(|mut stream| async move {
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            .await
            .is_err()
        {
            return;
        }
        // One byte of header every 50 ms, until the client hangs up.
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if stream.write_all(b"a").await.is_err() {
                return;
            }
        }
    })
    .await;
    let (delivery, took) = deliver_once(&app, &url).await;
    assert_failed_with(&delivery, "timeout");
    assert_bounded_in_time(&delivery, took);
    assert!(took >= ATTEMPT_TIMEOUT, "{took:?}");
}

#[tokio::test]
async fn a_body_trickled_forever_after_a_2xx_still_ends_at_the_attempt_timeout() {
    let app = app().await;
    let url = raw_receiver(|mut stream| async move {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if stream.write_all(b"a").await.is_err() {
                return;
            }
        }
    })
    .await;
    let (delivery, took) = deliver_once(&app, &url).await;
    // The status gave the verdict; the unfinished body only shortens the excerpt.
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["attempts"][0]["status_code"], 200);
    assert_bounded_in_time(&delivery, took);
    assert!(excerpt_len(&delivery) <= RESPONSE_EXCERPT_LIMIT);
}

#[tokio::test]
async fn a_10_mb_body_is_not_read_beyond_the_excerpt() {
    let app = app().await;
    let url = raw_receiver(|mut stream| async move {
        let size = 10 * 1024 * 1024;
        let head = format!("HTTP/1.1 500 Internal Server Error\r\nContent-Length: {size}\r\n\r\n");
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if stream.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let (delivery, took) = deliver_once(&app, &url).await;
    assert_eq!(delivery["status"], "pending", "{delivery}");
    assert_eq!(delivery["attempts"][0]["status_code"], 500);
    assert_eq!(excerpt_len(&delivery), RESPONSE_EXCERPT_LIMIT);
    assert_bounded_in_time(&delivery, took);
}

#[tokio::test]
async fn a_reset_before_the_status_line_ends_is_recorded_as_connection_reset() {
    let app = app().await;
    let url = raw_receiver(|mut stream| async move {
        let _ = stream.write_all(b"HTTP/1.1 200 O").await;
        let _ = stream.flush().await;
        reset(stream);
    })
    .await;
    let (delivery, took) = deliver_once(&app, &url).await;
    assert_failed_with(&delivery, "connection-reset");
    assert_bounded_in_time(&delivery, took);
}

#[tokio::test]
async fn a_reset_in_the_middle_of_the_body_keeps_the_status_and_what_arrived() {
    let app = app().await;
    let url = raw_receiver(|mut stream| async move {
        let answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 1000\r\n\r\ninvalid signat";
        let _ = stream.write_all(answer).await;
        let _ = stream.flush().await;
        // No pause: on loopback the written bytes are already in the client's receive queue,
        // and a reset arriving behind them leaves them readable (the reader sees the data,
        // then the reset), so the client always has the status line.
        reset(stream);
    })
    .await;
    let (delivery, took) = deliver_once(&app, &url).await;
    assert_eq!(delivery["status"], "pending", "{delivery}");
    assert_eq!(delivery["attempts"][0]["status_code"], 400);
    assert_eq!(delivery["attempts"][0]["error"], Value::Null);
    assert_bounded_in_time(&delivery, took);
}

#[tokio::test]
async fn a_megabyte_of_response_headers_is_refused_as_an_invalid_response() {
    let app = app().await;
    let url = raw_receiver(|mut stream| async move {
        let mut answer = b"HTTP/1.1 200 OK\r\nX-Huge: ".to_vec();
        answer.resize(answer.len() + 1024 * 1024, b'a');
        answer.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        let _ = stream.write_all(&answer).await;
    })
    .await;
    let (delivery, took) = deliver_once(&app, &url).await;
    assert_failed_with(&delivery, "invalid-response");
    assert_bounded_in_time(&delivery, took);
}

#[tokio::test]
async fn thousands_of_response_headers_are_refused_as_an_invalid_response() {
    let app = app().await;
    let url = raw_receiver(|mut stream| async move {
        let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..5000 {
            answer.extend_from_slice(format!("X-Header-{i}: x\r\n").as_bytes());
        }
        answer.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let _ = stream.write_all(&answer).await;
    })
    .await;
    let (delivery, took) = deliver_once(&app, &url).await;
    assert_failed_with(&delivery, "invalid-response");
    assert_bounded_in_time(&delivery, took);
}

#[tokio::test]
async fn a_429_with_an_http_date_retry_after_is_not_retried_before_that_date() {
    let app = app().await;
    // The receiver asks for 20 minutes, well beyond the schedule's first delay (5 s).
    let retry_at_secs = app.clock.now_millis() / 1000 + 1200;
    let retry_at = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(retry_at_secs).unwrap()),
    );
    let url = raw_receiver(move |mut stream| {
        let retry_at = retry_at.clone();
        async move {
            let answer = format!(
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_at}\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    })
    .await;
    let (delivery, _) = deliver_once(&app, &url).await;
    assert_eq!(delivery["attempts"][0]["status_code"], 429);
    let next = delivery["next_attempt_at"]
        .as_str()
        .unwrap()
        .parse::<clarion_webhooks::Timestamp>()
        .unwrap()
        .unix_millis();
    assert!(next >= retry_at_secs * 1000, "retried before Retry-After");

    // A second before the date nothing is due; at the date the retry runs.
    app.clock.set_millis(retry_at_secs * 1000 - 1000);
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 0);
    app.clock.set_millis(next);
    assert_eq!(app.dispatcher.run_due_now().await.unwrap(), 1);
}
