//! The scripted SMS assistant: what Clarion texts back, and when the conversation is over.
//!
//! An SMS assistant (`channel: "sms"`) carries its script in its configuration, under
//! `config.script` ([`ScriptConfig::from_assistant_config`]):
//!
//! ```json
//! {"script": {
//!   "opening": "Hi {{first_name}}, this is Riverside Clinic. You have a visit on {{appointment_date}}. Reply YES to confirm or NO to cancel.",
//!   "intents": [
//!     {"name": "confirm", "keywords": ["yes", "confirm", "i'll be there"], "reply": "Thank you, see you then!", "resolution": "resolved"},
//!     {"name": "decline", "keywords": ["no", "can't make it"], "reply": "Understood, we will let the office know.", "resolution": "declined"},
//!     {"name": "staff", "keywords": ["call me", "speak to someone"], "reply": "A member of our team will call you.", "resolution": "escalated"},
//!     {"name": "when", "keywords": ["when", "what time"], "reply": "Your visit is on {{appointment_date}}.", "resolution": null}
//!   ],
//!   "fallback": "Sorry, I didn't catch that. Reply YES to confirm or NO to cancel.",
//!   "max_turns": 3,
//!   "closing": "Thanks. Our office may reach out another way.",
//!   "help_text": "Riverside Clinic appointment texts. Call 555-0100 for help. Reply STOP to opt out."
//! }}
//! ```
//!
//! [`respond`] is a pure function of the script, the conversation so far and the inbound text,
//! and it is deterministic: the same inputs always give the same [`Decision`]. For each inbound
//! message, in this order:
//!
//! 1. **Opt-out keywords** ([`crate::twilio::keywords`], whole body: `STOP`, `QUIT`, …, or
//!    Twilio's `OptOutType=STOP`) end the conversation with [`SmsEnd::OptOut`] and **no reply
//!    from us**: Twilio has already sent the one confirmation the rules allow, and a further
//!    send would fail with error 21610 anyway.
//! 2. **Help keywords** (`HELP`, `INFO`) get the organisation's `help_text` and do not count
//!    as a reply.
//! 3. **Revocations in words** ([`clarion_channels::revocation`]: "please stop texting me",
//!    "don't text me again", "remove me from your list") end the conversation with
//!    [`SmsEnd::OptOut`] like a keyword, whatever the script's intents say, and — since
//!    Twilio did not see a keyword and sent nothing — get **one confirmation**: the reply of
//!    the script's own opt-out intent when that intent matches too, else
//!    [`DEFAULT_OPT_OUT_CONFIRMATION`]. They never go to the LLM assistant.
//! 4. **Intents**, in the order listed: the first intent with a keyword in the message wins.
//!    Keywords match whole words, case-insensitively; a keyword of several words matches those
//!    words in a row ("call me" matches "Please call me back", "yes" does not match
//!    "yesterday"). Punctuation separates words; apostrophes belong to them (`’` counts as
//!    `'`). No regular expressions: scripts are written by clinic staff, and keyword lists are
//!    predictable and cannot be made slow. List the more specific intents first. An intent's
//!    `resolution` ends the conversation: `resolved`, `declined`, `escalated`, or `opt-out`
//!    (for free-text revocations such as "take me off your list", which the FCC honours as
//!    readily as STOP; its reply is the one confirmation text allowed). A bare `YES` is
//!    Twilio's opt-in keyword, but here it is an ordinary reply (see the keywords module).
//! 5. **Fallback**: nothing matched; send `fallback`.
//!
//! **Turn limit.** When the `max_turns`-th counted reply arrives and nothing resolved the
//! conversation, it ends with [`SmsEnd::TurnLimit`] and the `closing` text (after the matched
//! intent's reply, if one matched). Opt-outs and resolutions on that last turn behave as
//! above.
//!
//! **Placeholders.** `{{name}}` in any text is filled from the contact's variables first, then
//! from the built-ins `name` / `contact_name` (the contact's full name) and `first_name` (its
//! first word). Strings are inserted as they are, numbers and booleans as their JSON text; a
//! missing variable, `null`, an object or an array becomes the empty string. Rendering never
//! fails: a missing value should not stop a reminder from going out, and an unclosed `{{`
//! stays as written. Values are not re-scanned, so a variable cannot inject placeholders.
//!
//! **Limits.** A placeholder copies its whole value, so without limits a short script could
//! multiply a large variable into a body of megabytes (500 × `{{x}}` with a 100 KB value is
//! 50 MB). Scripts are therefore checked when the assistant is created ([`ScriptConfig::validate`]):
//! every text (opening, replies, fallback, closing, help text) is at most
//! [`MAX_TEXT_CHARS`] characters with at most [`MAX_PLACEHOLDERS`] placeholders, at most
//! [`MAX_INTENTS`] intents of at most [`MAX_KEYWORDS`] keywords of at most
//! [`MAX_KEYWORD_CHARS`] characters. Enrollment caps the variables (see
//! `clarion_scheduler::definition::validate_variables`) and refuses variables that would make
//! a text longer than one SMS ([`ScriptConfig::check_rendering`]). Whatever gets past those
//! checks (a script stored before them, say), rendering itself stops at
//! [`MAX_RENDERED_CHARS`] — the 1,600 characters of one concatenated SMS — so no text the
//! assistant sends, and no allocation made to build it, is ever larger.
//!
//! **How conversations end** ([`SmsEnd`], and what the report and the engine get):
//!
//! | end | report `ended_reason` | engine outcome |
//! | --- | --- | --- |
//! | resolved | `resolved` | `resolved` |
//! | declined | `contact-declined` | `declined` |
//! | opt-out | `contact-opt-out` | `opt-out` (suppresses the number) |
//! | escalated | `unknown` | `escalated` |
//! | turn limit | `conversation-timeout` | `unresolved` |
//! | no reply (the caller's timeout) | `conversation-timeout` | `no-reply` |
//! | error (a send failed for good) | `system-error` | `error` |
//!
//! Escalation has no SMS `ended_reason` in the report's vocabulary; `resolved` would tell
//! receivers the purpose was achieved, which it was not, so it is `unknown`, and the summary
//! and the sequence's `outcome_description` say that staff took over. The engine outcome is
//! `escalated` so that a template with `stop_on: ["escalated"]` stops there. A conversation
//! that hits the turn limit reached the contact without resolving anything, so the engine
//! hears `unresolved` (the sequence goes on), not `no-reply`.
//!
//! [`summary`] describes a conversation in one or two sentences without phone numbers or
//! message bodies (PHI stays in the transcript).

use std::fmt;

use clarion_channels::EncounterOutcome;
use clarion_channels::report_map;
use clarion_channels::revocation::{self, Evidence};
use clarion_webhooks::SmsEndedReason;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::redact::{Count, Opt};
use crate::twilio::keywords::{Keyword, classify_inbound};

/// `help_text` when the script sets none. Organisations should set their own, with their name
/// and a phone number: the FCC healthcare exemption asks for identity and contact details.
pub const DEFAULT_HELP_TEXT: &str =
    "This is an automated message from your care team. Reply STOP to opt out.";

/// The one confirmation sent after a revocation in words (not a keyword: Twilio confirmed
/// nothing), when the script has no opt-out intent of its own that matches.
pub const DEFAULT_OPT_OUT_CONFIRMATION: &str =
    "You will not receive any more messages from us. Thank you.";

/// `closing` when the script sets none.
pub const DEFAULT_CLOSING: &str =
    "Thank you. We'll stop here for now; our office may contact you another way.";

/// `max_turns` when the script sets none.
pub const DEFAULT_MAX_TURNS: u32 = 3;

/// The longest text the assistant sends: one concatenated SMS (Twilio's body limit) is at
/// most 1,600 characters. [`Conversation::render`] never produces more.
pub const MAX_RENDERED_CHARS: usize = 1_600;

