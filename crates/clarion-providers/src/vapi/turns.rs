//! The report's transcript and conversation metrics from a Vapi call's artifact.
//!
//! Vapi has no field for `repetition_count` or `interruption_count` (providers.md §1.9), so
//! Clarion computes them, as the simulator does, from an `AI:`/`User:` transcript, one turn per
//! line ([`clarion_channels::analysis`]). Where Vapi gives timed messages we can do better for
//! interruptions than the simulator's text markers:
//!
//! * **Transcript**: `artifact.messages` in the order given; role `bot` or `assistant` is
//!   `AI:`, `user` is `User:`, every other role (system prompt, tool calls and results) is
//!   left out. Line breaks inside a message become spaces so each turn stays one line, and
//!   empty messages are skipped.
//! * **Interruptions**: a user message that starts (`time`) before the preceding bot message
//!   finished (`endTime`) barged in. Each bot message can be interrupted once: further user
//!   messages that overlap the same bot message are the same barge-in, not new ones. A message
//!   without times does not count.
//! * **Repetitions**: [`count_repetitions`] on the built transcript.
//!
//! Without usable messages (none, or no AI/User turn among them: Vapi omits them in some
//! plans), the plain `artifact.transcript` is used and both counts come from its text. Vapi's
//! text is normally one turn per line; a transcript on a single line ("AI: Hi. User: Hello.")
//! is split before each ` AI: ` / ` User: ` so the counts see turns.

use clarion_channels::analysis::{count_interruptions, count_repetitions};

use super::wire::{ArtifactMessage, VapiArtifact};

/// The transcript and metrics of one call, as the report carries them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Turns {
    /// `AI:`/`User:` lines, or `None` when the call left no transcript.
    pub transcript: Option<String>,
    /// `analysis.repetition_count`; `None` without a transcript.
    pub repetition_count: Option<u32>,
    /// `analysis.interruption_count`; `None` without a transcript.
    pub interruption_count: Option<u32>,
    /// Whether the numbers came from timed messages (`true`) or from transcript text.
    pub from_messages: bool,
}

impl std::fmt::Debug for Turns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turns")
            .field("transcript", &crate::redact::Opt(&self.transcript))
            .field("repetition_count", &self.repetition_count)
            .field("interruption_count", &self.interruption_count)
            .field("from_messages", &self.from_messages)
            .finish()
    }
}

/// Which side spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaker {
    Ai,
    User,
}

fn speaker(role: Option<&str>) -> Option<Speaker> {
    match role?.trim() {
        "bot" | "assistant" => Some(Speaker::Ai),
        "user" => Some(Speaker::User),
        _ => None,
    }
}

/// Transcript and counts for an artifact (module docs).
pub fn from_artifact(artifact: &VapiArtifact) -> Turns {
    artifact
        .messages
        .as_deref()
        .and_then(from_messages)
        .unwrap_or_else(|| from_transcript(artifact.transcript.as_deref()))
}

/// Transcript and counts from timed messages; `None` when they hold no AI or User turn.
pub fn from_messages(messages: &[ArtifactMessage]) -> Option<Turns> {
    let mut lines = Vec::new();
    let mut interruptions = 0;
    // The end of the latest bot message, while it can still be interrupted.
    let mut open_bot_end: Option<f64> = None;
    for message in messages {
        let Some(who) = speaker(message.role.as_deref()) else {
            continue;
        };
        let text = one_line(message.message.as_deref().unwrap_or_default());
        if text.is_empty() {
            continue;
        }
        match who {
            Speaker::Ai => {
                lines.push(format!("AI: {text}"));
                open_bot_end = message.end_time;
            }
            Speaker::User => {
                lines.push(format!("User: {text}"));
                if let (Some(start), Some(bot_end)) = (message.time, open_bot_end)
                    && start < bot_end
                {
                    interruptions += 1;
                    open_bot_end = None;
                }
            }
        }
    }
    if lines.is_empty() {
        return None;
    }
    let transcript = lines.join("\n");
    Some(Turns {
        repetition_count: Some(count_repetitions(&transcript)),
        interruption_count: Some(interruptions),
        transcript: Some(transcript),
        from_messages: true,
    })
}

