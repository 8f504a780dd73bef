//! The optional LLM-backed SMS assistant: an OpenAI-compatible chat-completions endpoint
//! asked for a structured decision — the reply to send and whether the conversation is over.
//!
//! It answers only ordinary replies: STOP, HELP and the turn limit stay with the script, so a
//! model can never keep texting a patient who opted out. Whatever goes wrong — an error, a
//! timeout, an answer that is not the expected JSON, an unknown resolution, an empty or
//! overlong reply — is an [`LlmError`], and the caller falls back to the scripted assistant.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::sms_assistant::{Conversation, Resolution, Speaker};

/// The longest reply accepted: one concatenated SMS is at most 1,600 characters.
pub const MAX_REPLY_CHARS: usize = 1_600;

/// How Clarion tells the model what to answer with (appended to the assistant's prompt).
pub const DECISION_INSTRUCTIONS: &str = "You are texting a patient on behalf of their care team. \
Answer with a JSON object only: {\"reply\": \"<the next text message to send, plain text>\", \
\"resolution\": null | \"resolved\" | \"declined\" | \"escalated\" | \"opt-out\"}. Set \
resolution when the conversation's purpose is achieved (resolved), the patient refuses \
(declined), needs a person (escalated) or asks not to be contacted (opt-out); otherwise null.";

/// Where and how to reach the model.
#[derive(Clone)]
pub struct LlmSettings {
    /// The API root, e.g. `https://api.openai.com/v1` (`/chat/completions` is appended).
    pub base_url: String,
    /// Bearer key.
    pub api_key: String,
    /// The model name.
    pub model: String,
    /// How long one answer may take before the script answers instead.
    pub timeout: Duration,
}

impl fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What the model decided.
#[derive(Clone, PartialEq, Eq)]
pub struct LlmDecision {
    /// The text to send (PHI).
    pub reply: String,
    /// Whether, and how, the conversation is over.
    pub resolution: Option<Resolution>,
}

impl fmt::Debug for LlmDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmDecision")
            .field("reply", &crate::redact::Hidden)
            .field("resolution", &self.resolution)
            .finish()
    }
}

/// Why the model's answer cannot be used. Never quotes the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// No answer in time (connection refused, timeout).
    #[error("the model could not be reached or timed out")]
    Unreachable,
    /// An error status.
    #[error("the model answered HTTP {0}")]
    Status(u16),
    /// An answer that is not a usable decision.
    #[error("the model's answer is not the expected decision ({0})")]
    Invalid(&'static str),
}

/// An OpenAI-compatible chat-completions client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    settings: std::sync::Arc<LlmSettings>,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct RawDecision {
    reply: String,
    #[serde(default)]
    resolution: Option<String>,
}

/// The chat messages for a conversation and the new inbound text: the assistant's prompt
/// with Clarion's instructions, then every message so far (ours as `assistant`, the
/// contact's as `user`), then the new text.
pub fn chat_messages(
    system_prompt: &str,
    conversation: &Conversation,
    inbound: &str,
) -> Vec<Value> {
    let mut messages = vec![json!({
        "role": "system",
        "content": format!("{}\n\n{DECISION_INSTRUCTIONS}", system_prompt.trim()),
    })];
    for turn in &conversation.turns {
        let role = match turn.speaker {
            Speaker::Ai => "assistant",
            Speaker::User => "user",
        };
        messages.push(json!({ "role": role, "content": turn.text }));
    }
    messages.push(json!({ "role": "user", "content": inbound }));
    messages
}

/// Reads the model's message content as a decision.
pub fn parse_decision(content: &str) -> Result<LlmDecision, LlmError> {
    let raw: RawDecision = serde_json::from_str(content.trim())
        .map_err(|_| LlmError::Invalid("not the JSON object"))?;
    let reply = raw.reply.trim().to_owned();
    if reply.is_empty() {
        return Err(LlmError::Invalid("empty reply"));
    }
    if reply.chars().count() > MAX_REPLY_CHARS {
        return Err(LlmError::Invalid("reply too long"));
    }
    let resolution = match raw.resolution.as_deref().map(str::trim) {
        None | Some("") | Some("null") => None,
        Some("resolved") => Some(Resolution::Resolved),
        Some("declined") => Some(Resolution::Declined),
        Some("escalated") => Some(Resolution::Escalated),
        Some("opt-out") => Some(Resolution::OptOut),
        Some(_) => return Err(LlmError::Invalid("unknown resolution")),
    };
    Ok(LlmDecision { reply, resolution })
}

impl LlmClient {
    /// A client with its own connection pool.
    pub fn new(settings: LlmSettings) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: crate::http::client(settings.timeout)?,
            settings: std::sync::Arc::new(settings),
        })
    }

    /// Asks the model for the next reply (`model` overrides the configured one).
    pub async fn decide(
        &self,
        system_prompt: &str,
        model: Option<&str>,
        conversation: &Conversation,
        inbound: &str,
    ) -> Result<LlmDecision, LlmError> {
        let body = json!({
            "model": model.unwrap_or(&self.settings.model),
            "messages": chat_messages(system_prompt, conversation, inbound),
            "response_format": { "type": "json_object" },
            "temperature": 0,
        });
        let response = self
            .http
            .post(format!(
                "{}/chat/completions",
                self.settings.base_url.trim_end_matches('/')
            ))
            .bearer_auth(&self.settings.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|_| LlmError::Unreachable)?;
        if !response.status().is_success() {
            return Err(LlmError::Status(response.status().as_u16()));
        }
        let completion: Completion = response
            .json()
            .await
            .map_err(|_| LlmError::Invalid("not a chat completion"))?;
        let content = completion
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or(LlmError::Invalid("no message"))?;
        parse_decision(&content)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_is_read_strictly() {
        let decision =
            parse_decision(r#"{"reply": " See you then! ", "resolution": "resolved"}"#).unwrap();
        assert_eq!(decision.reply, "See you then!");
        assert_eq!(decision.resolution, Some(Resolution::Resolved));
        assert_eq!(
            parse_decision(r#"{"reply": "Noted.", "resolution": null}"#)
                .unwrap()
                .resolution,
            None
        );
        for bad in [
            "Sure! See you then.",
            r#"{"reply": "", "resolution": null}"#,
            r#"{"reply": "ok", "resolution": "maybe"}"#,
            r#"{"resolution": "resolved"}"#,
        ] {
            assert!(parse_decision(bad).is_err(), "{bad}");
        }
        let long = format!(
            r#"{{"reply": "{}", "resolution": null}}"#,
            "a".repeat(1_601)
        );
        assert_eq!(
            parse_decision(&long),
            Err(LlmError::Invalid("reply too long"))
        );
    }

    #[test]
    fn the_chat_carries_the_prompt_and_every_message_in_order() {
        let mut conversation = Conversation::new(None, serde_json::Map::new());
        conversation.turns.push(crate::sms_assistant::Turn {
            speaker: Speaker::Ai,
            text: "Hi, can you confirm?".to_owned(),
            counted: false,
            intent: None,
        });
        let messages = chat_messages("Be kind.", &conversation, "yes I can");
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0]["role"], "system");
        assert!(
            messages[0]["content"]
                .as_str()
                .unwrap()
                .starts_with("Be kind.\n\n")
        );
        assert_eq!(
            messages[1],
            json!({ "role": "assistant", "content": "Hi, can you confirm?" })
        );
        assert_eq!(
            messages[2],
            json!({ "role": "user", "content": "yes I can" })
        );
    }
}
