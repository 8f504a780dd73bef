//! The Vapi HTTP client: `POST /call` to place a call, `GET /call/{id}` to read one back.
//!
//! Placing a call is the one request that reaches a patient, so its failures are sorted by
//! what they say about whether the call went out ([`CreateCallError`]): only an answer that
//! proves Vapi did not place it may be retried.

use std::fmt;
use std::time::Duration;

use super::wire::{CreateCallRequest, VapiCall, parse_call};

/// Where and how to reach Vapi.
#[derive(Clone)]
pub struct VapiSettings {
    /// `https://api.vapi.ai`, or a fake's address in tests.
    pub base_url: String,
    /// The private API key (Bearer).
    pub api_key: String,
    /// The saved phone number calls are placed from.
    pub phone_number_id: String,
    /// How long one request may take.
    pub timeout: Duration,
}

impl fmt::Debug for VapiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapiSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("phone_number_id", &self.phone_number_id)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why `POST /call` did not answer with a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateCallError {
    /// Vapi certainly did not place the call and may accept it later: 429, or the connection
    /// was refused before the request was sent. Safe to retry after `retry_after`.
    #[error("Vapi did not place the call (HTTP {status:?}); it may be retried")]
    NotPlaced {
        /// The HTTP status, `None` when no request reached Vapi.
        status: Option<u16>,
        /// How long Vapi asked to wait (`Retry-After` in seconds).
        retry_after: Option<Duration>,
    },
    /// Vapi refused the request (4xx other than 429): the call was not placed, and sending the
    /// same request again would be refused again.
    #[error("Vapi refused the call (HTTP {status})")]
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// Vapi did not start the call because the account's concurrent-call slots are all in
    /// use: an error answer naming [`CONCURRENCY_LIMIT_REACHED`], or a call record that ended
    /// with that reason before it started. Nobody was called; the call may be placed once a
    /// slot frees.
    #[error("Vapi did not start the call: the account's concurrency limit is reached")]
    AtCapacity,
    /// The outcome is unknown (5xx, a timeout, a dropped connection, an unreadable answer):
    /// the call may have been placed, so it must not be placed again.
    #[error("Vapi's answer does not say whether the call was placed ({reason})")]
    Unknown {
        /// A short class: `timeout`, `connection`, `server error`, `body`, `unreadable call`.
        reason: &'static str,
    },
}

/// The `endedReason` (and error text) Vapi gives a call it did not start because every
/// concurrent-call slot of the account was in use (providers.md §1.4, start errors).
pub const CONCURRENCY_LIMIT_REACHED: &str =
    "call.start.error-subscription-concurrency-limit-reached";

/// Whether `call` is a record of a call Vapi never started for lack of a concurrent-call slot
/// (ended, with [`CONCURRENCY_LIMIT_REACHED`]): nobody was called.
pub fn not_started_for_capacity(call: &VapiCall) -> bool {
    call.ended_reason.as_deref() == Some(CONCURRENCY_LIMIT_REACHED)
}

/// Whether an error answer's body names the concurrency limit: its `error`, `code` or
/// `message` (a string or a list of strings) is or mentions [`CONCURRENCY_LIMIT_REACHED`].
fn names_concurrency_limit(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    ["error", "code", "message", "endedReason"]
        .iter()
        .filter_map(|key| value.get(*key))
        .flat_map(|field| match field {
            serde_json::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        })
        .any(|field| {
            field
                .as_str()
                .is_some_and(|text| text.contains(CONCURRENCY_LIMIT_REACHED))
        })
}

/// Why reading a call back failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reading the call from Vapi failed ({reason})")]
pub struct GetCallError {
    /// A short class: `connection`, `not found`, `status`, `body`, `unreadable call`.
    pub reason: &'static str,
}

impl GetCallError {
    /// The reason when Vapi answered 404: it has no such call.
    pub const NOT_FOUND: &'static str = "not found";

    /// Whether Vapi said it has no such call (as opposed to not answering usefully).
    pub fn is_not_found(&self) -> bool {
        self.reason == Self::NOT_FOUND
    }
}

