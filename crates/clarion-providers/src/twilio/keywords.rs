//! Opt-out, opt-in and help keywords in inbound SMS.
//!
//! Twilio handles a few single-word replies itself on long codes (providers.md §2.5): it
//! auto-replies, blocks the sender→number pair on an opt-out, and **still forwards the message
//! to our webhook**. Twilio's block covers only that number (or Messaging Service), so Clarion
//! keeps its own suppression list and must recognise the same words, and then some:
//!
//! * **Opt-out** ([`Keyword::OptOut`]): Twilio's `STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT,
//!   REVOKE, OPTOUT`, plus `STOP ALL`, `OPT OUT` and `OPT-OUT` from the FCC's revocation list
//!   (47 CFR §64.1200(a)(10), providers.md §4.3). Missing an opt-out is the costly mistake, so
//!   the list is the union.
//! * **Opt-in** ([`Keyword::OptIn`]): `START, YES, UNSTOP`.
//! * **Help** ([`Keyword::Help`]): `HELP, INFO`.
//!
//! **Whole body only.** The body is trimmed, trailing `.`/`!` are dropped, runs of whitespace
//! become one space, and the result is compared case-insensitively with the lists. "STOP
//! PLEASE" and "I need to cancel my appointment" are [`Keyword::Other`], as with Twilio. The
//! punctuation rule goes slightly beyond Twilio's exact match ("Stop." is an opt-out here): a
//! reasonable reader takes it as one, and the FCC honours revocation "by any reasonable
//! means". Free-text revocations ("please stop texting me", "don't text me again") are
//! recognised by [`clarion_channels::revocation`], the detector calls use too: they suppress the
//! number like a keyword, in or out of a conversation, and — Twilio having confirmed nothing —
//! are answered with one confirmation (see [`crate::sms_assistant`]).
//!
//! **`OptOutType`.** With Advanced Opt-Out (a Messaging Service feature, custom and translated
//! keywords), Twilio tells us its own reading in the `OptOutType` form parameter (`STOP`,
//! `START`, `HELP`). [`classify_inbound`] honours it; when the body and the parameter disagree,
//! an opt-out from either side wins, for the reason above.
//!
//! **YES is a reply, not a re-subscription.** Twilio treats a bare `YES` as an opt-in, and a
//! patient answering "Reply YES to confirm" sends exactly that. Clarion's rule:
//! [`Keyword::OptIn`] is *informational* — it is reported so the server can record that the
//! contact asked to receive messages again, but this crate never lifts a suppression by itself,
//! and every opt-in message (YES included) still goes to the assistant as an ordinary reply
//! ([`Keyword::goes_to_assistant`]). Opt-outs and help requests do not: an opt-out ends the
//! conversation with no reply from us (Twilio has already sent the one confirmation the rules
//! allow), and a help request is answered with the organisation's help text.

/// What a whole inbound SMS body means to the carrier-level keyword rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    /// The contact revoked consent: suppress the number and end the conversation.
    OptOut,
    /// The contact asked to receive messages again (informational, see the module docs).
    OptIn,
    /// The contact asked for help: answer with the organisation's help text.
    Help,
    /// Anything else: an ordinary reply.
    Other,
}

impl Keyword {
    /// Whether the message is an ordinary reply for the conversation's assistant: true for
    /// [`Keyword::Other`] and [`Keyword::OptIn`] (a `YES` is an answer), false for opt-outs
    /// and help requests, which Clarion answers itself.
    pub fn goes_to_assistant(self) -> bool {
        matches!(self, Keyword::Other | Keyword::OptIn)
    }

    /// Whether the number must go on the organisation's suppression list.
    pub fn suppresses(self) -> bool {
        self == Keyword::OptOut
    }
}

/// Opt-out keywords: Twilio's defaults and the FCC's spelled-out variants.
pub const OPT_OUT_KEYWORDS: [&str; 11] = [
    "STOP",
    "STOPALL",
    "STOP ALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "OPT OUT",
    "OPT-OUT",
];

/// Opt-in keywords (Twilio's defaults).
pub const OPT_IN_KEYWORDS: [&str; 3] = ["START", "YES", "UNSTOP"];

/// Help keywords (Twilio's defaults).
pub const HELP_KEYWORDS: [&str; 2] = ["HELP", "INFO"];

/// Classifies a whole inbound body by the keyword lists (module docs).
pub fn classify(body: &str) -> Keyword {
    let normalized = normalize(body);
    let is_in = |list: &[&str]| list.iter().any(|k| k.eq_ignore_ascii_case(&normalized));
    if is_in(&OPT_OUT_KEYWORDS) {
        Keyword::OptOut
    } else if is_in(&OPT_IN_KEYWORDS) {
        Keyword::OptIn
    } else if is_in(&HELP_KEYWORDS) {
        Keyword::Help
    } else {
        Keyword::Other
    }
}

