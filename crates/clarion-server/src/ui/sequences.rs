//! The sequences pages: the filtered list with its CSV exports, and one sequence's detail
//! (contact, outreach timeline with transcripts, the events ledger, the report as delivered
//! with its deliveries) with cancel, pause and resume.
//!
//! Everything is read through the queries the API uses: `Store::search_sequences` (the list
//! behind `GET /v1/sequences`), `Scheduler::report_json` (`GET /v1/sequences/{id}`, the
//! delivered body once ended), `Store::sequence_events` (`/events`), `Store::list_deliveries`
//! (`/v1/webhook-deliveries`) and `Scheduler::control` (cancel, pause, resume).

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use clarion_scheduler::Control;
use clarion_store::{
    DeliveryFilter, IdKind, PublicIds, SequenceFilter, SequenceId, SequenceRow, SequenceStatus,
    TemplateId, TemplateVersion,
};
use clarion_webhooks::{Call, OutreachStep, SequenceReport, Sms};
use maud::{Markup, html};
use serde::Deserialize;

use super::audit::{AccessAction, record};
use super::page::{
    Nav, UiError, badge, duration, layout, local, respond, utc, utc_and_local, utc_opt, wire_name,
};
use super::session::{CsrfForm, Viewer, read_form};
use crate::AppState;

/// Rows on one page of the list.
const PAGE: u32 = 50;
/// Rows fetched at a time by an export.
const EXPORT_CHUNK: u32 = 200;
/// The most sequences one export holds; narrow the filters for more.
pub const MAX_EXPORT_ROWS: usize = 10_000;
/// History entries shown on the detail page.
const MAX_EVENTS: u32 = 500;
/// Deliveries shown on the detail page.
const MAX_DELIVERIES: u32 = 50;

/// The list's filters as the form sends them (every field optional, empty meaning "any").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    template: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    after: String,
}

impl ListQuery {
    fn parse(raw: Option<&str>) -> Result<Self, UiError> {
        serde_urlencoded::from_str(raw.unwrap_or_default()).map_err(|_| {
            UiError::bad_request("The page's address has parameters it does not take.")
        })
    }

    /// The filters as a query string (without the cursor), for links that keep them.
    fn filters_query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("status", &self.status),
            ("template", &self.template),
            ("from", &self.from),
            ("to", &self.to),
            ("q", &self.q),
        ] {
            if !value.is_empty() {
                query.append_pair(key, value);
            }
        }
        query.finish()
    }

    /// The store's filter, newest first; `what` describes it for the access log without any
    /// patient data (a search is recorded by its kind, not its text).
    fn filter(&self, ids: &PublicIds) -> Result<(SequenceFilter, String), UiError> {
        let mut filter = SequenceFilter {
            newest_first: true,
            ..SequenceFilter::default()
        };
        let mut what = Vec::new();
        filter.status = match self.status.as_str() {
            "" => None,
            "active" => Some(SequenceStatus::Active),
            "paused" => Some(SequenceStatus::Paused),
            "ended" => Some(SequenceStatus::Ended),
            _ => {
                return Err(UiError::bad_request(
                    "Status must be active, paused or ended.",
                ));
            }
        };
        if !self.status.is_empty() {
            what.push(format!("status={}", self.status));
        }
        let template = self.template.trim();
        if !template.is_empty() {
            // A number that is not one of this organisation's templates matches nothing,
            // like an unknown id anywhere else.
            let id = template
                .parse::<i64>()
                .ok()
                .and_then(|public| ids.decode(IdKind::Template, public))
                .unwrap_or(0);
            filter.template_id = Some(TemplateId(id));
            what.push(format!("template={template}"));
        }
        if !self.from.trim().is_empty() {
            filter.created_from = Some(day_start(self.from.trim(), "From")?);
            what.push(format!("from={}", self.from.trim()));
        }
        if !self.to.trim().is_empty() {
            // Inclusive: everything before the next day's start.
            filter.created_before = Some(day_start(self.to.trim(), "To")? + DAY_MILLIS);
            what.push(format!("to={}", self.to.trim()));
        }
        let search = self.q.trim();
        if search.starts_with('+') {
            filter.phone_number = Some(search.to_owned());
            what.push("search by phone number".to_owned());
        } else if !search.is_empty() {
            filter.external_id = Some(search.to_owned());
            what.push("search by external id".to_owned());
        }
        Ok((filter, what.join(" ")))
    }
}

