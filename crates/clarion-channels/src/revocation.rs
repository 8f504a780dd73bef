//! Revocations of consent in a patient's own words: the one detector every channel uses.
//!
//! The FCC honours a revocation of consent "by any reasonable means" (47 CFR
//! §64.1200(a)(10)), so a patient who says "stop calling me, take me off your list" on a call,
//! or texts "please stop texting me", has opted out as surely as one who texts `STOP`. Exact
//! keywords are `clarion_providers::twilio::keywords`; this module finds the sentences.
//!
//! **What counts** ([`RULES`]), within one clause of one patient utterance (clauses end at
//! `. , ! ? ; :` and line breaks; case, curly apostrophes and contractions — `don't`, `dont`,
//! `won't`, `can't`, `I'd` — are normalised first):
//!
//! | rule | examples |
//! | --- | --- |
//! | `stop-contacting` | "stop calling me", "please stop texting me", "quit calling", "stop sending me these" |
//! | `do-not-contact` | "don't text me again", "do not call this number", "never call me again" |
//! | `do-not-call-list` | "put me on your do-not-call list" |
//! | `remove-from-list` | "take me off your list", "remove me from your call list", "remove my number" |
//! | `do-not-want-contact` | "I don't want these calls", "I don't want to be contacted anymore", "I don't want you to call me again" |
//! | `no-more-contact` | "no more calls", "no more texts please" |
//! | `opt-out` | "I want to opt out", "opt me out", "unsubscribe me" |
//! | `leave-me-alone` | "leave me alone" |
//! | `please-stop` | the whole utterance "please stop" / "stop please" |
//!
//! **What does not.** The rules are deliberately narrow: a missed revocation is costly, but so
//! is silencing a patient who asked for something else. A rule preceded (within three words)
//! by `not`, `never` or `no` does not count — "don't stop calling", "I don't want to opt
//! out" — except after "why don't you" ("why don't you stop calling me" is a revocation).
//! "I stopped taking my meds", "can you call me later", "don't call me before noon", "take me
//! off hold", "remove me from the waiting list" and "stop by the front desk" match nothing. A
//! bare "stop" is a keyword for texts and too ambiguous on a call ("stop, let me get a pen").
//!
//! **Whose words.** Only the patient's: [`in_transcript`] reads the `User:` (or `Customer:`,
//! `Patient:`) lines of an `AI:`/`User:` transcript and never the assistant's, which says
//! things like "you won't receive further calls" when confirming an opt-out.
//!
//! Pure and deterministic; no allocation proportional to anything but the text.

/// Why Clarion took an encounter as an opt-out: recorded in the sequence's events (kind
/// `opt-out-detected`). Names rules and keys only, never the patient's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Where it was found: `structured-data` (the call's analysis), `transcript` (the
    /// patient's words on a call), `keyword` (an SMS opt-out keyword or Twilio's
    /// `OptOutType`), `phrase` (an SMS revocation in words), `intent` (the SMS script's or
    /// model's opt-out resolution) or `carrier` (Twilio error 21610).
    pub source: &'static str,
    /// What matched: a [`Rule`] name, a `structuredData` key, a keyword class.
    pub detail: String,
}

/// One revocation rule: its name (recorded in the sequence's events as the reason) and how it
/// matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name, e.g. `stop-contacting` (module docs).
    pub name: &'static str,
    /// Word slots, in order; each slot lists the words it accepts (`""` makes it optional).
    slots: &'static [&'static [&'static str]],
    /// What may follow the match in its clause.
    tail: Tail,
}

/// What may follow a rule's words in the same clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Anything.
    Any,
    /// Nothing, or a closing word such as "again", "anymore" or "please" ("don't call me
    /// again" counts; "don't call me before noon" does not).
    Closing,
    /// The rule's words are the whole utterance.
    Whole,
}

const CONTACTING: &[&str] = &[
    "calling",
    "texting",
    "messaging",
    "contacting",
    "phoning",
    "ringing",
    "bothering",
];
const CONTACT: &[&str] = &["call", "text", "message", "contact", "phone", "ring"];
const ME: &[&str] = &["me", "us", "here"];
const OPTIONAL: &str = "";

