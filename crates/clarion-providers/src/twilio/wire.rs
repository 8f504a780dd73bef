//! Twilio Programmable Messaging on the wire: what we send, what comes back, what Twilio POSTs
//! to us, and what a send error means for the encounter.
//!
//! * Sending: [`SendMessage`] builds the form of `POST
//!   /2010-04-01/Accounts/{AccountSid}/Messages.json` ([`messages_path`]); success is `201`
//!   with a [`MessageResource`]; failure is a non-2xx with a [`TwilioError`], which
//!   [`classify_send_error`] turns into what Clarion does next.
//! * Receiving: [`StatusCallback`] and [`InboundMessage`] are read from the form parameters of
//!   Twilio's webhooks ([`parse_form`]). Twilio warns that these parameter sets change without
//!   notice, so parsing is lenient: unknown parameters are ignored (but still signed, see
//!   [`super::signature`]), and only what Clarion cannot work without is required.
//! * Status order: callbacks can arrive out of order; [`may_follow`] says whether a new status
//!   moves a message forward (providers.md §2.3).
//!
//! Phone numbers, bodies and Twilio's error messages (which can quote the number) are PHI:
//! every type here prints them as `<redacted>` in `Debug`, and errors name parameters, never
//! values. Source: providers.md §2.1–2.3 and §2.6.

use std::fmt;

use clarion_webhooks::SmsEndedReason;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::de;
use crate::redact::{Hidden, Opt};
use crate::sms_assistant::SmsEnd;
use crate::twilio::keywords::{Keyword, classify_inbound};

/// Twilio's error code for a recipient who replied STOP: every later send to them fails.
pub const ERROR_OPTED_OUT: i64 = 21610;
/// Twilio's error code for too many requests.
pub const ERROR_RATE_LIMITED: i64 = 20429;

/// The path of the Messages resource for an account.
pub fn messages_path(account_sid: &str) -> String {
    format!("/2010-04-01/Accounts/{account_sid}/Messages.json")
}

/// Splits an `application/x-www-form-urlencoded` body into its parameters, in order, with
/// repeated names kept (the signature covers every one of them).
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn owned(params: &[(String, String)], name: &str) -> Option<String> {
    param(params, name).map(str::to_owned)
}

/// A webhook form lacked a parameter Clarion needs. Names the parameter, never a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The named parameter (or every accepted alias of it) is absent.
    #[error("the form has no {0} parameter")]
    Missing(&'static str),
}

/// Who a message is sent from.
#[derive(Clone, PartialEq, Eq)]
pub enum Sender {
    /// A Messaging Service (`MG…`): Twilio picks a number from its pool, and Advanced Opt-Out
    /// can apply. Clarion's default.
    MessagingService(String),
    /// One phone number of ours (E.164).
    From(String),
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A service sid is not PHI; our own number is not either, but keep it uniform.
            Sender::MessagingService(sid) => f.debug_tuple("MessagingService").field(sid).finish(),
            Sender::From(_) => f.debug_tuple("From").field(&Hidden).finish(),
        }
    }
}

/// The form of one `POST …/Messages.json`.
#[derive(Clone, PartialEq, Eq)]
pub struct SendMessage {
    /// The contact's number, E.164.
    pub to: String,
    /// Our side.
    pub sender: Sender,
    /// The text (≤ 1,600 characters; Twilio splits it into segments).
    pub body: String,
    /// Where Twilio POSTs status callbacks for this message.
    pub status_callback: Option<String>,
}

impl SendMessage {
    /// The `application/x-www-form-urlencoded` body, parameters in the order
    /// `To`, `MessagingServiceSid`|`From`, `Body`, `StatusCallback`.
    pub fn to_form(&self) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("To", &self.to);
        match &self.sender {
            Sender::MessagingService(sid) => form.append_pair("MessagingServiceSid", sid),
            Sender::From(number) => form.append_pair("From", number),
        };
        form.append_pair("Body", &self.body);
        if let Some(url) = &self.status_callback {
            form.append_pair("StatusCallback", url);
        }
        form.finish()
    }

    /// Reads the form back (what the local Twilio fake does with our request).
    pub fn from_params(params: &[(String, String)]) -> Result<Self, FormError> {
        let to = owned(params, "To").ok_or(FormError::Missing("To"))?;
        let sender = match (owned(params, "MessagingServiceSid"), owned(params, "From")) {
            (Some(sid), _) => Sender::MessagingService(sid),
            (None, Some(number)) => Sender::From(number),
            (None, None) => return Err(FormError::Missing("MessagingServiceSid or From")),
        };
        Ok(Self {
            to,
            sender,
            body: owned(params, "Body").ok_or(FormError::Missing("Body"))?,
            status_callback: owned(params, "StatusCallback"),
        })
    }
}

