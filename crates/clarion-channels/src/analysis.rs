//! The conversation metrics of `analysis`, computed from a transcript.
//!
//! A transcript is newline-separated turns, each starting with `AI:` or `User:`; other lines
//! are ignored.
//!
//! * **Repetition** ([`count_repetitions`]): an AI turn counts once when one of its sentences
//!   already appeared in an earlier AI turn. Sentences end at `.`, `?` or `!` followed by
//!   whitespace or the end of the turn (an unterminated tail is a sentence too); they are
//!   compared case-insensitively with whitespace collapsed, and only sentences of at least
//!   [`MIN_REPEATED_SENTENCE_WORDS`] words count, so a second "Goodbye." is not a repetition.
//! * **Interruption** ([`count_interruptions`]): a User turn counts once when it begins with
//!   one of [`INTERRUPTION_MARKERS`] or directly follows an AI turn that was cut off (ends
//!   with an em dash, `—`).

use std::collections::BTreeSet;

/// Openings of a User turn that mark it as an interruption.
pub const INTERRUPTION_MARKERS: [&str; 5] = [
    "Sorry—",
    "Wait—",
    "Hold on—",
    "Hang on—",
    "Sorry to interrupt",
];

/// The fewest words a sentence needs for its reappearance to count as a repetition.
pub const MIN_REPEATED_SENTENCE_WORDS: usize = 4;

/// The turns of a transcript: `(is_ai, text)`.
fn turns(transcript: &str) -> impl Iterator<Item = (bool, &str)> {
    transcript.lines().filter_map(|line| {
        if let Some(text) = line.strip_prefix("AI:") {
            Some((true, text.trim()))
        } else {
            line.strip_prefix("User:").map(|text| (false, text.trim()))
        }
    })
}

/// The sentences of one turn, normalised, that are long enough to count.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let at_boundary = chars.peek().is_none_or(|(_, next)| next.is_whitespace());
        if matches!(c, '.' | '?' | '!') && at_boundary {
            let end = at + c.len_utf8();
            out.push(&text[start..end]);
            start = end;
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(|sentence| {
            sentence
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .filter(|sentence| sentence.split(' ').count() >= MIN_REPEATED_SENTENCE_WORDS)
        .collect()
}

/// How many AI turns repeat a sentence of an earlier AI turn (see the module docs).
pub fn count_repetitions(transcript: &str) -> u32 {
    let mut seen = BTreeSet::new();
    let mut count = 0;
    for (is_ai, text) in turns(transcript) {
        if !is_ai {
            continue;
        }
        let said = sentences(text);
        if said.iter().any(|sentence| seen.contains(sentence)) {
            count += 1;
        }
        seen.extend(said);
    }
    count
}

/// How many User turns interrupt the assistant (see the module docs).
pub fn count_interruptions(transcript: &str) -> u32 {
    let mut count = 0;
    let mut after_cut_off_ai = false;
    for (is_ai, text) in turns(transcript) {
        if is_ai {
            after_cut_off_ai = text.ends_with('—');
            continue;
        }
        if after_cut_off_ai || INTERRUPTION_MARKERS.iter().any(|m| text.starts_with(m)) {
            count += 1;
        }
        after_cut_off_ai = false;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_long_sentence_counts_once_per_turn() {
        let transcript = "AI: Hello there. You have an appointment on May 2. Will you come?\n\
                          User: Sorry, could you repeat that?\n\
                          AI: You have an appointment on May 2. Will you come?\n\
                          User: Yes.\n\
                          AI: Thank you. Goodbye.\n\
                          AI: Thank you. Goodbye.";
        assert_eq!(count_repetitions(transcript), 1);
    }

    #[test]
    fn cut_off_turns_and_markers_are_interruptions() {
        let transcript = "AI: I'm calling about your appointment on—\n\
                          User: Hold on—let me grab a pen.\n\
                          AI: Of course.\n\
                          User: Wait—who is this?\n\
                          AI: Your appointment is on—\n\
                          User: Yes, I know.\n\
                          User: Sorry, what?";
        assert_eq!(count_interruptions(transcript), 3);
    }

    #[test]
    fn abbreviations_do_not_break_the_rule() {
        let transcript = "AI: You are seeing Dr. Patel on Friday at noon.\n\
                          AI: I said you are seeing Dr. Patel on Friday at noon.";
        // "Patel on Friday at noon." is a sentence of both turns.
        assert_eq!(count_repetitions(transcript), 1);
    }
}