/// A Vapi API client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct VapiClient {
    http: reqwest::Client,
    settings: std::sync::Arc<VapiSettings>,
}

impl VapiClient {
    /// A client with its own connection pool; no redirects are followed.
    pub fn new(settings: VapiSettings) -> Result<Self, reqwest::Error> {
        let http = crate::http::client(settings.timeout)?;
        Ok(Self {
            http,
            settings: std::sync::Arc::new(settings),
        })
    }

    /// The saved phone number calls are placed from.
    pub fn phone_number_id(&self) -> &str {
        &self.settings.phone_number_id
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.base_url.trim_end_matches('/'))
    }

    /// `POST /call`. A 201 whose body is not a call is [`CreateCallError::Unknown`]: Vapi
    /// said it created something.
    pub async fn create_call(
        &self,
        request: &CreateCallRequest,
    ) -> Result<VapiCall, CreateCallError> {
        let sent = self
            .http
            .post(self.url("/call"))
            .bearer_auth(&self.settings.api_key)
            .json(request)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // Refused before anything was sent: nothing reached Vapi.
            Err(error) if error.is_connect() => {
                return Err(CreateCallError::NotPlaced {
                    status: None,
                    retry_after: None,
                });
            }
            Err(error) if error.is_timeout() => {
                return Err(CreateCallError::Unknown { reason: "timeout" });
            }
            Err(_) => {
                return Err(CreateCallError::Unknown {
                    reason: "connection",
                });
            }
        };
        let status = response.status().as_u16();
        match status {
            200..=299 => {
                let body = response
                    .bytes()
                    .await
                    .map_err(|_| CreateCallError::Unknown { reason: "body" })?;
                let call = parse_call(&body).map_err(|_| CreateCallError::Unknown {
                    reason: "unreadable call",
                })?;
                if not_started_for_capacity(&call) {
                    return Err(CreateCallError::AtCapacity);
                }
                Ok(call)
            }
            400..=499 => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                // A 4xx proves the call was not placed; its body says whether for lack of a slot.
                let body = response.bytes().await.unwrap_or_default();
                if names_concurrency_limit(&body) {
                    return Err(CreateCallError::AtCapacity);
                }
                if status == 429 {
                    return Err(CreateCallError::NotPlaced {
                        status: Some(status),
                        retry_after,
                    });
                }
                Err(CreateCallError::Refused { status })
            }
            _ => Err(CreateCallError::Unknown {
                reason: "server error",
            }),
        }
    }

    /// Checks the API key and the phone number id without placing a call: `GET /call?limit=1`
    /// (any answer but 401/403 means the key is accepted) and `GET /phone-number/{id}`.
    pub async fn check(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let key = self
            .http
            .get(self.url("/call?limit=1"))
            .bearer_auth(&self.settings.api_key)
            .send()
            .await;
        checks.push(match key {
            Ok(r) if r.status().is_success() => Check::ok("Vapi accepts the API key"),
            Ok(r) if matches!(r.status().as_u16(), 401 | 403) => {
                Check::failed("Vapi rejects the API key (vapi.api_key)")
            }
            Ok(r) => Check::failed(format!(
                "Vapi answered HTTP {} to GET /call",
                r.status().as_u16()
            )),
            Err(_) => Check::failed("Vapi cannot be reached at vapi.base_url"),
        });
        let encoded: String =
            form_urlencoded::byte_serialize(self.settings.phone_number_id.as_bytes()).collect();
        let number = self
            .http
            .get(self.url(&format!("/phone-number/{encoded}")))
            .bearer_auth(&self.settings.api_key)
            .send()
            .await;
        checks.push(match number {
            Ok(r) if r.status().is_success() => Check::ok("the phone number id exists in Vapi"),
            Ok(r) if r.status().as_u16() == 404 => {
                Check::failed("Vapi has no phone number with vapi.phone_number_id")
            }
            Ok(r) => Check::failed(format!(
                "Vapi answered HTTP {} to GET /phone-number/{{id}}",
                r.status().as_u16()
            )),
            Err(_) => Check::failed("Vapi cannot be reached at vapi.base_url"),
        });
        checks
    }

    /// `GET /call?phoneNumberId=…&createdAtGe=…&limit=…`: the calls placed from the number
    /// `phone_number_id` (Clarion's, or a caller number's) since `created_at_ge` (ISO 8601), newest first as Vapi lists them. Vapi cannot
    /// filter by name, so the caller looks for its encounter's [`encounter_call_name`]
    /// among them; that is how a call whose placement was never recorded (a crash between
    /// Vapi's answer and the commit) is found again.
    ///
    /// [`encounter_call_name`]: super::wire::encounter_call_name
    pub async fn list_calls(
        &self,
        phone_number_id: &str,
        created_at_ge: &str,
        limit: u32,
    ) -> Result<Vec<VapiCall>, GetCallError> {
        let response = self
            .http
            .get(self.url("/call"))
            .query(&[
                ("phoneNumberId", phone_number_id),
                ("createdAtGe", created_at_ge),
                ("limit", &limit.to_string()),
            ])
            .bearer_auth(&self.settings.api_key)
            .send()
            .await
            .map_err(|_| GetCallError {
                reason: "connection",
            })?;
        if !response.status().is_success() {
            return Err(GetCallError { reason: "status" });
        }
        let body = response
            .bytes()
            .await
            .map_err(|_| GetCallError { reason: "body" })?;
        serde_json::from_slice(&body).map_err(|_| GetCallError {
            reason: "unreadable call list",
        })
    }

    /// `GET /call/{id}`.
    pub async fn get_call(&self, id: &str) -> Result<VapiCall, GetCallError> {
        let encoded: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let response = self
            .http
            .get(self.url(&format!("/call/{encoded}")))
            .bearer_auth(&self.settings.api_key)
            .send()
            .await
            .map_err(|_| GetCallError {
                reason: "connection",
            })?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(GetCallError {
                reason: GetCallError::NOT_FOUND,
            });
        }
        if !response.status().is_success() {
            return Err(GetCallError { reason: "status" });
        }
        let body = response
            .bytes()
            .await
            .map_err(|_| GetCallError { reason: "body" })?;
        parse_call(&body).map_err(|_| GetCallError {
            reason: "unreadable call",
        })
    }
}