const DAY_MILLIS: i64 = 86_400_000;

/// The start (UTC) of the day `text` (`YYYY-MM-DD`) names.
fn day_start(text: &str, label: &str) -> Result<i64, UiError> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|start| start.and_utc().timestamp_millis())
        .ok_or_else(|| UiError::bad_request(format!("{label} must be a date (YYYY-MM-DD).")))
}

/// A contact's stored fields, read leniently (the row's JSON is the scheduler's).
struct Contact {
    name: Option<String>,
    external_id: Option<String>,
    time_zone: Option<String>,
}

impl Contact {
    fn of(row: &SequenceRow) -> Self {
        let text = |key: &str| {
            row.contact
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Self {
            name: text("name"),
            external_id: text("external_id"),
            time_zone: text("time_zone"),
        }
    }

    fn zone(&self) -> Option<chrono_tz::Tz> {
        self.time_zone.as_deref()?.parse().ok()
    }
}

fn status_name(status: SequenceStatus) -> &'static str {
    match status {
        SequenceStatus::Active => "active",
        SequenceStatus::Paused => "paused",
        SequenceStatus::Ended => "ended",
    }
}

/// The organisation's templates by id (for names and the filter's choices): the first 200,
/// which is more than any organisation keeps in practice.
async fn templates(
    state: &AppState,
    viewer: &Viewer,
) -> Result<HashMap<TemplateId, TemplateVersion>, UiError> {
    let templates = state.store.list_templates(viewer.org, None, 200).await?;
    Ok(templates.into_iter().map(|t| (t.template_id, t)).collect())
}