impl fmt::Debug for SendMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendMessage")
            .field("to", &Hidden)
            .field("sender", &self.sender)
            .field("body", &Hidden)
            .field("status_callback", &self.status_callback)
            .finish()
    }
}

/// The status of a message (`message_enum_status`), plus `Unknown` for values Twilio adds
/// later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Created and waiting to be sent (no Messaging Service).
    Queued,
    /// Being sent to the carrier.
    Sending,
    /// Handed to the carrier.
    Sent,
    /// Could not be sent. Final.
    Failed,
    /// The carrier confirmed delivery. Only `read` may follow.
    Delivered,
    /// The carrier could not deliver it. Final.
    Undelivered,
    /// Inbound: being received.
    Receiving,
    /// Inbound: received. Final.
    Received,
    /// Accepted by a Messaging Service, sender not yet chosen.
    Accepted,
    /// Scheduled for later sending.
    Scheduled,
    /// The recipient read it (RCS/WhatsApp). Final.
    Read,
    /// Some parts delivered.
    PartiallyDelivered,
    /// A scheduled message was canceled. Final.
    Canceled,
    /// A value this version does not know.
    #[serde(other)]
    Unknown,
}

impl MessageStatus {
    /// Parses a wire value; unknown values become [`MessageStatus::Unknown`].
    pub fn parse(text: &str) -> Self {
        serde_json::from_value(Value::String(text.trim().to_owned())).unwrap_or(Self::Unknown)
    }

    /// The message will not be delivered: `failed`, `undelivered` or `canceled`.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Undelivered | Self::Canceled)
    }

    /// No later status can replace this one.
    pub fn is_final(self) -> bool {
        self.is_failure() || matches!(self, Self::Read | Self::Received)
    }

    /// Position on the way to the handset; failures and `Unknown` have none.
    fn progress(self) -> Option<u8> {
        Some(match self {
            Self::Scheduled => 0,
            Self::Accepted => 1,
            Self::Queued => 2,
            Self::Sending | Self::Receiving => 3,
            Self::Sent => 4,
            Self::PartiallyDelivered => 5,
            Self::Delivered | Self::Received => 6,
            Self::Read => 7,
            Self::Failed | Self::Undelivered | Self::Canceled | Self::Unknown => return None,
        })
    }
}