/// One configuration check's result, for `clarion doctor`. Never carries a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Whether the check passed.
    pub ok: bool,
    /// What was checked, or what is wrong.
    pub message: String,
}

impl Check {
    /// A passed check.
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
        }
    }

    /// A failed check.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_naming_the_concurrency_limit_is_a_capacity_refusal() {
        let answers: [&[u8]; 3] = [
            br#"{"message":"call.start.error-subscription-concurrency-limit-reached","statusCode":400}"#,
            br#"{"error":"call.start.error-subscription-concurrency-limit-reached"}"#,
            br#"{"message":["Couldn't start: call.start.error-subscription-concurrency-limit-reached"]}"#,
        ];
        for body in answers {
            assert!(
                names_concurrency_limit(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &br#"{"message":"scripted failure","statusCode":429}"#[..],
            b"not json",
            br#"{"message":"call.start.error-subscription-frozen"}"#,
        ] {
            assert!(
                !names_concurrency_limit(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_call_ended_for_lack_of_a_slot_was_not_started() {
        let ended: VapiCall = parse_call(
            br#"{"id":"c1","orgId":"o","createdAt":"2025-01-06T15:00:00.000Z","updatedAt":"2025-01-06T15:00:00.000Z","status":"ended","endedReason":"call.start.error-subscription-concurrency-limit-reached"}"#,
        )
        .unwrap();
        assert!(not_started_for_capacity(&ended));
        let queued: VapiCall = parse_call(
            br#"{"id":"c2","orgId":"o","createdAt":"2025-01-06T15:00:00.000Z","updatedAt":"2025-01-06T15:00:00.000Z","status":"queued"}"#,
        )
        .unwrap();
        assert!(!not_started_for_capacity(&queued));
    }
}