/// The rules, in the order they are tried (module docs).
pub const RULES: &[Rule] = &[
    Rule {
        name: "stop-contacting",
        slots: &[&["stop", "quit", "cease"], CONTACTING],
        tail: Tail::Any,
    },
    Rule {
        name: "stop-contacting",
        slots: &[&["stop", "quit"], &["sending"], &["me", "us"]],
        tail: Tail::Any,
    },
    Rule {
        name: "do-not-contact",
        slots: &[&["do"], &["not"], &["ever", OPTIONAL], CONTACT, ME],
        tail: Tail::Closing,
    },
    Rule {
        name: "do-not-contact",
        slots: &[
            &["do"],
            &["not"],
            &["ever", OPTIONAL],
            CONTACT,
            &["this", "my"],
            &["number", "phone"],
        ],
        tail: Tail::Closing,
    },
    Rule {
        name: "do-not-contact",
        slots: &[&["never"], CONTACT, ME, &["again", "anymore"]],
        tail: Tail::Any,
    },
    Rule {
        name: "do-not-call-list",
        slots: &[
            &["do"],
            &["not"],
            &["call", "contact"],
            &["list", "registry"],
        ],
        tail: Tail::Any,
    },
    Rule {
        name: "remove-from-list",
        slots: &[
            &["take", "remove", "delete"],
            &["me", "us"],
            &["off", "from"],
            &["your", "the", "this", "that", "my", OPTIONAL],
            &[
                "call",
                "calling",
                "contact",
                "mailing",
                "text",
                "texting",
                "messaging",
                "phone",
                "sms",
                "automated",
                "reminder",
                OPTIONAL,
            ],
            &["list", "lists"],
        ],
        tail: Tail::Any,
    },
    Rule {
        name: "remove-from-list",
        slots: &[
            &["take", "remove", "delete"],
            &["my", "this"],
            &["number", "phone"],
            &["off", "from"],
            &["your", "the", "this", "that", "my", OPTIONAL],
            &[
                "call", "calling", "contact", "mailing", "text", "texting", "phone", OPTIONAL,
            ],
            &["list", "lists"],
        ],
        tail: Tail::Any,
    },
    Rule {
        name: "remove-from-list",
        slots: &[&["remove", "delete"], &["my", "this"], &["number"]],
        tail: Tail::Closing,
    },
    Rule {
        name: "do-not-want-contact",
        slots: &[
            &["do"],
            &["not"],
            &["want", "wish"],
            &["any", "these", "those", "your", "further", "more", OPTIONAL],
            &["more", "further", OPTIONAL],
            &[
                "calls",
                "texts",
                "messages",
                "reminders",
                "phone",
                "text",
                "automated",
            ],
        ],
        tail: Tail::Any,
    },
    Rule {
        name: "do-not-want-contact",
        slots: &[
            &["do"],
            &["not"],
            &["want", "wish"],
            &["to"],
            &["be"],
            &["called", "contacted", "texted", "messaged", "phoned"],
        ],
        tail: Tail::Closing,
    },
    Rule {
        name: "do-not-want-contact",
        slots: &[
            &["do"],
            &["not"],
            &["want", "wish"],
            &["you"],
            &["to"],
            CONTACT,
            &["me", "us", OPTIONAL],
        ],
        tail: Tail::Closing,
    },
    Rule {
        name: "no-more-contact",
        slots: &[
            &["no"],
            &["more", "further"],
            &[
                "calls",
                "calling",
                "texts",
                "texting",
                "messages",
                "reminders",
            ],
        ],
        tail: Tail::Any,
    },
    Rule {
        name: "opt-out",
        slots: &[&["opt"], &["me", "us", OPTIONAL], &["out"]],
        tail: Tail::Any,
    },
    Rule {
        name: "opt-out",
        slots: &[&["optout", "unsubscribe"], &["me", "us"]],
        tail: Tail::Any,
    },
    Rule {
        name: "opt-out",
        slots: &[
            &["want", "like", "wish", "need"],
            &["to"],
            &["unsubscribe", "optout"],
        ],
        tail: Tail::Any,
    },
    Rule {
        name: "leave-me-alone",
        slots: &[&["leave"], &["me", "us"], &["alone"]],
        tail: Tail::Any,
    },
    Rule {
        name: "please-stop",
        slots: &[&["please"], &["stop"]],
        tail: Tail::Whole,
    },
    Rule {
        name: "please-stop",
        slots: &[&["stop"], &["please"]],
        tail: Tail::Whole,
    },
];