/// `GET /ui/sequences`: the filtered list, newest first, a page at a time.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let query = ListQuery::parse(raw.as_deref())?;
    let ids = state.store.public_ids(viewer.org);
    let (filter, _) = query.filter(&ids)?;
    let after = crate::wire::cursor::<SequenceId>(&ids, IdKind::Sequence, Some(&query.after))
        .map_err(|_| UiError::bad_request("That page link is not valid."))?;
    let rows = state
        .store
        .search_sequences(viewer.org, &filter, after, PAGE)
        .await?;
    let templates = templates(&state, &viewer).await?;
    let mut template_list: Vec<&TemplateVersion> = templates.values().collect();
    template_list.sort_by(|a, b| a.name.cmp(&b.name).then(a.template_id.cmp(&b.template_id)));
    let filtered = filter
        != SequenceFilter {
            newest_first: true,
            ..SequenceFilter::default()
        };
    let next = (rows.len() == PAGE as usize)
        .then(|| {
            rows.last()
                .map(|row| ids.encode(IdKind::Sequence, row.id.0))
        })
        .flatten();
    let filters = query.filters_query();
    let with = |path: &str| {
        if filters.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{filters}")
        }
    };
    let body = html! {
        h1 { "Sequences" }
        form.filters method="get" action="/ui/sequences" role="search" aria-label="Filter sequences" {
            div.field {
                label for="f-status" { "Status" }
                select id="f-status" name="status" {
                    @for (value, label) in [("", "Any"), ("active", "Active"), ("paused", "Paused"), ("ended", "Ended")] {
                        option value=(value) selected[query.status == value] { (label) }
                    }
                }
            }
            div.field {
                label for="f-template" { "Template" }
                select id="f-template" name="template" {
                    option value="" selected[query.template.is_empty()] { "Any" }
                    @for template in &template_list {
                        @let public = ids.encode(IdKind::Template, template.template_id.0).to_string();
                        option value=(public) selected[query.template == public] { (template.name) }
                    }
                }
            }
            div.field {
                label for="f-from" { "Enrolled from" }
                input id="f-from" name="from" type="date" value=(query.from);
            }
            div.field {
                label for="f-to" { "to" }
                input id="f-to" name="to" type="date" value=(query.to);
            }
            div.field.grow {
                label for="f-q" { "External id or phone number" }
                input id="f-q" name="q" type="search" value=(query.q)
                    placeholder="MRN-1234 or +15555550123" autocomplete="off" spellcheck="false";
            }
            div.actions {
                button type="submit" { "Apply" }
                @if filtered { a href="/ui/sequences" { "Clear" } }
            }
        }
        p.exports {
            "Export the filtered list as CSV: "
            a href=(with("/ui/sequences/export.csv")) download { "one row per sequence" }
            " · "
            a href=(with("/ui/encounters/export.csv")) download { "one row per call or text" }
            " (each export is recorded in the access log)."
        }
        @if rows.is_empty() {
            p.empty {
                @if filtered {
                    "No sequence matches these filters. Widen the date range or clear the search."
                } @else {
                    "No sequences yet. Enroll patients from a CSV file on the Templates page (or \
                     with POST /v1/sequences or clarion enroll); their sequences appear here."
                }
            }
        } @else {
            div.scroll {
                table.sequences {
                    caption.visually-hidden { "Sequences, newest first" }
                    thead { tr {
                        th scope="col" { "Sequence" }
                        th scope="col" { "External id" }
                        th scope="col" { "Template" }
                        th scope="col" { "Status" }
                        th scope="col" { "Outcome" }
                        th scope="col" { "Enrolled (UTC)" }
                        th scope="col" { "Ended (UTC)" }
                    } }
                    tbody {
                        @for row in &rows {
                            @let public = ids.encode(IdKind::Sequence, row.id.0);
                            @let contact = Contact::of(row);
                            tr {
                                td { a href=(format!("/ui/sequences/{public}")) { (public) } }
                                td { (contact.external_id.as_deref().unwrap_or("—")) }
                                td { (templates.get(&row.template_id).map_or("—", |t| t.name.as_str())) }
                                td { (badge(status_name(row.status))) }
                                td { (row.outcome_description.as_deref().unwrap_or("—")) }
                                td { (utc(row.created_at)) }
                                td { (utc_opt(row.ended_at)) }
                            }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if !query.after.is_empty() {
                a href=(with("/ui/sequences")) { "← Newest" }
            }
            @if let Some(next) = next {
                @let sep = if filters.is_empty() { "?" } else { "&" };
                a href=(format!("{}{sep}after={next}", with("/ui/sequences"))) rel="next" { "Older →" }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout("Sequences", Some(viewer.frame(Nav::Sequences)), body),
    ))
}

/// The sequence a public id in a path names, if it is one of the viewer's organisation's.
async fn sequence_of(
    state: &AppState,
    viewer: &Viewer,
    public: &str,
) -> Result<SequenceRow, UiError> {
    let ids = state.store.public_ids(viewer.org);
    let id = SequenceId(super::page::internal_id(
        &ids,
        IdKind::Sequence,
        public,
        "sequence",
    )?);
    state
        .store
        .get_sequence(viewer.org, id)
        .await?
        .ok_or_else(|| UiError::not_found("sequence"))
}

/// The sequence's report: as delivered once it ended, as it stands while running.
async fn report_of(
    state: &AppState,
    viewer: &Viewer,
    id: SequenceId,
) -> Result<(String, SequenceReport), UiError> {
    let text = state
        .scheduler
        .report_json(viewer.org, id)
        .await
        .map_err(|e| crate::routes::sequences::scheduler_error(e, ""))?
        .ok_or_else(|| UiError::not_found("sequence"))?;
    let report = serde_json::from_str(&text).map_err(unreadable_report)?;
    Ok((text, report))
}

/// A stored report that does not read as one (a corrupt row, or a version skew): logged as
/// corrupt, never with serde's message, which can quote a value of the report (PHI).
fn unreadable_report(_: serde_json::Error) -> UiError {
    UiError::from(crate::error::ApiError::internal(
        &clarion_store::StoreError::Corrupt("stored report"),
    ))
}

/// `GET /ui/sequences/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(public): Path<String>,
) -> Result<Response, UiError> {
    let row = sequence_of(&state, &viewer, &public).await?;
    record(
        &state,
        &viewer,
        AccessAction::SequenceViewed,
        Some(row.id),
        "",
    )
    .await?;
    let ids = state.store.public_ids(viewer.org);
    let (report_text, report) = report_of(&state, &viewer, row.id).await?;
    let events = state
        .store
        .sequence_events(row.id, None, MAX_EVENTS)
        .await?;
    let deliveries = state
        .store
        .list_deliveries(
            viewer.org,
            &DeliveryFilter {
                sequence_id: Some(row.id),
                ..DeliveryFilter::default()
            },
            None,
            MAX_DELIVERIES,
        )
        .await?;
    let template = state
        .store
        .get_template(viewer.org, row.template_id)
        .await?;
    let contact = Contact::of(&row);
    let zone = contact.zone();
    let public = ids.encode(IdKind::Sequence, row.id.0);
    let pretty_report = serde_json::from_str::<serde_json::Value>(&report_text)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or(report_text);
    let control = |action: &str, label: &str, class: &str| {
        html! {
            form method="post" action=(format!("/ui/sequences/{public}/{action}")) {
                input type="hidden" name="csrf_token" value=(viewer.csrf);
                button class=(class) type="submit" { (label) }
            }
        }
    };
    let body = html! {
        p.crumbs { a href="/ui/sequences" { "← Sequences" } }
        h1 { "Sequence " (public) " " (badge(status_name(row.status))) }
        section aria-labelledby="contact-title" {
            h2 id="contact-title" { "Contact" }
            dl.facts {
                dt { "Name" } dd { (contact.name.as_deref().unwrap_or("—")) }
                dt { "Phone number" } dd { (row.phone_number) }
                dt { "Time zone" } dd { (contact.time_zone.as_deref().unwrap_or("—")) }
                dt { "External id" } dd { (contact.external_id.as_deref().unwrap_or("—")) }
                dt { "Template" } dd { (template.as_ref().map_or("—", |t| t.name.as_str())) }
                dt { "Enrolled" } dd { (utc_and_local(row.created_at, zone)) }
                dt { "Ended" } dd { @if let Some(ended) = row.ended_at { (utc_and_local(ended, zone)) } @else { "—" } }
                dt { "Next wake-up" } dd { @if let Some(wake) = row.next_wake_at.filter(|_| row.status == SequenceStatus::Active) { (utc_and_local(wake, zone)) } @else { "—" } }
                dt { "Outcome" } dd { (row.outcome_description.as_deref().unwrap_or("—")) }
            }
            @if row.status != SequenceStatus::Ended {
                div.controls role="group" aria-label="Change this sequence" {
                    @if row.status == SequenceStatus::Active { (control("pause", "Pause", "secondary")) }
                    @if row.status == SequenceStatus::Paused { (control("resume", "Resume", "secondary")) }
                    (control("cancel", "Cancel sequence", "danger"))
                }
            }
        }
        section aria-labelledby="outreach-title" {
            h2 id="outreach-title" { "Outreach" }
            @if report.outreach.is_empty() {
                p.empty { "No call or text yet. The events below say when the first one is due \
                           and why it may have waited." }
            }
            ol.timeline {
                @for step in &report.outreach {
                    li { (outreach_step(step, zone)) }
                }
            }
        }
        section aria-labelledby="events-title" {
            h2 id="events-title" { "Events" }
            p { "Everything that happened to this sequence, oldest first: each deferral with its \
                 reason and the time it waited until." }
            div.scroll {
                table.events {
                    caption.visually-hidden { "Sequence events" }
                    thead { tr { th scope="col" { "When (UTC)" } th scope="col" { "Event" } th scope="col" { "Detail" } } }
                    tbody {
                        @for event in &events {
                            tr {
                                td { (utc(event.at)) }
                                td { (badge(&event.kind)) }
                                td { (event_detail(&event.detail, zone)) }
                            }
                        }
                    }
                }
            }
            @if events.len() == MAX_EVENTS as usize {
                p { "The first " (MAX_EVENTS) " events are shown; GET /v1/sequences/" (public) "/events pages through all of them." }
            }
        }
        section aria-labelledby="report-title" {
            h2 id="report-title" { "Report and deliveries" }
            @if deliveries.is_empty() {
                p.empty {
                    @if row.status == SequenceStatus::Ended {
                        "No webhook delivery: the organisation had no enabled endpoint when this \
                         sequence ended. Reports stay readable through GET /v1/reports."
                    } @else {
                        "The report is delivered to every enabled webhook endpoint when the sequence ends."
                    }
                }
            }
            @for delivery in &deliveries {
                (super::webhooks::delivery_view(&ids, delivery, &viewer.csrf, &format!("/ui/sequences/{public}")))
            }
            details.report {
                summary {
                    @if row.status == SequenceStatus::Ended {
                        "The End of Sequence Report, exactly as delivered"
                    } @else {
                        "The report as it stands (delivered when the sequence ends)"
                    }
                }
                pre { code { (pretty_report) } }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout(
            &format!("Sequence {public}"),
            Some(viewer.frame(Nav::Sequences)),
            body,
        ),
    ))
}

/// One outreach step: the call or the text conversation.
fn outreach_step(step: &OutreachStep, zone: Option<chrono_tz::Tz>) -> Markup {
    html! {
        article.encounter {
            @if let Some(call) = &step.call {
                (call_view(step.step, call, zone))
            } @else if let Some(sms) = &step.sms {
                (sms_view(step.step, sms, zone))
            } @else {
                h3 { "Step " (step.step) " · " (wire_name(&step.kind)) }
                p { "Not started." }
            }
        }
    }
}

fn times(
    started: Option<&clarion_webhooks::Timestamp>,
    ended: Option<&clarion_webhooks::Timestamp>,
    zone: Option<chrono_tz::Tz>,
) -> Markup {
    html! {
        dt { "Started" } dd { @if let Some(t) = started { (utc_and_local(t.unix_millis(), zone)) } @else { "—" } }
        dt { "Ended" } dd { @if let Some(t) = ended { (utc_and_local(t.unix_millis(), zone)) } @else { "—" } }
    }
}

fn call_view(step: u32, call: &Call, zone: Option<chrono_tz::Tz>) -> Markup {
    html! {
        h3 { "Step " (step) " · call " (badge(&wire_name(&call.call_status))) }
        dl.facts {
            (times(call.started_at.as_ref(), call.ended_at.as_ref(), zone))
            dt { "Duration" } dd { (call.duration_ms.map_or("—".to_owned(), duration)) }
            dt { "Outcome" } dd { (call.outcome.as_ref().map_or("—".to_owned(), wire_name)) }
            dt { "Ended because" } dd { (call.ended_reason.as_ref().map_or("—".to_owned(), wire_name)) }
            @if let Some(reason) = &call.failure_reason {
                dt { "Failure" } dd { (wire_name(reason)) }
            }
            @if let Some(analysis) = &call.analysis {
                dt { "Repetitions" } dd { (analysis.repetition_count.map_or("—".to_owned(), |n| n.to_string())) }
                dt { "Interruptions" } dd { (analysis.interruption_count.map_or("—".to_owned(), |n| n.to_string())) }
                (custom_fields(analysis.custom.as_ref()))
            }
        }
        (summary_and_transcript(call.summary.as_deref(), call.transcript.as_deref(), "Transcript"))
        @if let Some(voicemail) = &call.voicemail_message {
            h4 { "Voicemail left" }
            p.summary { (voicemail) }
        }
    }
}

fn sms_view(step: u32, sms: &Sms, zone: Option<chrono_tz::Tz>) -> Markup {
    html! {
        h3 { "Step " (step) " · text conversation " (badge(&wire_name(&sms.status))) }
        dl.facts {
            (times(sms.started_at.as_ref(), sms.ended_at.as_ref(), zone))
            dt { "Ended because" } dd { (sms.ended_reason.as_ref().map_or("—".to_owned(), wire_name)) }
            (custom_fields(sms.analysis.as_ref().and_then(|a| a.custom.as_ref())))
        }
        (summary_and_transcript(sms.summary.as_deref(), sms.transcript.as_deref(), "Messages"))
    }
}

/// The analysis's custom fields, as more lines of a `dl.facts`.
fn custom_fields(custom: Option<&serde_json::Map<String, serde_json::Value>>) -> Markup {
    html! {
        @if let Some(custom) = custom {
            @for (key, value) in custom {
                dt { (key) } dd { (plain(value)) }
            }
        }
    }
}

/// An encounter's summary and its transcript as a chat, each when there is one.
fn summary_and_transcript(summary: Option<&str>, transcript: Option<&str>, title: &str) -> Markup {
    html! {
        @if let Some(summary) = summary {
            h4 { "Summary" }
            p.summary { (summary) }
        }
        @if let Some(transcript) = transcript {
            h4 { (title) }
            (chat(transcript))
        }
    }
}

/// A JSON value as plain text (strings without their quotes).
fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => "—".to_owned(),
        other => other.to_string(),
    }
}

/// A transcript (`AI: ...` / `User: ...` lines) as a chat: the assistant on one side, the
/// patient on the other; any other line as it is.
fn chat(transcript: &str) -> Markup {
    html! {
        ol.chat aria-label="Transcript" {
            @for line in transcript.lines().filter(|l| !l.trim().is_empty()) {
                @let (class, who, text) = match line.split_once(':') {
                    Some((speaker, text)) if speaker.trim().eq_ignore_ascii_case("AI") || speaker.trim().eq_ignore_ascii_case("assistant") || speaker.trim().eq_ignore_ascii_case("bot") => ("ai", "Assistant", text.trim()),
                    Some((speaker, text)) if speaker.trim().eq_ignore_ascii_case("User") || speaker.trim().eq_ignore_ascii_case("customer") || speaker.trim().eq_ignore_ascii_case("patient") => ("patient", "Patient", text.trim()),
                    _ => ("other", "", line.trim()),
                };
                li class=(class) {
                    @if !who.is_empty() { span.who { (who) } }
                    span.text { (text) }
                }
            }
        }
    }
}

/// A history entry's detail: `reason` and `until` first (the "why wasn't this patient
/// called" answer), then the other fields.
fn event_detail(detail: &serde_json::Value, zone: Option<chrono_tz::Tz>) -> Markup {
    let Some(object) = detail.as_object() else {
        return html! { (plain(detail)) };
    };
    let until = object
        .get("until")
        .and_then(|v| v.as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis());
    html! {
        @if let Some(reason) = object.get("reason") {
            span.reason { (plain(reason)) }
        }
        @if let Some(until) = until {
            " until " (utc(until))
            @if let Some(local) = local(until, zone) { " " span.local { "(" (local) " local)" } }
        }
        @let rest: Vec<_> = object.iter().filter(|(k, _)| *k != "reason" && *k != "until").collect();
        @if !rest.is_empty() {
            ul.kv {
                @for (key, value) in rest {
                    li { span.k { (key) } " " (plain(value)) }
                }
            }
        }
    }
}

/// `POST /ui/sequences/{id}/{cancel|pause|resume}`.
pub async fn control(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((public, action)): Path<(String, String)>,
    request: Request,
) -> Result<Response, UiError> {
    let form: CsrfForm = read_form(request.into_body()).await?;
    viewer.check_csrf(form.csrf_token.as_deref())?;
    let control = match action.as_str() {
        "cancel" => Control::Cancel,
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        _ => return Err(UiError::not_found("action")),
    };
    let row = sequence_of(&state, &viewer, &public).await?;
    state
        .scheduler
        .control(viewer.org, row.id, control)
        .await
        .map_err(|e| crate::routes::sequences::scheduler_error(e, ""))?;
    Ok(Redirect::to(&format!("/ui/sequences/{public}")).into_response())
}

/// What both exports start from: the filters of the page's address, and every sequence they
/// select (newest first, at most [`MAX_EXPORT_ROWS`]) with its report, read a page at a
/// time: one query for the page's sequences, two for their reports
/// (`Scheduler::reports_json`), never one per sequence.
struct Export {
    ids: PublicIds,
    /// The filters, for the access log (no patient data).
    what: String,
    rows: Vec<(SequenceRow, SequenceReport)>,
}

async fn export_rows(
    state: &AppState,
    viewer: &Viewer,
    raw: Option<&str>,
) -> Result<Export, UiError> {
    let query = ListQuery::parse(raw)?;
    let ids = state.store.public_ids(viewer.org);
    let (filter, what) = query.filter(&ids)?;
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let mut page = state
            .store
            .search_sequences(viewer.org, &filter, after, EXPORT_CHUNK)
            .await?;
        let full = page.len() == EXPORT_CHUNK as usize;
        after = page.last().map(|row| row.id);
        page.truncate(MAX_EXPORT_ROWS - rows.len());
        let reports = state
            .scheduler
            .reports_json(viewer.org, &page)
            .await
            .map_err(|e| crate::routes::sequences::scheduler_error(e, ""))?;
        for (row, text) in page.into_iter().zip(reports) {
            let report = serde_json::from_str(&text).map_err(unreadable_report)?;
            rows.push((row, report));
        }
        if !full || rows.len() >= MAX_EXPORT_ROWS {
            return Ok(Export { ids, what, rows });
        }
    }
}

/// A cell that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, or a tab or
/// carriage return before one) gets a leading `'`, so opening an export never runs one.
pub fn csv_cell(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Writes `records` as CSV (every cell through [`csv_cell`]) into an attachment response.
fn csv_response(
    name: &str,
    header_row: &[&str],
    records: &[Vec<String>],
) -> Result<Response, UiError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = |_| {
        UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The export could not be written.",
        )
    };
    writer.write_record(header_row).map_err(failed)?;
    for record in records {
        writer
            .write_record(record.iter().map(|cell| csv_cell(cell).into_owned()))
            .map_err(failed)?;
    }
    let bytes = writer.into_inner().map_err(|_| {
        UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The export could not be written.",
        )
    })?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let disposition = format!("attachment; filename=\"{name}\"");
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

