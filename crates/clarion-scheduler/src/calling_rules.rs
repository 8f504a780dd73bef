//! Calling rules by jurisdiction: the US states' stricter calling windows and attempt limits
//! (`data/us-calling-rules.toml`, embedded), an organisation's own rules in the same shape,
//! and which of them apply to a contact (their `state`, else their number's area code,
//! `data/us-area-codes.toml`).
//!
//! The engine applies what this module resolves ([`clarion_engine::CallingRule`] in the
//! plan: the strictest window wins, checked again just before every provider request); the
//! scheduler applies the attempt limits at wake-up, like the contact caps.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{NaiveTime, Weekday};
use clarion_engine::{CallingHours, CallingRule, Weekdays};
use serde::{Deserialize, Serialize};

use crate::definition::Invalid;

/// At most this many rules per organisation (each is checked at every wake-up of its
/// contacts).
pub const MAX_ORGANIZATION_RULES: usize = 50;

/// One calling rule as written in the table and in `PATCH /v1/organization`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDefinition {
    /// Names the rule in the deferrals it causes.
    pub name: String,
    /// The two-letter US state codes it applies to; empty or absent: every contact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<String>,
    /// The local weekdays it governs (`mon`..`sun`); absent: every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekdays: Option<Vec<String>>,
    /// Local window start (`HH:MM`), with `end`; both absent: no contact on those days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Local window end (`HH:MM`, exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// At most this many contacts of one number in any 24 hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts_per_24h: Option<u32>,
    /// Where the rule comes from (the built-in table's statutes; optional for an
    /// organisation's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// A rule ready for the engine, with its attempt limit (applied by the scheduler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRule {
    pub rule: CallingRule,
    pub max_attempts_per_24h: Option<u32>,
}

impl RuleDefinition {
    /// Checks the rule (`field` is its JSON path for the error) and converts it.
    pub fn resolve(&self, field: &str) -> Result<ResolvedRule, Invalid> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(invalid(
                format!("{field}.name"),
                "must be 1 to 64 printable characters",
            ));
        }
        for (i, state) in self.states.iter().enumerate() {
            if !is_state_code(state) {
                return Err(invalid(
                    format!("{field}.states[{i}]"),
                    "must be a two-letter US state code such as \"FL\"",
                ));
            }
        }
        let weekdays = match &self.weekdays {
            None => Weekdays::ALL,
            Some(days) if days.is_empty() => {
                return Err(invalid(
                    format!("{field}.weekdays"),
                    "must name at least one day, or be left out for every day",
                ));
            }
            Some(days) => days
                .iter()
                .enumerate()
                .map(|(i, day)| {
                    parse_weekday(day).ok_or_else(|| {
                        invalid(
                            format!("{field}.weekdays[{i}]"),
                            "must be one of mon, tue, wed, thu, fri, sat, sun",
                        )
                    })
                })
                .collect::<Result<Weekdays, Invalid>>()?,
        };
        let hours = match (&self.start, &self.end) {
            (None, None) => None,
            (Some(start), Some(end)) => {
                let start = parse_time(&format!("{field}.start"), start)?;
                let end = parse_time(&format!("{field}.end"), end)?;
                if start >= end {
                    return Err(invalid(
                        format!("{field}.end"),
                        "must be after start (windows do not cross midnight)",
                    ));
                }
                Some(CallingHours { start, end })
            }
            _ => {
                return Err(invalid(
                    format!("{field}.start"),
                    "start and end go together (leave both out for no contact on those days)",
                ));
            }
        };
        if self.max_attempts_per_24h == Some(0) {
            return Err(invalid(
                format!("{field}.max_attempts_per_24h"),
                "must be at least 1 (use a rule without start and end to ban contact)",
            ));
        }
        Ok(ResolvedRule {
            rule: CallingRule {
                name: name.to_owned(),
                weekdays,
                hours,
            },
            max_attempts_per_24h: self.max_attempts_per_24h,
        })
    }

    fn applies_to(&self, state: Option<&str>) -> bool {
        self.states.is_empty() || state.is_some_and(|s| self.states.iter().any(|r| r == s))
    }
}