/// Transcript and counts from Vapi's plain-text transcript.
pub fn from_transcript(transcript: Option<&str>) -> Turns {
    let Some(text) = transcript
        .map(normalize_transcript)
        .filter(|t| !t.is_empty())
    else {
        return Turns::default();
    };
    Turns {
        repetition_count: Some(count_repetitions(&text)),
        interruption_count: Some(count_interruptions(&text)),
        transcript: Some(text),
        from_messages: false,
    }
}

/// One turn per line, trailing whitespace trimmed (module docs).
fn normalize_transcript(text: &str) -> String {
    let text = text.trim();
    let text = if text.contains('\n') {
        text.to_owned()
    } else {
        text.replace(" User: ", "\nUser: ")
            .replace(" AI: ", "\nAI: ")
    };
    text.lines()
        .map(str::trim_end)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T0: f64 = 1_736_175_600_000.0;

    fn msg(role: &str, text: &str, start_s: f64, end_s: f64) -> ArtifactMessage {
        ArtifactMessage {
            role: Some(role.to_owned()),
            message: Some(text.to_owned()),
            time: Some(T0 + start_s * 1000.0),
            end_time: Some(T0 + end_s * 1000.0),
            seconds_from_start: Some(start_s),
            duration: Some((end_s - start_s) * 1000.0),
        }
    }

    #[test]
    fn messages_become_one_turn_per_line_and_other_roles_are_dropped() {
        let messages = [
            msg("system", "You are a scheduling assistant.", 0.0, 0.0),
            msg("bot", "Hi Ana, this is Clinic X.", 1.0, 3.0),
            msg("user", "Hi.\nWho is\tthis?", 3.5, 4.5),
            ArtifactMessage {
                role: Some("tool_calls".into()),
                ..ArtifactMessage::default()
            },
            msg("assistant", "Clinic X, about your visit.", 5.0, 7.0),
            msg("user", "   ", 7.5, 8.0),
        ];
        let turns = from_messages(&messages).unwrap();
        assert_eq!(
            turns.transcript.as_deref(),
            Some(
                "AI: Hi Ana, this is Clinic X.\nUser: Hi. Who is this?\nAI: Clinic X, about your visit."
            )
        );
        assert_eq!(turns.interruption_count, Some(0));
        assert_eq!(turns.repetition_count, Some(0));
        assert!(turns.from_messages);
    }

    #[test]
    fn a_user_message_starting_before_the_bot_finished_is_an_interruption() {
        let messages = [
            msg(
                "bot",
                "Your appointment is on Friday at ten in the morning.",
                1.0,
                6.0,
            ),
            // Barges in at 4 s while the bot speaks until 6 s.
            msg("user", "Wait, which Friday?", 4.0, 5.0),
            // Same barge-in, still before 6 s: not a second interruption.
            msg("user", "The twelfth?", 5.2, 5.8),
            msg("bot", "Friday the twelfth.", 6.5, 8.0),
            // After the bot finished: a normal reply.
            msg("user", "Okay.", 8.5, 9.0),
            msg(
                "bot",
                "Can you confirm you will attend the visit?",
                9.5,
                12.0,
            ),
            msg("user", "Yes I can.", 11.0, 12.0),
        ];
        let turns = from_messages(&messages).unwrap();
        assert_eq!(turns.interruption_count, Some(2));
    }

    #[test]
    fn messages_without_times_never_count_as_interruptions() {
        let mut early = msg("user", "Hello?", 0.5, 1.0);
        early.time = None;
        let mut bot = msg("bot", "Hi there.", 0.0, 3.0);
        let messages = [bot.clone(), early];
        assert_eq!(
            from_messages(&messages).unwrap().interruption_count,
            Some(0)
        );
        bot.end_time = None;
        let messages = [bot, msg("user", "Hello?", 0.5, 1.0)];
        assert_eq!(
            from_messages(&messages).unwrap().interruption_count,
            Some(0)
        );
    }

    #[test]
    fn a_user_turn_before_any_bot_turn_is_not_an_interruption() {
        let messages = [msg("user", "Hello?", 0.0, 1.0), msg("bot", "Hi.", 1.5, 2.0)];
        assert_eq!(
            from_messages(&messages).unwrap().interruption_count,
            Some(0)
        );
    }

    #[test]
    fn repetitions_are_counted_on_the_built_transcript() {
        let messages = [
            msg("bot", "Your appointment is on Friday at ten.", 0.0, 3.0),
            msg("user", "Sorry, what?", 3.5, 4.0),
            msg("bot", "Your appointment is on Friday at ten.", 4.5, 7.0),
            msg("user", "Got it.", 7.5, 8.0),
        ];
        let turns = from_messages(&messages).unwrap();
        assert_eq!(turns.repetition_count, Some(1));
        assert_eq!(turns.interruption_count, Some(0));
    }

    #[test]
    fn without_messages_the_transcript_text_is_used() {
        let artifact = VapiArtifact {
            transcript: Some(
                "AI: I'm calling about your appointment on—\nUser: Hold on—let me grab a pen.\n\
                 AI: You have an appointment on May 2.\nUser: Sorry, what?\n\
                 AI: You have an appointment on May 2.\n"
                    .into(),
            ),
            messages: None,
            recording_url: None,
        };
        let turns = from_artifact(&artifact);
        assert!(!turns.from_messages);
        assert_eq!(turns.interruption_count, Some(1));
        assert_eq!(turns.repetition_count, Some(1));
        assert!(!turns.transcript.unwrap().ends_with('\n'));
    }

    #[test]
    fn messages_with_no_spoken_turn_fall_back_to_the_transcript() {
        let artifact = VapiArtifact {
            transcript: Some("AI: Hello.\nUser: Hi.".into()),
            messages: Some(vec![msg("system", "prompt", 0.0, 0.0)]),
            recording_url: None,
        };
        let turns = from_artifact(&artifact);
        assert!(!turns.from_messages);
        assert_eq!(turns.transcript.as_deref(), Some("AI: Hello.\nUser: Hi."));
    }

    #[test]
    fn a_single_line_transcript_is_split_into_turns() {
        let turns = from_transcript(Some(
            "AI: How can I help? User: What's the weather? AI: Sunny.",
        ));
        assert_eq!(
            turns.transcript.as_deref(),
            Some("AI: How can I help?\nUser: What's the weather?\nAI: Sunny.")
        );
    }

    #[test]
    fn no_transcript_at_all_gives_no_numbers() {
        assert_eq!(from_artifact(&VapiArtifact::default()), Turns::default());
        assert_eq!(from_transcript(Some("  \n ")), Turns::default());
        assert_eq!(Turns::default().repetition_count, None);
    }

    #[test]
    fn the_reference_artifact_prefers_its_messages() {
        let artifact = VapiArtifact {
            transcript: Some("AI: Hi Ana, this is Clinic X.\nUser: Hi.\n".into()),
            messages: Some(vec![ArtifactMessage {
                role: Some("bot".into()),
                message: Some("Hi Ana, this is Clinic X.".into()),
                time: Some(1_736_175_606_000.0),
                end_time: Some(1_736_175_608_000.0),
                seconds_from_start: Some(1.0),
                duration: None,
            }]),
            recording_url: None,
        };
        let turns = from_artifact(&artifact);
        assert!(turns.from_messages);
        assert_eq!(
            turns.transcript.as_deref(),
            Some("AI: Hi Ana, this is Clinic X.")
        );
        assert!(!format!("{turns:?}").contains("Hi Ana"));
    }
}
