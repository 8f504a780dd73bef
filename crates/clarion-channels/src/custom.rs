//! Values for the assistant's custom analysis fields, consistent with the outcome.
//!
//! Every configured field gets an entry, `null` when the encounter did not establish it:
//!
//! * **Boolean**: `true` when resolved, `false` when declined, `null` otherwise.
//! * **Enum**: `null` unless the contact engaged in a conversation; then the first listed value
//!   whose words match the outcome (e.g. `confirmed` for resolved, `cancelled` or
//!   `not_attending` for declined, `callback_requested` for requested-callback); failing that,
//!   for outcomes other than resolved/declined, an undecided value (`unknown`, `pending`, …);
//!   failing that, a seeded pick among values that contradict nothing (never `confirmed` for a
//!   refusal or `not_attending` for a callback request), or `null` when every value would.
//! * **String**: chosen by the field's name: `*callback*`/`*window*`/`*time*` get the requested
//!   callback window, `*reason*` the reason the contact gave, `*note*`/`*summary*`/`*comment*`
//!   the summary, `*provider*`/`*doctor*` the provider's name; any other string field gets the
//!   contact's stated reason. All are `null` without a conversation (or without the fact).
//! * **Number**: a 1–5 score (4–5 when resolved, 1–3 otherwise) when the contact engaged,
//!   `null` otherwise.

use serde_json::{Map, Value};

use crate::dice::Dice;
use crate::outcome::EncounterOutcome;
use crate::profile::{CustomField, CustomFieldKind};
use crate::script::{Ctx, Facts};

/// Words whose presence makes an enum value negative ("not_attending").
const NEGATIONS: [&str; 7] = ["not", "no", "non", "never", "dont", "wont", "cannot"];

/// Keywords, matched against each word of an enum value: equal, or a prefix of the word when
/// the keyword has four letters or more.
fn keywords(outcome: EncounterOutcome) -> &'static [&'static str] {
    match outcome {
        EncounterOutcome::Resolved => &[
            "confirm", "yes", "resolv", "attend", "accept", "agree", "complet", "success",
        ],
        EncounterOutcome::Declined => &["declin", "cancel", "refus", "reject", "no"],
        EncounterOutcome::Unresolved => &[
            "unsure",
            "undecided",
            "unknown",
            "pending",
            "maybe",
            "unresolv",
            "tentative",
        ],
        EncounterOutcome::RequestedCallback => &["callback", "call", "later", "resched"],
        EncounterOutcome::Escalated => &[
            "escalat", "transfer", "staff", "human", "nurse", "agent", "person",
        ],
        EncounterOutcome::OptOut => &["opt", "optout", "stop", "unsubscrib", "dnc"],
        _ => &[],
    }
}