/// Words that may close a [`Tail::Closing`] rule.
const CLOSING: &[&str] = &[
    "again", "anymore", "any", "more", "ever", "please", "now", "thanks", "thank", "ok", "okay",
];

/// Words that, within three words before a rule, undo it.
const NEGATIONS: &[&str] = &["not", "never", "no"];

/// The rule a patient's utterance (one call turn, one text) matches, if any.
pub fn in_utterance(text: &str) -> Option<&'static Rule> {
    let clauses = clauses(text);
    let whole: Vec<&str> = clauses.iter().flatten().map(String::as_str).collect();
    for clause in &clauses {
        let words: Vec<&str> = clause.iter().map(String::as_str).collect();
        for start in 0..words.len() {
            for rule in RULES {
                if let Some(end) = match_at(rule, &words, start) {
                    let tail_ok = match rule.tail {
                        Tail::Any => true,
                        Tail::Closing => words.get(end).is_none_or(|w| CLOSING.contains(w)),
                        // Inside one clause, as long as the whole text: it is the whole text.
                        Tail::Whole => whole.len() == end - start,
                    };
                    if tail_ok && !negated(&words, start) {
                        return Some(rule);
                    }
                }
            }
        }
    }
    None
}

/// The rule the patient's lines of an `AI:`/`User:` transcript match, if any (the first
/// matching line decides). Lines of the assistant, and lines with no speaker, are never read.
pub fn in_transcript(transcript: &str) -> Option<&'static Rule> {
    transcript.lines().find_map(|line| {
        let line = line.trim_start();
        let (speaker, said) = line.split_once(':')?;
        let patient = ["user", "customer", "patient"]
            .iter()
            .any(|who| speaker.trim().eq_ignore_ascii_case(who));
        if patient { in_utterance(said) } else { None }
    })
}

/// The end of `rule`'s words when they match at `start` (optional slots may be skipped).
fn match_at(rule: &Rule, words: &[&str], start: usize) -> Option<usize> {
    fn go(slots: &[&[&str]], words: &[&str], at: usize) -> Option<usize> {
        let Some((slot, rest)) = slots.split_first() else {
            return Some(at);
        };
        if let Some(word) = words.get(at)
            && slot.contains(word)
            && let Some(end) = go(rest, words, at + 1)
        {
            return Some(end);
        }
        if slot.contains(&OPTIONAL) {
            return go(rest, words, at);
        }
        None
    }
    go(rule.slots, words, start)
}

/// Whether a negation comes within three words before `start` ("don't stop calling"), save
/// for "why don't you …", which asks for the thing.
fn negated(words: &[&str], start: usize) -> bool {
    let window = &words[start.saturating_sub(3)..start];
    if !window.iter().any(|w| NEGATIONS.contains(w)) {
        return false;
    }
    let asked = start >= 4 && words[start - 4..start] == ["why", "do", "not", "you"];
    !asked
}

/// The text as clauses of normalised words: lower case, `’` read as `'`, contractions
/// expanded, hyphens and other punctuation separating words.
fn clauses(text: &str) -> Vec<Vec<String>> {
    let mut clauses = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut word = String::new();
    let flush_word = |word: &mut String, current: &mut Vec<String>| {
        let trimmed = word.trim_matches('\'');
        if !trimmed.is_empty() {
            current.extend(expand(trimmed).iter().map(|w| (*w).to_owned()));
        }
        word.clear();
    };
    for c in text.chars() {
        let c = match c {
            '\u{2019}' | '\u{2018}' | '`' => '\'',
            c => c.to_ascii_lowercase(),
        };
        if c.is_alphanumeric() || c == '\'' {
            word.extend(c.to_lowercase());
        } else {
            flush_word(&mut word, &mut current);
            if matches!(c, '.' | ',' | '!' | '?' | ';' | ':' | '\n' | '\r') && !current.is_empty() {
                clauses.push(std::mem::take(&mut current));
            }
        }
    }
    flush_word(&mut word, &mut current);
    if !current.is_empty() {
        clauses.push(current);
    }
    clauses
}