/// Whether a callback reporting `next` should replace the recorded status `prev`.
///
/// Callbacks arrive out of order and more than once, so a message's status only moves forward:
/// nothing leaves `failed`, `undelivered` or `canceled` (or `read`); after `delivered` only
/// `read` may follow; a failure may follow any status before delivery; otherwise the new status
/// must be further along (`queued` → `sending` → `sent` → `delivered` → `read`). A repeat of the
/// current status returns false: there is nothing to apply. An unknown `next` is never applied.
pub fn may_follow(prev: MessageStatus, next: MessageStatus) -> bool {
    use MessageStatus as S;
    if prev.is_final() || next == S::Unknown {
        return false;
    }
    if prev == S::Delivered {
        return next == S::Read;
    }
    if next.is_failure() {
        return true;
    }
    match (prev.progress(), next.progress()) {
        (Some(before), Some(after)) => after > before,
        // Whatever we recorded before is unknown to us: any known progress is news.
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

/// The JSON Twilio returns for a message (`201` on create, `200` on fetch). Every field is
/// nullable on the wire; unknown fields are ignored. Serialises back with every field present
/// (as `null` when absent), as Twilio does, so the local fake can answer with it.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageResource {
    /// `SM…` or `MM…`.
    #[serde(default)]
    pub sid: Option<String>,
    /// `AC…`.
    #[serde(default)]
    pub account_sid: Option<String>,
    /// `MG…` when sent through a Messaging Service.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// Our number; `null` until a Messaging Service picks one.
    #[serde(default)]
    pub from: Option<String>,
    /// The contact's number.
    #[serde(default)]
    pub to: Option<String>,
    /// The text.
    #[serde(default)]
    pub body: Option<String>,
    /// Where the message is (`accepted` or `queued` on create).
    #[serde(default)]
    pub status: Option<MessageStatus>,
    /// `outbound-api`, `inbound`, …
    #[serde(default)]
    pub direction: Option<String>,
    /// Segment count, a string on the wire.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub num_segments: Option<String>,
    /// Media count, a string on the wire.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub num_media: Option<String>,
    /// Price, a string on the wire.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub price: Option<String>,
    /// `USD`, …
    #[serde(default)]
    pub price_unit: Option<String>,
    /// Error code, for failed messages.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub error_code: Option<i64>,
    /// Error text, for failed messages.
    #[serde(default)]
    pub error_message: Option<String>,
    /// RFC 2822, e.g. `Mon, 06 Jan 2025 15:00:00 +0000`.
    #[serde(default)]
    pub date_created: Option<String>,
    /// RFC 2822.
    #[serde(default)]
    pub date_updated: Option<String>,
    /// RFC 2822; `null` until sent.
    #[serde(default)]
    pub date_sent: Option<String>,
    /// `2010-04-01`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The resource's own path.
    #[serde(default)]
    pub uri: Option<String>,
    /// Paths of sub-resources (media).
    #[serde(default)]
    pub subresource_uris: Option<Map<String, Value>>,
}

impl fmt::Debug for MessageResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageResource")
            .field("sid", &self.sid)
            .field("messaging_service_sid", &self.messaging_service_sid)
            .field("from", &Opt(&self.from))
            .field("to", &Opt(&self.to))
            .field("body", &Opt(&self.body))
            .field("status", &self.status)
            .field("error_code", &self.error_code)
            .field("error_message", &Opt(&self.error_message))
            .finish_non_exhaustive()
    }
}

/// The JSON body of a Twilio error response: `{code, message, more_info, status}`.
///
/// `message` can quote the phone number, so neither `Debug` nor `Display` prints it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwilioError {
    /// Twilio's error code, e.g. `21610`.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub code: Option<i64>,
    /// Human-readable text (may contain PHI).
    #[serde(default)]
    pub message: Option<String>,
    /// Link to the error's documentation.
    #[serde(default)]
    pub more_info: Option<String>,
    /// The HTTP status, repeated.
    #[serde(default, deserialize_with = "de::opt_u16")]
    pub status: Option<u16>,
}

impl fmt::Debug for TwilioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioError")
            .field("code", &self.code)
            .field("message", &Opt(&self.message))
            .field("more_info", &self.more_info)
            .field("status", &self.status)
            .finish()
    }
}

impl fmt::Display for TwilioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Twilio error")?;
        if let Some(code) = self.code {
            write!(f, " {code}")?;
        }
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        Ok(())
    }
}

impl std::error::Error for TwilioError {}

/// What a failed send means for the encounter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendFailure {
    /// `21610`: the recipient replied STOP earlier. The message was not sent; the encounter
    /// ends as `contact-opt-out` and the number goes on the suppression list.
    OptedOut,
    /// Not sent, and trying again later can work: rate limiting (`429` / `20429`) or a Twilio
    /// server error (`5xx`).
    Retryable,
    /// Not sent, and sending the same request again will fail the same way: any other error
    /// (invalid or unroutable number, not SMS-capable, authentication, …). The encounter ends
    /// as `system-error`.
    Permanent,
}

impl SendFailure {
    /// Whether the number must go on the suppression list.
    pub fn suppresses(self) -> bool {
        self == Self::OptedOut
    }

    /// Whether the same message may be sent again later.
    pub fn is_retryable(self) -> bool {
        self == Self::Retryable
    }