fn ts(t: Option<&clarion_webhooks::Timestamp>) -> String {
    t.map(ToString::to_string).unwrap_or_default()
}

fn file_name(state: &AppState, what: &str) -> String {
    let now = chrono::DateTime::from_timestamp_millis(state.clock.now_millis()).unwrap_or_default();
    format!("clarion-{what}-{}.csv", now.format("%Y%m%dT%H%M%SZ"))
}

/// `GET /ui/sequences/export.csv`: one row per sequence, with its outcome columns.
pub async fn export_sequences(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let Export { ids, what, rows } = export_rows(&state, &viewer, raw.as_deref()).await?;
    let templates = templates(&state, &viewer).await?;
    let mut records = Vec::with_capacity(rows.len());
    for (row, report) in &rows {
        let contact = Contact::of(row);
        let calls: Vec<&Call> = report
            .outreach
            .iter()
            .filter_map(|s| s.call.as_ref())
            .collect();
        let texts = report.outreach.iter().filter(|s| s.sms.is_some()).count();
        let answered = calls
            .iter()
            .filter(|c| {
                c.outcome.as_ref().is_some_and(|o| {
                    !matches!(
                        wire_name(o).as_str(),
                        "voicemail" | "no-answer" | "busy" | "failed"
                    )
                })
            })
            .count();
        let last = report
            .outreach
            .last()
            .map(|step| match (&step.call, &step.sms) {
                (Some(call), _) => call
                    .outcome
                    .as_ref()
                    .map(wire_name)
                    .unwrap_or_else(|| wire_name(&call.call_status)),
                (None, Some(sms)) => sms
                    .ended_reason
                    .as_ref()
                    .map(wire_name)
                    .unwrap_or_else(|| wire_name(&sms.status)),
                (None, None) => String::new(),
            });
        records.push(vec![
            ids.encode(IdKind::Sequence, row.id.0).to_string(),
            status_name(row.status).to_owned(),
            ids.encode(IdKind::Template, row.template_id.0).to_string(),
            templates
                .get(&row.template_id)
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            contact.external_id.clone().unwrap_or_default(),
            contact.name.clone().unwrap_or_default(),
            row.phone_number.clone(),
            contact.time_zone.clone().unwrap_or_default(),
            crate::wire::time(row.created_at),
            row.ended_at.map(crate::wire::time).unwrap_or_default(),
            row.outcome_description.clone().unwrap_or_default(),
            calls.len().to_string(),
            answered.to_string(),
            texts.to_string(),
            last.unwrap_or_default(),
        ]);
    }
    record(
        &state,
        &viewer,
        AccessAction::SequencesExported,
        None,
        format!("{what} rows={}", records.len()).trim(),
    )
    .await?;
    csv_response(
        &file_name(&state, "sequences"),
        &[
            "sequence_id",
            "status",
            "template_id",
            "template_name",
            "external_id",
            "contact_name",
            "phone_number",
            "time_zone",
            "enrolled_at",
            "ended_at",
            "outcome_description",
            "calls",
            "calls_answered",
            "text_conversations",
            "last_outcome",
        ],
        &records,
    )
}

