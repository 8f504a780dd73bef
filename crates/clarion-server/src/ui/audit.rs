//! The PHI access log: every view of a sequence's detail and every export is recorded
//! ([`record`]) before the page or file is produced, so nothing is shown unrecorded; the
//! organisation reads it here and through `GET /v1/audit-log`. Entries name the session and
//! the key (public ids), the action, the sequence and, for an export, its filters and row
//! count, never a patient's data: a phone-number search is recorded as "search by number".

use axum::extract::State;
use axum::response::Response;
use clarion_store::{IdKind, NewAccessEntry, SequenceId};
use maud::html;
use serde::Deserialize;

use super::page::{Nav, UiError, layout, respond, utc};
use super::session::Viewer;
use crate::AppState;

/// What kind of access an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessAction {
    SequenceViewed,
    SequencesExported,
    EncountersExported,
}

impl AccessAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SequenceViewed => "sequence.viewed",
            Self::SequencesExported => "sequences.exported",
            Self::EncountersExported => "encounters.exported",
        }
    }
}

/// Records one access by `viewer`. A failure to record fails the request: PHI is never shown
/// without its record.
pub async fn record(
    state: &AppState,
    viewer: &Viewer,
    action: AccessAction,
    sequence_id: Option<SequenceId>,
    detail: &str,
) -> Result<(), UiError> {
    let ids = state.store.public_ids(viewer.org);
    let actor = format!(
        "ui-session:{} api-key:{}",
        viewer.session_ref,
        ids.encode(IdKind::ApiKey, viewer.api_key_id.0)
    );
    state
        .store
        .record_access(&NewAccessEntry {
            org_id: viewer.org,
            at: state.clock.now_millis(),
            actor: &actor,
            action: action.as_str(),
            sequence_id,
            detail,
        })
        .await?;
    Ok(())
}

const PAGE: u32 = 50;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub after: Option<String>,
}

/// `GET /ui/access-log`: the organisation's access log, newest first.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, UiError> {
    let query: PageQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
        .map_err(|_| UiError::bad_request("The page's address has parameters it does not take."))?;
    let ids = state.store.public_ids(viewer.org);
    let after = crate::wire::raw_cursor(&ids, IdKind::AccessEntry, query.after.as_deref())
        .map_err(|_| UiError::bad_request("That page link is not valid."))?;
    let entries = state
        .store
        .access_log(viewer.org, after, true, PAGE)
        .await?;
    let next = (entries.len() == PAGE as usize)
        .then(|| {
            entries
                .last()
                .map(|e| ids.encode(IdKind::AccessEntry, e.id))
        })
        .flatten();
    let body = html! {
        h1 { "Access log" }
        p { "Every view of a sequence's detail and every export, newest first. Entries are \
             never changed or removed." }
        @if entries.is_empty() {
            p.empty { "Nothing has been viewed or exported yet. Opening a sequence or exporting \
                       the list adds an entry here." }
        } @else {
            div.scroll {
                table {
                    caption.visually-hidden { "Accesses to patient data" }
                    thead { tr { th scope="col" { "When (UTC)" } th scope="col" { "Who" }
                                 th scope="col" { "What" } th scope="col" { "Sequence" }
                                 th scope="col" { "Detail" } } }
                    tbody {
                        @for entry in &entries {
                            tr {
                                td { (utc(entry.at)) }
                                td { code { (entry.actor) } }
                                td { (entry.action) }
                                td {
                                    @if let Some(sequence) = entry.sequence_id {
                                        @let public = ids.encode(IdKind::Sequence, sequence.0);
                                        a href=(format!("/ui/sequences/{public}")) { (public) }
                                    } @else { "—" }
                                }
                                td { (entry.detail) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            nav.pager aria-label="Pages" {
                a href=(format!("/ui/access-log?after={next}")) rel="next" { "Older entries →" }
            }
        }
    };
    Ok(respond(
        axum::http::StatusCode::OK,
        layout("Access log", Some(viewer.frame(Nav::AccessLog)), body),
    ))
}
