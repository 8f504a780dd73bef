//! Property tests for the template parsers that meet untrusted input (issue 14, "Build into
//! CI"): durations (step delays, retry delays, time-outs) and E.164 phone numbers. Neither
//! panics on arbitrary text; a duration the API writes reads back as the same duration; a
//! number is accepted exactly when it is `+`, a non-zero digit and 8 to 15 digits in all.
//!
//! Case counts are modest (256 per property) so that the file runs in seconds in `cargo test`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use clarion_scheduler::definition::{MAX_DURATION, format_duration, parse_duration, validate_e164};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_duration_written_by_the_api_reads_back_unchanged(
        millis in 0..=u64::try_from(MAX_DURATION.as_millis()).unwrap()
    ) {
        let text = format_duration(millis);
        prop_assert_eq!(parse_duration("delay", &text).unwrap(), Duration::from_millis(millis));
    }

    #[test]
    fn the_duration_parser_never_panics_and_never_exceeds_the_bound(
        text in prop_oneof![
            "\\PC{0,40}",
            "( ?[0-9]{1,25} ?(ns|us|ms|s|m|h|d|w|M|y|years?|months?|weeks?|days?|hours?|min|sec)){1,6}",
        ]
    ) {
        if let Ok(duration) = parse_duration("delay", &text) {
            prop_assert!(duration <= MAX_DURATION);
        }
    }

    #[test]
    fn a_rejected_duration_names_its_field_and_says_the_same_whatever_the_value(
        text in "[^0-9]{1,20}x"
    ) {
        // The same message for every bad value: nothing of the value reaches it.
        let error = parse_duration("steps[0].delay", &text).unwrap_err();
        let reference = parse_duration("steps[0].delay", "x").unwrap_err();
        prop_assert_eq!(error, reference);
    }

    #[test]
    fn e164_is_accepted_exactly_when_well_formed(text in prop_oneof![
        "\\PC{0,20}",
        "\\+?[0-9]{0,17}",
        "\\+[1-9][0-9]{6,14}",
    ]) {
        let digits = text.strip_prefix('+');
        let well_formed = digits.is_some_and(|d| {
            (8..=15).contains(&d.len())
                && d.bytes().all(|b| b.is_ascii_digit())
                && !d.starts_with('0')
        });
        let result = validate_e164("contact.phone", &text);
        prop_assert_eq!(result.is_ok(), well_formed);
        if let Err(error) = result {
            prop_assert_eq!(error.field, "contact.phone");
        }
    }

    #[test]
    fn every_well_formed_e164_number_is_accepted(number in "\\+[1-9][0-9]{7,14}") {
        prop_assert!(validate_e164("contact.phone", &number).is_ok());
    }
}
