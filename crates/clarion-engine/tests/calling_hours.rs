//! `next_allowed_instant` on its own: window edges, far zones, DST gaps and overlaps, and a
//! property check over a year of instants.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;
use clarion_engine::{CallingHours, next_allowed_instant};

use chrono_tz::America::{New_York, Santiago};
use chrono_tz::Asia::{Kathmandu, Kolkata};
use chrono_tz::Australia::Sydney;
use chrono_tz::Europe::London;
use chrono_tz::Pacific::Honolulu;

fn t(s: &str) -> DateTime<Utc> {
    let fmt = if s.len() > 16 {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%Y-%m-%d %H:%M"
    };
    NaiveDateTime::parse_from_str(s, fmt).unwrap().and_utc()
}

fn hours(start: &str, end: &str) -> CallingHours {
    let p = |s| NaiveTime::parse_from_str(s, "%H:%M").unwrap();
    CallingHours {
        start: p(start),
        end: p(end),
    }
}

/// Asserts `next_allowed_instant(at) == expected`, both given in UTC.
#[track_caller]
fn check(tz: Tz, window: &CallingHours, at: &str, expected: &str) {
    let got = next_allowed_instant(t(at), tz, window);
    assert_eq!(
        got,
        t(expected),
        "{tz} from {at}Z: got {got} ({} local)",
        got.with_timezone(&tz)
    );
}

const DAY: CallingHours = CallingHours::DEFAULT;

#[test]
fn the_default_window_is_eight_to_nine() {
    assert_eq!(DAY, hours("08:00", "21:00"));
}

#[test]
fn window_start_is_allowed_and_window_end_is_not() {
    // New York in June is EDT, UTC-4.
    check(New_York, &DAY, "2025-06-02 12:00", "2025-06-02 12:00"); // 08:00 exactly
    check(New_York, &DAY, "2025-06-02 11:59:59", "2025-06-02 12:00"); // 07:59:59
    check(New_York, &DAY, "2025-06-03 00:59:59", "2025-06-03 00:59:59"); // 20:59:59
    check(New_York, &DAY, "2025-06-03 01:00", "2025-06-03 12:00"); // 21:00 exactly
}

#[test]
fn inside_the_window_is_returned_unchanged_to_the_nanosecond() {
    let at = t("2025-06-02 15:00") + TimeDelta::nanoseconds(123_456_789);
    assert_eq!(next_allowed_instant(at, New_York, &DAY), at);
}

#[test]
fn before_the_window_waits_for_today_after_it_for_tomorrow() {
    check(New_York, &DAY, "2025-06-02 05:00", "2025-06-02 12:00"); // 01:00 EDT
    check(New_York, &DAY, "2025-06-02 03:59", "2025-06-02 12:00"); // 23:59 EDT the day before
    check(New_York, &DAY, "2025-06-02 04:00", "2025-06-02 12:00"); // 00:00 EDT
}

#[test]
fn honolulu_has_no_dst() {
    // HST is UTC-10 all year: 08:00 HST is 18:00Z in January and in July alike.
    check(Honolulu, &DAY, "2025-01-15 17:59", "2025-01-15 18:00");
    check(Honolulu, &DAY, "2025-07-15 17:59", "2025-07-15 18:00");
    check(Honolulu, &DAY, "2025-07-16 07:00", "2025-07-16 18:00"); // 21:00 HST
}

#[test]
fn sydney_in_summer_and_winter_and_on_its_dst_days() {
    // January is AEDT (UTC+11), July is AEST (UTC+10).
    check(Sydney, &DAY, "2025-01-15 20:00", "2025-01-15 21:00");
    check(Sydney, &DAY, "2025-07-15 21:00", "2025-07-15 22:00");
    // Sat 2025-10-04 22:00 AEST; clocks go forward at 02:00 on Sunday: 08:00 AEDT = 21:00Z.
    check(Sydney, &DAY, "2025-10-04 12:00", "2025-10-04 21:00");
    // Sat 2025-04-05 22:00 AEDT; clocks go back at 03:00 on Sunday: 08:00 AEST = 22:00Z.
    check(Sydney, &DAY, "2025-04-05 11:00", "2025-04-05 22:00");
}

#[test]
fn kolkata_and_kathmandu_have_fractional_offsets() {
    // IST is UTC+05:30: 21:30 IST -> 08:00 IST next day = 02:30Z.
    check(Kolkata, &DAY, "2025-06-02 16:00", "2025-06-03 02:30");
    check(Kolkata, &DAY, "2025-06-02 02:29", "2025-06-02 02:30");
    // NPT is UTC+05:45: 08:00 NPT = 02:15Z.
    check(Kathmandu, &DAY, "2025-06-02 00:00", "2025-06-02 02:15");
}

#[test]
fn new_york_spring_forward_day() {
    // 2025-03-09: 02:00 EST jumps to 03:00 EDT (07:00Z).
    check(New_York, &DAY, "2025-03-09 04:00", "2025-03-09 12:00"); // Sat 23:00 EST
    check(New_York, &DAY, "2025-03-09 07:30", "2025-03-09 12:00"); // 03:30 EDT
    check(New_York, &DAY, "2025-03-08 10:00", "2025-03-08 13:00"); // the day before: EST
}

