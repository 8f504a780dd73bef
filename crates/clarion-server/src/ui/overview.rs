//! The overview, the dashboard's home (`GET /ui`): the organisation's last 30 days at a
//! glance. Sequences by status, encounter outcomes per day, the calls' answer rate, a heat
//! map of answered calls by weekday and hour on the contacts' own clocks, and webhook
//! deliveries per day (share answered 2xx, p50/p99 latency).
//!
//! Every figure comes from one store read, [`clarion_store::Store::overview`], bounded by
//! the organisation and the window (see ARCHITECTURE.md for its indexes). The heat map is
//! the one part bucketed here: the store answers answered calls counted per (contact zone,
//! 15-minute slot of their start), at most [`MAX_HEAT_MAP_ROWS`] rows, and each slot's start
//! is converted to its zone with the tz database, so daylight-saving changes land each call
//! in the hour the contact lived it.
//!
//! Charts are inline SVG drawn here (no script), each with a `<title>` and `<desc>` and the
//! same figures in a table.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{Datelike, Timelike};
use clarion_store::{Channel, MILLIS_PER_DAY, Overview, OverviewQuery, UNANSWERED_CALL_OUTCOMES};
use maud::{Markup, html};

use super::page::{Nav, UiError, layout, respond};
use super::session::Viewer;
use crate::AppState;

/// The days the overview covers (today, UTC, and the 29 before it).
pub const DAYS: i64 = 30;
/// The most (zone, slot) rows of answered calls read for the heat map: 2,880 slots a zone in
/// 30 days, so this covers every call of up to 17 zones whatever their number.
pub const MAX_HEAT_MAP_ROWS: u32 = 50_000;

/// How outcomes are grouped in the chart (each outcome's own count is in the table).
const GROUPS: [(&str, &str); 5] = [
    ("resolved", "Resolved"),
    ("reached", "Reached, not resolved"),
    ("voicemail", "Voicemail"),
    ("unanswered", "No answer, busy or no reply"),
    ("failed", "Failed"),
];

fn group_of(outcome: &str) -> usize {
    match outcome {
        "resolved" => 0,
        "voicemail" => 2,
        "no-answer" | "busy" | "no-reply" => 3,
        "failed" | "error" => 4,
        _ => 1,
    }
}

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// The first day of the window and the day after it, in days since the epoch (UTC).
fn window(now: i64) -> (i64, i64) {
    let today = now.div_euclid(MILLIS_PER_DAY);
    (today - (DAYS - 1), today + 1)
}

