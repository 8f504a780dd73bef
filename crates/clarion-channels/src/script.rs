//! The words: transcripts, voicemail messages and summaries for every outcome.
//!
//! Each situation has several phrasings; the encounter's seeded [`Dice`] chooses among them,
//! so two sequences with the same outcome usually read differently while one encounter always
//! reads the same. Wording follows the assistant's purpose and uses the contact's first name and
//! variables (`appointment_date`, `appointment_time`, `provider_name`, `location`) when they are
//! present, generic phrasing otherwise. The contact's phone number is never written.

use serde_json::Value;

use crate::dice::Dice;
use crate::outcome::EncounterOutcome;
use crate::profile::{AssistantProfile, ContactProfile};

/// Who is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Speaker {
    Ai,
    User,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Turn {
    pub(crate) speaker: Speaker,
    pub(crate) text: String,
}

/// The transcript text: one `AI:`/`User:` line per turn; `None` when nobody spoke.
pub(crate) fn render(turns: &[Turn]) -> Option<String> {
    if turns.is_empty() {
        return None;
    }
    let lines: Vec<String> = turns
        .iter()
        .map(|turn| match turn.speaker {
            Speaker::Ai => format!("AI: {}", turn.text),
            Speaker::User => format!("User: {}", turn.text),
        })
        .collect();
    Some(lines.join("\n"))
}

/// What the conversation established, for the custom analysis fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The contact engaged with the purpose (so analysis can extract answers).
    pub(crate) conversation: bool,
    /// Why the contact answered as they did, as a short phrase.
    pub(crate) reason: Option<String>,
    /// When the contact asked to be called back.
    pub(crate) callback_window: Option<String>,
}

/// A generated encounter, before timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Script {
    pub(crate) turns: Vec<Turn>,
    pub(crate) voicemail: Option<String>,
    pub(crate) summary: String,
    pub(crate) facts: Facts,
}

#[derive(Debug, Default)]
struct Talk(Vec<Turn>);

impl Talk {
    fn ai(&mut self, text: impl Into<String>) {
        self.0.push(Turn {
            speaker: Speaker::Ai,
            text: text.into(),
        });
    }

    fn user(&mut self, text: impl Into<String>) {
        self.0.push(Turn {
            speaker: Speaker::User,
            text: text.into(),
        });
    }

    fn done(self, summary: String, facts: Facts) -> Script {
        Script {
            turns: self.0,
            voicemail: None,
            summary,
            facts,
        }
    }
}

/// Collapses whitespace (including newlines, which would break the transcript format).
fn clean(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Finds the contact's phone number in text, in E.164 or as a run of its national digits.
#[derive(Debug, Clone)]
pub(crate) struct PhoneGuard {
    e164: String,
    digits: String,
}

impl PhoneGuard {
    pub(crate) fn new(phone_number: &str) -> Self {
        let digits: String = phone_number.chars().filter(char::is_ascii_digit).collect();
        // The national part (last ten digits) is what people write without the country code.
        let national = digits.len().saturating_sub(10);
        Self {
            e164: phone_number.trim().to_owned(),
            digits: digits[national..].to_owned(),
        }
    }

    /// Whether `text` mentions the number.
    pub(crate) fn appears_in(&self, text: &str) -> bool {
        if !self.e164.is_empty() && text.contains(&self.e164) {
            return true;
        }
        if self.digits.len() < 7 {
            return false;
        }
        let text_digits: String = text.chars().filter(char::is_ascii_digit).collect();
        text_digits.contains(&self.digits)
    }

    /// `text` with the number replaced (a last line of defence: inputs are already filtered).
    pub(crate) fn scrub(&self, text: String) -> String {
        let mut text = text;
        if !self.e164.is_empty() && text.contains(&self.e164) {
            text = text.replace(&self.e164, "[number withheld]");
        }
        if self.digits.len() >= 7 && text.contains(&self.digits) {
            text = text.replace(&self.digits, "[number withheld]");
        }
        text
    }
}

/// The inputs of the wording, cleaned.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) org: String,
    pub(crate) first: Option<String>,
    pub(crate) purpose: String,
    pub(crate) date: Option<String>,
    pub(crate) time: Option<String>,
    pub(crate) provider: Option<String>,
    pub(crate) location: Option<String>,
}

