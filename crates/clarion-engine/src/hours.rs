//! Calling hours: the earliest instant a contact may be reached, computed in their time zone.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::plan::CallingHours;

/// How many local days to look ahead for a window start. A day normally has one; only a day
/// whose whole window falls inside a DST gap has none, and no zone has such gaps on
/// consecutive days, so this bound is never reached with real data.
const LOOKAHEAD_DAYS: u64 = 8;

/// The earliest instant at or after `at` whose local time in `tz` lies inside `hours`.
///
/// If `at` is already inside the window it is returned unchanged. Otherwise the answer is the
/// next local `start` (today if still ahead, else tomorrow) converted to UTC, with daylight
/// saving handled the way a person would expect:
///
/// - a `start` that does not exist that day (spring-forward gap) becomes the first instant
///   after the gap, which is inside the window as long as the gap does not swallow the whole
///   window (then the next day's start is used);
/// - a `start` that occurs twice (fall-back) uses the earlier occurrence, unless it is already
///   past, in which case the later one.
///
/// The result is computed, never found by polling, so a deferred sequence wakes once.
pub fn next_allowed_instant(at: DateTime<Utc>, tz: Tz, hours: &CallingHours) -> DateTime<Utc> {
    let local = at.with_timezone(&tz).naive_local();
    if hours.allows(local.time()) {
        return at;
    }
    // Starting from today covers both "before today's start" and "after today's end": in
    // the second case today's start is in the past and is skipped by the `>= at` test.
    let mut date = local.date();
    for _ in 0..LOOKAHEAD_DAYS {
        let start = date.and_time(hours.start);
        if let Some(candidate) = first_instant_at_or_after(tz, start, at)
            && hours.allows(candidate.with_timezone(&tz).time())
        {
            return candidate;
        }
        match date.succ_opt() {
            Some(next) => date = next,
            None => break,
        }
    }
    // Only reachable at the end of chrono's calendar. Never contacting is the safe answer.
    DateTime::<Utc>::MAX_UTC
}

/// The first UTC instant at or after `not_before` whose local time in `tz` is `local`, or the
/// end of the gap if `local` does not exist that day.
fn first_instant_at_or_after(
    tz: Tz,
    local: NaiveDateTime,
    not_before: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let candidates = match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => [Some(t.to_utc()), None],
        LocalResult::Ambiguous(earlier, later) => [Some(earlier.to_utc()), Some(later.to_utc())],
        LocalResult::None => [end_of_gap(tz, local), None],
    };
    candidates
        .into_iter()
        .flatten()
        .filter(|t| *t >= not_before)
        .min()
}

/// The first instant after the DST gap that swallows `local`: the transition itself.
///
/// Found by bisection on UTC seconds for the first instant whose local time is past `local`.
/// UTC offsets stay within ±15 h, so the bracket below always holds the transition, and local
/// time only moves forward inside it (a gap and a fall-back are never that close together).
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    const BRACKET: i64 = 15 * 3600;
    let is_past = |ts: i64| {
        DateTime::from_timestamp(ts, 0).is_none_or(|u| u.with_timezone(&tz).naive_local() >= local)
    };
    let centre = local.and_utc().timestamp();
    let (mut before, mut after) = (centre - BRACKET, centre + BRACKET);
    if is_past(before) || !is_past(after) {
        return None;
    }
    while after - before > 1 {
        let mid = before + (after - before) / 2;
        if is_past(mid) {
            after = mid;
        } else {
            before = mid;
        }
    }
    DateTime::from_timestamp(after, 0)
}
