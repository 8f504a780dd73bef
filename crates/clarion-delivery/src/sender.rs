//! One HTTP attempt: POST the signed body, read at most [`RESPONSE_EXCERPT_LIMIT`] bytes of the
//! answer (none when excerpts are off), classify errors.

use std::error::Error as _;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};

use crate::ssrf::{self, SsrfPolicy};

/// The most of a response body kept with an attempt: enough for a receiver's error message
/// ("invalid signature", "unknown event type"), too little to make Clarion a useful way of
/// reading what some other public service answers to its requests.
pub const RESPONSE_EXCERPT_LIMIT: usize = 256;

/// What the receiver answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The first bytes of the body, at most the sender's excerpt limit (empty when excerpts
    /// are off).
    pub body_prefix: Vec<u8>,
    pub retry_after: Option<String>,
}

/// The headers of one attempt.
#[derive(Debug, Clone)]
pub struct SignedHeaders<'a> {
    pub webhook_id: &'a str,
    pub timestamp: i64,
    pub signature: &'a str,
    pub event_type: &'a str,
    pub attempt: u32,
}

/// Sends attempts. The client resolves names through the SSRF guard (unless private targets
/// are allowed), connects only to the addresses it vetted, and never follows redirects.
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
    policy: SsrfPolicy,
    timeout: Duration,
    /// How much of an answer's body to read and keep: [`RESPONSE_EXCERPT_LIMIT`], or 0.
    excerpt_limit: usize,
}

impl HttpSender {
    /// A sender; with `keep_excerpt` false no byte of an answer's body is read.
    pub fn new(
        policy: SsrfPolicy,
        timeout: Duration,
        keep_excerpt: bool,
    ) -> Result<Self, reqwest::Error> {
        let client = ssrf::client_builder(policy.clone())
            .user_agent(concat!("clarion/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            client,
            policy,
            timeout,
            excerpt_limit: if keep_excerpt {
                RESPONSE_EXCERPT_LIMIT
            } else {
                0
            },
        })
    }

    /// POSTs `body` to `url`. `Err` carries the short error class recorded with the attempt.
    pub async fn send(
        &self,
        url: &str,
        headers: &SignedHeaders<'_>,
        body: Vec<u8>,
    ) -> Result<Answer, &'static str> {
        let url = Url::parse(url).map_err(|_| "invalid-url")?;
        // IP-literal hosts never reach the resolver, so they are checked here, every attempt.
        self.policy.check_url(&url).map_err(|_| "ssrf-blocked")?;
        let mut header_map = HeaderMap::new();
        header_map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        header_map.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("clarion/", env!("CARGO_PKG_VERSION"))),
        );
        let text = |value: &str| HeaderValue::from_str(value).map_err(|_| "invalid-header");
        header_map.insert("webhook-id", text(headers.webhook_id)?);
        header_map.insert("webhook-timestamp", HeaderValue::from(headers.timestamp));
        header_map.insert("webhook-signature", text(headers.signature)?);
        header_map.insert("clarion-event-type", text(headers.event_type)?);
        header_map.insert("clarion-attempt", HeaderValue::from(headers.attempt));

        let request = self
            .client
            .post(url)
            .headers(header_map)
            .body(body)
            .timeout(self.timeout);
        let mut response = request.send().await.map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body_prefix = Vec::new();
        // Only the excerpt is kept; the rest is not read. A failure while reading the body
        // does not change the verdict, which the status already gave.
        while body_prefix.len() < self.excerpt_limit {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.excerpt_limit - body_prefix.len();
                    body_prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Answer {
            status,
            body_prefix,
            retry_after,
        })
    }
}

/// The short error class of a failed request. Never the URL or the message, which could
/// carry a customer's host names into logs.
pub(crate) fn classify(error: &reqwest::Error) -> &'static str {
    if ssrf::find_ssrf_error(error).is_some() {
        return "ssrf-blocked";
    }
    if error.is_timeout() {
        return "timeout";
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection-refused",
                std::io::ErrorKind::ConnectionReset => return "connection-reset",
                std::io::ErrorKind::TimedOut => return "timeout",
                _ => {}
            }
        }
        let text = cause.to_string();
        if text.contains("dns error") {
            return "dns-error";
        }
        if text.contains("certificate") || text.contains("tls") || text.contains("TLS") {
            return "tls-error";
        }
        source = cause.source();
    }
    if error.is_connect() {
        return "connection-error";
    }
    if error.is_redirect() {
        return "redirect";
    }
    // Whatever else went wrong happened after the connection was made: the receiver's answer
    // was not a well-formed HTTP response or ended early.
    "invalid-response"
}
