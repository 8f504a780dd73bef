//! The suppression list: the organisation's do-not-contact numbers, searched by number (its
//! whole history), added and removed through the API's own actions
//! (`routes::suppressions::add`, `remove`): the same validation, the same history, and a
//! patient's opt-out removed only with a recorded new consent. Changes are recorded as made
//! by the session's API key.

use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use clarion_store::{OPT_OUT_REASON, SuppressionAction};
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{Nav, UiError, badge, layout, respond, utc};
use super::session::{Viewer, read_form};
use crate::AppState;
use crate::routes::suppressions::{ConsentIn, ConsentMethod, public_actor};

const PAGE: u32 = 50;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    after: String,
}

fn actor(viewer: &Viewer) -> String {
    format!("api-key:{}", viewer.api_key_id)
}

/// A removal form: for a patient's opt-out it asks for the new consent.
fn remove_form(viewer: &Viewer, number: &str, opt_out: bool) -> Markup {
    html! {
        form.remove method="post" action="/ui/suppressions/remove" {
            input type="hidden" name="csrf_token" value=(viewer.csrf);
            input type="hidden" name="phone_number" value=(number);
            @if opt_out {
                fieldset {
                    legend { "New consent (required: the patient opted out)" }
                    label for="c-by" { "Obtained by" }
                    input id="c-by" name="obtained_by" required maxlength="200";
                    label for="c-at" { "Obtained at (UTC)" }
                    input id="c-at" name="obtained_at" type="datetime-local" required;
                    label for="c-method" { "How" }
                    select id="c-method" name="method" {
                        option value="written" { "Signed form" }
                        option value="verbal" { "Verbal, to staff" }
                        option value="sms-start" { "Texted START" }
                        option value="electronic" { "Electronic form or portal" }
                    }
                    label for="c-note" { "Note" }
                    input id="c-note" name="note" maxlength="1000";
                }
            }
            button.danger type="submit" { "Remove " (number) }
        }
    }
}

