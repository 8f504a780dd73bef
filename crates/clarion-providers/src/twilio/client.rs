//! The Twilio Messages API client: `POST /2010-04-01/Accounts/{sid}/Messages.json`,
//! form-encoded, HTTP Basic auth.
//!
//! Sending a text reaches a patient, so failures are sorted by whether it may have gone out:
//! only a 429 (Twilio's 20429) proves it did not and may be tried again; a 5xx, a timeout or
//! a dropped connection leave it unknown, and the conversation ends rather than risk a
//! second text.

use std::fmt;
use std::time::Duration;

use super::signature::AuthToken;
use super::wire::{
    MessageResource, SendFailure, SendMessage, Sender, TwilioError, classify_send_error,
    messages_path,
};

/// Where and how to reach Twilio.
#[derive(Clone)]
pub struct TwilioSettings {
    /// `https://api.twilio.com`, or a fake's address in tests.
    pub base_url: String,
    /// `AC…`.
    pub account_sid: String,
    /// The auth token: Basic auth password, and the key of `X-Twilio-Signature`.
    pub auth_token: AuthToken,
    /// Who texts are sent from.
    pub sender: Sender,
    /// How long one request may take.
    pub timeout: Duration,
}

impl fmt::Debug for TwilioSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioSettings")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &self.auth_token)
            .field("sender", &self.sender)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Twilio answered with an error: what it means for the conversation.
    #[error("Twilio did not accept the message ({failure:?}, HTTP {status}, code {code:?})")]
    Rejected {
        /// The class of the failure.
        failure: SendFailure,
        /// The HTTP status.
        status: u16,
        /// Twilio's error code.
        code: Option<i64>,
    },
    /// No answer that says whether the message went out (timeout, connection lost, an
    /// unreadable 2xx).
    #[error("Twilio's answer does not say whether the message was sent ({reason})")]
    Unknown {
        /// A short class.
        reason: &'static str,
    },
}

/// A Twilio API client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    settings: std::sync::Arc<TwilioSettings>,
}

impl TwilioClient {
    /// A client with its own connection pool; no redirects are followed.
    pub fn new(settings: TwilioSettings) -> Result<Self, reqwest::Error> {
        let http = crate::http::client(settings.timeout)?;
        Ok(Self {
            http,
            settings: std::sync::Arc::new(settings),
        })
    }

    /// Who texts are sent from.
    pub fn sender(&self) -> &Sender {
        &self.settings.sender
    }

    /// The auth token (for checking `X-Twilio-Signature`).
    pub fn auth_token(&self) -> &AuthToken {
        &self.settings.auth_token
    }

    /// Checks the account SID and auth token without sending anything:
    /// `GET /2010-04-01/Accounts/{sid}.json`.
    pub async fn check(&self) -> crate::vapi::client::Check {
        use crate::vapi::client::Check;
        let url = format!(
            "{}/2010-04-01/Accounts/{}.json",
            self.settings.base_url.trim_end_matches('/'),
            self.settings.account_sid
        );
        let answer = self
            .http
            .get(url)
            .basic_auth(
                &self.settings.account_sid,
                Some(self.settings.auth_token.expose()),
            )
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {
                Check::ok("Twilio accepts the account SID and auth token")
            }
            Ok(r) if matches!(r.status().as_u16(), 401 | 403 | 404) => {
                Check::failed("Twilio rejects the account SID or auth token")
            }
            Ok(r) => Check::failed(format!(
                "Twilio answered HTTP {} to GET /Accounts/{{sid}}",
                r.status().as_u16()
            )),
            Err(_) => Check::failed("Twilio cannot be reached at twilio.base_url"),
        }
    }

    /// Sends one message.
    pub async fn send(&self, message: &SendMessage) -> Result<MessageResource, SendError> {
        let url = format!(
            "{}{}",
            self.settings.base_url.trim_end_matches('/'),
            messages_path(&self.settings.account_sid)
        );
        let response = self
            .http
            .post(url)
            .basic_auth(
                &self.settings.account_sid,
                Some(self.settings.auth_token.expose()),
            )
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(message.to_form())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) if error.is_connect() => {
                // Refused before anything was sent.
                return Err(SendError::Rejected {
                    failure: SendFailure::Retryable,
                    status: 0,
                    code: None,
                });
            }
            Err(_) => {
                return Err(SendError::Unknown {
                    reason: "connection",
                });
            }
        };
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|_| SendError::Unknown { reason: "body" })?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|_| SendError::Unknown {
                reason: "unreadable message",
            });
        }
        let error: Option<TwilioError> = serde_json::from_slice(&body).ok();
        let mut failure = classify_send_error(status, error.as_ref());
        // A 5xx does not prove the message was not created: never send it again.
        if status >= 500 {
            failure = SendFailure::Permanent;
        }
        Err(SendError::Rejected {
            failure,
            status,
            code: error.and_then(|e| e.code),
        })
    }
}