impl Ctx {
    pub(crate) fn new(assistant: &AssistantProfile, contact: &ContactProfile) -> Self {
        let guard = PhoneGuard::new(&contact.phone_number);
        let keep = |text: String| Some(text).filter(|t| !t.is_empty() && !guard.appears_in(t));
        let var = |key: &str| {
            let text = match contact.variables.get(key)? {
                Value::String(text) => clean(text),
                Value::Number(number) => number.to_string(),
                _ => return None,
            };
            keep(text)
        };
        let first = contact
            .name
            .as_deref()
            .and_then(|name| name.split_whitespace().next())
            .map(|word| word.trim_end_matches(',').to_owned())
            .and_then(keep);
        let org = clean(&assistant.organisation_name);
        let mut purpose = clean(&assistant.purpose);
        while purpose.ends_with(['.', '!', '?']) {
            purpose.pop();
        }
        // "Confirm the appointment" reads "I'm calling to confirm the appointment"; keep
        // acronyms ("MRI results …") as written.
        let mut chars = purpose.chars();
        if let (Some(first_char), Some(second)) = (chars.next(), chars.next())
            && first_char.is_uppercase()
            && second.is_lowercase()
        {
            purpose = first_char
                .to_lowercase()
                .chain(purpose.chars().skip(1))
                .collect();
        }
        Self {
            org: if org.is_empty() {
                "your care team".to_owned()
            } else {
                org
            },
            first,
            purpose: if purpose.is_empty() {
                "follow up on your care".to_owned()
            } else {
                purpose
            },
            date: var("appointment_date"),
            time: var("appointment_time"),
            provider: var("provider_name"),
            location: var("location"),
        }
    }

    /// Whether there is an appointment to talk about.
    fn appointment(&self) -> bool {
        self.date.is_some()
    }

    fn date(&self) -> &str {
        self.date.as_deref().unwrap_or("the scheduled date")
    }

    /// " at 10:30 AM" or "".
    fn at_time(&self) -> String {
        self.time
            .as_ref()
            .map(|t| format!(" at {t}"))
            .unwrap_or_default()
    }

    /// " with Dr. Patel" or "".
    fn with_provider(&self) -> String {
        self.provider
            .as_ref()
            .map(|p| format!(" with {p}"))
            .unwrap_or_default()
    }

    /// ", Alex" or "".
    fn comma_first(&self) -> String {
        self.first
            .as_ref()
            .map(|f| format!(", {f}"))
            .unwrap_or_default()
    }

    /// "the appointment on May 2" or "the appointment".
    fn the_appointment(&self) -> String {
        match &self.date {
            Some(date) => format!("the appointment on {date}"),
            None => "the appointment".to_owned(),
        }
    }
}