/// The longest text a script may contain (opening, a reply, fallback, closing, help text),
/// before placeholders are filled.
pub const MAX_TEXT_CHARS: usize = 1_600;

/// Most `{{placeholders}}` in one text of a script. Real reminders use a handful (name, date,
/// time, place).
pub const MAX_PLACEHOLDERS: usize = 20;

/// Most intents in one script.
pub const MAX_INTENTS: usize = 50;

/// Most keywords of one intent.
pub const MAX_KEYWORDS: usize = 50;

/// The longest keyword or phrase.
pub const MAX_KEYWORD_CHARS: usize = 100;

fn default_max_turns() -> u32 {
    DEFAULT_MAX_TURNS
}

/// An SMS assistant's script (`config.script`). Unknown keys are rejected so that a typo fails
/// when the assistant is created, not silently during a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptConfig {
    /// The first text, sent when the step starts.
    pub opening: String,
    /// What the contact may say, tried in order.
    #[serde(default)]
    pub intents: Vec<Intent>,
    /// The reply when no intent matches.
    pub fallback: String,
    /// Counted replies after which an unresolved conversation ends.
    #[serde(default = "default_max_turns")]
    pub max_turns: u32,
    /// The last text of a conversation that hit the turn limit ([`DEFAULT_CLOSING`] if unset).
    #[serde(default)]
    pub closing: Option<String>,
    /// The answer to HELP / INFO ([`DEFAULT_HELP_TEXT`] if unset).
    #[serde(default)]
    pub help_text: Option<String>,
}

/// One thing the contact may say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// A name for reports and summaries, e.g. `confirm`. Unique within the script.
    pub name: String,
    /// Whole-word, case-insensitive keywords or phrases; any one matches.
    pub keywords: Vec<String>,
    /// What we text back.
    pub reply: String,
    /// Whether (and how) matching this intent ends the conversation.
    #[serde(default)]
    pub resolution: Option<Resolution>,
    /// Values this answer establishes for the assistant's custom analysis fields (e.g.
    /// `{"appointment_confirmed": true}`), reported in `analysis.custom`.
    #[serde(default)]
    pub custom: Map<String, Value>,
}

/// How matching an intent ends the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// The purpose was achieved.
    Resolved,
    /// The contact said no.
    Declined,
    /// The contact needs a person.
    Escalated,
    /// The contact revoked consent in their own words.
    OptOut,
}

impl From<Resolution> for SmsEnd {
    fn from(resolution: Resolution) -> Self {
        match resolution {
            Resolution::Resolved => SmsEnd::Resolved,
            Resolution::Declined => SmsEnd::Declined,
            Resolution::Escalated => SmsEnd::Escalated,
            Resolution::OptOut => SmsEnd::OptOut,
        }
    }
}

/// A script that cannot be used. Config is not PHI, so messages may quote field names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The assistant's config has no `script` object.
    #[error("the assistant config has no `script` object")]
    Missing,
    /// The script is not of the documented shape.
    #[error("script: {0}")]
    Malformed(String),
    /// A field has an unusable value.
    #[error("script.{field}: {problem}")]
    Invalid {
        /// Where, e.g. `intents[2].keywords`.
        field: String,
        /// What is wrong.
        problem: &'static str,
    },
}

impl ScriptConfig {
    /// Reads and validates `config.script` from an assistant's configuration.
    pub fn from_assistant_config(config: &Value) -> Result<Self, ScriptError> {
        let script = config.get("script").ok_or(ScriptError::Missing)?;
        let script: ScriptConfig =
            serde_json::from_value(script.clone()).map_err(|e| malformed(&e))?;
        script.validate()?;
        Ok(script)
    }

    /// Every text of the script with its field path: opening, fallback, closing, help text and
    /// each intent's reply.
    pub fn texts(&self) -> Vec<(String, &str)> {
        let mut texts = vec![
            ("opening".to_owned(), self.opening.as_str()),
            ("fallback".to_owned(), self.fallback.as_str()),
        ];
        if let Some(closing) = &self.closing {
            texts.push(("closing".to_owned(), closing));
        }
        if let Some(help) = &self.help_text {
            texts.push(("help_text".to_owned(), help));
        }
        for (at, intent) in self.intents.iter().enumerate() {
            texts.push((format!("intents[{at}].reply"), &intent.reply));
        }
        texts
    }

    /// Checks what serde cannot: non-blank texts, at least one turn, usable keywords, unique
    /// intent names, and the size limits (module docs, **Limits**).
    pub fn validate(&self) -> Result<(), ScriptError> {
        let invalid = |field: String, problem| Err(ScriptError::Invalid { field, problem });
        if self.opening.trim().is_empty() {
            return invalid("opening".into(), "must not be blank");
        }
        if self.fallback.trim().is_empty() {
            return invalid("fallback".into(), "must not be blank");
        }
        for (field, text) in self.texts() {
            if text.chars().count() > MAX_TEXT_CHARS {
                return invalid(field, "must be at most 1600 characters");
            }
            if placeholder_count(text) > MAX_PLACEHOLDERS {
                return invalid(field, "must have at most 20 {{placeholders}}");
            }
        }
        if self.intents.len() > MAX_INTENTS {
            return invalid("intents".into(), "at most 50 intents");
        }
        if self.max_turns == 0 {
            return invalid("max_turns".into(), "must be at least 1");
        }
        for (field, text) in [("closing", &self.closing), ("help_text", &self.help_text)] {
            if text.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return invalid(field.into(), "must not be blank when set");
            }
        }
        for (at, intent) in self.intents.iter().enumerate() {
            let field = |name: &str| format!("intents[{at}].{name}");
            if intent.name.trim().is_empty() {
                return invalid(field("name"), "must not be blank");
            }
            if self.intents[..at]
                .iter()
                .any(|other| other.name == intent.name)
            {
                return invalid(field("name"), "is used by an earlier intent");
            }
            if intent.reply.trim().is_empty() {
                return invalid(field("reply"), "must not be blank");
            }
            if intent.keywords.is_empty() {
                return invalid(field("keywords"), "must list at least one keyword");
            }
            if intent.keywords.len() > MAX_KEYWORDS {
                return invalid(field("keywords"), "at most 50 keywords");
            }
            if intent
                .keywords
                .iter()
                .any(|k| k.chars().count() > MAX_KEYWORD_CHARS)
            {
                return invalid(field("keywords"), "every keyword is at most 100 characters");
            }
            if intent.keywords.iter().any(|k| words(k).is_empty()) {
                return invalid(
                    field("keywords"),
                    "every keyword needs at least one letter or digit",
                );
            }
        }
        Ok(())
    }

    /// Checks that no text of the script, filled from `conversation`'s contact name and
    /// variables, is longer than one SMS ([`MAX_RENDERED_CHARS`]). Enrollment calls this so
    /// that variables which would make a text overflow are refused (422) rather than cut off
    /// mid-sentence; the error names the script's field, never a value.
    pub fn check_rendering(&self, conversation: &Conversation) -> Result<(), ScriptError> {
        for (field, text) in self.texts() {
            if conversation.render_bounded(text).truncated {
                return Err(ScriptError::Invalid {
                    field,
                    problem: "would be longer than 1600 characters with these variables",
                });
            }
        }
        Ok(())
    }

    /// The help text in force.
    pub fn help_text(&self) -> &str {
        self.help_text.as_deref().unwrap_or(DEFAULT_HELP_TEXT)
    }

    /// The closing text in force.
    pub fn closing(&self) -> &str {
        self.closing.as_deref().unwrap_or(DEFAULT_CLOSING)
    }

    /// The first intent with a keyword in `text`.
    pub fn match_intent(&self, text: &str) -> Option<&Intent> {
        let said = words(text);
        self.intents.iter().find(|intent| {
            intent
                .keywords
                .iter()
                .any(|keyword| contains_run(&said, &words(keyword)))
        })
    }
}