    /// How the encounter ends, if it does.
    pub fn ends_encounter(self) -> Option<SmsEnd> {
        match self {
            Self::OptedOut => Some(SmsEnd::OptOut),
            Self::Retryable => None,
            Self::Permanent => Some(SmsEnd::Error),
        }
    }

    /// The report's `ended_reason` when the encounter ends.
    pub fn ended_reason(self) -> Option<SmsEndedReason> {
        self.ends_encounter().map(SmsEnd::ended_reason)
    }
}

/// Classifies a non-2xx answer to a send: `21610` → opted out; `20429`, HTTP `429` or `5xx`
/// → retryable; anything else → permanent.
///
/// This covers answers only. A send that timed out or lost its connection after the request
/// went out has an unknown result — Twilio may have accepted it — and must not be retried
/// blindly (DESIGN.md: patient contact is at-most-once); that decision is the caller's.
pub fn classify_send_error(http_status: u16, error: Option<&TwilioError>) -> SendFailure {
    let code = error.and_then(|e| e.code);
    if code == Some(ERROR_OPTED_OUT) {
        SendFailure::OptedOut
    } else if code == Some(ERROR_RATE_LIMITED)
        || http_status == 429
        || (500..=599).contains(&http_status)
    {
        SendFailure::Retryable
    } else {
        SendFailure::Permanent
    }
}

/// A status callback (POST to the message's `StatusCallback`).
#[derive(Clone, PartialEq, Eq)]
pub struct StatusCallback {
    /// `MessageSid` (or the legacy `SmsSid`): the key to the message we sent.
    pub message_sid: String,
    /// `MessageStatus` (or the legacy `SmsStatus`).
    pub status: MessageStatus,
    /// `AccountSid`.
    pub account_sid: Option<String>,
    /// `MessagingServiceSid`, when sent through one.
    pub messaging_service_sid: Option<String>,
    /// `From`: our number.
    pub from: Option<String>,
    /// `To`: the contact's number.
    pub to: Option<String>,
    /// `ErrorCode`, on `failed` / `undelivered` (e.g. `30003`).
    pub error_code: Option<i64>,
    /// `ErrorMessage`, sometimes present with `ErrorCode`.
    pub error_message: Option<String>,
    /// `RawDlrDoneDate` (`YYMMDDhhmm`, no time zone), on delivered/undelivered.
    pub raw_dlr_done_date: Option<String>,
    /// `ApiVersion`.
    pub api_version: Option<String>,
}

impl StatusCallback {
    /// Reads the callback's form parameters. Only the message sid and status are required.
    pub fn from_params(params: &[(String, String)]) -> Result<Self, FormError> {
        let message_sid = owned(params, "MessageSid")
            .or_else(|| owned(params, "SmsSid"))
            .ok_or(FormError::Missing("MessageSid"))?;
        let status = param(params, "MessageStatus")
            .or_else(|| param(params, "SmsStatus"))
            .map(MessageStatus::parse)
            .ok_or(FormError::Missing("MessageStatus"))?;
        Ok(Self {
            message_sid,
            status,
            account_sid: owned(params, "AccountSid"),
            messaging_service_sid: owned(params, "MessagingServiceSid"),
            from: owned(params, "From"),
            to: owned(params, "To"),
            error_code: param(params, "ErrorCode").and_then(|code| code.trim().parse().ok()),
            error_message: owned(params, "ErrorMessage"),
            raw_dlr_done_date: owned(params, "RawDlrDoneDate"),
            api_version: owned(params, "ApiVersion"),
        })
    }
}

impl fmt::Debug for StatusCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusCallback")
            .field("message_sid", &self.message_sid)
            .field("status", &self.status)
            .field("from", &Opt(&self.from))
            .field("to", &Opt(&self.to))
            .field("error_code", &self.error_code)
            .field("error_message", &Opt(&self.error_message))
            .finish_non_exhaustive()
    }
}