fn words(value: &str) -> Vec<String> {
    value
        .to_lowercase()
        .replace('\'', "")
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn matches_keyword(word: &str, keyword: &str) -> bool {
    word == keyword || (keyword.len() >= 4 && word.starts_with(keyword))
}

fn enum_value_fits(value: &str, outcome: EncounterOutcome) -> bool {
    let words = words(value);
    let negated = words.iter().any(|w| NEGATIONS.contains(&w.as_str()));
    let has = |outcome| {
        keywords(outcome)
            .iter()
            .any(|k| words.iter().any(|w| matches_keyword(w, k)))
    };
    match outcome {
        EncounterOutcome::Resolved => !negated && has(EncounterOutcome::Resolved),
        EncounterOutcome::Declined => {
            has(EncounterOutcome::Declined) || (negated && has(EncounterOutcome::Resolved))
        }
        other => has(other),
    }
}

fn enum_value(
    values: &[String],
    outcome: EncounterOutcome,
    facts: &Facts,
    dice: &mut Dice,
) -> Value {
    if values.is_empty() || !facts.conversation {
        return Value::Null;
    }
    let fitting = |outcome| values.iter().find(|value| enum_value_fits(value, outcome));
    let decided = matches!(
        outcome,
        EncounterOutcome::Resolved | EncounterOutcome::Declined
    );
    if let Some(value) = fitting(outcome) {
        return Value::String(value.clone());
    }
    if !decided && let Some(value) = fitting(EncounterOutcome::Unresolved) {
        return Value::String(value.clone());
    }
    // Never a value that says the opposite of what happened (a callback request is not
    // "not_attending"): pick among values that claim neither a confirmation nor a refusal.
    let neutral: Vec<&String> = values
        .iter()
        .filter(|value| {
            (outcome == EncounterOutcome::Resolved
                || !enum_value_fits(value, EncounterOutcome::Resolved))
                && (outcome == EncounterOutcome::Declined
                    || !enum_value_fits(value, EncounterOutcome::Declined))
        })
        .collect();
    if neutral.is_empty() {
        return Value::Null;
    }
    Value::String((*dice.pick(&neutral)).clone())
}

fn string_value(name: &str, facts: &Facts, ctx: &Ctx, summary: &str) -> Value {
    if !facts.conversation {
        return Value::Null;
    }
    let name = name.to_lowercase();
    let has = |parts: &[&str]| parts.iter().any(|part| name.contains(part));
    let text = if has(&["callback", "call_back", "window", "time"]) {
        facts.callback_window.clone()
    } else if has(&["reason"]) {
        facts.reason.clone()
    } else if has(&["note", "summary", "comment"]) {
        Some(summary.to_owned())
    } else if has(&["provider", "doctor"]) {
        ctx.provider.clone()
    } else {
        facts.reason.clone()
    };
    text.map_or(Value::Null, Value::String)
}

/// One entry per field, in a map keyed by field name.
pub(crate) fn custom_values(
    fields: &[CustomField],
    outcome: EncounterOutcome,
    facts: &Facts,
    ctx: &Ctx,
    summary: &str,
    dice: &mut Dice,
) -> Map<String, Value> {
    let mut values = Map::new();
    for field in fields {
        let value = match &field.kind {
            CustomFieldKind::Boolean => match outcome {
                EncounterOutcome::Resolved => Value::Bool(true),
                EncounterOutcome::Declined => Value::Bool(false),
                _ => Value::Null,
            },
            CustomFieldKind::Enum(options) => enum_value(options, outcome, facts, dice),
            CustomFieldKind::String => string_value(&field.name, facts, ctx, summary),
            CustomFieldKind::Number if facts.conversation => {
                let score = if outcome == EncounterOutcome::Resolved {
                    dice.between(4, 5)
                } else {
                    dice.between(1, 3)
                };
                Value::from(score)
            }
            CustomFieldKind::Number => Value::Null,
        };
        values.insert(field.name.clone(), value);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_are_matched_by_their_words() {
        assert!(enum_value_fits("confirmed", EncounterOutcome::Resolved));
        assert!(!enum_value_fits(
            "not_attending",
            EncounterOutcome::Resolved
        ));
        assert!(enum_value_fits("not_attending", EncounterOutcome::Declined));
        assert!(enum_value_fits("cancelled", EncounterOutcome::Declined));
        assert!(!enum_value_fits("unknown", EncounterOutcome::Declined));
        assert!(enum_value_fits(
            "callback-requested",
            EncounterOutcome::RequestedCallback
        ));
        assert!(enum_value_fits("Opt out", EncounterOutcome::OptOut));
        assert!(enum_value_fits(
            "transferred to staff",
            EncounterOutcome::Escalated
        ));
    }

    #[test]
    fn enum_values_never_contradict_the_outcome() {
        let facts = Facts {
            conversation: true,
            ..Facts::default()
        };
        let values: Vec<String> = vec!["confirmed".into(), "not_attending".into()];
        let mut dice = Dice::new(crate::dice::Stream::Script, 1, 1, 1, crate::Channel::Call);
        for outcome in [
            EncounterOutcome::RequestedCallback,
            EncounterOutcome::OptOut,
            EncounterOutcome::Escalated,
        ] {
            assert_eq!(enum_value(&values, outcome, &facts, &mut dice), Value::Null);
        }
        let values: Vec<String> = vec!["yes".into(), "no".into(), "later".into(), "pending".into()];
        let pick = |outcome, dice: &mut Dice| enum_value(&values, outcome, &facts, dice);
        assert_eq!(pick(EncounterOutcome::Resolved, &mut dice), "yes");
        assert_eq!(pick(EncounterOutcome::Declined, &mut dice), "no");
        assert_eq!(
            pick(EncounterOutcome::RequestedCallback, &mut dice),
            "later"
        );
        assert_eq!(pick(EncounterOutcome::Escalated, &mut dice), "pending");
    }
}