/// Checks an organisation's rules as `PATCH /v1/organization` receives them.
pub fn validate_rules(rules: &[RuleDefinition]) -> Result<(), Invalid> {
    if rules.len() > MAX_ORGANIZATION_RULES {
        return Err(invalid(
            "calling_rules".to_owned(),
            format!("at most {MAX_ORGANIZATION_RULES} rules"),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        rule.resolve(&format!("calling_rules[{i}]"))?;
    }
    Ok(())
}

/// An organisation's rules as stored (validated when set; an unreadable value reads as
/// none, and the built-in table and the templates' windows still apply).
pub fn stored(text: Option<&str>) -> Vec<RuleDefinition> {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// The built-in rules, in table order.
pub fn built_in_rules() -> &'static [RuleDefinition] {
    &BUILT_IN.rule
}

/// The rules that apply to a contact in `state` (`None`: unknown): the built-in table's, then
/// the organisation's (`org_rules`, already validated; one that no longer resolves is
/// skipped, never a reason to contact outside the others).
pub fn rules_for(state: Option<&str>, org_rules: &[RuleDefinition]) -> Vec<ResolvedRule> {
    BUILT_IN
        .rule
        .iter()
        .chain(org_rules)
        .filter(|rule| rule.applies_to(state))
        .filter_map(|rule| rule.resolve("rule").ok())
        .collect()
}

/// The contact's state: the enrollment's `state` when given, else the state of the number's
/// area code (a `+1` number only), else `None`.
pub fn state_of(explicit: Option<&str>, phone_number: &str) -> Option<String> {
    if let Some(state) = explicit {
        return Some(state.to_owned());
    }
    let digits = phone_number.strip_prefix("+1")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let area: u16 = digits.get(..3)?.parse().ok()?;
    AREA_CODES.get(&area).map(|state| (*state).to_owned())
}

/// Whether `code` is a two-letter US state (or DC) code of the area code table.
pub fn is_state_code(code: &str) -> bool {
    STATES.contains_key(code)
}

#[derive(Deserialize)]
struct Table {
    rule: Vec<RuleDefinition>,
}

/// The table is part of the binary: a mistake in it fails the tests, and at run time falls
/// back to no built-in rules rather than stopping the scheduler (the template's window and
/// the organisation's rules still apply).
static BUILT_IN: LazyLock<Table> = LazyLock::new(|| {
    toml::from_str(include_str!("../data/us-calling-rules.toml"))
        .unwrap_or(Table { rule: Vec::new() })
});

static STATES: LazyLock<HashMap<String, Vec<u16>>> = LazyLock::new(|| {
    toml::from_str(include_str!("../data/us-area-codes.toml")).unwrap_or_default()
});

static AREA_CODES: LazyLock<HashMap<u16, &'static str>> = LazyLock::new(|| {
    STATES
        .iter()
        .flat_map(|(state, codes)| codes.iter().map(move |code| (*code, state.as_str())))
        .collect()
});