/// A word with its contraction expanded ("don't" → "do not").
fn expand(word: &str) -> Vec<&str> {
    match word {
        "don't" | "dont" => vec!["do", "not"],
        "doesn't" | "doesnt" => vec!["does", "not"],
        "didn't" | "didnt" => vec!["did", "not"],
        "won't" | "wont" => vec!["will", "not"],
        "can't" | "cant" | "cannot" => vec!["can", "not"],
        "i'd" => vec!["i", "would"],
        "i'm" | "im" => vec!["i", "am"],
        other => vec![other],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_are_recognised() {
        for (text, rule) in [
            ("Stop calling me, take me off your list", "stop-contacting"),
            ("please stop texting me", "stop-contacting"),
            ("STOP texting me", "stop-contacting"),
            ("Quit calling this number!", "stop-contacting"),
            ("Can you stop sending me these messages?", "stop-contacting"),
            ("Why don't you stop calling me?", "stop-contacting"),
            (
                "I don't know what this is, but please stop calling me.",
                "stop-contacting",
            ),
            ("don't text me again", "do-not-contact"),
            ("Don\u{2019}t call me anymore.", "do-not-contact"),
            ("DONT TEXT ME AGAIN", "do-not-contact"),
            ("Please do not contact me.", "do-not-contact"),
            (
                "I don't want these calls. Please don't call this number again.",
                "do-not-want-contact",
            ),
            ("Please don't call this number again.", "do-not-contact"),
            ("Never call me again.", "do-not-contact"),
            ("Put me on your do-not-call list.", "do-not-call-list"),
            ("remove me from your list", "remove-from-list"),
            ("Please remove me from your call list.", "remove-from-list"),
            ("Take me off your list, please.", "remove-from-list"),
            ("take us off the calling list", "remove-from-list"),
            ("Please take my number off your list", "remove-from-list"),
            ("please remove my number", "remove-from-list"),
            ("I don't want any more calls", "do-not-want-contact"),
            (
                "I do not want to be contacted anymore",
                "do-not-want-contact",
            ),
            ("I don't want you to call me again", "do-not-want-contact"),
            ("No more texts please", "no-more-contact"),
            ("I'd like to opt out", "opt-out"),
            ("opt me out", "opt-out"),
            ("Unsubscribe me.", "opt-out"),
            ("I want to unsubscribe", "opt-out"),
            ("Just leave me alone.", "leave-me-alone"),
            ("Please stop.", "please-stop"),
            ("stop please", "please-stop"),
        ] {
            assert_eq!(in_utterance(text).map(|r| r.name), Some(rule), "{text:?}");
        }
    }

    #[test]
    fn other_sentences_are_not_revocations() {
        for text in [
            "don't stop",
            "Don't stop calling me, I like the reminders",
            "I stopped taking my meds",
            "can you call me later",
            "Could you call me tomorrow morning?",
            "I'm at work right now. Can you call me back later this afternoon?",
            "please call me back",
            "don't call me before noon",
            "Don't call me at work, call my cell",
            "text me the address",
            "you can text me",
            "I don't want to opt out",
            "I don't want to miss my appointment",
            "take me off hold",
            "remove me from the waiting list",
            "I'll stop by the front desk",
            "The pain doesn't stop",
            "The bleeding stopped. Calling you back later",
            "no more questions",
            "never mind",
            "stop",
            "Stop, let me get a pen",
            "please stop by tomorrow",
            "I need to cancel my appointment",
            "yes please",
            "",
            "   ",
        ] {
            assert_eq!(in_utterance(text).map(|r| r.name), None, "{text:?}");
        }
    }

    #[test]
    fn only_the_patients_lines_of_a_transcript_count() {
        let assistant_only = "AI: Understood. You won't receive any more calls from us. \
                              Please stop calling us is what you said?\nUser: Thanks.";
        assert_eq!(in_transcript(assistant_only), None);
        let patient = "AI: Hi, this is Riverside Clinic.\nUser: Stop calling me, take me off your list.\nAI: I understand.";
        assert_eq!(
            in_transcript(patient).map(|r| r.name),
            Some("stop-contacting")
        );
        assert_eq!(
            in_transcript("Customer: remove me from your list").map(|r| r.name),
            Some("remove-from-list")
        );
        assert_eq!(in_transcript("stop calling me"), None, "no speaker");
        assert_eq!(in_transcript("Bot: stop calling me"), None);
    }
}