/// Classifies an inbound message from its body and Twilio's `OptOutType` parameter, when the
/// webhook carried one. An opt-out from either wins; otherwise a recognised `OptOutType`
/// (`STOP`, `START`, `HELP`, any case) decides, and an unrecognised or absent one leaves the
/// decision to the body.
pub fn classify_inbound(body: &str, opt_out_type: Option<&str>) -> Keyword {
    let from_body = classify(body);
    let from_twilio = opt_out_type.and_then(|kind| match kind.trim() {
        k if k.eq_ignore_ascii_case("STOP") => Some(Keyword::OptOut),
        k if k.eq_ignore_ascii_case("START") => Some(Keyword::OptIn),
        k if k.eq_ignore_ascii_case("HELP") => Some(Keyword::Help),
        _ => None,
    });
    match (from_body, from_twilio) {
        (Keyword::OptOut, _) | (_, Some(Keyword::OptOut)) => Keyword::OptOut,
        (_, Some(kind)) => kind,
        (kind, None) => kind,
    }
}

fn normalize(body: &str) -> String {
    let trimmed = body.trim().trim_end_matches(['.', '!']);
    trimmed.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_keyword_is_recognised_in_any_case() {
        for (list, kind) in [
            (&OPT_OUT_KEYWORDS[..], Keyword::OptOut),
            (&OPT_IN_KEYWORDS[..], Keyword::OptIn),
            (&HELP_KEYWORDS[..], Keyword::Help),
        ] {
            for word in list {
                assert_eq!(classify(word), kind, "{word}");
                assert_eq!(classify(&word.to_lowercase()), kind, "{word}");
                assert_eq!(classify(&format!("  {word}\n")), kind, "{word}");
            }
        }
        assert_eq!(classify("Stop"), Keyword::OptOut);
        assert_eq!(classify("uNsUbScRiBe"), Keyword::OptOut);
    }

    #[test]
    fn only_the_whole_body_counts() {
        for body in [
            "STOP PLEASE",
            "please stop",
            "I need to cancel my appointment",
            "yes please",
            "help me reschedule",
            "stopp",
            "",
            "   ",
        ] {
            assert_eq!(classify(body), Keyword::Other, "{body:?}");
        }
    }

    #[test]
    fn trailing_punctuation_and_inner_spacing_are_forgiven() {
        assert_eq!(classify("Stop."), Keyword::OptOut);
        assert_eq!(classify("STOP!!"), Keyword::OptOut);
        assert_eq!(classify("stop   all"), Keyword::OptOut);
        assert_eq!(classify("Opt out"), Keyword::OptOut);
        assert_eq!(classify("Yes!"), Keyword::OptIn);
        // A question mark is not dropped: "Stop?" asks something.
        assert_eq!(classify("Stop?"), Keyword::Other);
    }

    #[test]
    fn twilio_opt_out_type_is_honoured() {
        // Advanced Opt-Out with a custom (translated) keyword.
        assert_eq!(classify_inbound("PARAR", Some("STOP")), Keyword::OptOut);
        assert_eq!(classify_inbound("COMENZAR", Some("start")), Keyword::OptIn);
        assert_eq!(classify_inbound("AYUDA", Some("HELP")), Keyword::Help);
        // Unknown or absent parameter: the body decides.
        assert_eq!(classify_inbound("STOP", Some("SOMETHING")), Keyword::OptOut);
        assert_eq!(classify_inbound("hello", None), Keyword::Other);
        assert_eq!(classify_inbound("hello", Some("")), Keyword::Other);
    }

    #[test]
    fn an_opt_out_from_either_side_wins() {
        assert_eq!(classify_inbound("STOP", Some("HELP")), Keyword::OptOut);
        assert_eq!(classify_inbound("HELP", Some("STOP")), Keyword::OptOut);
        assert_eq!(classify_inbound("YES", Some("STOP")), Keyword::OptOut);
    }

    #[test]
    fn yes_is_an_opt_in_that_still_reaches_the_assistant() {
        let kind = classify("YES");
        assert_eq!(kind, Keyword::OptIn);
        assert!(kind.goes_to_assistant());
        assert!(!kind.suppresses());
        assert!(Keyword::Other.goes_to_assistant());
        assert!(!Keyword::OptOut.goes_to_assistant());
        assert!(Keyword::OptOut.suppresses());
        assert!(!Keyword::Help.goes_to_assistant());
    }
}