fn day_label(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn short_day(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| d.format("%b %-d").to_string())
        .unwrap_or_default()
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

fn percent_text(part: u64, whole: u64) -> String {
    percent(part, whole).map_or_else(|| "—".to_owned(), |p| format!("{p:.0} %"))
}

/// The answered calls of the window by (weekday from Monday, hour) on the contacts' clocks,
/// and the calls whose stored zone is not one the tz database knows.
pub fn heat_map(overview: &Overview) -> ([[u64; 24]; 7], u64) {
    let mut cells = [[0_u64; 24]; 7];
    let mut unplaced = 0;
    for slot in &overview.answered_slots {
        let local = slot
            .time_zone
            .parse::<chrono_tz::Tz>()
            .ok()
            .zip(chrono::DateTime::from_timestamp_millis(slot.slot_start))
            .map(|(zone, instant)| instant.with_timezone(&zone));
        match local {
            Some(local) => {
                let weekday = local.weekday().num_days_from_monday() as usize;
                cells[weekday][local.hour() as usize] += slot.count;
            }
            None => unplaced += slot.count,
        }
    }
    (cells, unplaced)
}

/// The call answer figures of the window: (answered, voicemail, no answer, busy).
fn answer_figures(overview: &Overview) -> (u64, u64, u64, u64) {
    let (mut answered, mut voicemail, mut no_answer, mut busy) = (0, 0, 0, 0);
    for row in overview
        .outcomes
        .iter()
        .filter(|r| r.channel == Channel::Call)
    {
        match row.outcome.as_str() {
            "voicemail" => voicemail += row.count,
            "no-answer" => no_answer += row.count,
            "busy" => busy += row.count,
            other if !UNANSWERED_CALL_OUTCOMES.contains(&other) => answered += row.count,
            _ => {}
        }
    }
    (answered, voicemail, no_answer, busy)
}

/// `GET /ui`: the overview.
pub async fn page(State(state): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    let (first, end) = window(state.clock.now_millis());
    let overview = state
        .store
        .overview(&OverviewQuery {
            org_id: viewer.org,
            since: first * MILLIS_PER_DAY,
            until: end * MILLIS_PER_DAY,
            max_slots: MAX_HEAT_MAP_ROWS,
        })
        .await?;
    let days: Vec<i64> = (first..end).collect();
    let body = html! {
        h1 { "Overview" }
        p.lede {
            "The last " (DAYS) " days, " (day_label(first)) " to " (day_label(end - 1))
            " (UTC days). Calls' hours are on each contact's own clock."
        }
        (statuses(&overview))
        (outcomes(&overview, &days))
        (answer_rate(&overview))
        (heat_map_section(&overview))
        (deliveries(&overview, &days))
    };
    Ok(respond(
        StatusCode::OK,
        layout("Overview", Some(viewer.frame(Nav::Overview)), body),
    ))
}

fn statuses(overview: &Overview) -> Markup {
    let rows = [
        ("active", "Running now", overview.active),
        ("paused", "Paused now", overview.paused),
        ("ended", "Ended in the last 30 days", overview.ended),
    ];
    let max = rows.iter().map(|r| r.2).max().unwrap_or(0).max(1);
    let summary = format!(
        "{} running, {} paused, {} ended in the last 30 days.",
        overview.active, overview.paused, overview.ended
    );
    html! {
        section aria-labelledby="h-status" {
            h2 id="h-status" { "Sequences by status" }
            svg.chart.bars role="img" viewBox="0 0 600 96" width="600" height="96"
                aria-labelledby="status-title status-desc" {
                title id="status-title" { "Sequences by status" }
                desc id="status-desc" { (summary) }
                @for (i, (class, label, count)) in rows.iter().enumerate() {
                    @let y = 4 + i * 30;
                    @let width = 380 * count / max;
                    text x="0" y=(y + 17) { (label) }
                    rect class=(format!("s-{class}")) x="200" y=(y) width=(width.max(1)) height="22"
                        data-status=(class) data-count=(count) {
                        title { (label) ": " (count) }
                    }
                    text x=(206 + width) y=(y + 17) { (count) }
                }
            }
            @if overview.active + overview.paused + overview.ended == 0 {
                p.empty {
                    "No sequences in the last 30 days. Enroll patients on the Templates page (a CSV \
                     file) or through POST /v1/sequences."
                }
            }
        }
    }
}

fn outcomes(overview: &Overview, days: &[i64]) -> Markup {
    // Per day, per group.
    let mut per_day: BTreeMap<i64, [u64; GROUPS.len()]> = BTreeMap::new();
    for row in &overview.outcomes {
        per_day.entry(row.day).or_default()[group_of(&row.outcome)] += row.count;
    }
    let total: u64 = overview.outcomes.iter().map(|r| r.count).sum();
    let max = per_day
        .values()
        .map(|g| g.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (left, top, height, step) = (40_u64, 10_u64, 120_u64, 18_u64);
    let width = left + step * days.len() as u64;
    html! {
        section aria-labelledby="h-outcomes" {
            h2 id="h-outcomes" { "Outcomes per day" }
            @if total == 0 {
                p.empty { "No call or text ended in the last 30 days." }
            } @else {
                svg.chart role="img" viewBox=(format!("0 0 {} {}", width + 10, top + height + 30))
                    aria-labelledby="outcomes-title outcomes-desc" {
                    title id="outcomes-title" { "Calls and texts ended per day, by outcome" }
                    desc id="outcomes-desc" {
                        (total) " calls and texts ended in the last 30 days; the busiest day had "
                        (max) ". The table below lists each day's outcomes."
                    }
                    line.axis x1=(left) y1=(top + height) x2=(width) y2=(top + height) {}
                    text.tick x=(left - 4) y=(top + 4) text-anchor="end" { (max) }
                    text.tick x=(left - 4) y=(top + height) text-anchor="end" { "0" }
                    @for (i, day) in days.iter().enumerate() {
                        @let x = left + step * i as u64 + 2;
                        @if let Some(groups) = per_day.get(day) {
                            @for (g, y, h, count) in stack(groups, top + height, height, max) {
                                rect class=(format!("o-{}", GROUPS[g].0)) x=(x) y=(y) width=(step - 4) height=(h) {
                                    title { (day_label(*day)) ": " (GROUPS[g].1) " " (count) }
                                }
                            }
                        }
                        @if i % 7 == 0 {
                            text.tick x=(x) y=(top + height + 16) { (short_day(*day)) }
                        }
                    }
                }
                ul.legend {
                    @for (class, label) in GROUPS {
                        li { span class=(format!("key o-{class}")) {} (label) }
                    }
                }
                details {
                    summary { "Outcomes per day as a table" }
                    div.scroll {
                        table.figures {
                            thead { tr {
                                th scope="col" { "Day (UTC)" }
                                th scope="col" { "Channel" }
                                th scope="col" { "Outcome" }
                                th scope="col" { "Count" }
                            } }
                            tbody {
                                @for row in &overview.outcomes {
                                    tr {
                                        td { (day_label(row.day)) }
                                        td { (if row.channel == Channel::Call { "call" } else { "text" }) }
                                        td { (row.outcome) }
                                        td.num { (row.count) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Stacks `counts` along one axis of `length` (for `max` in all): each non-zero count's
/// (index, start, extent, count). Vertically (`from` the bottom) starts go up; horizontally
/// (`from` 0, as `from` = 0 marks) they go right.
fn stack(counts: &[u64], from: u64, length: u64, max: u64) -> Vec<(usize, u64, u64, u64)> {
    let mut at = from;
    let mut out = Vec::new();
    for (i, &count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
        let extent = (length * count / max.max(1)).max(1);
        if from == 0 {
            out.push((i, at, extent, count));
            at += extent;
        } else {
            at = at.saturating_sub(extent);
            out.push((i, at, extent, count));
        }
    }
    out
}

fn answer_rate(overview: &Overview) -> Markup {
    let (answered, voicemail, no_answer, busy) = answer_figures(overview);
    let whole = answered + voicemail + no_answer + busy;
    let parts = [
        ("answered", "Answered", answered),
        ("voicemail", "Voicemail", voicemail),
        ("no-answer", "No answer", no_answer),
        ("busy", "Busy", busy),
    ];
    html! {
        section aria-labelledby="h-answer" {
            h2 id="h-answer" { "Answer rate" }
            @if whole == 0 {
                p.empty { "No call ended in the last 30 days." }
            } @else {
                p.figure {
                    span.big data-answer-rate=(format!("{:.1}", percent(answered, whole).unwrap_or(0.0))) {
                        (percent_text(answered, whole))
                    }
                    " of " (whole) " calls answered (against voicemail, no answer and busy; calls \
                     that failed to connect are not counted)."
                }
                svg.chart role="img" viewBox="0 0 600 30" width="600" height="30"
                    aria-labelledby="answer-title answer-desc" {
                    title id="answer-title" { "Answered calls against voicemail, no answer and busy" }
                    desc id="answer-desc" {
                        (answered) " answered, " (voicemail) " voicemail, " (no_answer)
                        " no answer, " (busy) " busy."
                    }
                    @for (i, x, w, count) in stack(&parts.map(|p| p.2), 0, 600, whole) {
                        rect class=(format!("a-{}", parts[i].0)) x=(x) y="0" width=(w) height="30" {
                            title { (parts[i].1) ": " (count) " (" (percent_text(count, whole)) ")" }
                        }
                    }
                }
                ul.legend {
                    @for (class, label, count) in parts {
                        li { span class=(format!("key a-{class}")) {} (label) ": " (count) }
                    }
                }
            }
        }
    }
}

fn heat_map_section(overview: &Overview) -> Markup {
    let (cells, unplaced) = heat_map(overview);
    let max = cells.iter().flatten().copied().max().unwrap_or(0);
    let busiest = (0..7)
        .flat_map(|d| (0..24).map(move |h| (d, h)))
        .max_by_key(|&(d, h)| (cells[d][h], std::cmp::Reverse((d, h))))
        .filter(|&(d, h)| cells[d][h] > 0);
    let (left, top, cell) = (100_usize, 20_usize, 22_usize);
    html! {
        section aria-labelledby="h-heat" {
            h2 id="h-heat" { "When calls are answered" }
            p {
                "Answered calls of the last 30 days by weekday and hour of their start, on each \
                 contact's own clock (the time zone they were enrolled with)."
            }
            @if max == 0 {
                p.empty { "No answered call in the last 30 days." }
            } @else {
                svg.chart.heat role="img"
                    viewBox=(format!("0 0 {} {}", left + 24 * cell + 4, top + 7 * cell + 4))
                    aria-labelledby="heat-title heat-desc" {
                    title id="heat-title" { "Answered calls by weekday and local hour" }
                    desc id="heat-desc" {
                        @if let Some((d, h)) = busiest {
                            "Most answered: " (WEEKDAYS[d]) " " (format!("{h:02}:00–{:02}:00", h + 1))
                            ", " (cells[d][h]) " calls. The table below lists every hour with calls."
                        }
                    }
                    @for h in (0..24).step_by(3) {
                        text.tick x=(left + h * cell) y=(top - 6) { (format!("{h:02}h")) }
                    }
                    @for (d, row) in cells.iter().enumerate() {
                        text.tick x="0" y=(top + d * cell + 15) { (WEEKDAYS[d]) }
                        @for (h, count) in row.iter().enumerate() {
                            @let level = if *count == 0 { 0 } else { 1 + ((4 * count - 1) / max.max(1)).min(3) };
                            rect class=(format!("heat h{level}")) x=(left + h * cell) y=(top + d * cell)
                                width=(cell - 2) height=(cell - 2)
                                data-weekday=(d) data-hour=(h) data-count=(count) {
                                title { (WEEKDAYS[d]) " " (format!("{h:02}:00–{:02}:00", h + 1)) ": " (count) " answered" }
                            }
                        }
                    }
                }
                @if overview.answered_slots_truncated {
                    p.note { "Calls from more time zones than the map reads at once: it shows part of them." }
                }
                @if unplaced > 0 {
                    p.note { (unplaced) " answered calls have no known time zone and are not on the map." }
                }
                details {
                    summary { "Answered calls by weekday and hour as a table" }
                    table.figures {
                        thead { tr {
                            th scope="col" { "Weekday" }
                            th scope="col" { "Local hour" }
                            th scope="col" { "Answered calls" }
                        } }
                        tbody {
                            @for (d, row) in cells.iter().enumerate() {
                                @for (h, count) in row.iter().enumerate() {
                                    @if *count > 0 {
                                        tr {
                                            td { (WEEKDAYS[d]) }
                                            td { (format!("{h:02}:00–{:02}:00", h + 1)) }
                                            td.num { (count) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn deliveries(overview: &Overview, days: &[i64]) -> Markup {
    let by_day: BTreeMap<i64, &clarion_store::DeliveryDay> =
        overview.deliveries.iter().map(|d| (d.day, d)).collect();
    let attempts: u64 = overview.deliveries.iter().map(|d| d.attempts).sum();
    let succeeded: u64 = overview.deliveries.iter().map(|d| d.succeeded).sum();
    let max_ms = overview
        .deliveries
        .iter()
        .map(|d| d.p99_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let (left, top, height, step) = (50_u64, 10_u64, 120_u64, 18_u64);
    let width = left + step * days.len() as u64;
    let point = |i: usize, ms: u64| {
        (
            left + step * i as u64 + step / 2,
            top + height - height * ms / max_ms,
        )
    };
    let line = |pick: fn(&clarion_store::DeliveryDay) -> u64| -> String {
        days.iter()
            .enumerate()
            .filter_map(|(i, day)| by_day.get(day).map(|d| point(i, pick(d))))
            .map(|(x, y)| format!("{x},{y}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        section aria-labelledby="h-deliveries" {
            h2 id="h-deliveries" { "Webhook deliveries" }
            @if attempts == 0 {
                p.empty {
                    "No delivery attempt in the last 30 days. Add an endpoint on the Webhooks page to \
                     receive each sequence's report."
                }
            } @else {
                p.figure {
                    span.big data-success-rate=(format!("{:.1}", percent(succeeded, attempts).unwrap_or(0.0))) {
                        (percent_text(succeeded, attempts))
                    }
                    " of " (attempts) " delivery attempts answered 2xx."
                }
                svg.chart role="img" viewBox=(format!("0 0 {} {}", width + 10, top + 50))
                    aria-labelledby="success-title success-desc" {
                    title id="success-title" { "Share of delivery attempts answered 2xx, per day" }
                    desc id="success-desc" {
                        (succeeded) " of " (attempts) " attempts succeeded over the last 30 days. \
                         The table below lists each day."
                    }
                    @for (i, day) in days.iter().enumerate() {
                        @if let Some(d) = by_day.get(day) {
                            @let h = (40 * d.succeeded / d.attempts.max(1)).max(1);
                            rect.ok-bar x=(left + step * i as u64 + 2) y=(top + 40 - h) width=(step - 4) height=(h) {
                                title { (day_label(*day)) ": " (percent_text(d.succeeded, d.attempts)) " of " (d.attempts) }
                            }
                            rect.fail-bar x=(left + step * i as u64 + 2) y=(top) width=(step - 4) height=(40 - h) {}
                        }
                    }
                    text.tick x=(left - 4) y=(top + 8) text-anchor="end" { "100 %" }
                    text.tick x=(left - 4) y=(top + 40) text-anchor="end" { "0" }
                }
                svg.chart role="img" viewBox=(format!("0 0 {} {}", width + 10, top + height + 30))
                    aria-labelledby="latency-title latency-desc" {
                    title id="latency-title" { "Delivery latency per day, p50 and p99" }
                    desc id="latency-desc" {
                        "The slowest day's p99 was " (max_ms) " ms. The table below lists each day."
                    }
                    line.axis x1=(left) y1=(top + height) x2=(width) y2=(top + height) {}
                    text.tick x=(left - 4) y=(top + 4) text-anchor="end" { (max_ms) " ms" }
                    text.tick x=(left - 4) y=(top + height) text-anchor="end" { "0" }
                    polyline.p99 points=(line(|d| d.p99_ms)) {}
                    polyline.p50 points=(line(|d| d.p50_ms)) {}
                    @for (i, day) in days.iter().enumerate() {
                        @if let Some(d) = by_day.get(day) {
                            @for (class, ms) in [("p99", d.p99_ms), ("p50", d.p50_ms)] {
                                @let (x, y) = point(i, ms);
                                circle class=(class) cx=(x) cy=(y) r="3" {
                                    title { (day_label(*day)) " " (class) ": " (ms) " ms" }
                                }
                            }
                        }
                    }
                    @for (i, day) in days.iter().enumerate() {
                        @if i % 7 == 0 {
                            text.tick x=(left + step * i as u64) y=(top + height + 16) { (short_day(*day)) }
                        }
                    }
                }
                ul.legend {
                    li { span.key.ok-bar {} "Answered 2xx" }
                    li { span.key.fail-bar {} "Failed" }
                    li { span.key.p50 {} "p50 latency" }
                    li { span.key.p99 {} "p99 latency" }
                }
                details {
                    summary { "Deliveries per day as a table" }
                    table.figures {
                        thead { tr {
                            th scope="col" { "Day (UTC)" }
                            th scope="col" { "Attempts" }
                            th scope="col" { "Answered 2xx" }
                            th scope="col" { "p50 (ms)" }
                            th scope="col" { "p99 (ms)" }
                        } }
                        tbody {
                            @for d in &overview.deliveries {
                                tr {
                                    td { (day_label(d.day)) }
                                    td.num { (d.attempts) }
                                    td.num { (percent_text(d.succeeded, d.attempts)) }
                                    td.num { (d.p50_ms) }
                                    td.num { (d.p99_ms) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clarion_store::AnsweredSlot;

    use super::*;

    fn slot(zone: &str, rfc3339: &str, count: u64) -> AnsweredSlot {
        AnsweredSlot {
            time_zone: zone.to_owned(),
            slot_start: chrono::DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .timestamp_millis(),
            count,
        }
    }

    #[test]
    fn the_heat_map_reads_each_slot_on_its_zones_clock_across_daylight_saving() {
        let overview = Overview {
            answered_slots: vec![
                // 13:00 UTC on Friday 2026-03-06 is 08:00 in New York (EST, UTC-5)...
                slot("America/New_York", "2026-03-06T13:00:00Z", 2),
                // ...and on Friday 2026-03-13, after the change to EDT (UTC-4), 09:00.
                slot("America/New_York", "2026-03-13T13:00:00Z", 3),
                // Honolulu keeps UTC-10: 19:15 UTC on a Monday is 09:15 that Monday.
                slot("Pacific/Honolulu", "2026-03-09T19:15:00Z", 1),
                // Kolkata is UTC+05:30: 03:45 UTC is 09:15 the same day.
                slot("Asia/Kolkata", "2026-03-10T03:45:00Z", 4),
                // No zone, or one the database does not know: not placed.
                slot("", "2026-03-10T03:45:00Z", 5),
                slot("Mars/Olympus", "2026-03-10T03:45:00Z", 6),
            ],
            ..Overview::default()
        };
        let (cells, unplaced) = heat_map(&overview);
        assert_eq!(cells[4][8], 2);
        assert_eq!(cells[4][9], 3);
        assert_eq!(cells[0][9], 1);
        assert_eq!(cells[1][9], 4);
        assert_eq!(cells.iter().flatten().sum::<u64>(), 10);
        assert_eq!(unplaced, 11);
    }

    #[test]
    fn the_window_is_thirty_utc_days_ending_today() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-30T23:59:00Z")
            .unwrap()
            .timestamp_millis();
        let (first, end) = window(now);
        assert_eq!(end - first, DAYS);
        assert_eq!(day_label(first), "2026-03-01");
        assert_eq!(day_label(end - 1), "2026-03-30");
    }
}