/// A serde error as a [`ScriptError::Malformed`] that names a key at most, never a value:
/// serde's messages quote the offending value for type errors.
fn malformed(error: &serde_json::Error) -> ScriptError {
    let text = error.to_string();
    let message = match text.split_once(',') {
        Some((unknown, _)) if unknown.starts_with("unknown field") => unknown.to_owned(),
        _ if text.starts_with("missing field") => {
            text.split(" at line").next().unwrap_or_default().to_owned()
        }
        _ => "not of the documented shape (opening, intents, fallback, max_turns, closing, help_text)"
            .to_owned(),
    };
    ScriptError::Malformed(message)
}

/// How many `{{...}}` placeholders `text` has (as [`Conversation::render`] reads them).
pub fn placeholder_count(text: &str) -> usize {
    let mut count = 0;
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        count += 1;
        rest = &rest[open + 2 + close + 2..];
    }
    count
}

/// `text` cut to at most [`MAX_RENDERED_CHARS`] characters (on a character boundary).
pub fn truncate_to_budget(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_RENDERED_CHARS) {
        text.truncate(cut);
    }
    text
}

/// A rendered text, and whether the budget cut it short.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    /// At most [`MAX_RENDERED_CHARS`] characters.
    pub text: String,
    /// Whether the full rendering would have been longer.
    pub truncated: bool,
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The text holds the contact's values (PHI).
        f.debug_struct("Rendered")
            .field("text", &crate::redact::Hidden)
            .field("truncated", &self.truncated)
            .finish()
    }
}

/// Appends to a string up to a character budget, remembering whether anything was cut.
struct Budgeted {
    text: String,
    left: usize,
    truncated: bool,
}

impl Budgeted {
    fn push(&mut self, piece: &str) {
        if self.truncated {
            return;
        }
        match piece.char_indices().nth(self.left) {
            Some((cut, _)) => {
                self.text.push_str(&piece[..cut]);
                self.left = 0;
                self.truncated = true;
            }
            None => {
                self.left -= piece.chars().count();
                self.text.push_str(piece);
            }
        }
    }
}

/// Lowercased words: runs of letters, digits and apostrophes.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .map(|word| word.trim_matches(['\'', '’']))
        .filter(|word| !word.is_empty())
        .map(|word| word.replace('’', "'").to_lowercase())
        .collect()
}

fn contains_run(haystack: &[String], needle: &[String]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// How an SMS conversation ended (module docs, table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmsEnd {
    /// An intent resolved it.
    Resolved,
    /// The contact declined.
    Declined,
    /// The contact needs a person.
    Escalated,
    /// The contact opted out (keyword, `OptOutType`, an opt-out intent, or Twilio error 21610).
    OptOut,
    /// `max_turns` replies without a resolution.
    TurnLimit,
    /// No reply before the conversation timed out (decided by the caller's clock).
    NoReply,
    /// Sending failed for good.
    Error,
}

impl SmsEnd {
    /// Every end, in the table's order.
    pub const ALL: [SmsEnd; 7] = [
        SmsEnd::Resolved,
        SmsEnd::Declined,
        SmsEnd::OptOut,
        SmsEnd::Escalated,
        SmsEnd::TurnLimit,
        SmsEnd::NoReply,
        SmsEnd::Error,
    ];

    /// The report's `ended_reason`: the outcome's, as every channel reports it
    /// ([`report_map::sms_ended_reason_of`]).
    pub fn ended_reason(self) -> SmsEndedReason {
        report_map::sms_ended_reason_of(self.outcome())
    }

    /// The encounter outcome in the engine's vocabulary.
    pub fn outcome(self) -> EncounterOutcome {
        match self {
            SmsEnd::Resolved => EncounterOutcome::Resolved,
            SmsEnd::Declined => EncounterOutcome::Declined,
            SmsEnd::OptOut => EncounterOutcome::OptOut,
            SmsEnd::Escalated => EncounterOutcome::Escalated,
            SmsEnd::TurnLimit => EncounterOutcome::Unresolved,
            SmsEnd::NoReply => EncounterOutcome::NoReply,
            SmsEnd::Error => EncounterOutcome::Error,
        }
    }

    /// The encounter outcome the scheduler gives the engine, by its wire name.
    pub fn engine_outcome(self) -> &'static str {
        self.outcome().as_str()
    }

    /// Whether the number goes on the suppression list.
    pub fn suppresses(self) -> bool {
        self == SmsEnd::OptOut
    }
}

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Speaker {
    /// Clarion's assistant.
    Ai,
    /// The contact.
    User,
}

/// One message of the conversation.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who sent it.
    pub speaker: Speaker,
    /// The text (PHI).
    pub text: String,
    /// For the contact's messages: whether it counted towards `max_turns` (help requests do
    /// not).
    #[serde(default)]
    pub counted: bool,
    /// For the contact's messages: the intent it matched.
    #[serde(default)]
    pub intent: Option<String>,
}

impl fmt::Debug for Turn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn")
            .field("speaker", &self.speaker)
            .field("text", &crate::redact::Hidden)
            .field("counted", &self.counted)
            .field("intent", &self.intent)
            .finish()
    }
}

/// An SMS conversation so far: the contact's template values and the messages. This is the
/// state the server stores between inbound webhooks (it is `Serialize`); it holds PHI, so its
/// `Debug` shows only counts.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The contact's name, for `{{name}}` and `{{first_name}}`.
    #[serde(default)]
    pub contact_name: Option<String>,
    /// The enrollment's variables.
    #[serde(default)]
    pub variables: Map<String, Value>,
    /// The messages, oldest first.
    #[serde(default)]
    pub turns: Vec<Turn>,
    /// Custom analysis values set by the intents matched so far (later ones win).
    #[serde(default)]
    pub custom: Map<String, Value>,
    /// Our number, once the provider has told it (the `To` of an inbound text).
    #[serde(default)]
    pub our_number: Option<String>,
    /// The provider ids of the inbound messages answered (Twilio's `MessageSid`), so a
    /// repeated or replayed webhook is not answered twice.
    #[serde(default)]
    pub handled: Vec<String>,
}

impl fmt::Debug for Conversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conversation")
            .field("contact_name", &Opt(&self.contact_name))
            .field("variables", &Count(self.variables.len()))
            .field("turns", &Count(self.turns.len()))
            .field("custom", &Count(self.custom.len()))
            .finish()
    }
}

impl Conversation {
    /// A conversation with no messages yet.
    pub fn new(contact_name: Option<String>, variables: Map<String, Value>) -> Self {
        Self {
            contact_name,
            variables,
            turns: Vec::new(),
            custom: Map::new(),
            our_number: None,
            handled: Vec::new(),
        }
    }

    /// Renders the script's opening, records it as the first AI message and returns it.
    pub fn open(&mut self, script: &ScriptConfig) -> String {
        let text = self.render(&script.opening);
        self.turns.push(Turn {
            speaker: Speaker::Ai,
            text: text.clone(),
            counted: false,
            intent: None,
        });
        text
    }