/// An inbound SMS (POST to the number's or Messaging Service's incoming-message webhook).
#[derive(Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// `MessageSid` (or `SmsMessageSid` / `SmsSid`): de-duplicates redelivered webhooks.
    pub message_sid: String,
    /// `From`: the contact's number. Required: without it the message has no conversation.
    pub from: String,
    /// `To`: our number.
    pub to: Option<String>,
    /// `Body`; empty when absent (a picture with no text).
    pub body: String,
    /// `AccountSid`.
    pub account_sid: Option<String>,
    /// `MessagingServiceSid`.
    pub messaging_service_sid: Option<String>,
    /// `NumMedia`.
    pub num_media: Option<u32>,
    /// `NumSegments`.
    pub num_segments: Option<u32>,
    /// `OptOutType` (`STOP`, `START`, `HELP`) when Advanced Opt-Out recognised a keyword.
    pub opt_out_type: Option<String>,
    /// `SmsStatus` (`received`).
    pub sms_status: Option<String>,
}

impl InboundMessage {
    /// Reads the webhook's form parameters. Only the message sid and `From` are required.
    pub fn from_params(params: &[(String, String)]) -> Result<Self, FormError> {
        let message_sid = owned(params, "MessageSid")
            .or_else(|| owned(params, "SmsMessageSid"))
            .or_else(|| owned(params, "SmsSid"))
            .ok_or(FormError::Missing("MessageSid"))?;
        let count = |name| param(params, name).and_then(|n| n.trim().parse().ok());
        Ok(Self {
            message_sid,
            from: owned(params, "From").ok_or(FormError::Missing("From"))?,
            to: owned(params, "To"),
            body: owned(params, "Body").unwrap_or_default(),
            account_sid: owned(params, "AccountSid"),
            messaging_service_sid: owned(params, "MessagingServiceSid"),
            num_media: count("NumMedia"),
            num_segments: count("NumSegments"),
            opt_out_type: owned(params, "OptOutType"),
            sms_status: owned(params, "SmsStatus"),
        })
    }

    /// The keyword reading of this message (body and `OptOutType`, see
    /// [`super::keywords`]).
    pub fn keyword(&self) -> Keyword {
        classify_inbound(&self.body, self.opt_out_type.as_deref())
    }
}

impl fmt::Debug for InboundMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundMessage")
            .field("message_sid", &self.message_sid)
            .field("from", &Hidden)
            .field("to", &Opt(&self.to))
            .field("body", &Hidden)
            .field("num_media", &self.num_media)
            .field("opt_out_type", &self.opt_out_type)
            .finish_non_exhaustive()
    }
}