fn pick_str(dice: &mut Dice, items: &[&str]) -> String {
    (*dice.pick(items)).to_owned()
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

/// The words of one call with `outcome` (a call outcome).
pub(crate) fn call_script(ctx: &Ctx, outcome: EncounterOutcome, dice: &mut Dice) -> Script {
    let not_connected = |summary: String| Script {
        turns: Vec::new(),
        voicemail: None,
        summary,
        facts: Facts::default(),
    };
    match outcome {
        EncounterOutcome::NoAnswer => not_connected(pick_str(
            dice,
            &[
                "The call rang with no answer.",
                "No one answered the call.",
                "The call went unanswered.",
            ],
        )),
        EncounterOutcome::Busy => not_connected(pick_str(
            dice,
            &[
                "The line was busy, so the call did not connect.",
                "The call reached a busy signal.",
            ],
        )),
        EncounterOutcome::Failed => not_connected(pick_str(
            dice,
            &[
                "The call could not be connected.",
                "The call failed before it reached the patient.",
            ],
        )),
        EncounterOutcome::Voicemail => voicemail(ctx, dice),
        EncounterOutcome::AssistantEnded => assistant_ended(ctx, dice),
        _ => conversation(ctx, outcome, dice),
    }
}

fn opening(ctx: &Ctx, dice: &mut Dice) -> String {
    let org = &ctx.org;
    match &ctx.first {
        Some(first) => match dice.index(4) {
            0 => format!("Hello, this is the assistant from {org}. Am I speaking with {first}?"),
            1 => format!(
                "Hi, this is the virtual assistant calling on behalf of {org}. May I speak with \
                 {first}?"
            ),
            2 => format!("Hello, I'm the automated assistant for {org}. Is this {first}?"),
            _ => {
                format!("Good day, this is {org}'s virtual assistant. Am I speaking with {first}?")
            }
        },
        None => match dice.index(3) {
            0 => format!("Hello, this is the assistant from {org}. Do you have a moment to talk?"),
            1 => format!(
                "Hi, this is the virtual assistant calling on behalf of {org}. Is now a good time?"
            ),
            _ => format!("Hello, I'm the automated assistant for {org}. Do you have a minute?"),
        },
    }
}

fn identity_reply(ctx: &Ctx, dice: &mut Dice) -> String {
    match &ctx.first {
        Some(first) => match dice.index(5) {
            0 => format!("Yes, this is {first}."),
            1 => "Speaking.".to_owned(),
            2 => "Yeah, that's me.".to_owned(),
            3 => "Yes. What's this about?".to_owned(),
            _ => format!("This is {first}, yes."),
        },
        None => pick_str(
            dice,
            &[
                "Sure, go ahead.",
                "Yes, I have a minute.",
                "Okay. What's this about?",
                "Yes, what can I do for you?",
            ],
        ),
    }
}

fn purpose_intro(ctx: &Ctx, dice: &mut Dice) -> String {
    let purpose = &ctx.purpose;
    match dice.index(3) {
        0 => format!("I'm calling to {purpose}."),
        1 => format!("The reason for my call is to {purpose}."),
        _ => format!("I'm reaching out to {purpose}."),
    }
}

fn detail(ctx: &Ctx, dice: &mut Dice) -> Option<String> {
    let at_time = ctx.at_time();
    let with = ctx.with_provider();
    let place = ctx
        .location
        .as_ref()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default();
    match (&ctx.date, &ctx.provider) {
        (Some(date), _) => Some(match dice.index(3) {
            0 => format!("You have an appointment on {date}{at_time}{with}{place}."),
            1 => format!("Our records show an appointment{with} on {date}{at_time}{place}."),
            _ => format!("I see you're scheduled to come in on {date}{at_time}{with}."),
        }),
        (None, Some(provider)) => Some(match dice.index(2) {
            0 => format!("This is about your care with {provider}."),
            _ => format!("{provider} asked us to follow up with you."),
        }),
        (None, None) => None,
    }
}

fn question(ctx: &Ctx, dice: &mut Dice) -> String {
    if ctx.appointment() {
        pick_str(
            dice,
            &[
                "Will you be able to attend?",
                "Will you be able to make it?",
                "Can you make that appointment?",
            ],
        )
    } else {
        pick_str(
            dice,
            &[
                "Can we go ahead with that?",
                "Is that all right with you?",
                "Can I count on you for that?",
            ],
        )
    }
}

/// `text` cut off about halfway, ending in an em dash.
fn cut_off(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut keep = (words.len() / 2).max(2).min(words.len());
    // Not right after "Dr." or a comma: "an appointment with—", not "with Dr—".
    while keep > 2 && words[keep - 1].ends_with(['.', ',', '?', '!']) {
        keep -= 1;
    }
    let head = words[..keep].join(" ");
    format!("{}—", head.trim_end_matches(['.', ',', '?', '!']))
}

/// States the purpose and asks the question, sometimes cut off by an interruption, sometimes
/// followed by a request to repeat (which the assistant answers with the same sentences).
fn ask(ctx: &Ctx, dice: &mut Dice, talk: &mut Talk) {
    let intro = purpose_intro(ctx, dice);
    let detail = detail(ctx, dice);
    let question = question(ctx, dice);
    let body = match &detail {
        Some(detail) => format!("{detail} {question}"),
        None => question.clone(),
    };
    if dice.chance(22) {
        let cut = cut_off(detail.as_deref().unwrap_or(&question));
        talk.ai(format!("{intro} {cut}"));
        let resume = match dice.index(4) {
            0 => {
                talk.user("Sorry—who did you say was calling?");
                format!("I'm the virtual assistant for {}.", ctx.org)
            }
            1 => {
                talk.user("Hold on—let me grab a pen.");
                talk.ai("Of course, take your time.");
                talk.user("Okay, go ahead.");
                "Thank you.".to_owned()
            }
            2 => {
                talk.user("Wait—sorry, can you speak up a little?");
                "Of course, I'll speak up.".to_owned()
            }
            _ if ctx.appointment() => {
                talk.user("Sorry to interrupt, but is this about my appointment?");
                "Yes, it is.".to_owned()
            }
            _ => {
                talk.user("Sorry to interrupt, but what is this regarding?");
                format!("It's about your care at {}.", ctx.org)
            }
        };
        talk.ai(format!("{resume} {body}"));
    } else {
        talk.ai(format!("{intro} {body}"));
    }
    if dice.chance(20) {
        // The assistant has to repeat information: the same sentences as before.
        match (&detail, ctx.appointment() && dice.chance(40)) {
            (Some(detail), true) => {
                talk.user("Sorry, what was the date again?");
                talk.ai(detail.clone());
            }
            _ => {
                talk.user(pick_str(
                    dice,
                    &[
                        "Sorry, could you repeat that?",
                        "I'm sorry, what was that again?",
                        "You cut out for a second. Can you say that again?",
                        "Could you say that one more time?",
                    ],
                ));
                match &detail {
                    Some(_) => talk.ai(body),
                    None => talk.ai(format!("{intro} {question}")),
                }
            }
        }
    }
}

fn closing(ctx: &Ctx, dice: &mut Dice) -> String {
    match (&ctx.first, dice.index(3)) {
        (Some(first), 0) => format!("Have a great day, {first}. Goodbye."),
        (Some(first), 1) => format!("Take care, {first}. Goodbye."),
        (None, 0) => "Have a great day. Goodbye.".to_owned(),
        (None, 1) => "Take care. Goodbye.".to_owned(),
        _ => "We appreciate your time. Goodbye.".to_owned(),
    }
}

fn conversation(ctx: &Ctx, outcome: EncounterOutcome, dice: &mut Dice) -> Script {
    let org = ctx.org.clone();
    let mut talk = Talk::default();
    talk.ai(opening(ctx, dice));

    if outcome == EncounterOutcome::OptOut && dice.chance(30) {
        // Some people opt out before hearing why the clinic called.
        talk.user(pick_str(
            dice,
            &[
                "I don't know what this is, but please stop calling me.",
                "Take me off your list, please. I'm not interested.",
            ],
        ));
        return opt_out_ending(ctx, dice, talk);
    }
    talk.user(identity_reply(ctx, dice));

    if outcome == EncounterOutcome::CustomerDropped && dice.chance(40) {
        let intro = purpose_intro(ctx, dice);
        let about = detail(ctx, dice).unwrap_or_else(|| question(ctx, dice));
        talk.ai(format!("{intro} {}", cut_off(&about)));
        let summary = pick_str(
            dice,
            &[
                "The call dropped while the assistant was explaining why it called; nothing was \
                 confirmed.",
                "The line went dead partway through the assistant's explanation, before the \
                 patient could answer.",
            ],
        );
        return talk.done(summary, Facts::default());
    }

    ask(ctx, dice, &mut talk);

    match outcome {
        EncounterOutcome::Resolved => resolved(ctx, dice, talk),
        EncounterOutcome::Declined => {
            let (line, reason) = if ctx.appointment() {
                *dice.pick(&[
                    (
                        "No, I won't be able to make it. I'll be out of town that week.",
                        "they will be out of town",
                    ),
                    (
                        "No, I'd like to cancel, actually. I'm feeling much better.",
                        "they are feeling better and want to cancel",
                    ),
                    (
                        "No, I already saw another doctor about it.",
                        "they have already seen another doctor",
                    ),
                    (
                        "No thanks, I don't want to keep that appointment.",
                        "they no longer want the appointment",
                    ),
                ])
            } else {
                *dice.pick(&[
                    ("No thanks, I'm not interested.", "they are not interested"),
                    (
                        "No, I already handle that with my own doctor.",
                        "they handle it with their own doctor",
                    ),
                    ("No, I'd rather not, thank you.", "they would rather not"),
                ])
            };
            talk.user(line);
            talk.ai(if ctx.appointment() {
                match dice.index(2) {
                    0 => format!(
                        "I understand. I've noted that you won't be attending. If you'd like to \
                         reschedule, please call {org}."
                    ),
                    _ => format!(
                        "Thank you for letting us know. I've passed that along, and you can call \
                         {org} anytime to book a new time."
                    ),
                }
            } else {
                match dice.index(2) {
                    0 => format!(
                        "I understand, I've made a note of that. If you change your mind, please \
                         call {org}."
                    ),
                    _ => "Thank you for letting me know. I've noted your answer.".to_owned(),
                }
            });
            talk.user(pick_str(
                dice,
                &["Okay, thanks. Bye.", "Will do. Bye.", "Thanks, bye."],
            ));
            let summary = if ctx.appointment() {
                format!(
                    "The patient declined {}, saying {reason}.",
                    ctx.the_appointment()
                )
            } else {
                format!("The patient declined, saying {reason}.")
            };
            talk.done(summary, conversation_facts(Some(reason), None))
        }
        EncounterOutcome::Escalated => {
            let (line, what) = *dice.pick(&[
                (
                    "Actually, I have a question about my bill. Can I talk to someone?",
                    "had a billing question",
                ),
                (
                    "Before that, I need to ask a nurse about my medication.",
                    "wanted to ask a nurse about their medication",
                ),
                (
                    "Can I speak to a real person, please?",
                    "asked to speak with a person",
                ),
                (
                    "I've been having some new symptoms and I'd like to talk to someone about them.",
                    "reported new symptoms",
                ),
            ]);
            talk.user(line);
            talk.ai(match dice.index(3) {
                0 => "Of course. Let me transfer you to a member of our staff. Please hold."
                    .to_owned(),
                1 => {
                    "Certainly, I'll connect you with our team now. One moment, please.".to_owned()
                }
                _ => format!(
                    "I understand. I'm transferring you to someone at {org} who can help. Please \
                     stay on the line."
                ),
            });
            let summary = format!(
                "The patient {what}, so the assistant transferred the call to {org} staff."
            );
            talk.done(summary, conversation_facts(Some(what), None))
        }
        EncounterOutcome::RequestedCallback => {
            let (line, situation, window) = *dice.pick(&[
                (
                    "I'm at work right now. Can you call me back later this afternoon?",
                    "at work",
                    "later this afternoon",
                ),
                (
                    "This isn't a good time. Could you call me tomorrow morning?",
                    "busy",
                    "tomorrow morning",
                ),
                (
                    "I'm driving at the moment. Can you try me again after 5?",
                    "driving",
                    "after 5 PM",
                ),
                (
                    "I'm with my kids right now. Can you call back this evening?",
                    "busy with family",
                    "this evening",
                ),
            ]);
            talk.user(line);
            let farewell = if situation == "driving" {
                "Drive safely."
            } else {
                "Have a good day."
            };
            talk.ai(match dice.index(2) {
                0 => format!("Of course. We'll call you back {window}. {farewell}"),
                _ => format!("No problem, we'll try you again {window}. {farewell}"),
            });
            talk.user(pick_str(
                dice,
                &["Thanks, bye.", "Okay, thank you.", "Great, bye."],
            ));
            let summary =
                format!("The patient was {situation} and asked to be called back {window}.");
            talk.done(
                summary,
                conversation_facts(Some(&format!("the patient was {situation}")), Some(window)),
            )
        }
        EncounterOutcome::CustomerDropped => {
            talk.user(pick_str(
                dice,
                &[
                    "Hold on, let me check my cal—",
                    "Yes, I think so, but let me—",
                    "Okay, one sec, I'm just—",
                ],
            ));
            let summary = pick_str(
                dice,
                &[
                    "The call dropped before the patient gave an answer; nothing was confirmed.",
                    "The patient started to answer, but the call disconnected abruptly.",
                ],
            );
            talk.done(summary, Facts::default())
        }
        EncounterOutcome::OptOut => {
            talk.user(pick_str(
                dice,
                &[
                    "Please stop calling me.",
                    "Take me off your list, please.",
                    "I don't want these calls. Please don't call this number again.",
                    "Please remove me from your call list.",
                ],
            ));
            opt_out_ending(ctx, dice, talk)
        }
        // Unresolved (and, defensively, anything else that reached a conversation).
        _ => {
            let (line, reason) = *dice.pick(&[
                (
                    "I'm not sure yet. I need to check my work schedule.",
                    "they need to check their work schedule",
                ),
                (
                    "I don't know. I'd have to find a ride first.",
                    "they need to arrange transportation",
                ),
                (
                    "Hmm, I can't say right now. Let me think about it.",
                    "they want time to think it over",
                ),
                (
                    "I'll have to talk to my daughter first.",
                    "they want to check with a family member",
                ),
            ]);
            talk.user(line);
            talk.ai(match dice.index(3) {
                0 => format!("No problem. When you know, please give {org} a call."),
                1 => format!("That's all right. You can call {org} anytime once you've decided."),
                _ => format!("I understand. Please let {org} know when you're sure."),
            });
            talk.user(pick_str(
                dice,
                &[
                    "Okay, will do. Bye.",
                    "Sure. Bye.",
                    "All right, thanks. Bye.",
                ],
            ));
            let summary = if ctx.appointment() {
                format!(
                    "The patient was unsure about {} because {reason}; nothing was confirmed.",
                    ctx.the_appointment()
                )
            } else {
                format!("The patient would not commit yet because {reason}; nothing was confirmed.")
            };
            talk.done(summary, conversation_facts(Some(reason), None))
        }
    }
}

fn conversation_facts(reason: Option<&str>, callback_window: Option<&str>) -> Facts {
    Facts {
        conversation: true,
        reason: reason.map(str::to_owned),
        callback_window: callback_window.map(str::to_owned),
    }
}

fn resolved(ctx: &Ctx, dice: &mut Dice, mut talk: Talk) -> Script {
    let org = &ctx.org;
    if ctx.appointment() {
        let date = ctx.date();
        talk.user(match dice.index(5) {
            0 => "Yes, I'll be there.".to_owned(),
            1 => "Yes, I can make it.".to_owned(),
            2 => "Yep, that works for me.".to_owned(),
            3 => format!("Yes, {date} works for me."),
            _ => "Sure, I'll be there.".to_owned(),
        });
    } else {
        talk.user(pick_str(
            dice,
            &[
                "Yes, that's fine.",
                "Sure, that works for me.",
                "Yes, please go ahead.",
                "Okay, sounds good.",
            ],
        ));
    }
    let confirm = if ctx.appointment() {
        match dice.index(3) {
            0 => format!("Great, you're all set for {}.", ctx.date()),
            1 => "Thank you, your appointment is confirmed.".to_owned(),
            _ => "Perfect, I've marked your appointment as confirmed.".to_owned(),
        }
    } else {
        match dice.index(3) {
            0 => "Thank you, I've made a note of that.".to_owned(),
            1 => format!("Great, I'll let the team at {org} know."),
            _ => "Wonderful, thank you.".to_owned(),
        }
    };
    let mut asked = None;
    match dice.index(3) {
        0 => talk.ai(format!("{confirm} {}", closing(ctx, dice))),
        1 => {
            talk.ai(format!(
                "{confirm} Is there anything else I can help you with?"
            ));
            talk.user(pick_str(
                dice,
                &[
                    "No, that's all. Thank you.",
                    "No, that's it. Thanks.",
                    "Nope, that's everything.",
                ],
            ));
            talk.ai(format!("You're welcome. {}", closing(ctx, dice)));
        }
        _ => {
            talk.ai(format!(
                "{confirm} Is there anything else I can help you with?"
            ));
            let (line, answer, topic) = if ctx.appointment() {
                let mut options = vec![
                    (
                        "Do I need to bring anything?".to_owned(),
                        "Please bring your insurance card and a list of your current medications."
                            .to_owned(),
                        "what to bring",
                    ),
                    (
                        "How early should I get there?".to_owned(),
                        "Please arrive about 15 minutes early to check in.".to_owned(),
                        "how early to arrive",
                    ),
                ];
                if let Some(location) = &ctx.location {
                    options.push((
                        "Where is it again?".to_owned(),
                        format!("It's at {location}."),
                        "where the appointment is",
                    ));
                }
                let index = dice.index(options.len());
                options.swap_remove(index)
            } else {
                (
                    "Who should I call if I have questions?".to_owned(),
                    format!("You can call {org} anytime, and the team will help."),
                    "whom to call with questions",
                )
            };
            talk.user(line);
            talk.ai(format!("{answer} {}", closing(ctx, dice)));
            asked = Some(topic);
        }
    }
    let mut summary = if ctx.appointment() {
        format!(
            "The patient confirmed {}{}.",
            ctx.the_appointment(),
            ctx.with_provider()
        )
    } else {
        format!(
            "The assistant called to {}, and the patient agreed.",
            ctx.purpose
        )
    };
    if let Some(topic) = asked {
        summary.push_str(&format!(" They also asked {topic}."));
    }
    talk.done(summary, conversation_facts(None, None))
}

fn opt_out_ending(ctx: &Ctx, dice: &mut Dice, mut talk: Talk) -> Script {
    let org = &ctx.org;
    talk.ai(match dice.index(2) {
        0 => format!(
            "I understand. I've removed this number from our call list, and you won't receive \
             further calls from {org}."
        ),
        _ => format!(
            "Understood. You won't receive any more calls from {org}. Sorry to have bothered you."
        ),
    });
    talk.user(pick_str(dice, &["Thank you.", "Good. Bye.", "Thanks."]));
    let summary = pick_str(
        dice,
        &[
            "The patient asked not to be called again; the assistant confirmed no further calls \
             would be made.",
            "The patient asked to be removed from the call list, and the assistant agreed.",
        ],
    );
    talk.done(
        summary,
        conversation_facts(Some("asked not to be contacted again"), None),
    )
}

fn assistant_ended(ctx: &Ctx, dice: &mut Dice) -> Script {
    let mut talk = Talk::default();
    talk.ai(opening(ctx, dice));
    let variant = match ctx.first {
        Some(_) => dice.index(3),
        None => 1 + dice.index(2),
    };
    let (summary, reason) = match (variant, &ctx.first) {
        (0, Some(first)) => {
            talk.user(format!("No, {first} isn't available right now."));
            talk.ai("Thank you. I'll try again another time. Goodbye.");
            (
                "Someone other than the patient answered, so the assistant ended the call \
                 without sharing details.",
                "the patient was not available",
            )
        }
        (1, _) => {
            talk.user("I think you have the wrong number.");
            talk.ai("I'm sorry for the trouble. Goodbye.");
            (
                "The person who answered said it was the wrong number, so the assistant ended \
                 the call.",
                "wrong number",
            )
        }
        _ => {
            talk.user("Hello? Hello? I can barely hear you.");
            talk.ai("I'm having trouble with the connection. We'll try you again later. Goodbye.");
            (
                "The connection was too poor to continue, so the assistant ended the call.",
                "poor connection",
            )
        }
    };
    talk.done(
        summary.to_owned(),
        Facts {
            conversation: false,
            reason: Some(reason.to_owned()),
            callback_window: None,
        },
    )
}

/// A voicemail script under the step's policy: its own message left, or none (hung up).
pub(crate) fn apply_voicemail_action(script: &mut Script, action: &crate::VoicemailAction<'_>) {
    match action {
        crate::VoicemailAction::AssistantMessage => {}
        crate::VoicemailAction::Leave(message) => {
            script.turns = vec![Turn {
                speaker: Speaker::Ai,
                text: (*message).to_owned(),
            }];
            script.voicemail = Some((*message).to_owned());
            script.summary = "The call reached voicemail; the step's message was left.".into();
        }
        crate::VoicemailAction::HangUp => {
            script.turns.clear();
            script.voicemail = None;
            script.summary =
                "The call reached voicemail; the assistant hung up without leaving a message."
                    .into();
        }
    }
}

fn voicemail(ctx: &Ctx, dice: &mut Dice) -> Script {
    let org = &ctx.org;
    let purpose = &ctx.purpose;
    let greeting = match &ctx.first {
        Some(first) => format!("Hello, this is a message for {first} from {org}."),
        None => format!("Hello, this is a message from {org}."),
    };
    let message = match dice.index(3) {
        0 => format!(
            "{greeting} I'm calling to {purpose}. Please call us back at your convenience. \
             Thank you."
        ),
        1 => {
            let about = match &ctx.date {
                Some(date) => format!("We're calling about your upcoming appointment on {date}."),
                None => format!("We're calling to {purpose}."),
            };
            let hi = match &ctx.first {
                Some(first) => format!("Hi {first}"),
                None => "Hi".to_owned(),
            };
            format!(
                "{hi}, this is the virtual assistant from {org}. {about} Please give us a call \
                 back when you can. Have a good day."
            )
        }
        _ => format!(
            "{greeting} Please return our call at your earliest convenience. Thank you, and have \
             a good day."
        ),
    };
    let summary = pick_str(
        dice,
        &[
            "The call reached voicemail; a message asking the patient to call back was left.",
            "Voicemail picked up, and the assistant left a callback message.",
        ],
    );
    Script {
        turns: vec![Turn {
            speaker: Speaker::Ai,
            text: message.clone(),
        }],
        voicemail: Some(message),
        summary,
        facts: Facts::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// SMS
// ---------------------------------------------------------------------------------------------

fn sms_opening(ctx: &Ctx, dice: &mut Dice) -> String {
    let org = &ctx.org;
    let greeting = match (&ctx.first, dice.index(3)) {
        (Some(first), 0) => format!("Hi {first}, this is {org}."),
        (Some(first), 1) => format!("Hello {first}, {org} here."),
        (Some(first), _) => format!("{org}: Hi {first}!"),
        (None, 0) => format!("Hi, this is {org}."),
        (None, 1) => format!("Hello from {org}."),
        (None, _) => format!("{org}:"),
    };
    let (body, ask) = match &ctx.date {
        Some(date) => {
            let at_time = ctx.at_time();
            let with = ctx.with_provider();
            let body = match dice.index(2) {
                0 => format!("You have an appointment on {date}{at_time}{with}."),
                _ => format!("This is a reminder of your appointment{with} on {date}{at_time}."),
            };
            let ask = pick_str(
                dice,
                &[
                    "Reply YES to confirm or NO if you can't make it.",
                    "Can you make it? Reply YES or NO.",
                ],
            );
            (body, ask)
        }
        None => {
            let purpose = &ctx.purpose;
            let body = match dice.index(2) {
                0 => format!("We're reaching out to {purpose}."),
                _ => format!("We'd like to {purpose}."),
            };
            let ask = pick_str(
                dice,
                &[
                    "Reply YES to confirm or NO if not.",
                    "Please reply YES or NO.",
                ],
            );
            (body, ask)
        }
    };
    format!("{greeting} {body} {ask} Reply STOP to opt out.")
}

/// The words of one SMS conversation with `outcome` (an SMS outcome). `timeout` is the
/// conversation timeout in words ("24 hours").
pub(crate) fn sms_script(
    ctx: &Ctx,
    outcome: EncounterOutcome,
    dice: &mut Dice,
    timeout: &str,
) -> Script {
    let org = ctx.org.clone();
    let mut talk = Talk::default();
    talk.ai(sms_opening(ctx, dice));
    match outcome {
        EncounterOutcome::Resolved => {
            let mut asked = None;
            if ctx.appointment() && dice.chance(30) {
                let (line, answer, topic) = match (&ctx.time, &ctx.location, &ctx.provider) {
                    (Some(time), _, _) => (
                        "What time is it again?",
                        format!("Your appointment is at {time} on {}.", ctx.date()),
                        "what time the appointment is",
                    ),
                    (None, Some(location), _) => (
                        "Where is it?",
                        format!("It's at {location}."),
                        "where the appointment is",
                    ),
                    (None, None, Some(provider)) => (
                        "Which doctor is it with?",
                        format!("It's with {provider}."),
                        "which provider it is with",
                    ),
                    (None, None, None) => (
                        "Is this for me?",
                        format!("Yes, it's for your appointment on {}.", ctx.date()),
                        "whether the message was meant for them",
                    ),
                };
                talk.user(line);
                talk.ai(answer);
                asked = Some(topic);
            }
            if ctx.appointment() {
                talk.user(pick_str(
                    dice,
                    &["YES", "Yes", "Yes, I'll be there", "yes thank you", "Y"],
                ));
                talk.ai(match dice.index(3) {
                    0 => format!(
                        "Thank you{}! Your appointment on {} is confirmed. See you then.",
                        ctx.comma_first(),
                        ctx.date()
                    ),
                    1 => "Thanks! You're confirmed. Reply here if anything changes.".to_owned(),
                    _ => "Great, we've noted your confirmation. See you soon!".to_owned(),
                });
            } else {
                talk.user(pick_str(dice, &["YES", "Yes", "Yes please", "ok yes"]));
                talk.ai(match dice.index(2) {
                    0 => "Thank you! We've noted your reply.".to_owned(),
                    _ => format!(
                        "Thanks{}! The team at {org} has been notified.",
                        ctx.comma_first()
                    ),
                });
            }
            let mut summary = if ctx.appointment() {
                format!("The patient confirmed {} by text.", ctx.the_appointment())
            } else {
                format!("The patient agreed by text when asked to {}.", ctx.purpose)
            };
            if let Some(topic) = asked {
                summary.push_str(&format!(" They first asked {topic}."));
            }
            talk.done(summary, conversation_facts(None, None))
        }
        EncounterOutcome::Declined => {
            let (line, reason) = if ctx.appointment() {
                *dice.pick(&[
                    ("NO", None),
                    ("No thanks", None),
                    ("No, I can't make it", Some("they cannot make it")),
                    ("I need to cancel", Some("they need to cancel")),
                ])
            } else {
                *dice.pick(&[
                    ("NO", None),
                    ("No thanks", None),
                    ("Not interested", Some("they are not interested")),
                ])
            };
            talk.user(line);
            talk.ai(if ctx.appointment() {
                match dice.index(2) {
                    0 => format!(
                        "Thanks for letting us know. We've noted that you can't make it. Call \
                         {org} if you'd like to reschedule."
                    ),
                    _ => format!("Understood. If you'd like a new time, just give {org} a call."),
                }
            } else {
                match dice.index(2) {
                    0 => format!(
                        "Understood, thank you for letting us know. You can reach {org} anytime \
                         if you change your mind."
                    ),
                    _ => "Thanks for your reply. We've made a note of it.".to_owned(),
                }
            });
            let mut summary = if ctx.appointment() {
                format!("The patient declined {} by text", ctx.the_appointment())
            } else {
                "The patient declined by text".to_owned()
            };
            match reason {
                Some(reason) => summary.push_str(&format!(", saying {reason}.")),
                None => summary.push('.'),
            }
            talk.done(summary, conversation_facts(reason, None))
        }
        EncounterOutcome::OptOut => {
            talk.user(pick_str(
                dice,
                &[
                    "STOP",
                    "Stop",
                    "STOP texting me",
                    "Please take me off your list",
                    "UNSUBSCRIBE",
                ],
            ));
            talk.ai(match dice.index(2) {
                0 => format!(
                    "You have been unsubscribed from {org} messages and will not receive any \
                     more texts."
                ),
                _ => format!("You're unsubscribed. {org} will not send you further messages."),
            });
            let summary = pick_str(
                dice,
                &[
                    "The patient opted out of text messages; no further texts will be sent.",
                    "The patient asked to stop receiving texts and was unsubscribed.",
                ],
            );
            talk.done(
                summary,
                conversation_facts(Some("asked not to be contacted again"), None),
            )
        }
        EncounterOutcome::Error => {
            if dice.chance(50) {
                let summary = "The opening message could not be delivered, so the conversation \
                               ended with a system error."
                    .to_owned();
                return talk.done(summary, Facts::default());
            }
            if ctx.appointment() {
                talk.user(pick_str(
                    dice,
                    &[
                        "What time is it again?",
                        "Can I bring someone with me?",
                        "Who is this?",
                    ],
                ));
            } else {
                talk.user(pick_str(dice, &["What is this about?", "Who is this?"]));
            }
            let summary = "The patient replied with a question, but the conversation stopped \
                           because of a system error before it was answered."
                .to_owned();
            talk.done(summary, Facts::default())
        }
        // No reply (and, defensively, any outcome SMS does not have).
        _ => {
            let summary = match dice.index(2) {
                0 => format!("The patient did not reply within {timeout}."),
                _ => format!("No reply came within {timeout} of the message."),
            };
            talk.done(summary, Facts::default())
        }
    }
}
