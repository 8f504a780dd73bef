//! The eligibility hook's HTTP exchange: one signed `encounter.eligibility` POST, one signed
//! answer read back (`clarion_webhooks::verify_answer`).
//!
//! The request goes through the same SSRF guard as deliveries ([`ssrf::client_builder`]: the
//! URL checked before every request, names resolved only to vetted addresses, no redirects,
//! no proxy), with a bound on the whole exchange (the organisation's `timeout_ms`) and on the
//! answer's size ([`clarion_webhooks::MAX_ANSWER_BYTES`]). Every failure is a short class
//! (`timeout`, `connection-refused`, `status-503`, `bad-signature`, …): never the URL, the
//! answer or its reason, which may name a patient.
//!
//! Timestamps are real time (the system clock), whatever the engine's clock: they are what
//! the receiver's clock and its answer's signature are checked against.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clarion_webhooks::{
    EVENT_TYPE_ENCOUNTER_ELIGIBILITY, EligibilityAnswer, EligibilityRequest, HEADER_EVENT_TYPE,
    MAX_ANSWER_BYTES, Secret, WebhookHeaders, verify_answer,
};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};

use crate::sender::classify;
use crate::ssrf::{self, SsrfPolicy};

/// Asks eligibility hooks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EligibilityClient {
    client: reqwest::Client,
    policy: SsrfPolicy,
}

impl EligibilityClient {
    /// A client under `policy` (the deployment's webhook SSRF policy).
    pub fn new(policy: SsrfPolicy) -> Result<Self, reqwest::Error> {
        let client = ssrf::client_builder(policy.clone())
            .user_agent(concat!("clarion/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, policy })
    }

    /// The SSRF policy hook URLs are checked against (also at configuration time).
    pub fn policy(&self) -> &SsrfPolicy {
        &self.policy
    }

    /// POSTs `request` to `url`, signed with `secret` under a fresh `webhook-id`, and reads
    /// the signed answer within `timeout`. `Err` is the failure's short class.
    pub async fn check(
        &self,
        url: &str,
        secret: &Secret,
        timeout: Duration,
        request: &EligibilityRequest,
    ) -> Result<EligibilityAnswer, &'static str> {
        match tokio::time::timeout(timeout, self.exchange(url, secret, timeout, request)).await {
            Ok(answer) => answer,
            Err(_) => Err("timeout"),
        }
    }

    async fn exchange(
        &self,
        url: &str,
        secret: &Secret,
        timeout: Duration,
        request: &EligibilityRequest,
    ) -> Result<EligibilityAnswer, &'static str> {
        let url = Url::parse(url).map_err(|_| "invalid-url")?;
        self.policy.check_url(&url).map_err(|_| "ssrf-blocked")?;
        let body = serde_json::to_vec(request).map_err(|_| "invalid-request")?;
        let webhook_id = crate::new_webhook_id("chk_");
        let timestamp = unix_now();
        let signature = secret.sign(&webhook_id, timestamp, &body);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("clarion/", env!("CARGO_PKG_VERSION"))),
        );
        let text = |value: &str| HeaderValue::from_str(value).map_err(|_| "invalid-header");
        headers.insert("webhook-id", text(&webhook_id)?);
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        headers.insert("webhook-signature", text(&signature)?);
        headers.insert(
            HEADER_EVENT_TYPE,
            HeaderValue::from_static(EVENT_TYPE_ENCOUNTER_ELIGIBILITY),
        );
        let mut response = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| classify(&error))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_class(status.as_u16()));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let (id, answered_at, answer_signature) = (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        );
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| classify(&error))? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err("too-large");
            }
            answer.extend_from_slice(&chunk);
        }
        let headers = WebhookHeaders {
            id: id.as_deref(),
            timestamp: answered_at.as_deref(),
            signature: answer_signature.as_deref(),
        };
        verify_answer(secret, &webhook_id, &headers, &answer, unix_now())
            .map_err(|error| error.class())
    }
}

/// The class of a non-2xx answer: `status-<code>` for the common ones, `status-other` else.
fn status_class(status: u16) -> &'static str {
    match status {
        300..=399 => "redirect",
        400 => "status-400",
        401 => "status-401",
        403 => "status-403",
        404 => "status-404",
        429 => "status-429",
        500 => "status-500",
        502 => "status-502",
        503 => "status-503",
        504 => "status-504",
        _ => "status-other",
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