/// The TwiML answer to an inbound webhook: `<Response/>` to send nothing, or one `<Message>`
/// with the reply (XML-escaped).
pub fn twiml_response(reply: Option<&str>) -> String {
    match reply {
        None => "<Response/>".to_owned(),
        Some(text) => {
            let mut escaped = String::with_capacity(text.len());
            for c in text.chars() {
                match c {
                    '&' => escaped.push_str("&amp;"),
                    '<' => escaped.push_str("&lt;"),
                    '>' => escaped.push_str("&gt;"),
                    '"' => escaped.push_str("&quot;"),
                    '\'' => escaped.push_str("&apos;"),
                    c => escaped.push(c),
                }
            }
            format!("<Response><Message>{escaped}</Message></Response>")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::twilio::signature::{AuthToken, expected_signature, validate};

    const ACCOUNT: &str = "AC00000000000000000000000000000000";
    const SERVICE: &str = "MG00000000000000000000000000000000";

    #[test]
    fn the_send_form_matches_the_reference_request() {
        let send = SendMessage {
            to: "+15555550123".to_owned(),
            sender: Sender::MessagingService(SERVICE.to_owned()),
            body: "Reply YES to confirm".to_owned(),
            status_callback: Some("https://engine.test/twilio/status".to_owned()),
        };
        assert_eq!(
            send.to_form(),
            "To=%2B15555550123&MessagingServiceSid=MG00000000000000000000000000000000\
             &Body=Reply+YES+to+confirm&StatusCallback=https%3A%2F%2Fengine.test%2Ftwilio%2Fstatus"
        );
        let back = SendMessage::from_params(&parse_form(send.to_form().as_bytes())).unwrap();
        assert_eq!(back, send);
        assert_eq!(
            messages_path(ACCOUNT),
            "/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json"
        );
        let debug = format!("{send:?}");
        assert!(
            !debug.contains("5555550123") && !debug.contains("YES"),
            "{debug}"
        );
    }

    #[test]
    fn a_send_form_needs_to_a_sender_and_a_body() {
        let form = parse_form(b"To=%2B15555550123&Body=hi");
        assert_eq!(
            SendMessage::from_params(&form),
            Err(FormError::Missing("MessagingServiceSid or From"))
        );
        let form = parse_form(b"From=%2B15555550100&Body=hi");
        assert_eq!(
            SendMessage::from_params(&form),
            Err(FormError::Missing("To"))
        );
        let form = parse_form(b"To=%2B15555550123&From=%2B15555550100");
        assert_eq!(
            SendMessage::from_params(&form),
            Err(FormError::Missing("Body"))
        );
    }

    const CREATED: &str = r#"{"sid":"SM00000000000000000000000000000001","account_sid":"AC00000000000000000000000000000000","messaging_service_sid":"MG00000000000000000000000000000000",
 "from":null,"to":"+15555550123","body":"Reply YES to confirm","status":"accepted","direction":"outbound-api","num_segments":"0","num_media":"0",
 "price":null,"price_unit":"USD","error_code":null,"error_message":null,"date_created":"Mon, 06 Jan 2025 15:00:00 +0000",
 "date_updated":"Mon, 06 Jan 2025 15:00:00 +0000","date_sent":null,"api_version":"2010-04-01",
 "uri":"/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages/SM00000000000000000000000000000001.json",
 "subresource_uris":{"media":"/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages/SM00000000000000000000000000000001/Media.json"}}"#;

    #[test]
    fn the_reference_201_parses_and_serialises_back_unchanged() {
        let message: MessageResource = serde_json::from_str(CREATED).unwrap();
        assert_eq!(
            message.sid.as_deref(),
            Some("SM00000000000000000000000000000001")
        );
        assert_eq!(message.status, Some(MessageStatus::Accepted));
        assert_eq!(message.from, None);
        assert_eq!(message.num_segments.as_deref(), Some("0"));
        assert_eq!(message.error_code, None);
        let original: Value = serde_json::from_str(CREATED).unwrap();
        assert_eq!(serde_json::to_value(&message).unwrap(), original);
        let debug = format!("{message:?}");
        assert!(
            !debug.contains("5555550123") && !debug.contains("YES"),
            "{debug}"
        );
    }

    #[test]
    fn message_json_is_read_leniently() {
        let message: MessageResource = serde_json::from_str(
            r#"{"sid":"SM1","status":"brand_new_status","num_segments":2,"error_code":"30003","extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(message.status, Some(MessageStatus::Unknown));
        assert_eq!(message.num_segments.as_deref(), Some("2"));
        assert_eq!(message.error_code, Some(30003));
        let empty: MessageResource = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, MessageResource::default());
    }

    #[test]
    fn the_opted_out_error_parses_and_prints_no_message() {
        let body = r#"{"code": 21610, "message": "Attempt to send to unsubscribed recipient +15555550123", "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400}"#;
        let error: TwilioError = serde_json::from_str(body).unwrap();
        assert_eq!(error.code, Some(21610));
        assert_eq!(error.status, Some(400));
        assert_eq!(error.to_string(), "Twilio error 21610 (HTTP 400)");
        assert!(!format!("{error:?}").contains("5555550123"));
        assert_eq!(
            classify_send_error(400, Some(&error)),
            SendFailure::OptedOut
        );
    }

    #[test]
    fn send_errors_are_classified() {
        let err = |code| TwilioError {
            code: Some(code),
            ..TwilioError::default()
        };
        let cases = [
            (400, Some(err(21610)), SendFailure::OptedOut),
            (429, Some(err(20429)), SendFailure::Retryable),
            (429, None, SendFailure::Retryable),
            (400, Some(err(20429)), SendFailure::Retryable),
            (500, None, SendFailure::Retryable),
            (503, Some(err(20500)), SendFailure::Retryable),
            (400, Some(err(21211)), SendFailure::Permanent),
            (400, Some(err(21612)), SendFailure::Permanent),
            (400, Some(err(21614)), SendFailure::Permanent),
            (401, Some(err(20003)), SendFailure::Permanent),
            (404, None, SendFailure::Permanent),
        ];
        for (status, error, expected) in cases {
            assert_eq!(
                classify_send_error(status, error.as_ref()),
                expected,
                "{status} {error:?}"
            );
        }
    }

    #[test]
    fn send_failures_say_how_the_encounter_ends() {
        assert_eq!(
            SendFailure::OptedOut.ended_reason(),
            Some(SmsEndedReason::ContactOptOut)
        );
        assert_eq!(
            SendFailure::OptedOut
                .ends_encounter()
                .map(SmsEnd::engine_outcome),
            Some("opt-out")
        );
        assert!(SendFailure::OptedOut.suppresses());
        assert!(!SendFailure::OptedOut.is_retryable());
        assert_eq!(SendFailure::Retryable.ends_encounter(), None);
        assert!(SendFailure::Retryable.is_retryable());
        assert!(!SendFailure::Retryable.suppresses());
        assert_eq!(
            SendFailure::Permanent.ended_reason(),
            Some(SmsEndedReason::SystemError)
        );
        assert_eq!(
            SendFailure::Permanent
                .ends_encounter()
                .map(SmsEnd::engine_outcome),
            Some("error")
        );
        assert!(!SendFailure::Permanent.suppresses());
    }

    #[test]
    fn statuses_only_move_forward() {
        use MessageStatus as S;
        let forward = [
            (S::Accepted, S::Queued),
            (S::Queued, S::Sending),
            (S::Queued, S::Sent),
            (S::Sending, S::Sent),
            (S::Sent, S::Delivered),
            (S::Sent, S::Undelivered),
            (S::Sent, S::Failed),
            (S::Queued, S::Failed),
            (S::Scheduled, S::Canceled),
            (S::Delivered, S::Read),
            (S::Sent, S::Read),
            (S::Unknown, S::Sent),
        ];
        for (prev, next) in forward {
            assert!(may_follow(prev, next), "{prev:?} -> {next:?}");
        }
        let refused = [
            (S::Sent, S::Queued),
            (S::Delivered, S::Sent),
            (S::Delivered, S::Undelivered),
            (S::Delivered, S::Failed),
            (S::Delivered, S::Delivered),
            (S::Undelivered, S::Delivered),
            (S::Failed, S::Sent),
            (S::Failed, S::Undelivered),
            (S::Canceled, S::Queued),
            (S::Read, S::Delivered),
            (S::Sent, S::Sent),
            (S::Sent, S::Unknown),
        ];
        for (prev, next) in refused {
            assert!(!may_follow(prev, next), "{prev:?} -> {next:?}");
        }
    }

    #[test]
    fn nothing_leaves_a_failure() {
        use MessageStatus as S;
        let all = [
            S::Queued,
            S::Sending,
            S::Sent,
            S::Failed,
            S::Delivered,
            S::Undelivered,
            S::Receiving,
            S::Received,
            S::Accepted,
            S::Scheduled,
            S::Read,
            S::PartiallyDelivered,
            S::Canceled,
            S::Unknown,
        ];
        for prev in [S::Failed, S::Undelivered, S::Canceled] {
            for next in all {
                assert!(!may_follow(prev, next), "{prev:?} -> {next:?}");
            }
        }
        for next in all {
            assert_eq!(may_follow(S::Delivered, next), next == S::Read, "{next:?}");
        }
    }

    #[test]
    fn status_wire_names_round_trip() {
        for (text, status) in [
            ("partially_delivered", MessageStatus::PartiallyDelivered),
            ("undelivered", MessageStatus::Undelivered),
            ("canceled", MessageStatus::Canceled),
            (" delivered ", MessageStatus::Delivered),
            ("Delivered", MessageStatus::Unknown),
            ("", MessageStatus::Unknown),
        ] {
            assert_eq!(MessageStatus::parse(text), status, "{text:?}");
        }
    }

    #[test]
    fn the_reference_status_callback_parses_and_verifies() {
        let body = "MessageSid=SM00000000000000000000000000000001&SmsSid=SM00000000000000000000000000000001\
                    &MessageStatus=delivered&SmsStatus=delivered&From=%2B15555550100&To=%2B15555550123\
                    &AccountSid=AC00000000000000000000000000000000&ApiVersion=2010-04-01";
        let params = parse_form(body.as_bytes());
        let callback = StatusCallback::from_params(&params).unwrap();
        assert_eq!(callback.message_sid, "SM00000000000000000000000000000001");
        assert_eq!(callback.status, MessageStatus::Delivered);
        assert_eq!(callback.to.as_deref(), Some("+15555550123"));
        assert_eq!(callback.error_code, None);
        // Signed by the fake as Twilio would, verified by us.
        let token = AuthToken::new("test-token");
        let url = "https://engine.test/twilio/status";
        let signature = expected_signature(&token, url, &params);
        assert_eq!(validate(&token, url, &params, Some(&signature)), Ok(()));
        let debug = format!("{callback:?}");
        assert!(!debug.contains("555555"), "{debug}");
    }

    #[test]
    fn status_callbacks_accept_legacy_names_and_error_codes() {
        let params = parse_form(
            b"SmsSid=SM2&SmsStatus=undelivered&ErrorCode=30003&ErrorMessage=Unreachable&Unknown=1",
        );
        let callback = StatusCallback::from_params(&params).unwrap();
        assert_eq!(callback.message_sid, "SM2");
        assert_eq!(callback.status, MessageStatus::Undelivered);
        assert_eq!(callback.error_code, Some(30003));
        assert_eq!(
            StatusCallback::from_params(&parse_form(b"MessageStatus=sent")),
            Err(FormError::Missing("MessageSid"))
        );
        assert_eq!(
            StatusCallback::from_params(&parse_form(b"MessageSid=SM3")),
            Err(FormError::Missing("MessageStatus"))
        );
    }

    #[test]
    fn the_reference_inbound_stop_parses() {
        let body = "MessageSid=SM00000000000000000000000000000002&AccountSid=AC00000000000000000000000000000000\
                    &MessagingServiceSid=MG00000000000000000000000000000000&From=%2B15555550123&To=%2B15555550100\
                    &Body=STOP&NumMedia=0&NumSegments=1&SmsStatus=received&ApiVersion=2010-04-01&OptOutType=STOP";
        let inbound = InboundMessage::from_params(&parse_form(body.as_bytes())).unwrap();
        assert_eq!(inbound.from, "+15555550123");
        assert_eq!(inbound.body, "STOP");
        assert_eq!(inbound.num_media, Some(0));
        assert_eq!(inbound.num_segments, Some(1));
        assert_eq!(inbound.opt_out_type.as_deref(), Some("STOP"));
        assert_eq!(inbound.keyword(), Keyword::OptOut);
        let debug = format!("{inbound:?}");
        assert!(
            !debug.contains("5555550123") && !debug.contains("Body: \"STOP"),
            "{debug}"
        );
    }

    #[test]
    fn inbound_messages_need_a_sid_and_a_sender() {
        let no_body =
            InboundMessage::from_params(&parse_form(b"SmsMessageSid=SM9&From=%2B15555550123"))
                .unwrap();
        assert_eq!(no_body.message_sid, "SM9");
        assert_eq!(no_body.body, "");
        assert_eq!(no_body.keyword(), Keyword::Other);
        assert_eq!(
            InboundMessage::from_params(&parse_form(b"From=%2B15555550123&Body=hi")),
            Err(FormError::Missing("MessageSid"))
        );
        assert_eq!(
            InboundMessage::from_params(&parse_form(b"MessageSid=SM1&Body=hi")),
            Err(FormError::Missing("From"))
        );
    }

    #[test]
    fn twiml_escapes_the_reply() {
        assert_eq!(twiml_response(None), "<Response/>");
        assert_eq!(
            twiml_response(Some("Tom & Jerry's <clinic>")),
            "<Response><Message>Tom &amp; Jerry&apos;s &lt;clinic&gt;</Message></Response>"
        );
    }
}