#[test]
fn new_york_fall_back_day() {
    // 2025-11-02: 02:00 EDT falls back to 01:00 EST (06:00Z).
    check(New_York, &DAY, "2025-11-02 03:00", "2025-11-02 13:00"); // Sat 23:00 EDT
    check(New_York, &DAY, "2025-11-02 06:30", "2025-11-02 13:00"); // 01:30 EST, second pass
    check(New_York, &DAY, "2025-11-03 12:00", "2025-11-03 13:00"); // the day after: EST
}

#[test]
fn a_window_start_inside_the_gap_opens_when_the_gap_ends() {
    let w = hours("02:30", "06:00");
    check(New_York, &w, "2025-03-09 05:00", "2025-03-09 07:00"); // 00:00 EST -> 03:00 EDT
    check(New_York, &w, "2025-03-09 06:59:59", "2025-03-09 07:00"); // 01:59:59 EST
    check(New_York, &w, "2025-03-09 07:00", "2025-03-09 07:00"); // 03:00 EDT is inside
    check(New_York, &w, "2025-03-10 05:00", "2025-03-10 06:30"); // next day: 02:30 EDT exists
}

#[test]
fn a_window_entirely_inside_the_gap_moves_to_the_next_day() {
    // 02:00-02:45 never happens on 2025-03-09 in New York; the next one is on 03-10 (EDT).
    let w = hours("02:00", "02:45");
    check(New_York, &w, "2025-03-09 05:00", "2025-03-10 06:00");
}

#[test]
fn a_gap_at_midnight() {
    // Chile moves from UTC-4 to UTC-3 at 24:00 on Sat 2025-09-06: 00:00 on the 7th does not
    // exist, and the first instant after the gap is 01:00 -03 = 04:00Z.
    let w = hours("00:00", "06:00");
    check(Santiago, &w, "2025-09-07 02:00", "2025-09-07 04:00");
}

#[test]
fn an_ambiguous_window_start_uses_the_earlier_instant_unless_it_has_passed() {
    let w = hours("01:30", "05:00");
    // 00:00 EDT on the fall-back day: 01:30 happens at 05:30Z (EDT) and 06:30Z (EST).
    check(New_York, &w, "2025-11-02 04:00", "2025-11-02 05:30");
    // 01:10 EST (second pass): 01:30 EDT is past, so 01:30 EST.
    check(New_York, &w, "2025-11-02 06:10", "2025-11-02 06:30");
}

#[test]
fn an_invalid_overnight_window_does_not_panic() {
    // Validation refuses these; the engine reads one as wrapping midnight.
    let w = hours("22:00", "06:00");
    check(New_York, &w, "2025-06-02 16:00", "2025-06-03 02:00"); // 12:00 EDT -> 22:00 EDT
    check(New_York, &w, "2025-06-02 08:00", "2025-06-02 08:00"); // 04:00 EDT is inside
}

/// Over a year of instants in several zones and windows, the answer is inside the window,
/// never earlier than the input, and the earliest such instant: every minute between the
/// input and the answer is outside the window, and so is the second before the answer.
#[test]
fn property_result_is_the_earliest_allowed_instant() {
    let zones = [
        New_York, London, Sydney, Kolkata, Honolulu, Kathmandu, Santiago,
    ];
    let windows = [DAY, hours("02:30", "03:30"), hours("00:00", "00:30")];
    let allowed =
        |at: DateTime<Utc>, tz: Tz, w: &CallingHours| w.allows(at.with_timezone(&tz).time());

    let year_start = t("2025-01-01 00:00");
    // An odd step so that the instants drift through every time of day (and carry seconds).
    let step = TimeDelta::seconds(7 * 3600 + 13 * 60 + 17);
    let mut instants = Vec::new();
    let mut at = year_start;
    while at < t("2026-01-01 00:00") {
        instants.push(at);
        at += step;
    }
    // Dense around New York's and Sydney's transitions, where mistakes would hide.
    for day in [
        "2025-03-08 12:00",
        "2025-11-01 12:00",
        "2025-04-05 06:00",
        "2025-10-04 06:00",
    ] {
        let mut at = t(day);
        for _ in 0..(36 * 6) {
            instants.push(at);
            at += TimeDelta::minutes(10);
        }
    }

    let mut checked = 0;
    for tz in zones {
        for w in &windows {
            for &at in &instants {
                let got = next_allowed_instant(at, tz, w);
                let ctx = || format!("{tz} {w:?} from {at}: got {got}");
                assert!(got >= at, "earlier than the input: {}", ctx());
                assert!(allowed(got, tz, w), "outside the window: {}", ctx());
                assert!(got - at < TimeDelta::days(3), "too far: {}", ctx());
                if got > at {
                    assert!(
                        !allowed(got - TimeDelta::seconds(1), tz, w),
                        "late: {}",
                        ctx()
                    );
                }
                let mut probe = at;
                while probe < got {
                    assert!(!allowed(probe, tz, w), "missed {probe}: {}", ctx());
                    probe += TimeDelta::minutes(1);
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 20_000, "checked {checked}");
}