/// `GET /ui/suppressions`: the list, or one number's entry and history (`q`).
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> Result<Response, UiError> {
    let query: ListQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or_default())
        .map_err(|_| UiError::bad_request("The page's address has parameters it does not take."))?;
    let ids = state.store.public_ids(viewer.org);
    let number = query.q.trim();
    let add = html! {
        form.filters method="post" action="/ui/suppressions" aria-label="Add a number" {
            input type="hidden" name="csrf_token" value=(viewer.csrf);
            div.field {
                label for="s-number" { "Phone number (E.164)" }
                input id="s-number" name="phone_number" required placeholder="+15555550123" autocomplete="off";
            }
            div.field.grow {
                label for="s-reason" { "Reason" }
                input id="s-reason" name="reason" maxlength="200" placeholder="Asked not to be contacted";
            }
            div.actions { button type="submit" { "Add to the list" } }
        }
    };
    let search = html! {
        form.filters method="get" action="/ui/suppressions" role="search" aria-label="Find a number" {
            div.field.grow {
                label for="s-q" { "Find a number" }
                input id="s-q" name="q" type="search" value=(number) placeholder="+15555550123" autocomplete="off";
            }
            div.actions {
                button type="submit" { "Find" }
                @if !number.is_empty() { a href="/ui/suppressions" { "All numbers" } }
            }
        }
    };
    let body = if number.is_empty() {
        let after = (!query.after.is_empty()).then_some(query.after.as_str());
        let entries = state
            .store
            .list_suppressions(viewer.org, after, PAGE)
            .await?;
        let next = (entries.len() == PAGE as usize)
            .then(|| entries.last().map(|e| e.phone_number.clone()))
            .flatten();
        html! {
            h1 { "Suppression list" }
            p { "Numbers on this list are never called or texted by any sequence. Opt-outs land \
                 here by themselves." }
            (search)
            h2 { "Add a number" }
            (add)
            h2 { "Numbers" }
            @if entries.is_empty() {
                p.empty { "No number is on the list. A patient's opt-out, or a number added above, appears here." }
            } @else {
                div.scroll {
                    table.suppressions {
                        caption.visually-hidden { "Suppressed numbers" }
                        thead { tr { th scope="col" { "Number" } th scope="col" { "Reason" } th scope="col" { "Since (UTC)" } } }
                        tbody {
                            @for entry in &entries {
                                tr {
                                    td { a href=(format!("/ui/suppressions?q={}", form_urlencoded::byte_serialize(entry.phone_number.as_bytes()).collect::<String>())) { (entry.phone_number) } }
                                    td { (badge(&entry.reason)) }
                                    td { (utc(entry.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                nav.pager aria-label="Pages" {
                    a rel="next" href=(format!("/ui/suppressions?after={}", form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>())) { "More →" }
                }
            }
        }
    } else {
        let history = state.store.suppression_history(viewer.org, number).await?;
        let listed = history
            .last()
            .filter(|change| change.action == SuppressionAction::Added);
        html! {
            p.crumbs { a href="/ui/suppressions" { "← Suppression list" } }
            h1 { (number) }
            (search)
            @match listed {
                Some(entry) => {
                    p { "On the list since " (utc(entry.at)) ", reason " (badge(&entry.reason)) "." }
                    (remove_form(&viewer, number, entry.reason == OPT_OUT_REASON))
                }
                None => {
                    p.empty { "This number is not on the list: sequences may contact it." }
                }
            }
            h2 { "History" }
            @if history.is_empty() {
                p { "Never listed." }
            } @else {
                div.scroll {
                    table.history {
                        caption.visually-hidden { "Changes to this number's entry" }
                        thead { tr { th scope="col" { "When (UTC)" } th scope="col" { "Change" } th scope="col" { "Reason" } th scope="col" { "By" } th scope="col" { "Consent" } } }
                        tbody {
                            @for change in &history {
                                tr {
                                    td { (utc(change.at)) }
                                    td { (match change.action { SuppressionAction::Added => "added", SuppressionAction::Removed => "removed" }) }
                                    td { (change.reason) }
                                    td { code { (public_actor(&ids, change.actor.clone())) } }
                                    td { (change.consent.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "—".to_owned())) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout(
            "Suppression list",
            Some(viewer.frame(Nav::Suppressions)),
            body,
        ),
    ))
}

fn back_to(number: &str) -> Response {
    let query = form_urlencoded::byte_serialize(number.trim().as_bytes()).collect::<String>();
    Redirect::to(&format!("/ui/suppressions?q={query}")).into_response()
}

#[derive(Debug, Deserialize)]
pub struct AddForm {
    csrf_token: Option<String>,
    #[serde(default)]
    phone_number: String,
    #[serde(default)]
    reason: String,
}

/// `POST /ui/suppressions`: adds a number.
pub async fn add(
    State(state): State<AppState>,
    viewer: Viewer,
    request: Request,
) -> Result<Response, UiError> {
    let form: AddForm = read_form(request.into_body()).await?;
    viewer.check_csrf(form.csrf_token.as_deref())?;
    let reason = Some(form.reason.trim().to_owned()).filter(|r| !r.is_empty());
    let reason = reason.or_else(|| Some("added in the dashboard".to_owned()));
    let (number, _, _) = crate::routes::suppressions::add(
        &state,
        viewer.org,
        &actor(&viewer),
        &form.phone_number,
        reason,
    )
    .await?;
    Ok(back_to(&number))
}

#[derive(Debug, Deserialize)]
pub struct RemoveForm {
    csrf_token: Option<String>,
    #[serde(default)]
    phone_number: String,
    obtained_by: Option<String>,
    obtained_at: Option<String>,
    method: Option<String>,
    note: Option<String>,
}

/// `POST /ui/suppressions/remove`: removes a number (an opt-out with its new consent).
pub async fn remove(
    State(state): State<AppState>,
    viewer: Viewer,
    request: Request,
) -> Result<Response, UiError> {
    let form: RemoveForm = read_form(request.into_body()).await?;
    viewer.check_csrf(form.csrf_token.as_deref())?;
    let consent = match (form.obtained_by, form.obtained_at, form.method) {
        (Some(by), Some(at), Some(method)) => {
            let method = match method.as_str() {
                "written" => ConsentMethod::Written,
                "verbal" => ConsentMethod::Verbal,
                "sms-start" => ConsentMethod::SmsStart,
                "electronic" => ConsentMethod::Electronic,
                _ => return Err(UiError::bad_request("Choose how the consent was obtained.")),
            };
            // A `datetime-local` field carries no zone; the form says it is UTC.
            let at = at.trim();
            let at = if at.len() == 16 {
                format!("{at}:00Z")
            } else if at.ends_with('Z') {
                at.to_owned()
            } else {
                format!("{at}Z")
            };
            Some(ConsentIn {
                obtained_by: by,
                obtained_at: at,
                method,
                note: form.note,
            })
        }
        _ => None,
    };
    crate::routes::suppressions::remove(
        &state,
        viewer.org,
        &actor(&viewer),
        &form.phone_number,
        consent,
    )
    .await?;
    Ok(back_to(&form.phone_number))
}
