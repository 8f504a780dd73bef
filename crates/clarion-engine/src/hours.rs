//! Calling hours: the earliest instant a contact may be reached, computed in their time zone.

use chrono::{DateTime, LocalResult, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::plan::{CallingHours, CallingRule};

/// How many local days to look ahead for a window start. A day normally has one; a day whose
/// whole window falls inside a DST gap has none, and a rule may ban a weekday, but no zone has
/// gaps on consecutive days, so eight days find the next allowed instant if there is one.
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
    Constraints {
        hours: Some(hours),
        rules: &[],
    }
    .next_allowed(at, tz)
}

/// Everything that restricts the local times a contact may be reached at: the template's
/// window and calling rules. A local instant is allowed when all of them allow it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Constraints<'a> {
    pub hours: Option<&'a CallingHours>,
    pub rules: &'a [CallingRule],
}

impl Constraints<'_> {
    /// Whether every constraint allows the local instant `local`.
    pub fn allows(&self, local: NaiveDateTime) -> bool {
        self.hours.is_none_or(|hours| hours.allows(local.time()))
            && self.rules.iter().all(|rule| rule.allows(local))
    }

    /// The earliest instant at or after `at` that every constraint allows, or
    /// `DateTime::<Utc>::MAX_UTC` when none does within a week (the rules and the window
    /// never overlap: nothing may ever be contacted).
    ///
    /// The allowed local times of a day are an intersection of windows, so the first allowed
    /// instant after `at` is `at` itself or the start of one of the windows (or midnight, for
    /// a window that wraps it); each candidate is converted to UTC with the DST handling of
    /// [`next_allowed_instant`] and checked against every constraint on its own local date.
    pub fn next_allowed(&self, at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let local = at.with_timezone(&tz).naive_local();
        if self.allows(local) {
            return at;
        }
        let starts: Vec<NaiveTime> = std::iter::once(NaiveTime::MIN)
            .chain(self.hours.map(|hours| hours.start))
            .chain(
                self.rules
                    .iter()
                    .filter_map(|rule| rule.hours.map(|h| h.start)),
            )
            .collect();
        // Starting from today covers both "before today's start" and "after today's end": in
        // the second case today's starts are in the past and are skipped by the `>= at` test.
        let mut date = local.date();
        for _ in 0..LOOKAHEAD_DAYS {
            let found = starts
                .iter()
                .filter_map(|start| first_instant_at_or_after(tz, date.and_time(*start), at))
                .filter(|candidate| self.allows(candidate.with_timezone(&tz).naive_local()))
                .min();
            if let Some(found) = found {
                return found;
            }
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
        // No allowed instant within a week, or the end of chrono's calendar. Never contacting
        // is the safe answer.
        DateTime::<Utc>::MAX_UTC
    }
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