    /// Records an inbound message and our answer to it, as [`respond`] decided (with the
    /// custom analysis values of the intent it matched, if any, from `script`).
    pub fn record_with(&mut self, script: &ScriptConfig, inbound: &str, decision: &Decision) {
        if let Some(name) = decision.route.intent()
            && let Some(intent) = script.intents.iter().find(|i| i.name == name)
        {
            self.custom
                .extend(intent.custom.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.record(inbound, decision);
    }

    /// Records an inbound message and our answer to it, as [`respond`] decided.
    pub fn record(&mut self, inbound: &str, decision: &Decision) {
        self.turns.push(Turn {
            speaker: Speaker::User,
            text: inbound.to_owned(),
            counted: decision.counts_as_reply,
            intent: decision.route.intent().map(str::to_owned),
        });
        if let Some(reply) = &decision.reply {
            self.turns.push(Turn {
                speaker: Speaker::Ai,
                text: reply.clone(),
                counted: false,
                intent: None,
            });
        }
    }

    /// How many of the contact's messages counted towards `max_turns`.
    pub fn replies(&self) -> u32 {
        let counted = self
            .turns
            .iter()
            .filter(|turn| turn.speaker == Speaker::User && turn.counted)
            .count();
        u32::try_from(counted).unwrap_or(u32::MAX)
    }

    /// The report's transcript: `AI:` / `User:` lines, line breaks inside a message flattened.
    pub fn transcript(&self) -> String {
        self.turns
            .iter()
            .map(|turn| {
                let label = match turn.speaker {
                    Speaker::Ai => "AI",
                    Speaker::User => "User",
                };
                let text = turn.text.split_whitespace().collect::<Vec<_>>().join(" ");
                format!("{label}: {text}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Fills `{{placeholders}}` (module docs). Never fails, and never returns (or builds)
    /// more than [`MAX_RENDERED_CHARS`] characters, whatever the template and variables.
    pub fn render(&self, template: &str) -> String {
        self.render_bounded(template).text
    }

    /// [`Conversation::render`], saying whether the budget cut the text short. Stops reading
    /// the template once the budget is spent, so the work is bounded too.
    pub fn render_bounded(&self, template: &str) -> Rendered {
        let mut out = Budgeted {
            text: String::with_capacity(template.len().min(MAX_RENDERED_CHARS * 4)),
            left: MAX_RENDERED_CHARS,
            truncated: false,
        };
        let mut rest = template;
        while !out.truncated
            && let Some(open) = rest.find("{{")
        {
            let Some(close) = rest[open + 2..].find("}}") else {
                break;
            };
            out.push(&rest[..open]);
            let name = rest[open + 2..open + 2 + close].trim();
            out.push(&self.value_of(name));
            rest = &rest[open + 2 + close + 2..];
        }
        out.push(rest);
        Rendered {
            text: out.text,
            truncated: out.truncated,
        }
    }

    fn value_of(&self, name: &str) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        if let Some(value) = self.variables.get(name) {
            return match value {
                Value::String(text) => Cow::Borrowed(text),
                Value::Number(number) => Cow::Owned(number.to_string()),
                Value::Bool(flag) => Cow::Owned(flag.to_string()),
                Value::Null | Value::Array(_) | Value::Object(_) => Cow::Borrowed(""),
            };
        }
        let full = self.contact_name.as_deref().unwrap_or_default().trim();
        match name {
            "name" | "contact_name" => Cow::Borrowed(full),
            "first_name" => Cow::Borrowed(full.split_whitespace().next().unwrap_or_default()),
            _ => Cow::Borrowed(""),
        }
    }
}

/// Which rule answered an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An opt-out keyword.
    OptOut,
    /// A revocation in words: the name of the [`clarion_channels::revocation`] rule.
    Revocation(&'static str),
    /// A help keyword.
    Help,
    /// The named intent.
    Intent(String),
    /// Nothing matched.
    Fallback,
    /// The turn limit was reached; `intent` is what this last message matched, if anything.
    TurnLimit {
        /// The intent matched by the last message.
        intent: Option<String>,
    },
}

impl Route {
    /// The intent the message matched, if any.
    pub fn intent(&self) -> Option<&str> {
        match self {
            Route::Intent(name) => Some(name),
            Route::TurnLimit { intent } => intent.as_deref(),
            _ => None,
        }
    }
}

/// What to do with one inbound message.
#[derive(Clone, PartialEq, Eq)]
pub struct Decision {
    /// The text to send back, if any.
    pub reply: Option<String>,
    /// Set when the conversation is over.
    pub end: Option<SmsEnd>,
    /// Which rule decided.
    pub route: Route,
    /// The keyword reading of the message (an `OptIn` is informational, see the keywords
    /// module).
    pub keyword: Keyword,
    /// Whether the message counts towards `max_turns`.
    pub counts_as_reply: bool,
}

impl Decision {
    /// Why this decision ends the conversation as an opt-out, for the sequence's events;
    /// `None` when it does not. `by_model`: the LLM assistant decided.
    pub fn opt_out_evidence(&self, by_model: bool) -> Option<Evidence> {
        if self.end != Some(SmsEnd::OptOut) {
            return None;
        }
        let (source, detail) = match &self.route {
            Route::OptOut => ("keyword", "opt-out-keyword".to_owned()),
            Route::Revocation(rule) => ("phrase", (*rule).to_owned()),
            _ if by_model => ("intent", "llm".to_owned()),
            Route::Intent(name) => ("intent", name.clone()),
            _ => ("intent", "script".to_owned()),
        };
        Some(Evidence { source, detail })
    }
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("reply", &Opt(&self.reply))
            .field("end", &self.end)
            .field("route", &self.route)
            .field("keyword", &self.keyword)
            .field("counts_as_reply", &self.counts_as_reply)
            .finish()
    }
}

/// Decides the answer to an inbound text (module docs).
pub fn respond(script: &ScriptConfig, conversation: &Conversation, inbound: &str) -> Decision {
    respond_to(script, conversation, inbound, None)
}

/// [`respond`], with Twilio's `OptOutType` parameter when the webhook had one.
pub fn respond_to(
    script: &ScriptConfig,
    conversation: &Conversation,
    inbound: &str,
    opt_out_type: Option<&str>,
) -> Decision {
    let keyword = classify_inbound(inbound, opt_out_type);
    let decision = |reply: Option<String>, end, route, counts_as_reply| Decision {
        reply,
        end,
        route,
        keyword,
        counts_as_reply,
    };
    match keyword {
        Keyword::OptOut => return decision(None, Some(SmsEnd::OptOut), Route::OptOut, true),
        Keyword::Help => {
            let help = conversation.render(script.help_text());
            return decision(Some(help), None, Route::Help, false);
        }
        Keyword::OptIn | Keyword::Other => {}
    }
    if let Some(rule) = revocation::in_utterance(inbound) {
        let own = script
            .match_intent(inbound)
            .filter(|intent| intent.resolution.map(SmsEnd::from) == Some(SmsEnd::OptOut));
        return match own {
            Some(intent) => decision(
                Some(conversation.render(&intent.reply)),
                Some(SmsEnd::OptOut),
                Route::Intent(intent.name.clone()),
                true,
            ),
            None => decision(
                Some(DEFAULT_OPT_OUT_CONFIRMATION.to_owned()),
                Some(SmsEnd::OptOut),
                Route::Revocation(rule.name),
                true,
            ),
        };
    }
    let last_turn = conversation.replies().saturating_add(1) >= script.max_turns;
    let closing = || conversation.render(script.closing());
    match script.match_intent(inbound) {
        Some(intent) => {
            let reply = conversation.render(&intent.reply);
            let name = intent.name.clone();
            match intent.resolution {
                Some(resolution) => decision(
                    Some(reply),
                    Some(resolution.into()),
                    Route::Intent(name),
                    true,
                ),
                None if last_turn => decision(
                    // Two texts in one message: still one SMS at most.
                    Some(truncate_to_budget(format!("{reply} {}", closing()))),
                    Some(SmsEnd::TurnLimit),
                    Route::TurnLimit { intent: Some(name) },
                    true,
                ),
                None => decision(Some(reply), None, Route::Intent(name), true),
            }
        }
        None if last_turn => decision(
            Some(closing()),
            Some(SmsEnd::TurnLimit),
            Route::TurnLimit { intent: None },
            true,
        ),
        None => decision(
            Some(conversation.render(&script.fallback)),
            None,
            Route::Fallback,
            true,
        ),
    }
}

/// A short description of the conversation for the report's `summary`: how many replies, which
/// intents they matched, and how it ended (`None`: still open). Never includes phone numbers or
/// message text.
pub fn summary(conversation: &Conversation, end: Option<SmsEnd>) -> String {
    let replies = conversation.replies();
    let help_requests = conversation
        .turns
        .iter()
        .filter(|turn| turn.speaker == Speaker::User && !turn.counted)
        .count();
    let mut intents: Vec<&str> = Vec::new();
    for name in conversation
        .turns
        .iter()
        .filter_map(|t| t.intent.as_deref())
    {
        if !intents.contains(&name) {
            intents.push(name);
        }
    }
    let times = |n: usize| {
        if n == 1 {
            "once".to_owned()
        } else {
            format!("{n} times")
        }
    };
    let mut text = String::from("Sent the opening text. ");
    if replies == 0 && help_requests == 0 {
        text.push_str("The contact did not reply. ");
    } else if replies > 0 {
        text.push_str(&format!("The contact replied {}", times(replies as usize)));
        if !intents.is_empty() {
            text.push_str(&format!(" (matched: {})", intents.join(", ")));
        }
        text.push_str(". ");
    }
    if help_requests > 0 {
        text.push_str(&format!("They asked for help {}. ", times(help_requests)));
    }
    text.push_str(match end {
        Some(SmsEnd::Resolved) => "Resolved.",
        Some(SmsEnd::Declined) => "The contact declined.",
        Some(SmsEnd::Escalated) => "The contact asked for a person; handed to staff.",
        Some(SmsEnd::OptOut) => "The contact opted out; no further messages will be sent.",
        Some(SmsEnd::TurnLimit) => {
            "Not resolved before the reply limit; the conversation was closed."
        }
        Some(SmsEnd::NoReply) => "The conversation timed out waiting for a reply.",
        Some(SmsEnd::Error) => "The conversation stopped because of a messaging error.",
        None => "The conversation is still open.",
    });
    text
}

/// The report's `Sms` object for a conversation: ended (`end` is `Some`) or still running.
pub fn sms_report(
    conversation: &Conversation,
    end: Option<SmsEnd>,
    ids: (i64, i64),
    numbers: (Option<&str>, &str),
    times: (
        Option<clarion_webhooks::Timestamp>,
        Option<clarion_webhooks::Timestamp>,
    ),
) -> clarion_webhooks::Sms {
    let (encounter_id, assistant_id) = ids;
    let (source_number, destination_number) = numbers;
    let (started_at, ended_at) = times;
    let transcript = conversation.transcript();
    clarion_webhooks::Sms {
        id: encounter_id,
        assistant_id,
        started_at,
        ended_at: end.and(ended_at),
        status: if end.is_some() {
            clarion_webhooks::SmsStatus::Ended
        } else {
            clarion_webhooks::SmsStatus::Active
        },
        ended_reason: end.map(SmsEnd::ended_reason),
        transcript: (!transcript.is_empty()).then_some(transcript),
        source_number: source_number
            .map(str::to_owned)
            .or_else(|| conversation.our_number.clone()),
        destination_number: Some(destination_number.to_owned()),
        analysis: Some(clarion_webhooks::SmsAnalysis {
            custom: (!conversation.custom.is_empty()).then(|| conversation.custom.clone()),
        }),
        summary: Some(summary(conversation, end)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn script() -> ScriptConfig {
        ScriptConfig::from_assistant_config(&json!({"script": {
            "opening": "Hi {{first_name}}, this is Riverside Clinic. You have a visit on {{appointment_date}} at {{ appointment_time }}. Reply YES to confirm or NO to cancel.",
            "intents": [
                {"name": "staff", "keywords": ["call me", "speak to someone", "human"], "reply": "A member of our team will call you.", "resolution": "escalated"},
                {"name": "remove", "keywords": ["take me off", "stop texting"], "reply": "You will not get more texts from us.", "resolution": "opt-out"},
                {"name": "confirm", "keywords": ["yes", "confirm", "I'll be there"], "reply": "Thank you {{first_name}}, see you on {{appointment_date}}!", "resolution": "resolved"},
                {"name": "decline", "keywords": ["no", "can't make it"], "reply": "Understood, we will let the office know.", "resolution": "declined"},
                {"name": "when", "keywords": ["when", "what time"], "reply": "Your visit is on {{appointment_date}}.", "resolution": null}
            ],
            "fallback": "Sorry, I didn't catch that. Reply YES to confirm or NO to cancel.",
            "max_turns": 3,
            "help_text": "Riverside Clinic appointment texts. Reply STOP to opt out."
        }}))
        .unwrap()
    }

    fn conversation() -> Conversation {
        let mut variables = Map::new();
        variables.insert("appointment_date".into(), json!("May 2"));
        variables.insert("appointment_time".into(), json!("10:30"));
        let mut conversation = Conversation::new(Some("Ana Lopez".into()), variables);
        conversation.open(&script());
        conversation
    }

    /// Sends `inbound` and records it; returns the decision.
    fn say(conversation: &mut Conversation, inbound: &str) -> Decision {
        let decision = respond(&script(), conversation, inbound);
        conversation.record(inbound, &decision);
        decision
    }

    #[test]
    fn the_opening_fills_placeholders() {
        let conversation = conversation();
        assert_eq!(
            conversation.transcript(),
            "AI: Hi Ana, this is Riverside Clinic. You have a visit on May 2 at 10:30. Reply YES to confirm or NO to cancel."
        );
    }

    #[test]
    fn missing_and_odd_placeholders_never_panic() {
        let mut variables = Map::new();
        variables.insert("count".into(), json!(3));
        variables.insert("flag".into(), json!(true));
        variables.insert("nothing".into(), Value::Null);
        variables.insert("list".into(), json!([1, 2]));
        variables.insert("sneaky".into(), json!("{{count}}"));
        variables.insert("name".into(), json!("Override"));
        let conversation = Conversation::new(None, variables);
        assert_eq!(
            conversation.render("[{{missing}}|{{count}}|{{flag}}|{{nothing}}|{{list}}|{{first_name}}|{{sneaky}}|{{name}}|{{}}]"),
            "[|3|true||||{{count}}|Override|]"
        );
        assert_eq!(
            conversation.render("open {{ never closed"),
            "open {{ never closed"
        );
        assert_eq!(conversation.render("}} {{"), "}} {{");
        assert_eq!(conversation.render(""), "");
        let named = Conversation::new(Some("  Ana   Maria Lopez ".into()), Map::new());
        assert_eq!(
            named.render("{{first_name}}/{{name}}/{{contact_name}}"),
            "Ana/Ana   Maria Lopez/Ana   Maria Lopez"
        );
    }

    #[test]
    fn rendering_never_exceeds_one_sms_whatever_the_template_and_variables() {
        // The issue's attack: 500 × {{x}} with a 100 KB variable rendered 50 MB.
        let mut variables = Map::new();
        variables.insert("x".into(), json!("é".repeat(100_000)));
        let conversation = Conversation::new(Some("Ana".into()), variables.clone());
        assert_eq!(
            conversation.render(&"{{x}}".repeat(500)).chars().count(),
            MAX_RENDERED_CHARS
        );
        let rendered = conversation.render_bounded(&"{{x}}".repeat(500));
        assert!(rendered.truncated);
        assert_eq!(rendered.text.chars().count(), MAX_RENDERED_CHARS);
        assert!(rendered.text.len() <= MAX_RENDERED_CHARS * 4);
        // A pseudo-random sweep of shapes: literal runs, placeholders (known, unknown,
        // built-in, unclosed), multi-byte text, values from empty to huge.
        let pieces = [
            "{{x}}",
            "{{ y }}",
            "{{first_name}}",
            "{{missing}}",
            "{{",
            "}}",
            "Hello, ",
            "日本語テキスト",
            "{{name}}",
            "",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |bound: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(seed >> 33).unwrap() % bound
        };
        for _ in 0..200 {
            let mut variables = Map::new();
            variables.insert("x".into(), json!("a".repeat(next(3_000))));
            variables.insert("y".into(), json!("ü".repeat(next(2_000))));
            let name = "N".repeat(next(3_000));
            let conversation = Conversation::new(Some(name), variables);
            let template: String = (0..next(300)).map(|_| pieces[next(pieces.len())]).collect();
            let rendered = conversation.render_bounded(&template);
            let chars = rendered.text.chars().count();
            assert!(chars <= MAX_RENDERED_CHARS, "{chars}");
            // Cut exactly when the unbounded rendering would be longer; otherwise whole.
            let full = unbounded_len(&conversation, &template);
            assert_eq!(rendered.truncated, full > MAX_RENDERED_CHARS);
            assert_eq!(chars, full.min(MAX_RENDERED_CHARS));
        }
    }

    /// The length the old, unbounded renderer would have produced (for the test above).
    fn unbounded_len(conversation: &Conversation, template: &str) -> usize {
        let mut length = 0;
        let mut rest = template;
        while let Some(open) = rest.find("{{") {
            let Some(close) = rest[open + 2..].find("}}") else {
                break;
            };
            length += rest[..open].chars().count();
            length += conversation
                .value_of(rest[open + 2..open + 2 + close].trim())
                .chars()
                .count();
            rest = &rest[open + 2 + close + 2..];
        }
        length + rest.chars().count()
    }

    #[test]
    fn every_reply_including_reply_plus_closing_fits_one_sms() {
        let mut script = script();
        let long = format!("{}{{{{appointment_date}}}}", "r".repeat(1_500));
        script.closing = Some(long.clone());
        for intent in &mut script.intents {
            intent.reply = long.clone();
        }
        script.fallback = long.clone();
        script.help_text = Some(long);
        let mut variables = Map::new();
        variables.insert("appointment_date".into(), json!("d".repeat(1_024)));
        let mut conversation = Conversation::new(None, variables);
        assert!(conversation.open(&script).chars().count() <= MAX_RENDERED_CHARS);
        for text in ["HELP", "hmm", "what?", "when is it", "yes"] {
            let decision = respond(&script, &conversation, text);
            let reply = decision.reply.clone().unwrap();
            assert!(reply.chars().count() <= MAX_RENDERED_CHARS, "{text}");
            conversation.record(text, &decision);
        }
        assert!(
            script.check_rendering(&conversation).is_err(),
            "a 1,500-character text plus a 1,024-character value overflows"
        );
    }

    #[test]
    fn script_size_limits_are_enforced() {
        let base = || {
            json!({
                "opening": "Hi {{first_name}}", "fallback": "Sorry?",
                "intents": [{"name": "yes", "keywords": ["yes"], "reply": "Thanks", "resolution": "resolved"}]
            })
        };
        let check = |mutate: &dyn Fn(&mut Value)| {
            let mut script = base();
            mutate(&mut script);
            ScriptConfig::from_assistant_config(&json!({ "script": script }))
        };
        let field_of = |result: Result<ScriptConfig, ScriptError>| match result {
            Err(ScriptError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        // At the limits: accepted.
        check(&|s| s["opening"] = json!("o".repeat(MAX_TEXT_CHARS))).unwrap();
        check(&|s| s["fallback"] = json!("{{a}}".repeat(MAX_PLACEHOLDERS))).unwrap();
        // Over them: refused, naming the field.
        assert_eq!(
            field_of(check(
                &|s| s["opening"] = json!("o".repeat(MAX_TEXT_CHARS + 1))
            )),
            "opening"
        );
        assert_eq!(
            field_of(check(&|s| s["opening"] = json!("{{x}}".repeat(500)))),
            "opening"
        );
        assert_eq!(
            field_of(check(
                &|s| s["fallback"] = json!("{{a}} ".repeat(MAX_PLACEHOLDERS + 1))
            )),
            "fallback"
        );
        assert_eq!(
            field_of(check(
                &|s| s["closing"] = json!("c".repeat(MAX_TEXT_CHARS + 1))
            )),
            "closing"
        );
        assert_eq!(
            field_of(check(&|s| s["help_text"] = json!("{{h}}".repeat(21)))),
            "help_text"
        );
        assert_eq!(
            field_of(check(
                &|s| s["intents"][0]["reply"] = json!("{{x}}".repeat(21))
            )),
            "intents[0].reply"
        );
        assert_eq!(
            field_of(check(
                &|s| s["intents"][0]["keywords"] = json!(vec!["k"; 51])
            )),
            "intents[0].keywords"
        );
        assert_eq!(
            field_of(check(
                &|s| s["intents"][0]["keywords"] = json!(["k".repeat(101)])
            )),
            "intents[0].keywords"
        );
        assert_eq!(
            field_of(check(&|s| {
                let intents: Vec<Value> = (0..51)
                    .map(|i| json!({"name": format!("i{i}"), "keywords": ["k"], "reply": "r"}))
                    .collect();
                s["intents"] = json!(intents);
            })),
            "intents"
        );
        // Type errors do not quote the submitted value.
        let error = check(&|s| s["max_turns"] = json!("secret-ish value")).unwrap_err();
        assert!(!error.to_string().contains("secret-ish"), "{error}");
    }

    #[test]
    fn placeholders_are_counted_as_rendered() {
        assert_eq!(placeholder_count("{{a}} {{ b }} {{"), 2);
        assert_eq!(placeholder_count("}} {{}}"), 1);
        assert_eq!(placeholder_count(""), 0);
    }

    #[test]
    fn a_confirmation_resolves() {
        let mut conversation = conversation();
        let decision = say(&mut conversation, "Yes!");
        assert_eq!(decision.route, Route::Intent("confirm".into()));
        assert_eq!(
            decision.reply.as_deref(),
            Some("Thank you Ana, see you on May 2!")
        );
        assert_eq!(decision.end, Some(SmsEnd::Resolved));
        // YES is Twilio's opt-in keyword; it is still a reply for the assistant.
        assert_eq!(decision.keyword, Keyword::OptIn);
        assert!(decision.counts_as_reply);
        assert_eq!(SmsEnd::Resolved.ended_reason(), SmsEndedReason::Resolved);
    }

    #[test]
    fn a_refusal_declines() {
        let decision = respond(&script(), &conversation(), "Sorry, I can’t make it");
        assert_eq!(decision.route, Route::Intent("decline".into()));
        assert_eq!(decision.end, Some(SmsEnd::Declined));
        assert_eq!(
            decision.reply.as_deref(),
            Some("Understood, we will let the office know.")
        );
        assert_eq!(
            SmsEnd::Declined.ended_reason(),
            SmsEndedReason::ContactDeclined
        );
        assert_eq!(SmsEnd::Declined.engine_outcome(), "declined");
    }

    #[test]
    fn asking_for_a_person_escalates() {
        let decision = respond(&script(), &conversation(), "Can someone CALL ME please");
        assert_eq!(decision.route, Route::Intent("staff".into()));
        assert_eq!(decision.end, Some(SmsEnd::Escalated));
        assert_eq!(
            decision.reply.as_deref(),
            Some("A member of our team will call you.")
        );
        assert_eq!(SmsEnd::Escalated.engine_outcome(), "escalated");
        assert_eq!(SmsEnd::Escalated.ended_reason(), SmsEndedReason::Unknown);
    }

    #[test]
    fn a_question_gets_its_answer_and_the_conversation_goes_on() {
        let decision = respond(&script(), &conversation(), "When is it again?");
        assert_eq!(decision.route, Route::Intent("when".into()));
        assert_eq!(decision.reply.as_deref(), Some("Your visit is on May 2."));
        assert_eq!(decision.end, None);
    }

    #[test]
    fn a_free_text_revocation_opts_out_with_one_confirmation() {
        let decision = respond(&script(), &conversation(), "please take me off your list");
        assert_eq!(decision.route, Route::Intent("remove".into()));
        assert_eq!(decision.end, Some(SmsEnd::OptOut));
        assert!(decision.end.unwrap().suppresses());
        assert_eq!(
            decision.reply.as_deref(),
            Some("You will not get more texts from us.")
        );
    }

    #[test]
    fn keywords_match_whole_words_only() {
        let script = script();
        // "yesterday" is not "yes", "nope" is not "no", "know" is not "no".
        assert_eq!(script.match_intent("I called yesterday"), None);
        assert_eq!(script.match_intent("nope"), None);
        assert_eq!(script.match_intent("I know"), None);
        // Phrases need their words in a row.
        assert_eq!(
            script.match_intent("call, me").map(|i| i.name.as_str()),
            Some("staff")
        );
        assert_eq!(script.match_intent("me call"), None);
        assert_eq!(
            script
                .match_intent("I'LL BE THERE")
                .map(|i| i.name.as_str()),
            Some("confirm")
        );
        // Order decides: "yes but call me" is the earlier-listed staff intent.
        assert_eq!(
            script
                .match_intent("yes but call me")
                .map(|i| i.name.as_str()),
            Some("staff")
        );
    }

    #[test]
    fn unmatched_replies_get_the_fallback() {
        let mut conversation = conversation();
        let decision = say(&mut conversation, "hmm 🤔");
        assert_eq!(decision.route, Route::Fallback);
        assert_eq!(
            decision.reply.as_deref(),
            Some("Sorry, I didn't catch that. Reply YES to confirm or NO to cancel.")
        );
        assert_eq!(decision.end, None);
        assert_eq!(conversation.replies(), 1);
        // An empty body (a picture) is a reply too.
        assert_eq!(say(&mut conversation, "").route, Route::Fallback);
        assert_eq!(conversation.replies(), 2);
    }

    #[test]
    fn the_turn_limit_closes_an_unresolved_conversation() {
        let mut conversation = conversation();
        assert_eq!(say(&mut conversation, "what?").end, None);
        assert_eq!(say(&mut conversation, "who is this").end, None);
        let last = say(&mut conversation, "hmm");
        assert_eq!(last.route, Route::TurnLimit { intent: None });
        assert_eq!(last.end, Some(SmsEnd::TurnLimit));
        assert_eq!(last.reply.as_deref(), Some(DEFAULT_CLOSING));
        assert_eq!(
            SmsEnd::TurnLimit.ended_reason(),
            SmsEndedReason::ConversationTimeout
        );
        assert_eq!(SmsEnd::TurnLimit.engine_outcome(), "unresolved");
    }

    #[test]
    fn a_question_on_the_last_turn_is_answered_before_closing() {
        let mut conversation = conversation();
        say(&mut conversation, "what?");
        say(&mut conversation, "who is this");
        let last = say(&mut conversation, "what time is it?");
        assert_eq!(
            last.route,
            Route::TurnLimit {
                intent: Some("when".into())
            }
        );
        assert_eq!(
            last.reply.as_deref(),
            Some(format!("Your visit is on May 2. {DEFAULT_CLOSING}").as_str())
        );
        assert_eq!(last.end, Some(SmsEnd::TurnLimit));
    }

    #[test]
    fn a_resolution_on_the_last_turn_still_resolves() {
        let mut conversation = conversation();
        say(&mut conversation, "what?");
        say(&mut conversation, "who is this");
        let last = say(&mut conversation, "ok yes");
        assert_eq!(last.end, Some(SmsEnd::Resolved));
        assert_eq!(last.route, Route::Intent("confirm".into()));
    }

    #[test]
    fn stop_mid_conversation_ends_it_without_a_reply() {
        let mut conversation = conversation();
        say(&mut conversation, "when?");
        for stop in ["STOP", "stop", " Unsubscribe ", "QUIT.", "opt out"] {
            let decision = respond(&script(), &conversation, stop);
            assert_eq!(decision.end, Some(SmsEnd::OptOut), "{stop}");
            assert_eq!(decision.reply, None, "{stop}");
            assert_eq!(decision.route, Route::OptOut, "{stop}");
            assert_eq!(decision.keyword, Keyword::OptOut, "{stop}");
        }
        // Also when Twilio's Advanced Opt-Out recognised a custom keyword.
        let decision = respond_to(&script(), &conversation, "PARAR", Some("STOP"));
        assert_eq!(decision.end, Some(SmsEnd::OptOut));
        assert_eq!(decision.reply, None);
        // And on what would have been the last turn.
        say(&mut conversation, "huh");
        let decision = respond(&script(), &conversation, "STOP");
        assert_eq!(decision.end, Some(SmsEnd::OptOut));
        assert_eq!(decision.reply, None);
        assert_eq!(SmsEnd::OptOut.ended_reason(), SmsEndedReason::ContactOptOut);
        assert_eq!(SmsEnd::OptOut.engine_outcome(), "opt-out");
    }

    #[test]
    fn stop_inside_a_sentence_is_not_a_keyword_but_may_be_a_revocation() {
        // "STOP PLEASE" is not Twilio's opt-out keyword (Twilio confirmed nothing), but it is
        // a revocation in words: Clarion ends the conversation and confirms once.
        let decision = respond(&script(), &conversation(), "STOP PLEASE");
        assert_eq!(decision.keyword, Keyword::Other);
        assert_eq!(decision.route, Route::Revocation("please-stop"));
        assert_eq!(decision.end, Some(SmsEnd::OptOut));
        assert_eq!(
            decision.reply.as_deref(),
            Some(DEFAULT_OPT_OUT_CONFIRMATION)
        );
        // "stop texting" is an opt-out intent in this script: its own reply confirms.
        let decision = respond(&script(), &conversation(), "please stop texting me");
        assert_eq!(decision.end, Some(SmsEnd::OptOut));
        assert_eq!(decision.route, Route::Intent("remove".into()));
        assert_eq!(
            decision.reply.as_deref(),
            Some("You will not get more texts from us.")
        );
    }

    #[test]
    fn revocations_in_words_end_the_conversation_with_one_confirmation() {
        for text in [
            "please stop texting me",
            "don't text me again",
            "Remove me from your list",
            "Stop sending me these messages!",
            "I don't want any more texts",
            "Please stop.",
        ] {
            // A script with no opt-out intent: the revocation still wins over its intents
            // and its fallback.
            let decision = respond(&script_without_opt_out_intent(), &conversation(), text);
            assert_eq!(decision.end, Some(SmsEnd::OptOut), "{text}");
            assert!(matches!(decision.route, Route::Revocation(_)), "{text}");
            assert_eq!(
                decision.reply.as_deref(),
                Some(DEFAULT_OPT_OUT_CONFIRMATION),
                "{text}"
            );
            let evidence = decision.opt_out_evidence(false).unwrap();
            assert_eq!(evidence.source, "phrase", "{text}");
        }
        for text in [
            "don't stop",
            "I stopped taking my meds",
            "can you call me later",
            "what time is it?",
        ] {
            let decision = respond(&script_without_opt_out_intent(), &conversation(), text);
            assert_ne!(decision.end, Some(SmsEnd::OptOut), "{text}");
            assert!(decision.opt_out_evidence(false).is_none(), "{text}");
        }
        // A keyword is evidence too, with no reply of ours.
        let decision = respond(&script(), &conversation(), "STOP");
        assert_eq!(decision.reply, None);
        assert_eq!(decision.opt_out_evidence(false).unwrap().source, "keyword");
    }

    fn script_without_opt_out_intent() -> ScriptConfig {
        let mut script = script();
        script
            .intents
            .retain(|intent| intent.resolution.map(SmsEnd::from) != Some(SmsEnd::OptOut));
        assert!(!script.intents.is_empty());
        script
    }

    #[test]
    fn help_is_answered_and_does_not_count() {
        let mut conversation = conversation();
        say(&mut conversation, "what?");
        say(&mut conversation, "who?");
        for help in ["HELP", "info", "Help!"] {
            let decision = say(&mut conversation, help);
            assert_eq!(decision.route, Route::Help, "{help}");
            assert_eq!(
                decision.reply.as_deref(),
                Some("Riverside Clinic appointment texts. Reply STOP to opt out.")
            );
            assert_eq!(decision.end, None);
            assert!(!decision.counts_as_reply);
        }
        assert_eq!(conversation.replies(), 2);
        // The third counted reply is still the last one.
        assert_eq!(say(&mut conversation, "hm").end, Some(SmsEnd::TurnLimit));
    }

    #[test]
    fn help_text_defaults_when_unset() {
        let mut script = script();
        script.help_text = None;
        let decision = respond(&script, &conversation(), "HELP");
        assert_eq!(decision.reply.as_deref(), Some(DEFAULT_HELP_TEXT));
    }

    #[test]
    fn one_turn_scripts_end_on_the_first_unmatched_reply() {
        let mut script = script();
        script.max_turns = 1;
        script.closing = Some("Thanks {{first_name}}.".into());
        let decision = respond(&script, &conversation(), "??");
        assert_eq!(decision.end, Some(SmsEnd::TurnLimit));
        assert_eq!(decision.reply.as_deref(), Some("Thanks Ana."));
    }

    #[test]
    fn responding_is_deterministic() {
        let conversation = conversation();
        for text in ["yes", "no", "hmm", "HELP", "STOP", "when"] {
            assert_eq!(
                respond(&script(), &conversation, text),
                respond(&script(), &conversation, text)
            );
        }
    }

    #[test]
    fn the_transcript_records_both_sides() {
        let mut conversation = conversation();
        say(&mut conversation, "when\nis it?");
        say(&mut conversation, "STOP");
        let transcript = conversation.transcript();
        let lines: Vec<_> = transcript.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[1], "User: when is it?");
        assert_eq!(lines[2], "AI: Your visit is on May 2.");
        assert_eq!(lines[3], "User: STOP");
    }

    #[test]
    fn summaries_name_no_numbers_and_quote_no_messages() {
        let mut variables = Map::new();
        variables.insert("phone".into(), json!("+15555550123"));
        let mut conversation = Conversation::new(Some("Ana".into()), variables);
        conversation.open(&script());
        say(&mut conversation, "my number is +15555550123, when is it");
        say(&mut conversation, "HELP");
        let decision = say(&mut conversation, "yes");
        let text = summary(&conversation, decision.end);
        assert_eq!(
            text,
            "Sent the opening text. The contact replied 2 times (matched: when, confirm). \
             They asked for help once. Resolved."
        );
        assert!(!text.contains("555") && !text.contains("my number"));
    }

    #[test]
    fn summaries_cover_every_end() {
        let open = conversation();
        assert_eq!(
            summary(&open, Some(SmsEnd::NoReply)),
            "Sent the opening text. The contact did not reply. The conversation timed out waiting for a reply."
        );
        assert_eq!(
            summary(&open, None),
            "Sent the opening text. The contact did not reply. The conversation is still open."
        );
        let mut texts = std::collections::BTreeSet::new();
        for end in SmsEnd::ALL {
            texts.insert(summary(&open, Some(end)));
        }
        assert_eq!(texts.len(), SmsEnd::ALL.len());
        let mut one = conversation();
        say(&mut one, "STOP");
        assert_eq!(
            summary(&one, Some(SmsEnd::OptOut)),
            "Sent the opening text. The contact replied once. The contact opted out; no further messages will be sent."
        );
    }

    #[test]
    fn every_end_maps_to_the_report_and_engine_vocabulary() {
        let engine = [
            "resolved",
            "declined",
            "opt-out",
            "escalated",
            "unresolved",
            "no-reply",
            "error",
        ];
        for (end, outcome) in SmsEnd::ALL.into_iter().zip(engine) {
            assert_eq!(end.engine_outcome(), outcome);
            assert_eq!(end.suppresses(), end == SmsEnd::OptOut);
        }
        assert_eq!(
            SmsEnd::NoReply.ended_reason(),
            SmsEndedReason::ConversationTimeout
        );
        assert_eq!(SmsEnd::Error.ended_reason(), SmsEndedReason::SystemError);
    }

    #[test]
    fn conversations_survive_a_round_trip_and_hide_phi_in_debug() {
        let mut conversation = conversation();
        say(&mut conversation, "when?");
        let json = serde_json::to_string(&conversation).unwrap();
        let back: Conversation = serde_json::from_str(&json).unwrap();
        assert_eq!(back, conversation);
        assert_eq!(back.replies(), 1);
        let debug = format!(
            "{conversation:?} {:?}",
            respond(&script(), &conversation, "yes")
        );
        for phi in ["Ana Lopez", "May 2", "when?", "Thank you"] {
            assert!(!debug.contains(phi), "{phi} in {debug}");
        }
    }

    #[test]
    fn scripts_are_validated() {
        let base = || {
            json!({
                "opening": "Hi", "fallback": "Sorry?",
                "intents": [{"name": "yes", "keywords": ["yes"], "reply": "Thanks", "resolution": "resolved"}]
            })
        };
        let check = |mutate: &dyn Fn(&mut Value)| {
            let mut script = base();
            mutate(&mut script);
            ScriptConfig::from_assistant_config(&json!({ "script": script }))
        };
        let ok = check(&|_| {}).unwrap();
        assert_eq!(ok.max_turns, DEFAULT_MAX_TURNS);
        assert_eq!(ok.closing(), DEFAULT_CLOSING);
        assert_eq!(
            ScriptConfig::from_assistant_config(&json!({})),
            Err(ScriptError::Missing)
        );
        let invalid = |field: &str, problem| {
            Err(ScriptError::Invalid {
                field: field.into(),
                problem,
            })
        };
        assert_eq!(
            check(&|s| s["opening"] = json!(" ")),
            invalid("opening", "must not be blank")
        );
        assert_eq!(
            check(&|s| s["fallback"] = json!("")),
            invalid("fallback", "must not be blank")
        );
        assert_eq!(
            check(&|s| s["max_turns"] = json!(0)),
            invalid("max_turns", "must be at least 1")
        );
        assert_eq!(
            check(&|s| s["help_text"] = json!("  ")),
            invalid("help_text", "must not be blank when set")
        );
        assert_eq!(
            check(&|s| s["intents"][0]["keywords"] = json!([])),
            invalid("intents[0].keywords", "must list at least one keyword")
        );
        assert_eq!(
            check(&|s| s["intents"][0]["keywords"] = json!(["👍"])),
            invalid(
                "intents[0].keywords",
                "every keyword needs at least one letter or digit"
            )
        );
        assert_eq!(
            check(&|s| s["intents"][0]["reply"] = json!("")),
            invalid("intents[0].reply", "must not be blank")
        );
        assert_eq!(
            check(&|s| {
                let first = s["intents"][0].clone();
                s["intents"].as_array_mut().unwrap().push(first);
            }),
            invalid("intents[1].name", "is used by an earlier intent")
        );
        let typo = check(&|s| s["fallbak"] = json!("x")).unwrap_err();
        assert!(
            matches!(&typo, ScriptError::Malformed(m) if m.contains("fallbak")),
            "{typo}"
        );
        let bad_resolution = check(&|s| s["intents"][0]["resolution"] = json!("done")).unwrap_err();
        assert!(matches!(bad_resolution, ScriptError::Malformed(_)));
    }
}