fn parse_weekday(day: &str) -> Option<Weekday> {
    Some(match day {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

fn parse_time(field: &str, text: &str) -> Result<NaiveTime, Invalid> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| invalid(field.to_owned(), "must be a local time HH:MM"))
}

fn invalid(field: String, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_built_in_table_parses_and_every_rule_resolves_with_a_source() {
        let table: Table = toml::from_str(include_str!("../data/us-calling-rules.toml")).unwrap();
        assert!(table.rule.len() >= 10);
        for rule in &table.rule {
            rule.resolve(&rule.name).unwrap();
            assert!(!rule.sources.is_empty(), "{} has no source", rule.name);
            assert!(!rule.states.is_empty(), "{} applies to no state", rule.name);
            for state in &rule.states {
                assert!(is_state_code(state), "{}: {state}", rule.name);
            }
        }
        assert_eq!(built_in_rules().len(), table.rule.len());
    }

    #[test]
    fn the_area_code_table_parses_and_names_each_code_once() {
        let states: HashMap<String, Vec<u16>> =
            toml::from_str(include_str!("../data/us-area-codes.toml")).unwrap();
        assert_eq!(states.len(), 51, "50 states and DC");
        let mut seen = HashMap::new();
        for (state, codes) in &states {
            for code in codes {
                assert!((201..=989).contains(code), "{state}: {code}");
                if let Some(other) = seen.insert(*code, state.clone()) {
                    panic!("{code} is in both {other} and {state}");
                }
            }
        }
    }

    #[test]
    fn the_state_comes_from_the_enrollment_else_from_the_area_code() {
        assert_eq!(state_of(None, "+13055550100").as_deref(), Some("FL"));
        assert_eq!(state_of(None, "+17135550100").as_deref(), Some("TX"));
        assert_eq!(state_of(None, "+18085550100").as_deref(), Some("HI"));
        // The explicit state wins over the number's.
        assert_eq!(state_of(Some("TX"), "+13055550100").as_deref(), Some("TX"));
        // Toll-free, Canadian and non-NANP numbers have no state.
        assert_eq!(state_of(None, "+18005550100"), None);
        assert_eq!(state_of(None, "+14165550100"), None);
        assert_eq!(state_of(None, "+442071234567"), None);
        assert_eq!(state_of(None, "+1305"), None);
    }

    #[test]
    fn florida_gets_its_window_and_limit_and_texas_its_two_windows() {
        let florida = rules_for(Some("FL"), &[]);
        assert_eq!(florida.len(), 1);
        assert_eq!(florida[0].rule.name, "US-FL");
        assert_eq!(florida[0].max_attempts_per_24h, Some(3));
        let hours = florida[0].rule.hours.unwrap();
        assert_eq!(
            (hours.start.to_string(), hours.end.to_string()),
            ("08:00:00".into(), "20:00:00".into())
        );
        let texas: Vec<String> = rules_for(Some("TX"), &[])
            .into_iter()
            .map(|r| r.rule.name)
            .collect();
        assert_eq!(texas, ["US-TX", "US-TX-sunday"]);
        assert!(rules_for(Some("NY"), &[]).is_empty());
        assert!(rules_for(None, &[]).is_empty());
    }

    #[test]
    fn an_organisation_rule_for_every_state_or_for_some_applies_after_the_table() {
        let own = |name: &str, states: &[&str]| RuleDefinition {
            name: name.into(),
            states: states.iter().map(|s| (*s).to_owned()).collect(),
            weekdays: Some(vec!["sat".into(), "sun".into()]),
            start: Some("10:00".into()),
            end: Some("16:00".into()),
            max_attempts_per_24h: None,
            sources: Vec::new(),
        };
        let org = [own("weekends", &[]), own("florida-clinic", &["FL"])];
        let names = |state| -> Vec<String> {
            rules_for(state, &org)
                .into_iter()
                .map(|r| r.rule.name)
                .collect()
        };
        assert_eq!(names(Some("FL")), ["US-FL", "weekends", "florida-clinic"]);
        assert_eq!(names(Some("NY")), ["weekends"]);
        assert_eq!(names(None), ["weekends"]);
    }

    #[test]
    fn invalid_organisation_rules_name_the_field() {
        let base = RuleDefinition {
            name: "r".into(),
            states: Vec::new(),
            weekdays: None,
            start: Some("09:00".into()),
            end: Some("17:00".into()),
            max_attempts_per_24h: None,
            sources: Vec::new(),
        };
        let field = |rule: RuleDefinition| validate_rules(&[rule]).unwrap_err().field;
        assert!(validate_rules(std::slice::from_ref(&base)).is_ok());
        assert_eq!(
            field(RuleDefinition {
                states: vec!["Florida".into()],
                ..base.clone()
            }),
            "calling_rules[0].states[0]"
        );
        assert_eq!(
            field(RuleDefinition {
                weekdays: Some(vec!["sunday".into()]),
                ..base.clone()
            }),
            "calling_rules[0].weekdays[0]"
        );
        assert_eq!(
            field(RuleDefinition {
                end: Some("08:00".into()),
                ..base.clone()
            }),
            "calling_rules[0].end"
        );
        assert_eq!(
            field(RuleDefinition {
                end: None,
                ..base.clone()
            }),
            "calling_rules[0].start"
        );
        assert_eq!(
            field(RuleDefinition {
                max_attempts_per_24h: Some(0),
                ..base.clone()
            }),
            "calling_rules[0].max_attempts_per_24h"
        );
        assert_eq!(
            field(RuleDefinition {
                name: " ".into(),
                ..base.clone()
            }),
            "calling_rules[0].name"
        );
        let many = vec![base; MAX_ORGANIZATION_RULES + 1];
        assert_eq!(validate_rules(&many).unwrap_err().field, "calling_rules");
    }
}