/// `GET /ui/encounters/export.csv`: one row per call or text conversation of the filtered
/// sequences.
pub async fn export_encounters(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let Export { ids, what, rows } = export_rows(&state, &viewer, raw.as_deref()).await?;
    let mut records = Vec::new();
    for (row, report) in &rows {
        let contact = Contact::of(row);
        let sequence = ids.encode(IdKind::Sequence, row.id.0).to_string();
        for step in &report.outreach {
            let mut record = vec![
                sequence.clone(),
                contact.external_id.clone().unwrap_or_default(),
                step.step.to_string(),
                wire_name(&step.kind),
            ];
            match (&step.call, &step.sms) {
                (Some(call), _) => record.extend([
                    call.id.to_string(),
                    wire_name(&call.call_status),
                    ts(call.started_at.as_ref()),
                    ts(call.ended_at.as_ref()),
                    call.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
                    call.outcome.as_ref().map(wire_name).unwrap_or_default(),
                    call.ended_reason
                        .as_ref()
                        .map(wire_name)
                        .unwrap_or_default(),
                    call.failure_reason
                        .as_ref()
                        .map(wire_name)
                        .unwrap_or_default(),
                    call.summary.clone().unwrap_or_default(),
                ]),
                (None, Some(sms)) => record.extend([
                    sms.id.to_string(),
                    wire_name(&sms.status),
                    ts(sms.started_at.as_ref()),
                    ts(sms.ended_at.as_ref()),
                    String::new(),
                    String::new(),
                    sms.ended_reason.as_ref().map(wire_name).unwrap_or_default(),
                    String::new(),
                    sms.summary.clone().unwrap_or_default(),
                ]),
                (None, None) => continue,
            }
            records.push(record);
        }
    }
    record(
        &state,
        &viewer,
        AccessAction::EncountersExported,
        None,
        format!("{what} sequences={} rows={}", rows.len(), records.len()).trim(),
    )
    .await?;
    csv_response(
        &file_name(&state, "encounters"),
        &[
            "sequence_id",
            "external_id",
            "step",
            "type",
            "encounter_id",
            "status",
            "started_at",
            "ended_at",
            "duration_ms",
            "outcome",
            "ended_reason",
            "failure_reason",
            "summary",
        ],
        &records,
    )
}
